//! CLIP text encoders (CLIP-L, OpenCLIP-H/G) and what `CLIPTextEncode` does with them.
//!
//! - [`ClipTextModel`]: one transformer tower (`comfy/clip_model.py`): token + position
//!   embeddings (f32), pre-LN blocks with causal self-attention (padding is not masked), quick-GELU
//!   (CLIP-L) or GELU (OpenCLIP), final LayerNorm, pooled output at the first end token, optional
//!   `text_projection`. Weights stay in the file dtype (F16) and are widened to f32 per op, as
//!   ComfyUI's `manual_cast` does; all arithmetic is f32.
//! - [`ClipModel`]: the encoders of a checkpoint plus the prompt tokenizer; `encode` applies
//!   ComfyUI's token-weight rule `z_empty + (z − z_empty)·w`, concatenates 77-token windows, and
//!   for SDXL concatenates CLIP-L and CLIP-G features (penultimate layers, no final LN) into 2048
//!   wide conditioning with CLIP-G's projected pooled output.
//! - [`adm`]: SDXL's ADM vector from the pooled output and the size conditioning.
//!
//! Clip skip (`CLIPSetLastLayer`): `encode(&tokens, Some(-2))` selects block `num_layers − 2` for
//! every encoder; `None` keeps each family's default (SD1: last layer + final LN; SD2: −2 + LN;
//! SDXL: −2 without LN).

pub mod adm;

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor, D};

use crate::checkpoint::config::{
    Activation, ClipKind, ClipLayout, Family, ModelConfig, TextEncoderConfig,
};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::lora::PatchSet;
use crate::tokenizer::{PromptTokenizer, Token, Tokens, Window, END_TOKEN, START_TOKEN};

/// A weight kept in its stored dtype and widened to f32 at use.
#[derive(Debug, Clone)]
struct Weight(Tensor);

impl Weight {
    fn f32(&self) -> Result<Tensor> {
        Ok(if self.0.dtype() == DType::F32 {
            self.0.clone()
        } else {
            self.0.to_dtype(DType::F32)?
        })
    }
}

#[derive(Debug, Clone)]
struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

impl Linear {
    /// `x [N, in] → [N, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.f32()?.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(x, &self.w, &self.b, 1e-5)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Loads tensors of one encoder: in `storage` (ComfyUI's `text_encoder_dtype`, F16 by
/// default) or, with `None`, in the file's dtype; LoRA patches are added in that dtype;
/// small vectors are then widened to F32 (exact).
struct Loader<'a> {
    ck: &'a Checkpoint,
    prefix: &'a str,
    device: &'a Device,
    /// LoRA patches applied to the weights as they load (see [`crate::lora`]).
    patches: Option<&'a PatchSet>,
    /// The dtype weights are held in (`None`: as stored).
    storage: Option<DType>,
}

impl Loader<'_> {
    /// The tensor `name` in the storage dtype, patched; widened to F32 when `widen`.
    fn raw(&self, name: &str, widen: bool) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let t = stored_tensor(self.ck, &full, self.device, self.storage)?;
        let t = patched(self.patches, &full, t)?;
        Ok(if widen { t.to_dtype(DType::F32)? } else { t })
    }
    fn weight(&self, name: &str) -> Result<Weight> {
        Ok(Weight(self.raw(name, false)?))
    }
    fn f32(&self, name: &str) -> Result<Tensor> {
        self.raw(name, true)
    }
    fn linear(&self, name: &str) -> Result<Linear> {
        Ok(Linear {
            w: self.weight(&format!("{name}.weight"))?,
            b: Some(self.f32(&format!("{name}.bias"))?),
        })
    }
    fn ln(&self, name: &str) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.f32(&format!("{name}.weight"))?,
            b: self.f32(&format!("{name}.bias"))?,
        })
    }
}

/// `t` (the stored tensor `key`) with its LoRA patches, cast back to `t`'s dtype.
fn patched(patches: Option<&PatchSet>, key: &str, t: Tensor) -> Result<Tensor> {
    match patches.map(|p| p.apply(key, &t)).transpose()?.flatten() {
        Some(p) => Ok(p.to_dtype(t.dtype())?),
        None => Ok(t),
    }
}

