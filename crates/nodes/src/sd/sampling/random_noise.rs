//! `RandomNoise`: seeded initial noise.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use super::{seed, SEED_MAX};
use crate::sd::objects::NoiseObj;

/// `RandomNoise` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct RandomNoise;

impl Node for RandomNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RandomNoise", "model/sampling/noise")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .required("noise_seed", "INT", json!({"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": true}))
            .output("NOISE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        Ok(Outputs::new(vec![Value::object(NoiseObj::Random { seed: seed(inputs, "noise_seed")? })]))
    }
}
