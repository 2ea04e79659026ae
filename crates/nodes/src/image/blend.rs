//! `ImageBlend`: blends two images with one of six modes.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::values::{image, tensor_value};

/// `ImageBlend` (`comfy_extras.nodes_post_processing`, V3).
pub struct ImageBlend;

const MODES: [&str; 6] = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"];

impl Node for ImageBlend {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageBlend", "image/filters")
            .v3()
            .display(Some("Blend Images"))
            .module("comfy_extras.nodes_post_processing")
            .aliases(&["mix images"])
            .essentials("Image Tools")
            .required("image1", "IMAGE", json!({}))
            .required("image2", "IMAGE", json!({}))
            .required("blend_factor", "FLOAT", json!({"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}))
            .push_input(
                Section::Required,
                "blend_mode",
                InputType::ComboV3(MODES.iter().map(|m| json!(m)).collect()),
                json!({}),
            )
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let a = image(inputs, "image1")?;
        let mut b = image(inputs, "image2")?;
        let f = inputs.f64("blend_factor")? as f32;
        let mode = inputs.str("blend_mode")?;
        let op: fn(f32, f32) -> f32 = match mode {
            "normal" => |_, b| b,
            "multiply" => |a, b| a * b,
            "screen" => |a, b| 1.0 - (1.0 - a) * (1.0 - b),
            "overlay" => |a, b| if a <= 0.5 { 2.0 * a * b } else { 1.0 - 2.0 * (1.0 - a) * (1.0 - b) },
            "soft_light" => |a, b| {
                if b <= 0.5 {
                    a - (1.0 - 2.0 * b) * a * (1.0 - a)
                } else {
                    let g = if a <= 0.25 { ((16.0 * a - 12.0) * a + 4.0) * a } else { a.sqrt() };
                    a + (2.0 * b - 1.0) * (g - a)
                }
            },
            "difference" => |a, b| a - b,
            other => return Err(NodeError::invalid_input(format!("Unsupported blend mode: {other}"))),
        };
        let (ab, h, w, c) = a.dims4();
        if a.shape != b.shape {
            b = common_upscale(&b.nhwc_to_nchw(), w, h, Method::Bicubic, true)?.nchw_to_nhwc();
        }
        let bb = b.shape[0];
        if b.shape[3] != c || (bb != ab && bb != 1 && ab != 1) {
            return Err(NodeError::invalid_input(format!(
                "The size of tensor a ({:?}) must match the size of tensor b ({:?})",
                a.shape, b.shape
            )));
        }
        let n = ab.max(bb);
        let per = h * w * c;
        let mut out = Vec::with_capacity(n * per);
        for i in 0..n {
            let pa = &a.data[(i % ab) * per..(i % ab + 1) * per];
            let pb = &b.data[(i % bb) * per..(i % bb + 1) * per];
            out.extend(pa.iter().zip(pb).map(|(&x, &y)| (x * (1.0 - f) + op(x, y) * f).clamp(0.0, 1.0)));
        }
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![n, h, w, c], out))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn blend(mode: &str, f: f64, a: &[f32], b: &[f32]) -> Vec<f32> {
        let n = a.len();
        let i = inputs(vec![
            ("image1", tval(&[1, 1, n, 1], a)),
            ("image2", tval(&[1, 1, n, 1], b)),
            ("blend_factor", j(json!(f))),
            ("blend_mode", j(json!(mode))),
        ]);
        out(&run(&ImageBlend, i).unwrap(), 0).data
    }

    #[test]
    fn modes() {
        let a = [0.2, 0.8, 0.1];
        let b = [0.5, 0.4, 0.9];
        assert_close(&blend("normal", 0.5, &a, &b), &[0.35, 0.6, 0.5]);
        assert_close(&blend("multiply", 1.0, &a, &b), &[0.1, 0.32, 0.09]);
        assert_close(&blend("screen", 1.0, &a, &b), &[0.6, 0.88, 0.91]);
        assert_close(&blend("overlay", 1.0, &a, &b), &[0.2, 1.0 - 2.0 * 0.2 * 0.6, 0.18]);
        // soft_light: b<=.5 -> a-(1-2b)a(1-a); b>.5 with a<=.25 -> g = ((16a-12)a+4)a.
        let g = ((16.0 * 0.1 - 12.0) * 0.1 + 4.0) * 0.1;
        assert_close(&blend("soft_light", 1.0, &a, &b), &[0.2, 0.8 - 0.2 * 0.8 * 0.2, 0.1 + 0.8 * (g - 0.1)]);
        // difference clamps at 0.
        assert_close(&blend("difference", 1.0, &a, &b), &[0.0, 0.4, 0.0]);
    }
}
