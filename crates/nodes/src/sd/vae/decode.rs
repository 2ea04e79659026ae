//! `VAEDecode`: latents to images.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::inputs::vae;
use crate::values::latent;

/// `VAEDecode` (`nodes.py`): `clamp((decoder(z) + 1)/2, 0, 1)`, channels last.
pub struct VAEDecode;

impl Node for VAEDecode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecode", "model/latent")
            .display(Some("VAE Decode"))
            .description("Decodes latent images back into pixel space images.")
            .aliases(&["decode", "decode latent", "latent to image", "render latent"])
            .required("samples", "LATENT", json!({"tooltip": "The latent to be decoded."}))
            .required("vae", "VAE", json!({"tooltip": "The VAE model used for decoding the latent."}))
            .named_output("IMAGE", "IMAGE", Some("The decoded image."))
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = vae(inputs, "vae")?;
        let l = latent(inputs, "samples")?;
        let img = super::decode(v, &l.samples, ctx.cancel)?;
        Ok(Outputs::new(vec![Value::object(img)]))
    }
}
