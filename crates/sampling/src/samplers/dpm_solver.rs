//! DPM-Solver fast (fixed step) and adaptive (`dpm_fast`, `dpm_adaptive`), eta = 0.
//! Time variable `t = −ln σ`; the run stops at the smallest positive σ.

use super::tmath::TorchMath;
use candle_core::Tensor;

use super::{lc, Run};
use crate::error::Result;

fn sigma_of(t: f64) -> f32 {
    (-t).texp() as f32
}

/// `ε(x, t)` cache for one step.
struct Eps {
    eps: Option<Tensor>,
    r1: Option<Tensor>,
    r2: Option<Tensor>,
}

fn eps_at(r: &mut Run, x: &Tensor, t: f64) -> Result<Tensor> {
    let sg = sigma_of(t);
    let den = r.model(x, sg)?;
    Ok(((x - den)? / sg as f64)?)
}

fn step1(x: &Tensor, t: f64, tn: f64, c: &Eps) -> Result<Tensor> {
    let h = tn - t;
    let e = c.eps.as_ref().expect("eps evaluated");
    lc(&[(1.0, x), (-(sigma_of(tn) as f64) * h.texpm1(), e)])
}

fn step2(r: &mut Run, x: &Tensor, t: f64, tn: f64, r1: f64, c: &mut Eps) -> Result<Tensor> {
    let h = tn - t;
    let e = c.eps.clone().expect("eps evaluated");
    let s1 = t + r1 * h;
    if c.r1.is_none() {
        let u1 = lc(&[(1.0, x), (-(sigma_of(s1) as f64) * (r1 * h).texpm1(), &e)])?;
        c.r1 = Some(eps_at(r, &u1, s1)?);
    }
    let er1 = c.r1.as_ref().expect("set above");
    let sn = sigma_of(tn) as f64;
    let diff = (er1 - &e)?;
    lc(&[
        (1.0, x),
        (-sn * h.texpm1(), &e),
        (-sn / (2.0 * r1) * h.texpm1(), &diff),
    ])
}

fn step3(r: &mut Run, x: &Tensor, t: f64, tn: f64, c: &mut Eps) -> Result<Tensor> {
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    let h = tn - t;
    let e = c.eps.clone().expect("eps evaluated");
    let s1 = t + r1 * h;
    let s2 = t + r2 * h;
    if c.r1.is_none() {
        let u1 = lc(&[(1.0, x), (-(sigma_of(s1) as f64) * (r1 * h).texpm1(), &e)])?;
        c.r1 = Some(eps_at(r, &u1, s1)?);
    }
    let er1 = c.r1.clone().expect("set above");
    if c.r2.is_none() {
        let ss2 = sigma_of(s2) as f64;
        let d1 = (&er1 - &e)?;
        let u2 = lc(&[
            (1.0, x),
            (-ss2 * (r2 * h).texpm1(), &e),
            (-ss2 * (r2 / r1) * ((r2 * h).texpm1() / (r2 * h) - 1.0), &d1),
        ])?;
        c.r2 = Some(eps_at(r, &u2, s2)?);
    }
    let er2 = c.r2.as_ref().expect("set above");
    let sn = sigma_of(tn) as f64;
    let d2 = (er2 - &e)?;
    lc(&[
        (1.0, x),
        (-sn * h.texpm1(), &e),
        (-sn / r2 * (h.texpm1() / h - 1.0), &d2),
    ])
}

fn sigma_range(s: &[f32]) -> (f32, f32) {
    let n = s.len();
    let mut smin = s[n - 1];
    if smin == 0.0 {
        smin = s[n - 2];
    }
    (smin, s[0])
}

/// `sample_dpm_fast` with `n = len(sigmas) − 1` evaluations.
pub(crate) fn dpm_fast(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let (smin, smax) = sigma_range(s);
    let nfe = s.len() - 1;
    let t_start = -(smax.tln());
    let t_end = -(smin.tln());
    let m = nfe / 3 + 1;
    let ts = crate::schedule::linspace_f32(t_start, t_end, m + 1);
    let orders: Vec<usize> = if nfe % 3 == 0 {
        let mut o = vec![3; m.saturating_sub(2)];
        o.extend([2, 1]);
        o
    } else {
        let mut o = vec![3; m - 1];
        o.push(nfe % 3);
        o
    };
    let mut x = x.clone();
    for (i, order) in orders.iter().enumerate() {
        let (t, tn) = (ts[i] as f64, ts[i + 1] as f64);
        let e = eps_at(r, &x, t)?;
        let den = lc(&[(1.0, &x), (-(sigma_of(t) as f64), &e)])?;
        r.callback(i, &x, &den);
        let mut c = Eps {
            eps: Some(e),
            r1: None,
            r2: None,
        };
        x = match order {
            1 => step1(&x, t, tn, &c)?,
            2 => step2(r, &x, t, tn, 0.5, &mut c)?,
            _ => step3(r, &x, t, tn, &mut c)?,
        };
    }
    Ok(x)
}

/// `sample_dpm_adaptive`: DPM-Solver-23 with a PID step controller (order 3, rtol 0.05,
/// atol 0.0078, h_init 0.05, icoeff 1, accept_safety 0.81).
pub(crate) fn dpm_adaptive(r: &mut Run, x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let (smin, smax) = sigma_range(s);
    let (order, rtol, atol, accept_safety, eps_pid) =
        (3.0f64, 0.05f64, 0.0078f64, 0.81f64, 1e-8f64);
    let t_start = -(smax.tln()) as f64;
    let t_end = -(smin.tln()) as f64;
    let b1 = 1.0 / order;
    let mut h = 0.05f64;
    let mut errs: Option<[f64; 3]> = None;
    let mut sv = t_start;
    let mut x = x.clone();
    let mut x_prev = x.clone();
    let mut steps = 0usize;
    let numel = x.elem_count() as f64;
    // Each step needs at least one evaluation; guard against a non-terminating controller.
    let mut guard = 0usize;
    while sv < t_end - 1e-5 {
        guard += 1;
        if guard > 100_000 {
            return Err(crate::SamplingError::Invalid(
                "dpm_adaptive did not converge".into(),
            ));
        }
        let t = (sv + h).min(t_end) as f32 as f64;
        let e = eps_at(r, &x, sv)?;
        let den = lc(&[(1.0, &x), (-(sigma_of(sv) as f64), &e)])?;
        let mut c = Eps {
            eps: Some(e),
            r1: None,
            r2: None,
        };
        let x_low = step2(r, &x, sv, t, 1.0 / 3.0, &mut c)?;
        let x_high = step3(r, &x, sv, t, &mut c)?;
        let delta = x_low
            .abs()?
            .maximum(&x_prev.abs()?)?
            .affine(rtol, 0.0)?
            .maximum(atol)?;
        let q = ((&x_low - &x_high)? / delta)?;
        let norm = q
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?
            .sqrt();
        let error = norm / numel.sqrt();
        // PIDStepSizeController.propose_step with pcoeff = dcoeff = 0.
        let inv = 1.0 / (error + eps_pid);
        let e3 = errs.get_or_insert([inv, inv, inv]);
        e3[0] = inv;
        let mut factor = e3[0].powf(b1);
        factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= accept_safety;
        if accept {
            e3[2] = e3[1];
            e3[1] = e3[0];
        }
        h *= factor;
        if accept {
            x_prev = x_low;
            x = x_high;
            sv = t;
        }
        steps += 1;
        r.callback(steps - 1, &x, &den);
    }
    Ok(x)
}
