//! LoRA patches (ComfyUI `comfy/lora.py`): reading LoRA files, mapping their key names onto a
//! checkpoint's UNet and text-encoder weights, and patching those weights while a model is built.
//!
//! # Maths
//! For each patched weight `W` (any shape; conv kernels are flattened and reshaped back):
//! `W' = W + strength · (alpha / rank) · (up.flatten(1) @ down.flatten(1)).reshape(W.shape)`,
//! where `rank = down.shape[0]` and `alpha / rank` is `1` when the file has no `.alpha`.
//! Everything is computed in float32 (the stored weight is widened first); the result is cast to
//! the dtype the model asked for. Several LoRAs on one weight are applied in order. LoCon
//! `lora_mid` tensors are folded into `down` first (ComfyUI's formula).
//!
//! # Key formats
//! A [`KeyMap`] maps every name a LoRA may use for a weight to a [`Target`] (a key of the base
//! file, possibly a row block of a fused OpenCLIP `in_proj_weight` or a transposed projection):
//! - UNet ([`unet_key_map`]): `lora_unet_<LDM key, . → _>`, `diffusion_model.<LDM key>`,
//!   `lora_unet_<diffusers key, . → _>`, `lycoris_<diffusers key, . → _>`, and the diffusers
//!   PEFT names `<diffusers key>` / `unet.<diffusers key>` with `.to_x` written `.processor.to_x`
//!   and `.to_out.0` written `.to_out`.
//! - Text encoders ([`clip_key_map`]): `lora_te_`, `lora_te1_`, `lora_te2_`
//!   `text_model_encoder_layers_{b}_{mlp_fc1|mlp_fc2|self_attn_q_proj|…}`, the diffusers names
//!   `text_encoder{,_2}.text_model.encoder.layers.{b}.{…}`, the generic
//!   `text_encoders.clip_{l,h,g}.transformer.text_model.encoder.layers.{b}.{…}`, and the
//!   projection keys `lora_te1_text_projection` / `lora_te2_text_projection`.
//!
//! Per weight the tensors are `<name>.lora_up.weight` + `.lora_down.weight` (+ `.lora_mid.weight`),
//! `<name>_lora.up.weight` + `_lora.down.weight`, `<name>.lora_B.weight` + `.lora_A.weight`,
//! `<name>.lora.up.weight` + `.lora.down.weight`, `<name>.lora_B` + `.lora_A`,
//! `<name>.lora_linear_layer.up.weight` + `.down.weight`, each with an optional `<name>.alpha`.
//! Tensors of the file that no mapping used are reported ([`Lora::not_loaded`]; ComfyUI logs
//! `lora key not loaded: <key>`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};

use crate::checkpoint::config::{ClipKind, ClipLayout, TextEncoderConfig, UnetConfig};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Which part of a base tensor a LoRA weight patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// The whole tensor.
    Whole,
    /// Rows `start .. start + len` (q/k/v blocks of an OpenCLIP `in_proj_weight`).
    Rows {
        /// First row.
        start: usize,
        /// Number of rows.
        len: usize,
    },
    /// The transpose of the tensor (an OpenCLIP `text_projection`, `[C, P]`, patched as the
    /// Hugging Face `[P, C]` weight).
    Transposed,
}

/// A weight of the base file a LoRA name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which of the mapped files holds it (the encoder index in [`clip_key_map_multi`], else 0).
    pub file: usize,
    /// Full key in that file (e.g. `model.diffusion_model.input_blocks.1.1.proj_in.weight`).
    pub key: String,
    /// The patched part of it.
    pub slice: Slice,
}

impl Target {
    fn whole(key: String) -> Self {
        Target {
            file: 0,
            key,
            slice: Slice::Whole,
        }
    }
}

/// LoRA name (without the `.lora_up.weight`-style suffix) → the weight it patches.
pub type KeyMap = HashMap<String, Target>;

