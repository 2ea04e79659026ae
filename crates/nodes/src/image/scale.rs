//! `ImageScale` ("Upscale Image"): resize to a width/height with a chosen method and crop.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use crate::ops::array::py_round;
use crate::ops::resample::{common_upscale, parse_crop, Method};
use crate::values::{image, tensor_value, usize_of};

/// The methods the image upscale combos offer.
pub fn image_methods() -> InputType {
    InputType::Combo(["nearest-exact", "bilinear", "area", "bicubic", "lanczos"].iter().map(|s| json!(s)).collect())
}

/// `ImageScale` (`nodes.py`).
pub struct ImageScale;

impl Node for ImageScale {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScale", "image/upscaling")
            .display(Some("Upscale Image"))
            .aliases(&["resize", "resize image", "scale image", "image resize", "zoom", "zoom in", "change size"])
            .essentials("Image Tools")
            .required("image", "IMAGE", json!({}))
            .push_input(Section::Required, "upscale_method", image_methods(), json!({}))
            .required("width", "INT", json!({"default": 512, "min": 0, "max": 16384, "step": 1}))
            .required("height", "INT", json!({"default": 512, "min": 0, "max": 16384, "step": 1}))
            .push_input(
                Section::Required,
                "crop",
                InputType::Combo(vec![json!("disabled"), json!("center")]),
                json!({}),
            )
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let method = Method::parse(inputs.str("upscale_method")?)?;
        let crop = parse_crop(inputs.str("crop")?)?;
        let (mut w, mut h) = (usize_of(inputs, "width")?, usize_of(inputs, "height")?);
        if w == 0 && h == 0 {
            return Ok(Outputs::new(vec![tensor_value(img)?]));
        }
        let (_, ih, iw, _) = img.dims4();
        if w == 0 {
            w = py_round(iw as f64 * h as f64 / ih as f64).max(1) as usize;
        } else if h == 0 {
            h = py_round(ih as f64 * w as f64 / iw as f64).max(1) as usize;
        }
        let s = common_upscale(&img.nhwc_to_nchw(), w, h, method, crop)?;
        Ok(Outputs::new(vec![tensor_value(s.nchw_to_nhwc())?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn scale(method: &str, w: i64, h: i64, crop: &str, px: &[f32], shape: &[usize]) -> crate::ops::Array {
        let i = inputs(vec![
            ("image", tval(shape, px)),
            ("upscale_method", j(json!(method))),
            ("width", j(json!(w))),
            ("height", j(json!(h))),
            ("crop", j(json!(crop))),
        ]);
        out(&run(&ImageScale, i).unwrap(), 0)
    }

    #[test]
    fn modes_on_a_2x3_image() {
        // One channel 2x3 image [[1,2,3],[4,5,6]].
        let px = [1., 2., 3., 4., 5., 6.];
        let s = [1, 2, 3, 1];
        // Both zero: unchanged.
        assert_eq!(scale("bilinear", 0, 0, "disabled", &px, &s).data, px.to_vec());
        // Height derived: w=6 -> h = round(2*6/3) = 4.
        let o = scale("nearest-exact", 6, 0, "disabled", &px, &s);
        assert_eq!(o.shape, vec![1, 4, 6, 1]);
        // area to 1x1: mean.
        assert_close(&scale("area", 1, 1, "disabled", &px, &s).data, &[3.5]);
        // bilinear to 1x3: row src = 2*(0.5)-0.5 = 0.5 -> average of the rows.
        assert_close(&scale("bilinear", 3, 1, "disabled", &px, &s).data, &[2.5, 3.5, 4.5]);
        // center crop to 2x2: x = round((3 - 3*(1/1.5))/2) = round(0.5) = 0 (half to even) -> no crop,
        // then nearest-exact 3->2 columns picks 0 and 2.
        assert_close(&scale("nearest-exact", 2, 2, "center", &px, &s).data, &[1., 3., 4., 6.]);
        // bicubic 2x3 -> 2x6 (rows unchanged): column 0 at real = -0.25 -> taps -2..1 clamped.
        let o = scale("bicubic", 6, 2, "disabled", &px, &s);
        let wt = crate::ops::resample::cubic_weights(0.75);
        let e = wt[0] * 1. + wt[1] * 1. + wt[2] * 1. + wt[3] * 2.;
        assert_close(&o.data[..1], &[e]);
        // lanczos (RGB through uint8): same-size width, height halved -> average-ish of rows.
        let rgb: Vec<f32> = (0..18).map(|i| (i as f32 * 14.0 + 0.5) / 255.0).collect();
        let o = scale("lanczos", 3, 1, "disabled", &rgb, &[1, 2, 3, 3]);
        // Two taps with equal weights: (a + b)/2 rounded half up in fixed point.
        let expect: Vec<f32> = (0..9).map(|i| (((i * 14) + (i + 9) * 14 + 1) / 2) as f32 / 255.0).collect();
        assert_close(&o.data, &expect);
    }
}
