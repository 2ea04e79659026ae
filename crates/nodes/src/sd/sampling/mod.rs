//! Sampling nodes: KSampler, KSamplerAdvanced and the custom-sampling family.

pub mod basic_guider;
pub mod basic_scheduler;
pub mod cfg_guider;
pub mod disable_noise;
pub mod karras_scheduler;
pub mod ksampler;
pub mod ksampler_advanced;
pub mod ksampler_select;
pub mod random_noise;
pub mod sampler_custom;
pub mod sampler_custom_advanced;

use candle_core::{Device, Tensor};
use comfy_graph::{InputType, Inputs, NodeError, Value};
use comfy_sampling::{SAMPLER_NAMES, SCHEDULER_NAMES};
use serde_json::{json, Value as Json};

use crate::sd::errors::candle_err;
use crate::sd::run::SampleOutput;
use crate::types::Latent;

/// `U64MAX`, the seed widgets' maximum.
pub const SEED_MAX: u64 = u64::MAX;

/// The sampler-name combo.
pub fn sampler_combo() -> InputType {
    InputType::Combo(SAMPLER_NAMES.iter().map(|s| json!(s)).collect())
}

/// The scheduler combo.
pub fn scheduler_combo() -> InputType {
    InputType::Combo(SCHEDULER_NAMES.iter().map(|s| json!(s)).collect())
}

/// Values of a V3 combo.
pub fn names(list: &[&str]) -> Vec<Json> {
    list.iter().map(|s| json!(s)).collect()
}

/// A seed widget (0 ..= 2^64−1).
pub fn seed(inputs: &Inputs, name: &str) -> Result<u64, NodeError> {
    inputs.u64(name)
}

/// A positive step count.
pub fn steps(inputs: &Inputs, name: &str) -> Result<usize, NodeError> {
    let s = inputs.i64(name)?;
    usize::try_from(s).map_err(|_| NodeError::invalid_input(format!("{name} must not be negative")))
}

/// A SIGMAS value (1-D f32 CPU tensor).
pub fn sigmas_value(s: Vec<f32>) -> Result<Value, NodeError> {
    let n = s.len();
    Ok(Value::object(Tensor::from_vec(s, n, &Device::Cpu).map_err(candle_err)?))
}

/// A SIGMAS input as a list.
pub fn sigmas_input(inputs: &Inputs, name: &str) -> Result<Vec<f32>, NodeError> {
    let t = inputs.object::<Tensor>(name)?;
    t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)).and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)
}

/// The two LATENT outputs of SamplerCustom(Advanced): `output`, `denoised_output`.
pub fn custom_outputs(input: &Latent, out: SampleOutput) -> Vec<Value> {
    let mut a = input.clone();
    a.samples = out.samples;
    let b = match out.denoised {
        Some(d) => {
            let mut b = input.clone();
            b.samples = d;
            b
        }
        None => a.clone(),
    };
    vec![Value::object(a), Value::object(b)]
}
