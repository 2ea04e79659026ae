//! `VAEDecodeTiled`: decoding in overlapping tiles.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::sd::errors::candle_err;
use crate::sd::inputs::vae;
use crate::sd::model::SdVae;
use crate::values::{latent, usize_of};

/// `VAEDecodeTiled` (`nodes.py`): tiles of `tile_size/8` latent pixels, `overlap/8` overlap
/// (overlap shrunk to `tile_size/4` when too large). Temporal inputs only matter for video VAEs.
pub struct VAEDecodeTiled;

impl Node for VAEDecodeTiled {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecodeTiled", "model/latent")
            .display(Some("VAE Decode (Tiled)"))
            .aliases(&[])
            .required("samples", "LATENT", json!({}))
            .required("vae", "VAE", json!({}))
            .required("tile_size", "INT", json!({"default": 512, "min": 64, "max": 4096, "step": 32, "advanced": true}))
            .required("overlap", "INT", json!({"default": 64, "min": 0, "max": 4096, "step": 32, "advanced": true}))
            .required("temporal_size", "INT", json!({"default": 64, "min": 8, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs: Amount of frames to decode at a time.", "advanced": true}))
            .required("temporal_overlap", "INT", json!({"default": 8, "min": 4, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs: Amount of frames to overlap.", "advanced": true}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = vae(inputs, "vae")?;
        let l = latent(inputs, "samples")?;
        let tile = usize_of(inputs, "tile_size")?;
        let mut overlap = usize_of(inputs, "overlap")?;
        if tile < overlap * 4 {
            overlap = tile / 4;
        }
        let img = match v {
            SdVae::Kl { vae, .. } => {
                let r = vae.config().downscale();
                let b = l.samples.dim(0).map_err(candle_err)?;
                let mut parts = Vec::with_capacity(b);
                for i in 0..b {
                    ctx.cancel.check()?;
                    let z = l.samples.narrow(0, i, 1).map_err(candle_err)?;
                    parts.push(vae.decode_tiled(&z, tile / r, tile / r, overlap / r).map_err(candle_err)?);
                }
                candle_core::Tensor::cat(&parts, 0).map_err(candle_err)?
            }
            other => super::decode(other, &l.samples, ctx.cancel)?,
        };
        Ok(Outputs::new(vec![Value::object(img)]))
    }
}
