//! `LoadImageMask`: one channel of an input-folder image as a MASK.

use comfy_graph::{ExecContext, Folders, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use crate::ops::decode::{decode, file_sha256, input_path};
use crate::ops::Array;
use crate::values::tensor_value;

/// `LoadImageMask` (`nodes.py`): `channel/255` from the RGBA image, alpha inverted.
pub struct LoadImageMask;

impl Node for LoadImageMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImageMask", "image")
            .display(Some("Load Image (as Mask)"))
            .aliases(&["import mask", "alpha mask", "channel mask"])
            .essentials("Image Tools")
            .push_input(Section::Required, "image", InputType::InputFiles, json!({"image_upload": true}))
            .push_input(
                Section::Required,
                "channel",
                InputType::Combo(["alpha", "red", "green", "blue"].iter().map(|s| json!(s)).collect()),
                json!({}),
            )
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("image")?;
        let channel = match inputs.str("channel")? {
            "red" => 0,
            "green" => 1,
            "blue" => 2,
            "alpha" => 3,
            other => return Err(NodeError::invalid_input(format!("Unknown channel: {other}"))),
        };
        let path = input_path(ctx.folders, name, "image")?;
        let bytes =
            std::fs::read(&path).map_err(|e| NodeError::missing_model(format!("Invalid image file: {name} ({e})")))?;
        let d = decode(&bytes)?;
        let data = d
            .rgba
            .chunks_exact(4)
            .map(|px| {
                let v = px[channel] as f32 / 255.0;
                if channel == 3 {
                    1.0 - v
                } else {
                    v
                }
            })
            .collect();
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![1, d.height, d.width], data))?]))
    }

    fn fingerprint(&self, inputs: &Inputs, folders: &Folders) -> Option<String> {
        let name = inputs.str("image").ok()?;
        file_sha256(&folders.annotated_path(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::load_image::tests::write_png;
    use crate::values::testing::*;

    #[test]
    fn channels() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        write_png(
            &folders.input.join("m.png"),
            2,
            1,
            png::ColorType::Rgba,
            &[255, 0, 51, 0, 0, 102, 0, 255],
            None,
            None,
        );
        let get = |c: &str| {
            let o = run_with(
                &LoadImageMask,
                inputs(vec![("image", j(json!("m.png"))), ("channel", j(json!(c)))]),
                &folders,
                &serde_json::Value::Null,
                None,
            )
            .unwrap();
            out(&o, 0)
        };
        assert_eq!(get("red").shape, vec![1, 1, 2]);
        assert_close(&get("red").data, &[1.0, 0.0]);
        assert_close(&get("green").data, &[0.0, 0.4]);
        assert_close(&get("alpha").data, &[1.0, 0.0]);
        // Grey image: alpha is opaque -> mask 0; red = grey level.
        write_png(&folders.input.join("g.png"), 1, 1, png::ColorType::Grayscale, &[51], None, None);
        let o = run_with(
            &LoadImageMask,
            inputs(vec![("image", j(json!("g.png"))), ("channel", j(json!("alpha")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap();
        assert_close(&out(&o, 0).data, &[0.0]);
    }
}
