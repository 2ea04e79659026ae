//! The KSampler pipeline around a sampler: latent scaling (`process_in`/`process_out`),
//! initial noise scaling, and the call into [`crate::samplers::sample_sigmas`].

use candle_core::{DType, Tensor};

use crate::cfg::Denoiser;
use crate::error::Result;
use crate::samplers::{sample_sigmas, SampleOptions};

/// A latent space's scale factor (VAE space ↔ model space).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentFormat {
    /// `process_in` multiplies by it, `process_out` divides by it.
    pub scale_factor: f32,
}

impl LatentFormat {
    /// SD1.x / SD2.x.
    pub const SD15: LatentFormat = LatentFormat {
        scale_factor: 0.18215,
    };
    /// SDXL base/refiner.
    pub const SDXL: LatentFormat = LatentFormat {
        scale_factor: 0.13025,
    };

    /// VAE space → model space (`latent · scale`).
    pub fn process_in(&self, latent: &Tensor) -> Result<Tensor> {
        Ok(latent.affine(self.scale_factor as f64, 0.0)?)
    }

    /// Model space → VAE space (`latent / scale`, a true float32 division).
    pub fn process_out(&self, latent: &Tensor) -> Result<Tensor> {
        let s = Tensor::new(self.scale_factor, latent.device())?.to_dtype(latent.dtype())?;
        Ok(latent.broadcast_div(&s)?)
    }
}

/// ComfyUI's `max_denoise`: σ₀ within rel 1e-5 of σ_max, or above it.
pub fn is_max_denoise(sigma_max: f32, sigma0: f32) -> bool {
    let (a, b) = (sigma_max as f64, sigma0 as f64);
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) || b > a
}

/// The initial sample: `latent + noise·√(1+σ₀²)` (full denoise) or `latent + noise·σ₀`.
pub fn noise_scaling(
    noise: &Tensor,
    latent_model: &Tensor,
    sigma0: f32,
    max_denoise: bool,
) -> Result<Tensor> {
    let k = if max_denoise {
        (1.0f32 + sigma0 * sigma0).sqrt()
    } else {
        sigma0
    };
    Ok((noise.affine(k as f64, 0.0)? + latent_model)?)
}

/// True when any element is non-zero (ComfyUI scales only such latents).
fn any_nonzero(t: &Tensor) -> Result<bool> {
    let m = t
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    Ok(m != 0.0)
}

/// `comfy.sample.sample` for one KSampler run: `latent` (VAE space) and `noise` have the
/// same shape; `sigmas` as chosen by [`crate::schedule::ksampler_sigmas`] /
/// [`crate::schedule::advanced_window`] (empty → latent returned unchanged). Returns VAE space.
pub fn ksample(
    sampler: &str,
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    latent: &Tensor,
    sigmas: &[f32],
    format: LatentFormat,
    opts: &mut SampleOptions<'_>,
) -> Result<Tensor> {
    if sigmas.is_empty() {
        return Ok(latent.clone());
    }
    let latent_model = if any_nonzero(latent)? {
        format.process_in(latent)?
    } else {
        latent.clone()
    };
    let max_denoise = is_max_denoise(opts.model_sampling.sigma_max(), sigmas[0]);
    let x = noise_scaling(noise, &latent_model, sigmas[0], max_denoise)?;
    let out = sample_sigmas(sampler, denoiser, &x, sigmas, opts)?;
    format.process_out(&out.to_dtype(DType::F32)?)
}
