//! `manage.sh --action download-models` against a local mock of the Hugging Face endpoints
//! (`HF_ENDPOINT`), including an interrupted download that resumes and a checksum mismatch.

mod manage_support;

use comfy_cli::comfy_hub::mock::{bytes, MockFile, MockHub};
use manage_support::*;

#[test]
fn downloads_resumes_and_verifies() {
    let ckpt = bytes(700_000, 11);
    let mut f = MockFile::lfs(ckpt.clone());
    f.interrupts = 1;
    let vae = bytes(90_000, 5);
    let hub = MockHub::start(vec![("org/ckpt/model.safetensors", f), ("org/thevae/vae.safetensors", MockFile::lfs(vae.clone()))]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().to_str().unwrap();
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_TOKEN", ""), ("HF_HOME", b)];
    let args = ["--base-directory", b, "--model", "org/ckpt:model.safetensors", "--model", "org/thevae:vae.safetensors:vae"];

    // First run: the checkpoint transfer is cut half-way; the VAE completes.
    let o = manage_env("download-models", &args, &env);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("interrupted") && t.contains("run the same command again to resume"), "{t}");
    let partial = dir.path().join("models/checkpoints/model.safetensors.incomplete");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < 700_000);
    assert_eq!(std::fs::read(dir.path().join("models/vae/vae.safetensors")).unwrap(), vae);

    // list-models shows the partial download.
    let t = ok(manage("list-models", &["--base-directory", b]));
    assert!(t.contains("partial download") && t.contains("model.safetensors.incomplete"), "{t}");

    // Second run resumes with a Range request and verifies the sha256.
    let t = ok(manage_env("download-models", &args, &env));
    assert!(t.contains("resumed from") && t.contains("verified"), "{t}");
    assert!(t.contains("already present"), "the VAE is not fetched again: {t}");
    assert_eq!(std::fs::read(dir.path().join("models/checkpoints/model.safetensors")).unwrap(), ckpt);
    assert!(!partial.exists());
    let ranges: Vec<_> = hub.requests().into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges, vec![format!("bytes={kept}-")]);
}

#[test]
fn checksum_mismatch_fails() {
    let mut f = MockFile::lfs(bytes(20_000, 2));
    f.claimed_sha256 = "ab".repeat(32);
    let hub = MockHub::start(vec![("org/m/x.safetensors", f)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().to_str().unwrap();
    let o = manage_env("download-models", &["--base-directory", b, "--model", "org/m:x.safetensors"], &[("HF_ENDPOINT", &hub.endpoint)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("checksum mismatch"), "{t}");
    assert!(!dir.path().join("models/checkpoints/x.safetensors").exists());
}

#[test]
fn default_models_and_offline_message() {
    // Nothing listens on this port: the default SDXL set fails with the offline hint.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let o = manage_env("download-models", &["--base-directory", dir.path().to_str().unwrap()], &[("HF_ENDPOINT", &endpoint)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("stabilityai/stable-diffusion-xl-base-1.0:sd_xl_base_1.0.safetensors"), "{t}");
    assert!(t.contains("Are you offline?"), "{t}");
    // The default set is served by a mock: both land in their folders.
    let hub = MockHub::start(vec![
        ("stabilityai/stable-diffusion-xl-base-1.0/sd_xl_base_1.0.safetensors", MockFile::lfs(bytes(1000, 1))),
        ("stabilityai/sdxl-vae/sdxl_vae.safetensors", MockFile::lfs(bytes(500, 2))),
    ]).unwrap();
    ok(manage_env("download-models", &["--base-directory", dir.path().to_str().unwrap()], &[("HF_ENDPOINT", &hub.endpoint)]));
    assert!(dir.path().join("models/checkpoints/sd_xl_base_1.0.safetensors").exists());
    assert!(dir.path().join("models/vae/sdxl_vae.safetensors").exists());
    // A bad spec is a usage error.
    let o = manage("download-models", &["--base-directory", dir.path().to_str().unwrap(), "--model", "nonsense"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
