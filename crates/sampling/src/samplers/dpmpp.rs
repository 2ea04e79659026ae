//! DPM-Solver++ family, RES multistep, ER-SDE and SEEDS (`k_diffusion/sampling.py`),
//! for EPS/V models (VE parameterisation: α = 1, λ = −ln σ).

use super::tmath::TorchMath;
use candle_core::Tensor;

use super::{lc, to_d, Run};
use crate::error::Result;

fn f(s: f32) -> f64 {
    s as f64
}

fn expm1(x: f64) -> f64 {
    x.texpm1()
}

/// `sample_dpmpp_2s_ancestral` and its CFG++ variant (ComfyUI 0.29's form: the CFG++ step
/// works on `x + (D − D_uncond)`, checked against the goldens), scalars in float32.
pub(crate) fn dpmpp_2s_ancestral(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    cfg_pp: bool,
) -> Result<Tensor> {
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let (den, unc) = if cfg_pp {
            let (d, u) = r.model_uncond(&x, s[i])?;
            (d, Some(u))
        } else {
            (r.model(&x, s[i])?, None)
        };
        let (down, up) = super::ancestral_step32(s[i], s[i + 1], eta as f32);
        r.callback(i, &x, &den);
        if down == 0.0 {
            match &unc {
                Some(u) => {
                    let d = to_d(&x, u, f(s[i]))?;
                    x = lc(&[(1.0, &den), (down as f64, &d)])?;
                }
                None => {
                    let d = to_d(&x, &den, f(s[i]))?;
                    x = lc(&[(1.0, &x), ((down - s[i]) as f64, &d)])?;
                }
            }
        } else {
            let t = -(s[i].tln());
            let t_next = -(down.tln());
            let h = t_next - t;
            let sm = t + 0.5f32 * h;
            let sigma_s = (-sm).texp();
            let e_t = (-t).texp();
            let xb = match &unc {
                Some(u) => (&x + (&den - u)?)?,
                None => x.clone(),
            };
            let x2 = lc(&[
                ((sigma_s / e_t) as f64, &xb),
                (-((-h * 0.5f32).texpm1()) as f64, &den),
            ])?;
            // ComfyUI's CFG++ variant re-reads its captured uncond prediction, which the second
            // model call has replaced: the final update uses `x + (D − D_uncond₂)`.
            let (den2, xb) = if cfg_pp {
                let (d2, u2) = r.model_uncond(&x2, sigma_s)?;
                (d2, (&x + (&den - u2)?)?)
            } else {
                (r.model(&x2, sigma_s)?, xb)
            };
            x = lc(&[
                (((-t_next).texp() / e_t) as f64, &xb),
                (-((-h).texpm1()) as f64, &den2),
            ])?;
        }
        if s[i + 1] > 0.0 {
            let n = r.noise(s[i], s[i + 1])?;
            x = lc(&[(1.0, &x), ((s_noise as f32 * up) as f64, &n)])?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_sde` (Brownian noise; r = ½), scalars in float32.
pub(crate) fn dpmpp_sde(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    rr: f64,
) -> Result<Tensor> {
    use super::{ancestral_step32, mul32};
    let (eta, s_noise, rr) = (eta as f32, s_noise as f32, rr as f32);
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den;
            continue;
        }
        let ls = -(s[i].tln());
        let lt = -(s[i + 1].tln());
        let h = lt - ls;
        let ls1 = ls + rr * h;
        let fac = 1.0f32 / (2.0 * rr);
        let sigma_s1 = (-ls1).texp();
        let alpha_s = s[i] * ls.texp();
        let alpha_s1 = sigma_s1 * ls1.texp();
        let alpha_t = s[i + 1] * lt.texp();
        // Step 1
        let (sd, su) = ancestral_step32((-ls).texp(), (-ls1).texp(), eta);
        let h_ = -(sd.tln()) - ls;
        let mut x2 = (mul32(&x, alpha_s1 / alpha_s * (-h_).texp())?
            - mul32(&den, alpha_s1 * (-h_).texpm1())?)?;
        if eta > 0.0 && s_noise > 0.0 {
            let n = r.noise(s[i], sigma_s1)?;
            x2 = (x2 + mul32(&mul32(&mul32(&n, alpha_s1)?, s_noise)?, su)?)?;
        }
        let den2 = r.model(&x2, sigma_s1)?;
        // Step 2
        let (sd, su) = ancestral_step32((-ls).texp(), (-lt).texp(), eta);
        let h_ = -(sd.tln()) - ls;
        let dd = (mul32(&den, 1.0 - fac)? + mul32(&den2, fac)?)?;
        x = (mul32(&x, alpha_t / alpha_s * (-h_).texp())? - mul32(&dd, alpha_t * (-h_).texpm1())?)?;
        if eta > 0.0 && s_noise > 0.0 {
            let n = r.noise(s[i], s[i + 1])?;
            x = (x + mul32(&mul32(&mul32(&n, alpha_t)?, s_noise)?, su)?)?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_2m`, scalars in float32.
pub(crate) fn dpmpp_2m(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    use super::mul32;
    let mut x = x.clone();
    let mut old: Option<Tensor> = None;
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let t = -(s[i].tln());
        let t_next = -(s[i + 1].tln());
        let h = t_next - t;
        let ratio = (-t_next).texp() / (-t).texp();
        let em = (-h).texpm1();
        x = match (&old, s[i + 1] == 0.0) {
            (Some(o), false) => {
                let h_last = t - (-(s[i - 1].tln()));
                let rr = h_last / h;
                let c = 1.0f32 / (2.0 * rr);
                let dd = (mul32(&den, 1.0 + c)? - mul32(o, c)?)?;
                (mul32(&x, ratio)? - mul32(&dd, em)?)?
            }
            _ => (mul32(&x, ratio)? - mul32(&den, em)?)?,
        };
        old = Some(den);
    }
    Ok(x)
}

/// `sample_dpmpp_2m_cfg_pp`.
pub(crate) fn dpmpp_2m_cfg_pp(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let mut x = x.clone();
    let mut old_unc: Option<Tensor> = None;
    for i in 0..s.len() - 1 {
        let (den, unc) = r.model_uncond(&x, s[i])?;
        r.callback(i, &x, &den);
        let e = f(s[i + 1]) / f(s[i]); // exp(−h)
        let mix = match (&old_unc, s[i + 1] == 0.0) {
            (Some(o), false) => {
                let t = -f(s[i]).tln();
                let h = -f(s[i + 1]).tln() - t;
                let h_last = t + f(s[i - 1]).tln();
                let rr = h_last / h;
                let c = -expm1(-h) * (1.0 / (2.0 * rr));
                let diff = (&den - o)?;
                lc(&[(-e, &unc), (c, &diff)])?
            }
            _ => (&unc * -e)?,
        };
        x = lc(&[(1.0, &den), (1.0, &mix), (e, &x)])?;
        old_unc = Some(unc);
    }
    Ok(x)
}

/// `sample_dpmpp_2m_sde` (midpoint, or heun when `heun`), scalars in float32.
pub(crate) fn dpmpp_2m_sde(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    heun: bool,
) -> Result<Tensor> {
    dpmpp_sde_multistep(r, x, s, eta, s_noise, if heun { 1 } else { 0 })
}

/// `sample_dpmpp_3m_sde`, scalars in float32.
pub(crate) fn dpmpp_3m_sde(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    dpmpp_sde_multistep(r, x, s, eta, s_noise, 2)
}

/// Shared body: `kind` 0 = 2M midpoint, 1 = 2M heun, 2 = 3M.
fn dpmpp_sde_multistep(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    kind: u8,
) -> Result<Tensor> {
    use super::{div32, mul32};
    let (eta, s_noise) = (eta as f32, s_noise as f32);
    let mut x = x.clone();
    let (mut d1, mut d2): (Option<Tensor>, Option<Tensor>) = (None, None);
    let (mut h, mut h1, mut h2): (Option<f32>, Option<f32>, Option<f32>) = (None, None, None);
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den.clone();
        } else {
            let ls = -(s[i].tln());
            let lt = -(s[i + 1].tln());
            let hh = lt - ls;
            let h_eta = hh * (eta + 1.0);
            let alpha_t = s[i + 1] * lt.texp();
            let a = -((-h_eta).texpm1());
            x = (mul32(&x, s[i + 1] / s[i] * (-hh * eta).texp())? + mul32(&den, alpha_t * a)?)?;
            if kind == 2 {
                if let (Some(hb1), Some(hb2), Some(o1), Some(o2)) = (h1, h2, &d1, &d2) {
                    let r0 = hb1 / hh;
                    let r1 = hb2 / hh;
                    let d1_0 = div32(&(&den - o1)?, r0)?;
                    let d1_1 = div32(&(o1 - o2)?, r1)?;
                    let diff = (&d1_0 - &d1_1)?;
                    let dd1 = (&d1_0 + div32(&mul32(&diff, r0)?, r0 + r1)?)?;
                    let dd2 = div32(&diff, r0 + r1)?;
                    let phi2 = (-h_eta).texpm1() / h_eta + 1.0;
                    let phi3 = phi2 / h_eta - 0.5;
                    x = ((x + mul32(&dd1, alpha_t * phi2)?)? - mul32(&dd2, alpha_t * phi3)?)?;
                } else if let (Some(hb1), Some(o1)) = (h1, &d1) {
                    let rr = hb1 / hh;
                    let dd = div32(&(&den - o1)?, rr)?;
                    let phi2 = (-h_eta).texpm1() / h_eta + 1.0;
                    x = (x + mul32(&dd, alpha_t * phi2)?)?;
                }
            } else if let (Some(o), Some(hl)) = (&d1, h1) {
                let rr = hl / hh;
                let diff = (&den - o)?;
                let c = if kind == 1 {
                    alpha_t * (a / (-h_eta) + 1.0) * (1.0 / rr)
                } else {
                    0.5f32 * alpha_t * a * (1.0 / rr)
                };
                x = (x + mul32(&diff, c)?)?;
            }
            if eta > 0.0 && s_noise > 0.0 {
                let n = r.noise(s[i], s[i + 1])?;
                let c = (-((-2.0f32 * hh * eta).texpm1())).sqrt();
                x = (x + mul32(&mul32(&mul32(&n, s[i + 1])?, c)?, s_noise)?)?;
            }
            h = Some(hh);
        }
        d2 = d1.take();
        d1 = Some(den);
        h2 = h1;
        h1 = h;
    }
    Ok(x)
}

