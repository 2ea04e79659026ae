//! The hot tensor ops of the diffusion models (convolution, normalisation, linear layers,
//! attention, nearest upsampling) behind one small module.
//!
//! The models only call these functions and layer types, so a faster kernel (a fused CPU
//! group norm, flash attention on CUDA, …) can replace candle's generic path here without
//! touching `unet` or `vae`.
//!
//! Weights keep the dtype they were loaded in (F16 for a memory-saving SDXL UNet, F32
//! otherwise) and are cast to the activation dtype right before each op, which is what
//! ComfyUI's `manual_cast` does. On the CPU activations are F32.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Upper bound on the number of attention scores (`query rows × key rows × heads × batch`)
/// materialised at once; the query axis is sliced to stay under it (128 MiB of F32).
pub const ATTENTION_SCORE_BUDGET: usize = 1 << 25;

/// A weight cast to `dtype` (no copy when it already has that dtype).
fn cast(w: &Tensor, dtype: DType) -> Result<Tensor> {
    if w.dtype() == dtype {
        return Ok(w.clone());
    }
    if dtype == DType::F32 && w.dtype() == DType::F16 && w.device().is_cpu() {
        // F16 → F32 is exact; convert the whole slice at once (SIMD where available)
        // instead of element by element.
        let (storage, layout) = w.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)), Some((s, e))) =
            (&*storage, layout.contiguous_offsets())
        {
            use half::slice::HalfFloatSliceExt;
            let mut out = vec![0f32; e - s];
            v[s..e].convert_to_f32_slice(&mut out);
            drop(storage);
            return Tensor::from_vec(out, w.shape(), w.device());
        }
    }
    w.to_dtype(dtype)
}

/// `torch.nn.Linear`: `x · Wᵀ + b` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` `[out, in]` (and `bias` `[out]` when `bias` is set) from `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Loads a 1×1 convolution weight `[out, in, 1, 1]` as a linear layer.
    pub fn load_conv1x1(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb
            .get((out_dim, in_dim, 1, 1), "weight")?
            .reshape((out_dim, in_dim))?;
        let bias = Some(vb.get(out_dim, "bias")?);
        Ok(Self { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = cast(&self.weight, x.dtype())?;
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&w.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&cast(b, x.dtype())?)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = w.dim(0)?;
        y.reshape(out_dims)
    }
}

/// `torch.nn.Conv2d` with square kernel, one group and zero padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight` `[out, in, k, k]` and `bias` `[out]` from `vb`.
    pub fn load(
        vb: VarBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
        let bias = Some(vb.get(out_ch, "bias")?);
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

/// 2-D convolution `x [B,C,H,W] * w [O,C,k,k] + b` with symmetric zero padding.
///
/// F32 CPU convolutions with a kernel larger than 1×1 go through [`conv2d_im2col`] (banded,
/// ≈ 30 % less CPU time than candle's tiled path here); the rest use candle's `conv2d`
/// (1×1 convolutions are a plain GEMM there). Scratch memory stays bounded at any size.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, kh, kw) = weight.dims4()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 && (kh > 1 || kw > 1) {
        return conv2d_im2col(x, weight, bias, stride, padding);
    }
    let w = cast(weight, x.dtype())?;
    let x = x.contiguous()?;
    let y = x.conv2d(&w, padding, stride, 1, 1)?;
    match bias {
        Some(b) => {
            let b = cast(b, x.dtype())?.reshape((1, (), 1, 1))?;
            y.broadcast_add(&b)
        }
        None => Ok(y),
    }
}

/// Most elements of an im2col buffer built at once by [`conv2d_im2col`] (64 MiB of F32).
pub const IM2COL_BUDGET: usize = 1 << 24;

