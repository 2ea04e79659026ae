//! Browser tests of the web UI: the real `comfy-rs` binary on an ephemeral port, driven by a
//! headless Debian Chromium through `playwright-core` (scripts in `tests/browser/`).
//!
//! Needs: `apt-get install -y chromium` (or `CHROMIUM=/path`), `npm install --prefix tests/browser`
//! (playwright-core), and for the editor test the official frontend in `web/frontend/`
//! (`scripts/install-frontend.sh`, or `COMFY_FRONTEND_DIR=/path`). A missing piece fails the
//! test with the command that provides it. Screenshots go to `<target dir>/web-artifacts/`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

/// One Chromium at a time: the machines running CI have few cores.
static BROWSER: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn artifacts_dir() -> PathBuf {
    // <target>/<profile>/comfy-rs -> <target>/web-artifacts
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_comfy-rs"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("web-artifacts")
}

/// Checks chromium, node and playwright-core; panics with the install command otherwise.
fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium not found at {chromium}: install it with `apt-get install -y chromium` (or set CHROMIUM=/path/to/chromium)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.map(|o| o.status.success()).unwrap_or(false),
        "Node.js (`node`) is needed for the browser tests: `apt-get install -y nodejs npm`"
    );
    assert!(
        workspace()
            .join("tests/browser/node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run `npm install --prefix tests/browser` in {}",
        workspace().display()
    );
}

/// A running server; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `comfy-rs --base-directory <base> --port 0 <args>` with `cwd` as working directory.
fn start_server(base: &Path, cwd: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfy-rs"))
        .arg("--base-directory")
        .arg(base)
        .args(["--port", "0"])
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn comfy-rs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("To see the GUI go to: ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("server did not print its URL");
    Server { child, url }
}

/// Runs `node tests/browser/<script> <url> <artifacts> <extra...>`, failing on a non-zero exit
/// or after `timeout`; the script's output is printed.
fn run_node(script: &str, url: &str, extra: &[&str], timeout: Duration) {
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let mut child = Command::new("node")
        .arg(workspace().join("tests/browser").join(script))
        .arg(url)
        .arg(&artifacts)
        .args(extra)
        .current_dir(workspace().join("tests/browser"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait node") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    println!("--- {script} stdout ---\n{stdout}--- {script} stderr ---\n{stderr}");
    match status {
        None => panic!("{script} timed out after {timeout:?}"),
        Some(s) => assert!(s.success(), "{script} failed ({s}):\n{stderr}"),
    }
}

fn files_under(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p, prefix));
            } else if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn builtin_page_queues_a_workflow_and_shows_the_image() {
    require_browser_tools();
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let base = tempfile::tempdir().unwrap();
    // The working directory has no web/frontend: the built-in page is served.
    let s = start_server(base.path(), base.path(), &[]);
    run_node("builtin.mjs", &s.url, &[], Duration::from_secs(600));
    let saved = files_under(&base.path().join("output"), "web_builtin_");
    assert!(
        saved
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "png")),
        "no PNG saved: {saved:?}"
    );
    assert!(
        artifacts_dir().join("builtin-page.png").is_file(),
        "screenshot missing"
    );
}

/// The frontend directory: `COMFY_FRONTEND_DIR`, else `<workspace>/web/frontend`.
fn frontend_dir() -> PathBuf {
    let dir = std::env::var_os("COMFY_FRONTEND_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("web/frontend"));
    assert!(
        dir.join("index.html").is_file(),
        "the official frontend is not installed in {}: run `scripts/install-frontend.sh` (pip download of comfyui-frontend-package)",
        dir.display()
    );
    dir
}

/// The SD1.5 text-to-image example with a tiny random-weight checkpoint, 64x64, 3 steps.
fn tiny_text_to_image(ckpt: &str, prefix: &str) -> Json {
    let text = std::fs::read_to_string(workspace().join("examples/sd15_text_to_image.json"))
        .expect("example workflow");
    let mut wf: Json = serde_json::from_str(&text).expect("example JSON");
    wf["4"]["inputs"]["ckpt_name"] = json!(ckpt);
    wf["5"]["inputs"]["width"] = json!(64);
    wf["5"]["inputs"]["height"] = json!(64);
    wf["3"]["inputs"]["steps"] = json!(3);
    wf["9"]["inputs"]["filename_prefix"] = json!(prefix);
    wf
}

#[test]
fn official_editor_loads_and_runs_text_to_image() {
    require_browser_tools();
    let web = frontend_dir();
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let base = tempfile::tempdir().unwrap();
    let ckpt = "comfy-rs-tiny-sd15.safetensors";
    let ck_dir = base.path().join("models/checkpoints");
    std::fs::create_dir_all(&ck_dir).unwrap();
    comfy_diffusion::recipe::write_recipe_checkpoint(
        comfy_diffusion::recipe::Arch::Sd15,
        true,
        0,
        &ck_dir.join(ckpt),
    )
    .expect("tiny checkpoint");
    // Frontends 1.27.10 and 1.28.9 register "Comfy.Canvas.NavigationMode" before the two
    // settings its change handler writes, so for a user without saved values it throws "Cannot read
    // properties of undefined (reading 'id')" at start-up, whatever the backend (ComfyUI's
    // `/settings` answers `{}` for a new user too). The user here has the values that
    // handler would store for the default ("legacy") mode, so the start-up is clean.
    let settings_dir = base.path().join("user/default");
    std::fs::create_dir_all(&settings_dir).unwrap();
    std::fs::write(
        settings_dir.join("comfy.settings.json"),
        serde_json::to_vec_pretty(&json!({
            "Comfy.Canvas.LeftMouseClickBehavior": "panning",
            "Comfy.Canvas.MouseWheelScroll": "zoom"
        }))
        .unwrap(),
    )
    .unwrap();
    let prefix = "web_editor/t2i";
    let wf_file = base.path().join("tiny_text_to_image.json");
    std::fs::write(
        &wf_file,
        serde_json::to_vec_pretty(&tiny_text_to_image(ckpt, prefix)).unwrap(),
    )
    .unwrap();
    let web_arg = web.to_string_lossy().to_string();
    let s = start_server(base.path(), base.path(), &["--front-end-root", &web_arg]);
    run_node(
        "editor.mjs",
        &s.url,
        &[&wf_file.to_string_lossy(), prefix],
        Duration::from_secs(900),
    );
    let saved = files_under(&base.path().join("output/web_editor"), "t2i");
    assert!(
        saved
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "png")),
        "no PNG saved: {saved:?}"
    );
    assert!(
        artifacts_dir().join("official-editor.png").is_file(),
        "screenshot missing"
    );
}
