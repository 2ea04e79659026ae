//! `GET /ws?clientId=`: one task per socket, fed by the [`Hub`](crate::hub::Hub) queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::Value as Json;

use crate::hub::text_frame;
use crate::routes::info::feature_flags;
use crate::AppState;

/// A send that takes longer than this means the peer is not reading: the socket is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Upgrades to a websocket; the session id is `clientId` or a fresh uuid4 hex.
pub async fn ws(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let sid = q
        .get("clientId")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| serve_socket(state, sid, socket))
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn serve_socket(state: Arc<AppState>, sid: String, mut socket: WebSocket) {
    let (conn, mut rx) = state.hub.register(&sid, state.queue_remaining());
    tracing::debug!(sid = %sid, "websocket connected");
    let mut queue_open = true;
    let mut first_text = true;
    loop {
        tokio::select! {
            out = rx.recv(), if queue_open => match out {
                Some(msg) => {
                    if !send(&mut socket, msg).await {
                        break;
                    }
                }
                None => {
                    if state.hub.take_kicked(conn) {
                        // Overflowed or server shutting down: close the connection.
                        let _ = send(&mut socket, Message::Close(None)).await;
                        break;
                    }
                    // Replaced by a newer socket with the same sid: keep it open, silent.
                    queue_open = false;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    if first_text {
                        first_text = false;
                        match serde_json::from_str::<Json>(t.as_str()) {
                            Ok(v) if v.get("type").and_then(Json::as_str) == Some("feature_flags") => {
                                let data = v.get("data").cloned().unwrap_or(Json::Null);
                                state.hub.set_client_flags(&sid, conn, &data);
                                let reply = text_frame("feature_flags", &feature_flags(state.max_upload_bytes));
                                if !send(&mut socket, reply).await {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(sid = %sid, "invalid websocket message: {e}"),
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.hub.unregister(&sid, conn);
    tracing::debug!(sid = %sid, "websocket disconnected");
}