/// 2-D convolution as explicit im2col + one GEMM per band of output rows:
/// `W [O, C·k·k] × cols [C·k·k, rows·Wo] → [O, rows·Wo]`, written straight into NCHW order.
/// Bands keep the column buffer under [`IM2COL_BUDGET`] elements at any image size; the
/// column buffer is filled on all threads and reused across bands, and each band's GEMM
/// writes directly into the output (same `gemm` call and accumulation order as candle's
/// `matmul`, so the result is bit-identical to `W.matmul(cols)` + bias).
pub fn conv2d_im2col(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c {
        candle_core::bail!("conv2d: {c} input channels, kernel wants {ci}");
    }
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_im2col: CPU tensors only");
    }
    if h + 2 * padding < kh || w + 2 * padding < kw || stride == 0 {
        candle_core::bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{w}");
    }
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (w + 2 * padding - kw) / stride + 1;
    let kdim = c * kh * kw;
    let wmat = cast(weight, DType::F32)?.contiguous()?;
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    let (x_storage, x_layout) = xf.storage_and_layout();
    let data: &[f32] = match (&*x_storage, x_layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((s, e))) => &v[s..e],
        _ => candle_core::bail!("conv2d_im2col: expected a contiguous F32 CPU input"),
    };
    let (w_storage, w_layout) = wmat.storage_and_layout();
    let wdata: &[f32] = match (&*w_storage, w_layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((s, e))) => &v[s..e],
        _ => candle_core::bail!("conv2d_im2col: expected a contiguous F32 CPU weight"),
    };
    let bias_v: Option<Vec<f32>> = match bias {
        Some(bv) => Some(bv.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
        None => None,
    };
    let band = (IM2COL_BUDGET / (kdim * wo).max(1)).clamp(1, ho.max(1));
    let plane_out = ho * wo;
    let mut out = vec![0f32; b * o * plane_out];
    let mut col = vec![0f32; kdim * band * wo];
    let threads = candle_core::utils::get_num_threads().max(1);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    for bi in 0..b {
        let img = &data[bi * c * h * w..(bi + 1) * c * h * w];
        let mut y0 = 0;
        while y0 < ho {
            let rows = band.min(ho - y0);
            let n = rows * wo;
            let col = &mut col[..kdim * n];
            im2col_band(img, col, (c, h, w), (kh, kw), stride, padding, y0, rows, wo, threads);
            let dst = &mut out[bi * o * plane_out + y0 * wo..];
            // SAFETY: dst holds `o` rows of `n` elements `plane_out` apart (the last row ends
            // inside `out`), wdata is `o × kdim` row-major, col is `kdim × n` row-major.
            unsafe {
                gemm::gemm(
                    o,
                    n,
                    kdim,
                    dst.as_mut_ptr(),
                    1,
                    plane_out as isize,
                    false,
                    wdata.as_ptr(),
                    1,
                    kdim as isize,
                    col.as_ptr(),
                    1,
                    n as isize,
                    0f32,
                    1f32,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            y0 += rows;
        }
    }
    if let Some(bv) = bias_v {
        if bv.len() != o {
            candle_core::bail!("conv2d: bias has {} elements, want {o}", bv.len());
        }
        // planes run batch-major, channel-minor
        for (i, plane) in out.chunks_mut(plane_out).enumerate() {
            let bval = bv[i % o];
            for v in plane.iter_mut() {
                *v += bval;
            }
        }
    }
    drop(x_storage);
    drop(w_storage);
    Tensor::from_vec(out, (b, o, ho, wo), x.device())
}

/// Fills the im2col rows of one band (`rows` output rows from `y0`) of one image
/// `img [C, H, W]` into `col [C·kh·kw, rows·wo]`, padding positions set to zero; the
/// channels are split over `threads` scoped threads.
#[allow(clippy::too_many_arguments)]
fn im2col_band(
    img: &[f32],
    col: &mut [f32],
    (c, h, w): (usize, usize, usize),
    (kh, kw): (usize, usize),
    stride: usize,
    padding: usize,
    y0: usize,
    rows: usize,
    wo: usize,
    threads: usize,
) {
    let n = rows * wo;
    let per_ch = kh * kw * n;
    let fill = |ch0: usize, part: &mut [f32]| {
        for (k, chunk) in part.chunks_mut(per_ch).enumerate() {
            let ch = ch0 + k;
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = ky * kw + kx;
                    let dst = &mut chunk[r * n..(r + 1) * n];
                    // output columns whose input column `xx·stride + kx − padding` is inside
                    let lo = padding.saturating_sub(kx).div_ceil(stride).min(wo);
                    let hi = if w + padding > kx {
                        ((w + padding - kx - 1) / stride + 1).min(wo)
                    } else {
                        0
                    }
                    .max(lo);
                    for yy in 0..rows {
                        let drow = &mut dst[yy * wo..(yy + 1) * wo];
                        let iy = ((y0 + yy) * stride + ky) as isize - padding as isize;
                        if iy < 0 || iy >= h as isize {
                            drow.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        drow[..lo].fill(0.0);
                        drow[hi..].fill(0.0);
                        if stride == 1 {
                            let s0 = lo + kx - padding;
                            drow[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                        } else {
                            for (xx, d) in drow[lo..hi].iter_mut().enumerate() {
                                *d = src[(lo + xx) * stride + kx - padding];
                            }
                        }
                    }
                }
            }
        }
    };
    let threads = threads.clamp(1, c.max(1));
    if threads == 1 || col.len() < (1 << 16) {
        fill(0, col);
        return;
    }
    let ch_per = c.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, part) in col.chunks_mut(ch_per * per_ch).enumerate() {
            let fill = &fill;
            s.spawn(move || fill(t * ch_per, part));
        }
    });
}

