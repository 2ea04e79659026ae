//! `ImageScaleBy` ("Upscale Image By"): resize by a factor.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use super::scale::image_methods;
use crate::ops::array::py_round;
use crate::ops::resample::{common_upscale, Method};
use crate::values::{image, tensor_value};

/// `ImageScaleBy` (`nodes.py`): size `round(w·s) x round(h·s)`, no crop.
pub struct ImageScaleBy;

impl Node for ImageScaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScaleBy", "image/upscaling")
            .display(Some("Upscale Image By"))
            .aliases(&[])
            .essentials("Image Tools")
            .required("image", "IMAGE", json!({}))
            .push_input(Section::Required, "upscale_method", image_methods(), json!({}))
            .required("scale_by", "FLOAT", json!({"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let method = Method::parse(inputs.str("upscale_method")?)?;
        let s = inputs.f64("scale_by")?;
        let (_, h, w, _) = img.dims4();
        let nw = py_round(w as f64 * s).max(0) as usize;
        let nh = py_round(h as f64 * s).max(0) as usize;
        let out = common_upscale(&img.nhwc_to_nchw(), nw, nh, method, false)?;
        Ok(Outputs::new(vec![tensor_value(out.nchw_to_nhwc())?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn scales_2x3_by_factor() {
        let px = [1., 2., 3., 4., 5., 6.];
        let run_by = |m: &str, s: f64| {
            out(
                &run(
                    &ImageScaleBy,
                    inputs(vec![
                        ("image", tval(&[1, 2, 3, 1], &px)),
                        ("upscale_method", j(json!(m))),
                        ("scale_by", j(json!(s))),
                    ]),
                )
                .unwrap(),
                0,
            )
        };
        let o = run_by("nearest-exact", 2.0);
        assert_eq!(o.shape, vec![1, 4, 6, 1]);
        assert_eq!(&o.data[..6], &[1., 1., 2., 2., 3., 3.]);
        // 0.5: round(1.5) = 2 wide, round(1.0) = 1 high; area windows [0,2),[1,3) over both rows.
        let o = run_by("area", 0.5);
        assert_eq!(o.shape, vec![1, 1, 2, 1]);
        assert_close(&o.data, &[3.0, 4.0]);
    }
}
