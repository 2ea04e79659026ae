//! `PreviewImage`: like SaveImage, but into the temp folder with a random prefix suffix.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::output::{save_images, ui};
use crate::values::{image, tensor_value};

/// The alphabet ComfyUI draws the suffix from (sic: `p` twice, no `w`).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstupvxyz";

/// `PreviewImage` (`nodes.py`): prefix `ComfyUI_temp_xxxxx`, type `temp`, compression 1.
pub struct PreviewImage {
    suffix: String,
}

impl PreviewImage {
    /// A node instance with its own random 5-letter suffix.
    pub fn new() -> Self {
        let mut suffix = String::with_capacity(5);
        for i in 0..5u64 {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(i);
            suffix.push(ALPHABET[(h.finish() % ALPHABET.len() as u64) as usize] as char);
        }
        PreviewImage { suffix }
    }
}

impl Default for PreviewImage {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for PreviewImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PreviewImage", "image")
            .display(Some("Preview Image"))
            .description("Preview the images without saving them to the ComfyUI output directory.")
            .output_node()
            .aliases(&["preview", "preview image", "show image", "view image", "display image", "image viewer"])
            .essentials("Basics")
            .required("images", "IMAGE", json!({}))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .named_output("IMAGE", "images", None)
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let images = image(inputs, "images")?;
        let prefix = format!("ComfyUI_temp_{}", self.suffix);
        let results = save_images(&images, &prefix, &ctx.folders.temp, "temp", true, ctx)?;
        Ok(Outputs::new(vec![tensor_value(images)?]).with_ui(ui("images", results)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::save_image::tests::read_png;
    use crate::values::testing::*;
    use comfy_graph::Folders;

    #[test]
    fn writes_to_temp_with_random_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        let node = PreviewImage::new();
        assert!(node.suffix.len() == 5 && node.suffix.bytes().all(|b| ALPHABET.contains(&b)));
        let i = inputs(vec![("images", tval(&[1, 1, 2, 4], &[1.0, 0.0, 0.0, 0.5, 0.2, 0.2, 0.2, 1.0]))]);
        let o = run_with(&node, i, &folders, &json!({"1": {}}), None).unwrap();
        let entry = &o.ui.unwrap()["images"][0];
        let name = format!("ComfyUI_temp_{}_00001_.png", node.suffix);
        assert_eq!(entry, &json!({"filename": name, "subfolder": "", "type": "temp"}));
        let (w, h, ct, px, texts) = read_png(&folders.temp.join(&name));
        assert_eq!((w, h, ct), (2, 1, png::ColorType::Rgba));
        assert_eq!(px, vec![255, 0, 0, 127, 51, 51, 51, 255]);
        assert_eq!(texts, vec![("prompt".to_string(), r#"{"1": {}}"#.to_string())]);
    }
}