/// `res_multistep` (all four variants), scalars as torch's 0-d float32 tensors.
pub(crate) fn res_multistep(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    s_noise: f64,
    eta: f64,
    cfg_pp: bool,
) -> Result<Tensor> {
    use super::{ancestral_step32, mul32};
    let s_noise = s_noise as f32;
    let mut x = x.clone();
    let phi1 = |t: f32| t.texpm1() / t;
    let phi2 = |t: f32| (phi1(t) - 1.0) / t;
    let nan0 = |v: f32| if v.is_nan() { 0.0 } else { v };
    let mut old_sd: Option<f32> = None;
    let mut old: Option<Tensor> = None;
    for i in 0..s.len() - 1 {
        let (den, unc) = if cfg_pp {
            let (d, u) = r.model_uncond(&x, s[i])?;
            (d, Some(u))
        } else {
            (r.model(&x, s[i])?, None)
        };
        let (sd, su) = ancestral_step32(s[i], s[i + 1], eta as f32);
        r.callback(i, &x, &den);
        match (&old, old_sd) {
            (Some(o), Some(osd)) if sd != 0.0 => {
                let t = -(s[i].tln());
                let t_old = -(osd.tln());
                let t_next = -(sd.tln());
                let t_prev = -(s[i - 1].tln());
                let h = t_next - t;
                let c2 = (t_prev - t_old) / h;
                let (p1, p2) = (phi1(-h), phi2(-h));
                let b1 = nan0(p1 - p2 / c2);
                let b2 = nan0(p2 / c2);
                // `σ_fn(h)·x + h·(b1·D + b2·D_old)`.
                let e = (-h).texp();
                let base = match &unc {
                    Some(u) => (&x + (&den - u)?)?,
                    None => x.clone(),
                };
                let cur = unc.as_ref().unwrap_or(&den);
                let comb = (mul32(cur, b1)? + mul32(o, b2)?)?;
                x = (mul32(&base, e)? + mul32(&comb, h)?)?;
            }
            _ => match &unc {
                Some(u) => {
                    let d = to_d(&x, u, f(s[i]))?;
                    x = (&den + mul32(&d, sd)?)?;
                }
                None => {
                    let d = to_d(&x, &den, f(s[i]))?;
                    x = (&x + mul32(&d, sd - s[i])?)?;
                }
            },
        }
        if s[i + 1] > 0.0 {
            let n = r.noise(s[i], s[i + 1])?;
            x = (&x + mul32(&mul32(&n, s_noise)?, su)?)?;
        }
        old = Some(match unc {
            Some(u) => u,
            None => den,
        });
        old_sd = Some(sd);
    }
    Ok(x)
}

