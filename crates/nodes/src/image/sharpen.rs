//! `ImageSharpen`: unsharp-style kernel (negated Gaussian, centre adjusted to sum 1).

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::filter::{conv_reflect, gaussian_kernel};
use crate::values::{image, tensor_value, usize_of};

/// `ImageSharpen` (`comfy_extras.nodes_post_processing`, V3).
pub struct ImageSharpen;

/// ComfyUI's sharpen kernel: `-alpha·10·gauss`, centre tap adjusted so the sum is 1.
pub fn sharpen_kernel(r: usize, sigma: f32, alpha: f32) -> Vec<f32> {
    let k = 2 * r + 1;
    let mut kernel: Vec<f32> = gaussian_kernel(k, sigma).iter().map(|v| v * -(alpha * 10.0)).collect();
    let sum: f32 = kernel.iter().sum();
    let c = r * k + r;
    kernel[c] = kernel[c] - sum + 1.0;
    kernel
}

impl Node for ImageSharpen {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageSharpen", "image/filters")
            .v3()
            .display(Some("Sharpen Image"))
            .module("comfy_extras.nodes_post_processing")
            .required("image", "IMAGE", json!({}))
            .required("sharpen_radius", "INT", json!({"advanced": true, "default": 1, "min": 1, "max": 31, "step": 1}))
            .required(
                "sigma",
                "FLOAT",
                json!({"advanced": true, "default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
            )
            .required("alpha", "FLOAT", json!({"advanced": true, "default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let r = usize_of(inputs, "sharpen_radius")?;
        if r == 0 {
            return Ok(Outputs::new(vec![tensor_value(img)?]));
        }
        let kernel = sharpen_kernel(r, inputs.f64("sigma")? as f32, inputs.f64("alpha")? as f32);
        let out = conv_reflect(&img, &kernel, r)?.map(|v| v.clamp(0.0, 1.0));
        Ok(Outputs::new(vec![tensor_value(out)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn sharpens_2x3() {
        let k = sharpen_kernel(1, 1.0, 1.0);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let g = gaussian_kernel(3, 1.0);
        assert!((k[0] + 10.0 * g[0]).abs() < 1e-6);
        assert!((k[4] - (11.0 - 10.0 * g[4])).abs() < 1e-4);
        // Constant image stays constant (kernel sums to 1).
        let o = run(
            &ImageSharpen,
            inputs(vec![
                ("image", tval(&[1, 2, 3, 1], &[0.5; 6])),
                ("sharpen_radius", j(json!(1))),
                ("sigma", j(json!(1.0))),
                ("alpha", j(json!(1.0))),
            ]),
        )
        .unwrap();
        assert_close(&out(&o, 0).data, &[0.5; 6]);
        // Small bump: pixel (1,1)=0.6 over 0.5: centre = 0.5 + 0.1*k[4], clamped.
        let mut px = [0.5f32; 6];
        px[4] = 0.51;
        let o = run(
            &ImageSharpen,
            inputs(vec![
                ("image", tval(&[1, 2, 3, 1], &px)),
                ("sharpen_radius", j(json!(1))),
                ("sigma", j(json!(1.0))),
                ("alpha", j(json!(0.1))),
            ]),
        )
        .unwrap();
        let k = sharpen_kernel(1, 1.0, 0.1);
        // (1,1) sees the bump only at the centre (row 2 reflects row 0).
        let e11 = 0.5 + 0.01 * k[4];
        // (0,1) sees it at (dy=+1) and, via reflection of row -1 = row 1, at (dy=-1).
        let e01 = 0.5 + 0.01 * (k[7] + k[1]);
        let o = out(&o, 0);
        assert_close(&[o.data[4], o.data[1]], &[e11.clamp(0.0, 1.0), e01.clamp(0.0, 1.0)]);
    }
}
