//! `BasicScheduler`: a model's sigma schedule.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use comfy_sampling::SCHEDULER_NAMES;
use serde_json::json;

use super::{names, sigmas_value, steps};
use crate::sd::errors::sampling_err;
use crate::sd::inputs::model;

/// `BasicScheduler` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct BasicScheduler;

/// `BasicScheduler`'s sigmas: denoise < 1 computes `int(steps/denoise)` and keeps the last
/// `steps + 1`; denoise ≤ 0 gives none.
pub fn basic_sigmas(ms: &comfy_sampling::ModelSampling, scheduler: &str, steps: usize, denoise: f64) -> comfy_sampling::Result<Vec<f32>> {
    let mut total = steps;
    if denoise < 1.0 {
        if denoise <= 0.0 {
            return Ok(vec![]);
        }
        total = (steps as f64 / denoise) as usize;
    }
    let s = ms.calculate_sigmas(scheduler, total)?;
    let keep = (steps + 1).min(s.len());
    Ok(s[s.len() - keep..].to_vec())
}

impl Node for BasicScheduler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BasicScheduler", "model/sampling/schedulers")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .required("model", "MODEL", json!({}))
            .push_input(Section::Required, "scheduler", InputType::ComboV3(names(&SCHEDULER_NAMES)), json!({}))
            .required("steps", "INT", json!({"default": 20, "min": 1, "max": 10000}))
            .required("denoise", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}))
            .output("SIGMAS")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let s = basic_sigmas(&m.sampling, inputs.str("scheduler")?, steps(inputs, "steps")?, inputs.f64("denoise")?)
            .map_err(|e| sampling_err(e, ctx.cancel))?;
        Ok(Outputs::new(vec![sigmas_value(s)?]))
    }
}
