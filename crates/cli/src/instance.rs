//! A background server's files under its base directory: `comfy-rs.pid` (the pid),
//! `comfy-rs.log` (its stdout and stderr) and `comfy-rs.instance.json` (how it was started).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;
use crate::InstanceArgs;

/// Default port (ComfyUI's).
pub const DEFAULT_PORT: u16 = 8188;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1";

/// How a started instance was launched (written by `start`, read by the other actions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub pid: u32,
    pub listen: String,
    pub port: u16,
    /// Server flags passed through besides `--listen/--port/--base-directory`.
    pub server_args: Vec<String>,
    /// The binary that was started.
    pub binary: PathBuf,
    /// Unix seconds.
    pub started_at: u64,
}

/// The file paths of one base directory.
#[derive(Debug, Clone)]
pub struct InstanceFiles {
    pub base: PathBuf,
}

impl InstanceFiles {
    /// Files under `base` (made absolute so messages are unambiguous).
    pub fn new(base: &Path) -> Self {
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        InstanceFiles { base }
    }
    pub fn pid_file(&self) -> PathBuf {
        self.base.join("comfy-rs.pid")
    }
    pub fn log_file(&self) -> PathBuf {
        self.base.join("comfy-rs.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.base.join("comfy-rs.instance.json")
    }

    /// The pid recorded in the pid file, if any.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    /// The recorded pid when that process is alive and looks like our server.
    pub fn running_pid(&self) -> Option<u32> {
        let pid = self.pid()?;
        if !sys::alive(pid) {
            return None;
        }
        // A recycled pid belonging to something else does not count.
        match sys::cmdline(pid) {
            Some(cmd) if !cmd.contains("comfy") => {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                let ours = self.state().map(|s| s.binary);
                if exe.is_some() && exe == ours {
                    Some(pid)
                } else {
                    None
                }
            }
            _ => Some(pid),
        }
    }

    pub fn state(&self) -> Option<InstanceState> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, state: &InstanceState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.base)?;
        std::fs::write(self.pid_file(), format!("{}\n", state.pid))?;
        let json = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
        std::fs::write(self.state_file(), json + "\n")
    }

    /// Removes the pid and state files (the log stays).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let _ = std::fs::remove_file(self.state_file());
    }
}

/// The address to connect to for a listen setting: the first address, with wildcard
/// addresses (`0.0.0.0`, `::`, empty) replaced by loopback.
pub fn connect_host(listen: &str) -> String {
    let first = listen.split(',').map(str::trim).find(|s| !s.is_empty()).unwrap_or("");
    match first {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    }
}

/// The base URL of a server: `http://host:port`.
pub fn base_url(listen: &str, port: u16) -> String {
    format!("http://{}:{port}", connect_host(listen))
}

/// Resolves listen/port: explicit flags, else what `start` recorded, else the defaults.
pub fn resolve_address(args: &InstanceArgs, state: Option<&InstanceState>) -> (String, u16) {
    let listen = args
        .listen
        .clone()
        .or_else(|| state.map(|s| s.listen.clone()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let port = args.port.or(state.map(|s| s.port)).unwrap_or(DEFAULT_PORT);
    (listen, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_hosts() {
        assert_eq!(connect_host("0.0.0.0,::"), "127.0.0.1");
        assert_eq!(connect_host("::"), "[::1]");
        assert_eq!(connect_host("10.0.0.2"), "10.0.0.2");
        assert_eq!(connect_host("fe80::1"), "[fe80::1]");
        assert_eq!(base_url("", 9000), "http://127.0.0.1:9000");
    }

    #[test]
    fn state_round_trip_and_stale_pid() {
        let dir = tempfile::tempdir().unwrap();
        let f = InstanceFiles::new(dir.path());
        assert!(f.running_pid().is_none());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let s = InstanceState {
            pid: dead,
            listen: "127.0.0.1".into(),
            port: 1234,
            server_args: vec!["--cpu".into()],
            binary: "/x/comfy-rs".into(),
            started_at: 1,
        };
        f.write(&s).unwrap();
        assert_eq!(f.pid(), Some(dead));
        assert_eq!(f.state().unwrap(), s);
        assert!(f.running_pid().is_none(), "a dead pid is not running");
        let args = InstanceArgs { base: crate::BaseArgs { base_directory: dir.path().into() }, port: None, listen: None };
        assert_eq!(resolve_address(&args, Some(&s)), ("127.0.0.1".to_string(), 1234));
        f.clear();
        assert!(f.pid().is_none());
    }
}
