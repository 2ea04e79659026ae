//! The ComfyUI execution engine, without any machine learning.
//!
//! # Layout
//! - [`value`]: the values that flow along links (JSON literals and opaque objects such as tensors).
//! - [`schema`]: a node's declared inputs and outputs, rendered as `/object_info` JSON.
//! - [`node`]: the [`Node`] trait every node implements, its execution context and errors.
//! - [`registry`]: the table of node classes the server knows.
//! - [`folders`]: ComfyUI's directory layout (input/output/temp/user and `models/<kind>/`).
//! - [`cancel`]: the cancellation token nodes poll between units of work.
//! - [`prompt`]: typed access to an API-format prompt (links, node fields).
//! - [`validate`]: ComfyUI's prompt validation and its error bodies.
//! - [`cache`]: input-signature cache keys and the output/UI caches between prompts.
//! - [`executor`]: runs one prompt (scheduling, list mapping, events).
//! - [`history`]: the history store and the jobs API view.
//! - [`events`]: websocket events and their addressing.
//! - [`engine`]: the queue, its worker thread and the control API the server calls.
//! - [`pyfmt`]: Python-style formatting and conversions used in messages.
//!
//! The crate never sees HTTP or tensors: values are type-erased, so the ML crates plug in
//! through the node registry.

pub mod cache;
pub mod cancel;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod history;
pub mod folders;
pub mod node;
pub mod prompt;
pub mod pyfmt;
pub mod registry;
pub mod schema;
pub mod validate;
pub mod value;

#[cfg(test)]
mod engine_tests;

pub use cancel::CancelToken;
pub use engine::{Engine, EngineConfig, SubmitError};
pub use events::{Event, EventSink};
pub use history::JobsQuery;
pub use node::PreviewMethod;
pub use error::{ErrorCategory, NodeError};
pub use folders::Folders;
pub use node::{ExecContext, Inputs, Node, Outputs, ProgressSink};
pub use registry::NodeRegistry;
pub use schema::{InputSpec, InputType, NodeSchema, OutputSpec, Section};
pub use value::Value;
