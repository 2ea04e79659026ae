//! `CLIPTextEncodeSDXL`: separate CLIP-G / CLIP-L prompts plus SDXL size conditioning.

use comfy_diffusion::checkpoint::ClipKind;
use comfy_diffusion::tokenizer::Tokens;
use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use super::{cond_output, encode};
use crate::sd::cond::{CondEntry, CondOpts, Conditioning};
use crate::sd::inputs::clip;

/// `CLIPTextEncodeSDXL` (`comfy_extras.nodes_clip_sdxl`, V3).
pub struct CLIPTextEncodeSDXL;

/// Tokens with `g` from `text_g` and `l` from `text_l`, the shorter padded with empty-prompt
/// windows.
pub fn sdxl_tokens(clip: &crate::sd::model::SdClip, text_g: &str, text_l: &str) -> Result<Tokens, NodeError> {
    let tg = clip.model.tokenize(text_g);
    let tl = clip.model.tokenize(text_l);
    let empty = clip.model.tokenize("");
    let get = |t: &Tokens, k: ClipKind| -> Result<Vec<_>, NodeError> {
        t.get(k).map(|w| w.to_vec()).ok_or_else(|| NodeError::invalid_input("CLIPTextEncodeSDXL needs an SDXL CLIP (clip_l and clip_g)"))
    };
    let mut g = get(&tg, ClipKind::G)?;
    let mut l = get(&tl, ClipKind::L)?;
    let (eg, el) = (get(&empty, ClipKind::G)?, get(&empty, ClipKind::L)?);
    while l.len() < g.len() {
        l.extend(el.iter().cloned());
    }
    while l.len() > g.len() {
        g.extend(eg.iter().cloned());
    }
    Ok(Tokens { per_encoder: vec![(ClipKind::L, l), (ClipKind::G, g)] })
}

impl Node for CLIPTextEncodeSDXL {
    fn schema(&self) -> NodeSchema {
        let int = |d: i64| json!({"default": d, "min": 0, "max": 16384});
        let adv = |d: i64| json!({"advanced": true, "default": d, "min": 0, "max": 16384});
        NodeSchema::new("CLIPTextEncodeSDXL", "model/conditioning/stable diffusion")
            .v3()
            .display(Some("CLIP Text Encode (SDXL)"))
            .module("comfy_extras.nodes_clip_sdxl")
            .required("clip", "CLIP", json!({}))
            .required("width", "INT", int(1024))
            .required("height", "INT", int(1024))
            .required("crop_w", "INT", adv(0))
            .required("crop_h", "INT", adv(0))
            .required("target_width", "INT", int(1024))
            .required("target_height", "INT", int(1024))
            .required("text_g", "STRING", json!({"multiline": true, "dynamicPrompts": true}))
            .required("text_l", "STRING", json!({"multiline": true, "dynamicPrompts": true}))
            .output("CONDITIONING")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let c = clip(inputs, "clip")?;
        let tokens = sdxl_tokens(c, inputs.str("text_g")?, inputs.str("text_l")?)?;
        let (cond, pooled) = encode(c, &tokens)?;
        let opts = CondOpts {
            pooled_output: Some(pooled),
            width: Some(inputs.i64("width")? as f64),
            height: Some(inputs.i64("height")? as f64),
            crop_w: Some(inputs.i64("crop_w")? as f64),
            crop_h: Some(inputs.i64("crop_h")? as f64),
            target_width: Some(inputs.i64("target_width")? as f64),
            target_height: Some(inputs.i64("target_height")? as f64),
            ..Default::default()
        };
        Ok(cond_output(Conditioning(vec![CondEntry { cond, opts }])))
    }
}