/// The tensor `name` of `ck` converted to `storage` (rounded, like ComfyUI's `.to(dtype)`),
/// or in its stored float dtype when `storage` is `None`.
fn stored_tensor(ck: &Checkpoint, name: &str, device: &Device, storage: Option<DType>) -> Result<Tensor> {
    let info = ck
        .info(name)
        .ok_or_else(|| ck.error(format!("missing text encoder tensor {name:?}")))?;
    let stored = match info.dtype {
        crate::checkpoint::StoredDtype::F16 => DType::F16,
        crate::checkpoint::StoredDtype::BF16 => DType::BF16,
        _ => DType::F32,
    };
    let t = ck.tensor(name, stored, device)?;
    Ok(match storage {
        Some(s) if s != stored => t.to_dtype(s)?,
        _ => t,
    })
}

/// Which hidden state becomes the conditioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSel {
    /// The final output after the final LayerNorm.
    Last,
    /// Output of block `idx` (0-based; negative counts from the end), final LN applied if
    /// `layer_norm`.
    Hidden {
        /// Block index (`-2` = penultimate).
        idx: i32,
        /// Apply the final LayerNorm to it.
        layer_norm: bool,
    },
}

/// One CLIP text transformer.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    /// Its configuration.
    pub config: TextEncoderConfig,
    token_embedding: Weight,
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_ln: LayerNorm,
    /// `[hidden, proj]`, used as `x @ P`.
    projection: Option<Weight>,
    device: Device,
}

impl ClipTextModel {
    /// Loads the encoder described by `cfg` from `ck` onto `device`, weights as stored.
    pub fn load(ck: &Checkpoint, cfg: &TextEncoderConfig, device: &Device) -> Result<Self> {
        Self::load_with(ck, cfg, device, None, None)
    }

