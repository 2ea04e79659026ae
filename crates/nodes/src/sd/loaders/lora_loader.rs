//! `LoraLoader`: applies a LoRA file to a MODEL and a CLIP.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::inputs::{clip, model};
use crate::sd::loading::apply_lora;

/// The LoRA loaders' search aliases.
pub const LORA_ALIASES: [&str; 5] = ["lora", "load lora", "apply lora", "lora loader", "lora model"];

/// `LoraLoader` (`nodes.py`).
///
/// The file in `models/loras` is mapped onto the model's UNet and the CLIP's text encoders
/// (kohya `lora_unet_*`/`lora_te*_*`, diffusers/PEFT and ComfyUI's generic names; see
/// `comfy_diffusion::lora`), and both networks are rebuilt with
/// `W + strength · (alpha / rank) · up @ down` on every mapped weight. Strength 0 leaves a
/// network as it is; both 0 returns the inputs unchanged (as ComfyUI). Keys of the file that
/// map to nothing are logged as `lora key not loaded: <key>`. A LoRA-patched MODEL/CLIP
/// keeps no source file, so `CheckpointSave` refuses it rather than saving unpatched weights.
pub struct LoraLoader;

impl Node for LoraLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoraLoader", "model/loaders")
            .display(Some("Load LoRA (Model and CLIP)"))
            .description("This LoRA loader is used to modify both diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.")
            .aliases(&LORA_ALIASES)
            .essentials("Image Generation")
            .required("model", "MODEL", json!({"tooltip": "The diffusion model the LoRA will be applied to."}))
            .required("clip", "CLIP", json!({"tooltip": "The CLIP model the LoRA will be applied to."}))
            .push_input(Section::Required, "lora_name", InputType::Files("loras".into()), json!({"tooltip": "The name of the LoRA."}))
            .required(
                "strength_model",
                "FLOAT",
                json!({"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "How strongly to modify the diffusion model. This value can be negative."}),
            )
            .required(
                "strength_clip",
                "FLOAT",
                json!({"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "How strongly to modify the CLIP model. This value can be negative."}),
            )
            .named_output("MODEL", "MODEL", Some("The modified diffusion model."))
            .named_output("CLIP", "CLIP", Some("The modified CLIP model."))
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let m = model(inputs, "model")?;
        let c = clip(inputs, "clip")?;
        let name = inputs.str("lora_name")?;
        let strength_model = inputs.f64("strength_model")?;
        let strength_clip = inputs.f64("strength_clip")?;
        if strength_model == 0.0 && strength_clip == 0.0 {
            return Ok(Outputs::new(vec![Value::object(m.clone()), Value::object(c.clone())]));
        }
        let out = apply_lora(ctx.folders, name, Some(m), Some(c), strength_model, strength_clip)?;
        let new_model = out.model.unwrap_or_else(|| m.clone());
        let new_clip = out.clip.unwrap_or_else(|| c.clone());
        Ok(Outputs::new(vec![Value::object(new_model), Value::object(new_clip)]))
    }
}