/// `(diffusers resnet name, LDM resnet name)` (`comfy.utils.UNET_MAP_RESNET`).
const RESNET_MAP: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// `(diffusers name, LDM name)` of the UNet's weights (biases are never LoRA targets), for the
/// keys present under `prefix` in `ck` (ComfyUI's `unet_to_diffusers`, §4.1 of checkpoints.md).
pub fn unet_diffusers_names(
    ck: &Checkpoint,
    prefix: &str,
    cfg: &UnetConfig,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |diff: String, ldm: String| {
        let full = format!("{prefix}{ldm}.weight");
        if ck.contains(&full) {
            out.push((diff, full));
        }
    };
    // Everything under `ldm_base.` renamed to `diff_base.` (transformers keep their names).
    let subtree = |ldm_base: &str, diff_base: &str| -> Vec<(String, String)> {
        let p = format!("{prefix}{ldm_base}.");
        ck.names_with_prefix(&p)
            .filter_map(|k| {
                k.strip_suffix(".weight")
                    .map(|stem| (format!("{diff_base}.{}", &stem[p.len()..]), k.to_string()))
            })
            .collect()
    };
    let mut extra = Vec::new();
    let levels = cfg.channel_mult.len();
    let mut n = 1usize;
    let mut k = 0usize;
    for x in 0..levels {
        let nrb = cfg.num_res_blocks.get(x).copied().unwrap_or(0);
        for i in 0..nrb {
            for (d, l) in RESNET_MAP {
                add(
                    format!("down_blocks.{x}.resnets.{i}.{d}"),
                    format!("input_blocks.{n}.0.{l}"),
                );
            }
            if cfg.transformer_depth.get(k).copied().unwrap_or(0) > 0 {
                extra.extend(subtree(
                    &format!("input_blocks.{n}.1"),
                    &format!("down_blocks.{x}.attentions.{i}"),
                ));
            }
            n += 1;
            k += 1;
        }
        if x + 1 < levels {
            add(
                format!("down_blocks.{x}.downsamplers.0.conv"),
                format!("input_blocks.{n}.0.op"),
            );
            n += 1;
        }
    }
    for (d, l) in RESNET_MAP {
        add(
            format!("mid_block.resnets.0.{d}"),
            format!("middle_block.0.{l}"),
        );
        add(
            format!("mid_block.resnets.1.{d}"),
            format!("middle_block.2.{l}"),
        );
    }
    if cfg.transformer_depth_middle.is_some() {
        extra.extend(subtree("middle_block.1", "mid_block.attentions.0"));
    }
    let mut n = 0usize;
    for x in 0..levels {
        let level = levels - 1 - x;
        let nrb = cfg.num_res_blocks.get(level).copied().unwrap_or(0) + 1;
        let mut last_has_attn = false;
        for i in 0..nrb {
            for (d, l) in RESNET_MAP {
                add(
                    format!("up_blocks.{x}.resnets.{i}.{d}"),
                    format!("output_blocks.{n}.0.{l}"),
                );
            }
            last_has_attn = cfg.transformer_depth_output.get(n).copied().unwrap_or(0) > 0;
            if last_has_attn {
                extra.extend(subtree(
                    &format!("output_blocks.{n}.1"),
                    &format!("up_blocks.{x}.attentions.{i}"),
                ));
            }
            n += 1;
        }
        if level > 0 {
            let slot = if last_has_attn { 2 } else { 1 };
            add(
                format!("up_blocks.{x}.upsamplers.0.conv"),
                format!("output_blocks.{}.{slot}.conv", n - 1),
            );
        }
    }
    add("conv_in".into(), "input_blocks.0.0".into());
    add("time_embedding.linear_1".into(), "time_embed.0".into());
    add("time_embedding.linear_2".into(), "time_embed.2".into());
    add("add_embedding.linear_1".into(), "label_emb.0.0".into());
    add("add_embedding.linear_2".into(), "label_emb.0.2".into());
    add("conv_norm_out".into(), "out.0".into());
    add("conv_out".into(), "out.2".into());
    out.extend(extra);
    out
}

