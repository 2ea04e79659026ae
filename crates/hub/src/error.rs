//! Errors of the downloader, worded for the person running `manage.sh`.

use std::path::PathBuf;

/// Everything that can go wrong while talking to the hub or writing a model file.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A `REPO:FILE[:FOLDER]` spec that does not parse.
    #[error("bad model spec {spec:?}: {reason} (expected REPO:FILE[:FOLDER], e.g. stabilityai/sdxl-vae:sdxl_vae.safetensors:vae)")]
    BadSpec { spec: String, reason: String },
    /// The endpoint could not be reached at all (no network, DNS, refused connection).
    #[error("cannot reach the Hugging Face hub at {endpoint}: {message}\n  Are you offline? Check the network, set HF_ENDPOINT to a reachable mirror, or copy the file into the models folder by hand.")]
    Offline { endpoint: String, message: String },
    /// `HF_HUB_OFFLINE` is set.
    #[error("HF_HUB_OFFLINE is set: not downloading {file} (unset it to allow downloads)")]
    OfflineMode { file: String },
    /// 401/403: gated or private repository.
    #[error("access to {url} was refused (HTTP {status}). The repository may be gated or private: accept its licence on the hub and set HF_TOKEN (or put a token in $HF_HOME/token)")]
    Unauthorized { url: String, status: u16 },
    /// 404: no such repository, revision or file.
    #[error("not found on the hub: {url} (HTTP 404). Check the repository and file name")]
    NotFound { url: String },
    /// Any other unexpected HTTP answer.
    #[error("unexpected HTTP {status} from {url}")]
    Http { url: String, status: u16 },
    /// A transfer failed part-way; the partial file is kept for the next run to resume.
    #[error("download of {url} interrupted after {written} bytes: {message}\n  The partial file {partial} is kept; run the same command again to resume.")]
    Interrupted { url: String, written: u64, partial: PathBuf, message: String },
    /// The downloaded bytes do not hash to the hub's sha256; the partial file was removed.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the corrupt download was deleted")]
    ChecksumMismatch { file: PathBuf, expected: String, actual: String },
    /// The downloaded size differs from the size the hub announced.
    #[error("size mismatch for {file}: expected {expected} bytes, got {actual}")]
    SizeMismatch { file: PathBuf, expected: u64, actual: u64 },
    /// Local file-system error.
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
}

impl HubError {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io { context, path: path.into(), source }
    }
}
