//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading and running diffusion models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A checkpoint file that cannot be used; the message says what was recognised.
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{0}")]
    Msg(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
