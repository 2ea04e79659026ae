//! Mapping the model crates' errors to [`NodeError`]s with ComfyUI's categories.

use comfy_graph::{CancelToken, ErrorCategory, NodeError};
use comfy_sampling::SamplingError;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sd::cache;

/// True when an error text looks like an allocation failure (CUDA/Metal OOM, cuBLAS
/// allocation failures, alloc errors).
fn looks_like_oom(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["out of memory", "outofmemory", "out_of_memory", "memory allocation", "memoryallocation", "alloc failed", "alloc_failed"]
        .iter()
        .any(|p| t.contains(p))
}

/// True when an error text comes from the GPU stack: CUDA driver errors (`CUDA_ERROR_*`,
/// cudarc's `DriverError`), cuBLAS / cuRAND / cuDNN statuses, NVRTC kernel compilation,
/// missing kernels or a build without CUDA.
fn looks_like_gpu_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "cuda_error_",
        "drivererror",
        "cudaerror",
        "cuda error",
        "cublas",
        "curand",
        "cudnn",
        "nvrtc",
        "missing kernel",
        "not compiled with cuda",
        "with cuda support",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// A message's category: out-of-memory first, then GPU failures, else internal.
fn classify(text: String, prefix_oom: bool) -> NodeError {
    if looks_like_oom(&text) {
        if prefix_oom {
            NodeError::out_of_memory(format!("Allocation on device failed: {text}"))
        } else {
            NodeError::out_of_memory(text)
        }
    } else if looks_like_gpu_error(&text) {
        NodeError::gpu_error(text)
    } else {
        NodeError::internal(text)
    }
}

/// True when `e` is (or wraps) candle's CUDA backend error.
fn is_cuda_error(e: &candle_core::Error) -> bool {
    match e {
        candle_core::Error::Cuda(_) => true,
        candle_core::Error::WithBacktrace { inner, .. } => is_cuda_error(inner),
        candle_core::Error::Context { inner, .. } => is_cuda_error(inner),
        candle_core::Error::WithPath { inner, .. } => is_cuda_error(inner),
        _ => false,
    }
}

/// A tensor error: out-of-memory when it says so, a GPU error for CUDA driver / kernel /
/// cuBLAS failures, otherwise an internal error.
pub fn candle_err(e: candle_core::Error) -> NodeError {
    let cuda = is_cuda_error(&e);
    let text = e.to_string();
    if cuda && !looks_like_oom(&text) {
        return NodeError::gpu_error(text);
    }
    classify(text, true)
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
        comfy_diffusion::Error::Msg(m) => classify(m, false),
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
        SamplingError::Invalid(m) => classify(m, false),
    }
}

/// The bytes of memory the OS reports as available (`MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The configured cap (`--memory-cap`) on the bytes resident models may hold; 0 = none.
static MEMORY_CAP: AtomicU64 = AtomicU64::new(0);