/// `torch.nn.GroupNorm` over `[B, C, …]`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight`/`bias` `[channels]` from `vb`.
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm_act(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }
}

impl GroupNorm {
    /// `silu(group_norm(x))` in one pass (the ResBlock / VAE pattern).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm_act(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }
}

/// Group norm, optionally followed by SiLU: a fused multi-threaded kernel for contiguous
/// F32 CPU tensors (statistics accumulated in F64, two passes), else the generic path.
pub fn group_norm_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu_after: bool,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    if !(x.device().is_cpu() && x.dtype() == DType::F32) || c % groups != 0 || x.rank() < 2 {
        let y = group_norm(x, weight, bias, groups, eps)?;
        return if silu_after { silu(&y) } else { Ok(y) };
    }
    let b = x.dim(0)?;
    let per_ch = x.elem_count() / (b * c).max(1);
    let xc = x.contiguous()?;
    let (x_storage, x_layout) = xc.storage_and_layout();
    let data: &[f32] = match (&*x_storage, x_layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((s, e))) => &v[s..e],
        _ => candle_core::bail!("group_norm: expected a contiguous F32 CPU input"),
    };
    let w: Vec<f32> = weight.to_dtype(DType::F32)?.to_vec1()?;
    let bi: Vec<f32> = bias.to_dtype(DType::F32)?.to_vec1()?;
    let cg = c / groups;
    let glen = cg * per_ch;
    let mut out = vec![0f32; data.len()];
    let n_groups = b * groups;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(n_groups)
        .max(1);
    let per_thread = n_groups.div_ceil(threads);
    let work = |gi0: usize, out: &mut [f32]| {
        for (k, og) in out.chunks_mut(glen).enumerate() {
            let gi = gi0 + k;
            let xg = &data[gi * glen..(gi + 1) * glen];
            let mean = sum_f64(xg, |v| v) / glen as f64;
            let var = sum_f64(xg, |v| {
                let d = v - mean;
                d * d
            }) / glen as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let ch0 = (gi % groups) * cg;
            for j in 0..cg {
                let ch = ch0 + j;
                let scale = (rstd * w[ch] as f64) as f32;
                let shift = (bi[ch] as f64 - mean * rstd * w[ch] as f64) as f32;
                let src = &xg[j * per_ch..(j + 1) * per_ch];
                let dst = &mut og[j * per_ch..(j + 1) * per_ch];
                if silu_after {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        let y = v * scale + shift;
                        *d = y / (1.0 + (-y).exp());
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v * scale + shift;
                    }
                }
            }
        }
    };
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(per_thread * glen).enumerate() {
            let work = &work;
            s.spawn(move || work(t * per_thread, chunk));
        }
    });
    drop(x_storage);
    Tensor::from_vec(out, x.shape(), x.device())
}

