//! The server's error types and their HTTP shapes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::json;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("extra model paths config {path}: {message}")]
    ExtraPaths { path: String, message: String },
    #[error("compute device: {0}")]
    Device(String),
    #[error("cannot preload checkpoint {name}: {message}")]
    Preload { name: String, message: String },
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An error answer of a route: a status and an optional body.
#[derive(Debug)]
pub enum ApiError {
    /// A status with an empty body (aiohttp's bare responses).
    Bare(StatusCode),
    /// A status with a `text/plain` body.
    Text(StatusCode, String),
    /// A status with a JSON body.
    Json(StatusCode, serde_json::Value),
}

impl ApiError {
    /// `400` with ComfyUI's prompt-error shape, for a body that is not valid JSON.
    pub fn bad_json(err: &serde_json::Error) -> Self {
        ApiError::Json(
            StatusCode::BAD_REQUEST,
            json!({
                "error": {
                    "type": "invalid_json",
                    "message": "Request body is not valid JSON",
                    "details": err.to_string(),
                    "extra_info": {}
                },
                "node_errors": {}
            }),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Bare(s) => json::empty(s),
            ApiError::Text(s, t) => (s, t).into_response(),
            ApiError::Json(s, v) => json::json_response(s, &v),
        }
    }
}

/// Parses a request body as JSON (no Content-Type needed, as with aiohttp's `request.json()`).
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(&e))
}
