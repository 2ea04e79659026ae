//! `ConditioningSetMask`: weights entries by a mask (optionally restricted to its bounds).

use candle_core::Tensor;
use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::errors::candle_err;
use crate::sd::inputs::cond;

/// `ConditioningSetMask` (`nodes.py`): `mask`, `mask_strength`, `set_area_to_bounds`.
pub struct ConditioningSetMask;

impl Node for ConditioningSetMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningSetMask", "model/conditioning/transform")
            .display(Some("Conditioning (Set Mask)"))
            .aliases(&["masked prompt", "regional inpaint conditioning", "mask conditioning"])
            .required("conditioning", "CONDITIONING", json!({}))
            .required("mask", "MASK", json!({}))
            .required("strength", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}))
            .push_input(
                comfy_graph::Section::Required,
                "set_cond_area",
                comfy_graph::InputType::Combo(vec![json!("default"), json!("mask bounds")]),
                json!({}),
            )
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut mask: Tensor = inputs.object::<Tensor>("mask")?.clone();
        if mask.rank() < 3 {
            mask = mask.unsqueeze(0).map_err(candle_err)?;
        }
        let bounds = inputs.str("set_cond_area")? != "default";
        let strength = inputs.f64("strength")?;
        Ok(cond_output(cond(inputs, "conditioning")?.map_opts(|o| {
            o.mask = Some(mask.clone());
            o.set_area_to_bounds = bounds;
            o.mask_strength = Some(strength);
        })))
    }
}
