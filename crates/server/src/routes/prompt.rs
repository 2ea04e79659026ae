//! The queue: `POST/GET /prompt`, `GET/POST /queue`, `POST /interrupt`, `POST /free` (api.md §2).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use comfy_graph::SubmitError;
use serde_json::{json, Value as Json};

use crate::error::{parse_json, ApiError};
use crate::{json, AppState};

/// `Retry-After` (seconds) of a 429 answer when the queue is full.
const QUEUE_FULL_RETRY_AFTER_SECS: &str = "1";

/// `POST /prompt`: validate and enqueue.
pub async fn post_prompt(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match state.engine.submit(body) {
        Ok(reply) => json::ok(&reply),
        Err(SubmitError::Invalid(b)) => json::json_response(StatusCode::BAD_REQUEST, &b),
        Err(SubmitError::QueueFull(b)) => {
            let mut resp = json::json_response(StatusCode::TOO_MANY_REQUESTS, &b);
            // Nothing was queued; a client may retry once the queue has moved on.
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(QUEUE_FULL_RETRY_AFTER_SECS));
            resp
        }
    }
}

/// `GET /prompt`: `{"exec_info": {"queue_remaining": n}}`.
pub async fn get_prompt(State(state): State<Arc<AppState>>) -> Response {
    json::ok(&json!({"exec_info": {"queue_remaining": state.engine.queue_remaining()}}))
}

/// `GET /queue`.
pub async fn get_queue(State(state): State<Arc<AppState>>) -> Response {
    json::ok(&state.engine.queue_json())
}

/// The string ids of a `"delete"` list (non-strings are skipped).
pub fn id_list(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Python truthiness of a JSON value (`{"clear": true}`).
pub fn truthy(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(o)) => !o.is_empty(),
    }
}

/// `POST /queue`: `{"clear": true}` and/or `{"delete": [ids]}`.
pub async fn post_queue(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if truthy(body.get("clear")) {
        state.engine.queue_clear();
    }
    if body.get("delete").is_some() {
        state.engine.queue_delete(&id_list(body.get("delete")));
    }
    json::empty(StatusCode::OK)
}

/// `POST /interrupt`: body optional; invalid JSON counts as `{}`.
pub async fn interrupt(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let id = body
        .get("prompt_id")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty());
    state.engine.interrupt(id);
    json::empty(StatusCode::OK)
}

/// `POST /free`: `{"unload_models": bool, "free_memory": bool}`.
pub async fn free(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !body.is_object() {
        return ApiError::Bare(StatusCode::BAD_REQUEST).into_response();
    }
    state.engine.free(
        truthy(body.get("unload_models")),
        truthy(body.get("free_memory")),
    );
    json::empty(StatusCode::OK)
}
