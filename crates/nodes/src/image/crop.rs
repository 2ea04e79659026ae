//! `ImageCrop`: a rectangle of every image in the batch.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::array::clip_range;
use crate::values::{image, tensor_value, usize_of};

/// `ImageCrop` (`comfy_extras.nodes_images`, V3, deprecated).
pub struct ImageCrop;

impl Node for ImageCrop {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageCrop", "image/transform")
            .v3()
            .display(Some("Crop Image (DEPRECATED)"))
            .module("comfy_extras.nodes_images")
            .deprecated()
            .aliases(&["trim"])
            .essentials("Image Tools")
            .required("image", "IMAGE", json!({}))
            .required("width", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .required("height", "INT", json!({"default": 512, "min": 1, "max": 16384, "step": 1}))
            .required("x", "INT", json!({"default": 0, "min": 0, "max": 16384, "step": 1}))
            .required("y", "INT", json!({"default": 0, "min": 0, "max": 16384, "step": 1}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let (b, h, w, c) = img.dims4();
        let x = usize_of(inputs, "x")?.min(w.saturating_sub(1));
        let y = usize_of(inputs, "y")?.min(h.saturating_sub(1));
        let (x0, cw) = clip_range(x, usize_of(inputs, "width")?, w);
        let (y0, ch) = clip_range(y, usize_of(inputs, "height")?, h);
        let mut data = Vec::with_capacity(b * ch * cw * c);
        for bi in 0..b {
            for yy in y0..y0 + ch {
                let row = ((bi * h + yy) * w + x0) * c;
                data.extend_from_slice(&img.data[row..row + cw * c]);
            }
        }
        Ok(Outputs::new(vec![tensor_value(crate::ops::Array::new(vec![b, ch, cw, c], data))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn crops_and_clips() {
        let px = [1., 2., 3., 4., 5., 6.];
        let crop = |w: i64, h: i64, x: i64, y: i64| {
            out(
                &run(
                    &ImageCrop,
                    inputs(vec![
                        ("image", tval(&[1, 2, 3, 1], &px)),
                        ("width", j(json!(w))),
                        ("height", j(json!(h))),
                        ("x", j(json!(x))),
                        ("y", j(json!(y))),
                    ]),
                )
                .unwrap(),
                0,
            )
        };
        let o = crop(2, 1, 1, 1);
        assert_eq!((o.shape.clone(), o.data.clone()), (vec![1, 1, 2, 1], vec![5., 6.]));
        // x beyond the image is clamped to W-1; size clipped at the border.
        let o = crop(512, 512, 10, 0);
        assert_eq!((o.shape.clone(), o.data.clone()), (vec![1, 2, 1, 1], vec![3., 6.]));
    }
}
