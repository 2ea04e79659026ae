//! `InvertMask`: `1 - mask`.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::values::{mask, tensor_value};

/// `InvertMask` (`comfy_extras.nodes_mask`, V3).
pub struct InvertMask;

impl Node for InvertMask {
    fn schema(&self) -> NodeSchema {
        super::v3("InvertMask", "Invert Mask", Some(&["reverse mask", "flip mask"]))
            .required("mask", "MASK", json!({}))
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        Ok(Outputs::new(vec![tensor_value(mask(inputs, "mask")?.map(|v| 1.0 - v))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn inverts() {
        let o = run(&InvertMask, inputs(vec![("mask", tval(&[2, 3], &[0., 0.25, 1., 0.5, 0.75, 0.1]))])).unwrap();
        let m = out(&o, 0);
        assert_eq!(m.shape, vec![1, 2, 3]);
        assert_close(&m.data, &[1., 0.75, 0., 0.5, 0.25, 0.9]);
    }
}
