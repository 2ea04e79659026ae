//! `SamplerCustom`: sampling with an explicit sampler and sigma list.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::{custom_outputs, seed, sigmas_input, SEED_MAX};
use crate::sd::inputs::{cond, model};
use crate::sd::objects::{NoiseObj, SamplerObj};
use crate::sd::run::{sample, SampleJob};
use crate::values::latent;

/// `SamplerCustom` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct SamplerCustom;

impl Node for SamplerCustom {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SamplerCustom", "model/sampling/custom")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .required("model", "MODEL", json!({}))
            .required("add_noise", "BOOLEAN", json!({"advanced": true, "default": true}))
            .required("noise_seed", "INT", json!({"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": true}))
            .required("cfg", "FLOAT", json!({"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}))
            .required("positive", "CONDITIONING", json!({}))
            .required("negative", "CONDITIONING", json!({}))
            .required("sampler", "SAMPLER", json!({}))
            .required("sigmas", "SIGMAS", json!({}))
            .required("latent_image", "LATENT", json!({}))
            .named_output("LATENT", "output", None)
            .named_output("LATENT", "denoised_output", None)
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let seed = seed(inputs, "noise_seed")?;
        let l = latent(inputs, "latent_image")?;
        let sampler = inputs.object::<SamplerObj>("sampler")?;
        let out = sample(
            SampleJob {
                model: model(inputs, "model")?,
                positive: cond(inputs, "positive")?,
                negative: Some(cond(inputs, "negative")?),
                cfg: inputs.f64("cfg")?,
                sampler: &sampler.name,
                sigmas: sigmas_input(inputs, "sigmas")?,
                latent: l,
                noise: if inputs.bool("add_noise")? { NoiseObj::Random { seed } } else { NoiseObj::Disabled },
                seed,
            },
            ctx,
        )?;
        Ok(Outputs::new(custom_outputs(l, out)))
    }
}
