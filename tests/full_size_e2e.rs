//! The full-size golden end-to-end runs (issue 5): the reference workflow of
//! `shared/golden/pipeline/README.md` §4 submitted to the real server over HTTP on the seed-0
//! recipe checkpoints, its `SaveLatent` output compared with ComfyUI's `final_latent`
//! (max abs ≤ 1e-4 · max|ref|, the README's acceptance) and its PNG with the golden PNG
//! (PSNR ≥ 40 dB). Prints cold (first prompt: load + encode + sample + decode) and warm
//! (seed changed: sampler and later nodes only, as ComfyUI's cache does) seconds.
//!
//! Heavy (GBs of weights, minutes of CPU), so `#[ignore]`d; run with
//! `cargo test --release --test full_size_e2e -- --ignored --nocapture --test-threads 1`
//! (`COMFY_RECIPE_DIR` keeps the generated 2.1 GB / 6.9 GB checkpoints between runs).

mod server_support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use comfy_diffusion::recipe::{write_recipe_checkpoint, Arch};
use serde_json::{json, Value as Json};
use server_support::Server;

fn golden_dir() -> PathBuf {
    std::env::var_os("COMFY_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/pipeline"))
}

/// The recipe checkpoint (generated once into `COMFY_RECIPE_DIR`, default a temp folder).
fn recipe(arch: Arch, name: &str) -> PathBuf {
    let dir = std::env::var_os("COMFY_RECIPE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("comfy-recipes"));
    std::fs::create_dir_all(&dir).expect("recipe dir");
    let path = dir.join(name);
    if !path.exists() {
        let started = Instant::now();
        let partial = dir.join(format!("{name}.partial"));
        write_recipe_checkpoint(arch, false, 0, &partial).expect("write recipe checkpoint");
        std::fs::rename(&partial, &path).expect("rename recipe checkpoint");
        eprintln!("generated {} in {:.1}s", path.display(), started.elapsed().as_secs_f64());
    }
    path
}

/// F32 tensor `name` of a safetensors file.
fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    let ck = comfy_diffusion::checkpoint::Checkpoint::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, bytes) = ck.raw(name).unwrap_or_else(|e| panic!("{name} in {}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The golden README's graph with a `SaveLatent` (node 10) for the comparison.
fn workflow(ckpt: &str, seed: u64, steps: u32, sampler: &str, scheduler: &str, prefix: &str) -> Json {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a beautiful sunset over mountains, photorealistic", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": sampler,
              "scheduler": scheduler, "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
              "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": format!("{prefix}_latent")}}
    })
}

/// PSNR in dB of two equally sized 8-bit images.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn rgb_pixels(png: &Path) -> Vec<u8> {
    image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display())).to_rgb8().into_raw()
}

/// Runs the golden workflow through the server and checks latent and PNG; prints timings.
fn check_against_golden(arch: Arch, ckpt: &str, golden: &str, steps: u32, sampler: &str, scheduler: &str) {
    let ck = recipe(arch, ckpt);
    let base = tempfile::tempdir().expect("temp dir");
    let ck_dir = base.path().join("models/checkpoints");
    std::fs::create_dir_all(&ck_dir).expect("checkpoints dir");
    std::os::unix::fs::symlink(&ck, ck_dir.join(ckpt)).expect("link checkpoint");
    let s = Server::start_in(base, &[]);

    let started = Instant::now();
    let id = s.submit(&workflow(ckpt, 42, steps, sampler, scheduler, "golden"), None);
    let entry = s.wait_history(&id);
    let cold = started.elapsed().as_secs_f64();
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");

    let golden_file = golden_dir().join(format!("{golden}.safetensors"));
    let want = read_f32(&golden_file, "final_latent");
    let got = read_f32(&s.path("output/golden_latent_00001_.latent"), "latent_tensor");
    assert_eq!(got.len(), want.len());
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let db = psnr(&rgb_pixels(&s.path("output/golden_00001_.png")), &rgb_pixels(&golden_dir().join(format!("{golden}.png"))));

    // Warm: another seed re-runs KSampler, VAEDecode and the savers; the rest is cached.
    let started = Instant::now();
    let id = s.submit(&workflow(ckpt, 43, steps, sampler, scheduler, "warm"), None);
    let entry = s.wait_history(&id);
    let warm = started.elapsed().as_secs_f64();
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");

    eprintln!(
        "{golden}: final_latent max |diff| {max_diff:.3e} (bound {:.3e}, max |ref| {max_ref}); PNG PSNR {db:.1} dB; \
         end to end cold {cold:.1} s (incl. checkpoint load), warm {warm:.1} s",
        1e-4 * max_ref
    );
    assert!(max_diff <= 1e-4 * max_ref, "final_latent max diff {max_diff} > {}", 1e-4 * max_ref);
    assert!(db >= 40.0, "PNG PSNR {db} dB < 40 dB");
}

#[test]
#[ignore = "heavy: 2.1 GB SD1.5 recipe checkpoint, 4 full-size steps at 256² (minutes, ~6 GB RAM)"]
fn sd15_end_to_end_matches_comfyui() {
    check_against_golden(
        Arch::Sd15,
        "sd15_recipe_s0.safetensors",
        "sd15_e2e_256x256_euler_normal_4steps_seed42_cfg7",
        4,
        "euler",
        "normal",
    );
}

#[test]
#[ignore = "heavy: 6.9 GB SDXL recipe checkpoint, 2 full-size steps at 256² (minutes, ~10 GB RAM)"]
fn sdxl_end_to_end_matches_comfyui() {
    check_against_golden(
        Arch::Sdxl,
        "sdxl_recipe_s0.safetensors",
        "sdxl_e2e_256x256_euler_ancestral_karras_2steps_seed42_cfg7",
        2,
        "euler_ancestral",
        "karras",
    );
}
