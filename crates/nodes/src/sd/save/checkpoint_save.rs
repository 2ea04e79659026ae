//! `CheckpointSave`: writes MODEL + CLIP + VAE as one single-file checkpoint.

use std::borrow::Cow;
use std::collections::HashMap;

use comfy_diffusion::checkpoint::{StoredDtype, UNET_PREFIX, VAE_PREFIX};
use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use safetensors::tensor::{Dtype, View};
use serde_json::json;

use crate::ops::output::save_path;
use crate::ops::pyjson;
use crate::sd::inputs::{clip, model, vae};
use crate::sd::model::{SdVae, Source};

/// `CheckpointSave` (`comfy_extras.nodes_model_merging`): `output/<prefix>_<counter:05>_.safetensors`.
///
/// The weights are written as stored in the files they were loaded from (same key layout and
/// dtypes: UNet under `model.diffusion_model.`, text encoders under their checkpoint prefixes,
/// VAE under `first_stage_model.`), with `prompt` and the `extra_pnginfo` keys as metadata.
/// ComfyUI's key re-mapping for other source layouts and its `modelspec.*` metadata are not
/// reproduced.
pub struct CheckpointSave;

struct RawView<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

impl View for &RawView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn dtype(d: StoredDtype) -> Dtype {
    match d {
        StoredDtype::Bool => Dtype::BOOL,
        StoredDtype::U8 => Dtype::U8,
        StoredDtype::I8 => Dtype::I8,
        StoredDtype::I16 => Dtype::I16,
        StoredDtype::U16 => Dtype::U16,
        StoredDtype::I32 => Dtype::I32,
        StoredDtype::U32 => Dtype::U32,
        StoredDtype::I64 => Dtype::I64,
        StoredDtype::U64 => Dtype::U64,
        StoredDtype::F16 => Dtype::F16,
        StoredDtype::BF16 => Dtype::BF16,
        StoredDtype::F32 => Dtype::F32,
        StoredDtype::F64 => Dtype::F64,
        StoredDtype::F8E4M3 => Dtype::F8_E4M3,
        StoredDtype::F8E5M2 => Dtype::F8_E5M2,
    }
}

/// Adds every tensor of `src` under its prefixes, renamed `prefix → target` when given.
fn collect<'a>(src: &'a Source, target: Option<&str>, out: &mut Vec<(String, RawView<'a>)>) -> Result<(), NodeError> {
    for p in &src.prefixes {
        for name in src.file.names_with_prefix(p) {
            let (info, bytes) = src.file.raw(name).map_err(crate::sd::errors::diffusion_err)?;
            let key = match target {
                Some(t) => format!("{t}{}", &name[p.len()..]),
                None => name.to_string(),
            };
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            out.push((key, RawView { dtype: dtype(info.dtype), shape: info.shape.clone(), bytes }));
        }
    }
    Ok(())
}

impl Node for CheckpointSave {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CheckpointSave", "model/merging")
            .display(Some("Save Checkpoint"))
            .module("comfy_extras.nodes_model_merging")
            .output_node()
            .aliases(&["save model", "export checkpoint", "merge save"])
            .required("model", "MODEL", json!({}))
            .required("clip", "CLIP", json!({}))
            .required("vae", "VAE", json!({}))
            .required("filename_prefix", "STRING", json!({"default": "checkpoints/ComfyUI"}))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let c = clip(inputs, "clip")?;
        let v = vae(inputs, "vae")?;
        let no_source = |what: &str| NodeError::invalid_input(format!("CheckpointSave: this {what} was not loaded from a file and cannot be saved"));
        let mut tensors = Vec::new();
        collect(m.source.as_ref().ok_or_else(|| no_source("MODEL"))?, Some(UNET_PREFIX), &mut tensors)?;
        collect(c.source.as_ref().ok_or_else(|| no_source("CLIP"))?, None, &mut tensors)?;
        match v {
            SdVae::Kl { source: Some(s), .. } => collect(s, Some(VAE_PREFIX), &mut tensors)?,
            _ => return Err(no_source("VAE")),
        }
        let mut metadata = HashMap::new();
        if !ctx.prompt.is_null() {
            metadata.insert("prompt".to_string(), pyjson::dumps(ctx.prompt));
        }
        if let Some(serde_json::Value::Object(extra)) = ctx.extra_pnginfo {
            for (k, val) in extra {
                metadata.insert(k.clone(), pyjson::dumps(val));
            }
        }
        let prefix = inputs.str("filename_prefix").unwrap_or("checkpoints/ComfyUI");
        let sp = save_path(prefix, &ctx.folders.output, 0, 0)?;
        let file = sp.folder.join(format!("{}_{:05}_.safetensors", sp.filename, sp.counter));
        let tmp = sp.folder.join(format!(".{}_{:05}_.safetensors.{}.tmp", sp.filename, sp.counter, std::process::id()));
        let views: Vec<(&str, &RawView<'_>)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        safetensors::tensor::serialize_to_file(views, Some(metadata), &tmp)
            .map_err(|e| NodeError::internal(format!("cannot write {}: {e}", file.display())))?;
        std::fs::rename(&tmp, &file).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NodeError::internal(format!("cannot write {}: {e}", file.display()))
        })?;
        tracing::info!("saved checkpoint {} ({} tensors)", file.display(), tensors.len());
        Ok(Outputs::new(vec![]))
    }
}
