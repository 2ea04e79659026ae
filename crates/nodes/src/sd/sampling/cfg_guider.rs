//! `CFGGuider`: model + positive/negative + cfg as a GUIDER.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::inputs::{cond, model};
use crate::sd::objects::GuiderObj;

/// `CFGGuider` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct CFGGuider;

impl Node for CFGGuider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CFGGuider", "model/sampling/guiders")
            .v3()
            .display(Some("CFG Guider"))
            .module("comfy_extras.nodes_custom_sampler")
            .required("model", "MODEL", json!({}))
            .required("positive", "CONDITIONING", json!({}))
            .required("negative", "CONDITIONING", json!({}))
            .required("cfg", "FLOAT", json!({"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}))
            .output("GUIDER")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let g = GuiderObj {
            model: model(inputs, "model")?.clone(),
            positive: cond(inputs, "positive")?.clone(),
            negative: Some(cond(inputs, "negative")?.clone()),
            cfg: inputs.f64("cfg")?,
        };
        Ok(Outputs::new(vec![Value::object(g)]))
    }
}
