//! The reference document's client flows, run against the real binary: a Python `requests`
//! script and a `curl | jq` shell script, both on EmptyImage -> ImageBlur -> SaveImage.
//! They need `python3` with `requests`, and `curl` + `jq` (the CI script installs them).

mod server_support;

use std::path::PathBuf;
use std::process::Command;

use server_support::Server;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn require(cmd: &str, args: &[&str], what: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "missing prerequisite: {what} (install it: see .ci/run)");
}

fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).expect("downloaded file");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "download is not a PNG"
    );
}

#[test]
fn python_requests_flow() {
    require(
        "python3",
        &["-c", "import requests"],
        "python3 with the `requests` package (pip install requests)",
    );
    let server = Server::start(&[]);
    let out = server.path("py_download.png");
    let o = Command::new("python3")
        .arg(clients_dir().join("flow_requests.py"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(&out)
        .output()
        .expect("run python3");
    assert!(
        o.status.success(),
        "python flow failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("OK "));
    assert_png(&out);
    assert!(server.path("output/py_flow_00001_.png").is_file());
}

#[test]
fn curl_jq_shell_flow() {
    require("jq", &["--version"], "jq (apt-get install jq)");
    require("curl", &["--version"], "curl (apt-get install curl)");
    let server = Server::start(&[]);
    let out = server.path("sh_download.png");
    let o = Command::new("bash")
        .arg(clients_dir().join("flow_curl.sh"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(&out)
        .output()
        .expect("run bash");
    assert!(
        o.status.success(),
        "shell flow failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_png(&out);
    assert!(server.path("output/sh_flow_00001_.png").is_file());
    assert!(server.path("output/sh_flow_00002_.png").is_file());
}
