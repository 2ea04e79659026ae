//! `ImageBatch`: concatenates two image batches (the second resized to match).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::values::{image, tensor_value};

/// `ImageBatch` (`nodes.py`, deprecated): image2 resized bilinear + center crop if needed.
pub struct ImageBatch;

impl Node for ImageBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageBatch", "image/batch")
            .display(Some("Batch Images (DEPRECATED)"))
            .deprecated()
            .aliases(&["combine images", "merge images", "stack images"])
            .required("image1", "IMAGE", json!({}))
            .required("image2", "IMAGE", json!({}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let a = image(inputs, "image1")?;
        let mut b = image(inputs, "image2")?;
        let (_, h, w, c) = a.dims4();
        if b.shape[1..] != a.shape[1..] {
            b = common_upscale(&b.nhwc_to_nchw(), w, h, Method::Bilinear, true)?.nchw_to_nhwc();
        }
        if b.shape[3] != c {
            return Err(NodeError::invalid_input(format!(
                "Sizes of tensors must match except in dimension 0. Expected size {c} but got size {} for tensor number 1 in the list.",
                b.shape[3]
            )));
        }
        Ok(Outputs::new(vec![tensor_value(Array::concat_batch(&[&a, &b]))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn concatenates_and_resizes() {
        let a = tval(&[1, 1, 2, 1], &[0.1, 0.2]);
        let b = tval(&[1, 1, 4, 1], &[0., 1., 2., 3.]);
        let o = out(&run(&ImageBatch, inputs(vec![("image1", a), ("image2", b)])).unwrap(), 0);
        assert_eq!(o.shape, vec![2, 1, 2, 1]);
        // 1x4 -> 1x2 with center crop (aspect 4 vs 2: x = round((4 - 2)/2) = 1 -> cols 1..3 = [1,2]),
        // then bilinear 2->2 is the identity.
        assert_close(&o.data, &[0.1, 0.2, 1., 2.]);
    }
}
