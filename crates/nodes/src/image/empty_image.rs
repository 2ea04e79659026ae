//! `EmptyImage`: a batch of images filled with one RGB colour.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::values::{tensor_value, usize_of};

/// `EmptyImage` (`nodes.py`).
pub struct EmptyImage;

impl Node for EmptyImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyImage", "image")
            .display(Some("Empty Image"))
            .aliases(&[])
            .required("width", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .required("height", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .required("batch_size", "INT", json!({"default": 1, "min": 1, "max": 4096}))
            .required("color", "INT", json!({"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let w = usize_of(inputs, "width")?;
        let h = usize_of(inputs, "height")?;
        let b = usize_of(inputs, "batch_size")?;
        let color = inputs.i64("color")?;
        let rgb = [
            ((color >> 16) & 0xFF) as f32 / 255.0,
            ((color >> 8) & 0xFF) as f32 / 255.0,
            (color & 0xFF) as f32 / 255.0,
        ];
        let n = b * h * w;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&rgb);
        }
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![b, h, w, 3], data))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn fills_color() {
        let o = run(
            &EmptyImage,
            inputs(vec![
                ("width", j(json!(3))),
                ("height", j(json!(2))),
                ("batch_size", j(json!(2))),
                ("color", j(json!(0xFF8000))),
            ]),
        )
        .unwrap();
        let a = out(&o, 0);
        assert_eq!(a.shape, vec![2, 2, 3, 3]);
        assert_eq!(&a.data[..3], &[1.0, 128.0 / 255.0, 0.0]);
        assert!(a.data.chunks(3).all(|p| p == [1.0, 128.0 / 255.0, 0.0]));
    }
}
