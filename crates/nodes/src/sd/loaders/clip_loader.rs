//! `CLIPLoader`: one text-encoder file from `models/text_encoders` (or `models/clip`).

use comfy_diffusion::checkpoint::{ClipKind, Family};
use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::loading::{clip_from_encoders, load_text_encoder};

/// The `type` choices of ComfyUI 0.29's CLIPLoader (only `stable_diffusion` is supported here).
pub const CLIP_TYPES: [&str; 27] = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
    "longcat_image",
    "cogvideox",
    "lens",
    "pixeldit",
    "ideogram4",
    "boogu",
    "krea2",
    "joyimage",
    "mage",
];

/// The error for a `type` whose text encoders comfy-rs does not have.
pub fn unsupported_type(node: &str, t: &str, supported: &str) -> NodeError {
    NodeError::invalid_input(format!(
        "{node}: type '{t}' is not supported by comfy-rs (its text encoders are not implemented); supported: {supported}"
    ))
}

/// `CLIPLoader` (`nodes.py`).
///
/// Type `stable_diffusion` takes a CLIP-L (SD1.x), CLIP-H (SD2.x) or CLIP-G (SDXL refiner)
/// text model, in Hugging Face or OpenCLIP layout, told apart by depth as ComfyUI does. The
/// other types name text encoders of model families comfy-rs does not run (T5, Gemma, Qwen,
/// ...) and fail with an `invalid_input` error. `device` is accepted; everything runs on the
/// server's device.
pub struct CLIPLoader;

impl Node for CLIPLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPLoader", "model/loaders")
            .display(Some("Load CLIP"))
            .description("Recipes:\nsd: clip-l\nstable cascade: clip-g\nsd3: t5 xxl / clip-g / clip-l\nstable audio: t5 base\nmochi: t5 xxl\ncogvideox: t5 xxl (226-token padding)\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\nhidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B\njoyimage: qwen3-vl 8B\nlens: gpt-oss-20b\npixeldit: gemma 2 2B elm")
            .aliases(&[])
            .push_input(Section::Required, "clip_name", InputType::Files("text_encoders".into()), json!({}))
            .push_input(Section::Required, "type", InputType::Combo(CLIP_TYPES.iter().map(|s| json!(s)).collect()), json!({}))
            .push_input(Section::Optional, "device", InputType::Combo(vec![json!("default"), json!("cpu")]), json!({"advanced": true}))
            .output("CLIP")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("clip_name")?;
        let t = inputs.str("type")?;
        if t != "stable_diffusion" {
            return Err(unsupported_type("CLIPLoader", t, "stable_diffusion (CLIP-L, CLIP-H, CLIP-G)"));
        }
        let enc = load_text_encoder(ctx.folders, name)?;
        let family = match enc.part.config.kind {
            ClipKind::L => Family::Sd1,
            ClipKind::H => Family::Sd2,
            ClipKind::G => Family::SdxlRefiner,
        };
        let clip = clip_from_encoders(ctx.folders, family, &[enc])?;
        Ok(Outputs::new(vec![Value::object(clip)]))
    }
}
