//! `LoraLoaderModelOnly`: applies a LoRA file to a MODEL only.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use super::lora_loader::LORA_ALIASES;
use crate::sd::inputs::model;
use crate::sd::loading::apply_lora;

/// `LoraLoaderModelOnly` (`nodes.py`): [`super::lora_loader::LoraLoader`] without the CLIP.
/// The file's text-encoder keys are then logged as not loaded, as in ComfyUI.
///
/// Its `output_tooltips` list both of LoraLoader's tooltips (a Python subclass inherits
/// `OUTPUT_TOOLTIPS`), although it has one output.
pub struct LoraLoaderModelOnly;

impl Node for LoraLoaderModelOnly {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoraLoaderModelOnly", "model/loaders")
            .display(Some("Load LoRA"))
            .description("This LoRAs loader is used to modify the diffusion model, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.")
            .aliases(&LORA_ALIASES)
            .essentials("Image Generation")
            .required("model", "MODEL", json!({}))
            .push_input(Section::Required, "lora_name", InputType::Files("loras".into()), json!({}))
            .required("strength_model", "FLOAT", json!({"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}))
            .named_output("MODEL", "MODEL", Some("The modified diffusion model."))
            .extra_output_tooltips(&["The modified CLIP model."])
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let name = inputs.str("lora_name")?;
        let strength = inputs.f64("strength_model")?;
        if strength == 0.0 {
            return Ok(Outputs::new(vec![Value::object(m.clone())]));
        }
        let out = apply_lora(ctx.folders, name, Some(m), None, strength, 0.0)?;
        Ok(Outputs::new(vec![Value::object(out.model.unwrap_or_else(|| m.clone()))]))
    }
}
