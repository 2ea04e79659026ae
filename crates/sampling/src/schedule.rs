//! Model sampling (ComfyUI `ModelSamplingDiscrete`), sigma schedules (`calculate_sigmas`)
//! and KSampler's sigma selection (denoise, discard-penultimate, advanced step window).

use crate::error::{Result, SamplingError};

/// Scheduler names in ComfyUI's order (`comfy.samplers.SCHEDULER_NAMES`).
pub const SCHEDULER_NAMES: [&str; 9] = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

/// Samplers for which KSampler computes `steps + 1` sigmas and drops the penultimate one.
pub const DISCARD_PENULTIMATE_SAMPLERS: [&str; 4] =
    ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"];

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prediction {
    /// Noise (SD1.x, SDXL): `D = x − ε̂·σ`.
    #[default]
    Eps,
    /// v-prediction (SD2.x 768-v): `D = x·1/(σ²+1) − v̂·σ/√(σ²+1)`.
    V,
}

/// Discrete 1000-step model sampling with the scaled-linear β schedule.
#[derive(Debug, Clone)]
pub struct ModelSampling {
    /// σ table (float32), index = timestep.
    pub sigmas: Vec<f32>,
    /// `ln σ` table (float32 of the float64 log).
    pub log_sigmas: Vec<f32>,
    /// Network parameterisation.
    pub prediction: Prediction,
}

impl Default for ModelSampling {
    fn default() -> Self {
        Self::discrete(Prediction::Eps)
    }
}

/// torch.linspace in float64 (`start + i·step` below the halfway point, `end − (n−1−i)·step` above).
fn linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

/// torch.linspace in float32 (the default dtype).
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 0 {
        return vec![];
    }
    if n == 1 {
        return vec![start];
    }
    // torch's CPU kernel: scalar element i is `start + step·i` below the halfway point and
    // `end − step·(n−1−i)` above it; full 8-lane vectors (AVX2 `Vectorized<float>`) are
    // `arange(scalar(i0), step)`, i.e. `scalar(i0) + j·step`. Matches the goldens bit for bit.
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    let scalar = |i: usize| {
        if i < half {
            start + step * i as f32
        } else {
            end - step * (n - 1 - i) as f32
        }
    };
    let vec_end = n / 8 * 8;
    (0..n)
        .map(|i| {
            if i < vec_end {
                let i0 = i / 8 * 8;
                scalar(i0) + (i - i0) as f32 * step
            } else {
                scalar(i)
            }
        })
        .collect()
}

impl ModelSampling {
    /// SD1.x/SD2.x/SDXL: linear_start 0.00085, linear_end 0.012, 1000 timesteps.
    pub fn discrete(prediction: Prediction) -> Self {
        Self::discrete_with(0.00085, 0.012, 1000, prediction)
    }

    /// Scaled-linear betas with explicit parameters.
    pub fn discrete_with(
        linear_start: f64,
        linear_end: f64,
        timesteps: usize,
        prediction: Prediction,
    ) -> Self {
        let betas: Vec<f64> = linspace_f64(linear_start.sqrt(), linear_end.sqrt(), timesteps)
            .into_iter()
            .map(|b| b * b)
            .collect();
        let mut acc = 1.0f64;
        let mut sigmas = Vec::with_capacity(timesteps);
        let mut log_sigmas = Vec::with_capacity(timesteps);
        for b in betas {
            acc *= 1.0 - b;
            let s = ((1.0 - acc) / acc).sqrt();
            sigmas.push(s as f32);
            log_sigmas.push(s.ln() as f32);
        }
        Self {
            sigmas,
            log_sigmas,
            prediction,
        }
    }

    /// Float64 σ values before the float32 cast (for tests).
    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    /// Largest σ (`sigmas[-1]`).
    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// σ → timestep: index of the nearest `log_sigmas` entry (ties → lowest index).
    pub fn timestep(&self, sigma: f32) -> f32 {
        let ls = sigma.ln();
        let mut best = 0usize;
        let mut best_d = f32::INFINITY;
        for (i, l) in self.log_sigmas.iter().enumerate() {
            let d = (ls - l).abs();
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        best as f32
    }

    /// timestep → σ: log-linear interpolation of the table (float32, t clamped to [0, 999]).
    pub fn sigma(&self, t: f32) -> f32 {
        let t = t.clamp(0.0, (self.sigmas.len() - 1) as f32);
        let lo = t.floor();
        let hi = t.ceil();
        let w = t - lo;
        let ls = (1.0 - w) * self.log_sigmas[lo as usize] + w * self.log_sigmas[hi as usize];
        ls.exp()
    }

    /// `percent_to_sigma`: 0 → 999999999.9, 1 → 0, else `sigma((1−p)·999)`.
    pub fn percent_to_sigma(&self, percent: f64) -> f64 {
        if percent <= 0.0 {
            return 999_999_999.9;
        }
        if percent >= 1.0 {
            return 0.0;
        }
        let p = 1.0 - percent;
        self.sigma((p * 999.0) as f32) as f64
    }

    /// Computes the denoised x0 from the raw network output (`calculate_denoised`).
    pub fn denoised_from_output(&self, sigma: f32, x: f32, out: f32) -> f32 {
        match self.prediction {
            Prediction::Eps => x - out * sigma,
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                x * (1.0 / s2) - out * sigma / s2.sqrt()
            }
        }
    }

