//! `CLIPTextEncodeSDXLRefiner`: a prompt with the refiner's aesthetic-score conditioning.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::{cond_output, encode};
use crate::sd::cond::{CondEntry, CondOpts, Conditioning};
use crate::sd::inputs::clip;

/// `CLIPTextEncodeSDXLRefiner` (`comfy_extras.nodes_clip_sdxl`, V3).
pub struct CLIPTextEncodeSDXLRefiner;

impl Node for CLIPTextEncodeSDXLRefiner {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncodeSDXLRefiner", "model/conditioning/stable diffusion")
            .v3()
            .display(Some("CLIP Text Encode (SDXL Refiner)"))
            .module("comfy_extras.nodes_clip_sdxl")
            .required("ascore", "FLOAT", json!({"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}))
            .required("width", "INT", json!({"default": 1024, "min": 0, "max": 16384}))
            .required("height", "INT", json!({"default": 1024, "min": 0, "max": 16384}))
            .required("text", "STRING", json!({"multiline": true, "dynamicPrompts": true}))
            .required("clip", "CLIP", json!({}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let c = clip(inputs, "clip")?;
        let tokens = c.model.tokenize(inputs.str("text")?);
        let (cond, pooled) = encode(c, &tokens)?;
        let opts = CondOpts {
            pooled_output: Some(pooled),
            aesthetic_score: Some(inputs.f64("ascore")?),
            width: Some(inputs.i64("width")? as f64),
            height: Some(inputs.i64("height")? as f64),
            ..Default::default()
        };
        Ok(cond_output(Conditioning(vec![CondEntry { cond, opts }])))
    }
}
