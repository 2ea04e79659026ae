//! `CLIPTextEncode`: a prompt through the checkpoint's text encoder(s).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::{cond_output, encode};
use crate::sd::cond::Conditioning;
use crate::sd::inputs::clip;

/// `CLIPTextEncode` (`nodes.py`): `[[cond, {"pooled_output": pooled}]]`.
pub struct CLIPTextEncode;

impl Node for CLIPTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode", "model/conditioning")
            .display(Some("CLIP Text Encode (Prompt)"))
            .description("Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.")
            .aliases(&["text", "prompt", "text prompt", "positive prompt", "negative prompt", "encode text", "text encoder", "encode prompt"])
            .required("text", "STRING", json!({"multiline": true, "dynamicPrompts": true, "tooltip": "The text to be encoded."}))
            .required("clip", "CLIP", json!({"tooltip": "The CLIP model used for encoding the text."}))
            .named_output("CONDITIONING", "CONDITIONING", Some("A conditioning containing the embedded text used to guide the diffusion model."))
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let c = clip(inputs, "clip")?;
        let text = inputs.str("text")?;
        let tokens = c.model.tokenize(text);
        let (cond, pooled) = encode(c, &tokens)?;
        Ok(cond_output(Conditioning::single(cond, Some(pooled))))
    }
}
