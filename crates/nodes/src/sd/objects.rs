//! The SAMPLER, NOISE and GUIDER values of the custom-sampling nodes. (SIGMAS is a 1-D f32
//! CPU `Tensor`, as in ComfyUI.)

use crate::sd::cond::Conditioning;
use crate::sd::model::SdModel;

/// A SAMPLER: a KSampler sampler name (`KSamplerSelect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerObj {
    /// One of `comfy_sampling::SAMPLER_NAMES`.
    pub name: String,
}

/// A NOISE generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseObj {
    /// `RandomNoise`: `prepare_noise(latent, seed, batch_index)`; the sampler also gets `seed`.
    Random {
        /// Seed.
        seed: u64,
    },
    /// `DisableNoise`: zeros, sampler seed 0.
    Disabled,
}

impl NoiseObj {
    /// The seed handed to the sampler (`extra_args["seed"]`).
    pub fn seed(&self) -> u64 {
        match self {
            NoiseObj::Random { seed } => *seed,
            NoiseObj::Disabled => 0,
        }
    }
}

/// A GUIDER: model + conditioning (+ cfg).
#[derive(Clone)]
pub struct GuiderObj {
    /// The model.
    pub model: SdModel,
    /// Positive conditioning.
    pub positive: Conditioning,
    /// Negative conditioning (`None` = BasicGuider: no CFG).
    pub negative: Option<Conditioning>,
    /// Guidance scale (1.0 for BasicGuider).
    pub cfg: f64,
}
