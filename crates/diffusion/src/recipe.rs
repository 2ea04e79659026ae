//! Deterministic random-weight checkpoints ("random-checkpoint v1", `shared/spec/random-checkpoint.md`).
//!
//! [`write_recipe_checkpoint`] streams a single-file `.safetensors` checkpoint whose every tensor is
//! filled by a counter-based generator keyed by the tensor name and a seed. For the full-size
//! SD1.5 and SDXL-base layouts the file is byte-identical to the spec's reference files (seed 0:
//! sha256 `c303fe27…` and `e12eadc3…`), so ComfyUI's recorded outputs on those files can be
//! compared against this crate without shipping multi-GB weights. Nothing is held in memory but a
//! small write buffer.
//!
//! # Tiny variants
//!
//! `tiny = true` writes the same key scheme (same prefixes, block structure, dtypes and
//! generator) with small widths, so a full text-to-image run takes seconds on a CPU. They load
//! through the normal detection path ([`crate::checkpoint::detect`]) as `Sd1` / `Sdxl` with
//! `comfy_model = None` (ComfyUI itself would not recognise them).
//!
//! | part | tiny SD1.5 | tiny SDXL |
//! | --- | --- | --- |
//! | UNet | `model_channels` 32, `channel_mult` [1,2,2], 1 res block per level, transformer depth [1,1,0] (output [0,0,1,1,1,1]), middle depth 1, conv `proj_in`, 8 heads, context 64 | `model_channels` 32, `channel_mult` [1,2,2], 1 res block per level, transformer depth [0,1,1] (output [1,1,1,1,0,0]), middle depth 1, linear `proj_in`, head dim 64, context 128, ADM 1600 (= 64 + 6·256) |
//! | VAE | `ch` 32, `ch_mult` [1,1,2,2], 1 res block (decoder 2), z 4, mid attention, quant convs (8× down-scale as the real VAE) | same |
//! | text | CLIP-L (HF layout): width 64, 3 layers, 1 head, MLP 256, vocab 49408, 77 positions | CLIP-L as SD1.5 (+ I64 `position_ids`) and OpenCLIP-G layout: width 64, 3 layers, 1 head, MLP 256, `text_projection` [64,64], `logit_scale` |
//!
//! Full-size: SD1.5 1130 tensors / 2,132,625,150 bytes; SDXL 2515 tensors / 6,938,041,144 bytes.
//! Tiny: SD1.5 ≈ 12 MB, SDXL ≈ 19 MB (dominated by the 49408-row token tables).

pub mod layout;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::config::{
    Activation, ClipKind, ClipLayout, HeadSpec, TextEncoderConfig, UnetConfig, VaeConfig,
};
use crate::error::{Error, Result};
use layout::{SpecDtype, TensorSpec};

/// Which recipe layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// SD1.5 (`cond_stage_model.transformer.text_model.*` CLIP-L).
    Sd15,
    /// SDXL base (CLIP-L + OpenCLIP-G under `conditioner.embedders.{0,1}`).
    Sdxl,
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sd15" | "sd1.5" | "sd1" => Ok(Arch::Sd15),
            "sdxl" => Ok(Arch::Sdxl),
            _ => Err(Error::Msg(format!(
                "unknown recipe architecture {s:?} (expected sd15 or sdxl)"
            ))),
        }
    }
}

/// The UNet, VAE and text-encoder configs a recipe checkpoint is built from.
#[derive(Debug, Clone)]
pub struct RecipeConfig {
    /// UNet hyper-parameters.
    pub unet: UnetConfig,
    /// VAE hyper-parameters.
    pub vae: VaeConfig,
    /// Text encoders; the bool says whether the HF layout carries I64 `position_ids`.
    pub text_encoders: Vec<(TextEncoderConfig, bool)>,
}