/// `sample_er_sde` (VP ER-SDE-Solver-3, default noise scaler, 200 integration points),
/// scalars in float32 (the integrals are summed in float64).
pub(crate) fn er_sde(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    s_noise: f64,
    max_stage: usize,
) -> Result<Tensor> {
    use super::{div32, mul32};
    let s_noise = s_noise as f32;
    let scaler = |v: f32| v * (v.powf(0.3).texp() + 10.0);
    let lam: Vec<f32> = s.iter().map(|v| (-(-(v.tln()))).texp()).collect(); // exp(−(−ln σ))
    let mut x = x.clone();
    let mut old: Option<Tensor> = None;
    let mut old_d: Option<Tensor> = None;
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let stage = max_stage.min(i + 1);
        if s[i + 1] == 0.0 {
            x = den.clone();
        } else {
            let (ls, lt) = (lam[i], lam[i + 1]);
            let alpha_s = s[i] / ls;
            let alpha_t = s[i + 1] / lt;
            let r_alpha = alpha_t / alpha_s;
            let rr = scaler(lt) / scaler(ls);
            x = (mul32(&x, r_alpha * rr)? + mul32(&den, alpha_t * (1.0 - rr))?)?;
            if stage >= 2 {
                if let Some(o) = &old {
                    let dt = lt - ls;
                    let step = -dt / 200.0;
                    let (mut s1, mut su) = (0.0f64, 0.0f64);
                    for k in 0..200 {
                        let pos = lt + k as f32 * step;
                        let sp = scaler(pos);
                        s1 += (1.0 / sp) as f64;
                        su += ((pos - ls) / sp) as f64;
                    }
                    let s1 = s1 as f32 * step;
                    let su = su as f32 * step;
                    let dd = div32(&(&den - o)?, ls - lam[i - 1])?;
                    x = (x + mul32(&dd, alpha_t * (dt + s1 * scaler(lt)))?)?;
                    if stage >= 3 {
                        if let Some(od) = &old_d {
                            let du = div32(&(&dd - od)?, (ls - lam[i - 2]) / 2.0)?;
                            x = (x + mul32(&du, alpha_t * ((dt * dt) / 2.0 + su * scaler(lt)))?)?;
                        }
                    }
                    old_d = Some(dd);
                }
            }
            if s_noise > 0.0 {
                let n = r.noise(s[i], s[i + 1])?;
                // torch: `λt² − λs² · r²` (the squares first).
                let v = (lt * lt - (ls * ls) * (rr * rr)).sqrt();
                let c = if v.is_nan() { 0.0 } else { v };
                x = (x + mul32(&mul32(&mul32(&n, alpha_t)?, s_noise)?, c)?)?;
            }
        }
        old = Some(den);
    }
    Ok(x)
}