    /// [`ClipTextModel::load`] with LoRA `patches` applied to the weights (keys of `ck`) and
    /// the weights held in `storage` (ComfyUI's `text_encoder_dtype`; `None`: as stored).
    /// The forward pass runs in F32 whatever the storage.
    pub fn load_with(
        ck: &Checkpoint,
        cfg: &TextEncoderConfig,
        device: &Device,
        patches: Option<&PatchSet>,
        storage: Option<DType>,
    ) -> Result<Self> {
        let l = Loader {
            ck,
            prefix: &cfg.prefix,
            device,
            patches,
            storage,
        };
        let d = cfg.hidden;
        let mut blocks = Vec::with_capacity(cfg.layers);
        let (token_embedding, position_embedding, final_ln, projection) = match cfg.layout {
            ClipLayout::HuggingFace => {
                for i in 0..cfg.layers {
                    let p = format!("encoder.layers.{i}");
                    blocks.push(Block {
                        ln1: l.ln(&format!("{p}.layer_norm1"))?,
                        q: l.linear(&format!("{p}.self_attn.q_proj"))?,
                        k: l.linear(&format!("{p}.self_attn.k_proj"))?,
                        v: l.linear(&format!("{p}.self_attn.v_proj"))?,
                        o: l.linear(&format!("{p}.self_attn.out_proj"))?,
                        ln2: l.ln(&format!("{p}.layer_norm2"))?,
                        fc1: l.linear(&format!("{p}.mlp.fc1"))?,
                        fc2: l.linear(&format!("{p}.mlp.fc2"))?,
                    });
                }
                // HF `text_projection.weight` is a Linear weight [P, C]; store as [C, P].
                let proj_name = format!(
                    "{}text_projection.weight",
                    cfg.prefix
                        .strip_suffix("text_model.")
                        .unwrap_or(&cfg.prefix)
                );
                let projection = if ck.contains(&proj_name) {
                    // Held in the storage dtype so a LoRA patch is rounded back to it (as
                    // ComfyUI stores the patched weight), then widened (exact for F16/BF16).
                    let w = stored_tensor(ck, &proj_name, device, storage)?;
                    Some(Weight(
                        patched(patches, &proj_name, w)?
                            .to_dtype(DType::F32)?
                            .t()?
                            .contiguous()?,
                    ))
                } else {
                    None
                };
                (
                    l.weight("embeddings.token_embedding.weight")?,
                    l.f32("embeddings.position_embedding.weight")?,
                    l.ln("final_layer_norm")?,
                    projection,
                )
            }
            ClipLayout::OpenClip => {
                for i in 0..cfg.layers {
                    let p = format!("transformer.resblocks.{i}");
                    let w = l.weight(&format!("{p}.attn.in_proj_weight"))?.0;
                    let b = l.f32(&format!("{p}.attn.in_proj_bias"))?;
                    let part = |k: usize| -> Result<Linear> {
                        Ok(Linear {
                            w: Weight(w.narrow(0, k * d, d)?.contiguous()?),
                            b: Some(b.narrow(0, k * d, d)?.contiguous()?),
                        })
                    };
                    blocks.push(Block {
                        ln1: l.ln(&format!("{p}.ln_1"))?,
                        q: part(0)?,
                        k: part(1)?,
                        v: part(2)?,
                        o: l.linear(&format!("{p}.attn.out_proj"))?,
                        ln2: l.ln(&format!("{p}.ln_2"))?,
                        fc1: l.linear(&format!("{p}.mlp.c_fc"))?,
                        fc2: l.linear(&format!("{p}.mlp.c_proj"))?,
                    });
                }
                let projection = if cfg.projection_dim.is_some() {
                    Some(l.weight("text_projection")?)
                } else {
                    None
                };
                (
                    l.weight("token_embedding.weight")?,
                    l.f32("positional_embedding")?,
                    l.ln("ln_final")?,
                    projection,
                )
            }
        };
        let (v, dd) = token_embedding.0.dims2()?;
        if dd != d || v != cfg.vocab_size {
            return Err(ck.error(format!(
                "{}: token embedding is {v}x{dd}, expected {}x{d}",
                cfg.prefix, cfg.vocab_size
            )));
        }
        Ok(ClipTextModel {
            config: cfg.clone(),
            token_embedding,
            position_embedding,
            blocks,
            final_ln,
            projection,
            device: device.clone(),
        })
    }

