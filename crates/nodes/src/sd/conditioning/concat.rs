//! `ConditioningConcat`: appends the tokens of another conditioning.

use candle_core::Tensor;
use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::{CondEntry, Conditioning};
use crate::sd::errors::candle_err;
use crate::sd::inputs::cond;

/// `ConditioningConcat` (`nodes.py`): `cat(to, from[0], token axis)` per `to` entry.
pub struct ConditioningConcat;

impl Node for ConditioningConcat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningConcat", "model/conditioning/transform")
            .display(Some("Conditioning (Concat)"))
            .aliases(&[])
            .required("conditioning_to", "CONDITIONING", json!({}))
            .required("conditioning_from", "CONDITIONING", json!({}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let to = cond(inputs, "conditioning_to")?;
        let from = cond(inputs, "conditioning_from")?;
        let Some(first) = from.0.first() else { return Err(NodeError::invalid_input("conditioning_from is empty")) };
        if from.0.len() > 1 {
            tracing::warn!("ConditioningConcat: conditioning_from contains more than 1 cond, only the first one will be applied");
        }
        let out = to
            .0
            .iter()
            .map(|e| {
                Ok(CondEntry { cond: Tensor::cat(&[&e.cond, &first.cond], 1).map_err(candle_err)?, opts: e.opts.clone() })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        Ok(cond_output(Conditioning(out)))
    }
}
