//! The Stable Diffusion nodes: loaders, text encoding and conditioning, sampling, VAE and
//! checkpoint saving, joining the engine to `comfy-diffusion` (models) and `comfy-sampling`
//! (schedules, samplers, noise).
//!
//! # Layout
//! - [`model`]: the MODEL / CLIP / VAE values and the `apply_model` seam ([`model::DenoiseModel`]).
//! - [`cond`]: the CONDITIONING value (entries with area, mask, strength, timestep range, SDXL sizes).
//! - [`objects`]: SAMPLER / NOISE / GUIDER values.
//! - [`cache`]: resident models between prompts ([`unload_all_models`], [`resident_models`]).
//! - [`loading`]: building models from files.
//! - [`guidance`]: conditioning evaluation + CFG (ComfyUI's `calc_cond_batch`/`sampling_function`).
//! - [`run`]: the KSampler pipeline (noise, noise mask, scaling, progress, previews, cancel).
//! - [`preview`]: latent2rgb JPEG previews.
//! - node folders: [`loaders`], [`conditioning`], [`sampling`], [`vae`], [`save`].

pub mod cache;
pub mod cond;
pub mod conditioning;
pub mod device;
pub mod errors;
pub mod guidance;
pub mod inputs;
pub mod loaders;
pub mod loading;
pub mod model;
pub mod objects;
pub mod preload;
pub mod preview;
pub mod run;
pub mod sampling;
pub mod save;
pub mod vae;

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;

pub use cache::{resident_bytes, resident_models, unload_all_models, ResidentModel};
pub use errors::set_memory_cap;
pub use preload::preload_checkpoint;

use comfy_graph::NodeRegistry;

/// Registers every SD node class.
pub fn register_sd(registry: &mut NodeRegistry) {
    registry.register(sampling::ksampler::KSampler);
    registry.register(loaders::checkpoint_loader_simple::CheckpointLoaderSimple);
    registry.register(conditioning::clip_text_encode::CLIPTextEncode);
    registry.register(conditioning::clip_set_last_layer::CLIPSetLastLayer);
    registry.register(vae::decode::VAEDecode);
    registry.register(vae::encode::VAEEncode);
    registry.register(vae::encode_for_inpaint::VAEEncodeForInpaint);
    registry.register(loaders::vae_loader::VAELoader);
    registry.register(conditioning::combine::ConditioningCombine);
    registry.register(conditioning::average::ConditioningAverage);
    registry.register(conditioning::concat::ConditioningConcat);
    registry.register(conditioning::set_area::ConditioningSetArea);
    registry.register(conditioning::set_area_percentage::ConditioningSetAreaPercentage);
    registry.register(conditioning::set_mask::ConditioningSetMask);
    registry.register(sampling::ksampler_advanced::KSamplerAdvanced);
    registry.register(conditioning::zero_out::ConditioningZeroOut);
    registry.register(conditioning::set_timestep_range::ConditioningSetTimestepRange);
    registry.register(loaders::checkpoint_loader::CheckpointLoader);
    registry.register(vae::decode_tiled::VAEDecodeTiled);
    registry.register(vae::encode_tiled::VAEEncodeTiled);
    registry.register(conditioning::clip_text_encode_sdxl_refiner::CLIPTextEncodeSDXLRefiner);
    registry.register(conditioning::clip_text_encode_sdxl::CLIPTextEncodeSDXL);
    registry.register(sampling::sampler_custom::SamplerCustom);
    registry.register(sampling::basic_scheduler::BasicScheduler);
    registry.register(sampling::karras_scheduler::KarrasScheduler);
    registry.register(sampling::ksampler_select::KSamplerSelect);
    registry.register(sampling::cfg_guider::CFGGuider);
    registry.register(sampling::basic_guider::BasicGuider);
    registry.register(sampling::random_noise::RandomNoise);
    registry.register(sampling::disable_noise::DisableNoise);
    registry.register(sampling::sampler_custom_advanced::SamplerCustomAdvanced);
    registry.register(save::checkpoint_save::CheckpointSave);
}
