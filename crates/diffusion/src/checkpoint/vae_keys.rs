//! Diffusers-format VAE files (`AutoencoderKL`: `encoder.down_blocks.*`, `decoder.up_blocks.*`,
//! `mid_block.attentions.0.*`): LDM key → file key translation (the inverse of ComfyUI's
//! `convert_vae_state_dict`, `shared/spec/checkpoints.md` §4.2) and config detection, so the
//! LDM-named VAE module loads them unchanged. Linear `[C, C]` attention weights are reshaped to
//! the LDM `[C, C, 1, 1]` by the var-builder backend.

use super::config::VaeConfig;
use super::Checkpoint;
use crate::error::Result;

/// Whether `prefix` holds a diffusers-format VAE.
pub fn is_diffusers_vae(ck: &Checkpoint, prefix: &str) -> bool {
    ck.contains(&format!(
        "{prefix}decoder.up_blocks.0.resnets.0.norm1.weight"
    )) || ck.contains(&format!(
        "{prefix}encoder.down_blocks.0.resnets.0.norm1.weight"
    ))
}

fn resnet_param(rest: &str) -> String {
    rest.replacen("nin_shortcut", "conv_shortcut", 1)
}

fn index_and_rest(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// The key in a diffusers VAE file (under `prefix`, `levels` resolution levels) that holds the
/// tensor the LDM module calls `ldm` (relative name, e.g. `decoder.up.3.block.0.norm1.weight`).
pub fn diffusers_key(ck: &Checkpoint, prefix: &str, levels: usize, ldm: &str) -> String {
    let mapped = map(ck, prefix, levels, ldm).unwrap_or_else(|| ldm.to_string());
    format!("{prefix}{mapped}")
}

fn map(ck: &Checkpoint, prefix: &str, levels: usize, ldm: &str) -> Option<String> {
    let (part, rest) = ldm.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    if let Some(r) = rest.strip_prefix("down.") {
        let (i, r) = index_and_rest(r)?;
        if let Some(r) = r.strip_prefix("block.") {
            let (j, p) = index_and_rest(r)?;
            return Some(format!(
                "{part}.down_blocks.{i}.resnets.{j}.{}",
                resnet_param(p)
            ));
        }
        let p = r.strip_prefix("downsample.")?;
        return Some(format!("{part}.down_blocks.{i}.downsamplers.0.{p}"));
    }
    if let Some(r) = rest.strip_prefix("up.") {
        let (i, r) = index_and_rest(r)?;
        let di = levels.checked_sub(1 + i)?;
        if let Some(r) = r.strip_prefix("block.") {
            let (j, p) = index_and_rest(r)?;
            return Some(format!(
                "{part}.up_blocks.{di}.resnets.{j}.{}",
                resnet_param(p)
            ));
        }
        let p = r.strip_prefix("upsample.")?;
        return Some(format!("{part}.up_blocks.{di}.upsamplers.0.{p}"));
    }
    if let Some(r) = rest.strip_prefix("mid.block_") {
        let (k, p) = index_and_rest(r)?;
        return Some(format!(
            "{part}.mid_block.resnets.{}.{}",
            k.checked_sub(1)?,
            resnet_param(p)
        ));
    }
    if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (n, p) = r.split_once('.')?;
        let candidates: &[&str] = match n {
            "norm" => &["group_norm"],
            "q" => &["to_q", "query"],
            "k" => &["to_k", "key"],
            "v" => &["to_v", "value"],
            "proj_out" => &["to_out.0", "proj_attn"],
            _ => return None,
        };
        let base = format!("{part}.mid_block.attentions.0.");
        let pick = candidates
            .iter()
            .find(|c| ck.contains(&format!("{prefix}{base}{c}.{p}")))
            .unwrap_or(&candidates[0]);
        return Some(format!("{base}{pick}.{p}"));
    }
    if let Some(p) = rest.strip_prefix("norm_out.") {
        return Some(format!("{part}.conv_norm_out.{p}"));
    }
    None
}

fn dim(ck: &Checkpoint, name: &str, axis: usize) -> Result<usize> {
    match ck.shape(name) {
        Some(s) if s.len() == 4 => Ok(s[axis]),
        Some(s) => Err(ck.error(format!("tensor {name:?} has shape {s:?}, expected rank 4"))),
        None => Err(ck.error(format!("missing tensor {name:?}"))),
    }
}

fn count(ck: &Checkpoint, base: &str) -> usize {
    (0..)
        .take_while(|i| {
            ck.names_with_prefix(&format!("{base}{i}."))
                .next()
                .is_some()
        })
        .count()
}

/// Reads the VAE config of a diffusers-format VAE under `prefix`.
pub fn detect(ck: &Checkpoint, prefix: &str) -> Result<VaeConfig> {
    let k = |s: &str| format!("{prefix}{s}");
    let ch = dim(ck, &k("encoder.conv_in.weight"), 0)?;
    let in_channels = dim(ck, &k("encoder.conv_in.weight"), 1)?;
    let levels = count(ck, &k("encoder.down_blocks."));
    if levels == 0 || count(ck, &k("decoder.up_blocks.")) != levels {
        return Err(ck.error("diffusers VAE: encoder and decoder level counts differ or are 0"));
    }
    let mut ch_mult = Vec::new();
    for i in 0..levels {
        let c = dim(
            ck,
            &k(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight")),
            0,
        )?;
        if ch == 0 || c % ch != 0 {
            return Err(ck.error(format!("diffusers VAE level {i}: {c} channels, base {ch}")));
        }
        ch_mult.push(c / ch);
    }
    let has_quant_conv =
        ck.contains(&k("quant_conv.weight")) && ck.contains(&k("post_quant_conv.weight"));
    let z_channels = dim(ck, &k("decoder.conv_in.weight"), 1)?;
    Ok(VaeConfig {
        in_channels,
        out_ch: dim(ck, &k("decoder.conv_out.weight"), 0)?,
        ch,
        ch_mult,
        num_res_blocks: count(ck, &k("encoder.down_blocks.0.resnets.")),
        z_channels,
        embed_dim: if has_quant_conv {
            dim(ck, &k("post_quant_conv.weight"), 1)?
        } else {
            z_channels
        },
        has_quant_conv,
        mid_attention: ck
            .names_with_prefix(&k("decoder.mid_block.attentions.0."))
            .next()
            .is_some(),
    })
}
