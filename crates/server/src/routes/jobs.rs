//! The jobs API of newer servers: `GET /api/jobs`, `GET /api/jobs/{id}`,
//! `POST /api/jobs/{id}/cancel` (api.md §8.2).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use comfy_graph::JobsQuery;
use serde_json::{json, Value as Json};

use crate::{json, AppState};

/// `GET /api/jobs?status=&workflow_id=&sort_by=&sort_order=&limit=&offset=`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    match JobsQuery::parse(q.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(query) => json::ok(&state.engine.jobs_json(&query)),
        Err(msg) => json::json_response(StatusCode::BAD_REQUEST, &json!({"error": msg})),
    }
}

/// `GET /api/jobs/{id}`: the job with its outputs and workflow, or 404.
pub async fn one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.engine.job_json(&id) {
        Some(job) => json::ok(&job),
        None => json::json_response(StatusCode::NOT_FOUND, &json!({"error": "Job not found"})),
    }
}

/// `POST /api/jobs/{id}/cancel`: removes a pending job or interrupts the running one.
/// Finished jobs answer 409; unknown ids 404.
pub async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(job) = state.engine.job_json(&id) else {
        return json::json_response(StatusCode::NOT_FOUND, &json!({"error": "Job not found"}));
    };
    let status = job
        .get("status")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    match status.as_str() {
        "pending" => state.engine.queue_delete(std::slice::from_ref(&id)),
        "in_progress" => state.engine.interrupt(Some(&id)),
        _ => {
            return json::json_response(
                StatusCode::CONFLICT,
                &json!({"error": format!("Job is already {status}"), "id": id, "status": status}),
            )
        }
    }
    json::ok(&json!({"id": id, "status": "cancelled", "previous_status": status}))
}