/// `sample_seeds_2` (also `exp_heun_2_x0[_sde]` with r = 1 and the φ₂ solver), scalars as
/// torch's 0-d float32 tensors.
pub(crate) fn seeds_2(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    rr: f64,
    phi2: bool,
) -> Result<Tensor> {
    use super::{lerp32, mul32};
    let inject = eta > 0.0 && s_noise > 0.0;
    // Python-float arithmetic first (float64), then rounded to float32 by torch.
    let (fac, m2r, rm1) = (
        (1.0 / (2.0 * rr)) as f32,
        (-2.0 * rr) as f32,
        (rr - 1.0) as f32,
    );
    let (eta, s_noise, rr) = (eta as f32, s_noise as f32, rr as f32);
    let ei1 = |h: f32| h.texpm1();
    let ei2 = |h: f32| (h.texpm1() - h) / h;
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den;
            continue;
        }
        let (si, sn) = (s[i], s[i + 1]);
        let ls = -(si.tln());
        let lt = -(sn.tln());
        let h = lt - ls;
        let h_eta = h * (eta + 1.0);
        let ls1 = lerp32(ls, lt, rr);
        let sigma_s1 = (-ls1).texp();
        let alpha_s1 = sigma_s1 * ls1.texp();
        let alpha_t = sn * lt.texp();
        // Step 1
        let mut x2 = (mul32(&x, sigma_s1 / si * (-rr * h * eta).texp())?
            - mul32(&den, alpha_s1 * ei1(-rr * h_eta))?)?;
        let mut sde: Option<Tensor> = None;
        if inject {
            let n = r.noise(si, sigma_s1)?;
            let v = mul32(&n, (-((m2r * h * eta).texpm1())).sqrt())?;
            x2 = (x2 + mul32(&mul32(&v, sigma_s1)?, s_noise)?)?;
            sde = Some(v);
        }
        let den2 = r.model(&x2, sigma_s1)?;
        // Step 2
        let base = mul32(&x, sn / si * (-h * eta).texp())?;
        x = if phi2 {
            let b2 = ei2(-h_eta) / rr;
            let b1 = ei1(-h_eta) - b2;
            let comb = (mul32(&den, b1)? + mul32(&den2, b2)?)?;
            (base - mul32(&comb, alpha_t)?)?
        } else {
            let dd = lerp_tensor(&den, &den2, fac)?;
            (base - mul32(&dd, alpha_t * ei1(-h_eta))?)?
        };
        if let Some(v) = sde {
            let seg = rm1 * h * eta;
            let n = r.noise(sigma_s1, sn)?;
            let v = (mul32(&v, seg.texp())? + mul32(&n, (-((seg * 2.0).texpm1())).sqrt())?)?;
            x = (x + mul32(&mul32(&v, sn)?, s_noise)?)?;
        }
    }
    Ok(x)
}

