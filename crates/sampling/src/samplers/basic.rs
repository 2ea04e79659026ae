//! Euler/Heun/DPM-2/LMS family, DDPM, LCM and gradient estimation (`k_diffusion/sampling.py`).

use super::tmath::TorchMath;
use candle_core::Tensor;

use super::{lc, to_d, Run};
use crate::error::Result;

fn f(s: f32) -> f64 {
    s as f64
}

/// `sample_euler` (also `ddim`, whose only difference is inpainting noise).
pub(crate) fn euler(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let d = to_d(&x, &den, f(s[i]))?;
        x = lc(&[(1.0, &x), (f(s[i + 1]) - f(s[i]), &d)])?;
    }
    Ok(x)
}

/// `sample_euler_ancestral` (EPS/V models).
pub(crate) fn euler_ancestral(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    use super::{ancestral_step32, mul32};
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        // σ_down/σ_up as 0-d float32 tensors; `x + d·dt + noise·s_noise·σ_up` in that order.
        let (down, up) = ancestral_step32(s[i], s[i + 1], eta as f32);
        r.callback(i, &x, &den);
        if down == 0.0 {
            x = den;
        } else {
            let d = to_d(&x, &den, f(s[i]))?;
            let n = r.noise(s[i], s[i + 1])?;
            let step = (&x + mul32(&d, down - s[i])?)?;
            x = (step + mul32(&mul32(&n, s_noise as f32)?, up)?)?;
        }
    }
    Ok(x)
}

/// `sample_euler_ancestral_cfg_pp` (`euler_cfg_pp` is eta = 0, s_noise = 0). Scalars in
/// float32 as torch computes them (α = σ·e^{−ln σ} is not exactly 1 there).
pub(crate) fn euler_ancestral_cfg_pp(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let (den, unc) = r.model_uncond(&x, s[i])?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let alpha_s = s[i] * (-(s[i].tln())).texp();
            let alpha_t = s[i + 1] * (-(s[i + 1].tln())).texp();
            let au = super::mul32(&unc, alpha_s)?;
            let d = super::div32(&(&x - au)?, s[i])?;
            let (down, up) =
                super::ancestral_step32(s[i] / alpha_s, s[i + 1] / alpha_t, eta as f32);
            let down = alpha_t * down;
            x = lc(&[(alpha_t as f64, &den), (down as f64, &d)])?;
            if eta > 0.0 && s_noise > 0.0 {
                let n = r.noise(s[i], s[i + 1])?;
                // `x + α_t·noise·s_noise·σ_up`, left to right.
                let nz = super::mul32(&super::mul32(&n, alpha_t)?, s_noise as f32)?;
                x = (&x + super::mul32(&nz, up)?)?;
            }
        }
    }
    Ok(x)
}

/// `sample_heun`.
pub(crate) fn heun(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        let d = to_d(&x, &den, f(s[i]))?;
        r.callback(i, &x, &den);
        let dt = f(s[i + 1]) - f(s[i]);
        if s[i + 1] == 0.0 {
            x = lc(&[(1.0, &x), (dt, &d)])?;
        } else {
            let x2 = lc(&[(1.0, &x), (dt, &d)])?;
            let den2 = r.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, &den2, f(s[i + 1]))?;
            let dp = ((d + d2)? / 2.0)?;
            x = lc(&[(1.0, &x), (dt, &dp)])?;
        }
    }
    Ok(x)
}