fn clip_l(prefix: &str, hidden: usize, layers: usize) -> TextEncoderConfig {
    TextEncoderConfig {
        kind: ClipKind::L,
        layout: ClipLayout::HuggingFace,
        prefix: prefix.to_string(),
        vocab_size: 49408,
        max_positions: 77,
        hidden,
        intermediate: 4 * hidden,
        layers,
        heads: hidden / 64,
        activation: Activation::QuickGelu,
        projection_dim: None,
    }
}

fn clip_g(prefix: &str, hidden: usize, layers: usize) -> TextEncoderConfig {
    TextEncoderConfig {
        kind: ClipKind::G,
        layout: ClipLayout::OpenClip,
        prefix: prefix.to_string(),
        vocab_size: 49408,
        max_positions: 77,
        hidden,
        intermediate: 4 * hidden,
        layers,
        heads: hidden / 64,
        activation: Activation::Gelu,
        projection_dim: Some(hidden),
    }
}

fn tiny_vae() -> VaeConfig {
    VaeConfig {
        ch: 32,
        ch_mult: vec![1, 1, 2, 2],
        num_res_blocks: 1,
        ..VaeConfig::sd()
    }
}

/// The configs behind [`write_recipe_checkpoint`] (see the module doc for the tiny ones).
pub fn recipe_config(arch: Arch, tiny: bool) -> RecipeConfig {
    const SD15_TE: &str = "cond_stage_model.transformer.text_model.";
    const XL_L: &str = "conditioner.embedders.0.transformer.text_model.";
    const XL_G: &str = "conditioner.embedders.1.model.";
    match (arch, tiny) {
        (Arch::Sd15, false) => RecipeConfig {
            unet: UnetConfig {
                in_channels: 4,
                out_channels: 4,
                model_channels: 320,
                channel_mult: vec![1, 2, 4, 4],
                num_res_blocks: vec![2; 4],
                transformer_depth: vec![1, 1, 1, 1, 1, 1, 0, 0],
                transformer_depth_output: vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                transformer_depth_middle: Some(1),
                context_dim: 768,
                use_linear_in_transformer: false,
                heads: HeadSpec::Count(8),
                adm_in_channels: None,
            },
            vae: VaeConfig::sd(),
            text_encoders: vec![(clip_l(SD15_TE, 768, 12), false)],
        },
        (Arch::Sdxl, false) => RecipeConfig {
            unet: UnetConfig {
                in_channels: 4,
                out_channels: 4,
                model_channels: 320,
                channel_mult: vec![1, 2, 4],
                num_res_blocks: vec![2; 3],
                transformer_depth: vec![0, 0, 2, 2, 10, 10],
                transformer_depth_output: vec![10, 10, 10, 2, 2, 2, 0, 0, 0],
                transformer_depth_middle: Some(10),
                context_dim: 2048,
                use_linear_in_transformer: true,
                heads: HeadSpec::Dim(64),
                adm_in_channels: Some(2816),
            },
            vae: VaeConfig::sd(),
            text_encoders: vec![
                (clip_l(XL_L, 768, 12), true),
                (clip_g(XL_G, 1280, 32), false),
            ],
        },
        (Arch::Sd15, true) => RecipeConfig {
            unet: UnetConfig {
                in_channels: 4,
                out_channels: 4,
                model_channels: 32,
                channel_mult: vec![1, 2, 2],
                num_res_blocks: vec![1; 3],
                transformer_depth: vec![1, 1, 0],
                transformer_depth_output: vec![0, 0, 1, 1, 1, 1],
                transformer_depth_middle: Some(1),
                context_dim: 64,
                use_linear_in_transformer: false,
                heads: HeadSpec::Count(8),
                adm_in_channels: None,
            },
            vae: tiny_vae(),
            text_encoders: vec![(clip_l(SD15_TE, 64, 3), false)],
        },
        (Arch::Sdxl, true) => RecipeConfig {
            unet: UnetConfig {
                in_channels: 4,
                out_channels: 4,
                model_channels: 32,
                channel_mult: vec![1, 2, 2],
                num_res_blocks: vec![1; 3],
                transformer_depth: vec![0, 1, 1],
                transformer_depth_output: vec![1, 1, 1, 1, 0, 0],
                transformer_depth_middle: Some(1),
                context_dim: 128,
                use_linear_in_transformer: true,
                heads: HeadSpec::Dim(64),
                adm_in_channels: Some(64 + 6 * 256),
            },
            vae: tiny_vae(),
            text_encoders: vec![(clip_l(XL_L, 64, 3), true), (clip_g(XL_G, 64, 3), false)],
        },
    }
}

