//! ComfyUI's precision flags on the real binary: `/system_stats` reports the dtypes the
//! models load in, and `--fp16-vae` really decodes in half precision (the same workflow and
//! seed give a picture that differs from the F32 one by F16 rounding only), while
//! `--fp16-unet` on the CPU stores F16 weights but still computes in F32 (ComfyUI's manual
//! cast), so with the tiny checkpoint's F16-stored weights its picture equals the default one.

mod examples_support;
mod server_support;

use examples_support::*;
use serde_json::{json, Value as Json};
use server_support::Server;

/// Runs the shrunk SD1.5 text-to-image example on a fresh server started with `args`;
/// returns `/system_stats`' `comfy_rs.dtypes` and the saved image's RGB pixels.
fn run_with(args: &[&str]) -> (Json, Vec<u8>) {
    let base = tempfile::tempdir().expect("temp dir");
    prepare_base(base.path(), false);
    let s = Server::start_in(base, args);
    let stats = s.get("/system_stats").json();
    let dtypes = stats["comfy_rs"]["dtypes"].clone();
    let prompt = examples()
        .into_iter()
        .find(|(n, _)| n == "sd15_text_to_image.json")
        .map(|(n, p)| tiny(&n, &p, "v1-5-pruned-emaonly.safetensors"))
        .expect("the SD1.5 example");
    let id = s.submit(&prompt, None);
    let entry = s.wait_history(&id);
    assert_eq!(entry["status"]["status_str"], json!("success"), "{args:?}: {entry}");
    let image = entry["outputs"]
        .as_object()
        .and_then(|o| o.values().find_map(|v| v["images"].get(0).cloned()))
        .expect("one saved image");
    let name = image["filename"].as_str().expect("filename");
    let sub = image["subfolder"].as_str().unwrap_or_default();
    let r = s.get(&format!("/view?filename={name}&subfolder={sub}&type=output"));
    assert_eq!(r.status, 200);
    let rgb = image::load_from_memory(&r.body).expect("PNG").to_rgb8().into_raw();
    let _ = s.terminate();
    (dtypes, rgb)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn precision_flags_choose_the_dtypes_models_run_in() {
    let (d32, img32) = run_with(&["--cpu"]);
    assert_eq!(
        d32,
        json!({"unet": "float32", "unet_compute": "float32", "text_encoder": "float16", "text_encoder_compute": "float32", "vae": "float32"})
    );

    let (d16, img16) = run_with(&["--cpu", "--fp16-vae"]);
    assert_eq!(d16["vae"], json!("float16"));
    let p = psnr(&img32, &img16);
    assert!(p.is_finite(), "--fp16-vae gave the F32 picture: the VAE did not run in F16");
    assert!(p > 30.0, "--fp16-vae moved the picture by more than F16 rounding: PSNR {p:.1} dB");

    // F16 storage with F32 compute: the tiny checkpoint's weights are F16 already, so
    // storing them as F16 changes nothing.
    let (du, img_u) = run_with(&["--cpu", "--fp16-unet"]);
    assert_eq!((du["unet"].clone(), du["unet_compute"].clone()), (json!("float16"), json!("float32")));
    assert_eq!(img_u, img32, "--fp16-unet on the CPU must compute in F32");
}
