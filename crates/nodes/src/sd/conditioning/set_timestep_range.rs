//! `ConditioningSetTimestepRange`: limits entries to a part of the schedule.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::inputs::cond;

/// `ConditioningSetTimestepRange` (`nodes.py`): `start_percent`, `end_percent`.
pub struct ConditioningSetTimestepRange;

impl Node for ConditioningSetTimestepRange {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningSetTimestepRange", "model/conditioning/transform")
            .aliases(&[])
            .required("conditioning", "CONDITIONING", json!({}))
            .required("start", "FLOAT", json!({"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}))
            .required("end", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let (start, end) = (inputs.f64("start")?, inputs.f64("end")?);
        Ok(cond_output(cond(inputs, "conditioning")?.map_opts(|o| {
            o.start_percent = Some(start);
            o.end_percent = Some(end);
        })))
    }
}
