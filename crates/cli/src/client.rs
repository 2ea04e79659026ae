//! A small blocking client for a running comfy-rs/ComfyUI server: JSON over HTTP and the
//! `/ws` event stream.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value as Json;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered (connection refused, timeout).
    #[error("no answer from {url}: {message}")]
    Unreachable { url: String, message: String },
    /// An answer that is not what the route promises.
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} sent invalid JSON: {message}")]
    BadJson { url: String, message: String },
    #[error("websocket {url}: {message}")]
    WebSocket { url: String, message: String },
}

/// A server at a base URL such as `http://127.0.0.1:8188`.
#[derive(Clone)]
pub struct Server {
    pub base: String,
    agent: ureq::Agent,
}

/// Percent-encodes a query-string component.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Server {
    /// A client with `timeout` for connecting and for each answer.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .proxy(None)
            .build()
            .into();
        Server { base: base.trim_end_matches('/').to_string(), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn unreachable(&self, url: &str, e: ureq::Error) -> ClientError {
        ClientError::Unreachable { url: url.to_string(), message: e.to_string() }
    }

    /// `GET path` → bytes, requiring a 2xx answer.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let mut resp = self.agent.get(&url).call().map_err(|e| self.unreachable(&url, e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.unreachable(&url, e))?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status { url, status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok(body)
    }

    /// `GET path` → JSON.
    pub fn get_json(&self, path: &str) -> Result<Json, ClientError> {
        let body = self.get_bytes(path)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadJson { url: self.url(path), message: e.to_string() })
    }

    /// `POST path` with a JSON body → `(status, JSON body or Null)`.
    pub fn post_json(&self, path: &str, body: &Json) -> Result<(u16, Json), ClientError> {
        let url = self.url(path);
        let text = body.to_string();
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(text.as_bytes())
            .map_err(|e| self.unreachable(&url, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().map_err(|e| self.unreachable(&url, e))?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        Ok((status, json))
    }

    /// True when `GET /system_stats` answers 200.
    pub fn answers(&self) -> bool {
        self.get_bytes("/system_stats").is_ok()
    }

    /// Opens `/ws?clientId=<id>`; reads time out after `read_timeout` so callers can poll.
    pub fn websocket(&self, client_id: &str, read_timeout: Duration) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, ClientError> {
        let url = format!("{}/ws?clientId={}", self.base.replacen("http", "ws", 1), encode_component(client_id));
        let err = |m: String| ClientError::WebSocket { url: url.clone(), message: m };
        if !url.starts_with("ws://") {
            return Err(err("only ws:// (plain HTTP) servers are supported".into()));
        }
        let (mut ws, _) = tungstenite::connect(url.as_str()).map_err(|e| err(e.to_string()))?;
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(read_timeout)).map_err(|e| err(e.to_string()))?;
        }
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_components() {
        assert_eq!(super::encode_component("a b/c.png"), "a%20b%2Fc.png");
    }

    #[test]
    fn closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = super::Server::new(&format!("http://127.0.0.1:{port}"), std::time::Duration::from_secs(2));
        assert!(!s.answers());
        assert!(matches!(s.get_json("/queue"), Err(super::ClientError::Unreachable { .. })));
    }
}
