//! Typed errors of the sampling crate.

/// Errors raised while scheduling or sampling.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A tensor operation failed (device, shape, dtype).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// Sampler name not in [`crate::SAMPLER_NAMES`].
    #[error("unknown sampler '{0}'")]
    UnknownSampler(String),
    /// Scheduler name not in [`crate::SCHEDULER_NAMES`].
    #[error("unknown scheduler '{0}'")]
    UnknownScheduler(String),
    /// The cancellation check returned true.
    #[error("sampling cancelled")]
    Cancelled,
    /// Bad arguments (empty sigma list where one is needed, wrong shapes...).
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, SamplingError>;