/// Adds the UNet names of ComfyUI's `model_lora_keys_unet` for the UNet stored under `prefix`
/// (`model.diffusion_model.` in a checkpoint, empty in a diffusion-model-only file).
pub fn unet_key_map(ck: &Checkpoint, prefix: &str, cfg: &UnetConfig, map: &mut KeyMap) {
    for full in ck.names_with_prefix(prefix) {
        let rel = &full[prefix.len()..];
        match rel.strip_suffix(".weight") {
            Some(stem) => {
                map.insert(
                    format!("lora_unet_{}", stem.replace('.', "_")),
                    Target::whole(full.to_string()),
                );
                map.insert(
                    format!("diffusion_model.{stem}"),
                    Target::whole(full.to_string()),
                );
            }
            None => {
                map.insert(
                    format!("diffusion_model.{rel}"),
                    Target::whole(full.to_string()),
                );
            }
        }
    }
    for (diff, full) in unet_diffusers_names(ck, prefix, cfg) {
        let under = diff.replace('.', "_");
        map.insert(format!("lora_unet_{under}"), Target::whole(full.clone()));
        map.insert(format!("lycoris_{under}"), Target::whole(full.clone()));
        let mut peft = diff.replace(".to_", ".processor.to_");
        if peft.ends_with(".to_out.0") {
            peft.truncate(peft.len() - 2);
        }
        map.insert(format!("unet.{peft}"), Target::whole(full.clone()));
        map.insert(peft, Target::whole(full));
    }
}

/// `LORA_CLIP_MAP`: Hugging Face layer weight → kohya name.
const CLIP_LAYER_MAP: [(&str, &str); 6] = [
    ("mlp.fc1", "mlp_fc1"),
    ("mlp.fc2", "mlp_fc2"),
    ("self_attn.k_proj", "self_attn_k_proj"),
    ("self_attn.q_proj", "self_attn_q_proj"),
    ("self_attn.v_proj", "self_attn_v_proj"),
    ("self_attn.out_proj", "self_attn_out_proj"),
];

/// The stored weight behind Hugging Face layer weight `hf` (`mlp.fc1`, `self_attn.q_proj`, …)
/// of layer `b` of encoder `cfg`.
fn clip_layer_target(cfg: &TextEncoderConfig, b: usize, hf: &str) -> Option<Target> {
    let p = &cfg.prefix;
    match cfg.layout {
        ClipLayout::HuggingFace => {
            Some(Target::whole(format!("{p}encoder.layers.{b}.{hf}.weight")))
        }
        ClipLayout::OpenClip => {
            let r = format!("{p}transformer.resblocks.{b}.");
            let d = cfg.hidden;
            let rows = |k: usize| Target {
                file: 0,
                key: format!("{r}attn.in_proj_weight"),
                slice: Slice::Rows {
                    start: k * d,
                    len: d,
                },
            };
            Some(match hf {
                "mlp.fc1" => Target::whole(format!("{r}mlp.c_fc.weight")),
                "mlp.fc2" => Target::whole(format!("{r}mlp.c_proj.weight")),
                "self_attn.out_proj" => Target::whole(format!("{r}attn.out_proj.weight")),
                "self_attn.q_proj" => rows(0),
                "self_attn.k_proj" => rows(1),
                "self_attn.v_proj" => rows(2),
                _ => return None,
            })
        }
    }
}

/// The stored `text_projection` of encoder `cfg`, as the Hugging Face `[P, C]` weight.
fn clip_projection_target(ck: &Checkpoint, cfg: &TextEncoderConfig) -> Option<Target> {
    match cfg.layout {
        ClipLayout::HuggingFace => {
            let parent = cfg
                .prefix
                .strip_suffix("text_model.")
                .unwrap_or(&cfg.prefix);
            let key = format!("{parent}text_projection.weight");
            ck.contains(&key).then(|| Target::whole(key))
        }
        ClipLayout::OpenClip => {
            let key = format!("{}text_projection", cfg.prefix);
            ck.contains(&key).then_some(Target {
                file: 0,
                key,
                slice: Slice::Transposed,
            })
        }
    }
}