/// `sample_heunpp2`.
pub(crate) fn heunpp2(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    let s_end = s[s.len() - 1];
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        let d = to_d(&x, &den, f(s[i]))?;
        r.callback(i, &x, &den);
        let dt = f(s[i + 1]) - f(s[i]);
        if s[i + 1] == s_end {
            x = lc(&[(1.0, &x), (dt, &d)])?;
        } else if s[i + 2] == s_end {
            let x2 = lc(&[(1.0, &x), (dt, &d)])?;
            let den2 = r.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, &den2, f(s[i + 1]))?;
            let w = 2.0 * f(s[0]);
            let w2 = f(s[i + 1]) / w;
            let w1 = 1.0 - w2;
            let dp = lc(&[(w1, &d), (w2, &d2)])?;
            x = lc(&[(1.0, &x), (dt, &dp)])?;
        } else {
            let x2 = lc(&[(1.0, &x), (dt, &d)])?;
            let den2 = r.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, &den2, f(s[i + 1]))?;
            let dt2 = f(s[i + 2]) - f(s[i + 1]);
            let x3 = lc(&[(1.0, &x2), (dt2, &d2)])?;
            let den3 = r.model(&x3, s[i + 2])?;
            let d3 = to_d(&x3, &den3, f(s[i + 2]))?;
            let w = 3.0 * f(s[0]);
            let w2 = f(s[i + 1]) / w;
            let w3 = f(s[i + 2]) / w;
            let w1 = 1.0 - w2 - w3;
            let dp = lc(&[(w1, &d), (w2, &d2), (w3, &d3)])?;
            x = lc(&[(1.0, &x), (dt, &dp)])?;
        }
    }
    Ok(x)
}

/// `sample_dpm_2`.
pub(crate) fn dpm_2(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        let d = to_d(&x, &den, f(s[i]))?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = lc(&[(1.0, &x), (f(s[i + 1]) - f(s[i]), &d)])?;
        } else {
            let mid = (0.5 * (s[i].tln() + s[i + 1].tln())).texp();
            let x2 = lc(&[(1.0, &x), (f(mid) - f(s[i]), &d)])?;
            let den2 = r.model(&x2, mid)?;
            let d2 = to_d(&x2, &den2, f(mid))?;
            x = lc(&[(1.0, &x), (f(s[i + 1]) - f(s[i]), &d2)])?;
        }
    }
    Ok(x)
}

/// `sample_dpm_2_ancestral` (EPS/V models), scalars in float32.
pub(crate) fn dpm_2_ancestral(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    use super::{div32, lerp32, mul32};
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        let (down, up) = super::ancestral_step32(s[i], s[i + 1], eta as f32);
        r.callback(i, &x, &den);
        let d = div32(&(&x - &den)?, s[i])?;
        if down == 0.0 {
            x = (&x + mul32(&d, down - s[i])?)?;
        } else {
            let mid = lerp32(s[i].tln(), down.tln(), 0.5).texp();
            let x2 = (&x + mul32(&d, mid - s[i])?)?;
            let den2 = r.model(&x2, mid)?;
            let d2 = div32(&(&x2 - &den2)?, mid)?;
            x = (&x + mul32(&d2, down - s[i])?)?;
            let n = r.noise(s[i], s[i + 1])?;
            x = (&x + mul32(&mul32(&n, s_noise as f32)?, up)?)?;
        }
    }
    Ok(x)
}

/// Exact integral over `[t_i, t_{i+1}]` of the Lagrange basis polynomial `j` of order `order`
/// (5-point Gauss–Legendre, exact for the degree ≤ 3 polynomials used here).
fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    const X: [f64; 5] = [
        -0.906_179_845_938_664,
        -0.538_469_310_105_683,
        0.0,
        0.538_469_310_105_683,
        0.906_179_845_938_664,
    ];
    const W: [f64; 5] = [
        0.236_926_885_056_189,
        0.478_628_670_499_366,
        0.568_888_888_888_889,
        0.478_628_670_499_366,
        0.236_926_885_056_189,
    ];
    let (a, b) = (t[i], t[i + 1]);
    let fnc = |tau: f64| {
        let mut p = 1.0;
        for k in 0..order {
            if k != j {
                p *= (tau - t[i - k]) / (t[i - j] - t[i - k]);
            }
        }
        p
    };
    let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
    X.iter()
        .zip(W.iter())
        .map(|(x, w)| w * fnc(c + h * x))
        .sum::<f64>()
        * h
}

