//! `ImageBlur`: Gaussian blur with ComfyUI's relative-sigma kernel and reflect padding.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::filter::{conv_reflect, gaussian_kernel};
use crate::values::{image, tensor_value, usize_of};

/// `ImageBlur` (`comfy_extras.nodes_post_processing`, V3).
pub struct ImageBlur;

impl Node for ImageBlur {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageBlur", "image/filters")
            .v3()
            .display(Some("Blur Image"))
            .module("comfy_extras.nodes_post_processing")
            .required("image", "IMAGE", json!({}))
            .required("blur_radius", "INT", json!({"default": 1, "min": 1, "max": 31, "step": 1}))
            .required("sigma", "FLOAT", json!({"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let r = usize_of(inputs, "blur_radius")?;
        let sigma = inputs.f64("sigma")? as f32;
        if r == 0 {
            return Ok(Outputs::new(vec![tensor_value(img)?]));
        }
        let kernel = gaussian_kernel(2 * r + 1, sigma);
        Ok(Outputs::new(vec![tensor_value(conv_reflect(&img, &kernel, r)?)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn blurs_2x3_with_reflect_padding() {
        // One channel, 2x3: [[0,0,0],[0,1,0]] -> radius 1, sigma 1.
        let o = run(
            &ImageBlur,
            inputs(vec![
                ("image", tval(&[1, 2, 3, 1], &[0., 0., 0., 0., 1., 0.])),
                ("blur_radius", j(json!(1))),
                ("sigma", j(json!(1.0))),
            ]),
        )
        .unwrap();
        let (c, e, m) = ((-1f32).exp(), (-0.5f32).exp(), 1f32);
        let s = 4.0 * c + 4.0 * e + m;
        // Reflect pad: row -1 = row 1, row 2 = row 0; col -1 = col 1, col 3 = col 1.
        // Pixel (0,0): neighbours containing the 1 at (1,1): kernel (dy,dx) = (+1,+1) and (+1,-1 reflected) -> 2 corners.
        // Pixel (0,1): the 1 at dy=+1, dx=0 -> edge weight.
        // Pixel (1,1): centre m, plus reflected row 2 = row 0 (zeros) -> m.
        // Pixel (1,0): dx=+1 -> e, and dx=-1 reflects to col 1 -> e.
        let expect = [2.0 * c / s, e / s, 2.0 * c / s, 2.0 * e / s, m / s, 2.0 * e / s];
        // Row 0 also sees row -1 = row 1 (the 1 again): doubles its contributions.
        let expect = [expect[0] * 2.0, expect[1] * 2.0, expect[2] * 2.0, expect[3], expect[4], expect[5]];
        assert_close(&out(&o, 0).data, &expect);
    }
}
