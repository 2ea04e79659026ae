//! `CropMask`: a rectangle of every mask in the batch.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::array::clip_range;
use crate::values::{mask, tensor_value, usize_of};

/// `CropMask` (`comfy_extras.nodes_mask`, V3): `mask[:, y:y+h, x:x+w]` (clipped).
pub struct CropMask;

impl Node for CropMask {
    fn schema(&self) -> NodeSchema {
        let pos = || json!({"default": 0, "min": 0, "max": 16384, "step": 1});
        let size = || json!({"default": 512, "min": 1, "max": 16384, "step": 1});
        super::v3("CropMask", "Crop Mask", Some(&["cut mask", "extract mask region", "mask slice"]))
            .required("mask", "MASK", json!({}))
            .required("x", "INT", pos())
            .required("y", "INT", pos())
            .required("width", "INT", size())
            .required("height", "INT", size())
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = mask(inputs, "mask")?;
        let (_, h, w) = m.dims3();
        let (x0, cw) = clip_range(usize_of(inputs, "x")?, usize_of(inputs, "width")?, w);
        let (y0, ch) = clip_range(usize_of(inputs, "y")?, usize_of(inputs, "height")?, h);
        Ok(Outputs::new(vec![tensor_value(m.crop_last2(y0, x0, ch, cw))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn crops() {
        let i = inputs(vec![
            ("mask", tval(&[1, 2, 3], &[1., 2., 3., 4., 5., 6.])),
            ("x", j(json!(1))),
            ("y", j(json!(0))),
            ("width", j(json!(5))),
            ("height", j(json!(1))),
        ]);
        let m = out(&run(&CropMask, i).unwrap(), 0);
        assert_eq!((m.shape, m.data), (vec![1, 1, 2], vec![2., 3.]));
    }
}
