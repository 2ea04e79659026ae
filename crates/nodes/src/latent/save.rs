//! `SaveLatent`: writes a latent as ComfyUI's `.latent` safetensors file.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use std::borrow::Cow;
use std::collections::HashMap;

use safetensors::tensor::{Dtype, View};

use crate::ops::output::{save_path, ui, write_atomic};
use crate::ops::{pyjson, Array};
use crate::values::{latent, latent_value};

/// `SaveLatent` (`nodes.py`): `output/<prefix>_<counter:05>_.latent` with tensors
/// `latent_tensor` and the empty `latent_format_version_0` marker, metadata `prompt` + extras.
pub struct SaveLatent;

/// A little-endian f32 tensor for the safetensors writer.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The bytes of a `.latent` file for `samples` with the given metadata.
pub fn latent_file_bytes(samples: &Array, metadata: HashMap<String, String>) -> Result<Vec<u8>, NodeError> {
    let t =
        F32View { shape: samples.shape.clone(), bytes: samples.data.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let marker = F32View { shape: vec![0], bytes: Vec::new() };
    safetensors::tensor::serialize([("latent_tensor", &t), ("latent_format_version_0", &marker)], Some(metadata))
        .map_err(|e| NodeError::internal(format!("cannot serialise latent: {e}")))
}

impl Node for SaveLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveLatent", "model/latent")
            .display(Some("Save Latent"))
            .output_node()
            .aliases(&["export latent"])
            .required("samples", "LATENT", json!({}))
            .required("filename_prefix", "STRING", json!({"default": "latents/ComfyUI"}))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .named_output("LATENT", "samples", None)
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let prefix = inputs.str("filename_prefix").unwrap_or("latents/ComfyUI");
        let sp = save_path(prefix, &ctx.folders.output, 0, 0)?;
        let mut metadata = HashMap::new();
        metadata
            .insert("prompt".to_string(), if ctx.prompt.is_null() { String::new() } else { pyjson::dumps(ctx.prompt) });
        if let Some(serde_json::Value::Object(extra)) = ctx.extra_pnginfo {
            for (k, v) in extra {
                metadata.insert(k.clone(), pyjson::dumps(v));
            }
        }
        let file = format!("{}_{:05}_.latent", sp.filename, sp.counter);
        let bytes = latent_file_bytes(&Array::from_tensor(&l.samples)?, metadata)?;
        write_atomic(&sp.folder.join(&file), &bytes)?;
        let results = vec![json!({"filename": file, "subfolder": sp.subfolder, "type": "output"})];
        Ok(Outputs::new(vec![latent_value(l.clone())]).with_ui(ui("latents", results)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;
    use comfy_graph::Folders;

    #[test]
    fn writes_safetensors_with_marker_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        let i = inputs(vec![
            ("samples", lval(&[1, 1, 1, 2], &[0.5, -1.0])),
            ("filename_prefix", j(json!("latents/ComfyUI"))),
        ]);
        let extra = json!({"workflow": {"a": 1}});
        let o = run_with(&SaveLatent, i, &folders, &json!({"3": {"x": 1.0}}), Some(&extra)).unwrap();
        assert_eq!(
            serde_json::Value::Object(o.ui.unwrap()),
            json!({"latents": [{"filename": "ComfyUI_00001_.latent", "subfolder": "latents", "type": "output"}]})
        );
        let bytes = std::fs::read(folders.output.join("latents/ComfyUI_00001_.latent")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let md = meta.metadata().clone().unwrap();
        assert_eq!(md.get("prompt").unwrap(), r#"{"3": {"x": 1.0}}"#);
        assert_eq!(md.get("workflow").unwrap(), r#"{"a": 1}"#);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("latent_tensor").unwrap();
        assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[1usize, 1, 1, 2][..]));
        assert_eq!(t.data(), &[0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat()[..]);
        assert_eq!(st.tensor("latent_format_version_0").unwrap().shape(), &[0]);
    }
}
