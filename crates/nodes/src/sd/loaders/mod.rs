//! Loader nodes: checkpoints, VAEs, diffusion-model-only and text-encoder-only files, LoRAs.

pub mod checkpoint_loader;
pub mod checkpoint_loader_simple;
pub mod clip_loader;
pub mod dual_clip_loader;
pub mod lora_loader;
pub mod lora_loader_model_only;
pub mod unet_loader;
pub mod vae_loader;

#[cfg(test)]
mod tests;

use comfy_graph::{NodeError, NodeRegistry, Outputs, Value};

/// Registers the LoRA, diffusion-model and text-encoder loaders (the checkpoint and VAE
/// loaders are registered by [`crate::sd::register_sd`]).
pub fn register_loaders(registry: &mut NodeRegistry) {
    registry.register(lora_loader::LoraLoader);
    registry.register(lora_loader_model_only::LoraLoaderModelOnly);
    registry.register(unet_loader::UNETLoader);
    registry.register(clip_loader::CLIPLoader);
    registry.register(dual_clip_loader::DualCLIPLoader);
}

use crate::sd::model::LoadedCheckpoint;

/// The `(MODEL, CLIP, VAE)` outputs of a loaded checkpoint (CLIP `None` when absent).
pub fn checkpoint_outputs(ck: &LoadedCheckpoint) -> Result<Outputs, NodeError> {
    let clip = match &ck.clip {
        Some(c) => Value::object(c.clone()),
        None => Value::None,
    };
    Ok(Outputs::new(vec![Value::object(ck.model.clone()), clip, Value::object(ck.vae.clone())]))
}
