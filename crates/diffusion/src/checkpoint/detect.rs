//! Architecture detection from tensor names and shapes (ComfyUI `model_detection.py`).
//!
//! Works at any width and depth: the UNet walk reads every level's res-block count, channel
//! multiplier and transformer depth from the keys, so the tiny recipe models are detected like
//! the real ones. The family decides the fixed parts ComfyUI takes from `supported_models`
//! (head layout, text encoders, latent format); `ModelConfig::comfy_model` says whether the
//! UNet matches one of ComfyUI's classes exactly.

use super::config::{
    Activation, ClipKind, ClipLayout, Family, HeadSpec, ModelConfig, Prediction, TextEncoderConfig,
    UnetConfig, VaeConfig,
};
use super::{Checkpoint, UNET_PREFIX, VAE_PREFIX};
use crate::error::Result;

fn has_prefix(ck: &Checkpoint, p: &str) -> bool {
    ck.names_with_prefix(p).next().is_some()
}

/// Counts consecutive indices `i` from `start` such that some key starts with `{base}{i}.`.
fn count_indexed(ck: &Checkpoint, base: &str, start: usize) -> usize {
    let mut i = start;
    while has_prefix(ck, &format!("{base}{i}.")) {
        i += 1;
    }
    i - start
}

fn dims<'a>(ck: &'a Checkpoint, name: &str, rank: usize) -> Result<&'a [usize]> {
    match ck.shape(name) {
        Some(s) if s.len() == rank => Ok(s),
        Some(s) => Err(ck.error(format!(
            "tensor {name:?} has shape {s:?}, expected rank {rank}"
        ))),
        None => Err(ck.error(format!("missing tensor {name:?}"))),
    }
}

/// A one-line description of what the file holds, for error messages.
pub fn describe(ck: &Checkpoint) -> String {
    let markers: &[(&str, &str)] = &[
        (
            "double_blocks.0.img_attn.qkv.weight",
            "a Flux transformer (double_blocks)",
        ),
        (
            "joint_blocks.0.context_block.attn.qkv.weight",
            "an SD3/MMDiT transformer (joint_blocks)",
        ),
        (
            "transformer_blocks.0.attn.add_q_proj.weight",
            "a diffusers MMDiT transformer",
        ),
        (
            "down_blocks.0.resnets.0.conv1.weight",
            "a diffusers-format UNet (down_blocks)",
        ),
        (
            "decoder.up_blocks.0.resnets.0.norm1.weight",
            "a diffusers-format VAE",
        ),
        (
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            "a T5 text encoder",
        ),
        (
            "text_model.encoder.layers.0.mlp.fc1.weight",
            "a CLIP text encoder",
        ),
        ("encoder.conv_in.weight", "a VAE"),
        ("input_blocks.0.0.weight", "an LDM UNet"),
    ];
    let mut found = Vec::new();
    for (m, what) in markers {
        if let Some(k) = ck.names().find(|k| k.ends_with(m)) {
            let prefix = &k[..k.len() - m.len()];
            found.push(format!("{what} under {:?}", prefix));
        }
    }
    let mut tops: Vec<(String, usize)> = Vec::new();
    for k in ck.names() {
        let top = k.split('.').next().unwrap_or(k).to_string();
        match tops.iter_mut().find(|(t, _)| *t == top) {
            Some(e) => e.1 += 1,
            None => tops.push((top, 1)),
        }
    }
    tops.sort_by_key(|t| std::cmp::Reverse(t.1));
    let tops: Vec<String> = tops
        .iter()
        .take(6)
        .map(|(t, n)| format!("{t}.* ({n})"))
        .collect();
    let what = if found.is_empty() {
        "no known model layout".to_string()
    } else {
        found.join(", ")
    };
    format!(
        "recognised {what}; {} tensors, top-level keys: {}",
        ck.len(),
        tops.join(", ")
    )
}

fn count_transformer_blocks(ck: &Checkpoint, p: &str) -> usize {
    count_indexed(ck, &format!("{p}transformer_blocks."), 0)
}