/// `torch.lerp(a, b, w)` on float32 tensors with a scalar weight: torch's vectorised kernel
/// uses fused multiply-adds (`fma(w, b − a, a)` for `|w| < ½`, else `fma(−(b − a), 1 − w, b)`).
fn lerp_tensor(a: &Tensor, b: &Tensor, w: f32) -> Result<Tensor> {
    let av: Vec<f32> = a
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let bv: Vec<f32> = b
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let out: Vec<f32> = av
        .iter()
        .zip(&bv)
        .map(|(&x, &y)| super::lerp32(x, y, w))
        .collect();
    Ok(Tensor::from_vec(out, a.shape(), a.device())?.to_dtype(a.dtype())?)
}

/// `sample_seeds_3`, scalars in float32.
pub(crate) fn seeds_3(
    r: &mut Run,
    x: &Tensor,
    s: &[f32],
    eta: f64,
    s_noise: f64,
    r1: f64,
    r2: f64,
) -> Result<Tensor> {
    use super::{lerp32, mul32};
    // Python-float arithmetic on r₁, r₂ happens in float64 before torch rounds the result to
    // float32 (`r_2 − 1` in float32 would be 1 ulp off −⅓).
    let (r2_over_r1, r1_minus_r2, r2_minus_1, m2r1) = (
        (r2 / r1) as f32,
        (r1 - r2) as f32,
        (r2 - 1.0) as f32,
        (-2.0 * r1) as f32,
    );
    let (eta, s_noise, r1, r2) = (eta as f32, s_noise as f32, r1 as f32, r2 as f32);
    let phi1 = |h: f32| h.texpm1();
    let phi2 = |h: f32| (h.texpm1() - h) / h;
    let inject = eta > 0.0 && s_noise > 0.0;
    let mut x = x.clone();
    for i in 0..s.len() - 1 {
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        if s[i + 1] == 0.0 {
            x = den;
            continue;
        }
        let (si, sn) = (s[i], s[i + 1]);
        let ls = -(si.tln());
        let lt = -(sn.tln());
        let h = lt - ls;
        let h_eta = h * (eta + 1.0);
        let l1 = lerp32(ls, lt, r1);
        let l2 = lerp32(ls, lt, r2);
        let (s1, s2) = ((-l1).texp(), (-l2).texp());
        let (a1, a2) = (s1 * l1.texp(), s2 * l2.texp());
        let alpha_t = sn * lt.texp();
        // Step 1
        let mut x2 =
            (mul32(&x, s1 / si * (-r1 * h * eta).texp())? - mul32(&den, a1 * phi1(-r1 * h_eta))?)?;
        let mut sde: Option<Tensor> = None;
        if inject {
            let n = r.noise(si, s1)?;
            let v = mul32(&n, (-((m2r1 * h * eta).texpm1())).sqrt())?;
            x2 = (x2 + mul32(&mul32(&v, s1)?, s_noise)?)?;
            sde = Some(v);
        }
        let den2 = r.model(&x2, s1)?;
        // Step 2
        let a32 = r2_over_r1 * phi2(-r2 * h_eta);
        let a31 = phi1(-r2 * h_eta) - a32;
        let comb = (mul32(&den, a31)? + mul32(&den2, a32)?)?;
        let mut x3 = (mul32(&x, s2 / si * (-r2 * h * eta).texp())? - mul32(&comb, a2)?)?;
        if let Some(v) = sde.take() {
            let seg = r1_minus_r2 * h * eta;
            let n = r.noise(s1, s2)?;
            let v = (mul32(&v, seg.texp())? + mul32(&n, (-((seg * 2.0).texpm1())).sqrt())?)?;
            x3 = (x3 + mul32(&mul32(&v, s2)?, s_noise)?)?;
            sde = Some(v);
        }
        let den3 = r.model(&x3, s2)?;
        // Step 3
        let b3 = phi2(-h_eta) / r2;
        let b1 = phi1(-h_eta) - b3;
        let comb = (mul32(&den, b1)? + mul32(&den3, b3)?)?;
        x = (mul32(&x, sn / si * (-h * eta).texp())? - mul32(&comb, alpha_t)?)?;
        if let Some(v) = sde {
            let seg = r2_minus_1 * h * eta;
            let n = r.noise(s2, sn)?;
            let v = (mul32(&v, seg.texp())? + mul32(&n, (-((seg * 2.0).texpm1())).sqrt())?)?;
            x = (x + mul32(&mul32(&v, sn)?, s_noise)?)?;
        }
    }
    Ok(x)
}
