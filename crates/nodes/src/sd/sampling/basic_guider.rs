//! `BasicGuider`: model + one conditioning, no CFG.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::inputs::{cond, model};
use crate::sd::objects::GuiderObj;

/// `BasicGuider` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct BasicGuider;

impl Node for BasicGuider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BasicGuider", "model/sampling/guiders")
            .v3()
            .display(Some("Basic Guider"))
            .module("comfy_extras.nodes_custom_sampler")
            .required("model", "MODEL", json!({}))
            .required("conditioning", "CONDITIONING", json!({}))
            .output("GUIDER")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let g = GuiderObj {
            model: model(inputs, "model")?.clone(),
            positive: cond(inputs, "conditioning")?.clone(),
            negative: None,
            cfg: 1.0,
        };
        Ok(Outputs::new(vec![Value::object(g)]))
    }
}