/// Reads the UNet config from keys under `prefix`; the head layout is filled in by the caller.
pub fn detect_unet(ck: &Checkpoint, prefix: &str) -> Result<UnetConfig> {
    let k = |s: &str| format!("{prefix}{s}");
    let conv_in = dims(ck, &k("input_blocks.0.0.weight"), 4)?;
    let (mc, in_channels) = (conv_in[0], conv_in[1]);
    let out_channels = ck
        .shape(&k("out.2.weight"))
        .and_then(|s| s.first().copied())
        .unwrap_or(4);
    let adm_in_channels = match ck.shape(&k("label_emb.0.0.weight")) {
        Some(s) if s.len() == 2 => Some(s[1]),
        _ => None,
    };
    let n_in = count_indexed(ck, &k("input_blocks."), 0);
    let mut channel_mult = Vec::new();
    let mut num_res_blocks = Vec::new();
    let mut transformer_depth = Vec::new();
    let mut context_dim = None;
    let mut use_linear = None;
    let mut cur_count = 0usize;
    let mut cur_mult = 1usize;
    let note_transformer =
        |p: &str, context_dim: &mut Option<usize>, use_linear: &mut Option<bool>| -> Result<()> {
            if context_dim.is_none() {
                let to_k = dims(ck, &format!("{p}transformer_blocks.0.attn2.to_k.weight"), 2)?;
                *context_dim = Some(to_k[1]);
                let proj = ck.shape(&format!("{p}proj_in.weight")).ok_or_else(|| {
                    ck.error(format!("missing tensor {:?}", format!("{p}proj_in.weight")))
                })?;
                *use_linear = Some(proj.len() == 2);
            }
            Ok(())
        };
    for i in 1..n_in {
        let b = k(&format!("input_blocks.{i}."));
        if ck.contains(&format!("{b}0.op.weight")) {
            channel_mult.push(cur_mult);
            num_res_blocks.push(cur_count);
            cur_count = 0;
        } else if ck.contains(&format!("{b}0.in_layers.0.weight")) {
            cur_count += 1;
            let out = dims(ck, &format!("{b}0.out_layers.3.weight"), 4)?[0];
            if mc == 0 || out % mc != 0 {
                return Err(ck.error(format!(
                    "UNet block {b} has {out} channels, not a multiple of {mc}"
                )));
            }
            cur_mult = out / mc;
            let d = count_transformer_blocks(ck, &format!("{b}1."));
            if d > 0 {
                note_transformer(&format!("{b}1."), &mut context_dim, &mut use_linear)?;
            }
            transformer_depth.push(d);
        } else {
            return Err(ck.error(format!("unrecognised UNet input block {b}")));
        }
    }
    if cur_count > 0 {
        channel_mult.push(cur_mult);
        num_res_blocks.push(cur_count);
    }
    if channel_mult.is_empty() {
        return Err(ck.error("UNet has no res blocks"));
    }
    let mid = k("middle_block.1.");
    let transformer_depth_middle = if ck.contains(&format!("{mid}proj_in.weight")) {
        note_transformer(&mid, &mut context_dim, &mut use_linear)?;
        Some(count_transformer_blocks(ck, &mid))
    } else if ck.contains(&k("middle_block.0.in_layers.0.weight")) {
        None
    } else {
        return Err(ck.error("UNet has no middle block"));
    };
    let n_out = count_indexed(ck, &k("output_blocks."), 0);
    let expected_out: usize = num_res_blocks.iter().map(|n| n + 1).sum();
    if n_out != expected_out {
        return Err(ck.error(format!(
            "UNet has {n_out} output blocks, expected {expected_out} for res blocks {num_res_blocks:?}"
        )));
    }
    let transformer_depth_output = (0..n_out)
        .map(|n| count_transformer_blocks(ck, &k(&format!("output_blocks.{n}.1."))))
        .collect();
    let context_dim =
        context_dim.ok_or_else(|| ck.error("UNet has no cross-attention transformer"))?;
    Ok(UnetConfig {
        in_channels,
        out_channels,
        model_channels: mc,
        channel_mult,
        num_res_blocks,
        transformer_depth,
        transformer_depth_output,
        transformer_depth_middle,
        context_dim,
        use_linear_in_transformer: use_linear.unwrap_or(false),
        heads: HeadSpec::Count(8),
        adm_in_channels,
    })
}

