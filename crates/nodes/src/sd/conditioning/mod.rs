//! Text-encoding and conditioning nodes.

pub mod average;
pub mod clip_set_last_layer;
pub mod clip_text_encode;
pub mod clip_text_encode_sdxl;
pub mod clip_text_encode_sdxl_refiner;
pub mod combine;
pub mod concat;
pub mod set_area;
pub mod set_area_percentage;
pub mod set_mask;
pub mod set_timestep_range;
pub mod zero_out;

use candle_core::Tensor;
use comfy_diffusion::tokenizer::Tokens;
use comfy_graph::{NodeError, Outputs, Value};

use crate::sd::cond::Conditioning;
use crate::sd::errors::diffusion_err;
use crate::sd::model::SdClip;

/// `encode_from_tokens(tokens, return_pooled=True)` with the CLIP's layer choice.
pub fn encode(clip: &SdClip, tokens: &Tokens) -> Result<(Tensor, Tensor), NodeError> {
    clip.model.encode(tokens, clip.layer_idx).map_err(diffusion_err)
}

/// A single CONDITIONING output.
pub fn cond_output(c: Conditioning) -> Outputs {
    Outputs::new(vec![Value::object(c)])
}
