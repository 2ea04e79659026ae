//! Shared helpers of the `manage_*` end-to-end tests: run `manage.sh` against the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `manage.sh` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `manage.sh --action ACTION ARGS...` with `COMFY_RS_BIN` = the test binary.
pub fn manage(action: &str, args: &[&str]) -> Output {
    manage_env(action, args, &[])
}

/// Like [`manage`] with extra environment variables.
pub fn manage_env(action: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(root().join("manage.sh")).arg("--action").arg(action).args(args);
    c.env("COMFY_RS_BIN", env!("CARGO_BIN_EXE_comfy-rs"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run manage.sh")
}

/// stdout + stderr as text, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts a zero exit and returns the text.
pub fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "expected success, got {:?}:\n{t}", o.status.code());
    t
}

/// Stops the server of a base directory when dropped (so a failing test leaves nothing running).
pub struct Running {
    pub base: PathBuf,
    pub port: u16,
}

impl Running {
    /// `start` on a fresh port with `--cpu`; panics unless it succeeds.
    pub fn start(base: &Path) -> Running {
        let port = free_port();
        let b = base.to_str().unwrap().to_string();
        let p = port.to_string();
        ok(manage("start", &["--base-directory", &b, "--port", &p, "--cpu"]));
        Running { base: base.to_path_buf(), port }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = manage("stop", &["--base-directory", self.base.to_str().unwrap(), "--timeout", "5"]);
    }
}

/// The pid recorded in a base directory.
pub fn recorded_pid(base: &Path) -> Option<u32> {
    std::fs::read_to_string(base.join("comfy-rs.pid")).ok()?.trim().parse().ok()
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}
