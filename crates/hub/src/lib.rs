//! A lean Hugging Face Hub downloader for comfy-rs.
//!
//! It speaks only the few HTTP calls a model download needs (`HEAD` and ranged `GET` on
//! `{endpoint}/{repo}/resolve/{revision}/{file}`) over `ureq` (rustls + ring), so it builds in
//! seconds and stays out of the server's rebuild path.
//!
//! # Layout
//! - [`spec`]: `REPO:FILE[:FOLDER]` model specs and the default SDXL set.
//! - [`config`]: `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_OFFLINE`.
//! - [`remote`]: what the hub says about a file (`HEAD`): size and LFS sha256.
//! - [`download`]: resumable (`.incomplete` + `Range`), sha256-verified downloads.
//! - [`progress`]: a small terminal progress bar.
//! - [`error`]: [`HubError`] with messages aimed at the user.
//! - [`mock`]: a local mock of the hub endpoints (tests, offline trials).

pub mod config;
pub mod download;
pub mod error;
pub mod mock;
pub mod progress;
pub mod remote;
pub mod spec;

pub use config::HubConfig;
pub use download::{download, Outcome};
pub use error::HubError;
pub use progress::{NoProgress, Progress, ProgressBar};
pub use remote::{head, RemoteFile};
pub use spec::{default_models, ModelSpec};
