//! `MaskToImage`: a mask replicated into three image channels.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::values::{mask, tensor_value};

/// `MaskToImage` (`comfy_extras.nodes_mask`, V3): `[B,H,W]` -> `[B,H,W,3]`.
pub struct MaskToImage;

impl Node for MaskToImage {
    fn schema(&self) -> NodeSchema {
        super::v3("MaskToImage", "Convert Mask to Image", Some(&["convert mask"]))
            .required("mask", "MASK", json!({}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = mask(inputs, "mask")?;
        let (b, h, w) = m.dims3();
        let data = m.data.iter().flat_map(|&v| [v, v, v]).collect();
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![b, h, w, 3], data))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn replicates() {
        let o = run(&MaskToImage, inputs(vec![("mask", tval(&[1, 1, 2], &[0.2, 0.7]))])).unwrap();
        let a = out(&o, 0);
        assert_eq!(a.shape, vec![1, 1, 2, 3]);
        assert_close(&a.data, &[0.2, 0.2, 0.2, 0.7, 0.7, 0.7]);
    }
}
