//! `DisableNoise`: zero initial noise.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};

use crate::sd::objects::NoiseObj;

/// `DisableNoise` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct DisableNoise;

impl Node for DisableNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DisableNoise", "model/sampling/noise")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .aliases(&["zero noise"])
            .output("NOISE")
    }

    fn execute(&self, _inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        Ok(Outputs::new(vec![Value::object(NoiseObj::Disabled)]))
    }
}
