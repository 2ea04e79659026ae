//! UniPC multistep (bh1 / bh2 variants), data prediction, as ComfyUI's `uni_pc.py` runs it
//! on k-diffusion σ schedules. Scalar quantities are computed in float32 like torch does:
//! at the final σ (0.001) the VP std `√(1 − e^{2·log α})` cancels badly, and matching it
//! matters at the 1e-5 level.

use super::tmath::TorchMath;
use candle_core::Tensor;

use super::{lc, Run};
use crate::error::Result;

fn lmc(s: f32) -> f32 {
    0.5f32 * (1.0f32 / (s * s + 1.0f32)).tln()
}
fn alpha(s: f32) -> f32 {
    lmc(s).texp()
}
fn vp_std(s: f32) -> f32 {
    (1.0f32 - (2.0f32 * lmc(s)).texp()).sqrt()
}
fn lambda(s: f32) -> f32 {
    let l = lmc(s);
    l - 0.5f32 * (1.0f32 - (2.0f32 * l).texp()).tln()
}

/// Gaussian elimination with partial pivoting in float32 (what `torch.linalg.solve` does).
fn solve32(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for col in 0..n {
        let mut piv = col;
        for row in col + 1..n {
            if a[row][col].abs() > a[piv][col].abs() {
                piv = row;
            }
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let mut acc = b[row];
        for k in row + 1..n {
            acc -= a[row][k] * x[k];
        }
        x[row] = acc / a[row][row];
    }
    x
}

/// Data prediction `m(x_VP, t)` from the k-diffusion denoiser.
fn model_x0(r: &mut Run, x: &Tensor, t: f32) -> Result<Tensor> {
    let scale = (t * t + 1.0f32).sqrt();
    let xin = (x * scale as f64)?;
    let den = r.model(&xin, t)?;
    let eps = ((&xin - den)? / t as f64)?;
    // (x − σ_t·ε)/α_t
    let xs = lc(&[(1.0, x), (-(vp_std(t) as f64), &eps)])?;
    Ok((xs / alpha(t) as f64)?)
}

#[allow(clippy::too_many_arguments)]
fn update(
    r: &mut Run,
    x: &Tensor,
    models: &[Tensor],
    ts: &[f32],
    t: f32,
    order: usize,
    use_corrector: bool,
    bh2: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let tp0 = ts[ts.len() - 1];
    let m0 = &models[models.len() - 1];
    let (lp0, lt) = (lambda(tp0), lambda(t));
    let (sp0, st) = (vp_std(tp0), vp_std(t));
    let at = alpha(t);
    let h = lt - lp0;
    let mut rks: Vec<f32> = Vec::new();
    let mut d1s: Vec<Tensor> = Vec::new();
    for i in 1..order {
        let tpi = ts[ts.len() - 1 - i];
        let mi = &models[models.len() - 1 - i];
        let rk = (lambda(tpi) - lp0) / h;
        rks.push(rk);
        d1s.push(((mi - m0)? / rk as f64)?);
    }
    rks.push(1.0);
    let hh = -h;
    let h_phi_1 = hh.texpm1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut fact = 1.0f32;
    let b_h = if bh2 { hh.texpm1() } else { hh };
    let mut rmat: Vec<Vec<f32>> = Vec::new();
    let mut b: Vec<f32> = Vec::new();
    for i in 1..=order {
        rmat.push(rks.iter().map(|v| v.powi(i as i32 - 1)).collect());
        b.push(h_phi_k * fact / b_h);
        fact *= (i + 1) as f32;
        h_phi_k = h_phi_k / hh - 1.0 / fact;
    }
    let rhos_p: Vec<f32> = if d1s.is_empty() {
        vec![]
    } else if order == 2 {
        vec![0.5]
    } else {
        let sub: Vec<Vec<f32>> = rmat[..order - 1]
            .iter()
            .map(|row| row[..order - 1].to_vec())
            .collect();
        solve32(sub, b[..order - 1].to_vec())
    };
    let rhos_c: Vec<f32> = if !use_corrector {
        vec![]
    } else if order == 1 {
        vec![0.5]
    } else {
        solve32(rmat.clone(), b.clone())
    };
    let x_base = lc(&[((st / sp0) as f64, x), (-((at * h_phi_1) as f64), m0)])?;
    let ab = (at * b_h) as f64;
    let x_t = if d1s.is_empty() {
        x_base.clone()
    } else {
        let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x_base)];
        for (rho, d) in rhos_p.iter().zip(&d1s) {
            terms.push((-ab * *rho as f64, d));
        }
        lc(&terms)?
    };
    if !use_corrector {
        return Ok((x_t, None));
    }
    let m_t = model_x0(r, &x_t, t)?;
    let d1_t = (&m_t - m0)?;
    let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x_base)];
    for (rho, d) in rhos_c.iter().zip(&d1s) {
        terms.push((-ab * *rho as f64, d));
    }
    let last = rhos_c[rhos_c.len() - 1];
    terms.push((-ab * last as f64, &d1_t));
    Ok((lc(&terms)?, Some(m_t)))
}

/// `sample_unipc` (variant bh1, or bh2 when `bh2`).
pub(crate) fn uni_pc(r: &mut Run, x: &Tensor, sigmas: &[f32], bh2: bool) -> Result<Tensor> {
    let mut ts = sigmas.to_vec();
    let n = ts.len();
    if ts[n - 1] == 0.0 {
        ts[n - 1] = 0.001;
    }
    let steps = n - 1;
    let order = 3.min(n.saturating_sub(2));
    let mut x = (x / (1.0f32 + ts[0] * ts[0]).sqrt() as f64)?;
    let mut models: Vec<Tensor> = Vec::new();
    let mut tprev: Vec<f32> = Vec::new();
    for step_index in 0..steps {
        if step_index == 0 {
            models.push(model_x0(r, &x, ts[0])?);
            tprev.push(ts[0]);
        } else if step_index < order {
            let t = ts[step_index];
            let (nx, m) = update(r, &x, &models, &tprev, t, step_index, true, bh2)?;
            x = nx;
            let m = match m {
                Some(m) => m,
                None => model_x0(r, &x, t)?,
            };
            models.push(m);
            tprev.push(t);
        } else {
            let extra = usize::from(step_index == steps - 1);
            for step in step_index..step_index + 1 + extra {
                let t = ts[step];
                let step_order = order.min(steps + 1 - step);
                let use_corrector = step != steps;
                let (nx, m) = update(r, &x, &models, &tprev, t, step_order, use_corrector, bh2)?;
                x = nx;
                if models.len() == order {
                    models.remove(0);
                    tprev.remove(0);
                }
                tprev.push(t);
                if step < steps {
                    let m = match m {
                        Some(m) => m,
                        None => model_x0(r, &x, t)?,
                    };
                    models.push(m);
                } else {
                    // Keep list lengths aligned; the final model value is never used.
                    let last = models[models.len() - 1].clone();
                    models.push(last);
                }
            }
        }
        let den = models[models.len() - 1].clone();
        r.callback(step_index, &x, &den);
    }
    Ok((x / alpha(ts[n - 1]) as f64)?)
}
