//! `ConditioningZeroOut`: zeros the embeddings (keeps the other options).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::{CondEntry, Conditioning};
use crate::sd::errors::candle_err;
use crate::sd::inputs::cond;

/// `ConditioningZeroOut` (`nodes.py`).
pub struct ConditioningZeroOut;

impl Node for ConditioningZeroOut {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningZeroOut", "model/conditioning/transform")
            .display(Some("Conditioning Zero Out"))
            .aliases(&["null conditioning", "clear conditioning"])
            .required("conditioning", "CONDITIONING", json!({}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let out = cond(inputs, "conditioning")?
            .0
            .iter()
            .map(|e| {
                let mut opts = e.opts.clone();
                if let Some(p) = &opts.pooled_output {
                    opts.pooled_output = Some(p.zeros_like().map_err(candle_err)?);
                }
                Ok(CondEntry { cond: e.cond.zeros_like().map_err(candle_err)?, opts })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        Ok(cond_output(Conditioning(out)))
    }
}
