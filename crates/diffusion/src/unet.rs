//! The LDM ("openaimodel") UNet of SD1.x, SD2.x and SDXL, loaded with the checkpoint's own
//! key names (prefix `model.diffusion_model.` stripped by the caller's `VarBuilder`).
//!
//! Layout (ComfyUI `UNetModel`): `time_embed.{0,2}`, optional `label_emb.0.{0,2}` (SDXL ADM),
//! `input_blocks.N.M`, `middle_block.M`, `output_blocks.N.M`, `out.{0,2}`. Every width and
//! depth comes from [`UnetConfig`], so the tiny recipe checkpoints load as well as the real
//! ones.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::ops::{self, Conv2d, GroupNorm, LayerNorm, Linear};

pub use crate::checkpoint::{HeadSpec, UnetConfig};

/// Presets and consistency checks for [`UnetConfig`].
pub trait UnetConfigExt {
    /// SD1.x base.
    fn sd15() -> UnetConfig;
    /// SD2.x (512-base and 768-v share the network).
    fn sd21() -> UnetConfig;
    /// SDXL base.
    fn sdxl() -> UnetConfig;
    /// Checks that the depth lists match the block counts.
    fn check(&self) -> Result<()>;
}

impl UnetConfigExt for UnetConfig {
    fn sd15() -> UnetConfig {
        UnetConfig {
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
        }
    }

    fn sd21() -> UnetConfig {
        UnetConfig {
            context_dim: 1024,
            use_linear_in_transformer: true,
            heads: HeadSpec::Dim(64),
            ..Self::sd15()
        }
    }

    fn sdxl() -> UnetConfig {
        UnetConfig {
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
        }
    }

    fn check(&self) -> Result<()> {
        let levels = self.channel_mult.len();
        if levels == 0 || self.model_channels == 0 || self.num_res_blocks.len() != levels {
            candle_core::bail!(
                "unet config: {levels} levels, {} res-block counts",
                self.num_res_blocks.len()
            );
        }
        let n_in: usize = self.num_res_blocks.iter().sum();
        if self.transformer_depth.len() != n_in {
            candle_core::bail!(
                "unet config: transformer_depth has {} entries, want {n_in}",
                self.transformer_depth.len()
            );
        }
        if self.transformer_depth_output.len() != n_in + levels {
            candle_core::bail!(
                "unet config: transformer_depth_output has {} entries, want {}",
                self.transformer_depth_output.len(),
                n_in + levels
            );
        }
        Ok(())
    }
}

fn heads_for(cfg: &UnetConfig, channels: usize) -> Result<usize> {
    match cfg.heads_for(channels) {
        Some((n, _)) => Ok(n),
        None => candle_core::bail!(
            "unet: heads {:?} do not divide {channels} channels",
            cfg.heads
        ),
    }
}

