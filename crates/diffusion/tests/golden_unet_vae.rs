//! UNet and VAE against ComfyUI's goldens (`shared/golden/pipeline/README.md`) on the
//! full-size seed-0 recipe checkpoints (`shared/spec/random-checkpoint.md`).
//!
//! Heavy (full-size weights, minutes on 2 cores; the SDXL UNet needs ≈ 7 GB with F16
//! weights), so ignored by default:
//!
//! ```text
//! cargo test -p comfy-diffusion --release --test golden_unet_vae -- --ignored --test-threads 1
//! cargo test -p comfy-diffusion --release --test golden_unet_vae -- --ignored golden_unet_sd15
//! ```
//!
//! The recipe files are generated once into `$COMFY_RECIPE_DIR` (default: the cargo target's
//! tmp dir, `recipe/`), written to a temporary name and renamed, then reused.
//! Goldens come from `$COMFY_GOLDEN_DIR` or `<workspace>/../shared/golden`; missing goldens
//! fail the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use comfy_diffusion::checkpoint::{Checkpoint, UNET_PREFIX, VAE_PREFIX};
use comfy_diffusion::recipe::{write_recipe_checkpoint, Arch};
use comfy_diffusion::unet::UNetModel;
use comfy_diffusion::vae::Vae;

fn golden_dir() -> PathBuf {
    match std::env::var_os("COMFY_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    }
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = golden_dir().join("pipeline").join(name);
    assert!(
        path.exists(),
        "golden file {} is missing (set COMFY_GOLDEN_DIR)",
        path.display()
    );
    candle_core::safetensors::load(&path, &Device::Cpu).expect("read golden")
}

fn recipe(arch: Arch) -> PathBuf {
    let dir = match std::env::var_os("COMFY_RECIPE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("recipe"),
    };
    std::fs::create_dir_all(&dir).expect("recipe dir");
    let (name, bytes) = match arch {
        Arch::Sd15 => ("sd15_recipe_s0.safetensors", 2_132_625_150u64),
        Arch::Sdxl => ("sdxl_recipe_s0.safetensors", 6_938_041_144u64),
    };
    let path = dir.join(name);
    let ok = std::fs::metadata(&path)
        .map(|m| m.len() == bytes)
        .unwrap_or(false);
    if !ok {
        let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
        let t = Instant::now();
        write_recipe_checkpoint(arch, false, 0, &tmp).expect("write recipe checkpoint");
        std::fs::rename(&tmp, &path).expect("rename recipe checkpoint");
        eprintln!("wrote {} in {:.1?}", path.display(), t.elapsed());
    }
    path
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    comfy_diffusion::ops::max_abs_diff(a, b).unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

fn check_unet(arch: Arch, golden_file: &str, weight_dtype: DType) {
    let g = golden(golden_file);
    let path = recipe(arch);
    let ckpt = Arc::new(Checkpoint::open(&path).expect("open"));
    let cfg = ckpt.detect().expect("detect");
    let t = Instant::now();
    let unet = UNetModel::load(
        ckpt.var_builder(UNET_PREFIX, weight_dtype, &Device::Cpu),
        &cfg.unet,
    )
    .expect("load unet");
    eprintln!("unet loaded in {:.1?}", t.elapsed());
    let ctx = &g["te/pos/cond"];
    let y = g.get("unet/y");
    for s in ["14.6146", "1"] {
        let key = |k: &str| format!("unet/sigma{s}/{k}");
        let sigma = scalar(&g[&key("sigma")]);
        let timestep = scalar(&g[&key("timestep")]);
        let x = &g[&key("x")];
        // ComfyUI divides by sqrt(σ² + 1); check our input equals the recorded one
        let xc = (x / ((sigma * sigma + 1.0) as f64).sqrt()).unwrap();
        assert!(max_abs(&xc, &g[&key("xc")]) <= 1e-6, "xc at σ={s}");
        let t = Instant::now();
        let eps = unet
            .forward(&g[&key("xc")], &[timestep], ctx, y)
            .expect("forward");
        let d_eps = max_abs(&eps, &g[&key("eps")]);
        let denoised = (x - (&eps * sigma as f64).unwrap()).unwrap();
        let d_den = max_abs(&denoised, &g[&key("denoised")]);
        eprintln!(
            "{golden_file} σ={s} t={timestep}: eps max|Δ| {d_eps:.3e}, denoised max|Δ| {d_den:.3e} ({:.1?})",
            t.elapsed()
        );
        assert!(d_eps <= 1e-4, "eps at σ={s}: {d_eps}");
        let tol = sigma * 1e-4 + 1e-5;
        assert!(d_den <= tol, "denoised at σ={s}: {d_den} > {tol}");
    }
}

#[test]
#[ignore = "heavy: full-size SD1.5 recipe checkpoint (2.1 GB file, 3.4 GB f32 UNet)"]
fn golden_unet_sd15() {
    check_unet(Arch::Sd15, "sd15_components.safetensors", DType::F32);
}

#[test]
#[ignore = "heavy: full-size SDXL recipe checkpoint (6.9 GB file; UNet kept in F16, ≈ 5 GB)"]
fn golden_unet_sdxl() {
    check_unet(Arch::Sdxl, "sdxl_components.safetensors", DType::F16);
}

#[test]
#[ignore = "heavy: full-size SD1.5 recipe checkpoint (VAE 256×256 decode and encode)"]
fn golden_vae() {
    let g = golden("vae_components.safetensors");
    let path = recipe(Arch::Sd15);
    let ckpt = Arc::new(Checkpoint::open(&path).expect("open"));
    let cfg = ckpt.detect().expect("detect");
    let vae_cfg = cfg.vae.expect("checkpoint has a VAE");
    let vae = Vae::load(
        ckpt.var_builder(VAE_PREFIX, DType::F32, &Device::Cpu),
        &vae_cfg,
    )
    .expect("load vae");

    let t = Instant::now();
    let out = vae.decode(&g["vae/latent"]).expect("decode");
    let d = max_abs(&out, &g["vae/decoder_out"]);
    eprintln!("decoder_out max|Δ| {d:.3e} ({:.1?})", t.elapsed());
    assert!(d <= 1e-4, "decoder_out {d}");
    let img = comfy_diffusion::vae::to_image(&out).unwrap();
    let d = max_abs(&img, &g["vae/image"]);
    eprintln!("image max|Δ| {d:.3e}");
    assert!(d <= 1e-4, "image {d}");

    // encode the golden image (not ours) so the two halves are checked independently
    let t = Instant::now();
    let x = comfy_diffusion::vae::from_image(&g["vae/image"]).unwrap();
    let moments = vae.encode_moments(&x).expect("encode");
    let d = max_abs(&moments, &g["vae/encoder_moments"]);
    eprintln!("encoder_moments max|Δ| {d:.3e} ({:.1?})", t.elapsed());
    assert!(d <= 2e-4, "encoder_moments {d}");
    // `encode_image` = the mean half of these moments (checked by the unit tests); the
    // encoder is not run a second time here
    let enc = moments.narrow(1, 0, 4).unwrap();
    let d = max_abs(&enc, &g["vae/encoded"]);
    eprintln!("encoded max|Δ| {d:.3e}");
    assert!(d <= 2e-4, "encoded {d}");
}
