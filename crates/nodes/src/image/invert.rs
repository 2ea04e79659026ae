//! `ImageInvert`: `1 - image`.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::values::{image, tensor_value};

/// `ImageInvert` (`nodes.py`).
pub struct ImageInvert;

impl Node for ImageInvert {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageInvert", "image/color")
            .display(Some("Invert Image Colors"))
            .aliases(&["reverse colors"])
            .essentials("Image Tools")
            .required("image", "IMAGE", json!({}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        Ok(Outputs::new(vec![tensor_value(image(inputs, "image")?.map(|v| 1.0 - v))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn inverts() {
        let o =
            run(&ImageInvert, inputs(vec![("image", tval(&[1, 1, 2, 3], &[0., 0.25, 1., 0.5, 0.75, 0.1]))])).unwrap();
        assert_close(&out(&o, 0).data, &[1., 0.75, 0., 0.5, 0.25, 0.9]);
    }
}
