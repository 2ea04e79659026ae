//! Typed access to the SD value inputs (MODEL, CLIP, VAE, CONDITIONING, ...), with ComfyUI's
//! messages for the `None` cases.

use comfy_graph::{Inputs, NodeError};

use crate::sd::cond::Conditioning;
use crate::sd::model::{SdClip, SdModel, SdVae};

/// A MODEL input.
pub fn model<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a SdModel, NodeError> {
    inputs.object::<SdModel>(name)
}

/// A CONDITIONING input.
pub fn cond<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Conditioning, NodeError> {
    inputs.object::<Conditioning>(name)
}

/// A CLIP input; `None` (a checkpoint without text encoders) gives ComfyUI's error.
pub fn clip<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a SdClip, NodeError> {
    match inputs.get(name) {
        None => Err(NodeError::internal(
            "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint does not contain a valid clip or text encoder model.",
        )),
        Some(_) => inputs.object::<SdClip>(name),
    }
}

/// A VAE input; a checkpoint's missing VAE gives ComfyUI's error.
pub fn vae<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a SdVae, NodeError> {
    let invalid = || {
        NodeError::internal(
            "ERROR: VAE is invalid: None\n\nIf the VAE is from a checkpoint loader node your checkpoint does not contain a valid VAE.",
        )
    };
    match inputs.get(name) {
        None => Err(invalid()),
        Some(_) => {
            let v = inputs.object::<SdVae>(name)?;
            if matches!(v, SdVae::Missing { .. }) {
                return Err(invalid());
            }
            Ok(v)
        }
    }
}

/// The tensor behind an IMAGE / MASK / SIGMAS / LATENT value as an array (for callers
/// without a direct candle dependency, e.g. the end-to-end tests).
pub fn value_array(v: &comfy_graph::Value) -> Result<crate::ops::Array, NodeError> {
    if let Some(t) = v.downcast::<candle_core::Tensor>() {
        return crate::ops::Array::from_tensor(t);
    }
    if let Some(l) = v.downcast::<crate::types::Latent>() {
        return crate::ops::Array::from_tensor(&l.samples);
    }
    Err(NodeError::invalid_input("value holds no tensor"))
}
