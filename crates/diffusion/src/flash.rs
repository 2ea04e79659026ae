//! Flash attention on CUDA (cargo feature `flash-attn`, which builds candle's flash-attention
//! v2 kernels; it implies `cuda`).
//!
//! [`crate::ops::attention`] hands its tensors here when [`applies`] says so: a CUDA tensor in
//! F16 or BF16 (the GPU compute dtypes) with a head size the kernels take. Everything else
//! (the CPU, F32, a build without the feature) keeps the sliced attention in `ops`, so the
//! models never see the difference.

use candle_core::{DType, Result, Tensor};

/// True when [`attention`] can run `q` with heads of `head_dim`: this build has the
/// `flash-attn` feature, `q` lives on a CUDA device in F16 or BF16, and the head size is a
/// multiple of 8 no larger than 512 (the kernels' limits).
pub fn applies(q: &Tensor, head_dim: usize) -> bool {
    cfg!(feature = "flash-attn")
        && q.device().is_cuda()
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && head_dim.is_multiple_of(8)
        && head_dim <= 512
}

/// Multi-head attention `q [B, Tq, H·D]`, `k`/`v` `[B, Tk, H·D]` → `[B, Tq, H·D]` with
/// `softmax(q kᵀ · D^-½) v`, by the flash-attention kernel (no score matrix is stored).
/// The kernel takes `[B, T, H, D]`, which is the token-major layout the linear layers
/// produce, so no transposes are needed.
#[cfg(feature = "flash-attn")]
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, tq, inner) = q.dims3()?;
    let (_, tk, _) = k.dims3()?;
    if heads == 0 || inner % heads != 0 {
        candle_core::bail!("flash attention: width {inner} not divisible by {heads} heads");
    }
    let d = inner / heads;
    let q = q.contiguous()?.reshape((b, tq, heads, d))?;
    let k = k.contiguous()?.reshape((b, tk, heads, d))?;
    let v = v.contiguous()?.reshape((b, tk, heads, d))?;
    let out = candle_flash_attn::flash_attn(&q, &k, &v, (d as f32).powf(-0.5), false)?;
    out.reshape((b, tq, inner))
}

/// Without the `flash-attn` feature there is no kernel; [`applies`] is always false then,
/// so this is never reached from `ops`.
#[cfg(not(feature = "flash-attn"))]
pub fn attention(_q: &Tensor, _k: &Tensor, _v: &Tensor, _heads: usize) -> Result<Tensor> {
    candle_core::bail!(
        "this comfy-rs build has no flash attention (build with `--features flash-attn`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn never_applies_on_the_cpu_or_in_f32() {
        let q = Tensor::zeros((1, 4, 64), DType::F16, &Device::Cpu).unwrap();
        assert!(!applies(&q, 64));
        let q = Tensor::zeros((1, 4, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(!applies(&q, 64));
    }

    #[cfg(not(feature = "flash-attn"))]
    #[test]
    fn without_the_feature_it_says_how_to_get_it() {
        let q = Tensor::zeros((1, 4, 64), DType::F16, &Device::Cpu).unwrap();
        let e = attention(&q, &q, &q, 1).unwrap_err().to_string();
        assert!(e.contains("--features flash-attn"), "{e}");
    }
}