    /// Input embeddings of windows (ComfyUI `process_tokens`): token rows or inserted vectors
    /// (vectors of the wrong width are dropped and the window is padded at the end); returns
    /// `[B, T, D]` and, per window, the index of the first end token (pooled position).
    fn embed(&self, windows: &[Vec<Token>]) -> Result<(Tensor, Vec<usize>)> {
        let d = self.config.hidden;
        let pad = self.config.pad_token();
        let mut rows = Vec::with_capacity(windows.len());
        let mut eos = Vec::with_capacity(windows.len());
        for w in windows {
            // Build the final sequence of items.
            enum Item<'a> {
                Id(u32),
                Vec(&'a [f32]),
            }
            let mut items: Vec<Item> = Vec::with_capacity(w.len());
            let mut dropped = 0;
            for t in w {
                match t {
                    Token::Id(i) => items.push(Item::Id(*i)),
                    Token::Embedding(v) if v.len() == d => items.push(Item::Vec(v.as_slice())),
                    Token::Embedding(v) => {
                        tracing::warn!(
                            "WARNING: shape mismatch when trying to apply embedding, embedding will be ignored {} != {d}",
                            v.len()
                        );
                        dropped += 1;
                    }
                }
            }
            items.extend((0..dropped).map(|_| Item::Id(pad)));
            let first_end = items
                .iter()
                .position(|it| matches!(it, Item::Id(i) if *i == END_TOKEN));
            eos.push(first_end.unwrap_or(items.len().saturating_sub(1)));
            // Gather token rows in one index_select, then splice vectors in.
            let ids: Vec<u32> = items
                .iter()
                .map(|it| match it {
                    Item::Id(i) => *i,
                    Item::Vec(_) => 0,
                })
                .collect();
            if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
                return Err(Error::Msg(format!("token id {bad} outside the vocabulary")));
            }
            let n = ids.len();
            let idx = Tensor::from_vec(ids, n, &self.device)?;
            let mut x = self
                .token_embedding
                .0
                .index_select(&idx, 0)?
                .to_dtype(DType::F32)?;
            let vec_rows: Vec<(usize, &[f32])> = items
                .iter()
                .enumerate()
                .filter_map(|(j, it)| match it {
                    Item::Vec(v) => Some((j, *v)),
                    Item::Id(_) => None,
                })
                .collect();
            if !vec_rows.is_empty() {
                let mut data: Vec<f32> = x.flatten_all()?.to_vec1()?;
                for (j, v) in vec_rows {
                    data[j * d..(j + 1) * d].copy_from_slice(v);
                }
                x = Tensor::from_vec(data, (n, d), &self.device)?;
            }
            rows.push(x);
        }
        let x = Tensor::stack(&rows, 0)?;
        let t = x.dim(1)?;
        if t > self.config.max_positions {
            return Err(Error::Msg(format!(
                "{t} tokens exceed the {} positions",
                self.config.max_positions
            )));
        }
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        Ok((x, eos))
    }

    fn attention(&self, blk: &Block, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = self.config.heads;
        let hd = d / h;
        let x2 = x.reshape((b * t, d))?;
        let split = |l: &Linear| -> Result<Tensor> {
            Ok(l.forward(&x2)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (split(&blk.q)?, split(&blk.k)?, split(&blk.v)?);
        let scale = (hd as f64).powf(-0.5);
        let sim = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let p = candle_nn::ops::softmax_last_dim(&sim)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b * t, d))?;
        Ok(blk.o.forward(&o)?.reshape((b, t, d))?)
    }

    fn mlp(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = blk.fc1.forward(&x.reshape((b * t, d))?)?;
        let h = match self.config.activation {
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Gelu => h.gelu_erf()?,
        };
        Ok(blk.fc2.forward(&h)?.reshape((b, t, d))?)
    }

    /// Runs the transformer on windows; returns `(cond [B, T, D], pooled [B, P])` where cond is
    /// the hidden state chosen by `layer` and pooled the final-LN state at the first end token,
    /// projected when the model has a projection.
    pub fn forward(&self, windows: &[Vec<Token>], layer: LayerSel) -> Result<(Tensor, Tensor)> {
        let (mut x, eos) = self.embed(windows)?;
        let t = x.dim(1)?;
        let mask: Vec<f32> = (0..t * t)
            .map(|k| if k % t > k / t { -f32::MAX } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &self.device)?;
        let n = self.blocks.len() as i32;
        let want = match layer {
            LayerSel::Last => None,
            LayerSel::Hidden { idx, .. } => Some(if idx < 0 { n + idx } else { idx }),
        };
        let mut hidden = None;
        for (i, blk) in self.blocks.iter().enumerate() {
            x = (&x + self.attention(blk, &blk.ln1.forward(&x)?, &mask)?)?;
            x = (&x + self.mlp(blk, &blk.ln2.forward(&x)?)?)?;
            if want == Some(i as i32) {
                hidden = Some(x.clone());
            }
        }
        let last = self.final_ln.forward(&x)?;
        let cond = match (layer, hidden) {
            (
                LayerSel::Hidden {
                    layer_norm: true, ..
                },
                Some(h),
            ) => self.final_ln.forward(&h)?,
            (
                LayerSel::Hidden {
                    layer_norm: false, ..
                },
                Some(h),
            ) => h,
            _ => last.clone(),
        };
        let pooled_rows: Vec<Tensor> = eos
            .iter()
            .enumerate()
            .map(|(bi, &e)| last.i((bi, e)))
            .collect::<candle_core::Result<_>>()?;
        let mut pooled = Tensor::stack(&pooled_rows, 0)?;
        if let Some(p) = &self.projection {
            pooled = pooled.matmul(&p.f32()?)?;
        }
        Ok((cond, pooled))
    }

    /// ComfyUI `encode_token_weights`: encodes all windows (plus an empty window when any
    /// weight ≠ 1), applies `z_empty + (z − z_empty)·w`, concatenates windows along the token
    /// axis → `[1, 77·K, D]`; pooled = window 0's → `[1, P]`.
    pub fn encode_token_weights(
        &self,
        windows: &[Window],
        layer: LayerSel,
    ) -> Result<(Tensor, Tensor)> {
        let max_len = windows.iter().map(|w| w.len()).max().unwrap_or(0);
        let has_weights = windows.iter().any(|w| w.iter().any(|t| t.weight != 1.0));
        let mut to_encode: Vec<Vec<Token>> = windows
            .iter()
            .map(|w| w.iter().map(|t| t.token.clone()).collect())
            .collect();
        let sections = to_encode.len();
        if has_weights || sections == 0 {
            let len = max_len.max(2);
            let mut empty = vec![Token::Id(START_TOKEN), Token::Id(END_TOKEN)];
            empty.extend((2..len).map(|_| Token::Id(self.config.pad_token())));
            to_encode.push(empty);
        }
        let (z, pooled) = self.forward(&to_encode, layer)?;
        let first_pooled = pooled.narrow(0, 0, 1)?;
        if sections == 0 {
            return Ok((z.narrow(0, z.dim(0)? - 1, 1)?, first_pooled));
        }
        let mut outs = Vec::with_capacity(sections);
        let z_empty = if has_weights {
            Some(z.i(z.dim(0)? - 1)?)
        } else {
            None
        };
        for (k, w) in windows.iter().enumerate() {
            let zk = z.i(k)?;
            let zk = match &z_empty {
                Some(ze) => {
                    let t = zk.dim(0)?;
                    let w64: Vec<f64> = (0..t)
                        .map(|j| w.get(j).map(|x| x.weight).unwrap_or(1.0))
                        .collect();
                    let wv: Vec<f32> = w64.iter().map(|&x| x as f32).collect();
                    let wcol = Tensor::from_vec(wv, (t, 1), &self.device)?;
                    // Rows with weight 1 are kept bit for bit (ComfyUI skips them).
                    let mixed = (zk.broadcast_sub(ze)?.broadcast_mul(&wcol)? + ze)?;
                    let keep: Vec<u8> = w64.iter().map(|&x| u8::from(x == 1.0)).collect();
                    let keep =
                        Tensor::from_vec(keep, (t, 1), &self.device)?.broadcast_as(zk.shape())?;
                    keep.where_cond(&zk, &mixed)?
                }
                None => zk,
            };
            outs.push(zk);
        }
        Ok((Tensor::cat(&outs, 0)?.unsqueeze(0)?, first_pooled))
    }
}

