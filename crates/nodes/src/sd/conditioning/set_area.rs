//! `ConditioningSetArea`: restricts entries to a box (pixel units, stored in latent units).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::Area;
use crate::sd::inputs::cond;
use crate::values::usize_of;

/// `ConditioningSetArea` (`nodes.py`): `area = (h//8, w//8, y//8, x//8)`, `strength`.
pub struct ConditioningSetArea;

impl Node for ConditioningSetArea {
    fn schema(&self) -> NodeSchema {
        let px = |d: i64, min: i64| json!({"default": d, "min": min, "max": 16384, "step": 8});
        NodeSchema::new("ConditioningSetArea", "model/conditioning/transform")
            .display(Some("Conditioning (Set Area)"))
            .aliases(&["regional prompt", "area prompt", "spatial conditioning", "localized prompt"])
            .required("conditioning", "CONDITIONING", json!({}))
            .required("width", "INT", px(64, 64))
            .required("height", "INT", px(64, 64))
            .required("x", "INT", px(0, 0))
            .required("y", "INT", px(0, 0))
            .required("strength", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let area = Area::Latent {
            h: usize_of(inputs, "height")? / 8,
            w: usize_of(inputs, "width")? / 8,
            y: usize_of(inputs, "y")? / 8,
            x: usize_of(inputs, "x")? / 8,
        };
        let strength = inputs.f64("strength")?;
        Ok(cond_output(cond(inputs, "conditioning")?.map_opts(|o| {
            o.area = Some(area);
            o.strength = Some(strength);
            o.set_area_to_bounds = false;
        })))
    }
}
