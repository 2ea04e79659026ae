//! `VAEEncodeForInpaint`: encodes with the masked region greyed out and sets a grown
//! noise mask.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Value};
use serde_json::json;

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::sd::inputs::vae;
use crate::types::Latent;
use crate::values::{mask as mask_input, usize_of};

/// `VAEEncodeForInpaint` (`nodes.py`).
pub struct VAEEncodeForInpaint;

/// The mask grown by a `g×g` box (`conv2d(round(mask), ones, padding=ceil((g−1)/2))`,
/// clamped to 0..1, cropped to `h×w`, rounded). `m`: `[B, H, W]`.
pub fn grow_mask(m: &Array, g: usize, h: usize, w: usize) -> Array {
    let (b, mh, mw) = m.dims3();
    let rounded: Vec<f32> = m.data.iter().map(|v| v.round_ties_even()).collect();
    if g == 0 {
        let a = Array::new(vec![b, mh, mw], rounded);
        return a.crop_last2(0, 0, h.min(mh), w.min(mw));
    }
    let p = (g - 1).div_ceil(2) as isize;
    let mut out = Vec::with_capacity(b * h * w);
    for k in 0..b {
        let plane = &rounded[k * mh * mw..(k + 1) * mh * mw];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut s = 0f32;
                for dy in 0..g as isize {
                    let yy = y - p + dy;
                    if yy < 0 || yy >= mh as isize {
                        continue;
                    }
                    for dx in 0..g as isize {
                        let xx = x - p + dx;
                        if xx < 0 || xx >= mw as isize {
                            continue;
                        }
                        s += plane[yy as usize * mw + xx as usize];
                    }
                }
                out.push(s.clamp(0.0, 1.0).round_ties_even());
            }
        }
    }
    Array::new(vec![b, h, w], out)
}

impl Node for VAEEncodeForInpaint {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncodeForInpaint", "model/latent")
            .display(Some("VAE Encode (for Inpainting)"))
            .aliases(&[])
            .required("pixels", "IMAGE", json!({}))
            .required("vae", "VAE", json!({}))
            .required("mask", "MASK", json!({}))
            .required("grow_mask_by", "INT", json!({"default": 6, "min": 0, "max": 64, "step": 1}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = vae(inputs, "vae")?;
        let r = v.downscale();
        let px = Array::from_tensor(inputs.object::<candle_core::Tensor>("pixels")?)?;
        let (pb, ph, pw, pc) = px.dims4();
        let m = mask_input(inputs, "mask")?;
        let (mb, mh, mw) = m.dims3();
        let m = common_upscale(&Array::new(vec![mb, 1, mh, mw], m.data), pw, ph, Method::Bilinear, false)?;
        let m = Array::new(vec![mb, ph, pw], m.data);
        let (x, y) = ((ph / r) * r, (pw / r) * r);
        let (px, m) = if (x, y) != (ph, pw) {
            let (xo, yo) = ((ph % r) / 2, (pw % r) / 2);
            let nhwc = px.nhwc_to_nchw().crop_last2(xo, yo, x, y).nchw_to_nhwc();
            (nhwc, m.crop_last2(xo, yo, x, y))
        } else {
            (px, m)
        };
        let grow = usize_of(inputs, "grow_mask_by")?;
        let noise_mask = grow_mask(&m, grow, x, y);
        // Masked pixels become 0.5 grey: (p − 0.5)·(1 − round(mask)) + 0.5 on RGB.
        let mut px = px;
        for bb in 0..pb {
            let k = if mb == pb { bb } else if mb == 1 { 0 } else {
                return Err(NodeError::invalid_input(format!("mask batch {mb} does not match image batch {pb}")));
            };
            for i in 0..x * y {
                let keep = 1.0 - m.data[k * x * y + i].round_ties_even();
                for c in 0..3.min(pc) {
                    let v = &mut px.data[(bb * x * y + i) * pc + c];
                    *v = (*v - 0.5) * keep + 0.5;
                }
            }
        }
        let z = super::encode(v, &px.into_tensor()?, ctx.cancel)?;
        let nm = Array::new(vec![mb, 1, x, y], noise_mask.data).into_tensor()?;
        Ok(Outputs::new(vec![Value::object(Latent { samples: z, noise_mask: Some(nm), batch_index: None })]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_box() {
        // One masked pixel in a 5x5, grown by 3 (padding 1): a 3x3 block.
        let mut d = vec![0f32; 25];
        d[12] = 1.0;
        let g = grow_mask(&Array::new(vec![1, 5, 5], d), 3, 5, 5);
        let ones: Vec<usize> = g.data.iter().enumerate().filter(|(_, v)| **v == 1.0).map(|(i, _)| i).collect();
        assert_eq!(ones, vec![6, 7, 8, 11, 12, 13, 16, 17, 18]);
        // Even kernel 2, padding 1: the pixel spreads up/left.
        let mut d = vec![0f32; 16];
        d[5] = 1.0;
        let g = grow_mask(&Array::new(vec![1, 4, 4], d), 2, 4, 4);
        let ones: Vec<usize> = g.data.iter().enumerate().filter(|(_, v)| **v == 1.0).map(|(i, _)| i).collect();
        assert_eq!(ones, vec![5, 6, 9, 10]);
    }
}