/// The text encoders of a checkpoint with their tokenizer (ComfyUI's `CLIP` object).
#[derive(Debug, Clone)]
pub struct ClipModel {
    family: Family,
    encoders: Vec<ClipTextModel>,
    tokenizer: PromptTokenizer,
}

impl ClipModel {
    /// Loads every text encoder listed in `config`, weights as stored (no embedding folders;
    /// see [`ClipModel::with_embedding_dirs`]).
    pub fn load(ck: &Checkpoint, config: &ModelConfig, device: &Device) -> Result<Self> {
        Self::load_with(ck, config, device, None)
    }

    /// [`ClipModel::load`] with the weights held in `storage` (`None`: as stored).
    pub fn load_with(ck: &Checkpoint, config: &ModelConfig, device: &Device, storage: Option<DType>) -> Result<Self> {
        if config.text_encoders.is_empty() {
            return Err(ck.error(format!(
                "no text encoder found for this {} checkpoint",
                config.family.name()
            )));
        }
        let started = std::time::Instant::now();
        let encoders = config
            .text_encoders
            .iter()
            .map(|c| ClipTextModel::load_with(ck, c, device, None, storage))
            .collect::<Result<Vec<_>>>()?;
        tracing::info!(
            "loaded {} text encoder(s) in {:.1}s",
            encoders.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(ClipModel {
            family: config.family,
            tokenizer: PromptTokenizer::new(&config.text_encoders, None),
            encoders,
        })
    }

    /// Text encoders loaded separately (`CLIPLoader`, `DualCLIPLoader`, LoRA-patched copies),
    /// in ComfyUI order (CLIP-L before CLIP-G), as the CLIP of `family`.
    pub fn from_encoders(family: Family, encoders: Vec<ClipTextModel>) -> Result<Self> {
        if encoders.is_empty() {
            return Err(Error::Msg("no text encoder".into()));
        }
        let cfgs: Vec<TextEncoderConfig> = encoders.iter().map(|e| e.config.clone()).collect();
        Ok(ClipModel {
            family,
            tokenizer: PromptTokenizer::new(&cfgs, None),
            encoders,
        })
    }

    /// Enables `embedding:name` lookups in `dirs` (ComfyUI's `models/embeddings`).
    pub fn with_embedding_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        let cfgs: Vec<TextEncoderConfig> = self.encoders.iter().map(|e| e.config.clone()).collect();
        self.tokenizer = PromptTokenizer::new(&cfgs, Some(dirs));
        self
    }

