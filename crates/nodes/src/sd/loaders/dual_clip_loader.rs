//! `DualCLIPLoader`: two text-encoder files combined into one CLIP.

use comfy_diffusion::checkpoint::{ClipKind, Family};
use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use super::clip_loader::unsupported_type;
use crate::sd::loading::{clip_from_encoders, load_text_encoder};

/// The `type` choices of ComfyUI 0.29's DualCLIPLoader (only `sdxl` is supported here).
pub const DUAL_CLIP_TYPES: [&str; 12] = [
    "sdxl",
    "sd3",
    "flux",
    "hunyuan_video",
    "hidream",
    "hunyuan_image",
    "hunyuan_video_15",
    "kandinsky5",
    "kandinsky5_image",
    "ltxv",
    "newbie",
    "ace",
];

/// `DualCLIPLoader` (`nodes.py`).
///
/// Type `sdxl` takes a CLIP-L and a CLIP-G file in either order (a file whose text model has
/// a layer 30 is the CLIP-G, as ComfyUI decides) and gives SDXL's CLIP: both encoders, CLIP-L
/// first. Other types fail with an `invalid_input` error (their text encoders are not
/// implemented).
pub struct DualCLIPLoader;

impl Node for DualCLIPLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DualCLIPLoader", "model/loaders")
            .display(Some("Load CLIP (Dual)"))
            .description("Recipes:\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small\nnewbie: gemma-3-4b-it, jina clip v2")
            .aliases(&[])
            .push_input(Section::Required, "clip_name1", InputType::Files("text_encoders".into()), json!({}))
            .push_input(Section::Required, "clip_name2", InputType::Files("text_encoders".into()), json!({}))
            .push_input(Section::Required, "type", InputType::Combo(DUAL_CLIP_TYPES.iter().map(|s| json!(s)).collect()), json!({}))
            .push_input(Section::Optional, "device", InputType::Combo(vec![json!("default"), json!("cpu")]), json!({"advanced": true}))
            .output("CLIP")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let t = inputs.str("type")?;
        if t != "sdxl" {
            return Err(unsupported_type("DualCLIPLoader", t, "sdxl (CLIP-L + CLIP-G)"));
        }
        let a = load_text_encoder(ctx.folders, inputs.str("clip_name1")?)?;
        let b = load_text_encoder(ctx.folders, inputs.str("clip_name2")?)?;
        let (l, g) = match (a.part.config.kind, b.part.config.kind) {
            (ClipKind::L, ClipKind::G) => (a, b),
            (ClipKind::G, ClipKind::L) => (b, a),
            (ka, kb) => {
                return Err(NodeError::invalid_input(format!(
                    "DualCLIPLoader: type 'sdxl' needs one CLIP-L and one CLIP-G text encoder, got {ka:?} and {kb:?}"
                )))
            }
        };
        let clip = clip_from_encoders(ctx.folders, Family::Sdxl, &[l, g])?;
        Ok(Outputs::new(vec![Value::object(clip)]))
    }
}