/// `Σ f(v)` over `xs` in F64 with eight interleaved partial sums (vectorisable; the
/// partial sums are added pairwise at the end).
fn sum_f64(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += f(v as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// Group normalisation: per (batch, group) mean and biased variance, then the per-channel
/// affine transform.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let shape = x.shape().clone();
    let b = x.dim(0)?;
    let c = x.dim(1)?;
    if c % groups != 0 {
        candle_core::bail!("group_norm: {c} channels not divisible by {groups} groups");
    }
    let mut bshape = vec![1usize; shape.rank()];
    bshape[1] = c;
    let xf = x.to_dtype(DType::F32)?;
    let x3 = xf.reshape((b, groups, ()))?;
    let mean = x3.mean_keepdim(2)?;
    let xc = x3.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(shape)?;
    let w = weight.to_dtype(DType::F32)?.reshape(bshape.clone())?;
    let bi = bias.to_dtype(DType::F32)?.reshape(bshape)?;
    y.broadcast_mul(&w)?.broadcast_add(&bi)?.to_dtype(dtype)
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads `weight`/`bias` `[dim]` from `vb`.
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = cast(&self.weight, x.dtype())?;
        let b = cast(&self.bias, x.dtype())?;
        candle_nn::ops::layer_norm(&x.contiguous()?, &w, &b, self.eps)
    }
}

/// Multi-head scaled dot-product attention without mask.
///
/// `q [B, Tq, H·D]`, `k`/`v` `[B, Tk, H·D]` → `[B, Tq, H·D]`, with
/// `softmax(q kᵀ · D^-½) v` per head (the scale is applied to the product, as
/// ComfyUI's `baddbmm(…, alpha = scale)` does).
///
/// On the CPU the query axis is processed in slices so that at most
/// [`ATTENTION_SCORE_BUDGET`] scores exist at once: a 1024×1024 SDXL or SD1.5 image
/// (4096–16384 tokens) stays within memory. This is also the seam for a fused kernel:
/// a CUDA build can dispatch to flash attention here (`q.device().is_cuda()`), the models
/// do not change.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, tq, inner) = q.dims3()?;
    let (_, tk, _) = k.dims3()?;
    if inner % heads != 0 {
        candle_core::bail!("attention: width {inner} not divisible by {heads} heads");
    }
    let d = inner / heads;
    let split = |t: &Tensor, n: usize| -> Result<Tensor> {
        t.reshape((b, n, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, n, d))
    };
    let q = split(q, tq)?;
    let k = split(k, tk)?;
    let v = split(v, tk)?;
    let out = attention_heads(&q, &k, &v, (d as f64).powf(-0.5))?;
    out.reshape((b, heads, tq, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, tq, inner))
}

/// Attention on head-split tensors `q [N, Tq, D]`, `k`/`v` `[N, Tk, D]` with the given
/// scale, slicing the query axis to bound the score matrix.
pub fn attention_heads(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    attention_heads_budget(q, k, v, scale, ATTENTION_SCORE_BUDGET)
}

/// [`attention_heads`] with an explicit score budget (elements per query slice).
pub fn attention_heads_budget(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    budget: usize,
) -> Result<Tensor> {
    let (n, tq, _) = q.dims3()?;
    let (_, tk, _) = k.dims3()?;
    let kt = k.t()?;
    let chunk = (budget / (n * tk).max(1)).clamp(1, tq.max(1));
    let one = |qs: &Tensor| -> Result<Tensor> {
        let scores = qs.matmul(&kt)?;
        let probs = scaled_softmax_last_dim(&scores, scale)?;
        probs.matmul(v)
    };
    if chunk >= tq {
        return one(q);
    }
    let mut parts = Vec::with_capacity(tq.div_ceil(chunk));
    let mut start = 0;
    while start < tq {
        let len = chunk.min(tq - start);
        parts.push(one(&q.narrow(1, start, len)?)?);
        start += len;
    }
    Tensor::cat(&parts, 1)
}

/// `softmax(x · scale)` over the last dimension: one fused, multi-threaded pass for
/// contiguous F32 CPU tensors (`exp((x − max)·scale) / Σ`, max taken on the unscaled row;
/// identical to scaling first for scale > 0 up to rounding), else candle's ops.
pub fn scaled_softmax_last_dim(x: &Tensor, scale: f64) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) || scale <= 0.0 {
        return candle_nn::ops::softmax_last_dim(&(x * scale)?);
    }
    x.contiguous()?
        .apply_op1_no_bwd(&ScaledSoftmax(scale as f32))
}

