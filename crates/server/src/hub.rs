//! The registry of connected websockets and the delivery of engine events to them.
//!
//! Events arrive on the engine's thread; each socket has a bounded queue, filled with
//! `try_send`, so a slow or dead client can never block execution: when its queue is full the
//! client is dropped from the registry and its connection is closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::json::to_py_string;

/// Messages one socket may have waiting before it is considered dead.
pub const SOCKET_QUEUE: usize = 1024;

/// Binary frame types (websocket.md §5).
pub const PREVIEW_IMAGE: u32 = 1;
pub const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

struct Client {
    conn: u64,
    tx: mpsc::Sender<Message>,
    supports_preview_metadata: bool,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Client>,
    /// sid -> node currently executing for that client's prompt (for reconnects).
    executing: HashMap<String, String>,
    /// Connections dropped because their queue overflowed.
    kicked: Vec<u64>,
}

/// The socket registry (ComfyUI's `PromptServer.sockets`).
pub struct Hub {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    capacity: usize,
}

/// A text frame `{"type": kind, "data": data}` in Python's JSON style.
pub fn text_frame(kind: &str, data: &Json) -> Message {
    Message::Text(Utf8Bytes::from(to_py_string(
        &json!({"type": kind, "data": data}),
    )))
}

/// Rewrites a type-4 preview (JSON metadata + image) as a type-1 preview (format + image),
/// for clients that did not announce `supports_preview_metadata`.
pub fn downgrade_preview(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let meta = payload.get(4..4 + len)?;
    let image = payload.get(4 + len..)?;
    let meta: Json = serde_json::from_slice(meta).ok()?;
    let format: u32 = if meta.get("image_type").and_then(Json::as_str) == Some("image/png") {
        2
    } else {
        1
    };
    let mut out = Vec::with_capacity(8 + image.len());
    out.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
    out.extend_from_slice(&format.to_be_bytes());
    out.extend_from_slice(image);
    Some(out)
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(SOCKET_QUEUE)
    }
}

