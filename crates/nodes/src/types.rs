//! Runtime shapes of the values that flow between nodes.
//!
//! - IMAGE: a `candle_core::Tensor` `[B, H, W, C]` f32 in 0..1, channels-last (ComfyUI's layout).
//! - MASK: a `candle_core::Tensor` `[B, H, W]` f32 in 0..1.
//! - LATENT: [`Latent`].

use candle_core::Tensor;

/// ComfyUI's LATENT dict.
#[derive(Debug, Clone)]
pub struct Latent {
    /// `[B, C, H/8, W/8]` f32 in VAE space (not multiplied by the model's scale factor).
    pub samples: Tensor,
    /// Inpainting mask `[B or 1, 1, h, w]`: where 1, the sampler may change the latent.
    pub noise_mask: Option<Tensor>,
    /// Which noise draws the batch rows use (`LatentFromBatch` sets it).
    pub batch_index: Option<Vec<i64>>,
}

impl Latent {
    pub fn new(samples: Tensor) -> Self {
        Latent { samples, noise_mask: None, batch_index: None }
    }
}