/// Adds the text-encoder names of ComfyUI's `model_lora_keys_clip` for `encoders` (all stored
/// in `ck`, in ComfyUI order: CLIP-L before CLIP-G).
pub fn clip_key_map(ck: &Checkpoint, encoders: &[TextEncoderConfig], map: &mut KeyMap) {
    clip_key_map_multi(&encoders.iter().map(|e| (ck, e)).collect::<Vec<_>>(), map)
}

/// [`clip_key_map`] for encoders that may live in different files (`DualCLIPLoader`): each
/// target's `file` is the index of its encoder in `encoders`.
pub fn clip_key_map_multi(encoders: &[(&Checkpoint, &TextEncoderConfig)], map: &mut KeyMap) {
    let has_l = encoders.iter().any(|(_, e)| e.kind == ClipKind::L);
    for (index, (ck, cfg)) in encoders.iter().enumerate() {
        let internal = match cfg.kind {
            ClipKind::L => "clip_l",
            ClipKind::H => "clip_h",
            ClipKind::G => "clip_g",
        };
        for b in 0..cfg.layers {
            for (hf, kohya) in CLIP_LAYER_MAP {
                let Some(mut t) = clip_layer_target(cfg, b, hf) else {
                    continue;
                };
                t.file = index;
                if !ck.contains(&t.key) {
                    continue;
                }
                let names: Vec<String> = match (cfg.kind, has_l) {
                    (ClipKind::L, _) | (ClipKind::H, _) => vec![
                        format!("lora_te_text_model_encoder_layers_{b}_{kohya}"),
                        format!("lora_te1_text_model_encoder_layers_{b}_{kohya}"),
                        format!("text_encoder.text_model.encoder.layers.{b}.{hf}"),
                    ],
                    (ClipKind::G, true) => vec![
                        format!("lora_te2_text_model_encoder_layers_{b}_{kohya}"),
                        format!("text_encoder_2.text_model.encoder.layers.{b}.{hf}"),
                    ],
                    (ClipKind::G, false) => vec![
                        format!("lora_te_text_model_encoder_layers_{b}_{kohya}"),
                        format!("text_encoder.text_model.encoder.layers.{b}.{hf}"),
                        format!("lora_prior_te_text_model_encoder_layers_{b}_{kohya}"),
                    ],
                };
                for n in names {
                    map.insert(n, t.clone());
                }
                map.insert(
                    format!(
                        "text_encoders.{internal}.transformer.text_model.encoder.layers.{b}.{hf}"
                    ),
                    t.clone(),
                );
            }
        }
        if let Some(mut t) = clip_projection_target(ck, cfg) {
            t.file = index;
            map.insert(
                format!("text_encoders.{internal}.transformer.text_projection"),
                t.clone(),
            );
            match cfg.kind {
                ClipKind::G => {
                    map.insert("lora_prior_te_text_projection".into(), t.clone());
                    map.insert("lora_te2_text_projection".into(), t);
                }
                ClipKind::L => {
                    map.insert("lora_te1_text_projection".into(), t);
                }
                ClipKind::H => {}
            }
        }
    }
}

/// One LoRA weight pair (float32), with its optional alpha and LoCon mid tensor.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// `up` (`lora_B`): `[out, rank, …]`.
    pub up: Tensor,
    /// `down` (`lora_A`): `[rank, in, …]`.
    pub down: Tensor,
    /// LoCon `lora_mid`: `[rank, rank, kh, kw]`.
    pub mid: Option<Tensor>,
    /// `.alpha`, if stored.
    pub alpha: Option<f64>,
}

impl LoraWeights {
    /// `alpha / rank` (`rank = down.shape[0]`), or 1 without an alpha.
    pub fn scale(&self) -> f64 {
        let rank = self.down.dims().first().copied().unwrap_or(1).max(1);
        match self.alpha {
            Some(a) => a / rank as f64,
            None => 1.0,
        }
    }

