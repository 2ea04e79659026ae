//! `VAELoader`: a VAE file from `models/vae`, or the `pixel_space` identity VAE.

use comfy_graph::{ExecContext, Folders, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::loading::load_vae;
use crate::sd::model::SdVae;

/// `VAELoader` (`nodes.py`).
///
/// The combo is rendered as `["pixel_space"]` (what ComfyUI shows with no VAE files): the
/// engine's `InputType` cannot yet append fixed entries to a folder listing. Files of
/// `models/vae` are accepted by the custom validator below, so API prompts naming them work.
/// TAESD entries are not offered (no TAESD implementation).
pub struct VAELoader;

impl Node for VAELoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAELoader", "model/loaders")
            .display(Some("Load VAE"))
            .aliases(&[])
            .push_input(Section::Required, "vae_name", InputType::Combo(vec![json!("pixel_space")]), json!({}))
            .output("VAE")
    }

    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["vae_name"]
    }

    fn validate_inputs(&self, inputs: &Inputs, folders: &Folders) -> Result<(), Option<String>> {
        let Some(name) = inputs.get("vae_name").and_then(Value::as_str) else { return Ok(()) };
        if name == "pixel_space" || folders.model_path("vae", name).is_some() {
            return Ok(());
        }
        let mut choices = folders.list_models("vae");
        choices.push("pixel_space".into());
        Err(Some(format!("Value not in list: vae_name: '{name}' not in {choices:?}")))
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("vae_name")?;
        let vae = if name == "pixel_space" { SdVae::PixelSpace } else { (*load_vae(ctx.folders, name)?).clone() };
        Ok(Outputs::new(vec![Value::object(vae)]))
    }
}
