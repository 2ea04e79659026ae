//! torch-compatible CPU generator: `torch.manual_seed`, `torch.rand`, `torch.randn`.

use super::avx_math::{log_ps, sincos_ps};
use super::mt19937::Mt19937;

/// Which float32 maths the vectorised (>= 16 elements) `randn` path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalMath {
    /// x86-64 AVX2/AVX512 builds of torch (the common case): Cephes polynomials with FMA.
    #[default]
    Avx2,
    /// Generic builds (`ATEN_CPU_CAPABILITY=default`, Apple Silicon): libm `logf/cosf/sinf`.
    Libm,
}

/// A torch CPU generator (`torch.Generator().manual_seed(seed)`).
#[derive(Clone)]
pub struct TorchGenerator {
    mt: Mt19937,
    next_double_normal: Option<f64>,
    math: NormalMath,
}

const TWO_PI_F32: f32 = (2.0 * std::f64::consts::PI) as f32;

impl TorchGenerator {
    /// Seeds like `torch.manual_seed(seed)`: only the low 32 bits reach mt19937.
    pub fn new(seed: u64) -> Self {
        Self::with_math(seed, NormalMath::default())
    }

    /// Seeds with an explicit choice of `randn` maths.
    pub fn with_math(seed: u64, math: NormalMath) -> Self {
        Self {
            mt: Mt19937::new(seed as u32),
            next_double_normal: None,
            math,
        }
    }

    /// One raw 32-bit output (`random()`).
    #[inline]
    pub fn random(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// Two outputs, the first as the high half (`random64()`).
    #[inline]
    pub fn random64(&mut self) -> u64 {
        let hi = self.random() as u64;
        let lo = self.random() as u64;
        (hi << 32) | lo
    }

    #[inline]
    fn uniform_f32(&mut self) -> f32 {
        (self.random() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    #[inline]
    fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `torch.rand(n)` for float32.
    pub fn rand(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform_f32()).collect()
    }

    /// Scalar float64 Box–Muller with the cached second value (`normal_distribution<double>`).
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` for a contiguous float32 tensor of `n` elements.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let mut i = 0;
        while i + 16 <= n {
            self.fill16(&mut data[i..i + 16]);
            i += 16;
        }
        if n % 16 != 0 {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            self.fill16(tail);
        }
        data
    }

    #[inline]
    fn fill16(&self, d: &mut [f32]) {
        match self.math {
            NormalMath::Avx2 => fill16_avx(d),
            NormalMath::Libm => fill16_libm(d),
        }
    }
}

fn fill16_libm(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0f32 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0f32 * u1.ln()).sqrt();
        let theta = (2.0f32 as f64 * std::f64::consts::PI * u2 as f64) as f32;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}

#[inline(always)]
fn fill16_avx_generic(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0f32 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0f32 * log_ps(u1)).sqrt();
        let theta = TWO_PI_F32 * u2;
        let (s, c) = sincos_ps(theta);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fill16_avx_fma(d: &mut [f32]) {
    fill16_avx_generic(d)
}

fn fill16_avx(d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports FMA (checked above); the function has no other
            // requirements.
            unsafe { fill16_avx_fma(d) };
            return;
        }
    }
    fill16_avx_generic(d)
}
