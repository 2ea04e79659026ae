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
//!
//! F32 CPU fast paths (every op falls back to candle's generic ops for other dtypes and
//! devices): 3×3 convolutions by Winograd F(2×2, 3×3) on large images and by banded
//! im2col + GEMM otherwise (all images of a small batch in one GEMM); linear layers as
//! GEMMs on weights kept in transposed memory order, the bias accumulated in place and F16
//! weights converted block by block; a fused multi-head attention that reads the heads in
//! place and keeps one block of scores per thread; fused group norm (+ SiLU), layer norm,
//! softmax, GELU/GEGLU and SiLU with vectorised `exp`. The kernels live in `ops/`;
//! [`tune_allocator`] and [`release_memory`] tune glibc's malloc for the models, and
//! [`profile`] times the ops for benchmarks.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

mod alloc;
mod cpu;
pub mod profile;
mod winograd;

pub use alloc::{release_memory, tune_allocator};

/// Upper bound on the number of attention scores (`query rows × key rows × heads × batch`)
/// materialised at once by the generic (non-F32-CPU) attention path; the query axis is
/// sliced to stay under it (128 MiB of F32).
pub const ATTENTION_SCORE_BUDGET: usize = 1 << 25;

/// A weight cast to `dtype` (no copy when it already has that dtype).
fn cast(w: &Tensor, dtype: DType) -> Result<Tensor> {
    if w.dtype() == dtype {
        return Ok(w.clone());
    }
    if w.rank() == 2 && !w.is_contiguous() && w.t()?.is_contiguous() {
        // a weight stored transposed ([`Linear`]): convert its memory as it is
        return cast(&w.t()?, dtype)?.t();
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
///
/// On the CPU the weight `[out, in]` is kept in transposed memory order (strides
/// `[1, out]`, i.e. `Wᵀ` row-major), the column-major operand the GEMM kernel consumes
/// without repacking it on every call (≈ 15 % faster UNet linears); its shape and values
/// are unchanged, so generic code paths see an ordinary (strided) tensor.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` `[out, in]` (and `bias` `[out]` when `bias` is set) from `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let is_variable = weight.is_variable();
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight: store_transposed(weight, is_variable)?,
            bias,
        })
    }

    /// Loads a 1×1 convolution weight `[out, in, 1, 1]` as a linear layer.
    pub fn load_conv1x1(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, 1, 1), "weight")?;
        let is_variable = weight.is_variable();
        let weight = weight.reshape((out_dim, in_dim))?;
        let bias = Some(vb.get(out_dim, "bias")?);
        Ok(Self {
            weight: store_transposed(weight, is_variable)?,
            bias,
        })
    }
}

/// `w [out, in]` (contiguous, on the CPU) re-laid in transposed memory order at load time:
/// the same shape and values with strides `[1, out]`. A variable (`VarMap`) keeps sharing
/// its storage, since it may be updated in place later ([`linear_f32`] then lays it out per
/// call); other tensors are returned as they are.
fn store_transposed(w: Tensor, is_variable: bool) -> Result<Tensor> {
    if is_variable {
        return Ok(w);
    }
    Ok(transposed_layout(&w)?.unwrap_or(w))
}

/// A copy of `w [out, in]` (contiguous CPU F32/F16/BF16, both dimensions > 1) in
/// transposed memory order (strides `[1, out]`), or `None` when `w` is not such a tensor.
fn transposed_layout(w: &Tensor) -> Result<Option<Tensor>> {
    if !w.device().is_cpu() || w.rank() != 2 || !w.is_contiguous() {
        return Ok(None);
    }
    let (rows, cols) = w.dims2()?;
    if rows <= 1 || cols <= 1 {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let Some((s, e)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let t = match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => Tensor::from_vec(
            cpu::transpose(&v[s..e], rows, cols),
            (cols, rows),
            w.device(),
        )?,
        candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)) => Tensor::from_vec(
            cpu::transpose(&v[s..e], rows, cols),
            (cols, rows),
            w.device(),
        )?,
        candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(v)) => Tensor::from_vec(
            cpu::transpose(&v[s..e], rows, cols),
            (cols, rows),
            w.device(),
        )?,
        _ => return Ok(None),
    };
    Ok(Some(t.t()?))
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _p = profile::scope(|| format!("linear {:?}", self.weight.dims()));
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        if x.device().is_cpu()
            && x.dtype() == DType::F32
            && matches!(self.weight.dtype(), DType::F32 | DType::F16 | DType::BF16)
        {
            let b = match &self.bias {
                Some(b) => Some(cast(b, DType::F32)?),
                None => None,
            };
            let x2 = x.reshape((rows, in_dim))?;
            return linear_f32(&x2, &self.weight, b.as_ref())?.reshape(out_dims);
        }
        let w = cast(&self.weight, x.dtype())?;
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&w.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&cast(b, x.dtype())?)?;
        }
        y.reshape(out_dims)
    }
}

/// Runs `f` on the contiguous F32 CPU data of `t` (made contiguous first when needed); an
/// error for other dtypes/devices.
fn f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((s, e))) => f(&v[s..e]),
        _ => candle_core::bail!("expected a contiguous F32 CPU tensor"),
    }
}

/// Output columns per GEMM of [`linear_f32`]: a block of the transposed weight
/// (`in × cols` F32) stays within about 1 MiB (the L2 cache), a multiple of 16.
fn linear_block_cols(in_dim: usize) -> usize {
    ((1 << 18) / in_dim.max(1)).clamp(16, 512) / 16 * 16
}

/// `bias` as `len` F32 values for the fused CPU kernels (checked against `len`).
fn bias_f32(bias: Option<&Tensor>, len: usize, op: &str) -> Result<Option<Vec<f32>>> {
    let Some(b) = bias else { return Ok(None) };
    let v: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if v.len() != len {
        candle_core::bail!("{op}: bias has {} elements, want {len}", v.len());
    }
    Ok(Some(v))
}