    /// The model family these encoders belong to.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The loaded encoders.
    pub fn encoders(&self) -> &[ClipTextModel] {
        &self.encoders
    }

    /// Tokenizes a prompt for every encoder.
    pub fn tokenize(&self, text: &str) -> Tokens {
        self.tokenizer.tokenize(text)
    }

    fn layer_for(&self, enc: &ClipTextModel, clip_skip: Option<i32>) -> LayerSel {
        let ln = match self.family {
            Family::Sd1 | Family::Sd2 => true,
            Family::Sdxl | Family::SdxlRefiner => false,
        };
        let n = enc.config.layers as i32;
        match clip_skip {
            None => match self.family {
                Family::Sd1 => LayerSel::Last,
                _ => LayerSel::Hidden {
                    idx: -2,
                    layer_norm: ln,
                },
            },
            Some(k) if k.unsigned_abs() as i32 > n => LayerSel::Last,
            Some(k) => LayerSel::Hidden {
                idx: k,
                layer_norm: ln,
            },
        }
    }

    /// `encode_from_tokens(tokens, return_pooled=True)`: `(cond [1, 77·K, D], pooled [1, P])`.
    /// `clip_skip` is `CLIPSetLastLayer`'s `stop_at_clip_layer` (e.g. `Some(-2)`), `None` for
    /// the default.
    pub fn encode(&self, tokens: &Tokens, clip_skip: Option<i32>) -> Result<(Tensor, Tensor)> {
        let mut outs = Vec::new();
        for enc in &self.encoders {
            let windows = tokens.get(enc.config.kind).ok_or_else(|| {
                Error::Msg(format!(
                    "tokens lack the {:?} encoder's windows",
                    enc.config.kind
                ))
            })?;
            outs.push((
                enc.config.kind,
                enc.encode_token_weights(windows, self.layer_for(enc, clip_skip))?,
            ));
        }
        match self.family {
            Family::Sdxl => {
                let l = outs.iter().find(|(k, _)| *k == ClipKind::L);
                let g = outs.iter().find(|(k, _)| *k == ClipKind::G);
                match (l, g) {
                    (Some((_, (lc, _))), Some((_, (gc, gp)))) => {
                        let cut = lc.dim(1)?.min(gc.dim(1)?);
                        let cond = Tensor::cat(
                            &[&lc.narrow(1, 0, cut)?, &gc.narrow(1, 0, cut)?],
                            D::Minus1,
                        )?;
                        Ok((cond, gp.clone()))
                    }
                    _ => Err(Error::Msg("SDXL needs both CLIP-L and CLIP-G".into())),
                }
            }
            _ => {
                let (_, (c, p)) = outs
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Msg("no text encoder".into()))?;
                Ok((c, p))
            }
        }
    }
}

#[cfg(test)]
mod tests;
