//! History: `GET/POST /history`, `GET /history/{prompt_id}` (api.md §3).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{parse_json, ApiError};
use crate::routes::prompt::{id_list, truthy};
use crate::{json, AppState};

fn int_param(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::Json(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("invalid literal for int() with base 10: '{v}'")}),
            )
        }),
    }
}

/// `GET /history?max_items=&offset=`.
pub async fn get_history(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let parsed = int_param(&q, "max_items").and_then(|m| Ok((m, int_param(&q, "offset")?)));
    let (max_items, offset) = match parsed {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let max_items = max_items.map(|m| m.max(0) as usize);
    json::ok(
        &state
            .engine
            .history_json_at(max_items, offset.unwrap_or(-1)),
    )
}

/// `GET /history/{prompt_id}`: `{id: entry}` or `{}`.
pub async fn get_history_item(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    json::ok(&state.engine.history_item(&id))
}

/// `POST /history`: `{"clear": true}` and/or `{"delete": [ids]}`.
pub async fn post_history(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if truthy(body.get("clear")) {
        state.engine.history_clear();
    }
    if body.get("delete").is_some() {
        state.engine.history_delete(&id_list(body.get("delete")));
    }
    json::empty(StatusCode::OK)
}