/// `x [rows, in] · w [out, in]ᵀ (+ b)` for F32 `x` on the CPU; `w` is F32, F16 or BF16.
///
/// The output starts as the bias rows and the GEMMs accumulate onto it (no separate
/// broadcast add). The weight is read in transposed memory order (as [`Linear`] stores it;
/// laid out so here when it comes otherwise), so the result does not depend on how the
/// weight was stored. When there are at least as many output columns as rows (the UNet's
/// deep layers) the columns are split over the threads in blocks of
/// [`linear_block_cols`], each a single-threaded GEMM reading its part of the weight only;
/// an F16/BF16 weight is converted block by block into a cache-sized buffer (no full F32
/// copy). Otherwise the rows are split over the threads, each multiplying by the whole
/// (F32) weight. Either way an F16 weight gives exactly the result of its F32 values.
fn linear_f32(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (rows, in_dim) = x.dims2()?;
    let (out_dim, w_in) = w.dims2()?;
    if w_in != in_dim {
        candle_core::bail!("linear: input width {in_dim}, weight wants {w_in}");
    }
    let bias = bias_f32(b, out_dim, "linear")?;
    let n = rows * out_dim;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    match &bias {
        Some(bv) => {
            for _ in 0..rows {
                out.extend_from_slice(bv);
            }
        }
        None => out.resize(n, 0.0),
    }
    if n == 0 || in_dim == 0 {
        return Tensor::from_vec(out, (rows, out_dim), x.device());
    }
    let by_cols = out_dim >= rows;
    // the weight as `wt [in, out]` row-major memory (a copy only when it is not stored so)
    let wt = if w.stride() == [1, out_dim] {
        w.t()?
    } else {
        match transposed_layout(&w.contiguous()?)? {
            Some(t) => t.t()?,
            // a single row or column: the same memory either way
            None => w.contiguous()?.reshape((in_dim, out_dim))?,
        }
    };
    // rows split over the threads need the whole weight in F32
    let wt = if by_cols { wt } else { cast(&wt, DType::F32)? };
    let threads = if rows * out_dim * in_dim >= 1 << 18 {
        cpu::num_threads()
    } else {
        1
    };
    let bw = linear_block_cols(in_dim);
    let op = cpu::SharedMut(out.as_mut_ptr());
    // `dst[r0.., c0..c0+cols] += x[r0..r1] · wblk`, with `wblk` = `in × cols` at `wp`, rows
    // `ld` apart
    let gemm_block =
        |xd: &[f32], r0: usize, r1: usize, c0: usize, cols: usize, wp: *const f32, ld: usize| {
            // SAFETY: `out` holds `rows × out_dim` initialised elements and the block rows
            // `r0..r1` × columns `c0..c0 + cols` belongs to this call only; `xd` is
            // `rows × in_dim` row-major; `wp` points to `in_dim` rows of `cols` elements `ld`
            // apart.
            unsafe {
                cpu::gemm_f32(
                    r1 - r0,
                    cols,
                    in_dim,
                    op.ptr().add(r0 * out_dim + c0),
                    out_dim,
                    true,
                    cpu::Mat::rows(xd.as_ptr().add(r0 * in_dim), in_dim),
                    cpu::Mat::rows(wp, ld),
                    gemm::Parallelism::None,
                );
            }
        };
    let (w_storage, w_layout) = wt.storage_and_layout();
    let Some((ws, we)) = w_layout.contiguous_offsets() else {
        candle_core::bail!("linear: weight layout");
    };
    f32_data(x, |xd| {
        if by_cols {
            let blocks = out_dim.div_ceil(bw);
            let per = blocks.div_ceil(threads);
            cpu::parallel_for(threads.min(blocks), |t| {
                let mut scratch: Vec<f32> = Vec::new();
                for blk in (t * per).min(blocks)..((t + 1) * per).min(blocks) {
                    let c0 = blk * bw;
                    let cols = bw.min(out_dim - c0);
                    match &*w_storage {
                        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
                            let v = &v[ws..we];
                            gemm_block(xd, 0, rows, c0, cols, v[c0..].as_ptr(), out_dim);
                        }
                        candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)) => {
                            use half::slice::HalfFloatSliceExt;
                            let v = &v[ws..we];
                            scratch.resize(in_dim * cols, 0.0);
                            for (k, dst) in scratch.chunks_exact_mut(cols).enumerate() {
                                v[k * out_dim + c0..k * out_dim + c0 + cols]
                                    .convert_to_f32_slice(dst);
                            }
                            gemm_block(xd, 0, rows, c0, cols, scratch.as_ptr(), cols);
                        }
                        candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(v)) => {
                            use half::slice::HalfFloatSliceExt;
                            let v = &v[ws..we];
                            scratch.resize(in_dim * cols, 0.0);
                            for (k, dst) in scratch.chunks_exact_mut(cols).enumerate() {
                                v[k * out_dim + c0..k * out_dim + c0 + cols]
                                    .convert_to_f32_slice(dst);
                            }
                            gemm_block(xd, 0, rows, c0, cols, scratch.as_ptr(), cols);
                        }
                        _ => {}
                    }
                }
            });
        } else {
            let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*w_storage else {
                candle_core::bail!("linear: expected an F32 weight");
            };
            let v = &v[ws..we];
            let per = rows.div_ceil(threads).div_ceil(16) * 16;
            let parts = rows.div_ceil(per);
            cpu::parallel_for(threads.min(parts), |t| {
                let r0 = (t * per).min(rows);
                let r1 = ((t + 1) * per).min(rows);
                if r1 > r0 {
                    gemm_block(xd, r0, r1, 0, out_dim, v.as_ptr(), out_dim);
                }
            });
        }
        Ok(())
    })?;
    drop(w_storage);
    Tensor::from_vec(out, (rows, out_dim), x.device())
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
/// F32 CPU convolutions go through [`conv2d_im2col`] (banded im2col + GEMM, all images of
/// a small input in one GEMM; 1×1 convolutions read the input directly); other dtypes and
/// devices use candle's `conv2d`. Scratch memory stays bounded at any size.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let _p = profile::scope(|| format!("conv2d {:?} x {:?} s{stride}", weight.dims(), x.dims()));
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let (_, c, h, w) = x.dims4()?;
        let (_, _, kh, kw) = weight.dims4()?;
        let b = x.dim(0)?;
        let tiles = b * h.div_ceil(2) * w.div_ceil(2);
        if (kh, kw, stride, padding) == (3, 3, 1, 1) && tiles >= WINOGRAD_MIN_TILES && c >= 8 {
            return conv2d_winograd(x, weight, bias);
        }
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

