//! torch-compatible CPU random numbers and ComfyUI's `prepare_noise`.

mod avx_math;
mod generator;
mod mt19937;

pub use generator::{NormalMath, TorchGenerator};
pub use mt19937::Mt19937;

use candle_core::{Device, Tensor};

/// `comfy.sample.prepare_noise(latent, seed, batch_index)`: float32 noise of `shape`
/// (`[B, C, H, W]`) on the CPU, bit-identical to torch on x86 (`NormalMath::Avx2`).
pub fn prepare_noise(
    seed: u64,
    shape: &[usize],
    batch_index: Option<&[usize]>,
    math: NormalMath,
) -> candle_core::Result<Tensor> {
    let mut gen = TorchGenerator::with_math(seed, math);
    let numel: usize = shape.iter().product();
    match batch_index {
        None => Tensor::from_vec(gen.randn(numel), shape, &Device::Cpu),
        Some(idx) => {
            let per: usize = shape.iter().skip(1).product();
            let max = idx.iter().copied().max().unwrap_or(0);
            let mut draws: Vec<Option<Vec<f32>>> = Vec::with_capacity(max + 1);
            for k in 0..=max {
                let d = gen.randn(per);
                draws.push(if idx.contains(&k) { Some(d) } else { None });
            }
            let mut out = Vec::with_capacity(per * idx.len());
            for &k in idx {
                if let Some(Some(d)) = draws.get(k) {
                    out.extend_from_slice(d);
                }
            }
            let mut s = shape.to_vec();
            if let Some(first) = s.first_mut() {
                *first = idx.len();
            }
            Tensor::from_vec(out, s, &Device::Cpu)
        }
    }
}