/// Reads the VAE config from keys under `prefix` (LDM layout).
pub fn detect_vae_at(ck: &Checkpoint, prefix: &str) -> Result<VaeConfig> {
    let k = |s: &str| format!("{prefix}{s}");
    let conv_in = dims(ck, &k("encoder.conv_in.weight"), 4)?;
    let (ch, in_channels) = (conv_in[0], conv_in[1]);
    let levels = count_indexed(ck, &k("encoder.down."), 0);
    if levels == 0 {
        return Err(ck.error(format!("VAE under {prefix:?} has no encoder.down blocks")));
    }
    let mut ch_mult = Vec::new();
    for i in 0..levels {
        let c = dims(ck, &k(&format!("encoder.down.{i}.block.0.conv1.weight")), 4)?[0];
        if ch == 0 || c % ch != 0 {
            return Err(ck.error(format!(
                "VAE level {i} has {c} channels, not a multiple of {ch}"
            )));
        }
        ch_mult.push(c / ch);
    }
    let num_res_blocks = count_indexed(ck, &k("encoder.down.0.block."), 0);
    let z_channels = dims(ck, &k("decoder.conv_in.weight"), 4)?[1];
    let out_ch = dims(ck, &k("decoder.conv_out.weight"), 4)?[0];
    let has_quant_conv =
        ck.contains(&k("quant_conv.weight")) && ck.contains(&k("post_quant_conv.weight"));
    let embed_dim = if has_quant_conv {
        dims(ck, &k("post_quant_conv.weight"), 4)?[1]
    } else {
        z_channels
    };
    let mid_attention = ck.contains(&k("decoder.mid.attn_1.q.weight"));
    let up_levels = count_indexed(ck, &k("decoder.up."), 0);
    if up_levels != levels {
        return Err(ck.error(format!(
            "VAE has {levels} encoder levels but {up_levels} decoder levels"
        )));
    }
    Ok(VaeConfig {
        in_channels,
        out_ch,
        ch,
        ch_mult,
        num_res_blocks,
        z_channels,
        embed_dim,
        has_quant_conv,
        mid_attention,
    })
}

/// Finds a VAE in a full checkpoint or a VAE-only file (LDM or diffusers key layout; load a
/// diffusers one through `Checkpoint::vae_var_builder`, which translates the names).
pub fn detect_vae(ck: &Checkpoint) -> Result<(VaeConfig, String)> {
    for prefix in [VAE_PREFIX, "", "vae.", "first_stage_model.model."] {
        if ck.contains(&format!("{prefix}encoder.conv_in.weight"))
            && ck.contains(&format!("{prefix}decoder.conv_in.weight"))
        {
            if super::vae_keys::is_diffusers_vae(ck, prefix) {
                return Ok((super::vae_keys::detect(ck, prefix)?, prefix.to_string()));
            }
            return Ok((detect_vae_at(ck, prefix)?, prefix.to_string()));
        }
    }
    Err(ck.error(format!("no VAE found; {}", describe(ck))))
}

fn count_layers(ck: &Checkpoint, base: &str) -> usize {
    count_indexed(ck, base, 0)
}

/// Reads a Hugging Face layout CLIP text model under `prefix` (`...text_model.`).
pub fn detect_hf_clip(ck: &Checkpoint, prefix: &str, kind: ClipKind) -> Result<TextEncoderConfig> {
    let emb = dims(ck, &format!("{prefix}embeddings.token_embedding.weight"), 2)?;
    let (vocab_size, hidden) = (emb[0], emb[1]);
    let pos = dims(
        ck,
        &format!("{prefix}embeddings.position_embedding.weight"),
        2,
    )?[0];
    let layers = count_layers(ck, &format!("{prefix}encoder.layers."));
    if layers == 0 {
        return Err(ck.error(format!("text encoder {prefix:?} has no layers")));
    }
    let intermediate = dims(ck, &format!("{prefix}encoder.layers.0.mlp.fc1.weight"), 2)?[0];
    // `text_projection.weight` sits next to `text_model.` (HF CLIPTextModelWithProjection).
    let proj_name = format!(
        "{}text_projection.weight",
        prefix.strip_suffix("text_model.").unwrap_or(prefix)
    );
    let projection_dim = ck.shape(&proj_name).filter(|s| s.len() == 2).map(|s| s[0]);
    text_config(
        ck,
        kind,
        ClipLayout::HuggingFace,
        prefix,
        vocab_size,
        pos,
        hidden,
        intermediate,
        layers,
        projection_dim,
    )
}