/// `sample_lms` (order 4).
pub(crate) fn lms(r: &mut Run, x: &Tensor, s: &[f32], order: usize) -> Result<Tensor> {
    let mut x = x.clone();
    let t: Vec<f64> = s.iter().map(|v| f(*v)).collect();
    let mut ds: Vec<Tensor> = Vec::new();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        let d = to_d(&x, &den, f(s[i]))?;
        ds.push(d);
        if ds.len() > order {
            ds.remove(0);
        }
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let cur = (i + 1).min(order);
            let coeffs: Vec<f64> = (0..cur).map(|j| lms_coeff(cur, &t, i, j)).collect();
            let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x)];
            for (c, d) in coeffs.iter().zip(ds.iter().rev()) {
                terms.push((*c, d));
            }
            x = lc(&terms)?;
        }
    }
    Ok(x)
}

/// `sample_ddpm` (`generic_step_sampler` with `DDPMSampler_step`), scalars in float32
/// (`1 − ᾱ` cancels near σ = 0, so the float32 rounding is part of the result).
pub(crate) fn ddpm(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let (sg, sp) = (s[i], s[i + 1]);
        let xh = x.broadcast_div(
            &Tensor::new((1.0f32 + sg * sg).sqrt(), x.device())?.to_dtype(x.dtype())?,
        )?;
        let eps = (&x - &den)?.broadcast_div(&Tensor::new(sg, x.device())?.to_dtype(x.dtype())?)?;
        let acp = 1.0f32 / (sg * sg + 1.0);
        let acp_prev = 1.0f32 / (sp * sp + 1.0);
        let alpha = acp / acp_prev;
        // mu = sqrt(1/α)·(x̂ − (1−α)·ε/sqrt(1−ᾱ))
        let e2 = (eps * (1.0f32 - alpha) as f64)?;
        let e3 = e2
            .broadcast_div(&Tensor::new((1.0f32 - acp).sqrt(), x.device())?.to_dtype(x.dtype())?)?;
        let mut mu = ((xh - e3)? * (1.0f32 / alpha).sqrt() as f64)?;
        if sp > 0.0 {
            let n = r.noise(s[i], s[i + 1])?;
            let c = ((1.0f32 - alpha) * (1.0f32 - acp_prev) / (1.0f32 - acp)).sqrt();
            mu = (mu + (n * c as f64)?)?;
        }
        x = mu;
        if sp != 0.0 {
            x = (x * (1.0f32 + sp * sp).sqrt() as f64)?;
        }
    }
    Ok(x)
}

/// `sample_lcm` (default options: s_noise 1, no clipping).
pub(crate) fn lcm(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        x = den;
        if s[i + 1] > 0.0 {
            let n = r.noise(s[i], s[i + 1])?;
            // EPS/V noise_scaling: noise·σ + latent.
            x = lc(&[(f(s[i + 1]), &n), (1.0, &x)])?;
        }
    }
    Ok(x)
}

/// `sample_gradient_estimation` (`ge_gamma = 2`), optionally CFG++.
pub(crate) fn gradient_estimation(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    ge_gamma: f64,
    cfg_pp: bool,
) -> Result<Tensor> {
    let mut x = x.clone();
    let mut old_d: Option<Tensor> = None;
    for i in 0..s.len() - 1 {
        let (den, d) = if cfg_pp {
            let (den, unc) = r.model_uncond(&x, s[i])?;
            let d = to_d(&x, &unc, f(s[i]))?;
            (den, d)
        } else {
            let den = r.model(&x, s[i])?;
            let d = to_d(&x, &den, f(s[i]))?;
            (den, d)
        };
        r.callback(i, &x, &den);
        let dt = f(s[i + 1]) - f(s[i]);
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            x = if cfg_pp {
                lc(&[(1.0, &den), (f(s[i + 1]), &d)])?
            } else {
                lc(&[(1.0, &x), (dt, &d)])?
            };
            if i >= 1 {
                if let Some(od) = &old_d {
                    let dbar = ((&d - od)? * (ge_gamma - 1.0))?;
                    x = lc(&[(1.0, &x), (dt, &dbar)])?;
                }
            }
        }
        old_d = Some(d);
    }
    Ok(x)
}
