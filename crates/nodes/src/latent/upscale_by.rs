//! `LatentUpscaleBy`: resizes latents by a factor.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use comfy_graph::Section;

use super::upscale::{latent_methods, resize_latent};
use crate::ops::array::py_round;
use crate::ops::resample::Method;
use crate::values::{latent, latent_value};

/// `LatentUpscaleBy` (`nodes.py`): `round(w·s) x round(h·s)` latent pixels, no crop.
pub struct LatentUpscaleBy;

impl Node for LatentUpscaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentUpscaleBy", "model/latent")
            .display(Some("Upscale Latent By"))
            .aliases(&["enlarge latent", "resize latent", "scale latent"])
            .required("samples", "LATENT", json!({}))
            .push_input(Section::Required, "upscale_method", latent_methods(), json!({}))
            .required("scale_by", "FLOAT", json!({"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let method = Method::parse(inputs.str("upscale_method")?)?;
        let s = inputs.f64("scale_by")?;
        let dims = l.samples.dims();
        let (h, w) = (dims[dims.len() - 2] as f64, dims[dims.len() - 1] as f64);
        let (nw, nh) = (py_round(w * s).max(0) as usize, py_round(h * s).max(0) as usize);
        Ok(Outputs::new(vec![latent_value(resize_latent(l, nw, nh, method, false)?)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Array;
    use crate::values::testing::*;

    #[test]
    fn scales_with_bislerp_and_bilinear() {
        // 2 channels, 1x2 latent: columns (1,0) and (0,2); x1.5 -> round(3)=3 wide, round(1.5)=2 high.
        let i = inputs(vec![
            ("samples", lval(&[1, 2, 1, 2], &[1., 0., 0., 2.])),
            ("upscale_method", j(json!("bislerp"))),
            ("scale_by", j(json!(1.5))),
        ]);
        let l = out_latent(&run(&LatentUpscaleBy, i).unwrap(), 0);
        assert_eq!(l.samples.dims(), &[1, 2, 2, 3]);
        let a = Array::from_tensor(&l.samples).unwrap();
        let w = std::f32::consts::FRAC_PI_4.sin() * 1.5;
        assert_close(&a.data[..3], &[1.0, w, 0.0]);
        assert_close(&a.data[6..9], &[0.0, w, 2.0]);
        let i = inputs(vec![
            ("samples", lval(&[1, 1, 1, 2], &[0., 1.])),
            ("upscale_method", j(json!("bilinear"))),
            ("scale_by", j(json!(2.0))),
        ]);
        let a = Array::from_tensor(&out_latent(&run(&LatentUpscaleBy, i).unwrap(), 0).samples).unwrap();
        // 1x2 -> 2x4: src x = 0.5*(d+0.5)-0.5 = -0.25(->0), 0.25, 0.75, 1.25(->1)
        assert_close(&a.data, &[0., 0.25, 0.75, 1., 0., 0.25, 0.75, 1.]);
    }
}