    /// `calculate_sigmas(model_sampling, scheduler, steps)`.
    pub fn calculate_sigmas(&self, scheduler: &str, steps: usize) -> Result<Vec<f32>> {
        let smin = self.sigma_min();
        let smax = self.sigma_max();
        Ok(match scheduler {
            "simple" => self.simple(steps),
            "sgm_uniform" => self.normal(steps, true),
            "karras" => karras(steps, smin as f64, smax as f64, 7.0),
            "exponential" => exponential(steps, smin as f64, smax as f64),
            "ddim_uniform" => self.ddim_uniform(steps),
            "beta" => self.beta(steps, 0.6, 0.6),
            "normal" => self.normal(steps, false),
            "linear_quadratic" => self.linear_quadratic(steps),
            "kl_optimal" => kl_optimal(steps, smin as f64, smax as f64),
            other => return Err(SamplingError::UnknownScheduler(other.to_string())),
        })
    }

    fn normal(&self, steps: usize, sgm: bool) -> Vec<f32> {
        let start = self.timestep(self.sigma_max());
        let end = self.timestep(self.sigma_min());
        let mut append_zero = true;
        let ts = if sgm {
            let mut t = linspace_f32(start, end, steps + 1);
            t.pop();
            t
        } else {
            let mut n = steps;
            if (self.sigma(end) as f64).abs() <= 1e-5 {
                n += 1;
                append_zero = false;
            }
            linspace_f32(start, end, n)
        };
        let mut s: Vec<f32> = ts.into_iter().map(|t| self.sigma(t)).collect();
        if append_zero {
            s.push(0.0);
        }
        s
    }

    fn simple(&self, steps: usize) -> Vec<f32> {
        let n = self.sigmas.len();
        let ss = n as f64 / steps as f64;
        let mut s: Vec<f32> = (0..steps)
            .map(|x| self.sigmas[n - 1 - (x as f64 * ss) as usize])
            .collect();
        s.push(0.0);
        s
    }

    fn ddim_uniform(&self, steps: usize) -> Vec<f32> {
        let n = self.sigmas.len();
        let mut x = 1usize;
        let mut steps = steps;
        let mut sigs = if (self.sigmas[x] as f64).abs() <= 1e-5 {
            steps += 1;
            vec![]
        } else {
            vec![0.0f32]
        };
        let ss = (n / steps.max(1)).max(1);
        while x < n {
            sigs.push(self.sigmas[x]);
            x += ss;
        }
        sigs.reverse();
        sigs
    }

    fn beta(&self, steps: usize, alpha: f64, beta: f64) -> Vec<f32> {
        let total = (self.sigmas.len() - 1) as f64;
        let step = 1.0 / steps as f64;
        let mut sigs = Vec::with_capacity(steps + 1);
        let mut last: f64 = -1.0;
        for k in 0..steps {
            let u = 1.0 - k as f64 * step;
            let t = round_half_even(beta_ppf(u, alpha, beta) * total);
            if t != last {
                sigs.push(self.sigmas[t as usize]);
            }
            last = t;
        }
        sigs.push(0.0);
        sigs
    }

    fn linear_quadratic(&self, steps: usize) -> Vec<f32> {
        let threshold = 0.025f64;
        let sched: Vec<f64> = if steps == 1 {
            vec![1.0, 0.0]
        } else {
            let l = steps / 2;
            let lf = l as f64;
            let mut v: Vec<f64> = (0..l).map(|i| i as f64 * threshold / lf).collect();
            let diff = lf - threshold * steps as f64;
            let q = (steps - l) as f64;
            let qc = diff / (lf * q * q);
            let lc = threshold / lf - 2.0 * diff / (q * q);
            let c = qc * lf * lf;
            for i in l..steps {
                let i = i as f64;
                v.push(qc * (i * i) + lc * i + c);
            }
            v.push(1.0);
            v.into_iter().map(|x| 1.0 - x).collect()
        };
        let smax = self.sigma_max();
        sched.into_iter().map(|x| x as f32 * smax).collect()
    }
}

/// Karras et al. (2022) schedule (ρ = 7), float32 as torch computes it, with a trailing 0.
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    let diff = (min_inv - max_inv) as f32;
    let mut s: Vec<f32> = linspace_f32(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv as f32 + r * diff).powf(rho as f32))
        .collect();
    s.push(0.0);
    s
}

/// `exp(linspace(ln σ_max, ln σ_min, n))` with a trailing 0.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let mut s: Vec<f32> = linspace_f32(sigma_max.ln() as f32, sigma_min.ln() as f32, n)
        .into_iter()
        .map(f32::exp)
        .collect();
    s.push(0.0);
    s
}

