//! `ConditioningSetAreaPercentage`: a box as fractions of the latent size.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::cond_output;
use crate::sd::cond::Area;
use crate::sd::inputs::cond;

/// `ConditioningSetAreaPercentage` (`nodes.py`): `area = ("percentage", h, w, y, x)`.
pub struct ConditioningSetAreaPercentage;

impl Node for ConditioningSetAreaPercentage {
    fn schema(&self) -> NodeSchema {
        let f = |d: Option<f64>| match d {
            Some(d) => json!({"default": d, "min": 0, "max": 1.0, "step": 0.01}),
            None => json!({"default": 0, "min": 0, "max": 1.0, "step": 0.01}),
        };
        NodeSchema::new("ConditioningSetAreaPercentage", "model/conditioning/transform")
            .display(Some("Conditioning (Set Area with Percentage)"))
            .aliases(&[])
            .required("conditioning", "CONDITIONING", json!({}))
            .required("width", "FLOAT", f(Some(1.0)))
            .required("height", "FLOAT", f(Some(1.0)))
            .required("x", "FLOAT", f(None))
            .required("y", "FLOAT", f(None))
            .required("strength", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let area = Area::Percentage {
            h: inputs.f64("height")?,
            w: inputs.f64("width")?,
            y: inputs.f64("y")?,
            x: inputs.f64("x")?,
        };
        let strength = inputs.f64("strength")?;
        Ok(cond_output(cond(inputs, "conditioning")?.map_opts(|o| {
            o.area = Some(area);
            o.strength = Some(strength);
            o.set_area_to_bounds = false;
        })))
    }
}