/// Reads an OpenCLIP layout text tower under `prefix` (`...model.`).
pub fn detect_openclip(ck: &Checkpoint, prefix: &str, kind: ClipKind) -> Result<TextEncoderConfig> {
    let emb = dims(ck, &format!("{prefix}token_embedding.weight"), 2)?;
    let (vocab_size, hidden) = (emb[0], emb[1]);
    let pos = dims(ck, &format!("{prefix}positional_embedding"), 2)?[0];
    let layers = count_layers(ck, &format!("{prefix}transformer.resblocks."));
    if layers == 0 {
        return Err(ck.error(format!("text encoder {prefix:?} has no layers")));
    }
    let intermediate = dims(
        ck,
        &format!("{prefix}transformer.resblocks.0.mlp.c_fc.weight"),
        2,
    )?[0];
    let projection_dim = ck
        .shape(&format!("{prefix}text_projection"))
        .filter(|s| s.len() == 2)
        .map(|s| s[1]);
    text_config(
        ck,
        kind,
        ClipLayout::OpenClip,
        prefix,
        vocab_size,
        pos,
        hidden,
        intermediate,
        layers,
        projection_dim,
    )
}

#[allow(clippy::too_many_arguments)]
fn text_config(
    ck: &Checkpoint,
    kind: ClipKind,
    layout: ClipLayout,
    prefix: &str,
    vocab_size: usize,
    max_positions: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    projection_dim: Option<usize>,
) -> Result<TextEncoderConfig> {
    if hidden == 0 || !hidden.is_multiple_of(64) {
        return Err(ck.error(format!(
            "text encoder {prefix:?}: width {hidden} is not a multiple of the head dim 64"
        )));
    }
    let activation = match kind {
        ClipKind::L => Activation::QuickGelu,
        ClipKind::H | ClipKind::G => Activation::Gelu,
    };
    Ok(TextEncoderConfig {
        kind,
        layout,
        prefix: prefix.to_string(),
        vocab_size,
        max_positions,
        hidden,
        intermediate,
        layers,
        heads: hidden / 64,
        activation,
        projection_dim,
    })
}

fn comfy_model_name(family: Family, u: &UnetConfig) -> Option<&'static str> {
    let mc = u.model_channels;
    let lin = u.use_linear_in_transformer;
    match family {
        Family::Sd1 if u.context_dim == 768 && mc == 320 && !lin => Some("SD15"),
        Family::Sd2 if u.context_dim == 1024 && mc == 320 && lin => Some("SD20"),
        Family::SdxlRefiner
            if mc == 384
                && lin
                && u.context_dim == 1280
                && u.adm_in_channels == Some(2560)
                && u.transformer_depth == [0, 0, 4, 4, 4, 4, 0, 0] =>
        {
            Some("SDXLRefiner")
        }
        Family::Sdxl
            if mc == 320
                && lin
                && u.context_dim == 2048
                && u.adm_in_channels == Some(2816)
                && u.transformer_depth == [0, 0, 2, 2, 10, 10] =>
        {
            Some("SDXL")
        }
        _ => None,
    }
}