/// "Align Your Steps"-style KL-optimal schedule; n = 1 yields NaN as in ComfyUI.
pub fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let amin = sigma_min.atan() as f32;
    let amax = sigma_max.atan() as f32;
    let div = n as f32 - 1.0;
    let mut s: Vec<f32> = (0..n)
        .map(|k| {
            let a = k as f32 / div;
            (a * amin + (1.0 - a) * amax).tan()
        })
        .collect();
    s.push(0.0);
    s
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        std::f64::consts::PI.ln() - (std::f64::consts::PI * x).sin().ln() - ln_gamma(1.0 - x)
    } else {
        let x = x - 1.0;
        let mut a = C[0];
        let t = x + 7.5;
        for (i, c) in C.iter().enumerate().skip(1) {
            a += c / (x + i as f64);
        }
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }
}

/// Continued fraction for the incomplete beta function (modified Lentz).
fn betacf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta function I_x(a, b).
fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let lbt = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let bt = lbt.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        bt * betacf(a, b, x) / a
    } else {
        1.0 - bt * betacf(b, a, 1.0 - x) / b
    }
}

/// Inverse of the Beta(a, b) CDF (scipy `beta.ppf`), by bisection to full double precision.
pub fn beta_ppf(u: f64, a: f64, b: f64) -> f64 {
    if u <= 0.0 {
        return 0.0;
    }
    if u >= 1.0 {
        return 1.0;
    }
    if a == b {
        // Symmetric: ppf(1/2) = 1/2 exactly, and ppf(u) = 1 − ppf(1 − u).
        if u == 0.5 {
            return 0.5;
        }
        if u > 0.5 {
            return 1.0 - beta_ppf(1.0 - u, a, b);
        }
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_cdf(mid, a, b) < u {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// KSampler's sigma list (`KSampler.set_steps`): denoise rule and discard-penultimate samplers.
/// Returns an empty list for `denoise <= 0`.
pub fn ksampler_sigmas(
    ms: &ModelSampling,
    scheduler: &str,
    sampler: &str,
    steps: usize,
    denoise: f64,
) -> Result<Vec<f32>> {
    let calc = |n: usize| -> Result<Vec<f32>> {
        if DISCARD_PENULTIMATE_SAMPLERS.contains(&sampler) {
            let mut s = ms.calculate_sigmas(scheduler, n + 1)?;
            if s.len() >= 2 {
                let last = s[s.len() - 1];
                s.truncate(s.len() - 2);
                s.push(last);
            }
            Ok(s)
        } else {
            ms.calculate_sigmas(scheduler, n)
        }
    };
    if denoise > 0.9999 {
        calc(steps)
    } else if denoise <= 0.0 {
        Ok(vec![])
    } else {
        let total = (steps as f64 / denoise) as usize;
        let s = calc(total)?;
        let keep = (steps + 1).min(s.len());
        Ok(s[s.len() - keep..].to_vec())
    }
}

/// KSamplerAdvanced's step window. `None` means "return the input latent unchanged".
pub fn advanced_window(
    sigmas: &[f32],
    start_step: Option<usize>,
    last_step: Option<usize>,
    force_full_denoise: bool,
) -> Option<Vec<f32>> {
    let mut s = sigmas.to_vec();
    if let Some(last) = last_step {
        if last + 1 < s.len() {
            s.truncate(last + 1);
            if force_full_denoise {
                if let Some(v) = s.last_mut() {
                    *v = 0.0;
                }
            }
        }
    }
    if let Some(start) = start_step {
        if start + 1 < s.len() {
            s.drain(..start);
        } else {
            return None;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_endpoints() {
        let ms = ModelSampling::default();
        assert!((ms.sigma_min() - 0.029_167_158).abs() < 1e-8);
        assert!((ms.sigma_max() - 14.614_641).abs() < 1e-5);
        assert_eq!(ms.timestep(ms.sigma_max()), 999.0);
        assert_eq!(ms.timestep(ms.sigma_min()), 0.0);
    }

    #[test]
    fn beta_ppf_symmetry_and_inverse() {
        assert_eq!(beta_ppf(0.5, 0.6, 0.6), 0.5);
        for u in [0.05, 0.3, 0.7, 0.95] {
            let x = beta_ppf(u, 0.6, 0.6);
            assert!((beta_cdf(x, 0.6, 0.6) - u).abs() < 1e-12);
        }
    }

    #[test]
    fn window_rules() {
        let s = vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
        assert_eq!(
            advanced_window(&s, Some(1), Some(3), true),
            Some(vec![4.0, 3.0, 0.0])
        );
        assert_eq!(advanced_window(&s, Some(5), None, false), None);
        assert_eq!(
            advanced_window(&s, None, Some(3), false),
            Some(vec![5.0, 4.0, 3.0, 2.0])
        );
    }
}
