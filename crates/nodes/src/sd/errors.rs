//! Mapping the model crates' errors to [`NodeError`]s with ComfyUI's categories.

use comfy_graph::{CancelToken, ErrorCategory, NodeError};
use comfy_sampling::SamplingError;

/// True when an error text looks like an allocation failure (CUDA/Metal OOM, alloc errors).
fn looks_like_oom(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("out of memory") || t.contains("outofmemory") || t.contains("memory allocation") || t.contains("alloc failed")
}

/// A tensor error: out-of-memory when it says so, otherwise an internal error.
pub fn candle_err(e: candle_core::Error) -> NodeError {
    let text = e.to_string();
    if looks_like_oom(&text) {
        NodeError::out_of_memory(format!("Allocation on device failed: {text}"))
    } else {
        NodeError::internal(text)
    }
}

/// An error of the diffusion crate. Unusable checkpoint files name the file
/// (`missing_model` category: the model cannot be used).
pub fn diffusion_err(e: comfy_diffusion::Error) -> NodeError {
    match e {
        comfy_diffusion::Error::Candle(c) => candle_err(c),
        comfy_diffusion::Error::Checkpoint { path, message } => NodeError::new(
            ErrorCategory::MissingModel,
            "RuntimeError",
            format!("ERROR: Could not load model file {}: {message}", path.display()),
        ),
        comfy_diffusion::Error::Io(io) => NodeError::missing_model(io.to_string()),
        comfy_diffusion::Error::Msg(m) => {
            if looks_like_oom(&m) {
                NodeError::out_of_memory(m)
            } else {
                NodeError::internal(m)
            }
        }
    }
}

/// An error of the sampling crate; a cancelled run becomes the token's own error
/// (interrupt or timeout).
pub fn sampling_err(e: SamplingError, cancel: &CancelToken) -> NodeError {
    match e {
        SamplingError::Cancelled => match cancel.check() {
            Err(err) => err,
            Ok(()) => NodeError::Interrupted,
        },
        SamplingError::Candle(c) => candle_err(c),
        SamplingError::UnknownSampler(s) => NodeError::invalid_input(format!("Unknown sampler: {s}")),
        SamplingError::UnknownScheduler(s) => NodeError::invalid_input(format!("Unknown scheduler: {s}")),
        SamplingError::Invalid(m) => {
            if looks_like_oom(&m) {
                NodeError::out_of_memory(m)
            } else {
                NodeError::internal(m)
            }
        }
    }
}

/// The bytes of memory the OS reports as available (`MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fails with `out_of_memory` when `needed` bytes clearly exceed what the OS has available
/// (candle aborts the process on a failed CPU allocation, so this check comes first).
pub fn ensure_memory(needed: u64, what: &str) -> Result<(), NodeError> {
    if let Some(avail) = available_memory() {
        if needed > avail {
            return Err(NodeError::out_of_memory(format!(
                "Not enough memory to load {what}: needs about {} MiB, {} MiB available",
                needed >> 20,
                avail >> 20
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_texts_are_classified() {
        let e = candle_err(candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY: out of memory".into()));
        assert_eq!(e.category(), ErrorCategory::OutOfMemory);
        let e = candle_err(candle_core::Error::Msg("shape mismatch".into()));
        assert_eq!(e.category(), ErrorCategory::Internal);
        let e = diffusion_err(comfy_diffusion::Error::Checkpoint { path: "/x/bad.safetensors".into(), message: "truncated".into() });
        assert!(e.to_string().contains("/x/bad.safetensors"));
        assert_eq!(e.category(), ErrorCategory::MissingModel);
    }

    #[test]
    fn cancelled_maps_to_interrupt() {
        let c = CancelToken::new();
        c.interrupt();
        assert!(matches!(sampling_err(SamplingError::Cancelled, &c), NodeError::Interrupted));
    }
}