/// Population standard deviation of a stored float tensor.
fn population_std(ck: &Checkpoint, name: &str) -> Result<Option<f64>> {
    if !ck.contains(name) {
        return Ok(None);
    }
    let t = ck.tensor(name, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    if v.is_empty() {
        return Ok(None);
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    Ok(Some(var.sqrt()))
}

/// Detects the model in a single-file checkpoint.
pub fn detect(ck: &Checkpoint) -> Result<ModelConfig> {
    if !ck.contains(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
        let hint = if ck.contains("encoder.conv_in.weight") || ck.contains("decoder.conv_in.weight")
        {
            " (this looks like a VAE-only file: load it with VAELoader)"
        } else {
            ""
        };
        return Err(ck.error(format!(
            "not a supported SD1.x/SD2.x/SDXL checkpoint: no {UNET_PREFIX}input_blocks.0.0.weight{hint}; {}",
            describe(ck)
        )));
    }
    let mut unet = detect_unet(ck, UNET_PREFIX).map_err(|e| match e {
        crate::Error::Checkpoint { path, message } => crate::Error::Checkpoint {
            path,
            message: format!("{message}; {}", describe(ck)),
        },
        other => other,
    })?;
    let has = |p: &str| has_prefix(ck, p);
    let family = match (unet.adm_in_channels, unet.use_linear_in_transformer) {
        (None, false) => Family::Sd1,
        (None, true) => Family::Sd2,
        (Some(_), _) => {
            if has("conditioner.embedders.0.model.") && !has("conditioner.embedders.1.") {
                Family::SdxlRefiner
            } else if has("conditioner.embedders.") {
                Family::Sdxl
            } else if unet.context_dim == 1280 {
                Family::SdxlRefiner
            } else {
                Family::Sdxl
            }
        }
    };
    unet.heads = match family {
        Family::Sd1 => HeadSpec::Count(8),
        _ => HeadSpec::Dim(64),
    };
    if ck.contains("edm_mean") || ck.contains("edm_vpred.sigma_max") {
        return Err(
            ck.error("EDM checkpoints (Playground v2.5 / EDM v-pred SDXL) are not supported")
        );
    }
    let prediction = match family {
        Family::Sd2 if unet.in_channels == 4 => {
            let name = format!("{UNET_PREFIX}output_blocks.11.1.transformer_blocks.0.norm1.bias");
            match population_std(ck, &name)? {
                Some(s) if s > 0.09 => Prediction::V,
                _ => Prediction::Eps,
            }
        }
        Family::Sdxl if ck.contains("v_pred") => Prediction::V,
        _ => Prediction::Eps,
    };
    let mut text_encoders = Vec::new();
    match family {
        Family::Sd1 => {
            for p in [
                "cond_stage_model.transformer.text_model.",
                "cond_stage_model.transformer.",
            ] {
                if ck.contains(&format!("{p}embeddings.token_embedding.weight")) {
                    text_encoders.push(detect_hf_clip(ck, p, ClipKind::L)?);
                    break;
                }
            }
        }
        Family::Sd2 => {
            for p in ["cond_stage_model.model.", "conditioner.embedders.0.model."] {
                if ck.contains(&format!("{p}token_embedding.weight")) {
                    text_encoders.push(detect_openclip(ck, p, ClipKind::H)?);
                    break;
                }
            }
        }
        Family::Sdxl => {
            let l = "conditioner.embedders.0.transformer.text_model.";
            if ck.contains(&format!("{l}embeddings.token_embedding.weight")) {
                text_encoders.push(detect_hf_clip(ck, l, ClipKind::L)?);
            }
            let g = "conditioner.embedders.1.model.";
            if ck.contains(&format!("{g}token_embedding.weight")) {
                text_encoders.push(detect_openclip(ck, g, ClipKind::G)?);
            }
        }
        Family::SdxlRefiner => {
            let g = "conditioner.embedders.0.model.";
            if ck.contains(&format!("{g}token_embedding.weight")) {
                text_encoders.push(detect_openclip(ck, g, ClipKind::G)?);
            }
        }
    }
    let vae = if ck.contains(&format!("{VAE_PREFIX}encoder.conv_in.weight")) {
        Some(detect_vae_at(ck, VAE_PREFIX)?)
    } else {
        None
    };
    let comfy_model = comfy_model_name(family, &unet);
    let mut k = 0;
    for (level, &m) in unet.channel_mult.iter().enumerate() {
        let n = unet.num_res_blocks[level];
        let attends = unet.transformer_depth[k..k + n].iter().any(|&d| d > 0);
        k += n;
        let ch = m * unet.model_channels;
        if attends && unet.heads_for(ch).is_none() {
            return Err(ck.error(format!(
                "{}: level {level} width {ch} does not fit the head layout {:?}",
                family.name(),
                unet.heads
            )));
        }
    }
    tracing::info!(
        "{}: detected {} ({:?}, comfy model {:?}), {} text encoder(s), VAE {}",
        ck.path().display(),
        family.name(),
        prediction,
        comfy_model,
        text_encoders.len(),
        if vae.is_some() { "yes" } else { "no" }
    );
    Ok(ModelConfig {
        family,
        prediction,
        unet,
        vae,
        text_encoders,
        comfy_model,
    })
}
