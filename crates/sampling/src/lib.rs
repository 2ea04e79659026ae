//! ComfyUI-exact sampling maths for comfy-rs: torch-compatible CPU noise, sigma schedules,
//! the 44 KSampler samplers and classifier-free guidance. Independent of the graph engine;
//! works on any candle device/dtype (the RNG itself always runs on the CPU, like ComfyUI).
//!
//! # Layout
//! - [`rng`]: MT19937 + torch's `rand`/`randn` (both the <16 scalar Box–Muller path with its
//!   cached value and the ≥16 vectorised path with tail recomputation; AVX2 polynomial maths
//!   by default, libm selectable) and [`rng::prepare_noise`] (`batch_index` aware).
//! - [`schedule`]: [`ModelSampling`] (discrete scaled-linear table, EPS or V), σ ↔ timestep,
//!   `percent_to_sigma`, the 9 schedulers ([`SCHEDULER_NAMES`]), KSampler's denoise /
//!   discard-penultimate rule ([`schedule::ksampler_sigmas`]) and KSamplerAdvanced's window
//!   ([`schedule::advanced_window`]).
//! - [`cfg`](mod@cfg): the [`Denoiser`] trait samplers call, [`cfg::CfgGuider`] (uncond/cond batched as
//!   `[uncond, cond]` in one [`cfg::ModelFn`] call, `uncond + (cond − uncond)·cfg` in f32, the
//!   cfg = 1 shortcut unless a CFG++ sampler needs the uncond prediction) and
//!   [`cfg::EpsWrapper`] (`apply_model` for EPS/V networks given a [`cfg::NetworkFn`]).
//! - [`noise`]: per-step noise sources: [`noise::DefaultNoise`] (seed + 1 CPU generator, as
//!   ComfyUI on CPU), [`noise::BrownianTreeNoise`] (statistically right, not torchsde's bits)
//!   and [`noise::RecordedNoise`].
//! - [`samplers`]: [`SAMPLER_NAMES`] (44, ComfyUI order) and [`samplers::sample_sigmas`], the
//!   sampler function on a noise-scaled model-space latent, with [`samplers::SampleOptions`]
//!   (seed, step callback, cancellation check, noise override).
//! - [`ksampler`]: the KSampler pipeline ([`ksampler::ksample`]): `process_in` (non-zero
//!   latents only), noise scaling (`√(1+σ₀²)` at full denoise, `σ₀` otherwise), sampling,
//!   `process_out`; latent formats SD1.5 (0.18215) and SDXL (0.13025).
//!
//! Typical KSampler node use:
//! ```ignore
//! let ms = ModelSampling::default();
//! let sigmas = schedule::ksampler_sigmas(&ms, scheduler, sampler, steps, denoise)?;
//! let noise = rng::prepare_noise(seed, latent.dims(), batch_index, NormalMath::Avx2)?;
//! let mut guider = cfg::CfgGuider::new(my_model, cfg_scale);
//! let mut opts = SampleOptions { seed, model_sampling: ms, callback: Some(&mut cb),
//!                                cancel: Some(&is_cancelled), ..Default::default() };
//! let out = ksampler::ksample(sampler, &mut guider, &noise, &latent, &sigmas,
//!                             LatentFormat::SD15, &mut opts)?;
//! ```
//! Precision: noise, CFG, the EPS wrapper input and x_in are bit-exact; 174 of the 176
//! golden sampler runs match `x_out` within 1e-5 (dpmpp_sde(_gpu)/karras/cfg 4 is 1.1e-5:
//! torch's MKL float32 `exp` is 1 ulp off correct rounding on two of its scalars, which the
//! cfg-4 ODE amplifies; see `tests/golden_samplers.rs`). Per-step scalars follow torch's
//! float32 0-d tensor maths (correctly rounded `exp/log/expm1`, FMA `lerp`, true divisions).
//! The Brownian-tree samplers are checked by replaying ComfyUI's recorded draws; their own
//! noise source is statistically right but not torchsde's bits.
//!
//! Not implemented: inpainting `noise_mask` blending, model-option CFG hooks
//! (`sampler_cfg_function`, pre/post CFG lists), area/mask conditioning (the caller's
//! [`cfg::ModelFn`] owns conditioning), flow (CONST) model variants of the samplers.

// Numeric kernels index several arrays in lock-step; `is_multiple_of` needs Rust 1.87.
#![allow(clippy::needless_range_loop, clippy::manual_is_multiple_of)]

pub mod cfg;
pub mod error;
pub mod ksampler;
pub mod noise;
pub mod rng;
pub mod samplers;
pub mod schedule;

pub use cfg::{CfgGuider, CondKind, Denoised, Denoiser, ModelFn};
pub use error::{Result, SamplingError};
pub use ksampler::{ksample, LatentFormat};
pub use rng::{prepare_noise, NormalMath, TorchGenerator};
pub use samplers::{sample_sigmas, SampleOptions, Step, SAMPLER_NAMES};
pub use schedule::{ModelSampling, Prediction, SCHEDULER_NAMES};
