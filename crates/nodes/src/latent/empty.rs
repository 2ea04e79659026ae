//! `EmptyLatentImage`: a batch of all-zero 4-channel latents.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent_value, usize_of};

/// `EmptyLatentImage` (`nodes.py`): zeros `[batch, 4, height/8, width/8]`.
pub struct EmptyLatentImage;

impl Node for EmptyLatentImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyLatentImage", "model/latent")
            .display(Some("Empty Latent Image"))
            .description("Create a new batch of empty latent images to be denoised via sampling.")
            .aliases(&["empty", "empty latent", "new latent", "create latent", "blank latent", "blank"])
            .required("width", "INT", json!({"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The width of the latent images in pixels."}))
            .required("height", "INT", json!({"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The height of the latent images in pixels."}))
            .required("batch_size", "INT", json!({"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."}))
            .named_output("LATENT", "LATENT", Some("The empty latent image batch."))
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let (w, h) = (usize_of(inputs, "width")?, usize_of(inputs, "height")?);
        let b = usize_of(inputs, "batch_size")?;
        let samples = Array::full(vec![b, 4, h / 8, w / 8], 0.0).into_tensor()?;
        Ok(Outputs::new(vec![latent_value(Latent::new(samples))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn zeros() {
        let o = run(
            &EmptyLatentImage,
            inputs(vec![("width", j(json!(20))), ("height", j(json!(16))), ("batch_size", j(json!(2)))]),
        )
        .unwrap();
        let l = out_latent(&o, 0);
        assert_eq!(l.samples.dims(), &[2, 4, 2, 2]);
        assert!(Array::from_tensor(&l.samples).unwrap().data.iter().all(|&v| v == 0.0));
        assert!(l.noise_mask.is_none() && l.batch_index.is_none());
    }
}