struct ScaledSoftmax(f32);

impl candle_core::CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "scaled-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = match storage {
            candle_core::CpuStorage::F32(v) => v,
            _ => candle_core::bail!("scaled softmax: F32 only"),
        };
        let (start, end) = match layout.contiguous_offsets() {
            Some(o) => o,
            None => candle_core::bail!("scaled softmax: input not contiguous"),
        };
        let src = &src[start..end];
        let dim = layout.dims().last().copied().unwrap_or(1).max(1);
        let rows = src.len() / dim;
        let mut out = vec![0f32; src.len()];
        let scale = self.0;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, rows.max(1));
        let rows_per = rows.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (src_c, out_c) in src
                .chunks(rows_per * dim)
                .zip(out.chunks_mut(rows_per * dim))
            {
                s.spawn(move || {
                    for (xr, yr) in src_c.chunks(dim).zip(out_c.chunks_mut(dim)) {
                        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f64;
                        for (y, &x) in yr.iter_mut().zip(xr) {
                            let e = ((x - max) * scale).exp();
                            *y = e;
                            sum += e as f64;
                        }
                        let inv = (1.0 / sum) as f32;
                        for y in yr.iter_mut() {
                            *y *= inv;
                        }
                    }
                });
            }
        });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Nearest-neighbour resize of `[B, C, H, W]` to `(h, w)` (`F.interpolate(mode="nearest")`:
/// source index `floor(dst · in / out)`).
pub fn upsample_nearest(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    x.upsample_nearest2d(h, w)
}

/// `x · sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

/// Exact (erf) GELU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// ComfyUI's `timestep_embedding(t, dim)`: `[cos(t·f_k)…, sin(t·f_k)…]` with
/// `f_k = exp(−ln(10000)·k/(dim/2))`, computed in F32 like PyTorch (each elementary
/// function rounded once to F32). Returns `[B, dim]` F32.
pub fn timestep_embedding(timesteps: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let neg_log = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|k| {
            let a = neg_log * k as f32 / half as f32;
            (a as f64).exp() as f32
        })
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        out.extend(args.iter().map(|&a| (a as f64).cos() as f32));
        out.extend(args.iter().map(|&a| (a as f64).sin() as f32));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (timesteps.len(), dim), device)
}

/// The two equal halves of `x` along `dim` (`x.chunk(2, dim)`).
pub fn chunk2(x: &Tensor, dim: usize) -> Result<(Tensor, Tensor)> {
    let n = x.dim(dim)? / 2;
    Ok((x.narrow(dim, 0, n)?, x.narrow(dim, n, n)?))
}

