//! `VAELoader`: a VAE file from `models/vae`, or the `pixel_space` identity VAE.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::loading::load_vae;
use crate::sd::model::SdVae;

/// `VAELoader` (`nodes.py`).
///
/// The combo lists the files of `models/vae` followed by `"pixel_space"` (ComfyUI's
/// `vae_list`), read afresh on every `/object_info` and validation, so a prompt naming an
/// absent file fails with `value_not_in_list`. A VAE file is either a VAE-only state dict or a
/// whole checkpoint (its `first_stage_model.*` part is used). TAESD entries are not offered
/// (ComfyUI lists them only when `models/vae_approx` holds TAESD files; no TAESD here).
pub struct VAELoader;

impl Node for VAELoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAELoader", "model/loaders")
            .display(Some("Load VAE"))
            .aliases(&[])
            .push_input(
                Section::Required,
                "vae_name",
                InputType::FilesThen("vae".into(), vec!["pixel_space".into()]),
                json!({}),
            )
            .output("VAE")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("vae_name")?;
        let vae = if name == "pixel_space" { SdVae::PixelSpace } else { (*load_vae(ctx.folders, name)?).clone() };
        Ok(Outputs::new(vec![Value::object(vae)]))
    }
}