/// Every tensor of the recipe checkpoint, in file order.
pub fn recipe_tensors(arch: Arch, tiny: bool) -> Vec<TensorSpec> {
    let cfg = recipe_config(arch, tiny);
    let mut v = Vec::new();
    for (te, pos_ids) in &cfg.text_encoders {
        v.extend(layout::text_encoder_tensors(te, *pos_ids));
    }
    v.extend(layout::unet_tensors(&cfg.unet, "model.diffusion_model."));
    v.extend(layout::vae_tensors(&cfg.vae, "first_stage_model."));
    layout::sort_file_order(&mut v);
    v
}

/// FNV-1a 64-bit hash of a tensor name (the generator key before the seed is mixed in).
pub fn fnv1a64(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The uniform draw `u ∈ (−1, 1)` for element `i` of the tensor with key `key`.
#[inline]
pub fn uniform(key: u64, i: u64) -> f64 {
    let mut z = key.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    let j = (z >> 40) as i64;
    (2 * j + 1 - (1 << 24)) as f64 / 16777216.0
}

/// Direct f64 → f16 conversion with round-to-nearest-even (spec §2 step 4; valid for
/// |x| < 65520). Not `half::f16::from_f64`, which double-rounds through f32 on F16C CPUs.
#[inline]
pub fn f64_to_f16_bits(x: f64) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 48) & 0x8000) as u16;
    let big_e = ((b >> 52) & 0x7ff) as i64;
    if big_e == 0 {
        return sign;
    }
    let e = big_e - 1023;
    let m = (b & ((1u64 << 52) - 1)) | (1u64 << 52);
    let shift = if e >= -14 { 42 } else { 28 - e };
    if shift >= 54 {
        return sign;
    }
    let mut q = m >> shift;
    let rem = m & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rem > half || (rem == half && q & 1 == 1) {
        q += 1;
    }
    let h = if e >= -14 {
        (((e + 15) << 10) as u64 + q - 1024) as u16
    } else {
        q as u16
    };
    sign | h
}

/// How a tensor's elements are produced (spec §3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// I64 `position_ids`: element i = i.
    Index,
    /// `logit_scale`: the f64 nearest ln 100, no draw.
    Const(f64),
    /// `base + scale * u`.
    Random {
        /// Added after the product (0 = skipped).
        base: f64,
        /// Multiplies `u`.
        scale: f64,
    },
}

/// The role of a tensor by the rules of spec §3 (first match wins).
pub fn role_of(spec: &TensorSpec) -> Role {
    let n = spec.name.as_str();
    if spec.dtype == SpecDtype::I64 {
        return Role::Index;
    }
    if n.ends_with("logit_scale") {
        return Role::Const(f64::from_bits(0x40126BB1BBB55516));
    }
    if n.ends_with("bias") {
        return Role::Random {
            base: 0.0,
            scale: 0.02,
        };
    }
    if spec.shape.len() == 1 && n.ends_with("weight") {
        return Role::Random {
            base: 1.0,
            scale: 0.1,
        };
    }
    if n.ends_with("token_embedding.weight")
        || n.ends_with("position_embedding.weight")
        || n.ends_with("positional_embedding")
    {
        return Role::Random {
            base: 0.0,
            scale: 0.02,
        };
    }
    let fan_in: usize = spec.shape.iter().skip(1).product();
    let gain = if n == "model.diffusion_model.out.2.weight"
        || n == "first_stage_model.decoder.conv_out.weight"
    {
        0.5
    } else {
        1.0
    };
    Role::Random {
        base: 0.0,
        scale: gain * (3.0 / fan_in as f64).sqrt(),
    }
}

