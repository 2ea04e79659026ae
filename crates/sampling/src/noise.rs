//! Per-step noise sources of stochastic samplers: ComfyUI's `default_noise_sampler`
//! (a torch CPU generator seeded with `seed + 1`), a Brownian-tree source for the SDE
//! samplers, and a recorded source for replaying known draws.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::rng::{NormalMath, TorchGenerator};

/// A source of standard-normal tensors for one sampling run.
pub trait NoiseSource {
    /// Next noise tensor for the step `sigma → sigma_next` (shape/device of the latent).
    fn sample(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor>;
}

/// `default_noise_sampler(x, seed)` on the CPU: successive `torch.randn(x.shape)` draws
/// from a generator seeded with `seed + 1`, moved to the latent's device and dtype.
pub struct DefaultNoise {
    gen: TorchGenerator,
    shape: Vec<usize>,
    device: Device,
    dtype: DType,
}

impl DefaultNoise {
    /// Creates the source for a latent like `like`; `seed` is the KSampler seed (the +1 is applied here).
    pub fn new(seed: u64, like: &Tensor, math: NormalMath) -> Self {
        Self {
            gen: TorchGenerator::with_math(seed.wrapping_add(1), math),
            shape: like.dims().to_vec(),
            device: like.device().clone(),
            dtype: like.dtype(),
        }
    }
}

impl NoiseSource for DefaultNoise {
    fn sample(&mut self, _sigma: f32, _sigma_next: f32) -> Result<Tensor> {
        let n: usize = self.shape.iter().product();
        let t = Tensor::from_vec(self.gen.randn(n), self.shape.as_slice(), &Device::Cpu)?;
        Ok(t.to_device(&self.device)?.to_dtype(self.dtype)?)
    }
}

/// Replays a fixed list of draws (e.g. the `noise_draws` recorded from ComfyUI).
pub struct RecordedNoise {
    draws: Vec<Tensor>,
    next: usize,
}

impl RecordedNoise {
    /// Draws are returned in order; running out is an error.
    pub fn new(draws: Vec<Tensor>) -> Self {
        Self { draws, next: 0 }
    }

    /// How many draws were consumed so far.
    pub fn used(&self) -> usize {
        self.next
    }
}

impl NoiseSource for RecordedNoise {
    fn sample(&mut self, _sigma: f32, _sigma_next: f32) -> Result<Tensor> {
        let t = self.draws.get(self.next).cloned().ok_or_else(|| {
            crate::SamplingError::Invalid(format!(
                "recorded noise exhausted after {} draws",
                self.next
            ))
        })?;
        self.next += 1;
        Ok(t)
    }
}

/// A Brownian motion `W` on `[t0, t1]` (`W(t0) = 0`) sampled lazily by bisection with
/// Brownian bridges; every node's randomness comes from its own seeded torch generator, so
/// queries are reproducible and consistent across step sizes (`W(b) − W(a)` over adjacent
/// intervals add up). `sample(σ, σ')` returns `(W(σ') − W(σ)) / √|σ' − σ|`, a standard normal
/// tensor, as ComfyUI's `BrownianTreeNoiseSampler` does. This is statistically equivalent to
/// torchsde's tree but not bit-identical to it.
pub struct BrownianTreeNoise {
    seed: u64,
    t0: f64,
    t1: f64,
    tol: f64,
    numel: usize,
    shape: Vec<usize>,
    device: Device,
    dtype: DType,
    w1: Vec<f32>,
    cache: std::collections::HashMap<(u32, u64), Vec<f32>>,
    math: NormalMath,
}

impl BrownianTreeNoise {
    /// Tree over `[sigma_min, sigma_max]` with the given entropy seed.
    pub fn new(seed: u64, sigma_min: f32, sigma_max: f32, like: &Tensor, math: NormalMath) -> Self {
        let (t0, t1) = if sigma_min <= sigma_max {
            (sigma_min, sigma_max)
        } else {
            (sigma_max, sigma_min)
        };
        let (t0, t1) = (t0 as f64, t1 as f64);
        let numel = like.elem_count();
        let mut g = TorchGenerator::with_math(node_seed(seed, 0, 0), math);
        let scale = (t1 - t0).max(0.0).sqrt() as f32;
        let w1 = g.randn(numel).into_iter().map(|v| v * scale).collect();
        Self {
            seed,
            t0,
            t1,
            tol: 1e-6,
            numel,
            shape: like.dims().to_vec(),
            device: like.device().clone(),
            dtype: like.dtype(),
            w1,
            cache: Default::default(),
            math,
        }
    }