/// Fewest 2×2 output tiles (over the batch) for which [`conv2d`] runs a 3×3 stride-1
/// convolution by Winograd ([`conv2d_winograd`]): below it the transformed kernels (16/9 of
/// the weights, built per call) cost more than the products saved (measured: 1280 channels
/// at 8×8, batch 2 = 32 tiles, is 2× slower by Winograd; 128 tiles ≈ 10 % faster).
pub const WINOGRAD_MIN_TILES: usize = 128;

/// 3×3, stride-1, padding-1 convolution `x [B,C,H,W] * w [O,C,3,3] + b` by Winograd's
/// F(2×2, 3×3) on F32 CPU tensors: 16 instead of 36 products per 2×2 output pixels and
/// channel pair (the transforms only add, subtract and halve). Scratch memory is bounded
/// (bands of tile rows).
pub fn conv2d_winograd(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c || (kh, kw) != (3, 3) {
        candle_core::bail!(
            "conv2d_winograd: kernel {:?} for {c} input channels",
            weight.dims()
        );
    }
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_winograd: CPU tensors only");
    }
    let wmat = cast(weight, DType::F32)?;
    let xf = x.to_dtype(DType::F32)?;
    let bias_v = bias_f32(bias, o, "conv2d")?;
    let mut out = vec![0f32; b * o * h * w];
    if !out.is_empty() {
        f32_data(&xf, |xd| {
            f32_data(&wmat, |wd| {
                let shape = winograd::Shape { b, c, h, w, o };
                winograd::conv3x3(xd, wd, bias_v.as_deref(), shape, &mut out);
                Ok(())
            })
        })?;
    }
    Tensor::from_vec(out, (b, o, h, w), x.device())
}

/// Most elements of an im2col buffer built at once by [`conv2d_im2col`] (64 MiB of F32).
pub const IM2COL_BUDGET: usize = 1 << 24;

/// 2-D convolution as explicit im2col + GEMM: `W [O, C·k·k] × cols [C·k·k, N] → [O, N]`.
///
/// When the columns of all `B` images fit in [`IM2COL_BUDGET`] elements they are built side
/// by side and multiplied at once (the weights are streamed once per call instead of once
/// per image, which is what bounds the small, deep layers), then scattered to NCHW with the
/// bias. Otherwise each image is processed in bands of output rows that keep the column
/// buffer under the budget, each band's GEMM accumulating straight onto the output, which
/// starts as the bias planes. The column buffer is filled on all threads and reused across
/// bands; a 1×1, stride-1, unpadded convolution of one image reads the input directly.
pub fn conv2d_im2col(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_im2col_budget(x, weight, bias, stride, padding, IM2COL_BUDGET)
}

