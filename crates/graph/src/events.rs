//! Engine -> client events (websocket messages), and their addressing.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

/// One message for the websocket layer.
#[derive(Debug, Clone)]
pub enum Event {
    /// A JSON message `{"type": kind, "data": data}`.
    Json {
        /// `"status"`, `"execution_start"`, `"executing"`, `"progress"`, ...
        kind: String,
        data: Json,
        /// The client it is addressed to; `None` = broadcast.
        client_id: Option<String>,
    },
    /// A binary frame: `event_type` is the leading u32 of the frame, `payload` what follows it.
    /// Previews are always produced as type 4 (`PREVIEW_IMAGE_WITH_METADATA`: u32 BE metadata
    /// length, metadata JSON, image bytes); the server rewrites them as type 1 for clients that
    /// did not announce `supports_preview_metadata`.
    Binary { event_type: u32, payload: Vec<u8>, client_id: Option<String> },
}

impl Event {
    /// The message kind (`"binary"` for binary frames).
    pub fn kind(&self) -> &str {
        match self {
            Event::Json { kind, .. } => kind,
            Event::Binary { .. } => "binary",
        }
    }
}

/// Where the engine delivers its events (the server's websocket hub; a channel in tests).
/// Called on the engine's threads, sometimes with the queue locked: it must not block for
/// long and must not call back into the [`crate::Engine`].
pub trait EventSink: Send + Sync {
    fn send(&self, event: Event);
}

/// A sink that drops everything.
pub struct NullSink;
impl EventSink for NullSink {
    fn send(&self, _event: Event) {}
}

/// Binary frame type of a preview with metadata.
pub const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// Unix time in milliseconds (the `timestamp` of execution messages).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Sends the events of one prompt with ComfyUI's addressing rules (websocket.md §2).
pub(crate) struct Emitter<'a> {
    pub sink: &'a dyn EventSink,
    /// `extra_data.client_id` of the prompt being executed.
    pub client_id: Option<String>,
}

impl Emitter<'_> {
    fn send(&self, kind: &str, data: Json, client_id: Option<String>) {
        self.sink.send(Event::Json { kind: kind.to_string(), data, client_id });
    }

    /// To the prompt's client only; dropped when the prompt has none.
    pub fn to_client(&self, kind: &str, data: Json) {
        if self.client_id.is_some() {
            self.send(kind, data, self.client_id.clone());
        }
    }

    /// To the prompt's client, or to everyone when it has none (`send_sync(.., client_id)`).
    pub fn to_client_or_all(&self, kind: &str, data: Json) {
        self.send(kind, data, self.client_id.clone());
    }

    /// A binary frame to the client, or to everyone when there is none.
    pub fn binary(&self, event_type: u32, payload: Vec<u8>) {
        self.sink.send(Event::Binary { event_type, payload, client_id: self.client_id.clone() });
    }
}

/// The `status` broadcast.
pub(crate) fn status_event(queue_remaining: usize) -> Event {
    Event::Json {
        kind: "status".into(),
        data: serde_json::json!({"status": {"exec_info": {"queue_remaining": queue_remaining}}}),
        client_id: None,
    }
}
