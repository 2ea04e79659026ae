//! `KSamplerAdvanced`: KSampler with a step window and optional noise.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use comfy_sampling::schedule::{advanced_window, ksampler_sigmas};
use serde_json::json;

use super::{sampler_combo, scheduler_combo, seed, steps, SEED_MAX};
use crate::sd::errors::sampling_err;
use crate::sd::inputs::{cond, model};
use crate::sd::objects::NoiseObj;
use crate::sd::run::{fix_empty_latent_channels, sample, SampleJob};
use crate::values::latent;

/// `KSamplerAdvanced` (`nodes.py`).
pub struct KSamplerAdvanced;

impl Node for KSamplerAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerAdvanced", "model/sampling")
            .display(Some("KSampler (Advanced)"))
            .aliases(&[])
            .required("model", "MODEL", json!({}))
            .push_input(Section::Required, "add_noise", InputType::Combo(vec![json!("enable"), json!("disable")]), json!({"advanced": true}))
            .required("noise_seed", "INT", json!({"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": true}))
            .required("steps", "INT", json!({"default": 20, "min": 1, "max": 10000}))
            .required("cfg", "FLOAT", json!({"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}))
            .push_input(Section::Required, "sampler_name", sampler_combo(), json!({}))
            .push_input(Section::Required, "scheduler", scheduler_combo(), json!({}))
            .required("positive", "CONDITIONING", json!({}))
            .required("negative", "CONDITIONING", json!({}))
            .required("latent_image", "LATENT", json!({}))
            .required("start_at_step", "INT", json!({"default": 0, "min": 0, "max": 10000, "advanced": true}))
            .required("end_at_step", "INT", json!({"default": 10000, "min": 0, "max": 10000, "advanced": true}))
            .push_input(Section::Required, "return_with_leftover_noise", InputType::Combo(vec![json!("disable"), json!("enable")]), json!({"advanced": true}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let seed = seed(inputs, "noise_seed")?;
        let sampler = inputs.str("sampler_name")?;
        let force_full_denoise = inputs.str("return_with_leftover_noise")? != "enable";
        let disable_noise = inputs.str("add_noise")? == "disable";
        let full = ksampler_sigmas(&m.sampling, inputs.str("scheduler")?, sampler, steps(inputs, "steps")?, 1.0)
            .map_err(|e| sampling_err(e, ctx.cancel))?;
        let l = latent(inputs, "latent_image")?;
        let window = advanced_window(&full, Some(steps(inputs, "start_at_step")?), Some(steps(inputs, "end_at_step")?), force_full_denoise);
        let mut r = l.clone();
        match window {
            // start_step past the end: the input latent comes back unchanged.
            None => r.samples = fix_empty_latent_channels(m, &l.samples)?,
            Some(sigmas) => {
                let out = sample(
                    SampleJob {
                        model: m,
                        positive: cond(inputs, "positive")?,
                        negative: Some(cond(inputs, "negative")?),
                        cfg: inputs.f64("cfg")?,
                        sampler,
                        sigmas,
                        latent: l,
                        noise: if disable_noise { NoiseObj::Disabled } else { NoiseObj::Random { seed } },
                        seed,
                    },
                    ctx,
                )?;
                r.samples = out.samples;
            }
        }
        Ok(Outputs::new(vec![Value::object(r)]))
    }
}
