//! The process-wide compute device and the dtypes models use on it.
//!
//! Chosen once at start-up ([`select`], from `--cpu` / `--cuda-device N`); before that, the
//! first use picks the default: CUDA device 0 when this build has the `cuda` feature and a
//! device opens, otherwise the CPU. Models are loaded straight onto this device and stay
//! there while resident.
//!
//! Dtypes follow ComfyUI's `model_management` on each device (`shared/spec/checkpoints.md` §5):
//! text-encoder weights stored in F16 with the forward pass in F32 everywhere; UNet and VAE in
//! F32 on the CPU; on an NVIDIA GPU the UNet in F16 (compute capability ≥ 7) and the SD/SDXL
//! VAE in BF16 where the GPU supports it (compute capability ≥ 8), else F32. ComfyUI's precision
//! flags (`--force-fp32`, `--fp16-unet`, `--fp32-vae`, …) override this ([`set_precision`]).

use std::sync::{OnceLock, RwLock};

use candle_core::{DType, Device};

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// CUDA device 0 when built with `cuda` and it opens, else the CPU.
    Auto,
    /// `--cpu`.
    Cpu,
    /// `--cuda-device N`.
    Cuda(usize),
}

/// Why the requested device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A CUDA device was asked for in a build without the `cuda` feature.
    #[error("CUDA device {0} was requested, but this comfy-rs build has no CUDA support (build it with `cargo build --release --features cuda`, or run with --cpu)")]
    NotCompiled(usize),
    /// The driver could not open the device.
    #[error("cannot open CUDA device {ordinal}: {message}")]
    Open {
        /// The device index.
        ordinal: usize,
        /// The driver's message.
        message: String,
    },
}

/// The dtypes each model part is loaded and run in on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeDtypes {
    /// UNet weight storage (ComfyUI's `unet_dtype`).
    pub unet: DType,
    /// UNet forward pass: the storage dtype on a GPU; F32 on the CPU, where F16/BF16 weights
    /// are cast per op (ComfyUI's `unet_manual_cast`).
    pub unet_compute: DType,
    /// Text-encoder weight storage (`text_encoder_dtype`).
    pub text_encoder: DType,
    /// Text-encoder forward pass (ComfyUI runs CLIP in float32, up-casting weights per op).
    pub text_encoder_compute: DType,
    /// VAE weights and compute (`vae_dtype`).
    pub vae: DType,
}

/// ComfyUI's precision flags. Explicit per-model choices win; `force_fp32` keeps the GPU
/// defaults at F32, `force_fp16` makes the UNet F16 on any GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrecisionOverrides {
    /// `--force-fp32`.
    pub force_fp32: bool,
    /// `--force-fp16`.
    pub force_fp16: bool,
    /// `--fp32-unet` / `--fp16-unet` / `--bf16-unet`.
    pub unet: Option<DType>,
    /// `--fp32-vae` / `--fp16-vae` / `--bf16-vae`.
    pub vae: Option<DType>,
    /// `--fp32-text-enc` / `--fp16-text-enc` / `--bf16-text-enc` (storage; the forward pass
    /// is F32 regardless).
    pub text_encoder: Option<DType>,
}

/// The dtype policy without flags: `cuda_capability` is `None` for the CPU,
/// `Some((major, minor))` for a CUDA device.
pub fn dtypes_for(cuda_capability: Option<(i32, i32)>) -> ComputeDtypes {
    dtypes_with(cuda_capability, PrecisionOverrides::default())
}