    /// `up.flatten(1) @ down.flatten(1)` reshaped to `shape` (float32, unscaled).
    pub fn product(&self, shape: &[usize]) -> Result<Tensor> {
        let mut down = self.down.clone();
        if let Some(mid) = &self.mid {
            // ComfyUI: mm(down.T.flatten(1), mid.T.flatten(1)) reshaped to
            // [in, rank, kh, kw] and transposed back to [rank, in, kh, kw].
            let dd = down.dims().to_vec();
            let md = mid.dims().to_vec();
            if dd.len() < 2 || md.len() != 4 {
                return Err(Error::Msg(format!(
                    "LoCon mid tensor of shape {md:?} does not fit down {dd:?}"
                )));
            }
            let a = down.transpose(0, 1)?.contiguous()?.flatten_from(1)?;
            let b = mid.transpose(0, 1)?.contiguous()?.flatten_from(1)?;
            down = a
                .matmul(&b)?
                .reshape((dd[1], dd[0], md[2], md[3]))?
                .transpose(0, 1)?
                .contiguous()?;
        }
        let up = self.up.flatten_from(1)?;
        let down = down.flatten_from(1)?;
        let d = up.matmul(&down)?;
        if d.elem_count() != shape.iter().product::<usize>() {
            return Err(Error::Msg(format!(
                "LoRA of shape {:?} does not fit weight {shape:?}",
                d.dims()
            )));
        }
        Ok(d.reshape(shape)?)
    }

    /// `strength · (alpha / rank) · up @ down`, reshaped to `shape` (float32): what is added to
    /// the weight.
    pub fn delta(&self, shape: &[usize], strength: f64) -> Result<Tensor> {
        // ComfyUI multiplies the f32 product by the Python float `strength * alpha`.
        Ok((self.product(shape)? * (strength * self.scale()))?)
    }
}

/// The patches of one LoRA file, by target, plus the file's keys nothing used.
#[derive(Debug, Clone, Default)]
pub struct Lora {
    /// Patches in key-map order (one per target; a later name for the same target wins).
    pub patches: Vec<(Target, Arc<LoraWeights>)>,
    /// File keys no mapping used (ComfyUI: `lora key not loaded: <key>`), sorted.
    pub not_loaded: Vec<String>,
}

/// The suffix pairs `(up, down, mid)` ComfyUI recognises, in its order.
const FORMATS: [(&str, &str, Option<&str>); 6] = [
    (
        ".lora_up.weight",
        ".lora_down.weight",
        Some(".lora_mid.weight"),
    ),
    ("_lora.up.weight", "_lora.down.weight", None),
    (".lora_B.weight", ".lora_A.weight", None),
    (".lora.up.weight", ".lora.down.weight", None),
    (".lora_B", ".lora_A", None),
    (
        ".lora_linear_layer.up.weight",
        ".lora_linear_layer.down.weight",
        None,
    ),
];

/// Reads the LoRA tensors of `file` that `map` knows (ComfyUI's `load_lora`), logging
/// `lora key not loaded: <key>` for each file key nothing used.
pub fn load_lora(file: &Checkpoint, map: &KeyMap) -> Result<Lora> {
    let lora = load_lora_quiet(file, map)?;
    for k in &lora.not_loaded {
        tracing::warn!("lora key not loaded: {k}");
    }
    Ok(lora)
}

