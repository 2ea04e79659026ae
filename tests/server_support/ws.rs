//! WebSocket helpers of the end-to-end tests: connect to `/ws`, read JSON messages.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value as Json;
use tokio_tungstenite::tungstenite::Message;

use super::Server;

/// A client socket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `ws://127.0.0.1:<port><path>` (e.g. `/ws?clientId=C`).
pub async fn connect(s: &Server, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}{path}", s.port))
        .await
        .expect("ws connect");
    ws
}

/// The next websocket message of any kind, within 120 s.
pub async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(120), ws.next())
        .await
        .expect("timed out waiting for a websocket message")
        .expect("socket closed")
        .expect("socket error")
}

/// The next JSON message (binary frames are skipped), within 120 s.
pub async fn next_json(ws: &mut Ws) -> Json {
    loop {
        match next_message(ws).await {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON text frame"),
            Message::Close(_) => panic!("socket closed by server"),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        }
    }
}

/// Messages up to and including `{"type": "executing", "data": {"node": null, "prompt_id": id}}`;
/// `only_this_prompt` drops messages whose `data.prompt_id` is not `id` (e.g. `status`).
pub async fn until_done(ws: &mut Ws, id: &str, only_this_prompt: bool) -> Vec<Json> {
    let mut out = Vec::new();
    loop {
        let m = next_json(ws).await;
        let ours = m["data"]["prompt_id"] == id;
        if only_this_prompt && !ours {
            continue;
        }
        let done = ours && m["type"] == "executing" && m["data"]["node"].is_null();
        out.push(m);
        if done {
            return out;
        }
    }
}
