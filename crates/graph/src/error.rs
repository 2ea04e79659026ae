//! Errors a node raises while executing.

use serde::{Deserialize, Serialize};

/// The reference document's error classification, added beside ComfyUI's own error fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    MissingModel,
    OutOfMemory,
    InvalidInput,
    Timeout,
    GpuError,
    QueueFull,
    Internal,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::MissingModel => "missing_model",
            ErrorCategory::OutOfMemory => "out_of_memory",
            ErrorCategory::InvalidInput => "invalid_input",
            ErrorCategory::Timeout => "timeout",
            ErrorCategory::GpuError => "gpu_error",
            ErrorCategory::QueueFull => "queue_full",
            ErrorCategory::Internal => "internal",
        }
    }
}

/// A node's failure, reported as ComfyUI's `execution_error` (or `execution_interrupted`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The node raised: `exception_type` mirrors the Python exception class ComfyUI would name.
    #[error("{message}")]
    Failed {
        exception_type: String,
        message: String,
        category: ErrorCategory,
    },
    /// `/interrupt` (or shutdown) stopped the node.
    #[error("Processing interrupted")]
    Interrupted,
}

impl NodeError {
    pub fn new(category: ErrorCategory, exception_type: &str, message: impl Into<String>) -> Self {
        NodeError::Failed { exception_type: exception_type.to_string(), message: message.into(), category }
    }
    /// A bad value or missing input (Python `ValueError`).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::InvalidInput, "ValueError", message)
    }
    /// A model or input file that is absent or unreadable (`FileNotFoundError`).
    pub fn missing_model(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::MissingModel, "FileNotFoundError", message)
    }
    /// An allocation failure (`torch.OutOfMemoryError` in ComfyUI).
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::OutOfMemory, "torch.OutOfMemoryError", message)
    }
    /// A device (CUDA) failure.
    pub fn gpu_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::GpuError, "RuntimeError", message)
    }
    /// The prompt ran past its time limit.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Timeout, "TimeoutError", message)
    }
    /// Anything else (`RuntimeError`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Internal, "RuntimeError", message)
    }

    pub fn category(&self) -> ErrorCategory {
        match self {
            NodeError::Failed { category, .. } => *category,
            NodeError::Interrupted => ErrorCategory::Internal,
        }
    }
}
