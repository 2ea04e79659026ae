//! `ConditioningCombine`: list concatenation.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::Conditioning;
use crate::sd::inputs::cond;

/// `ConditioningCombine` (`nodes.py`): entries of 1 then 2.
pub struct ConditioningCombine;

impl Node for ConditioningCombine {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningCombine", "model/conditioning/transform")
            .display(Some("Conditioning (Combine)"))
            .aliases(&["combine", "merge conditioning", "combine prompts", "merge prompts", "mix prompts", "add prompt"])
            .essentials("Image Generation")
            .required("conditioning_1", "CONDITIONING", json!({}))
            .required("conditioning_2", "CONDITIONING", json!({}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut out = cond(inputs, "conditioning_1")?.0.clone();
        out.extend(cond(inputs, "conditioning_2")?.0.iter().cloned());
        Ok(cond_output(Conditioning(out)))
    }
}
