//! `KarrasScheduler`: the Karras et al. schedule with explicit bounds.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use comfy_sampling::schedule::karras;
use serde_json::json;

use super::{sigmas_value, steps};

/// `KarrasScheduler` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct KarrasScheduler;

impl Node for KarrasScheduler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KarrasScheduler", "model/sampling/schedulers")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .required("steps", "INT", json!({"default": 20, "min": 1, "max": 10000}))
            .required("sigma_max", "FLOAT", json!({"advanced": true, "default": 14.614642, "min": 0.0, "max": 5000.0, "step": 0.01, "round": false}))
            .required("sigma_min", "FLOAT", json!({"advanced": true, "default": 0.0291675, "min": 0.0, "max": 5000.0, "step": 0.01, "round": false}))
            .required("rho", "FLOAT", json!({"advanced": true, "default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": false}))
            .output("SIGMAS")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let s = karras(steps(inputs, "steps")?, inputs.f64("sigma_min")?, inputs.f64("sigma_max")?, inputs.f64("rho")?);
        Ok(Outputs::new(vec![sigmas_value(s)?]))
    }
}