    /// W at the midpoint of node (depth, index), given W at its ends.
    fn mid_value(&mut self, depth: u32, index: u64, wa: &[f32], wb: &[f32], len: f64) -> Vec<f32> {
        if let Some(v) = self.cache.get(&(depth, index)) {
            return v.clone();
        }
        let mut g = TorchGenerator::with_math(node_seed(self.seed, depth + 1, index), self.math);
        let z = g.randn(self.numel);
        // Bridge at the midpoint: mean (wa+wb)/2, variance len/4.
        let sd = (len / 4.0).sqrt() as f32;
        let v: Vec<f32> = wa
            .iter()
            .zip(wb)
            .zip(z)
            .map(|((a, b), z)| 0.5 * (a + b) + sd * z)
            .collect();
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        self.cache.insert((depth, index), v.clone());
        v
    }

    /// W(t) by bisection down to `tol`, linear interpolation inside the final leaf.
    fn w_at(&mut self, t: f64) -> Vec<f32> {
        let t = t.clamp(self.t0, self.t1);
        let (mut a, mut b) = (self.t0, self.t1);
        let mut wa = vec![0.0f32; self.numel];
        let mut wb = self.w1.clone();
        let (mut depth, mut index) = (0u32, 0u64);
        loop {
            if (t - a).abs() <= self.tol {
                return wa;
            }
            if (t - b).abs() <= self.tol {
                return wb;
            }
            if depth >= 60 || b - a <= self.tol {
                let w = ((t - a) / (b - a)) as f32;
                return wa.iter().zip(&wb).map(|(x, y)| x + w * (y - x)).collect();
            }
            let m = 0.5 * (a + b);
            let wm = self.mid_value(depth, index, &wa, &wb, b - a);
            if t < m {
                b = m;
                wb = wm;
                index *= 2;
            } else {
                a = m;
                wa = wm;
                index = index * 2 + 1;
            }
            depth += 1;
        }
    }
}

fn node_seed(seed: u64, depth: u32, index: u64) -> u64 {
    // SplitMix64-style mixing of (seed, depth, index).
    let mut z = seed
        ^ (depth as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseSource for BrownianTreeNoise {
    fn sample(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor> {
        let (s, t) = (sigma as f64, sigma_next as f64);
        let (lo, hi, sign) = if s < t {
            (s, t, 1.0f32)
        } else {
            (t, s, -1.0f32)
        };
        let wl = self.w_at(lo);
        let wh = self.w_at(hi);
        let denom = (hi - lo).abs().sqrt().max(1e-30) as f32;
        // W(σ') − W(σ) with the sign of the direction σ → σ'.
        let v: Vec<f32> = wh
            .iter()
            .zip(&wl)
            .map(|(h, l)| sign * (h - l) / denom)
            .collect();
        let t = Tensor::from_vec(v, self.shape.as_slice(), &Device::Cpu)?;
        Ok(t.to_device(&self.device)?.to_dtype(self.dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var)
    }

    #[test]
    fn brownian_increments_are_standard_normal_and_consistent() {
        let like = Tensor::zeros((1, 4, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let mut b = BrownianTreeNoise::new(42, 0.03, 14.6, &like, NormalMath::Avx2);
        for (s, t) in [(14.6f32, 9.1f32), (9.1, 5.0), (1.0, 0.5), (0.2, 0.03)] {
            let v: Vec<f32> = b
                .sample(s, t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (m, var) = stats(&v);
            assert!(
                m.abs() < 0.1 && (var - 1.0).abs() < 0.1,
                "{s}->{t}: mean {m} var {var}"
            );
        }
        // Additivity: W(c)−W(a) = (W(b)−W(a)) + (W(c)−W(b)).
        let (a, m, c) = (10.0f32, 6.0f32, 2.0f32);
        let f = |b: &mut BrownianTreeNoise, x: f32, y: f32| -> Vec<f32> {
            let s = ((x - y).abs() as f64).sqrt() as f32;
            let v: Vec<f32> = b
                .sample(x, y)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            v.into_iter().map(|z| z * s).collect()
        };
        let whole = f(&mut b, a, c);
        let p1 = f(&mut b, a, m);
        let p2 = f(&mut b, m, c);
        for i in 0..whole.len() {
            assert!((whole[i] - (p1[i] + p2[i])).abs() < 1e-4);
        }
        // Same seed → same noise.
        let mut b2 = BrownianTreeNoise::new(42, 0.03, 14.6, &like, NormalMath::Avx2);
        let x: Vec<f32> = b2
            .sample(a, c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let y: Vec<f32> = b
            .sample(a, c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(x, y);
    }
}
