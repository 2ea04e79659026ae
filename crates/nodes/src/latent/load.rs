//! `LoadLatent`: reads a `.latent` file from the input folder.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use candle_core::{DType, Device, Tensor};
use comfy_graph::{Folders, InputType, Section};

use crate::ops::array::tensor_err;
use crate::ops::decode::{file_sha256, input_path};
use crate::types::Latent;
use crate::values::latent_value;

/// `LoadLatent` (`nodes.py`). Files without the version marker hold scaled latents and are
/// multiplied by `1/0.18215`.
pub struct LoadLatent;

/// Parses `.latent` bytes into samples (f32, CPU).
pub fn parse_latent(bytes: &[u8]) -> Result<Tensor, NodeError> {
    let bad = |m: String| NodeError::invalid_input(format!("Invalid latent file: {m}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let t = st.tensor("latent_tensor").map_err(|e| bad(e.to_string()))?;
    let dtype = match t.dtype() {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F64 => DType::F64,
        other => return Err(bad(format!("unsupported dtype {other:?}"))),
    };
    let samples = Tensor::from_raw_buffer(t.data(), dtype, t.shape(), &Device::Cpu)
        .and_then(|s| s.to_dtype(DType::F32))
        .map_err(tensor_err)?;
    if st.names().iter().any(|n| *n == "latent_format_version_0") {
        Ok(samples)
    } else {
        (samples * (1.0 / 0.18215)).map_err(tensor_err)
    }
}

impl Node for LoadLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLatent", "model/latent")
            .display(Some("Load Latent"))
            .aliases(&["import latent", "open latent"])
            .push_input(Section::Required, "latent", InputType::InputFilesWithSuffix(".latent".into()), json!({}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("latent")?;
        let path = input_path(ctx.folders, name, "latent")?;
        let bytes =
            std::fs::read(&path).map_err(|e| NodeError::missing_model(format!("Invalid latent file: {name} ({e})")))?;
        Ok(Outputs::new(vec![latent_value(Latent::new(parse_latent(&bytes)?))]))
    }

    fn fingerprint(&self, inputs: &Inputs, folders: &Folders) -> Option<String> {
        file_sha256(&folders.annotated_path(inputs.str("latent").ok()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latent::save::latent_file_bytes;
    use crate::ops::Array;
    use crate::values::testing::*;

    #[test]
    fn roundtrip_and_legacy_scaling() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        let a = Array::new(vec![1, 1, 1, 2], vec![0.5, -1.0]);
        std::fs::write(folders.input.join("x.latent"), latent_file_bytes(&a, Default::default()).unwrap()).unwrap();
        let o = run_with(
            &LoadLatent,
            inputs(vec![("latent", j(json!("x.latent")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap();
        assert_eq!(Array::from_tensor(&out_latent(&o, 0).samples).unwrap(), a);
        // Legacy file: no marker -> scaled by 1/0.18215.
        let bytes = safetensors::tensor::serialize(
            [(
                "latent_tensor",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &0.18215f32.to_le_bytes())
                    .unwrap(),
            )],
            None,
        )
        .unwrap();
        std::fs::write(folders.input.join("old.latent"), bytes).unwrap();
        let o = run_with(
            &LoadLatent,
            inputs(vec![("latent", j(json!("old.latent")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap();
        assert_close(&Array::from_tensor(&out_latent(&o, 0).samples).unwrap().data, &[1.0]);
        assert!(LoadLatent.fingerprint(&inputs(vec![("latent", j(json!("x.latent")))]), &folders).is_some());
        assert!(run_with(
            &LoadLatent,
            inputs(vec![("latent", j(json!("none.latent")))]),
            &folders,
            &serde_json::Value::Null,
            None
        )
        .is_err());
    }
}