impl Hub {
    /// A hub whose sockets may each hold `capacity` undelivered messages.
    pub fn new(capacity: usize) -> Self {
        Hub {
            inner: Mutex::new(Inner::default()),
            next_conn: AtomicU64::new(1),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket under `sid` (replacing an earlier one with the same sid), queueing
    /// the on-connect `status` (and `executing`, when this client's prompt is running) first.
    pub fn register(&self, sid: &str, queue_remaining: usize) -> (u64, mpsc::Receiver<Message>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.capacity.max(4));
        let status =
            json!({"status": {"exec_info": {"queue_remaining": queue_remaining}}, "sid": sid});
        let mut inner = self.lock();
        let _ = tx.try_send(text_frame("status", &status));
        if let Some(node) = inner.executing.get(sid) {
            let _ = tx.try_send(text_frame("executing", &json!({"node": node})));
        }
        inner.clients.insert(
            sid.to_string(),
            Client {
                conn,
                tx,
                supports_preview_metadata: false,
            },
        );
        (conn, rx)
    }

    /// Records the feature flags a socket announced (only `true` counts as supported).
    pub fn set_client_flags(&self, sid: &str, conn: u64, flags: &Json) {
        let mut inner = self.lock();
        if let Some(c) = inner.clients.get_mut(sid).filter(|c| c.conn == conn) {
            c.supports_preview_metadata =
                flags.get("supports_preview_metadata") == Some(&Json::Bool(true));
        }
    }

    /// Removes a socket, unless `sid` has since been taken over by a newer connection.
    pub fn unregister(&self, sid: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.clients.get(sid).map(|c| c.conn) == Some(conn) {
            inner.clients.remove(sid);
        }
    }

    /// Whether a connection was dropped for overflowing its queue (then it should be closed).
    pub fn take_kicked(&self, conn: u64) -> bool {
        let mut inner = self.lock();
        if let Some(i) = inner.kicked.iter().position(|c| *c == conn) {
            inner.kicked.swap_remove(i);
            true
        } else {
            false
        }
    }

    /// Number of registered sockets.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// True when no socket is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every socket (server shutdown): their writers see the end of their queue.
    pub fn close_all(&self) {
        let mut inner = self.lock();
        let conns: Vec<u64> = inner.clients.values().map(|c| c.conn).collect();
        inner.kicked.extend(conns);
        inner.clients.clear();
    }

    fn deliver(
        inner: &mut Inner,
        client_id: Option<&str>,
        make: &dyn Fn(&Client) -> Option<Message>,
    ) {
        let mut dead = Vec::new();
        let mut push = |sid: &String, c: &Client| {
            if let Some(msg) = make(c) {
                if c.tx.try_send(msg).is_err() {
                    dead.push((sid.clone(), c.conn));
                }
            }
        };
        match client_id {
            Some(id) => {
                if let Some((sid, c)) = inner.clients.get_key_value(id) {
                    push(sid, c);
                }
            }
            None => {
                for (sid, c) in &inner.clients {
                    push(sid, c);
                }
            }
        }
        for (sid, conn) in dead {
            tracing::warn!(sid = %sid, "websocket client too slow or gone; disconnecting it");
            inner.clients.remove(&sid);
            inner.kicked.push(conn);
        }
    }

    /// Sends `{"type": kind, "data": data}` to `client_id`, or to every socket when `None`.
    pub fn send_json(&self, kind: &str, data: &Json, client_id: Option<&str>) {
        let frame = text_frame(kind, data);
        let mut inner = self.lock();
        if let Some(c) = client_id {
            match (kind, data.get("node")) {
                ("executing", Some(Json::String(n))) => {
                    inner.executing.insert(c.to_string(), n.clone());
                }
                ("executing", Some(Json::Null))
                | ("execution_success", _)
                | ("execution_error", _)
                | ("execution_interrupted", _) => {
                    inner.executing.remove(c);
                }
                _ => {}
            }
        }
        Self::deliver(&mut inner, client_id, &|_| Some(frame.clone()));
    }

    /// Sends a binary frame (`event_type` then `payload`); type-4 previews are rewritten as
    /// type 1 for sockets that did not announce `supports_preview_metadata`.
    pub fn send_binary(&self, event_type: u32, payload: &[u8], client_id: Option<&str>) {
        let mut full = Vec::with_capacity(4 + payload.len());
        full.extend_from_slice(&event_type.to_be_bytes());
        full.extend_from_slice(payload);
        let full = axum::body::Bytes::from(full);
        let legacy = if event_type == PREVIEW_IMAGE_WITH_METADATA {
            downgrade_preview(payload).map(axum::body::Bytes::from)
        } else {
            None
        };
        let mut inner = self.lock();
        Self::deliver(&mut inner, client_id, &|c| {
            if event_type == PREVIEW_IMAGE_WITH_METADATA && !c.supports_preview_metadata {
                legacy.clone().map(Message::Binary)
            } else {
                Some(Message::Binary(full.clone()))
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(o: Message) -> Json {
        match o {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn routes_to_addressed_client_or_all() {
        let hub = Hub::new(16);
        let (_, mut a) = hub.register("a", 0);
        let (_, mut b) = hub.register("b", 2);
        assert_eq!(text(a.try_recv().unwrap())["data"]["sid"], "a");
        assert_eq!(
            text(b.try_recv().unwrap())["data"]["status"]["exec_info"]["queue_remaining"],
            2
        );
        hub.send_json("progress", &json!({"value": 1}), Some("b"));
        hub.send_json("status", &json!({"x": 1}), None);
        assert_eq!(text(b.try_recv().unwrap())["type"], "progress");
        assert_eq!(text(b.try_recv().unwrap())["type"], "status");
        assert_eq!(text(a.try_recv().unwrap())["type"], "status");
        assert!(a.try_recv().is_err());
    }

    #[test]
    fn overflow_disconnects_instead_of_blocking() {
        let hub = Hub::new(4);
        let (conn, _rx) = hub.register("slow", 0);
        for i in 0..100 {
            hub.send_json("progress", &json!({"value": i}), None);
        }
        assert_eq!(hub.len(), 0);
        assert!(hub.take_kicked(conn));
    }

    #[test]
    fn reconnect_replaces_and_sees_running_node() {
        let hub = Hub::new(16);
        let (c1, _r1) = hub.register("c", 0);
        hub.send_json(
            "executing",
            &json!({"node": "3", "prompt_id": "p"}),
            Some("c"),
        );
        let (c2, mut r2) = hub.register("c", 1);
        hub.unregister("c", c1);
        assert_eq!(hub.len(), 1);
        text(r2.try_recv().unwrap());
        assert_eq!(
            text(r2.try_recv().unwrap()),
            json!({"type": "executing", "data": {"node": "3"}})
        );
        hub.unregister("c", c2);
        assert!(hub.is_empty());
    }

    #[test]
    fn preview_downgraded_without_flag() {
        let hub = Hub::new(16);
        let (c1, mut old) = hub.register("old", 0);
        let (c2, mut new) = hub.register("new", 0);
        let _ = (old.try_recv(), new.try_recv());
        hub.set_client_flags("new", c2, &json!({"supports_preview_metadata": true}));
        hub.set_client_flags("old", c1, &json!({"supports_preview_metadata": "yes"}));
        let meta = br#"{"node_id": "3", "image_type": "image/png"}"#;
        let mut payload = (meta.len() as u32).to_be_bytes().to_vec();
        payload.extend_from_slice(meta);
        payload.extend_from_slice(b"IMG");
        hub.send_binary(PREVIEW_IMAGE_WITH_METADATA, &payload, None);
        let Message::Binary(b) = old.try_recv().unwrap() else {
            panic!()
        };
        assert_eq!(&b[..], &[0, 0, 0, 1, 0, 0, 0, 2, b'I', b'M', b'G']);
        let Message::Binary(b) = new.try_recv().unwrap() else {
            panic!()
        };
        assert_eq!(&b[..4], &[0, 0, 0, 4]);
        assert_eq!(&b[4..], &payload[..]);
    }
}