/// The dtype policy with ComfyUI's precision flags applied (`model_management.unet_dtype`,
/// `vae_dtype`, `should_use_fp16`, `should_use_bf16`).
pub fn dtypes_with(cuda_capability: Option<(i32, i32)>, flags: PrecisionOverrides) -> ComputeDtypes {
    let gpu_default = |major: i32| {
        // should_use_fp16: false on the CPU and under --force-fp32; true under --force-fp16;
        // else from Volta/Turing (7.x) on. should_use_bf16: Ampere (8.x) on, not under
        // --force-fp32.
        let fp16 = !flags.force_fp32 && (flags.force_fp16 || major >= 7);
        let bf16 = !flags.force_fp32 && major >= 8;
        (fp16, bf16)
    };
    let (unet, vae) = match cuda_capability {
        None => (DType::F32, DType::F32),
        Some((major, _)) => {
            let (fp16, bf16) = gpu_default(major);
            // vae_dtype: [bf16, fp32] for SD/SDXL VAEs, bf16 where supported.
            (if fp16 { DType::F16 } else { DType::F32 }, if bf16 { DType::BF16 } else { DType::F32 })
        }
    };
    let unet = flags.unet.unwrap_or(unet);
    let vae = match (flags.vae, cuda_capability) {
        // candle has no BF16 convolution on the CPU: a BF16 VAE there runs in F32.
        (Some(DType::BF16), None) => DType::F32,
        (Some(d), _) => d,
        (None, _) => vae,
    };
    ComputeDtypes {
        unet,
        unet_compute: if cuda_capability.is_some() { unet } else { DType::F32 },
        // text_encoder_dtype: F16 storage on every device unless a flag says otherwise.
        text_encoder: flags.text_encoder.unwrap_or(DType::F16),
        text_encoder_compute: DType::F32,
        vae,
    }
}

fn precision() -> &'static RwLock<PrecisionOverrides> {
    static FLAGS: OnceLock<RwLock<PrecisionOverrides>> = OnceLock::new();
    FLAGS.get_or_init(|| RwLock::new(PrecisionOverrides::default()))
}

/// Sets the precision flags (start-up, before models load; already resident models keep
/// their dtypes until they are reloaded).
pub fn set_precision(flags: PrecisionOverrides) {
    *precision().write().unwrap_or_else(|p| p.into_inner()) = flags;
}

/// The precision flags in force.
pub fn precision_flags() -> PrecisionOverrides {
    *precision().read().unwrap_or_else(|p| p.into_inner())
}

/// Static facts of the selected GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFacts {
    /// CUDA ordinal.
    pub index: usize,
    /// The driver's device name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability.
    pub capability: (i32, i32),
    /// Device bytes in use when the device was opened (other processes, the context).
    pub used_at_start: u64,
}

/// The GPU's memory as the driver reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMemory {
    /// The static facts.
    pub facts: GpuFacts,
    /// Total device memory in bytes.
    pub total: u64,
    /// Free device memory in bytes.
    pub free: u64,
}

impl GpuMemory {
    /// Bytes this process has taken on the device since it opened it (approximate: other
    /// processes' allocations after start-up count too).
    pub fn used_by_process(&self) -> u64 {
        self.total.saturating_sub(self.free).saturating_sub(self.facts.used_at_start)
    }

    /// ComfyUI's `/system_stats` device name: `cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync`.
    pub fn display_name(&self) -> String {
        format!("cuda:{} {} : cudaMallocAsync", self.facts.index, self.facts.name)
    }
}

struct Selected {
    device: Device,
    gpu: Option<GpuFacts>,
    /// What it was opened for (`None`: a fallback).
    request: Option<DeviceRequest>,
}

fn state() -> &'static RwLock<Option<Selected>> {
    static STATE: OnceLock<RwLock<Option<Selected>>> = OnceLock::new();
    STATE.get_or_init(|| RwLock::new(None))
}

fn cpu() -> Selected {
    Selected { device: Device::Cpu, gpu: None, request: None }
}

