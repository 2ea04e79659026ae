//! `SolidMask`: a single mask filled with one value.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::values::{tensor_value, usize_of};

/// `SolidMask` (`comfy_extras.nodes_mask`, V3): `[1,H,W]` filled with `value`.
pub struct SolidMask;

impl Node for SolidMask {
    fn schema(&self) -> NodeSchema {
        super::v3("SolidMask", "Create Solid Mask", None)
            .required("value", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}))
            .required("width", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .required("height", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let v = inputs.f64("value")? as f32;
        let (w, h) = (usize_of(inputs, "width")?, usize_of(inputs, "height")?);
        Ok(Outputs::new(vec![tensor_value(Array::full(vec![1, h, w], v))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn fills() {
        let o =
            run(&SolidMask, inputs(vec![("value", j(json!(0.25))), ("width", j(json!(3))), ("height", j(json!(2)))]))
                .unwrap();
        let m = out(&o, 0);
        assert_eq!(m.shape, vec![1, 2, 3]);
        assert_eq!(m.data, vec![0.25; 6]);
    }
}
