//! `import-workflow`, `execute-workflow` (on a server and in-process), `demo`, `list-models`.

mod examples_support;
mod manage_support;
mod server_support;

use std::path::Path;

use manage_support::*;
use serde_json::Value as Json;

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/manage").join(name).to_str().unwrap().to_string()
}

/// Width and height from a PNG's IHDR.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

fn pngs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "png")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn import_ui_workflow_converts_validates_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().to_str().unwrap();
    let api = dir.path().join("api.json");
    let t = ok(manage("import-workflow", &["--base-directory", b, "--workflow", &fixture("blur_ui.json"), "--api-output", api.to_str().unwrap()]));
    assert!(t.contains("valid UI-format workflow"), "{t}");
    let saved = dir.path().join("user/default/workflows/blur_ui.json");
    let saved: Json = serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap();
    let original: Json = serde_json::from_str(&std::fs::read_to_string(fixture("blur_ui.json")).unwrap()).unwrap();
    assert_eq!(saved, original, "the editor's document is saved unchanged");
    let got: Json = serde_json::from_str(&std::fs::read_to_string(&api).unwrap()).unwrap();
    let want: Json = serde_json::from_str(&std::fs::read_to_string(fixture("blur_api.json")).unwrap()).unwrap();
    let ids = |j: &Json| j.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ids(&got), ids(&want), "frontend-only, bypassed and reroute nodes are dropped");
    for (id, node) in want.as_object().unwrap() {
        assert_eq!(got[id]["class_type"], node["class_type"]);
        assert_eq!(got[id]["inputs"], node["inputs"], "inputs of node {id}");
    }
    // A second import under the same name needs --overwrite.
    let o = manage("import-workflow", &["--base-directory", b, "--workflow", &fixture("blur_ui.json")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    ok(manage("import-workflow", &["--base-directory", b, "--workflow", &fixture("blur_api.json"), "--name", "blur_ui", "--overwrite"]));
}

#[test]
fn import_reports_validation_errors_like_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().to_str().unwrap();
    let o = manage("import-workflow", &["--base-directory", b, "--workflow", &fixture("invalid_ui.json"), "--json"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("Prompt outputs failed validation"), "{t}");
    assert!(t.contains("* ImageBlur 2:") && t.contains("Value 0 smaller than min of 1: blur_radius"), "{t}");
    // comfy-rs's classification is shown with each error.
    assert!(t.contains("[invalid_input]"), "{t}");
    let body: Json = serde_json::from_slice(&o.stdout).expect("--json prints the /prompt 400 body");
    assert_eq!(body["node_errors"]["2"]["errors"][0]["type"], "value_smaller_than_min");
    assert!(!dir.path().join("user/default/workflows/invalid_ui.json").exists());
    // Not a workflow at all.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "[1, 2]").unwrap();
    assert_eq!(manage("import-workflow", &["--base-directory", b, "--workflow", junk.to_str().unwrap()]).status.code(), Some(1));
}

#[test]
fn execute_on_running_server_downloads_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(&dir.path().join("srv"));
    let out = dir.path().join("out");
    let t = ok(manage(
        "execute-workflow",
        &["--workflow", &fixture("blur_ui.json"), "--output", out.to_str().unwrap(), "--server", &server.url(), "--timeout", "120"],
    ));
    assert!(t.contains(&format!("running on {}", server.url())), "{t}");
    let files = pngs(&out);
    assert_eq!(files.len(), 2, "{t}");
    for f in &files {
        assert!(f.file_name().unwrap().to_str().unwrap().starts_with("manage_test_"), "{}", f.display());
        assert_eq!(png_size(f), (64, 48));
    }
    // The same bytes as the server saved.
    for f in &files {
        let saved = dir.path().join("srv/output").join(f.file_name().unwrap());
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(saved).unwrap());
    }
    // A workflow that fails validation: non-zero exit with the server's errors.
    let o = manage("execute-workflow", &["--workflow", &fixture("invalid_ui.json"), "--output", out.to_str().unwrap(), "--server", &server.url()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("smaller than min"), "{}", text(&o));
}

