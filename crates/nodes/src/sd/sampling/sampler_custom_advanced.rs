//! `SamplerCustomAdvanced`: sampling with NOISE, GUIDER, SAMPLER and SIGMAS objects.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::{custom_outputs, sigmas_input};
use crate::sd::objects::{GuiderObj, NoiseObj, SamplerObj};
use crate::sd::run::{sample, SampleJob};
use crate::values::latent;

/// `SamplerCustomAdvanced` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct SamplerCustomAdvanced;

impl Node for SamplerCustomAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SamplerCustomAdvanced", "model/sampling/custom")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .required("noise", "NOISE", json!({}))
            .required("guider", "GUIDER", json!({}))
            .required("sampler", "SAMPLER", json!({}))
            .required("sigmas", "SIGMAS", json!({}))
            .required("latent_image", "LATENT", json!({}))
            .named_output("LATENT", "output", None)
            .named_output("LATENT", "denoised_output", None)
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let noise = *inputs.object::<NoiseObj>("noise")?;
        let g = inputs.object::<GuiderObj>("guider")?;
        let sampler = inputs.object::<SamplerObj>("sampler")?;
        let l = latent(inputs, "latent_image")?;
        let out = sample(
            SampleJob {
                model: &g.model,
                positive: &g.positive,
                negative: g.negative.as_ref(),
                cfg: g.cfg,
                sampler: &sampler.name,
                sigmas: sigmas_input(inputs, "sigmas")?,
                latent: l,
                noise,
                seed: noise.seed(),
            },
            ctx,
        )?;
        Ok(Outputs::new(custom_outputs(l, out)))
    }
}