/// Max absolute difference of two tensors of the same shape (F32), for tests and checks.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        p.matmul(v).unwrap()
    }

    #[test]
    fn sliced_attention_matches_unsliced() {
        let dev = Device::Cpu;
        // 3 heads × 4100 keys: the budget forces slices of 2728 queries → 2 slices.
        let q = Tensor::randn(0f32, 1.0, (3, 4100, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (3, 4100, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (3, 4100, 8), &dev).unwrap();
        let a = attention_heads(&q, &k, &v, 0.3).unwrap();
        let b = naive_attention(&q, &k, &v, 0.3);
        assert!(ATTENTION_SCORE_BUDGET / (3 * 4100) < 4100);
        assert!(max_abs_diff(&a, &b).unwrap() < 1e-5);
    }

    #[test]
    fn multihead_attention_splits_heads() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 5, 6), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 7, 6), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 7, 6), &dev).unwrap();
        let out = attention(&q, &k, &v, 2).unwrap();
        assert_eq!(out.dims(), &[2, 5, 6]);
        // head 1 of batch 1 by hand
        let qh = q.narrow(2, 3, 3).unwrap().narrow(0, 1, 1).unwrap();
        let kh = k.narrow(2, 3, 3).unwrap().narrow(0, 1, 1).unwrap();
        let vh = v.narrow(2, 3, 3).unwrap().narrow(0, 1, 1).unwrap();
        let want = naive_attention(
            &qh.contiguous().unwrap(),
            &kh.contiguous().unwrap(),
            &vh.contiguous().unwrap(),
            1.0 / 3f64.sqrt(),
        );
        let got = out.narrow(2, 3, 3).unwrap().narrow(0, 1, 1).unwrap();
        assert!(max_abs_diff(&got, &want).unwrap() < 1e-6);
    }

    #[test]
    fn im2col_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 9, 7), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (6, 5, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 6, &dev).unwrap();
        for (stride, pad) in [(1, 1), (2, 1), (2, 0), (1, 0)] {
            let want = x
                .conv2d(&w, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 6, 1, 1)).unwrap())
                .unwrap();
            let got = conv2d_im2col(&x, &w, Some(&b), stride, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "{stride} {pad}");
        }
    }

    #[test]
    fn threaded_banded_im2col_conv_matches_candle() {
        let dev = Device::Cpu;
        // 64 channels: the column buffer is large enough to be filled on several threads
        let x = Tensor::randn(0f32, 1.0, (2, 64, 21, 19), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (24, 64, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 24, &dev).unwrap();
        for (stride, pad) in [(1, 1), (2, 1), (2, 0)] {
            let want = x
                .conv2d(&w, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 24, 1, 1)).unwrap())
                .unwrap();
            let got = conv2d_im2col(&x, &w, Some(&b), stride, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-4, "{stride} {pad}");
        }
    }

    #[test]
    fn scaled_softmax_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (3, 7, 33), &dev).unwrap();
        let a = scaled_softmax_last_dim(&x, 0.37).unwrap();
        let b = candle_nn::ops::softmax_last_dim(&(&x * 0.37).unwrap()).unwrap();
        assert!(max_abs_diff(&a, &b).unwrap() < 1e-6);
    }

    #[test]
    fn group_norm_normalises_groups() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 4, 3, 3), &dev).unwrap() + 5.0).unwrap();
        let w = Tensor::ones(4, DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let y = group_norm(&x, &w, &b, 2, 1e-6).unwrap();
        let g = y.reshape((2, 2, 18)).unwrap();
        let mean = g
            .mean_keepdim(2)
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap();
        let m: Vec<f32> = mean.flatten_all().unwrap().to_vec1().unwrap();
        assert!(m.iter().all(|v| *v < 1e-5), "{m:?}");
        let var: Vec<f32> = g
            .sqr()
            .unwrap()
            .mean(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");
    }

    #[test]
    fn fused_group_norm_matches_generic() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2.0, (2, 64, 5, 7), &dev).unwrap() + 0.5).unwrap();
        let w = Tensor::randn(1f32, 0.1, 64, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 64, &dev).unwrap();
        let want = group_norm(&x, &w, &b, 32, 1e-6).unwrap();
        let got = group_norm_act(&x, &w, &b, 32, 1e-6, false).unwrap();
        assert!(max_abs_diff(&want, &got).unwrap() < 2e-6);
        let got = group_norm_act(&x, &w, &b, 32, 1e-6, true).unwrap();
        let want = silu(&want).unwrap();
        assert!(max_abs_diff(&want, &got).unwrap() < 2e-6);
    }

    #[test]
    fn timestep_embedding_is_cos_then_sin() {
        let e = timestep_embedding(&[0.0, 999.0], 320, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = e.to_vec2().unwrap();
        assert!(v[0][..160].iter().all(|x| *x == 1.0));
        assert!(v[0][160..].iter().all(|x| *x == 0.0));
        // k = 0: frequency 1
        assert_eq!(v[1][0], (999f64).cos() as f32);
        assert_eq!(v[1][160], (999f64).sin() as f32);
    }

    #[test]
    fn f16_weights_are_cast_per_op() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let w16 = w.to_dtype(DType::F16).unwrap();
        let lin = Linear {
            weight: w16.clone(),
            bias: None,
        };
        let x = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let y = lin.forward(&x).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let want = x
            .reshape((10, 4))
            .unwrap()
            .matmul(&w16.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap()
            .reshape((2, 5, 3))
            .unwrap();
        assert!(max_abs_diff(&y, &want).unwrap() == 0.0);
    }
}