/// [`conv2d_im2col`] with an explicit column-buffer budget (elements).
fn conv2d_im2col_budget(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    budget: usize,
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
    let bias_v = bias_f32(bias, o, "conv2d")?;
    let plane_out = ho * wo;
    let total = b * o * plane_out;
    if total == 0 {
        return Tensor::zeros((b, o, ho, wo), DType::F32, x.device());
    }
    let geom = Im2col {
        c,
        h,
        w,
        kh,
        kw,
        stride,
        padding,
        wo,
    };
    let threads = cpu::num_threads();
    let out = f32_data(&xf, |data| {
        f32_data(&wmat, |wdata| {
            let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
            if b > 1 && b * kdim * plane_out <= budget {
                // all images in one GEMM into [O, B·plane], then scattered to NCHW + bias
                let n = b * plane_out;
                let mut col = vec![0f32; kdim * n];
                for bi in 0..b {
                    let img = &data[bi * c * h * w..(bi + 1) * c * h * w];
                    geom.fill(img, &mut col, n, bi * plane_out, 0, ho, threads);
                }
                let mut tmp: Vec<f32> = Vec::with_capacity(o * n);
                // SAFETY: `tmp` has capacity `o × n`, every element written by the GEMM
                // (read_dst = false); wdata is `o × kdim` and col `kdim × n`, row-major.
                unsafe {
                    sgemm_rowmajor(
                        o,
                        n,
                        kdim,
                        tmp.as_mut_ptr(),
                        n,
                        false,
                        wdata,
                        kdim,
                        &col,
                        n,
                        true,
                    );
                    tmp.set_len(o * n);
                }
                let mut out: Vec<f32> = Vec::with_capacity(total);
                for bi in 0..b {
                    for oc in 0..o {
                        let src = &tmp[oc * n + bi * plane_out..oc * n + (bi + 1) * plane_out];
                        match &bias_v {
                            Some(bv) => out.extend(src.iter().map(|v| v + bv[oc])),
                            None => out.extend_from_slice(src),
                        }
                    }
                }
                return Ok(out);
            }
            // The output starts as the bias planes (or zeros) and every band's GEMM
            // accumulates onto it, so the bias costs no extra pass.
            let mut out: Vec<f32> = match &bias_v {
                Some(bv) => {
                    let mut out = Vec::with_capacity(total);
                    // planes run batch-major, channel-minor
                    for _ in 0..b {
                        for &bval in bv {
                            out.extend(std::iter::repeat_n(bval, plane_out));
                        }
                    }
                    out
                }
                None => vec![0f32; total],
            };
            let band = (budget / (kdim * wo).max(1)).clamp(1, ho.max(1));
            let mut col = if pointwise {
                Vec::new()
            } else {
                vec![0f32; kdim * band * wo]
            };
            for bi in 0..b {
                let img = &data[bi * c * h * w..(bi + 1) * c * h * w];
                if pointwise {
                    // the input plane is the column matrix [C, H·W]
                    let dst = &mut out[bi * o * plane_out..];
                    // SAFETY: dst holds `o` rows of `plane_out`; img is `c × plane_out`.
                    unsafe {
                        sgemm_rowmajor(
                            o,
                            plane_out,
                            kdim,
                            dst.as_mut_ptr(),
                            plane_out,
                            true,
                            wdata,
                            kdim,
                            img,
                            plane_out,
                            true,
                        );
                    }
                    continue;
                }
                let mut y0 = 0;
                while y0 < ho {
                    let rows = band.min(ho - y0);
                    let n = rows * wo;
                    let col = &mut col[..kdim * n];
                    geom.fill(img, col, n, 0, y0, rows, threads);
                    let dst = &mut out[bi * o * plane_out + y0 * wo..];
                    // SAFETY: dst holds `o` rows of `n` elements `plane_out` apart (the last
                    // row ends inside `out`), wdata is `o × kdim`, col `kdim × n`, row-major.
                    unsafe {
                        sgemm_rowmajor(
                            o,
                            n,
                            kdim,
                            dst.as_mut_ptr(),
                            plane_out,
                            true,
                            wdata,
                            kdim,
                            col,
                            n,
                            true,
                        );
                    }
                    y0 += rows;
                }
            }
            Ok(out)
        })
    })?;
    Tensor::from_vec(out, (b, o, ho, wo), x.device())
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`, all row-major with the given row strides
/// (`dst` is read, and the product added to it, when `accumulate` is set), on all
/// threads when `parallel`: blocks of `lhs` rows when `m ≥ n` (each thread reads its part
/// of `lhs`, the weights), else blocks of columns, each a single-threaded GEMM.
///
/// # Safety
///
/// `dst` must point to `m` rows of `n` writable elements `ld_dst` apart (readable when
/// `accumulate`), `lhs` hold `m` rows of `k` elements `ld_lhs` apart and `rhs` `k` rows of `n`
/// elements `ld_rhs` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_rowmajor(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ld_dst: usize,
    accumulate: bool,
    lhs: &[f32],
    ld_lhs: usize,
    rhs: &[f32],
    ld_rhs: usize,
    parallel: bool,
) {
    debug_assert!(m == 0 || lhs.len() >= (m - 1) * ld_lhs + k);
    debug_assert!(k == 0 || rhs.len() >= (k - 1) * ld_rhs + n);
    if m == 0 || n == 0 {
        return;
    }
    let dstp = cpu::SharedMut(dst);
    let one = |i0: usize, i1: usize, by_rows: bool, par: gemm::Parallelism| {
        let (r0, r1, c0, c1) = if by_rows {
            (i0, i1, 0, n)
        } else {
            (0, m, i0, i1)
        };
        if r1 <= r0 || c1 <= c0 {
            return;
        }
        // SAFETY: the caller's contract, restricted to rows r0..r1 and columns c0..c1.
        unsafe {
            cpu::gemm_f32(
                r1 - r0,
                c1 - c0,
                k,
                dstp.ptr().add(r0 * ld_dst + c0),
                ld_dst,
                accumulate,
                cpu::Mat::rows(lhs.as_ptr().add(r0 * ld_lhs), ld_lhs),
                cpu::Mat::rows(rhs.as_ptr().add(c0), ld_rhs),
                par,
            );
        }
    };
    let threads = if parallel && m * n * k >= 1 << 18 {
        cpu::num_threads()
    } else {
        1
    };
    if threads == 1 {
        one(0, m, true, gemm::Parallelism::None);
        return;
    }
    let by_rows = m >= n;
    let span = if by_rows { m } else { n };
    let per = span.div_ceil(threads).div_ceil(16) * 16;
    cpu::parallel_for(threads.min(span.div_ceil(per)).max(1), |t| {
        one(
            (t * per).min(span),
            ((t + 1) * per).min(span),
            by_rows,
            gemm::Parallelism::None,
        )
    });
}

/// Geometry of an im2col expansion: input `[C, H, W]`, kernel `kh × kw`, stride, symmetric
/// padding, output width `wo`.
struct Im2col {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    wo: usize,
}

impl Im2col {
    /// Fills the im2col rows of one band (`rows` output rows from `y0`) of one image
    /// `img [C, H, W]` into `col [C·kh·kw, ld]` at column offset `off` (the band takes
    /// `rows·wo` columns), padding positions set to zero; the channels are split over
    /// `threads` scoped threads.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        img: &[f32],
        col: &mut [f32],
        ld: usize,
        off: usize,
        y0: usize,
        rows: usize,
        threads: usize,
    ) {
        let Im2col {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            wo,
        } = *self;
        let per_ch = kh * kw * ld;
        let fill = |ch0: usize, part: &mut [f32]| {
            for (k, chunk) in part.chunks_mut(per_ch).enumerate() {
                let ch = ch0 + k;
                let plane = &img[ch * h * w..(ch + 1) * h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let r = ky * kw + kx;
                        let dst = &mut chunk[r * ld + off..r * ld + off + rows * wo];
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
        let col = &mut col[..c * per_ch];
        let threads = threads.clamp(1, c.max(1));
        if threads == 1 || c * kh * kw * rows * wo < (1 << 16) {
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
    let _p = profile::scope(|| {
        format!(
            "group_norm{} {:?}",
            if silu_after { "+silu" } else { "" },
            x.dims()
        )
    });
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
                cpu::affine_act_slice(src, dst, scale, shift, silu_after);
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
        let _p = profile::scope(|| format!("layer_norm {:?}", x.dims()));
        let w = cast(&self.weight, x.dtype())?;
        let b = cast(&self.bias, x.dtype())?;
        if is_cpu_f32(&[x, &w, &b]) {
            return layer_norm_f32(x, &w, &b, self.eps);
        }
        candle_nn::ops::layer_norm(&x.contiguous()?, &w, &b, self.eps)
    }
}

/// Layer norm over the last dimension of an F32 CPU tensor: per row, mean and biased
/// variance in two passes (F64 sums), then `(x − mean)·rstd·w + b`; rows split over the
/// threads when the tensor is large.
fn layer_norm_f32(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)?;
    let wv: Vec<f32> = w.flatten_all()?.to_vec1()?;
    let bv: Vec<f32> = b.flatten_all()?.to_vec1()?;
    if wv.len() != dim || bv.len() != dim {
        candle_core::bail!("layer_norm: weight/bias of {} for width {dim}", wv.len());
    }
    let rows = x.elem_count() / dim.max(1);
    let mut out = vec![0f32; rows * dim];
    f32_data(x, |xd| {
        let threads = if xd.len() >= 1 << 16 {
            cpu::num_threads().clamp(1, rows.max(1))
        } else {
            1
        };
        let per = rows.div_ceil(threads).max(1);
        let dst = cpu::SharedMut(out.as_mut_ptr());
        cpu::parallel_for(threads, |t| {
            let r0 = (t * per).min(rows);
            let r1 = ((t + 1) * per).min(rows);
            for r in r0..r1 {
                let src = &xd[r * dim..(r + 1) * dim];
                let mean = sum_f64(src, |v| v) / dim as f64;
                let var = sum_f64(src, |v| {
                    let d = v - mean;
                    d * d
                }) / dim as f64;
                let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
                // SAFETY: thread `t` writes rows `r0..r1` only.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r * dim), dim) };
                cpu::norm_affine_row(src, o, mean as f32, rstd, &wv, &bv);
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, x.shape(), x.device())
}

/// Multi-head scaled dot-product attention without mask.
///
/// `q [B, Tq, H·D]`, `k`/`v` `[B, Tk, H·D]` → `[B, Tq, H·D]`, with
/// `softmax(q kᵀ · D^-½) v` per head (the scale is applied to the product, as
/// ComfyUI's `baddbmm(…, alpha = scale)` does).
///
/// F32 CPU tensors go through a fused kernel that reads the heads in place and keeps one
/// cache-sized block of scores per thread (bounded memory at any image size); other
/// dtypes/devices split the heads and process the query axis in slices so that at most
/// [`ATTENTION_SCORE_BUDGET`] scores exist at once: a 1024×1024 SDXL or SD1.5 image
/// (4096–16384 tokens) stays within memory.
///
/// F16/BF16 (the GPU compute dtypes): with the `flash-attn` feature on CUDA the flash
/// kernel runs it ([`crate::flash`]); otherwise scores, softmax and the weighted sum are
/// computed in F32 and the result cast back, as PyTorch's `scaled_dot_product_attention`
/// accumulates in F32 (half-precision scores overflow, e.g. in SD2.x).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, tq, inner) = q.dims3()?;
    let (bk, tk, inner_k) = k.dims3()?;
    if inner % heads.max(1) != 0 || heads == 0 {
        candle_core::bail!("attention: width {inner} not divisible by {heads} heads");
    }
    if bk != b || inner_k != inner || v.dims3()? != (b, tk, inner) {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = inner / heads;
    let scale = (d as f64).powf(-0.5);
    let _p = profile::scope(|| format!("attention {b}x{tq}x{tk}, {heads} heads x {d}"));
    if crate::flash::applies(q, d) {
        return crate::flash::attention(q, k, v, heads);
    }
    let dtype = q.dtype();
    if matches!(dtype, DType::F16 | DType::BF16) {
        let up = |t: &Tensor| t.to_dtype(DType::F32);
        return attention(&up(q)?, &up(k)?, &up(v)?, heads)?.to_dtype(dtype);
    }
    if is_cpu_f32(&[q, k, v]) {
        let shape = cpu::AttnShape {
            b,
            tq,
            tk,
            heads,
            d,
            q_rs: inner,
            k_rs: inner,
            v_rs: inner,
        };
        return attention_f32(q, k, v, shape, scale, (b, tq, inner));
    }
    let split = |t: &Tensor, n: usize| -> Result<Tensor> {
        t.reshape((b, n, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, n, d))
    };
    let q = split(q, tq)?;
    let k = split(k, tk)?;
    let v = split(v, tk)?;
    let out = attention_heads_budget(&q, &k, &v, scale, ATTENTION_SCORE_BUDGET)?;
    out.reshape((b, heads, tq, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, tq, inner))
}

/// Whether every tensor is F32 on the CPU (the fused kernels' domain).
fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Runs the fused CPU attention kernel ([`cpu::attention`]) on contiguous copies of
/// `q`/`k`/`v` (no copy when already contiguous) into a new tensor of `out_shape`.
fn attention_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: cpu::AttnShape,
    scale: f64,
    out_shape: (usize, usize, usize),
) -> Result<Tensor> {
    let n = out_shape.0 * out_shape.1 * out_shape.2;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    f32_data(q, |qd| {
        f32_data(k, |kd| {
            f32_data(v, |vd| {
                let need = |len: usize, t: usize, rs: usize| {
                    shape.b * t * rs <= len && shape.heads * shape.d <= rs
                };
                if !(need(qd.len(), shape.tq, shape.q_rs)
                    && need(kd.len(), shape.tk, shape.k_rs)
                    && need(vd.len(), shape.tk, shape.v_rs)
                    && n == shape.b * shape.tq * shape.heads * shape.d)
                {
                    candle_core::bail!("attention: inconsistent shapes {shape:?}");
                }
                // SAFETY: the rows fit the slices (checked above) and `out` has capacity
                // for `n = B·Tq·H·D` elements, each written once by the kernel.
                unsafe {
                    cpu::attention(qd, kd, vd, out.as_mut_ptr(), shape, scale as f32);
                    out.set_len(n);
                }
                Ok(())
            })
        })
    })?;
    Tensor::from_vec(out, out_shape, q.device())
}

/// Attention on head-split tensors `q [N, Tq, D]`, `k`/`v` `[N, Tk, D]` with the given
/// scale. F32 CPU tensors go through the fused kernel (scores exist one cache-sized block
/// at a time); others slice the query axis to bound the score matrix.
pub fn attention_heads(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if is_cpu_f32(&[q, k, v]) {
        let (n, tq, d) = q.dims3()?;
        let (nk, tk, dk) = k.dims3()?;
        if nk != n || dk != d || v.dims3()? != (n, tk, d) {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not match",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        let shape = cpu::AttnShape {
            b: n,
            tq,
            tk,
            heads: 1,
            d,
            q_rs: d,
            k_rs: d,
            v_rs: d,
        };
        return attention_f32(q, k, v, shape, scale, (n, tq, d));
    }
    attention_heads_budget(q, k, v, scale, ATTENTION_SCORE_BUDGET)
}

/// [`attention_heads`] on candle's generic ops with an explicit score budget (elements per
/// query slice), for any dtype and device.
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
        let threads = cpu::num_threads().clamp(1, rows.max(1));
        let rows_per = rows.div_ceil(threads).max(1);
        let dst = cpu::SharedMut(out.as_mut_ptr());
        cpu::parallel_for(threads, |t| {
            let r0 = (t * rows_per).min(rows);
            let r1 = ((t + 1) * rows_per).min(rows);
            // SAFETY: thread `t` writes rows `r0..r1` of `out` only.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r0 * dim), (r1 - r0) * dim) };
            cpu::softmax_rows(&src[r0 * dim..r1 * dim], dst, dim, scale);
        });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Nearest-neighbour resize of `[B, C, H, W]` to `(h, w)` (`F.interpolate(mode="nearest")`:
/// source index `floor(dst · in / out)`).
pub fn upsample_nearest(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let _p = profile::scope(|| format!("upsample_nearest {:?}", x.dims()));
    if is_cpu_f32(&[x]) && x.rank() == 4 {
        return upsample_nearest_f32(x, h, w);
    }
    x.upsample_nearest2d(h, w)
}

/// [`upsample_nearest`] for F32 CPU tensors: planes split over the threads, each output
/// row copied from its source row (same index rule as candle's `upsample_nearest2d`).
fn upsample_nearest_f32(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, hi, wi) = x.dims4()?;
    if hi == 0 || wi == 0 {
        return x.upsample_nearest2d(h, w);
    }
    let src_idx = |dst: usize, src_len: usize, dst_len: usize| {
        let scale = src_len as f64 / dst_len as f64;
        usize::min(src_len - 1, (dst as f64 * scale) as usize)
    };
    let sy: Vec<usize> = (0..h).map(|y| src_idx(y, hi, h)).collect();
    let sx: Vec<usize> = (0..w).map(|x| src_idx(x, wi, w)).collect();
    let planes = b * c;
    let mut out = vec![0f32; planes * h * w];
    f32_data(x, |xd| {
        let threads = if out.len() >= 1 << 16 {
            cpu::num_threads().clamp(1, planes.max(1))
        } else {
            1
        };
        let per = planes.div_ceil(threads).max(1);
        let dst = cpu::SharedMut(out.as_mut_ptr());
        cpu::parallel_for(threads, |t| {
            for p in (t * per).min(planes)..((t + 1) * per).min(planes) {
                let src = &xd[p * hi * wi..(p + 1) * hi * wi];
                // SAFETY: thread `t` writes its own planes only.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(p * h * w), h * w) };
                for y in 0..h {
                    if y > 0 && sy[y] == sy[y - 1] {
                        // the same source row as the previous output row
                        o.copy_within((y - 1) * w..y * w, y * w);
                        continue;
                    }
                    let s = &src[sy[y] * wi..(sy[y] + 1) * wi];
                    for (d, &ix) in o[y * w..(y + 1) * w].iter_mut().zip(&sx) {
                        *d = s[ix];
                    }
                }
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (b, c, h, w), x.device())
}

/// `x · sigmoid(x)` (vectorised and multi-threaded for F32 CPU tensors).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let _p = profile::scope(|| format!("silu {:?}", x.dims()));
    if is_cpu_f32(&[x]) {
        return map_rows_f32(x, cpu::silu_slice);
    }
    candle_nn::ops::silu(x)
}

/// Exact (erf) GELU (vectorised and multi-threaded for F32 CPU tensors, including the
/// strided halves [`chunk2`] returns).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let _p = profile::scope(|| format!("gelu {:?}", x.dims()));
    if is_cpu_f32(&[x]) {
        return map_rows_f32(x, cpu::gelu_slice);
    }
    x.gelu_erf()
}

/// GEGLU: `a · gelu(gate)` for `(a, gate) = chunk2(h, last dim)`, in one pass for F32 CPU
/// tensors (no intermediate tensors).
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let _p = profile::scope(|| format!("geglu {:?}", h.dims()));
    let last = h
        .rank()
        .checked_sub(1)
        .ok_or_else(|| candle_core::Error::Msg("geglu: scalar input".to_string()))?;
    let (a, gate) = chunk2(h, last)?;
    if !is_cpu_f32(&[h]) {
        return a * gelu(&gate)?;
    }
    let h = h.contiguous()?;
    let width = h.dim(last)?;
    let half = width / 2;
    let rows = h.elem_count() / width.max(1);
    let mut out = vec![0f32; rows * half];
    f32_data(&h, |hd| {
        let threads = cpu::num_threads().clamp(1, rows.max(1));
        let per = rows.div_ceil(threads).max(1);
        let dst = cpu::SharedMut(out.as_mut_ptr());
        cpu::parallel_for(threads, |t| {
            let r0 = (t * per).min(rows);
            let r1 = ((t + 1) * per).min(rows);
            for r in r0..r1 {
                let row = &hd[r * width..r * width + 2 * half];
                // SAFETY: thread `t` writes output rows `r0..r1` only.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r * half), half) };
                cpu::geglu_slice(&row[..half], &row[half..], o);
            }
        });
        Ok(())
    })?;
    let mut dims = h.dims().to_vec();
    dims[last] = half;
    Tensor::from_vec(out, dims, h.device())
}

/// Applies `f(src_row, dst_row)` to the rows of an F32 CPU tensor (contiguous, or rows
/// with a uniform stride such as a last-dimension narrow) on all threads, into a new
/// contiguous tensor of the same shape.
fn map_rows_f32(x: &Tensor, f: fn(&[f32], &mut [f32])) -> Result<Tensor> {
    let (storage, layout) = x.storage_and_layout();
    let src = match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => v.as_slice(),
        _ => candle_core::bail!("expected an F32 CPU tensor"),
    };
    let Some((start, rows, len, stride)) = cpu::row_view(layout) else {
        drop(storage);
        return map_rows_f32(&x.contiguous()?, f);
    };
    if rows > 0 && start + (rows - 1) * stride + len > src.len() {
        candle_core::bail!("map_rows: layout out of bounds");
    }
    let n = rows * len;
    let mut out = vec![0f32; n];
    // one contiguous run when the rows are back to back
    let (rows, len, stride) = if stride == len {
        (1, n, n)
    } else {
        (rows, len, stride)
    };
    let threads = cpu::num_threads().clamp(1, (n / 4096).max(1));
    let dst = cpu::SharedMut(out.as_mut_ptr());
    cpu::parallel_for(threads, |t| {
        if rows == 1 {
            let per = n.div_ceil(threads);
            let a = (t * per).min(n);
            let b = ((t + 1) * per).min(n);
            // SAFETY: thread `t` writes elements `a..b` only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(a), b - a) };
            f(&src[start + a..start + b], o);
        } else {
            let per = rows.div_ceil(threads);
            for r in (t * per).min(rows)..((t + 1) * per).min(rows) {
                let s0 = start + r * stride;
                // SAFETY: thread `t` writes rows `t·per..` of its share only.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r * len), len) };
                f(&src[s0..s0 + len], o);
            }
        }
    });
    drop(storage);
    Tensor::from_vec(out, x.shape(), x.device())
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
        let want = naive_attention(&q, &k, &v, 0.3);
        // the generic path, sliced
        const { assert!(ATTENTION_SCORE_BUDGET / (3 * 4100) < 4100) };
        let a = attention_heads_budget(&q, &k, &v, 0.3, ATTENTION_SCORE_BUDGET).unwrap();
        assert!(max_abs_diff(&a, &want).unwrap() < 1e-5);
        // the fused CPU kernel (blocks of queries)
        let a = attention_heads(&q, &k, &v, 0.3).unwrap();
        assert!(max_abs_diff(&a, &want).unwrap() < 1e-5);
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

    /// candle's own convolution (+ bias), the reference for the CPU kernels.
    fn candle_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Tensor {
        let y = x.conv2d(w, pad, stride, 1, 1).unwrap();
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    }

    #[test]
    fn im2col_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 9, 7), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (6, 5, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 6, &dev).unwrap();
        for (stride, pad) in [(1, 1), (2, 1), (2, 0), (1, 0)] {
            let want = candle_conv(&x, &w, Some(&b), stride, pad);
            let got = conv2d_im2col(&x, &w, Some(&b), stride, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "{stride} {pad}");
        }
    }

    #[test]
    fn conv_paths_match_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 6, 11, 9), &dev).unwrap();
        for (k, stride, pad) in [
            (3, 1, 1),
            (3, 2, 1),
            (3, 2, 0),
            (1, 1, 0),
            (1, 2, 0),
            (1, 1, 1),
        ] {
            let w = Tensor::randn(0f32, 0.3, (5, 6, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.3, 5, &dev).unwrap();
            let want = candle_conv(&x, &w, Some(&b), stride, pad);
            // all images at once, whole images one by one, bands of one output row
            for budget in [1 << 20, 6 * k * k * 99, 1] {
                for bias in [Some(&b), None] {
                    let got = conv2d_im2col_budget(&x, &w, bias, stride, pad, budget).unwrap();
                    let want = match bias {
                        Some(_) => want.clone(),
                        None => candle_conv(&x, &w, None, stride, pad),
                    };
                    assert_eq!(got.dims(), want.dims());
                    let d = max_abs_diff(&got, &want).unwrap();
                    assert!(d < 1e-5, "k{k} s{stride} p{pad} budget {budget}: {d}");
                }
            }
            // the public entry point
            let got = conv2d(&x, &w, Some(&b), stride, pad).unwrap();
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5);
        }
    }

    #[test]
    fn winograd_conv_matches_candle() {
        let dev = Device::Cpu;
        for (b, c, o, h, w) in [
            (2, 5, 7, 9, 11),
            (1, 16, 3, 8, 8),
            (3, 9, 4, 1, 1),
            (1, 3, 2, 2, 5),
            (2, 40, 33, 17, 6),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.3, (o, c, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 0.3, o, &dev).unwrap();
            let want = candle_conv(&x, &wt, Some(&bias), 1, 1);
            let xd: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let wd: Vec<f32> = wt.flatten_all().unwrap().to_vec1().unwrap();
            let bd: Vec<f32> = bias.to_vec1().unwrap();
            // one band, and bands of one tile row (crossing images)
            for budget in [1 << 22, 1] {
                let mut out = vec![f32::NAN; b * o * h * w];
                let shape = winograd::Shape { b, c, h, w, o };
                winograd::conv3x3_budget(&xd, &wd, Some(&bd), shape, &mut out, budget);
                let got = Tensor::from_vec(out, (b, o, h, w), &dev).unwrap();
                let d = max_abs_diff(&got, &want).unwrap();
                assert!(d < 2e-5, "{b} {c} {o} {h} {w} budget {budget}: {d}");
            }
            let got = conv2d_winograd(&x, &wt, None).unwrap();
            let want = candle_conv(&x, &wt, None, 1, 1);
            assert!(max_abs_diff(&got, &want).unwrap() < 2e-5);
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
            let want = candle_conv(&x, &w, Some(&b), stride, pad);
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
    fn upsample_nearest_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap();
        for (h, w) in [(10, 14), (11, 13), (5, 7), (3, 4), (400, 9)] {
            let got = upsample_nearest(&x, h, w).unwrap();
            let want = x.upsample_nearest2d(h, w).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(max_abs_diff(&got, &want).unwrap(), 0.0, "{h}x{w}");
        }
    }

    #[test]
    fn layer_norm_matches_candle() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2.0, (2, 37, 320), &dev).unwrap() + 3.0).unwrap();
        let w = Tensor::randn(1f32, 0.1, 320, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 320, &dev).unwrap();
        let ln = LayerNorm {
            weight: w.clone(),
            bias: b.clone(),
            eps: 1e-5,
        };
        let got = ln.forward(&x).unwrap();
        let want = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5).unwrap();
        assert!(max_abs_diff(&got, &want).unwrap() < 1e-5);
        let big = Tensor::randn(0f32, 1.0, (2, 300, 320), &dev).unwrap();
        let got = ln.forward(&big).unwrap();
        let want = candle_nn::ops::layer_norm_slow(&big, &w, &b, 1e-5).unwrap();
        assert!(max_abs_diff(&got, &want).unwrap() < 1e-5);
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
    fn transposed_weight_storage_gives_identical_results() {
        let dev = Device::Cpu;
        for (rows, i, o) in [
            (2, 64, 48),
            (128, 96, 80),
            (300, 33, 17),
            (7, 320, 1280),
            (40, 1280, 600),
            (1, 5, 1),
        ] {
            let w = Tensor::randn(0f32, 1.0, (o, i), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (rows, i), &dev).unwrap();
            let wt = store_transposed(w.copy().unwrap(), false).unwrap();
            if i > 1 && o > 1 {
                assert_eq!(wt.stride(), &[1, o]);
            }
            assert_eq!(max_abs_diff(&w, &wt).unwrap(), 0.0);
            let want = x.matmul(&w.t().unwrap()).unwrap();
            for bias in [None, Some(&b)] {
                let a = linear_f32(&x, &w, bias).unwrap();
                let c = linear_f32(&x, &wt, bias).unwrap();
                assert_eq!(max_abs_diff(&a, &c).unwrap(), 0.0, "{rows} {i} {o}");
                let want = match bias {
                    Some(b) => want.broadcast_add(b).unwrap(),
                    None => want.clone(),
                };
                assert!(max_abs_diff(&a, &want).unwrap() < 1e-4, "{rows} {i} {o}");
            }
            // half-precision weights (converted block by block) give exactly the result of
            // their F32 values
            for dt in [DType::F16, DType::BF16] {
                let wh = w.to_dtype(dt).unwrap();
                let w32 = wh.to_dtype(DType::F32).unwrap();
                let a = linear_f32(&x, &w32, Some(&b)).unwrap();
                for wv in [wh.clone(), store_transposed(wh.clone(), false).unwrap()] {
                    let c = linear_f32(&x, &wv, Some(&b)).unwrap();
                    assert_eq!(max_abs_diff(&a, &c).unwrap(), 0.0, "{dt:?} {rows} {i} {o}");
                }
            }
        }
    }

    /// F16 attention accumulates in F32 like PyTorch's SDPA: scores beyond F16's 65504 stay
    /// finite and the result equals the F32 one up to F16 rounding. Key j is `(j+1)·1`,
    /// every query is `60·1` (exact in F16), so score j is `7680·(j+1)`: 69120 for j = 8.
    #[test]
    fn f16_attention_does_not_overflow_its_scores() {
        let dev = Device::Cpu;
        let q = Tensor::full(60f32, (1, 3, 128), &dev).unwrap();
        let ks: Vec<f32> = (0..9).flat_map(|j| std::iter::repeat_n((j + 1) as f32, 128)).collect();
        let k = Tensor::from_vec(ks, (1, 9, 128), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 9, 128), &dev).unwrap();
        let want = attention(&q, &k, &v, 1).unwrap();
        let h = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let got = attention(&h(&q), &h(&k), &h(&v), 1).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let got = got.to_dtype(DType::F32).unwrap();
        let vals: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert!(vals.iter().all(|x| x.is_finite()), "F16 scores overflowed");
        assert!(max_abs_diff(&got, &want).unwrap() < 5e-3);
        // and a pure-F16 product would have overflowed
        let raw = h(&q).matmul(&h(&k).t().unwrap()).unwrap().to_dtype(DType::F32).unwrap();
        let raw: Vec<f32> = raw.flatten_all().unwrap().to_vec1().unwrap();
        assert!(raw.iter().any(|x| x.is_infinite()), "the test needs overflowing F16 scores");
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
        assert!(max_abs_diff(&y, &want).unwrap() < 1e-5);
        // exactly the F32 layer with the same (F16-representable) values, whether the
        // weights are stored as loaded or transposed
        for weight in [
            w16.to_dtype(DType::F32).unwrap(),
            store_transposed(w16.to_dtype(DType::F32).unwrap(), false).unwrap(),
            store_transposed(w16.clone(), false).unwrap(),
        ] {
            let lin32 = Linear { weight, bias: None };
            assert_eq!(max_abs_diff(&y, &lin32.forward(&x).unwrap()).unwrap(), 0.0);
        }
    }
}
