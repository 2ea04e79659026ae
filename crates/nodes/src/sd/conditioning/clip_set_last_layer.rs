//! `CLIPSetLastLayer`: which text-encoder layer becomes the conditioning.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::inputs::clip;

/// `CLIPSetLastLayer` (`nodes.py`): a clone with `layer_idx` set.
pub struct CLIPSetLastLayer;

impl Node for CLIPSetLastLayer {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPSetLastLayer", "model/conditioning")
            .display(Some("CLIP Set Last Layer"))
            .aliases(&[])
            .required("clip", "CLIP", json!({}))
            .required("stop_at_clip_layer", "INT", json!({"default": -1, "min": -24, "max": -1, "step": 1, "advanced": true}))
            .output("CLIP")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut c = clip(inputs, "clip")?.clone();
        let idx = inputs.i64("stop_at_clip_layer")?;
        c.layer_idx = Some(i32::try_from(idx).map_err(|_| NodeError::invalid_input("stop_at_clip_layer out of range"))?);
        Ok(Outputs::new(vec![Value::object(c)]))
    }
}
