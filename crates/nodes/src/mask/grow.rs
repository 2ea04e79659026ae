//! `GrowMask`: grey dilation or erosion with a 3x3 footprint, |expand| times.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::values::{mask, tensor_value};

/// `GrowMask` (`comfy_extras.nodes_mask`, V3). Tapered corners use a cross footprint.
pub struct GrowMask;

impl Node for GrowMask {
    fn schema(&self) -> NodeSchema {
        super::v3("GrowMask", "Grow Mask", Some(&["expand mask", "shrink mask"]))
            .required("mask", "MASK", json!({}))
            .required("expand", "INT", json!({"default": 0, "min": -16384, "max": 16384, "step": 1}))
            .required("tapered_corners", "BOOLEAN", json!({"advanced": true, "default": true}))
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut m = mask(inputs, "mask")?;
        let expand = inputs.i64("expand")?;
        let tapered = inputs.bool("tapered_corners")?;
        for _ in 0..expand.unsigned_abs() {
            ctx.cancel.check()?;
            m = morph(&m, expand > 0, tapered);
        }
        Ok(Outputs::new(vec![tensor_value(m)?]))
    }
}

/// One grey dilation (`max`) or erosion (`min`) step; out-of-bounds neighbours are ignored
/// (scipy's default `reflect` border repeats the edge pixel, which never changes the result).
fn morph(m: &Array, dilate: bool, tapered: bool) -> Array {
    let (b, h, w) = m.dims3();
    let mut out = m.clone();
    for bi in 0..b {
        for y in 0..h {
            for x in 0..w {
                let mut acc = m.data[(bi * h + y) * w + x];
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        if tapered && dy != 0 && dx != 0 {
                            continue;
                        }
                        let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                        if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 {
                            continue;
                        }
                        let v = m.data[(bi * h + yy as usize) * w + xx as usize];
                        acc = if dilate { acc.max(v) } else { acc.min(v) };
                    }
                }
                out.data[(bi * h + y) * w + x] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn grow(expand: i64, tapered: bool, px: &[f32]) -> Vec<f32> {
        let o = run(
            &GrowMask,
            inputs(vec![
                ("mask", tval(&[1, 3, 3], px)),
                ("expand", j(json!(expand))),
                ("tapered_corners", j(json!(tapered))),
            ]),
        )
        .unwrap();
        out(&o, 0).data
    }

    #[test]
    fn dilate_and_erode() {
        let dot = [0., 0., 0., 0., 1., 0., 0., 0., 0.];
        assert_eq!(grow(1, true, &dot), vec![0., 1., 0., 1., 1., 1., 0., 1., 0.]);
        assert_eq!(grow(1, false, &dot), vec![1.; 9]);
        assert_eq!(grow(2, true, &dot), vec![1.; 9]);
        let full = [1., 1., 1., 1., 1., 1., 1., 1., 0.5];
        assert_eq!(grow(-1, true, &full), vec![1., 1., 1., 1., 1., 0.5, 1., 0.5, 0.5]);
        assert_eq!(grow(0, true, &dot), dot.to_vec());
    }
}
