//! `ImageToMask`: one image channel as a mask.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use comfy_graph::{InputType, Section};

use crate::ops::Array;
use crate::values::{image, tensor_value};

/// `ImageToMask` (`comfy_extras.nodes_mask`, V3).
pub struct ImageToMask;

const CHANNELS: [&str; 4] = ["red", "green", "blue", "alpha"];

impl Node for ImageToMask {
    fn schema(&self) -> NodeSchema {
        super::v3("ImageToMask", "Convert Image to Mask", Some(&["extract channel", "channel to mask"]))
            .required("image", "IMAGE", json!({}))
            .push_input(
                Section::Required,
                "channel",
                InputType::ComboV3(CHANNELS.iter().map(|c| json!(c)).collect()),
                json!({}),
            )
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let img = image(inputs, "image")?;
        let name = inputs.str("channel")?;
        let ch = CHANNELS
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| NodeError::invalid_input(format!("Unknown channel: {name}")))?;
        let (b, h, w, c) = img.dims4();
        if ch >= c {
            return Err(NodeError::new(
                comfy_graph::ErrorCategory::InvalidInput,
                "IndexError",
                format!("index {ch} is out of bounds for dimension 3 with size {c}"),
            ));
        }
        let data = img.data.chunks_exact(c).map(|px| px[ch]).collect();
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![b, h, w], data))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn picks_channel() {
        let img = || tval(&[1, 1, 2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        let o = run(&ImageToMask, inputs(vec![("image", img()), ("channel", j(json!("green")))])).unwrap();
        assert_eq!(out(&o, 0).shape, vec![1, 1, 2]);
        assert_close(&out(&o, 0).data, &[0.2, 0.5]);
        assert!(run(&ImageToMask, inputs(vec![("image", img()), ("channel", j(json!("alpha")))])).is_err());
    }
}
