//! The KL autoencoder (LDM `AutoencoderKL`) of SD1.x / SD2.x / SDXL, with the checkpoint's
//! key names (prefix `first_stage_model.` stripped by the caller's `VarBuilder`).
//!
//! - [`Vae::decode`]: `post_quant_conv` → decoder (no scale factor: latents are in VAE space).
//! - [`Vae::encode`]: encoder → `quant_conv` → the posterior's mode (mean, first half of
//!   the moments).
//! - [`Vae::decode_tiled`] / [`Vae::encode_tiled`]: ComfyUI's `VAE.decode_tiled_` /
//!   `encode_tiled_` (three overlapping tilings with feathered blending, averaged).
//!
//! Image tensors at the API are ComfyUI IMAGEs: `[B, H, W, 3]` in `[0, 1]`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::ops::{self, Conv2d, GroupNorm};

pub use crate::checkpoint::VaeConfig;

fn norm(vb: VarBuilder, ch: usize) -> Result<GroupNorm> {
    GroupNorm::load(vb, 32, ch, 1e-6)
}

/// `ResnetBlock` without time embedding.
#[derive(Debug)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn load(vb: VarBuilder, in_ch: usize, out_ch: usize) -> Result<Self> {
        let nin_shortcut = if in_ch != out_ch {
            Some(Conv2d::load(vb.pp("nin_shortcut"), in_ch, out_ch, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: norm(vb.pp("norm1"), in_ch)?,
            conv1: Conv2d::load(vb.pp("conv1"), in_ch, out_ch, 3, 1, 1)?,
            norm2: norm(vb.pp("norm2"), out_ch)?,
            conv2: Conv2d::load(vb.pp("conv2"), out_ch, out_ch, 3, 1, 1)?,
            nin_shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over all pixels, with 1×1-conv `q/k/v/proj_out`.
#[derive(Debug)]
struct AttnBlock {
    norm: GroupNorm,
    q: ops::Linear,
    k: ops::Linear,
    v: ops::Linear,
    proj_out: ops::Linear,
}

impl AttnBlock {
    fn load(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self {
            norm: norm(vb.pp("norm"), ch)?,
            q: ops::Linear::load_conv1x1(vb.pp("q"), ch, ch)?,
            k: ops::Linear::load_conv1x1(vb.pp("k"), ch, ch)?,
            v: ops::Linear::load_conv1x1(vb.pp("v"), ch, ch)?,
            proj_out: ops::Linear::load_conv1x1(vb.pp("proj_out"), ch, ch)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.norm.forward(x)?;
        let t = t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.q.forward(&t)?;
        let k = self.k.forward(&t)?;
        let v = self.v.forward(&t)?;
        let o = ops::attention(&q, &k, &v, 1)?;
        let o = self.proj_out.forward(&o)?;
        let o = o.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        x + o
    }
}

/// LDM `Encoder`: image `[B, 3, H, W]` in [−1, 1] → moments `[B, 2z, H/8, W/8]`.
#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    /// Per level: res blocks and the optional stride-2 downsample conv (padded (0,1,0,1)).
    levels: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// `mid.block_1`, optional `mid.attn_1`, `mid.block_2`.
#[derive(Debug)]
struct Mid {
    block_1: ResnetBlock,
    attn_1: Option<AttnBlock>,
    block_2: ResnetBlock,
}

impl Mid {
    fn load(vb: VarBuilder, ch: usize, attention: bool) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::load(vb.pp("block_1"), ch, ch)?,
            attn_1: if attention {
                Some(AttnBlock::load(vb.pp("attn_1"), ch)?)
            } else {
                None
            },
            block_2: ResnetBlock::load(vb.pp("block_2"), ch, ch)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.block_1.forward(x)?;
        if let Some(a) = &self.attn_1 {
            h = a.forward(&h)?;
        }
        self.block_2.forward(&h)
    }
}

impl Encoder {
    fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let conv_in = Conv2d::load(vb.pp("conv_in"), cfg.in_channels, cfg.ch, 3, 1, 1)?;
        let mut levels = Vec::new();
        let mut block_in = cfg.ch;
        let n = cfg.ch_mult.len();
        for (i, mult) in cfg.ch_mult.iter().enumerate() {
            let lvb = vb.pp(format!("down.{i}"));
            let block_out = cfg.ch * mult;
            let mut blocks = Vec::new();
            for j in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::load(
                    lvb.pp(format!("block.{j}")),
                    block_in,
                    block_out,
                )?);
                block_in = block_out;
            }
            let down = if i + 1 != n {
                Some(Conv2d::load(
                    lvb.pp("downsample.conv"),
                    block_in,
                    block_in,
                    3,
                    2,
                    0,
                )?)
            } else {
                None
            };
            levels.push((blocks, down));
        }
        let mid = Mid::load(vb.pp("mid"), block_in, cfg.mid_attention)?;
        Ok(Self {
            conv_in,
            levels,
            mid,
            norm_out: norm(vb.pp("norm_out"), block_in)?,
            conv_out: Conv2d::load(vb.pp("conv_out"), block_in, 2 * cfg.z_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for (blocks, down) in &self.levels {
            for b in blocks {
                h = b.forward(&h)?;
            }
            if let Some(d) = down {
                h = h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                h = d.forward(&h)?;
            }
        }
        h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// LDM `Decoder`: latent `[B, z, h, w]` → image `[B, 3, 8h, 8w]` in ≈[−1, 1].
#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    /// Highest level first (`up.{L−1}` … `up.0`): res blocks and the optional upsample conv.
    levels: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let n = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[n - 1];
        let conv_in = Conv2d::load(vb.pp("conv_in"), cfg.z_channels, block_in, 3, 1, 1)?;
        let mid = Mid::load(vb.pp("mid"), block_in, cfg.mid_attention)?;
        let mut levels = Vec::new();
        for i in (0..n).rev() {
            let lvb = vb.pp(format!("up.{i}"));
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                blocks.push(ResnetBlock::load(
                    lvb.pp(format!("block.{j}")),
                    block_in,
                    block_out,
                )?);
                block_in = block_out;
            }
            let up = if i != 0 {
                Some(Conv2d::load(
                    lvb.pp("upsample.conv"),
                    block_in,
                    block_in,
                    3,
                    1,
                    1,
                )?)
            } else {
                None
            };
            levels.push((blocks, up));
        }
        Ok(Self {
            conv_in,
            mid,
            levels,
            norm_out: norm(vb.pp("norm_out"), block_in)?,
            conv_out: Conv2d::load(vb.pp("conv_out"), block_in, cfg.out_ch, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid.forward(&h)?;
        for (blocks, up) in &self.levels {
            for b in blocks {
                h = b.forward(&h)?;
            }
            if let Some(u) = up {
                let (_, _, hh, ww) = h.dims4()?;
                h = u.forward(&ops::upsample_nearest(&h, hh * 2, ww * 2)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// The KL autoencoder.
#[derive(Debug)]
pub struct Vae {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    /// The dtype it computes in: the dtype its weights were loaded in (ComfyUI's `vae_dtype`).
    dtype: DType,
}

impl Vae {
    /// Builds the autoencoder from `vb` rooted at `first_stage_model.`. It computes in
    /// `vb`'s dtype (F32; BF16 or F16 on a GPU) and hands back F32.
    pub fn load(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        if config.ch_mult.is_empty() {
            candle_core::bail!("vae config: no levels");
        }
        let (z, e) = (config.z_channels, config.embed_dim);
        let (quant_conv, post_quant_conv) = if config.has_quant_conv {
            (
                Some(Conv2d::load(vb.pp("quant_conv"), 2 * z, 2 * e, 1, 1, 0)?),
                Some(Conv2d::load(vb.pp("post_quant_conv"), e, z, 1, 1, 0)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::load(vb.pp("encoder"), config)?,
            decoder: Decoder::load(vb.pp("decoder"), config)?,
            quant_conv,
            post_quant_conv,
            dtype: vb.dtype(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// `first_stage_model.decode`: latent `[B, z, h, w]` → `[B, 3, 8h, 8w]`, unclamped.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let z = latent.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(&z)?,
            None => z,
        };
        self.decoder.forward(&z)?.to_dtype(DType::F32)
    }

    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `quant_conv(encoder(x))` for `x [B, 3, H, W]` in [−1, 1]: the posterior's moments
    /// `[B, 2z, H/8, W/8]` (mean, then log-variance).
    pub fn encode_moments(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.encoder.forward(&x.to_dtype(self.dtype)?)?;
        match &self.quant_conv {
            Some(c) => c.forward(&h)?.to_dtype(DType::F32),
            None => h.to_dtype(DType::F32),
        }
    }

    /// `first_stage_model.encode`: the posterior's mode (mean) for `x [B, 3, H, W]` in [−1, 1].
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.encode_moments(x)?;
        let half = m.dim(1)? / 2;
        m.narrow(1, 0, half)
    }

    /// ComfyUI `VAE.decode`: latent → IMAGE `[B, H, W, 3]` = `clamp((x + 1) / 2, 0, 1)`.
    pub fn decode_image(&self, latent: &Tensor) -> Result<Tensor> {
        to_image(&self.decode(latent)?)
    }

    /// ComfyUI `VAE.encode`: IMAGE `[B, H, W, C≥3]` (sides multiples of 8; the node crops)
    /// → latent mean.
    pub fn encode_image(&self, image: &Tensor) -> Result<Tensor> {
        self.encode(&from_image(image)?)
    }

    /// ComfyUI `VAE.decode_tiled_`: three tilings of the latent — `(tile_x/2, tile_y·2)`,
    /// `(tile_x·2, tile_y/2)`, `(tile_x, tile_y)` latent pixels with `overlap` — each
    /// feather-blended, averaged, then mapped to an IMAGE. `VAEDecodeTiled` passes
    /// `tile_size/8` and `overlap/8`.
    pub fn decode_tiled(
        &self,
        latent: &Tensor,
        tile_x: usize,
        tile_y: usize,
        overlap: usize,
    ) -> Result<Tensor> {
        let r = self.config.downscale();
        let f = |t: &Tensor| self.decode(t);
        let geom = Scale::Up(r);
        let a = tiled_scale(
            latent,
            &f,
            tile_x / 2,
            tile_y * 2,
            overlap,
            geom,
            self.config.out_ch,
        )?;
        let b = tiled_scale(
            latent,
            &f,
            tile_x * 2,
            tile_y / 2,
            overlap,
            geom,
            self.config.out_ch,
        )?;
        let c = tiled_scale(
            latent,
            &f,
            tile_x,
            tile_y,
            overlap,
            geom,
            self.config.out_ch,
        )?;
        to_image(&(((a + b)? + c)? / 3.0)?)
    }

    /// ComfyUI `VAE.encode_tiled_`: IMAGE `[B, H, W, C≥3]` encoded in pixel tiles
    /// `(tile_x, tile_y)`, `(tile_x·2, tile_y/2)`, `(tile_x/2, tile_y·2)` with `overlap`,
    /// feather-blended and averaged. `VAEEncodeTiled` passes `tile_size` and `overlap`.
    pub fn encode_tiled(
        &self,
        image: &Tensor,
        tile_x: usize,
        tile_y: usize,
        overlap: usize,
    ) -> Result<Tensor> {
        let x = from_image(image)?;
        let r = self.config.downscale();
        let f = |t: &Tensor| self.encode(t);
        let geom = Scale::Down(r);
        let z = if self.config.has_quant_conv {
            self.config.embed_dim
        } else {
            self.config.z_channels
        };
        let a = tiled_scale(&x, &f, tile_x, tile_y, overlap, geom, z)?;
        let b = tiled_scale(&x, &f, tile_x * 2, tile_y / 2, overlap, geom, z)?;
        let c = tiled_scale(&x, &f, tile_x / 2, tile_y * 2, overlap, geom, z)?;
        ((a + b)? + c)? / 3.0
    }
}

/// `[B, 3, H, W]` decoder output → IMAGE `[B, H, W, 3]` = `clamp((x + 1) / 2, 0, 1)`.
pub fn to_image(x: &Tensor) -> Result<Tensor> {
    ((x + 1.0)? / 2.0)?
        .clamp(0f32, 1f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// IMAGE `[B, H, W, C]` → `[B, 3, H, W]` in [−1, 1] (`x · 2 − 1`, RGB only).
pub fn from_image(image: &Tensor) -> Result<Tensor> {
    let (_, _, _, c) = image.dims4()?;
    if c < 3 {
        candle_core::bail!("vae encode: image has {c} channels, need 3");
    }
    let x = image.to_dtype(DType::F32)?.narrow(3, 0, 3)?;
    (x.permute((0, 3, 1, 2))?.contiguous()? * 2.0)? - 1.0
}

/// Size ratio between a tile's input and the function's output.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// Output is `r` times larger (decode).
    Up(usize),
    /// Output is `r` times smaller (encode).
    Down(usize),
}

impl Scale {
    /// `round(v · scale)` as ComfyUI's `get_scale`/`get_pos` (Python `round`, half to even).
    fn apply(self, v: usize) -> usize {
        match self {
            Scale::Up(r) => v * r,
            Scale::Down(r) => {
                let x = v as f64 / r as f64;
                let f = x.floor();
                let frac = x - f;
                let up = frac > 0.5 || (frac == 0.5 && (f as u64) % 2 == 1);
                (f as usize) + usize::from(up)
            }
        }
    }
}

/// ComfyUI `comfy.utils.tiled_scale` for 2-D: runs `function` on overlapping tiles of
/// `samples [B, C, H, W]` (tile `tile_y × tile_x`), weights each output tile by a linear
/// feather of `round(overlap · scale)` pixels on every side, and divides by the summed
/// weights. An input that fits one tile is passed through whole.
fn tiled_scale(
    samples: &Tensor,
    function: &dyn Fn(&Tensor) -> Result<Tensor>,
    tile_x: usize,
    tile_y: usize,
    overlap: usize,
    scale: Scale,
    out_channels: usize,
) -> Result<Tensor> {
    let (batch, _, h, w) = samples.dims4()?;
    let tile = [tile_y.max(1), tile_x.max(1)];
    let dims = [h, w];
    let out_dims = [scale.apply(h), scale.apply(w)];
    let dev = samples.device();
    let mut outputs = Vec::with_capacity(batch);
    for bi in 0..batch {
        let s = samples.narrow(0, bi, 1)?;
        if dims[0] <= tile[0] && dims[1] <= tile[1] {
            outputs.push(function(&s)?);
            continue;
        }
        let positions: Vec<Vec<usize>> = (0..2)
            .map(|d| {
                if dims[d] > tile[d] {
                    let step = tile[d].saturating_sub(overlap).max(1);
                    (0..dims[d].saturating_sub(overlap)).step_by(step).collect()
                } else {
                    vec![0]
                }
            })
            .collect();
        let (oh, ow) = (out_dims[0], out_dims[1]);
        let mut out = vec![0f32; out_channels * oh * ow];
        let mut div = vec![0f32; oh * ow];
        for &py in &positions[0] {
            for &px in &positions[1] {
                let mut s_in = s.clone();
                let mut up = [0usize; 2];
                for (d, p) in [py, px].into_iter().enumerate() {
                    let pos = p.min(dims[d].saturating_sub(overlap));
                    let len = tile[d].min(dims[d] - pos);
                    s_in = s_in.narrow(d + 2, pos, len)?;
                    up[d] = scale.apply(pos);
                }
                let ps = function(&s_in.contiguous()?)?;
                let (_, pc, th, tw) = ps.dims4()?;
                if pc != out_channels || up[0] + th > oh || up[1] + tw > ow {
                    candle_core::bail!("tiled_scale: tile output {:?} does not fit", ps.dims());
                }
                let ps: Vec<f32> = ps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let feather = |n: usize| -> Vec<f32> {
                    let mut m = vec![1f32; n];
                    let f = scale.apply(overlap);
                    if f < n {
                        for t in 0..f {
                            let a = ((t + 1) as f64 / f as f64) as f32;
                            m[t] *= a;
                            m[n - 1 - t] *= a;
                        }
                    }
                    m
                };
                let my = feather(th);
                let mx = feather(tw);
                for yy in 0..th {
                    for xx in 0..tw {
                        // mask = 1 · (row factors) · (column factors), in the order PyTorch
                        // multiplies them in place (rows first, then columns)
                        let m = my[yy] * mx[xx];
                        let o = (up[0] + yy) * ow + up[1] + xx;
                        div[o] += m;
                        for c in 0..out_channels {
                            out[c * oh * ow + o] += ps[(c * th + yy) * tw + xx] * m;
                        }
                    }
                }
            }
        }
        for c in 0..out_channels {
            for (o, d) in out[c * oh * ow..(c + 1) * oh * ow].iter_mut().zip(&div) {
                *o /= *d;
            }
        }
        outputs.push(Tensor::from_vec(out, (1, out_channels, oh, ow), dev)?);
    }
    Tensor::cat(&outputs, 0)
}

/// A random-weight VAE for tests (norm scales 1 + N(0, 0.1), everything else N(0, 0.1)).
#[cfg(test)]
pub(crate) fn tiny_vae(cfg: &VaeConfig) -> Vae {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &candle_core::Device::Cpu);
    let vae = Vae::load(vb, cfg).unwrap();
    crate::unet::tests::randomise(&varmap);
    vae
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tiny_cfg() -> VaeConfig {
        VaeConfig {
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            ..VaeConfig::sd()
        }
    }

    #[test]
    fn decode_and_encode_shapes() {
        let vae = tiny_vae(&tiny_cfg());
        assert_eq!(vae.config().downscale(), 2);
        let z = Tensor::randn(0f32, 1.0, (2, 4, 6, 5), &Device::Cpu).unwrap();
        let img = vae.decode_image(&z).unwrap();
        assert_eq!(img.dims(), &[2, 12, 10, 3]);
        let back = vae.encode_image(&img).unwrap();
        assert_eq!(back.dims(), &[2, 4, 6, 5]);
        let m = vae.encode_moments(&from_image(&img).unwrap()).unwrap();
        assert_eq!(m.dims(), &[2, 8, 6, 5]);
        assert_eq!(
            ops::max_abs_diff(&m.narrow(1, 0, 4).unwrap(), &back).unwrap(),
            0.0
        );
    }

    /// The GPU path (ComfyUI's BF16/F16 `vae_dtype`): a VAE loaded in F16 computes in F16,
    /// hands back F32, and stays within half-precision rounding of the F32 model (the error
    /// must also be above F32 rounding, so an F32 pass would fail the check).
    #[test]
    fn f16_vae_computes_in_f16_and_tracks_f32() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let vae = Vae::load(vb, &tiny_cfg()).unwrap();
        crate::unet::tests::randomise(&varmap);
        let mut f16 = std::collections::HashMap::new();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            f16.insert(name.clone(), var.as_tensor().to_dtype(DType::F16).unwrap());
        }
        let vae16 = Vae::load(VarBuilder::from_tensors(f16, DType::F16, &Device::Cpu), &tiny_cfg()).unwrap();
        assert_eq!((vae.dtype(), vae16.dtype()), (DType::F32, DType::F16));
        let z = Tensor::randn(0f32, 1.0, (1, 4, 6, 5), &Device::Cpu).unwrap();
        let a = vae.decode(&z).unwrap();
        let b = vae16.decode(&z).unwrap();
        assert_eq!(b.dtype(), DType::F32);
        let err = crate::unet::tests::rel_l2(&a, &b);
        assert!(err < 1e-2 && err > 1e-5, "decode rel L2 {err}");
        let img = vae.decode_image(&z).unwrap();
        let m = vae.encode_moments(&from_image(&img).unwrap()).unwrap();
        let m16 = vae16.encode_moments(&from_image(&img).unwrap()).unwrap();
        assert_eq!(m16.dtype(), DType::F32);
        let err = crate::unet::tests::rel_l2(&m, &m16);
        assert!(err < 1e-2 && err > 1e-5, "encode rel L2 {err}");
    }

    #[test]
    fn tiled_decode_equals_plain_decode_when_one_tile_fits() {
        let vae = tiny_vae(&tiny_cfg());
        let z = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
        // every one of the three tilings covers the whole 8×8 latent
        let a = vae.decode_tiled(&z, 16, 16, 2).unwrap();
        let b = vae.decode_image(&z).unwrap();
        assert!(ops::max_abs_diff(&a, &b).unwrap() < 1e-6);
    }

    #[test]
    fn tiled_decode_blends_tiles() {
        let vae = tiny_vae(&tiny_cfg());
        let z = Tensor::randn(0f32, 1.0, (1, 4, 20, 24), &Device::Cpu).unwrap();
        let a = vae.decode_tiled(&z, 8, 8, 2).unwrap();
        assert_eq!(a.dims(), &[1, 40, 48, 3]);
        let b = vae.decode_image(&z).unwrap();
        // tiles see less context (group norm statistics, attention), so the result differs
        // from the whole decode (the blending itself is checked by `tiled_scale_*` tests)
        let d = ops::max_abs_diff(&a, &b).unwrap();
        assert!(d > 0.0, "{d}");
        let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)));
    }

    #[test]
    fn tiled_scale_of_identity_is_identity() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 17, 23), &Device::Cpu).unwrap();
        let id = |t: &Tensor| Ok(t.clone());
        let y = tiled_scale(&x, &id, 8, 6, 2, Scale::Up(1), 3).unwrap();
        assert!(ops::max_abs_diff(&x, &y).unwrap() < 1e-6);
        // ×2 nearest upscale through tiles equals the whole-image upscale
        let up = |t: &Tensor| {
            let (_, _, h, w) = t.dims4()?;
            t.upsample_nearest2d(2 * h, 2 * w)
        };
        let y = tiled_scale(&x, &up, 8, 6, 2, Scale::Up(2), 3).unwrap();
        let want = x.upsample_nearest2d(34, 46).unwrap();
        assert!(ops::max_abs_diff(&want, &y).unwrap() < 1e-6);
    }

    #[test]
    fn tiled_encode_shapes() {
        let vae = tiny_vae(&tiny_cfg());
        let img = Tensor::rand(0f32, 1.0, (1, 40, 36, 3), &Device::Cpu).unwrap();
        let z = vae.encode_tiled(&img, 16, 16, 4).unwrap();
        assert_eq!(z.dims(), &[1, 4, 20, 18]);
        let plain = vae.encode_image(&img).unwrap();
        let d = ops::max_abs_diff(&z, &plain).unwrap();
        assert!(d.is_finite());
    }
}

#[cfg(test)]
mod recipe_tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::{Checkpoint, VAE_PREFIX};
    use crate::recipe::{write_recipe_checkpoint, Arch};
    use candle_core::Device;

    #[test]
    fn tiny_recipe_vae_round_trip_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.safetensors");
        write_recipe_checkpoint(Arch::Sd15, true, 0, &path).unwrap();
        let ckpt = Arc::new(Checkpoint::open(&path).unwrap());
        let cfg = ckpt.detect().unwrap().vae.unwrap();
        let vae = Vae::load(ckpt.var_builder(VAE_PREFIX, DType::F32, &Device::Cpu), &cfg).unwrap();
        let z = Tensor::randn(0f32, 1.0, (1, 4, 6, 4), &Device::Cpu).unwrap();
        let img = vae.decode_image(&z).unwrap();
        assert_eq!(img.dims(), &[1, 48, 32, 3]);
        let back = vae.encode_image(&img).unwrap();
        assert_eq!(back.dims(), &[1, 4, 6, 4]);
        let tiled = vae.decode_tiled(&z, 4, 4, 1).unwrap();
        assert_eq!(tiled.dims(), &[1, 48, 32, 3]);
    }
}
