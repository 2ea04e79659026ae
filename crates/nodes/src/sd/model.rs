//! The MODEL, CLIP and VAE values the loaders produce, and the `apply_model` seam between the
//! sampler glue and the diffusion network.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use comfy_diffusion::checkpoint::{Checkpoint, Family, TextEncoderConfig, UnetConfig};
use comfy_diffusion::clip::ClipModel;
use comfy_diffusion::lora::PatchSet;
use comfy_diffusion::unet::UNetModel;
use comfy_diffusion::vae::Vae;
use comfy_sampling::{LatentFormat, ModelSampling, Prediction};

/// ComfyUI's `BaseModel.apply_model`: the x0 prediction of a batch.
///
/// Implemented by [`UnetDenoiser`] for real checkpoints; tests plug in stubs to check the
/// sampler arithmetic independently of the network.
pub trait DenoiseModel: Send + Sync {
    /// `x`: `[B, C, H, W]` (model space, float32); `sigmas`: one σ per row; `context`:
    /// `[B, T, D]` cross-attention; `y`: `[B, adm]` for SDXL. Returns the denoised `x0`.
    fn apply_model(&self, x: &Tensor, sigmas: &[f32], context: &Tensor, y: Option<&Tensor>) -> candle_core::Result<Tensor>;

    /// The same network with other sampling parameters (v-prediction switch of
    /// `CheckpointLoader`); `None` when not supported.
    fn with_sampling(&self, _sampling: Arc<ModelSampling>) -> Option<Arc<dyn DenoiseModel>> {
        None
    }

    /// What the network was built from (file, key prefix, config, LoRA patches), so a LoRA
    /// loader can rebuild it with more patches; `None` for networks not loaded from a file.
    fn origin(&self) -> Option<Arc<UnetOrigin>> {
        None
    }
}

/// Weight storage precision of a UNet (`UNETLoader`'s `weight_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// As loaded: F32, or F16 for large F16 files.
    Plain(DType),
    /// Weights rounded to float8 e4m3fn (round-to-nearest-even; beyond ±448 → NaN), computed in F32.
    Fp8E4M3,
    /// Weights rounded to float8 e5m2 (round-to-nearest-even; beyond ±57344 → ±inf), computed in F32.
    Fp8E5M2,
}

/// The file a UNet was built from, and the LoRA patches applied to it.
pub struct UnetOrigin {
    /// The mapped file.
    pub file: Arc<Checkpoint>,
    /// Key prefix of the UNet inside it (`model.diffusion_model.`, or empty).
    pub prefix: String,
    /// Detected hyper-parameters.
    pub config: UnetConfig,
    /// Weight storage.
    pub storage: WeightStorage,
    /// LoRA patches (empty for the plain model).
    pub patches: Arc<PatchSet>,
}

/// One text encoder of a CLIP value and the file it was built from.
#[derive(Clone)]
pub struct ClipPart {
    /// The mapped file.
    pub file: Arc<Checkpoint>,
    /// The encoder's config (its key prefix in `file`).
    pub config: TextEncoderConfig,
    /// LoRA patches of this encoder.
    pub patches: Arc<PatchSet>,
}

/// What a CLIP value was built from, so a LoRA loader can rebuild it with more patches.
pub struct ClipOrigin {
    /// The family the encoders serve.
    pub family: Family,
    /// The encoders, in ComfyUI order.
    pub parts: Vec<ClipPart>,
    /// `models/embeddings` folders for `embedding:name`.
    pub embedding_dirs: Vec<PathBuf>,
}

/// `apply_model` of a discrete EPS/V UNet: `x_in = x / √(σ²+1)`, `t = timestep(σ)`,
/// `D = x − ε̂·σ` (EPS) or `x·c_skip − v̂·c_out` (V), in float32.
pub struct UnetDenoiser {
    /// The network.
    pub unet: Arc<UNetModel>,
    /// Its σ table and parameterisation.
    pub sampling: Arc<ModelSampling>,
    /// What it was built from (`None` when unknown).
    pub origin: Option<Arc<UnetOrigin>>,
}

fn per_row(values: Vec<f32>, rank: usize, device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, rank.saturating_sub(1)));
    Tensor::from_vec(values, shape, device)
}

impl DenoiseModel for UnetDenoiser {
    fn apply_model(&self, x: &Tensor, sigmas: &[f32], context: &Tensor, y: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let dev = x.device();
        let rank = x.rank();
        // ComfyUI divides by (σ² + 1) ** 0.5 in float32.
        let denom = per_row(sigmas.iter().map(|s| (s * s + 1.0).sqrt()).collect(), rank, dev)?;
        let x_in = x.broadcast_div(&denom)?;
        let ts: Vec<f32> = sigmas.iter().map(|s| self.sampling.timestep(*s)).collect();
        let out = self.unet.forward(&x_in, &ts, context, y)?.to_dtype(DType::F32)?;
        match self.sampling.prediction {
            Prediction::Eps => {
                let s = per_row(sigmas.to_vec(), rank, dev)?;
                x - out.broadcast_mul(&s)?
            }
            Prediction::V => {
                let c_skip = per_row(sigmas.iter().map(|s| 1.0 / (s * s + 1.0)).collect(), rank, dev)?;
                let c_out = per_row(sigmas.iter().map(|s| s / (s * s + 1.0).sqrt()).collect(), rank, dev)?;
                x.broadcast_mul(&c_skip)? - out.broadcast_mul(&c_out)?
            }
        }
    }

