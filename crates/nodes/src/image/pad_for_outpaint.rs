//! `ImagePadForOutpaint`: grey padding around the image, and the outpainting mask.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::values::{image, tensor_value, usize_of};

/// `ImagePadForOutpaint` (`nodes.py`). Mask 1 in the padding, squared feather ramp inside.
pub struct ImagePadForOutpaint;

impl Node for ImagePadForOutpaint {
    fn schema(&self) -> NodeSchema {
        let side = || json!({"default": 0, "min": 0, "max": 16384, "step": 8});
        NodeSchema::new("ImagePadForOutpaint", "image/transform")
            .display(Some("Pad Image for Outpainting"))
            .aliases(&["extend canvas", "expand image"])
            .required("image", "IMAGE", json!({}))
            .required("left", "INT", side())
            .required("top", "INT", side())
            .required("right", "INT", side())
            .required("bottom", "INT", side())
            .required("feathering", "INT", json!({"default": 40, "min": 0, "max": 16384, "step": 1, "advanced": true}))
            .output("IMAGE")
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let (left, top) = (usize_of(inputs, "left")?, usize_of(inputs, "top")?);
        let (right, bottom) = (usize_of(inputs, "right")?, usize_of(inputs, "bottom")?);
        let feathering = usize_of(inputs, "feathering")?;
        let (b, h, w, c) = img.dims4();
        let (nh, nw) = (h + top + bottom, w + left + right);
        let mut out = Array::full(vec![b, nh, nw, c], 0.5);
        for bi in 0..b {
            for y in 0..h {
                let src = ((bi * h + y) * w) * c;
                let dst = ((bi * nh + y + top) * nw + left) * c;
                out.data[dst..dst + w * c].copy_from_slice(&img.data[src..src + w * c]);
            }
        }
        let mut mask = Array::full(vec![1, nh, nw], 1.0);
        let feather = feathering > 0 && feathering * 2 < h && feathering * 2 < w;
        for i in 0..h {
            for j in 0..w {
                let mut v = 0.0f32;
                if feather {
                    let dt = if top != 0 { i } else { h };
                    let db = if bottom != 0 { h - i } else { h };
                    let dl = if left != 0 { j } else { w };
                    let dr = if right != 0 { w - j } else { w };
                    let d = dt.min(db).min(dl).min(dr);
                    if d < feathering {
                        let t = (feathering - d) as f64 / feathering as f64;
                        v = (t * t) as f32;
                    }
                }
                mask.data[(i + top) * nw + j + left] = v;
            }
        }
        Ok(Outputs::new(vec![tensor_value(out)?, tensor_value(mask)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn pad(l: i64, t: i64, r: i64, b: i64, f: i64, shape: &[usize], px: &[f32]) -> (Array, Array) {
        let o = run(
            &ImagePadForOutpaint,
            inputs(vec![
                ("image", tval(shape, px)),
                ("left", j(json!(l))),
                ("top", j(json!(t))),
                ("right", j(json!(r))),
                ("bottom", j(json!(b))),
                ("feathering", j(json!(f))),
            ]),
        )
        .unwrap();
        (out(&o, 0), out(&o, 1))
    }

    #[test]
    fn pads_2x3_without_feather() {
        let (img, mask) = pad(1, 0, 0, 1, 0, &[1, 2, 3, 1], &[1., 2., 3., 4., 5., 6.]);
        assert_eq!(img.shape, vec![1, 3, 4, 1]);
        assert_eq!(img.data, vec![0.5, 1., 2., 3., 0.5, 4., 5., 6., 0.5, 0.5, 0.5, 0.5]);
        assert_eq!(mask.data, vec![1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 1., 1.]);
    }

    #[test]
    fn feather_ramp() {
        // 5x5 image, left pad 1, feathering 2 (2*2 < 5): column j has d = j.
        let (_, mask) = pad(1, 0, 0, 0, 2, &[1, 5, 5, 1], &[0.0; 25]);
        assert_eq!(mask.shape, vec![1, 5, 6]);
        let row: Vec<f32> = mask.data[..6].to_vec();
        assert_eq!(row, vec![1.0, 1.0, 0.25, 0.0, 0.0, 0.0]);
        // Right pad: dr = w - j, so the last column has d = 1.
        let (_, mask) = pad(0, 0, 1, 0, 2, &[1, 5, 5, 1], &[0.0; 25]);
        assert_eq!(mask.data[..6].to_vec(), vec![0.0, 0.0, 0.0, 0.0, 0.25, 1.0]);
    }
}