/// Opens the device `request` names.
fn open(request: DeviceRequest) -> Result<Selected, DeviceError> {
    let selected = match request {
        DeviceRequest::Cpu => Ok(cpu()),
        DeviceRequest::Cuda(ordinal) => open_cuda(ordinal),
        DeviceRequest::Auto => match open_cuda(0) {
            Ok(s) => Ok(s),
            Err(DeviceError::NotCompiled(_)) => Ok(cpu()),
            Err(e) => {
                tracing::warn!("{e}; running on the CPU");
                Ok(cpu())
            }
        },
    }?;
    Ok(Selected { request: Some(request), ..selected })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Selected, DeviceError> {
    Err(DeviceError::NotCompiled(ordinal))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Selected, DeviceError> {
    let open_err = |e: &dyn std::fmt::Display| DeviceError::Open { ordinal, message: e.to_string() };
    let device = Device::new_cuda(ordinal).map_err(|e| open_err(&e))?;
    let cuda = device.as_cuda_device().map_err(|e| open_err(&e))?;
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().map_err(|e| open_err(&e))?;
    let capability = ctx.compute_capability().map_err(|e| open_err(&e))?;
    let (free, total) = ctx.mem_get_info().map_err(|e| open_err(&e))?;
    let facts = GpuFacts { index: ordinal, name, capability, used_at_start: (total.saturating_sub(free)) as u64 };
    Ok(Selected { device, gpu: Some(facts), request: None })
}

#[cfg(feature = "cuda")]
fn query_memory(selected: &Selected) -> Option<GpuMemory> {
    let facts = selected.gpu.clone()?;
    let cuda = selected.device.as_cuda_device().ok()?;
    let stream = cuda.cuda_stream();
    match stream.context().mem_get_info() {
        Ok((free, total)) => Some(GpuMemory { facts, total: total as u64, free: free as u64 }),
        Err(e) => {
            tracing::warn!("cuMemGetInfo failed: {e}");
            None
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn query_memory(_selected: &Selected) -> Option<GpuMemory> {
    None
}

/// True when this build has the `cuda` feature.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Selects the compute device (start-up). Selecting a different device than the current one
/// drops the resident models (they live on the old device). Returns a one-line description.
pub fn select(request: DeviceRequest) -> Result<String, DeviceError> {
    {
        let guard = state().read().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_ref().filter(|s| s.request == Some(request)) {
            // Already open for this request: keep it (and the models on it).
            return Ok(describe_selected(s));
        }
    }
    let selected = open(request)?;
    let text = describe_selected(&selected);
    let mut guard = state().write().unwrap_or_else(|p| p.into_inner());
    let changed = guard.as_ref().map(|old| !old.device.same_device(&selected.device)).unwrap_or(false);
    *guard = Some(selected);
    drop(guard);
    if changed {
        crate::sd::cache::unload_all_models();
    }
    tracing::info!("compute device: {text}");
    Ok(text)
}

fn describe_selected(s: &Selected) -> String {
    let d = dtypes_with(s.gpu.as_ref().map(|g| g.capability), precision_flags());
    match &s.gpu {
        None => format!("cpu (unet {:?}, text encoders {:?}, vae {:?})", d.unet, d.text_encoder, d.vae),
        Some(g) => format!(
            "cuda:{} {} (compute capability {}.{}; unet {:?}, text encoders {:?}, vae {:?})",
            g.index, g.name, g.capability.0, g.capability.1, d.unet, d.text_encoder, d.vae
        ),
    }
}

fn with_selected<T>(f: impl FnOnce(&Selected) -> T) -> T {
    {
        let guard = state().read().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_ref() {
            return f(s);
        }
    }
    let mut guard = state().write().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        // `Auto` never fails: it falls back to the CPU.
        let s = open(DeviceRequest::Auto).unwrap_or_else(|_| cpu());
        tracing::info!("compute device: {}", describe_selected(&s));
        *guard = Some(s);
    }
    match guard.as_ref() {
        Some(s) => f(s),
        None => f(&cpu()),
    }
}

/// The compute device models load onto.
pub fn device() -> Device {
    with_selected(|s| s.device.clone())
}

/// True when the compute device is a GPU.
pub fn is_gpu() -> bool {
    with_selected(|s| s.gpu.is_some())
}

/// The dtypes for the compute device, with the precision flags applied.
pub fn dtypes() -> ComputeDtypes {
    let flags = precision_flags();
    with_selected(|s| dtypes_with(s.gpu.as_ref().map(|g| g.capability), flags))
}

/// The GPU's memory now (`None` on the CPU).
pub fn gpu_memory() -> Option<GpuMemory> {
    with_selected(query_memory)
}

/// Bytes free on the compute device for new weights: the GPU's free memory, or `None` on the
/// CPU (where the caller uses the OS's available memory).
pub fn gpu_free_bytes() -> Option<u64> {
    gpu_memory().map(|m| m.free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_policy_follows_comfyui() {
        let cpu = dtypes_for(None);
        assert_eq!(
            cpu,
            ComputeDtypes { unet: DType::F32, unet_compute: DType::F32, text_encoder: DType::F16, text_encoder_compute: DType::F32, vae: DType::F32 }
        );
        let h100 = dtypes_for(Some((9, 0)));
        assert_eq!((h100.unet, h100.unet_compute), (DType::F16, DType::F16));
        assert_eq!(h100.text_encoder, DType::F16);
        assert_eq!(h100.text_encoder_compute, DType::F32);
        assert_eq!(h100.vae, DType::BF16);
        let t4 = dtypes_for(Some((7, 5)));
        assert_eq!((t4.unet, t4.vae), (DType::F16, DType::F32));
        let p100 = dtypes_for(Some((6, 0)));
        assert_eq!((p100.unet, p100.vae), (DType::F32, DType::F32));
    }

    #[test]
    fn precision_flags_follow_comfyui() {
        let flags = |f: fn(&mut PrecisionOverrides)| {
            let mut o = PrecisionOverrides::default();
            f(&mut o);
            o
        };
        // --force-fp32: GPU defaults become F32.
        let d = dtypes_with(Some((9, 0)), flags(|o| o.force_fp32 = true));
        assert_eq!((d.unet, d.unet_compute, d.vae), (DType::F32, DType::F32, DType::F32));
        // --force-fp16: F16 UNet even on Pascal; nothing changes on the CPU.
        assert_eq!(dtypes_with(Some((6, 1)), flags(|o| o.force_fp16 = true)).unet, DType::F16);
        assert_eq!(dtypes_with(None, flags(|o| o.force_fp16 = true)), dtypes_for(None));
        // --bf16-unet / --fp32-vae on a GPU: storage and compute.
        let d = dtypes_with(Some((8, 6)), flags(|o| {
            o.unet = Some(DType::BF16);
            o.vae = Some(DType::F32);
        }));
        assert_eq!((d.unet, d.unet_compute, d.vae), (DType::BF16, DType::BF16, DType::F32));
        // Explicit flags beat --force-fp32, as in ComfyUI.
        let d = dtypes_with(Some((9, 0)), flags(|o| {
            o.force_fp32 = true;
            o.vae = Some(DType::F16);
        }));
        assert_eq!((d.unet, d.vae), (DType::F32, DType::F16));
        // On the CPU: --fp16-unet stores F16 and still computes in F32; --fp16-vae computes
        // in F16; --bf16-vae falls back to F32 (no BF16 convolution on candle's CPU path).
        let d = dtypes_with(None, flags(|o| {
            o.unet = Some(DType::F16);
            o.vae = Some(DType::F16);
        }));
        assert_eq!((d.unet, d.unet_compute, d.vae), (DType::F16, DType::F32, DType::F16));
        assert_eq!(dtypes_with(None, flags(|o| o.vae = Some(DType::BF16))).vae, DType::F32);
        // --fp32-text-enc: F32 storage; the forward pass is F32 either way.
        let d = dtypes_with(None, flags(|o| o.text_encoder = Some(DType::F32)));
        assert_eq!((d.text_encoder, d.text_encoder_compute), (DType::F32, DType::F32));
        assert_eq!(dtypes_with(Some((9, 0)), flags(|o| o.force_fp32 = true)).text_encoder, DType::F16);
    }

    #[test]
    fn cuda_request_without_the_feature_is_a_clear_error() {
        if cuda_compiled() {
            return;
        }
        let e = open(DeviceRequest::Cuda(1)).err().expect("must fail without the cuda feature");
        let text = e.to_string();
        assert!(text.contains("CUDA device 1") && text.contains("--features cuda"), "{text}");
        // Auto and Cpu fall back to / are the CPU.
        assert!(open(DeviceRequest::Auto).map(|s| s.device.is_cpu()).unwrap_or(false));
        assert!(open(DeviceRequest::Cpu).map(|s| s.device.is_cpu()).unwrap_or(false));
    }

    #[test]
    fn memory_figures() {
        let m = GpuMemory {
            facts: GpuFacts { index: 0, name: "NVIDIA H100 80GB HBM3".into(), capability: (9, 0), used_at_start: 500 },
            total: 10_000,
            free: 7_000,
        };
        assert_eq!(m.used_by_process(), 2_500);
        assert_eq!(m.display_name(), "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync");
    }
}