/// `ResBlock`: GroupNorm-SiLU-conv, plus the projected time embedding, GroupNorm-SiLU-conv,
/// with a 1×1 `skip_connection` when the width changes.
#[derive(Debug)]
struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn load(vb: VarBuilder, in_ch: usize, out_ch: usize, emb_dim: usize) -> Result<Self> {
        let skip = if in_ch != out_ch {
            Some(Conv2d::load(
                vb.pp("skip_connection"),
                in_ch,
                out_ch,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            in_norm: GroupNorm::load(vb.pp("in_layers.0"), 32, in_ch, 1e-5)?,
            in_conv: Conv2d::load(vb.pp("in_layers.2"), in_ch, out_ch, 3, 1, 1)?,
            emb: Linear::load(vb.pp("emb_layers.1"), emb_dim, out_ch, true)?,
            out_norm: GroupNorm::load(vb.pp("out_layers.0"), 32, out_ch, 1e-5)?,
            out_conv: Conv2d::load(vb.pp("out_layers.3"), out_ch, out_ch, 3, 1, 1)?,
            skip,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward_silu(x)?)?;
        let e = self
            .emb
            .forward(&ops::silu(emb)?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = self.out_conv.forward(&self.out_norm.forward_silu(&h)?)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// `CrossAttention` (self-attention when no context is given): bias-free `to_q/k/v`,
/// `to_out.0` with bias.
#[derive(Debug)]
struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn load(vb: VarBuilder, dim: usize, ctx_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: Linear::load(vb.pp("to_q"), dim, dim, false)?,
            to_k: Linear::load(vb.pp("to_k"), ctx_dim, dim, false)?,
            to_v: Linear::load(vb.pp("to_v"), ctx_dim, dim, false)?,
            to_out: Linear::load(vb.pp("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let out = ops::attention(&q, &k, &v, self.heads)?;
        self.to_out.forward(&out)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each
/// pre-normed with a LayerNorm and added back.
#[derive(Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn load(vb: VarBuilder, dim: usize, ctx_dim: usize, heads: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), dim, 1e-5)?,
            attn1: CrossAttention::load(vb.pp("attn1"), dim, dim, heads)?,
            norm2: LayerNorm::load(vb.pp("norm2"), dim, 1e-5)?,
            attn2: CrossAttention::load(vb.pp("attn2"), dim, ctx_dim, heads)?,
            norm3: LayerNorm::load(vb.pp("norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(vb.pp("ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: Linear::load(vb.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + &x)?;
        let h = ops::geglu(&self.ff_proj.forward(&self.norm3.forward(&x)?)?)?;
        self.ff_out.forward(&h)? + x
    }
}

/// `proj_in`/`proj_out`: a 1×1 conv (SD1.x) or a Linear on tokens (SD2.x, SDXL); both are a
/// matrix product over channels, loaded as [`Linear`].
#[derive(Debug)]
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

impl SpatialTransformer {
    fn load(vb: VarBuilder, ch: usize, depth: usize, cfg: &UnetConfig) -> Result<Self> {
        let heads = heads_for(cfg, ch)?;
        let load_proj = |name: &str| {
            if cfg.use_linear_in_transformer {
                Linear::load(vb.pp(name), ch, ch, true)
            } else {
                Linear::load_conv1x1(vb.pp(name), ch, ch)
            }
        };
        let proj_in = load_proj("proj_in")?;
        let proj_out = load_proj("proj_out")?;
        let blocks = (0..depth)
            .map(|k| {
                TransformerBlock::load(
                    vb.pp(format!("transformer_blocks.{k}")),
                    ch,
                    cfg.context_dim,
                    heads,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), 32, ch, 1e-6)?,
            proj_in,
            blocks,
            proj_out,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.norm.forward(x)?;
        // [B, C, H, W] → [B, HW, C]; a 1×1 conv before the reshape equals a Linear after it.
        let t = t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let mut t = self.proj_in.forward(&t)?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let t = self.proj_out.forward(&t)?;
        let t = t.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        t + x
    }
}

/// One element of a `TimestepEmbedSequential`.
#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Transformer(SpatialTransformer),
    /// Nearest ×2 (or to the skip tensor's size) then 3×3 conv.
    Upsample(Conv2d),
    /// 3×3 conv, stride 2.
    Downsample(Conv2d),
}

fn run_seq(
    layers: &[Layer],
    x: &Tensor,
    emb: &Tensor,
    context: &Tensor,
    out_hw: Option<(usize, usize)>,
) -> Result<Tensor> {
    let mut h = x.clone();
    for layer in layers {
        h = match layer {
            Layer::Conv(c) | Layer::Downsample(c) => c.forward(&h)?,
            Layer::Res(r) => r.forward(&h, emb)?,
            Layer::Transformer(t) => t.forward(&h, context)?,
            Layer::Upsample(c) => {
                let (_, _, hh, ww) = h.dims4()?;
                let (th, tw) = out_hw.unwrap_or((hh * 2, ww * 2));
                c.forward(&ops::upsample_nearest(&h, th, tw)?)?
            }
        };
    }
    Ok(h)
}

/// The diffusion model: `eps = unet(xc, timesteps, context, y)`.
#[derive(Debug)]
pub struct UNetModel {
    config: UnetConfig,
    time_embed_0: Linear,
    time_embed_2: Linear,
    label_emb: Option<(Linear, Linear)>,
    input_blocks: Vec<Vec<Layer>>,
    middle_block: Vec<Layer>,
    output_blocks: Vec<Vec<Layer>>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    device: Device,
    /// The dtype activations are computed in (F32 by default; F16/BF16 on a GPU).
    compute_dtype: DType,
}

impl UNetModel {
    /// Builds the network from `vb`, which must be rooted at the UNet prefix
    /// (`model.diffusion_model.`). Weights keep `vb`'s dtype (F16 to halve memory; each op
    /// casts to the activation dtype). Computes in F32 until
    /// [`UNetModel::with_compute_dtype`] says otherwise.
    pub fn load(vb: VarBuilder, config: &UnetConfig) -> Result<Self> {
        config.check()?;
        let cfg = config;
        let mc = cfg.model_channels;
        let emb_dim = cfg.time_embed_dim();
        let time_embed_0 = Linear::load(vb.pp("time_embed.0"), mc, emb_dim, true)?;
        let time_embed_2 = Linear::load(vb.pp("time_embed.2"), emb_dim, emb_dim, true)?;
        let label_emb = match cfg.adm_in_channels {
            Some(adm) => Some((
                Linear::load(vb.pp("label_emb.0.0"), adm, emb_dim, true)?,
                Linear::load(vb.pp("label_emb.0.2"), emb_dim, emb_dim, true)?,
            )),
            None => None,
        };

        let ib = vb.pp("input_blocks");
        let mut input_blocks = vec![vec![Layer::Conv(Conv2d::load(
            ib.pp("0.0"),
            cfg.in_channels,
            mc,
            3,
            1,
            1,
        )?)]];
        let mut chans = vec![mc];
        let mut ch = mc;
        let levels = cfg.channel_mult.len();
        let mut k_in = 0;
        for (level, mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks[level] {
                let n = input_blocks.len();
                let bvb = ib.pp(n);
                let out = mult * mc;
                let mut layers = vec![Layer::Res(ResBlock::load(bvb.pp("0"), ch, out, emb_dim)?)];
                ch = out;
                let depth = cfg.transformer_depth[k_in];
                k_in += 1;
                if depth > 0 {
                    layers.push(Layer::Transformer(SpatialTransformer::load(
                        bvb.pp("1"),
                        ch,
                        depth,
                        cfg,
                    )?));
                }
                input_blocks.push(layers);
                chans.push(ch);
            }
            if level + 1 != levels {
                let n = input_blocks.len();
                input_blocks.push(vec![Layer::Downsample(Conv2d::load(
                    ib.pp(n).pp("0.op"),
                    ch,
                    ch,
                    3,
                    2,
                    1,
                )?)]);
                chans.push(ch);
            }
        }

        let mvb = vb.pp("middle_block");
        let mut middle_block = vec![Layer::Res(ResBlock::load(mvb.pp("0"), ch, ch, emb_dim)?)];
        if let Some(depth) = cfg.transformer_depth_middle {
            middle_block.push(Layer::Transformer(SpatialTransformer::load(
                mvb.pp("1"),
                ch,
                depth,
                cfg,
            )?));
            middle_block.push(Layer::Res(ResBlock::load(mvb.pp("2"), ch, ch, emb_dim)?));
        }

        let ob = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (rev, mult) in cfg.channel_mult.iter().rev().enumerate() {
            let level = levels - 1 - rev;
            let nrb = cfg.num_res_blocks[level];
            for i in 0..=nrb {
                let n = output_blocks.len();
                let bvb = ob.pp(n);
                let skip_ch = chans.pop().unwrap_or(0);
                let out = mult * mc;
                let mut layers = vec![Layer::Res(ResBlock::load(
                    bvb.pp("0"),
                    ch + skip_ch,
                    out,
                    emb_dim,
                )?)];
                ch = out;
                let depth = cfg.transformer_depth_output[n];
                if depth > 0 {
                    layers.push(Layer::Transformer(SpatialTransformer::load(
                        bvb.pp("1"),
                        ch,
                        depth,
                        cfg,
                    )?));
                }
                if level > 0 && i == nrb {
                    let idx = layers.len();
                    layers.push(Layer::Upsample(Conv2d::load(
                        bvb.pp(idx).pp("conv"),
                        ch,
                        ch,
                        3,
                        1,
                        1,
                    )?));
                }
                output_blocks.push(layers);
            }
        }

        Ok(Self {
            config: config.clone(),
            time_embed_0,
            time_embed_2,
            label_emb,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: GroupNorm::load(vb.pp("out.0"), 32, ch, 1e-5)?,
            out_conv: Conv2d::load(vb.pp("out.2"), ch, cfg.out_channels, 3, 1, 1)?,
            device: vb.device().clone(),
            compute_dtype: DType::F32,
        })
    }

    /// Computes in `dtype` from now on (ComfyUI's `unet_dtype` on a GPU: F16, or BF16):
    /// inputs are cast to it, weights are cast per op when stored otherwise, and the
    /// prediction comes back as F32 (`apply_model(...).float()`).
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// The dtype activations are computed in.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// [`UNetModel::forward`] with the timesteps as a `[B]` tensor.
    pub fn forward_t(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t: Vec<f32> = timesteps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        self.forward(x, &t, context, y)
    }

    /// Noise prediction for `x [B, in, h, w]` (already scaled by `c_in`), `timesteps` (one per
    /// batch entry, the model's discrete timestep as F32), `context [B, T, context_dim]` and,
    /// for SDXL, the ADM vector `y [B, adm]`. Computes in [`UNetModel::compute_dtype`] (the
    /// time embedding is made in F32 and then cast, as ComfyUI does) and returns F32.
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, _, _, _) = x.dims4()?;
        if timesteps.len() != b {
            candle_core::bail!("unet: {} timesteps for batch {b}", timesteps.len());
        }
        let dtype = self.compute_dtype;
        let x = x.to_dtype(dtype)?;
        let context = context.to_dtype(dtype)?;
        let t_emb = ops::timestep_embedding(timesteps, self.config.model_channels, &self.device)?
            .to_dtype(dtype)?;
        let mut emb = self
            .time_embed_2
            .forward(&ops::silu(&self.time_embed_0.forward(&t_emb)?)?)?;
        match (&self.label_emb, y) {
            (Some((l0, l2)), Some(y)) => {
                let y = y.to_dtype(dtype)?;
                emb = (emb + l2.forward(&ops::silu(&l0.forward(&y)?)?)?)?;
            }
            (Some(_), None) => candle_core::bail!("unet: this model needs the ADM vector y"),
            (None, Some(_)) => candle_core::bail!("unet: this model takes no ADM vector y"),
            (None, None) => {}
        }

        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = x;
        for block in &self.input_blocks {
            h = run_seq(block, &h, &emb, &context, None)?;
            hs.push(h.clone());
        }
        h = run_seq(&self.middle_block, &h, &emb, &context, None)?;
        for block in &self.output_blocks {
            let skip = match hs.pop() {
                Some(s) => s,
                None => candle_core::bail!("unet: skip connections exhausted"),
            };
            h = Tensor::cat(&[&h, &skip], 1)?;
            let out_hw = match hs.last() {
                Some(s) => {
                    let (_, _, sh, sw) = s.dims4()?;
                    Some((sh, sw))
                }
                None => None,
            };
            h = run_seq(block, &h, &emb, &context, out_hw)?;
        }
        let h = self.out_norm.forward_silu(&h)?;
        self.out_conv.forward(&h)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// A two-level UNet with every kind of block (conv proj or linear proj, ADM or not).
    pub(crate) fn tiny_config(linear: bool, adm: Option<usize>) -> UnetConfig {
        UnetConfig {
            in_channels: 4,
            out_channels: 4,
            model_channels: 32,
            channel_mult: vec![1, 2],
            num_res_blocks: vec![1, 1],
            transformer_depth: vec![0, 1],
            transformer_depth_output: vec![1, 2, 0, 0],
            transformer_depth_middle: Some(1),
            context_dim: 24,
            use_linear_in_transformer: linear,
            adm_in_channels: adm,
            heads: if linear {
                HeadSpec::Dim(16)
            } else {
                HeadSpec::Count(2)
            },
        }
    }

    /// Fills every variable of `varmap` with N(0, 0.1) (rank-1 `weight`s, the norm scales,
    /// with 1 + N(0, 0.1)). The model built from it shares the variables' storage.
    pub(crate) fn randomise(varmap: &VarMap) {
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let t = var.as_tensor();
            let v = if name.ends_with("weight") && t.rank() == 1 {
                (Tensor::randn(0f32, 0.1, t.shape(), t.device()).unwrap() + 1.0).unwrap()
            } else {
                Tensor::randn(0f32, 0.1, t.shape(), t.device()).unwrap()
            };
            var.set(&v).unwrap();
        }
    }

    fn build(cfg: &UnetConfig) -> (VarMap, UNetModel) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = UNetModel::load(vb, cfg).unwrap();
        randomise(&varmap);
        (varmap, model)
    }

    #[test]
    fn tiny_sd15_style_shapes_and_keys() {
        let cfg = tiny_config(false, None);
        let (varmap, model) = build(&cfg);
        let keys: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        for want in [
            "time_embed.0.weight",
            "input_blocks.0.0.weight",
            "input_blocks.2.0.op.weight",
            "input_blocks.3.0.skip_connection.weight",
            "input_blocks.3.1.proj_in.weight",
            "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
            "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
            "output_blocks.1.1.transformer_blocks.1.norm3.bias",
            "output_blocks.1.2.conv.weight",
            "out.2.weight",
        ] {
            assert!(keys.iter().any(|k| k == want), "missing {want}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("label_emb")));
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
        let eps = model.forward(&x, &[999.0, 10.0], &ctx, None).unwrap();
        assert_eq!(eps.dims(), &[2, 4, 8, 8]);
        // odd latent sizes follow the skip connections' shapes
        let x = Tensor::randn(0f32, 1.0, (1, 4, 7, 5), &dev).unwrap();
        let eps = model
            .forward(&x, &[1.0], &ctx.narrow(0, 0, 1).unwrap(), None)
            .unwrap();
        assert_eq!(eps.dims(), &[1, 4, 7, 5]);
        // the time embedding matters
        let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let c1 = ctx.narrow(0, 0, 1).unwrap();
        let a = model.forward(&x, &[1.0], &c1, None).unwrap();
        let b = model.forward(&x, &[500.0], &c1, None).unwrap();
        assert!(ops::max_abs_diff(&a, &b).unwrap() > 1e-4);
    }

    #[test]
    fn tiny_sdxl_style_uses_adm_and_linear_proj() {
        let cfg = tiny_config(true, Some(12));
        let (varmap, model) = build(&cfg);
        let data = varmap.data().lock().unwrap();
        assert_eq!(
            data["input_blocks.3.1.proj_in.weight"].as_tensor().dims(),
            &[64, 64]
        );
        assert_eq!(data["label_emb.0.0.weight"].as_tensor().dims(), &[128, 12]);
        drop(data);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (1, 3, 24), &dev).unwrap();
        let y1 = Tensor::randn(0f32, 1.0, (1, 12), &dev).unwrap();
        let y2 = Tensor::randn(0f32, 1.0, (1, 12), &dev).unwrap();
        let a = model.forward(&x, &[3.0], &ctx, Some(&y1)).unwrap();
        let b = model.forward(&x, &[3.0], &ctx, Some(&y2)).unwrap();
        assert_eq!(a.dims(), &[1, 4, 8, 8]);
        assert!(ops::max_abs_diff(&a, &b).unwrap() > 1e-4);
        assert!(model.forward(&x, &[3.0], &ctx, None).is_err());
    }

    #[test]
    fn f16_weights_give_the_f32_result() {
        let cfg = tiny_config(true, Some(12));
        let (varmap, model) = build(&cfg);
        // round the weights through F16 so both models hold the same values
        let mut f16 = std::collections::HashMap::new();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let t = var.as_tensor().to_dtype(DType::F16).unwrap();
            var.set(&t.to_dtype(DType::F32).unwrap()).unwrap();
            f16.insert(name.clone(), t);
        }
        let vb16 = VarBuilder::from_tensors(f16, DType::F16, &Device::Cpu);
        let model16 = UNetModel::load(vb16, &cfg).unwrap();
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (1, 3, 24), &dev).unwrap();
        let y = Tensor::randn(0f32, 1.0, (1, 12), &dev).unwrap();
        let a = model.forward(&x, &[3.0], &ctx, Some(&y)).unwrap();
        let b = model16.forward(&x, &[3.0], &ctx, Some(&y)).unwrap();
        assert_eq!(b.dtype(), DType::F32);
        assert_eq!(ops::max_abs_diff(&a, &b).unwrap(), 0.0);
    }

    /// Relative L2 error of `b` against `a`.
    pub(crate) fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let n = a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        (d / n).sqrt()
    }

    /// The GPU path (ComfyUI's F16 `unet_dtype`): the whole forward pass in F16 stays within
    /// half-precision rounding of the F32 result, and a wrong dtype would not (the check
    /// also fails when the pass silently ran in F32: the error must be above F32 rounding).
    #[test]
    fn f16_compute_tracks_f32_within_half_precision() {
        for (linear, adm) in [(false, None), (true, Some(12))] {
            let cfg = tiny_config(linear, adm);
            let (varmap, model) = build(&cfg);
            let mut f16 = std::collections::HashMap::new();
            for (name, var) in varmap.data().lock().unwrap().iter() {
                f16.insert(name.clone(), var.as_tensor().to_dtype(DType::F16).unwrap());
            }
            let vb16 = VarBuilder::from_tensors(f16, DType::F16, &Device::Cpu);
            let model16 = UNetModel::load(vb16, &cfg).unwrap().with_compute_dtype(DType::F16);
            assert_eq!(model16.compute_dtype(), DType::F16);
            let dev = Device::Cpu;
            let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
            let ctx = Tensor::randn(0f32, 1.0, (2, 3, 24), &dev).unwrap();
            let y = adm.map(|a| Tensor::randn(0f32, 1.0, (2, a), &dev).unwrap());
            let a = model.forward(&x, &[999.0, 3.0], &ctx, y.as_ref()).unwrap();
            let b = model16.forward(&x, &[999.0, 3.0], &ctx, y.as_ref()).unwrap();
            assert_eq!(b.dtype(), DType::F32);
            let err = rel_l2(&a, &b);
            assert!(err < 1e-2 && err > 1e-5, "linear={linear}: rel L2 {err}");
        }
    }
}

#[cfg(test)]
mod recipe_tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::{Checkpoint, UNET_PREFIX};
    use crate::recipe::{write_recipe_checkpoint, Arch};

    fn tiny(arch: Arch) -> (tempfile::TempDir, Arc<Checkpoint>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.safetensors");
        write_recipe_checkpoint(arch, true, 0, &path).unwrap();
        let ckpt = Arc::new(Checkpoint::open(&path).unwrap());
        (dir, ckpt)
    }

    #[test]
    fn tiny_recipe_unets_load_by_their_own_keys_and_run() {
        for arch in [Arch::Sd15, Arch::Sdxl] {
            let (_dir, ckpt) = tiny(arch);
            let cfg = ckpt.detect().unwrap();
            let unet = UNetModel::load(
                ckpt.var_builder(UNET_PREFIX, DType::F32, &Device::Cpu),
                &cfg.unet,
            )
            .unwrap();
            let dev = Device::Cpu;
            let x = Tensor::randn(0f32, 1.0, (2, 4, 12, 10), &dev).unwrap();
            let ctx = Tensor::randn(0f32, 1.0, (2, 77, cfg.unet.context_dim), &dev).unwrap();
            let y = cfg
                .unet
                .adm_in_channels
                .map(|a| Tensor::randn(0f32, 1.0, (2, a), &dev).unwrap());
            let eps = unet.forward(&x, &[999.0, 354.0], &ctx, y.as_ref()).unwrap();
            assert_eq!(eps.dims(), &[2, 4, 12, 10]);
            let v: Vec<f32> = eps.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()));
            // F16-resident weights give the same numbers (the F16→F32 cast is exact)
            let unet16 = UNetModel::load(
                ckpt.var_builder(UNET_PREFIX, DType::F16, &Device::Cpu),
                &cfg.unet,
            )
            .unwrap();
            let eps16 = unet16
                .forward(&x, &[999.0, 354.0], &ctx, y.as_ref())
                .unwrap();
            assert_eq!(ops::max_abs_diff(&eps, &eps16).unwrap(), 0.0, "{arch:?}");
        }
    }
}
