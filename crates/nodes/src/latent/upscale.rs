//! `LatentUpscale`: resizes latents to a pixel width/height (divided by 8).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use comfy_graph::{InputType, Section};

use crate::ops::array::py_round;
use crate::ops::resample::{common_upscale, parse_crop, Method};
use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value, usize_of};

/// The methods the latent upscale combos offer.
pub fn latent_methods() -> InputType {
    InputType::Combo(["nearest-exact", "bilinear", "area", "bicubic", "bislerp"].iter().map(|s| json!(s)).collect())
}

/// Resizes the samples of a latent (other keys kept).
pub fn resize_latent(l: &Latent, w: usize, h: usize, method: Method, crop: bool) -> Result<Latent, NodeError> {
    let s = Array::from_tensor(&l.samples)?;
    if s.shape.len() != 4 {
        return Err(NodeError::invalid_input(format!("LATENT samples must be [B, C, H, W], got {:?}", s.shape)));
    }
    let out = common_upscale(&s, w, h, method, crop)?;
    Ok(Latent { samples: out.into_tensor()?, ..l.clone() })
}

/// `LatentUpscale` (`nodes.py`).
pub struct LatentUpscale;

impl Node for LatentUpscale {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentUpscale", "model/latent")
            .display(Some("Upscale Latent"))
            .aliases(&["enlarge latent", "resize latent"])
            .required("samples", "LATENT", json!({}))
            .push_input(Section::Required, "upscale_method", latent_methods(), json!({}))
            .required("width", "INT", json!({"default": 512, "min": 0, "max": 16384, "step": 8}))
            .required("height", "INT", json!({"default": 512, "min": 0, "max": 16384, "step": 8}))
            .push_input(
                Section::Required,
                "crop",
                InputType::Combo(vec![json!("disabled"), json!("center")]),
                json!({}),
            )
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let method = Method::parse(inputs.str("upscale_method")?)?;
        let crop = parse_crop(inputs.str("crop")?)?;
        let (mut w, mut h) = (usize_of(inputs, "width")?, usize_of(inputs, "height")?);
        if w == 0 && h == 0 {
            return Ok(Outputs::new(vec![latent_value(l.clone())]));
        }
        let dims = l.samples.dims();
        let (lh, lw) = (dims[dims.len() - 2] as f64, dims[dims.len() - 1] as f64);
        if w == 0 {
            h = h.max(64);
            w = (py_round(lw * h as f64 / lh).max(64)) as usize;
        } else if h == 0 {
            w = w.max(64);
            h = (py_round(lh * w as f64 / lw).max(64)) as usize;
        } else {
            w = w.max(64);
            h = h.max(64);
        }
        Ok(Outputs::new(vec![latent_value(resize_latent(l, w / 8, h / 8, method, crop)?)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn up(w: i64, h: i64, method: &str, shape: &[usize], px: &[f32]) -> Latent {
        let i = inputs(vec![
            ("samples", lval(shape, px)),
            ("upscale_method", j(json!(method))),
            ("width", j(json!(w))),
            ("height", j(json!(h))),
            ("crop", j(json!("disabled"))),
        ]);
        out_latent(&run(&LatentUpscale, i).unwrap(), 0)
    }

    #[test]
    fn sizes_and_values() {
        let px: Vec<f32> = (0..6).map(|v| v as f32).collect();
        // Both zero: unchanged.
        assert_eq!(up(0, 0, "bilinear", &[1, 1, 2, 3], &px).samples.dims(), &[1, 1, 2, 3]);
        // Minimum 64 px per side -> 8x8 latent.
        let l = up(16, 16, "nearest-exact", &[1, 1, 2, 3], &px);
        assert_eq!(l.samples.dims(), &[1, 1, 8, 8]);
        // Width derived from the aspect: h=128 -> w = round(3*128/2) = 192 -> 16x24 latent.
        assert_eq!(up(0, 128, "area", &[1, 1, 2, 3], &px).samples.dims(), &[1, 1, 16, 24]);
        // nearest-exact 2x3 -> 8x8 at the corners keeps the source corners.
        let a = Array::from_tensor(&l.samples).unwrap();
        assert_eq!((a.data[0], a.data[7], a.data[56], a.data[63]), (0., 2., 3., 5.));
    }
}