#[test]
fn execute_in_process_without_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let t = ok(manage(
        "execute-workflow",
        &["--base-directory", dir.path().to_str().unwrap(), "--workflow", &fixture("blur_api.json"), "--output", out.to_str().unwrap(), "--server", &nobody],
    ));
    assert!(t.contains("running in-process"), "{t}");
    let files = pngs(&out);
    assert_eq!(files.len(), 2, "{t}");
    assert_eq!(png_size(&files[0]), (64, 48));
    // --remote-only refuses instead.
    let o = manage("execute-workflow", &["--workflow", &fixture("blur_api.json"), "--server", &nobody, "--remote-only"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn demo_checkpoint_shows_in_list_models_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().to_str().unwrap();
    let t = ok(manage("demo", &["--base-directory", b, "--arch", "sdxl"]));
    assert!(t.contains("comfy-rs-demo-sdxl-tiny.safetensors"), "{t}");
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    std::fs::write(dir.path().join("models/loras/broken.safetensors"), [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    let t = ok(manage("list-models", &["--base-directory", b]));
    assert!(t.contains("checkpoints:") && t.contains("comfy-rs-demo-sdxl-tiny.safetensors") && t.contains("SDXL (non-standard size)"), "{t}");
    assert!(t.contains("broken.safetensors") && t.contains("INVALID"), "{t}");
    assert!(t.contains("empty folders:") && t.contains("vae"), "{t}");
    let o = manage("status", &["--base-directory", b, "--port", &free_port().to_string()]);
    assert_eq!(o.status.code(), Some(3));
    let t = text(&o);
    assert!(t.contains("checkpoints/comfy-rs-demo-sdxl-tiny.safetensors") && t.contains("header ok"), "{t}");
    assert_eq!(manage("demo", &["--base-directory", b, "--arch", "sd3"]).status.code(), Some(2));
}

/// The reference document's batch loop, literally, in a base directory holding the tiny
/// checkpoints, the input image and `examples/` shrunk to them, against a server that
/// `./manage.sh --action start` launched there on its own port: every example's PNGs land in
/// `--output` under the SaveImage subfolder.
#[test]
fn batch_loop_over_examples_writes_every_png() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    examples_support::prepare_base(base, true);
    std::fs::create_dir_all(base.join("examples")).unwrap();
    let examples = examples_support::tiny_examples();
    for (name, prompt, _) in &examples {
        std::fs::write(base.join("examples").join(name), serde_json::to_string_pretty(prompt).unwrap()).unwrap();
    }
    std::os::unix::fs::symlink(root().join("manage.sh"), base.join("manage.sh")).unwrap();
    let server = Running::start(base);
    let out = base.join("out");
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"for workflow in examples/*.json; do ./manage.sh --action execute-workflow --workflow "$workflow" --output "$OUT"; done"#)
        .current_dir(base)
        .env("OUT", &out)
        .env("COMFY_RS_BIN", env!("CARGO_BIN_EXE_comfy-rs"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches(&format!("running on {}", server.url())).count(), examples.len(), "each run used the started server:\n{t}");
    assert!(!t.contains("in-process") && !t.contains("error"), "{t}");
    let mut want = Vec::new();
    for (name, prompt, (w, h, n)) in &examples {
        let prefix = prompt
            .as_object()
            .unwrap()
            .values()
            .find(|node| node["class_type"] == "SaveImage")
            .and_then(|node| node["inputs"]["filename_prefix"].as_str())
            .unwrap_or_else(|| panic!("{name}: SaveImage prefix"));
        for i in 1..=*n {
            let rel = format!("{prefix}_{i:05}_.png");
            let f = out.join(&rel);
            assert!(f.is_file(), "{name}: {} missing:\n{t}", f.display());
            assert_eq!(png_size(&f), (*w, *h), "{name}: {rel}");
            assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(base.join("output").join(&rel)).unwrap(), "{rel}");
            want.push(f);
        }
    }
    want.sort();
    assert_eq!(examples_support::pngs_under(&out), want, "exactly the examples' images");
}