/// Sets (or clears) the memory cap that model loads are checked against.
pub fn set_memory_cap(bytes: Option<u64>) {
    MEMORY_CAP.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The configured memory cap, if any.
pub fn memory_cap() -> Option<u64> {
    match MEMORY_CAP.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Memory free for new weights on the compute device: the GPU's free memory (driver
/// figure) on CUDA, the OS's available memory on the CPU.
pub fn device_available_memory() -> Option<u64> {
    crate::sd::device::gpu_free_bytes().or_else(available_memory)
}

/// Makes sure `needed` more bytes of weights fit: under the configured cap (`--memory-cap`)
/// together with the resident models, and within the memory the device has free (candle
/// aborts the process on a failed CPU allocation, so this check comes first). When they do
/// not fit, the least recently used resident models are evicted first; only when the load
/// still does not fit is it an `out_of_memory` error (after which the engine unloads every
/// resident model, so a retry starts from an empty cache).
pub fn ensure_memory(needed: u64, what: &str) -> Result<(), NodeError> {
    ensure_memory_in(cache::global(), needed, memory_cap(), device_available_memory(), what)
}

/// Bytes that must be freed for `needed` to fit; 0 when it fits, or when no eviction can
/// make it fit under the cap (it is larger than the cap itself).
fn shortfall(needed: u64, resident: u64, cap: Option<u64>, avail: Option<u64>) -> u64 {
    let over_cap = match cap {
        Some(cap) if needed <= cap => resident.saturating_add(needed).saturating_sub(cap),
        _ => 0,
    };
    let over_free = avail.map(|a| needed.saturating_sub(a)).unwrap_or(0);
    over_cap.max(over_free)
}

/// [`ensure_memory`] against a given cache, cap and free-memory figure.
pub fn ensure_memory_in(
    cache: &cache::ModelCache,
    needed: u64,
    cap: Option<u64>,
    avail: Option<u64>,
    what: &str,
) -> Result<(), NodeError> {
    let short = shortfall(needed, cache.resident_bytes(), cap, avail);
    let freed = if short > 0 { cache.make_room(short) } else { 0 };
    // Dropped weights are returned to the device when nothing else holds them.
    let avail = avail.map(|a| a.saturating_add(freed));
    check_memory(needed, cache.resident_bytes(), cap, avail, what)
}

fn check_memory(needed: u64, resident: u64, cap: Option<u64>, avail: Option<u64>, what: &str) -> Result<(), NodeError> {
    if let Some(cap) = cap {
        if resident.saturating_add(needed) > cap {
            return Err(NodeError::out_of_memory(format!(
                "Allocation on device failed: {what} needs about {} MiB, {} MiB already resident, memory cap {} MiB",
                needed >> 20,
                resident >> 20,
                cap >> 20
            )));
        }
    }
    if let Some(avail) = avail {
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
        for text in [
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "CublasError(CUBLAS_STATUS_ALLOC_FAILED)",
            "cudaErrorMemoryAllocation",
        ] {
            assert_eq!(candle_err(candle_core::Error::Msg(text.into())).category(), ErrorCategory::OutOfMemory, "{text}");
        }
        let e = diffusion_err(comfy_diffusion::Error::Checkpoint { path: "/x/bad.safetensors".into(), message: "truncated".into() });
        assert!(e.to_string().contains("/x/bad.safetensors"));
        assert_eq!(e.category(), ErrorCategory::MissingModel);
    }

    #[test]
    fn gpu_failures_are_gpu_errors() {
        for text in [
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")",
            "DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")",
            "CublasError(CUBLAS_STATUS_EXECUTION_FAILED)",
            "CurandError(CURAND_STATUS_LAUNCH_FAILURE)",
            "missing kernel 'affine'",
            "the candle crate has not been built with cuda support",
        ] {
            let e = candle_err(candle_core::Error::Msg(text.into()));
            assert_eq!(e.category(), ErrorCategory::GpuError, "{text}");
            assert!(e.to_string().contains(text), "{e}");
        }
        // candle's CUDA backend error variant is a GPU error whatever its text...
        let boxed: Box<dyn std::error::Error + Send + Sync> = "unsupported dtype BF16 for conv2d".into();
        assert_eq!(candle_err(candle_core::Error::Cuda(boxed)).category(), ErrorCategory::GpuError);
        // ...unless it is an allocation failure.
        let boxed: Box<dyn std::error::Error + Send + Sync> = "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into();
        assert_eq!(candle_err(candle_core::Error::Cuda(boxed)).category(), ErrorCategory::OutOfMemory);
        // The model crates' message errors are classified the same way.
        let e = diffusion_err(comfy_diffusion::Error::Msg("DriverError(CUDA_ERROR_NOT_READY, \"\")".into()));
        assert_eq!(e.category(), ErrorCategory::GpuError);
        let e = sampling_err(SamplingError::Invalid("CublasError(CUBLAS_STATUS_NOT_SUPPORTED)".into()), &CancelToken::new());
        assert_eq!(e.category(), ErrorCategory::GpuError);
        // CPU-side failures stay internal.
        for text in ["shape mismatch in matmul, lhs: [2, 3], rhs: [4, 5]", "unexpected dtype, expected: F32, got: F16"] {
            assert_eq!(candle_err(candle_core::Error::Msg(text.into())).category(), ErrorCategory::Internal, "{text}");
        }
    }

    #[test]
    fn shortfall_counts_cap_and_free_memory() {
        assert_eq!(shortfall(10, 0, None, None), 0);
        assert_eq!(shortfall(10, 85, Some(90), None), 5);
        assert_eq!(shortfall(100, 50, Some(90), None), 0, "larger than the cap: eviction cannot help");
        assert_eq!(shortfall(70, 0, None, Some(50)), 20);
        assert_eq!(shortfall(30, 80, Some(100), Some(20)), 10);
    }

    #[test]
    fn memory_cap_counts_resident_models() {
        assert!(check_memory(10 << 20, 0, None, None, "x").is_ok());
        assert!(check_memory(10 << 20, 0, Some(20 << 20), None, "x").is_ok());
        let e = check_memory(10 << 20, 15 << 20, Some(20 << 20), None, "checkpoint a.safetensors").unwrap_err();
        assert_eq!(e.category(), ErrorCategory::OutOfMemory);
        assert!(e.to_string().contains("checkpoint a.safetensors"), "{e}");
        assert!(e.to_string().contains("memory cap 20 MiB"), "{e}");
        let e = check_memory(10 << 20, 0, None, Some(5 << 20), "x").unwrap_err();
        assert_eq!(e.category(), ErrorCategory::OutOfMemory);
    }

    #[test]
    fn cancelled_maps_to_interrupt() {
        let c = CancelToken::new();
        c.interrupt();
        assert!(matches!(sampling_err(SamplingError::Cancelled, &c), NodeError::Interrupted));
    }
}