/// [`load_lora`] without the log (for callers that combine several maps and report once).
pub fn load_lora_quiet(file: &Checkpoint, map: &KeyMap) -> Result<Lora> {
    let dev = Device::Cpu;
    let mut used = BTreeSet::new();
    let mut by_target: Vec<(Target, Arc<LoraWeights>)> = Vec::new();
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    for name in names {
        let target = &map[name];
        let alpha_key = format!("{name}.alpha");
        let alpha = if file.contains(&alpha_key) {
            used.insert(alpha_key.clone());
            let t = file.tensor(&alpha_key, DType::F32, &dev)?;
            Some(
                t.flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(0.0) as f64,
            )
        } else {
            None
        };
        for (up_s, down_s, mid_s) in FORMATS {
            let up_k = format!("{name}{up_s}");
            if !file.contains(&up_k) {
                continue;
            }
            let down_k = format!("{name}{down_s}");
            let up = file.tensor(&up_k, DType::F32, &dev)?;
            let down = file.tensor(&down_k, DType::F32, &dev)?;
            used.insert(up_k);
            used.insert(down_k);
            let mid = match mid_s.map(|m| format!("{name}{m}")) {
                Some(k) if file.contains(&k) => {
                    let t = file.tensor(&k, DType::F32, &dev)?;
                    used.insert(k);
                    Some(t)
                }
                _ => None,
            };
            let w = Arc::new(LoraWeights {
                up,
                down,
                mid,
                alpha,
            });
            match by_target.iter_mut().find(|(t, _)| t == target) {
                Some(slot) => slot.1 = w,
                None => by_target.push((target.clone(), w)),
            }
            break;
        }
    }
    let not_loaded: Vec<String> = file
        .names()
        .filter(|k| !used.contains(*k))
        .map(str::to_string)
        .collect();
    Ok(Lora {
        patches: by_target,
        not_loaded,
    })
}

/// Patches accumulated on one model (several LoRAs, each with its strength), by base key.
#[derive(Debug, Clone, Default)]
pub struct PatchSet {
    by_key: HashMap<String, Vec<(Slice, Arc<LoraWeights>, f64)>>,
}

impl PatchSet {
    /// No patches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `lora`'s patches for the targets `keep` accepts with `strength` (after any already
    /// present); strength 0 adds nothing. Returns how many weights it patches.
    pub fn add(&mut self, lora: &Lora, strength: f64, keep: impl Fn(&Target) -> bool) -> usize {
        if strength == 0.0 {
            return 0;
        }
        let mut n = 0;
        for (t, w) in &lora.patches {
            if keep(t) {
                self.by_key
                    .entry(t.key.clone())
                    .or_default()
                    .push((t.slice, w.clone(), strength));
                n += 1;
            }
        }
        n
    }

    /// Whether nothing is patched.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Number of patched base keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether `key` is patched.
    pub fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// `weight` (the stored tensor of `key`, any dtype) with its patches applied, in float32;
    /// `None` when `key` has no patch. A patch whose shape does not fit is skipped with an error
    /// log, as ComfyUI does.
    pub fn apply(&self, key: &str, weight: &Tensor) -> Result<Option<Tensor>> {
        let Some(list) = self.by_key.get(key) else {
            return Ok(None);
        };
        let mut w = weight.to_dtype(DType::F32)?;
        for (slice, lw, strength) in list {
            match patch_one(&w, *slice, lw, *strength) {
                Ok(nw) => w = nw,
                Err(e) => tracing::error!("ERROR lora {key} {e}"),
            }
        }
        Ok(Some(w))
    }
}

fn patch_one(w: &Tensor, slice: Slice, lw: &LoraWeights, strength: f64) -> Result<Tensor> {
    Ok(match slice {
        Slice::Whole => (w + lw.delta(w.dims(), strength)?)?,
        Slice::Transposed => {
            let d = w.dims();
            if d.len() != 2 {
                return Err(Error::Msg(format!(
                    "cannot transpose a weight of shape {d:?}"
                )));
            }
            (w + lw.delta(&[d[1], d[0]], strength)?.t()?)?
        }
        Slice::Rows { start, len } => {
            let rows = w.dim(0)?;
            if start + len > rows {
                return Err(Error::Msg(format!(
                    "rows {start}..{} outside a weight of {rows} rows",
                    start + len
                )));
            }
            let part = w.narrow(0, start, len)?;
            let patched = (&part + lw.delta(part.dims(), strength)?)?;
            let mut pieces = Vec::new();
            if start > 0 {
                pieces.push(w.narrow(0, 0, start)?);
            }
            pieces.push(patched);
            if start + len < rows {
                pieces.push(w.narrow(0, start + len, rows - start - len)?);
            }
            Tensor::cat(&pieces, 0)?
        }
    })
}

