//! `SetLatentNoiseMask`: attaches an inpainting mask to a latent.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value, mask};

/// `SetLatentNoiseMask` (`nodes.py`): `noise_mask` = mask reshaped to `[-1, 1, H, W]`.
pub struct SetLatentNoiseMask;

impl Node for SetLatentNoiseMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SetLatentNoiseMask", "model/latent")
            .display(Some("Set Latent Noise Mask"))
            .aliases(&[])
            .required("samples", "LATENT", json!({}))
            .required("mask", "MASK", json!({}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let m = mask(inputs, "mask")?;
        let (b, h, w) = m.dims3();
        let nm = Array::new(vec![b, 1, h, w], m.data).into_tensor()?;
        Ok(Outputs::new(vec![latent_value(Latent { noise_mask: Some(nm), ..l.clone() })]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn sets_mask() {
        let i = inputs(vec![
            ("samples", lval(&[1, 4, 1, 1], &[0.; 4])),
            ("mask", tval(&[2, 3], &[0., 1., 0., 1., 0., 1.])),
        ]);
        let o = out_latent(&run(&SetLatentNoiseMask, i).unwrap(), 0);
        let m = Array::from_tensor(o.noise_mask.as_ref().unwrap()).unwrap();
        assert_eq!(m.shape, vec![1, 1, 2, 3]);
        assert_eq!(m.data, vec![0., 1., 0., 1., 0., 1.]);
    }
}
