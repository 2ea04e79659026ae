//! `LatentBlend`: `s1·f + s2·(1−f)`, resizing the second latent if needed.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value};

/// `LatentBlend` (`nodes.py`, category `experimental` in 0.29).
pub struct LatentBlend;

impl Node for LatentBlend {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentBlend", "experimental")
            .display(Some("Latent Blend"))
            .aliases(&["mix latents", "interpolate latents"])
            .required("samples1", "LATENT", json!({}))
            .required("samples2", "LATENT", json!({}))
            .required("blend_factor", "FLOAT", json!({"default": 0.5, "min": 0, "max": 1, "step": 0.01}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l1 = latent(inputs, "samples1")?;
        let s1 = Array::from_tensor(&l1.samples)?;
        let mut s2 = Array::from_tensor(&latent(inputs, "samples2")?.samples)?;
        let f = inputs.f64("blend_factor")? as f32;
        if s1.shape.len() != 4 || s2.shape.len() != 4 {
            return Err(NodeError::invalid_input("LATENT samples must be [B, C, H, W]"));
        }
        if s1.shape != s2.shape {
            s2 = common_upscale(&s2, s1.shape[3], s1.shape[2], Method::Bicubic, true)?;
        }
        let (b1, b2) = (s1.shape[0], s2.shape[0]);
        if s1.shape[1] != s2.shape[1] || (b1 != b2 && b1 != 1 && b2 != 1) {
            return Err(NodeError::invalid_input(format!(
                "Latent shapes {:?} and {:?} cannot be blended",
                s1.shape, s2.shape
            )));
        }
        let n = b1.max(b2);
        let per: usize = s1.shape[1..].iter().product();
        let mut data = Vec::with_capacity(n * per);
        for i in 0..n {
            let a = &s1.data[(i % b1) * per..(i % b1 + 1) * per];
            let b = &s2.data[(i % b2) * per..(i % b2 + 1) * per];
            data.extend(a.iter().zip(b).map(|(&x, &y)| x * f + y * (1.0 - f)));
        }
        let mut shape = s1.shape.clone();
        shape[0] = n;
        Ok(Outputs::new(vec![latent_value(Latent { samples: Array::new(shape, data).into_tensor()?, ..l1.clone() })]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn blends() {
        let i = inputs(vec![
            ("samples1", lval(&[1, 1, 1, 2], &[1., 2.])),
            ("samples2", lval(&[1, 1, 1, 2], &[3., 6.])),
            ("blend_factor", j(json!(0.25))),
        ]);
        let a = Array::from_tensor(&out_latent(&run(&LatentBlend, i).unwrap(), 0).samples).unwrap();
        assert_close(&a.data, &[2.5, 5.0]);
        // Different size: samples2 (1x1) resized bicubic to 1x2 (constant stays constant).
        let i = inputs(vec![
            ("samples1", lval(&[1, 1, 1, 2], &[1., 2.])),
            ("samples2", lval(&[1, 1, 1, 1], &[3.])),
            ("blend_factor", j(json!(0.5))),
        ]);
        let a = Array::from_tensor(&out_latent(&run(&LatentBlend, i).unwrap(), 0).samples).unwrap();
        assert_close(&a.data, &[2.0, 2.5]);
    }
}
