//! `KSampler`: the standard sampling node.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use comfy_sampling::schedule::ksampler_sigmas;
use serde_json::json;

use super::{sampler_combo, scheduler_combo, seed, steps, SEED_MAX};
use crate::sd::errors::sampling_err;
use crate::sd::inputs::{cond, model};
use crate::sd::objects::NoiseObj;
use crate::sd::run::{sample, SampleJob};
use crate::values::latent;

/// `KSampler` (`nodes.py`, `common_ksampler`).
pub struct KSampler;

impl Node for KSampler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSampler", "model/sampling")
            .description("Uses the provided model, positive and negative conditioning to denoise the latent image.")
            .aliases(&["sampler", "sample", "generate", "denoise", "diffuse", "txt2img", "img2img"])
            .required("model", "MODEL", json!({"tooltip": "The model used for denoising the input latent."}))
            .required("seed", "INT", json!({"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": true, "tooltip": "The random seed used for creating the noise."}))
            .required("steps", "INT", json!({"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}))
            .required("cfg", "FLOAT", json!({"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."}))
            .push_input(Section::Required, "sampler_name", sampler_combo(), json!({"tooltip": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."}))
            .push_input(Section::Required, "scheduler", scheduler_combo(), json!({"tooltip": "The scheduler controls how noise is gradually removed to form the image."}))
            .required("positive", "CONDITIONING", json!({"tooltip": "The conditioning describing the attributes you want to include in the image."}))
            .required("negative", "CONDITIONING", json!({"tooltip": "The conditioning describing the attributes you want to exclude from the image."}))
            .required("latent_image", "LATENT", json!({"tooltip": "The latent image to denoise."}))
            .required("denoise", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."}))
            .named_output("LATENT", "LATENT", Some("The denoised latent."))
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let seed = seed(inputs, "seed")?;
        let sampler = inputs.str("sampler_name")?;
        let sigmas = ksampler_sigmas(&m.sampling, inputs.str("scheduler")?, sampler, steps(inputs, "steps")?, inputs.f64("denoise")?)
            .map_err(|e| sampling_err(e, ctx.cancel))?;
        let l = latent(inputs, "latent_image")?;
        let out = sample(
            SampleJob {
                model: m,
                positive: cond(inputs, "positive")?,
                negative: Some(cond(inputs, "negative")?),
                cfg: inputs.f64("cfg")?,
                sampler,
                sigmas,
                latent: l,
                noise: NoiseObj::Random { seed },
                seed,
            },
            ctx,
        )?;
        let mut r = l.clone();
        r.samples = out.samples;
        Ok(Outputs::new(vec![Value::object(r)]))
    }
}