    fn with_sampling(&self, sampling: Arc<ModelSampling>) -> Option<Arc<dyn DenoiseModel>> {
        Some(Arc::new(UnetDenoiser { unet: self.unet.clone(), sampling, origin: self.origin.clone() }))
    }

    fn origin(&self) -> Option<Arc<UnetOrigin>> {
        self.origin.clone()
    }
}

/// Which ADM vector (`y`) the UNet takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmKind {
    /// SD1.x / SD2.x: none.
    None,
    /// SDXL base: pooled + 6 size embeddings.
    Sdxl,
    /// SDXL refiner: pooled + 4 size embeddings + aesthetic score.
    SdxlRefiner,
}

/// Where a loaded component came from (for `CheckpointSave` and `/system_stats`).
#[derive(Clone)]
pub struct Source {
    /// The mapped file.
    pub file: Arc<Checkpoint>,
    /// Key prefixes of this component inside the file.
    pub prefixes: Vec<String>,
}

/// A MODEL value: the diffusion network with its sampling parameters.
#[derive(Clone)]
pub struct SdModel {
    /// `apply_model`.
    pub net: Arc<dyn DenoiseModel>,
    /// Model family (decides the latent format and ADM).
    pub family: Family,
    /// σ table and prediction type.
    pub sampling: Arc<ModelSampling>,
    /// ADM kind.
    pub adm: AdmKind,
    /// The weights' file, if loaded from one.
    pub source: Option<Source>,
}

/// Latent→RGB preview factors (rows = latent channels) and bias of a latent format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreviewFactors {
    /// `[4][3]` factors.
    pub factors: [[f32; 3]; 4],
    /// RGB bias, if any.
    pub bias: Option<[f32; 3]>,
}

/// SD1.x/SD2.x `latent_rgb_factors` (`comfy.latent_formats.SD15`).
pub const SD15_PREVIEW: PreviewFactors = PreviewFactors {
    factors: [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    bias: None,
};

/// SDXL `latent_rgb_factors` and bias (`comfy.latent_formats.SDXL`).
pub const SDXL_PREVIEW: PreviewFactors = PreviewFactors {
    factors: [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
    bias: Some([0.1084, -0.0175, -0.0011]),
};

impl SdModel {
    /// The latent format (scale factor) of this family.
    pub fn latent_format(&self) -> LatentFormat {
        match self.family {
            Family::Sd1 | Family::Sd2 => LatentFormat::SD15,
            Family::Sdxl | Family::SdxlRefiner => LatentFormat::SDXL,
        }
    }

    /// Latent channels the model samples in.
    pub fn latent_channels(&self) -> usize {
        4
    }

    /// Preview factors of the latent format.
    pub fn preview_factors(&self) -> PreviewFactors {
        match self.family {
            Family::Sd1 | Family::Sd2 => SD15_PREVIEW,
            Family::Sdxl | Family::SdxlRefiner => SDXL_PREVIEW,
        }
    }
}

/// A CLIP value: the text encoders plus `CLIPSetLastLayer`'s choice.
#[derive(Clone)]
pub struct SdClip {
    /// Encoders and tokenizer.
    pub model: Arc<ClipModel>,
    /// `stop_at_clip_layer` (None = the model's default layer).
    pub layer_idx: Option<i32>,
    /// The weights' file (`None` once LoRA-patched: the file no longer holds the weights).
    pub source: Option<Source>,
    /// What the encoders were built from (`None` when unknown).
    pub origin: Option<Arc<ClipOrigin>>,
}

/// A VAE value.
#[derive(Clone)]
pub enum SdVae {
    /// A KL autoencoder.
    Kl {
        /// The network.
        vae: Arc<Vae>,
        /// The weights' file.
        source: Option<Source>,
    },
    /// `pixel_space`: identity (images are their own latents, 3 channels, no down-scaling).
    PixelSpace,
    /// A checkpoint without VAE weights: errors when used (as ComfyUI's invalid VAE).
    Missing {
        /// The checkpoint it came from.
        path: PathBuf,
    },
}

impl SdVae {
    /// Spatial down-scale factor (8, or 1 for pixel space).
    pub fn downscale(&self) -> usize {
        match self {
            SdVae::Kl { vae, .. } => vae.config().downscale(),
            _ => 1,
        }
    }
}

/// What `CheckpointLoaderSimple` produces, shared through the model cache.
#[derive(Clone)]
pub struct LoadedCheckpoint {
    /// The diffusion model.
    pub model: SdModel,
    /// Text encoders (None when the file has none).
    pub clip: Option<SdClip>,
    /// The VAE ([`SdVae::Missing`] when the file has none).
    pub vae: SdVae,
}
