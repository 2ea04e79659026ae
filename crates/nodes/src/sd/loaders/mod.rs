//! Loader nodes: checkpoints and VAEs.

pub mod checkpoint_loader;
pub mod checkpoint_loader_simple;
pub mod vae_loader;

use comfy_graph::{NodeError, Outputs, Value};

use crate::sd::model::LoadedCheckpoint;

/// The `(MODEL, CLIP, VAE)` outputs of a loaded checkpoint (CLIP `None` when absent).
pub fn checkpoint_outputs(ck: &LoadedCheckpoint) -> Result<Outputs, NodeError> {
    let clip = match &ck.clip {
        Some(c) => Value::object(c.clone()),
        None => Value::None,
    };
    Ok(Outputs::new(vec![Value::object(ck.model.clone()), clip, Value::object(ck.vae.clone())]))
}
