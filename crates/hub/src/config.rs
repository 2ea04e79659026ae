//! Where the hub is and who we are: `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_OFFLINE`.

use std::path::PathBuf;
use std::time::Duration;

use crate::spec::ModelSpec;

/// The default public endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Connection settings, usually read from the environment with [`HubConfig::from_env`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL without trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Bearer token (`HF_TOKEN`, else the file `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: never touch the network.
    pub offline: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any single read.
    pub read_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            offline: false,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (the hub's rule).
pub fn hf_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("huggingface"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
}

impl HubConfig {
    /// Reads `HF_ENDPOINT`, `HF_TOKEN` (or `$HF_HOME/token`, as `huggingface-cli login` writes
    /// it) and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| hf_home().and_then(|h| std::fs::read_to_string(h.join("token")).ok()))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = std::env::var("HF_HUB_OFFLINE").map(|v| truthy(&v)).unwrap_or(false);
        HubConfig { endpoint, token, offline, ..Default::default() }
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, with the path percent-encoded.
    pub fn resolve_url(&self, spec: &ModelSpec) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            spec.repo,
            encode_path(&spec.revision),
            encode_path(&spec.file)
        )
    }

    /// A `ureq` agent that returns every status (no error mapping) and follows no redirect:
    /// redirects are followed by hand so that the `HEAD` headers stay readable.
    pub(crate) fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_recv_response(Some(self.read_timeout))
            .timeout_recv_body(None)
            .timeout_per_read(Some(self.read_timeout))
            .user_agent(concat!("comfy-rs/", env!("CARGO_PKG_VERSION"), "; hf-downloader"))
            .build()
            .into()
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_resolve_urls() {
        let c = HubConfig { endpoint: "http://127.0.0.1:9".into(), ..Default::default() };
        let s: ModelSpec = "a/b@refs/pr/1:dir/my file.safetensors".parse().unwrap();
        assert_eq!(c.resolve_url(&s), "http://127.0.0.1:9/a/b/resolve/refs/pr/1/dir/my%20file.safetensors");
    }
}
