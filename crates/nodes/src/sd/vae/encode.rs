//! `VAEEncode`: images to latents.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::inputs::vae;
use crate::types::Latent;

/// `VAEEncode` (`nodes.py`): the posterior mean of the (cropped) RGB channels.
pub struct VAEEncode;

impl Node for VAEEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncode", "model/latent")
            .display(Some("VAE Encode"))
            .aliases(&["encode", "encode image", "image to latent"])
            .required("pixels", "IMAGE", json!({}))
            .required("vae", "VAE", json!({}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = vae(inputs, "vae")?;
        let pixels = super::image(inputs.object::<candle_core::Tensor>("pixels")?)?;
        let z = super::encode(v, &pixels, ctx.cancel)?;
        Ok(Outputs::new(vec![Value::object(Latent::new(z))]))
    }
}
