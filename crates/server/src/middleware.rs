//! ComfyUI's middlewares: cache headers, and either CORS (`--enable-cors-header`) or the
//! default origin-only check that refuses cross-origin requests to a loopback server.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Splits `host[:port]` (also `[v6]:port`) into a lower-case host and an optional port.
pub fn split_host_port(s: &str) -> (String, Option<u16>) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_ascii_lowercase(), port);
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_ascii_lowercase(), p.parse().ok()),
        _ => (s.to_ascii_lowercase(), None),
    }
}

/// Whether a host name is a loopback address (`localhost`, `127.x`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// The origin check of ComfyUI's default middleware: `false` means "answer 403".
pub fn origin_allowed(headers: &HeaderMap) -> bool {
    let (Some(host), Some(origin)) = (headers.get(header::HOST), headers.get(header::ORIGIN))
    else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let (host_name, host_port) = split_host_port(host);
    if !is_loopback_host(&host_name) {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    // `null` and other non-URL origins have no host: they never match.
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    if authority.is_empty() {
        return false;
    }
    let (origin_name, origin_port) = split_host_port(authority);
    match (host_port, origin_port) {
        (Some(hp), Some(op)) => origin_name == host_name && hp == op,
        _ => origin_name == host_name,
    }
}

/// Default mode: refuse cross-origin requests to a loopback server; `OPTIONS` answers 200.
pub async fn origin_only(req: Request, next: Next) -> Response {
    if !origin_allowed(req.headers()) {
        tracing::warn!(
            origin = ?req.headers().get(header::ORIGIN),
            host = ?req.headers().get(header::HOST),
            "refused cross-origin request"
        );
        return StatusCode::FORBIDDEN.into_response();
    }
    if req.method() == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    next.run(req).await
}

/// `--enable-cors-header`: every response carries the CORS headers; `OPTIONS` answers 200.
pub async fn cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = state.cors_origin.clone().unwrap_or_else(|| "*".into());
    let mut resp = if req.method() == Method::OPTIONS {
        Response::new(Body::empty())
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, DELETE, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    resp
}

const IMAGE_SUFFIXES: &[&str] = &[
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// ComfyUI's `cache_control` middleware (sets the header only when the handler did not).
pub async fn cache_control(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    if resp.headers().contains_key(header::CACHE_CONTROL) {
        return resp;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    let value = if path.ends_with(".js")
        || path.ends_with(".css")
        || (last.starts_with("index") && last.ends_with(".json"))
    {
        Some("no-cache")
    } else if IMAGE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        match resp.status().as_u16() {
            404 => Some("public, max-age=3600"),
            200..=206 | 301 | 308 => Some("public, max-age=86400"),
            302 | 303 | 307 => Some("no-cache"),
            _ => None,
        }
    } else {
        None
    };
    if let Some(v) = value {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            m.insert(header::ORIGIN, o.parse().unwrap());
        }
        m
    }

    #[test]
    fn origin_rules() {
        assert!(origin_allowed(&h("127.0.0.1:8188", None)));
        assert!(origin_allowed(&h(
            "127.0.0.1:8188",
            Some("http://127.0.0.1:8188")
        )));
        assert!(origin_allowed(&h(
            "localhost:8188",
            Some("http://localhost")
        )));
        assert!(!origin_allowed(&h(
            "127.0.0.1:8188",
            Some("http://evil.example")
        )));
        assert!(!origin_allowed(&h(
            "127.0.0.1:8188",
            Some("http://127.0.0.1:9999")
        )));
        assert!(!origin_allowed(&h("127.0.0.1:8188", Some("null"))));
        assert!(!origin_allowed(&h(
            "[::1]:8188",
            Some("http://localhost:8188")
        )));
        assert!(origin_allowed(&h("[::1]:8188", Some("http://[::1]:8188"))));
        // A non-loopback server is not this middleware's concern.
        assert!(origin_allowed(&h(
            "192.168.1.5:8188",
            Some("http://evil.example")
        )));
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("LOCALHOST:80"),
            ("localhost".into(), Some(80))
        );
        assert_eq!(split_host_port("[::1]:8188"), ("::1".into(), Some(8188)));
        assert_eq!(split_host_port("::1"), ("::1".into(), None));
    }
}