/// Appends the little-endian bytes of elements `start..end` of `spec` (seed `seed`) to `buf`.
pub fn tensor_bytes(spec: &TensorSpec, seed: u64, start: usize, end: usize, buf: &mut Vec<u8>) {
    let key = fnv1a64(spec.name.as_bytes()) ^ seed;
    match role_of(spec) {
        Role::Index => {
            for i in start..end {
                buf.extend_from_slice(&(i as i64).to_le_bytes());
            }
        }
        Role::Const(v) => {
            for _ in start..end {
                buf.extend_from_slice(&f64_to_f16_bits(v).to_le_bytes());
            }
        }
        Role::Random { base, scale } => {
            if base == 0.0 {
                for i in start..end {
                    let v = scale * uniform(key, i as u64);
                    buf.extend_from_slice(&f64_to_f16_bits(v).to_le_bytes());
                }
            } else {
                for i in start..end {
                    let p = scale * uniform(key, i as u64);
                    buf.extend_from_slice(&f64_to_f16_bits(base + p).to_le_bytes());
                }
            }
        }
    }
}

/// The safetensors header (JSON plus space padding to a multiple of 8) for `tensors` in order.
pub fn header_bytes(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut s = String::from("{");
    let mut off = 0usize;
    for (k, t) in tensors.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        let end = off + t.numel() * t.dtype.size();
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        s.push_str(&format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            t.name,
            t.dtype.name(),
            shape.join(","),
            off,
            end
        ));
        off = end;
    }
    s.push('}');
    let mut b = s.into_bytes();
    while b.len() % 8 != 0 {
        b.push(b' ');
    }
    b
}

/// Writes the recipe checkpoint for `arch` (full-size or tiny) and `seed` to `out`.
///
/// Streams: the data is produced in small chunks, written through a buffered writer to
/// `out` + `.partial`, then renamed, so an interrupted run never leaves a truncated `out`.
pub fn write_recipe_checkpoint(arch: Arch, tiny: bool, seed: u64, out: &Path) -> Result<()> {
    write_recipe_checkpoint_filtered(arch, tiny, seed, out, |_| true)
}

/// Like [`write_recipe_checkpoint`] but keeps only tensors whose name passes `keep`. Values do
/// not depend on which other tensors are present, so e.g. a text-encoder-only file holds exactly
/// the text-encoder weights of the full file (tests use this to avoid writing GBs of UNet).
pub fn write_recipe_checkpoint_filtered(
    arch: Arch,
    tiny: bool,
    seed: u64,
    out: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let tensors: Vec<TensorSpec> = recipe_tensors(arch, tiny)
        .into_iter()
        .filter(|t| keep(&t.name))
        .collect();
    let mut tmp = PathBuf::from(out);
    tmp.set_file_name(format!(
        "{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let started = std::time::Instant::now();
    let result = (|| -> Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 22, file);
        let header = header_bytes(&tensors);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        const CHUNK: usize = 1 << 18;
        let mut buf = Vec::with_capacity(CHUNK * 8);
        for t in &tensors {
            let n = t.numel();
            let mut start = 0;
            while start < n {
                let end = (start + CHUNK).min(n);
                buf.clear();
                tensor_bytes(t, seed, start, end, &mut buf);
                w.write_all(&buf)?;
                start = end;
            }
        }
        w.flush()?;
        let file = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out)?;
    tracing::info!(
        "wrote recipe checkpoint {:?} tiny={} seed={} ({} tensors) to {} in {:.1}s",
        arch,
        tiny,
        seed,
        tensors.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
