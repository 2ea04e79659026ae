//! `FeatherMask`: linear fade of the mask towards chosen edges.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::values::{mask, tensor_value, usize_of};

/// `FeatherMask` (`comfy_extras.nodes_mask`, V3). Keeps ComfyUI's quirk: the right/bottom
/// loops index `-x`, so their first step (x = 0) scales column/row 0, not the last one.
pub struct FeatherMask;

impl Node for FeatherMask {
    fn schema(&self) -> NodeSchema {
        let side = || json!({"default": 0, "min": 0, "max": 16384, "step": 1});
        super::v3("FeatherMask", "Feather Mask", Some(&["soft edge mask", "blur mask edges", "gradient mask edge"]))
            .required("mask", "MASK", json!({}))
            .required("left", "INT", side())
            .required("top", "INT", side())
            .required("right", "INT", side())
            .required("bottom", "INT", side())
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut m = mask(inputs, "mask")?;
        let (b, h, w) = m.dims3();
        let left = usize_of(inputs, "left")?.min(w);
        let right = usize_of(inputs, "right")?.min(w);
        let top = usize_of(inputs, "top")?.min(h);
        let bottom = usize_of(inputs, "bottom")?.min(h);
        // Python's negative index: -0 is 0, -x is n - x.
        let neg = |x: usize, n: usize| if x == 0 { 0 } else { n - x };
        let mut scale_col = |col: usize, f: f32| {
            for bi in 0..b {
                for y in 0..h {
                    m.data[(bi * h + y) * w + col] *= f;
                }
            }
        };
        for x in 0..left {
            scale_col(x, ((x as f64 + 1.0) / left as f64) as f32);
        }
        for x in 0..right {
            scale_col(neg(x, w), ((x as f64 + 1.0) / right as f64) as f32);
        }
        let mut scale_row = |row: usize, f: f32| {
            for bi in 0..b {
                for v in &mut m.data[(bi * h + row) * w..(bi * h + row + 1) * w] {
                    *v *= f;
                }
            }
        };
        for y in 0..top {
            scale_row(y, ((y as f64 + 1.0) / top as f64) as f32);
        }
        for y in 0..bottom {
            scale_row(neg(y, h), ((y as f64 + 1.0) / bottom as f64) as f32);
        }
        Ok(Outputs::new(vec![tensor_value(m)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn feather(l: i64, t: i64, r: i64, b: i64) -> Vec<f32> {
        let i = inputs(vec![
            ("mask", tval(&[1, 2, 4], &[1.0; 8])),
            ("left", j(json!(l))),
            ("top", j(json!(t))),
            ("right", j(json!(r))),
            ("bottom", j(json!(b))),
        ]);
        out(&run(&FeatherMask, i).unwrap(), 0).data
    }

    #[test]
    fn ramps_and_quirk() {
        assert_close(&feather(2, 0, 0, 0), &[0.5, 1., 1., 1., 0.5, 1., 1., 1.]);
        // right = 2: x=0 scales column 0 by 1/2 (quirk), x=1 scales column 3 by 2/2.
        assert_close(&feather(0, 0, 2, 0), &[0.5, 1., 1., 1., 0.5, 1., 1., 1.]);
        // right = 3: column 0 by 1/3, column 3 by 2/3, column 2 by 3/3.
        let t = 1.0 / 3.0;
        assert_close(&feather(0, 0, 3, 0), &[t, 1., 1., 2. * t, t, 1., 1., 2. * t]);
        // top = 2: row 0 by 1/2.
        assert_close(&feather(0, 2, 0, 0), &[0.5, 0.5, 0.5, 0.5, 1., 1., 1., 1.]);
    }
}
