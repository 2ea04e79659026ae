//! `SaveImage`: writes PNGs with ComfyUI's naming and metadata to the output folder.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::output::{save_images, ui};
use crate::values::{image, tensor_value};

/// `SaveImage` (`nodes.py`): compression level 4, type `output`; passes the images through.
pub struct SaveImage;

impl Node for SaveImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveImage", "image")
            .display(Some("Save Image"))
            .description("Saves the input images to your ComfyUI output directory.")
            .output_node()
            .aliases(&["save", "save image", "export image", "output image", "write image", "download"])
            .essentials("Basics")
            .required("images", "IMAGE", json!({"tooltip": "The images to save."}))
            .required(
                "filename_prefix",
                "STRING",
                json!({"default": "ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}),
            )
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .named_output("IMAGE", "images", None)
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let images = image(inputs, "images")?;
        let prefix = inputs.str("filename_prefix").unwrap_or("ComfyUI");
        let results = save_images(&images, prefix, &ctx.folders.output, "output", false, ctx)?;
        Ok(Outputs::new(vec![tensor_value(images)?]).with_ui(ui("images", results)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::values::testing::*;
    use comfy_graph::Folders;

    /// Reads a PNG back: (width, height, color type, pixels, text chunks).
    pub fn read_png(path: &std::path::Path) -> (u32, u32, png::ColorType, Vec<u8>, Vec<(String, String)>) {
        let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        r.finish().unwrap();
        let texts = r.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
        (info.width, info.height, info.color_type, buf, texts)
    }

    #[test]
    fn saves_with_counter_metadata_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        std::fs::write(folders.output.join("ComfyUI_00004_.png"), b"x").unwrap();
        let prompt = json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 3, "sigma": 1.0, "text": "é"}}});
        let extra = json!({"workflow": {"nodes": [], "v": 0.5}});
        // 2 images of 2x3 RGB; 0.999 -> 254 (truncated), 1.5 -> 255, -1 -> 0, 0.5 -> 127.
        let mut px = vec![0.5f32; 2 * 2 * 3 * 3];
        px[0] = 0.999;
        px[1] = 1.5;
        px[2] = -1.0;
        let i = inputs(vec![("images", tval(&[2, 2, 3, 3], &px)), ("filename_prefix", j(json!("ComfyUI")))]);
        let o = run_with(&SaveImage, i, &folders, &prompt, Some(&extra)).unwrap();
        let ui = o.ui.clone().unwrap();
        assert_eq!(
            serde_json::Value::Object(ui),
            json!({"images": [
                {"filename": "ComfyUI_00005_.png", "subfolder": "", "type": "output"},
                {"filename": "ComfyUI_00006_.png", "subfolder": "", "type": "output"}]})
        );
        assert_eq!(out(&o, 0).shape, vec![2, 2, 3, 3]);
        let (w, h, ct, pixels, texts) = read_png(&folders.output.join("ComfyUI_00005_.png"));
        assert_eq!((w, h, ct), (3, 2, png::ColorType::Rgb));
        assert_eq!(&pixels[..4], &[254, 255, 0, 127]);
        assert_eq!(pixels.len(), 18);
        assert_eq!(
            texts,
            vec![
                (
                    "prompt".to_string(),
                    r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 3, "sigma": 1.0, "text": "\u00e9"}}}"#
                        .to_string()
                ),
                ("workflow".to_string(), r#"{"nodes": [], "v": 0.5}"#.to_string()),
            ]
        );
        // Subfolder prefix.
        let i = inputs(vec![("images", tval(&[1, 1, 1, 3], &[0.0, 0.0, 1.0])), ("filename_prefix", j(json!("run/x")))]);
        let o = run_with(&SaveImage, i, &folders, &serde_json::Value::Null, None).unwrap();
        assert_eq!(
            o.ui.unwrap()["images"][0],
            json!({"filename": "x_00001_.png", "subfolder": "run", "type": "output"})
        );
        let (_, _, _, px, texts) = read_png(&folders.output.join("run/x_00001_.png"));
        assert_eq!(px, vec![0, 0, 255]);
        assert!(texts.is_empty());
        // Escaping the output folder is an error.
        let i = inputs(vec![("images", tval(&[1, 1, 1, 3], &[0.0; 3])), ("filename_prefix", j(json!("../evil")))]);
        assert!(run_with(&SaveImage, i, &folders, &serde_json::Value::Null, None).is_err());
    }

    /// The golden folder: `COMFY_GOLDEN_DIR`, else `<workspace>/../shared/golden`.
    fn golden_dir() -> std::path::PathBuf {
        std::env::var_os("COMFY_GOLDEN_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"))
    }

    #[test]
    fn pixels_match_comfyui_png() {
        // ComfyUI's own SaveImage output for the SD1.5 e2e run, and the float image it saved.
        let dir = golden_dir().join("pipeline");
        let st_path = dir.join("sd15_e2e_256x256_euler_normal_4steps_seed42_cfg7.safetensors");
        let bytes =
            std::fs::read(&st_path).unwrap_or_else(|e| panic!("golden file {} missing: {e}", st_path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("image").unwrap();
        assert_eq!(t.shape(), &[1, 256, 256, 3]);
        let data: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let tmp = tempfile::tempdir().unwrap();
        let folders = Folders::new(tmp.path());
        let i = inputs(vec![("images", tval(&[1, 256, 256, 3], &data)), ("filename_prefix", j(json!("g")))]);
        run_with(&SaveImage, i, &folders, &serde_json::Value::Null, None).unwrap();
        let (w, h, ct, ours, _) = read_png(&folders.output.join("g_00001_.png"));
        let (gw, gh, gct, theirs, _) = read_png(&dir.join("sd15_e2e_256x256_euler_normal_4steps_seed42_cfg7.png"));
        assert_eq!((w, h, ct), (gw, gh, gct));
        let diff = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{diff} of {} bytes differ from ComfyUI's PNG", ours.len());
    }
}
