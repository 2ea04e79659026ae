//! `VAEEncodeTiled`: encoding in overlapping pixel tiles.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::errors::candle_err;
use crate::sd::inputs::vae;
use crate::sd::model::SdVae;
use crate::types::Latent;
use crate::values::usize_of;

/// `VAEEncodeTiled` (`nodes.py`): pixel tiles of `tile_size` with `overlap`.
pub struct VAEEncodeTiled;

impl Node for VAEEncodeTiled {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncodeTiled", "model/latent")
            .display(Some("VAE Encode (Tiled)"))
            .aliases(&[])
            .required("pixels", "IMAGE", json!({}))
            .required("vae", "VAE", json!({}))
            .required("tile_size", "INT", json!({"default": 512, "min": 64, "max": 4096, "step": 64, "advanced": true}))
            .required("overlap", "INT", json!({"default": 64, "min": 0, "max": 4096, "step": 32, "advanced": true}))
            .required("temporal_size", "INT", json!({"default": 64, "min": 8, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs: Amount of frames to encode at a time.", "advanced": true}))
            .required("temporal_overlap", "INT", json!({"default": 8, "min": 4, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs: Amount of frames to overlap.", "advanced": true}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = vae(inputs, "vae")?;
        let pixels = super::image(inputs.object::<candle_core::Tensor>("pixels")?)?;
        let tile = usize_of(inputs, "tile_size")?;
        let overlap = usize_of(inputs, "overlap")?;
        let z = match v {
            SdVae::Kl { vae, .. } => {
                let p = super::crop_pixels(&pixels, vae.config().downscale())?;
                let b = p.dim(0).map_err(candle_err)?;
                let mut parts = Vec::with_capacity(b);
                for i in 0..b {
                    ctx.cancel.check()?;
                    let x = p.narrow(0, i, 1).map_err(candle_err)?;
                    parts.push(vae.encode_tiled(&x, tile, tile, overlap).map_err(candle_err)?);
                }
                candle_core::Tensor::cat(&parts, 0).map_err(candle_err)?
            }
            other => super::encode(other, &pixels, ctx.cancel)?,
        };
        Ok(Outputs::new(vec![Value::object(Latent::new(z))]))
    }
}