/// A float8 storage format (`UNETLoader`'s `weight_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8 {
    /// e4m3fn: 4 exponent bits (bias 7), 3 mantissa bits, no infinities, largest 448.
    E4M3Fn,
    /// e5m2: 5 exponent bits (bias 15), 2 mantissa bits, largest 57344.
    E5M2,
}

/// `x` rounded to the nearest `kind` value (ties to even), as PyTorch's float32 → float8 cast:
/// results beyond the largest finite value become NaN (e4m3fn) or ±inf (e5m2).
pub fn round_fp8(x: f32, kind: Fp8) -> f32 {
    if !x.is_finite() {
        return match kind {
            Fp8::E4M3Fn => f32::NAN,
            Fp8::E5M2 => x,
        };
    }
    if x == 0.0 {
        return x;
    }
    let (mantissa_bits, min_exp, max) = match kind {
        Fp8::E4M3Fn => (3, -6, 448.0f64),
        Fp8::E5M2 => (2, -14, 57344.0f64),
    };
    let a = (x as f64).abs();
    let e = (a.log2().floor() as i32).max(min_exp);
    let quantum = 2f64.powi(e - mantissa_bits);
    let r = (a / quantum).round_ties_even() * quantum;
    if r > max {
        return match kind {
            Fp8::E4M3Fn => f32::NAN,
            Fp8::E5M2 => f32::INFINITY.copysign(x),
        };
    }
    (r as f32).copysign(x)
}

/// A `VarBuilder` over `prefix` in `ck` whose weights carry `patches` (for the UNet): patched
/// tensors are computed in float32 and cast to the dtype asked for; others load as usual.
/// With `fp8`, every floating-point weight is first rounded to that format (float8 storage,
/// float32 compute).
pub fn patched_var_builder(
    ck: &Arc<Checkpoint>,
    prefix: &str,
    patches: Arc<PatchSet>,
    fp8: Option<Fp8>,
    dtype: DType,
    device: &Device,
) -> candle_nn::VarBuilder<'static> {
    let backend = PatchedBackend {
        ck: ck.clone(),
        prefix: prefix.to_string(),
        patches,
        fp8,
    };
    candle_nn::VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct PatchedBackend {
    ck: Arc<Checkpoint>,
    prefix: String,
    patches: Arc<PatchSet>,
    fp8: Option<Fp8>,
}

impl PatchedBackend {
    fn round(&self, t: Tensor) -> candle_core::Result<Tensor> {
        match self.fp8 {
            None => Ok(t),
            Some(kind) => {
                let dims = t.dims().to_vec();
                let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let v: Vec<f32> = v.into_iter().map(|x| round_fp8(x, kind)).collect();
                Tensor::from_vec(v, dims, t.device())
            }
        }
    }
}

fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl candle_nn::var_builder::SimpleBackend for PatchedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        crate::checkpoint::fit_stored_shape(t, s, || format!("{}: tensor {}{name}", self.ck.path().display(), self.prefix))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        if self.fp8.is_some() {
            // Stored as float8 first (the model's weights), then patched in float32 and stored
            // again, as ComfyUI patches an fp8 model (it rounds the patched weight stochastically;
            // here to nearest).
            let base = self.round(self.ck.tensor(&full, DType::F32, dev).map_err(to_candle)?)?;
            return match self.patches.apply(&full, &base).map_err(to_candle)? {
                Some(p) => self.round(p)?.to_dtype(dtype),
                None => base.to_dtype(dtype),
            };
        }
        if self.patches.contains(&full) {
            let base = self.ck.tensor(&full, DType::F32, dev).map_err(to_candle)?;
            let patched = self
                .patches
                .apply(&full, &base)
                .map_err(to_candle)?
                .unwrap_or(base);
            return patched.to_dtype(dtype);
        }
        self.ck.tensor(&full, dtype, dev).map_err(to_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.ck.contains(&format!("{}{name}", self.prefix))
    }
}

#[cfg(test)]
mod tests;
