//! `ConditioningAverage`: a weighted blend of two conditionings.

use candle_core::{DType, Tensor};
use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::{CondEntry, Conditioning};
use crate::sd::errors::candle_err;
use crate::sd::inputs::cond;

/// `ConditioningAverage` (`nodes.py`): `to·s + from[:, :T_to]·(1−s)` per `to` entry.
pub struct ConditioningAverage;

/// The blend (only the first `from` entry is used).
pub fn average(to: &Conditioning, from: &Conditioning, s: f64) -> Result<Conditioning, NodeError> {
    let Some(first) = from.0.first() else { return Err(NodeError::invalid_input("conditioning_from is empty")) };
    if from.0.len() > 1 {
        tracing::warn!("ConditioningAverage: conditioning_from contains more than 1 cond, only the first one will be applied");
    }
    let cond_from = &first.cond;
    let pooled_from = first.opts.pooled_output.as_ref();
    let mut out = Vec::with_capacity(to.0.len());
    for e in &to.0 {
        let t1 = &e.cond;
        let (_, t_to, d) = t1.dims3().map_err(candle_err)?;
        let t_from = cond_from.dim(1).map_err(candle_err)?;
        let mut t0 = cond_from.narrow(1, 0, t_to.min(t_from)).map_err(candle_err)?;
        if t_from < t_to {
            let z = Tensor::zeros((1, t_to - t_from, d), DType::F32, t0.device()).map_err(candle_err)?;
            t0 = Tensor::cat(&[&t0, &z], 1).map_err(candle_err)?;
        }
        let tw = (t1.affine(s, 0.0).map_err(candle_err)? + t0.affine(1.0 - s, 0.0).map_err(candle_err)?).map_err(candle_err)?;
        let mut opts = e.opts.clone();
        let pooled_to = e.opts.pooled_output.as_ref().or(pooled_from);
        opts.pooled_output = match (pooled_from, pooled_to) {
            (Some(pf), Some(pt)) => Some(
                (pt.affine(s, 0.0).map_err(candle_err)? + pf.affine(1.0 - s, 0.0).map_err(candle_err)?).map_err(candle_err)?,
            ),
            (Some(pf), None) => Some(pf.clone()),
            (None, _) => e.opts.pooled_output.clone(),
        };
        out.push(CondEntry { cond: tw, opts });
    }
    Ok(Conditioning(out))
}

impl Node for ConditioningAverage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningAverage", "model/conditioning/transform")
            .display(Some("Conditioning (Average)"))
            .aliases(&["blend prompts", "interpolate conditioning", "mix prompts", "style fusion", "weighted blend"])
            .required("conditioning_to", "CONDITIONING", json!({}))
            .required("conditioning_from", "CONDITIONING", json!({}))
            .required("conditioning_to_strength", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let s = inputs.f64("conditioning_to_strength")?;
        Ok(cond_output(average(cond(inputs, "conditioning_to")?, cond(inputs, "conditioning_from")?, s)?))
    }
}
