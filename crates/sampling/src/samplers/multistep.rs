//! Multistep samplers: iPNDM (fixed and variable step), DEIS (tab mode) and SA-Solver.

use super::tmath::TorchMath;
use candle_core::Tensor;

use super::{lc, to_d, Run};
use crate::error::Result;

fn f(s: f32) -> f64 {
    s as f64
}

fn push_buffer(buf: &mut Vec<Tensor>, d: Tensor, max_order: usize) {
    if buf.len() == max_order - 1 {
        buf.remove(0);
    }
    buf.push(d);
}

/// `sample_ipndm` (max order 4).
pub(crate) fn ipndm(r: &mut Run, x: &Tensor, s: &[f32], max_order: usize) -> Result<Tensor> {
    let mut x = x.clone();
    let mut buf: Vec<Tensor> = Vec::new();
    for i in 0..s.len() - 1 {
        let (tc, tn) = (f(s[i]), f(s[i + 1]));
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let d = to_d(&x, &den, tc)?;
        let order = max_order.min(i + 1);
        let dt = tn - tc;
        let n = buf.len();
        x = if s[i + 1] == 0.0 {
            den
        } else {
            match order {
                1 => lc(&[(1.0, &x), (dt, &d)])?,
                2 => lc(&[(1.0, &x), (dt * 3.0 / 2.0, &d), (-dt / 2.0, &buf[n - 1])])?,
                3 => lc(&[
                    (1.0, &x),
                    (dt * 23.0 / 12.0, &d),
                    (-dt * 16.0 / 12.0, &buf[n - 1]),
                    (dt * 5.0 / 12.0, &buf[n - 2]),
                ])?,
                _ => lc(&[
                    (1.0, &x),
                    (dt * 55.0 / 24.0, &d),
                    (-dt * 59.0 / 24.0, &buf[n - 1]),
                    (dt * 37.0 / 24.0, &buf[n - 2]),
                    (-dt * 9.0 / 24.0, &buf[n - 3]),
                ])?,
            }
        };
        push_buffer(&mut buf, d, max_order);
    }
    Ok(x)
}

/// `sample_ipndm_v` (variable-step iPNDM, max order 4).
pub(crate) fn ipndm_v(r: &mut Run, x: &Tensor, s: &[f32], max_order: usize) -> Result<Tensor> {
    let mut x = x.clone();
    let t: Vec<f64> = s.iter().map(|v| f(*v)).collect();
    let mut buf: Vec<Tensor> = Vec::new();
    for i in 0..s.len() - 1 {
        let (tc, tn) = (t[i], t[i + 1]);
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let d = to_d(&x, &den, tc)?;
        let order = max_order.min(i + 1);
        let n = buf.len();
        let h_n = tn - tc;
        x = if s[i + 1] == 0.0 {
            den
        } else {
            match order {
                1 => lc(&[(1.0, &x), (h_n, &d)])?,
                2 => {
                    let h1 = tc - t[i - 1];
                    let c1 = (2.0 + h_n / h1) / 2.0;
                    let c2 = -(h_n / h1) / 2.0;
                    lc(&[(1.0, &x), (h_n * c1, &d), (h_n * c2, &buf[n - 1])])?
                }
                3 => {
                    let h1 = tc - t[i - 1];
                    let h2 = t[i - 1] - t[i - 2];
                    let temp = (1.0
                        - h_n / (3.0 * (h_n + h1)) * (h_n * (h_n + h1)) / (h1 * (h1 + h2)))
                        / 2.0;
                    let c1 = (2.0 + h_n / h1) / 2.0 + temp;
                    let c2 = -(h_n / h1) / 2.0 - (1.0 + h1 / h2) * temp;
                    let c3 = temp * h1 / h2;
                    lc(&[
                        (1.0, &x),
                        (h_n * c1, &d),
                        (h_n * c2, &buf[n - 1]),
                        (h_n * c3, &buf[n - 2]),
                    ])?
                }
                _ => {
                    let h1 = tc - t[i - 1];
                    let h2 = t[i - 1] - t[i - 2];
                    let h3 = t[i - 2] - t[i - 3];
                    let temp1 = (1.0
                        - h_n / (3.0 * (h_n + h1)) * (h_n * (h_n + h1)) / (h1 * (h1 + h2)))
                        / 2.0;
                    let temp2 = ((1.0 - h_n / (3.0 * (h_n + h1))) / 2.0
                        + (1.0 - h_n / (2.0 * (h_n + h1))) * h_n / (6.0 * (h_n + h1 + h2)))
                        * (h_n * (h_n + h1) * (h_n + h1 + h2))
                        / (h1 * (h1 + h2) * (h1 + h2 + h3));
                    let q = h1 * (h1 + h2) / (h2 * (h2 + h3));
                    let c1 = (2.0 + h_n / h1) / 2.0 + temp1 + temp2;
                    let c2 =
                        -(h_n / h1) / 2.0 - (1.0 + h1 / h2) * temp1 - (1.0 + h1 / h2 + q) * temp2;
                    let c3 = temp1 * h1 / h2 + (h1 / h2 + q * (1.0 + h2 / h3)) * temp2;
                    let c4 = -temp2 * q * h1 / h2;
                    lc(&[
                        (1.0, &x),
                        (h_n * c1, &d),
                        (h_n * c2, &buf[n - 1]),
                        (h_n * c3, &buf[n - 2]),
                        (h_n * c4, &buf[n - 3]),
                    ])?
                }
            }
        };
        push_buffer(&mut buf, d, max_order);
    }
    Ok(x)
}

/// DEIS "tab" coefficients (`deis.get_deis_coeff_list`, N = 10000 rectangle-rule points).
fn deis_coeffs(sigmas: &[f32], max_order: usize) -> Vec<Vec<f64>> {
    let (eps_s, smin, smax) = (1e-3f64, 0.002f64, 80.0f64);
    let beta_d =
        2.0 * ((smin * smin + 1.0).tln() / eps_s - (smax * smax + 1.0).tln()) / (eps_s - 1.0);
    let beta_min = (smax * smax + 1.0).tln() - 0.5 * beta_d;
    let t: Vec<f64> = sigmas
        .iter()
        .map(|s| {
            let s = *s as f64;
            ((beta_min * beta_min + 2.0 * beta_d * (s * s + 1.0).tln()).sqrt() - beta_min) / beta_d
        })
        .collect();
    let (b0, b1) = (beta_min, beta_d + beta_min);
    let n_pts = 10_000usize;
    let mut out = Vec::new();
    for i in 0..t.len() - 1 {
        let order = (i + 1).min(max_order);
        if order == 1 {
            out.push(vec![]);
            continue;
        }
        let (tc, tn) = (t[i], t[i + 1]);
        let dtau = (tn - tc) / n_pts as f64;
        let prev: Vec<f64> = (0..order).map(|k| t[i - k]).collect();
        let mut coeffs = vec![0.0; order];
        for p in 0..n_pts {
            let tau = if p < n_pts / 2 {
                tc + (tn - tc) / (n_pts - 1) as f64 * p as f64
            } else {
                tn - (tn - tc) / (n_pts - 1) as f64 * (n_pts - 1 - p) as f64
            };
            let alpha = (-0.5 * tau * tau * (b1 - b0) - tau * b0).texp();
            let dlog = -tau * (b1 - b0) - b0;
            let integrand = -0.5 * dlog / (alpha * (1.0 - alpha)).sqrt();
            for (j, c) in coeffs.iter_mut().enumerate() {
                let mut poly = 1.0;
                for k in 0..order {
                    if k != j {
                        poly *= (tau - prev[k]) / (prev[j] - prev[k]);
                    }
                }
                *c += integrand * poly;
            }
        }
        out.push(coeffs.into_iter().map(|c| c * dtau).collect());
    }
    out
}

/// `sample_deis` (tab mode, max order 3).
pub(crate) fn deis(r: &mut Run, x: &Tensor, s: &[f32], max_order: usize) -> Result<Tensor> {
    let coeffs = deis_coeffs(s, max_order);
    let mut x = x.clone();
    let mut buf: Vec<Tensor> = Vec::new();
    for i in 0..s.len() - 1 {
        let (tc, tn) = (f(s[i]), f(s[i + 1]));
        let den = r.model(&x, s[i])?;
        r.callback(i, &x, &den);
        let d = to_d(&x, &den, tc)?;
        let mut order = max_order.min(i + 1);
        if tn <= 0.0 {
            order = 1;
        }
        let n = buf.len();
        x = if order == 1 {
            lc(&[(1.0, &x), (tn - tc, &d)])?
        } else {
            let c = &coeffs[i];
            let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x), (c[0], &d)];
            for k in 1..order {
                terms.push((c[k], &buf[n - k]));
            }
            lc(&terms)?
        };
        push_buffer(&mut buf, d, max_order);
    }
    Ok(x)
}

/// Solves `a·x = b` in float32 (LU with partial pivoting, as `torch.linalg.solve`).
fn solve32(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    // Partial-pivot LU as torch's `linalg.solve` (MKL `getrf`/`getrs`) rounds it: multipliers
    // by true division, fused multiply-add updates, back substitution multiplying by the
    // float32 reciprocal of the pivot. Bit-exact against torch for 2×2 systems; for 3×3 and
    // 4×4 MKL's blocked kernels order some operations differently (closest model found).
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
            let l = a[row][col] / a[col][col];
            for k in col + 1..n {
                a[row][k] = (-l).mul_add(a[col][k], a[row][k]);
            }
            b[row] = (-l).mul_add(b[col], b[row]);
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let mut acc = b[row];
        for k in row + 1..n {
            acc = (-a[row][k]).mul_add(x[k], acc);
        }
        x[row] = acc * (1.0f32 / a[row][row]);
    }
    x
}

/// `sa_solver.compute_stochastic_adams_b_coeffs` (not the simple order-2 variant), float32.
fn sa_b_coeffs(sigma_next: f32, lambdas: &[f32], ls: f32, lt: f32, tau: f32) -> Vec<f32> {
    let n = lambdas.len();
    let tau_mul = 1.0f32 + tau * tau;
    let h = lt - ls;
    let e = (-tau_mul * h).texp();
    let prod: Vec<f32> = (0..n)
        .map(|p| lt.powf(p as f32) - ls.powf(p as f32) * e)
        .collect();
    // lgamma(p + 1) = ln p! (float32 values of ln 1, ln 2, ln 6).
    let lf = |p: usize| -> f32 { (1..=p).map(|k| k as f64).product::<f64>().tln() as f32 };
    let ln_tm = (tau_mul as f64).tln() as f32;
    // `recursive_coeff_mat @ product_terms`: torch's float32 mat-vec sums each row's products
    // from the last column to the first (bit-exact against torch for 2×2 and 3×3; the upper
    // triangle is zero and adds nothing).
    let mut exp_coeffs = vec![0.0f32; n];
    for i in 0..n {
        let mut acc: Option<f32> = None;
        for j in (0..=i).rev() {
            let depth = (i - j) as f32;
            let mut c = lf(i) - lf(j);
            if tau > 0.0 {
                c -= depth * ln_tm;
            }
            let sign = if (i - j) % 2 == 0 { 1.0f32 } else { -1.0 };
            let term = c.texp() * sign * prod[j];
            acc = Some(match acc {
                None => term,
                Some(a) => a + term,
            });
        }
        exp_coeffs[i] = acc.unwrap_or(0.0);
    }
    // Vandermonde (transposed): row k = λ_j^k. `torch.vander` builds it with `cumprod`, whose
    // CPU kernel accumulates float32 in float64, so each power is rounded once.
    let mut a: Vec<Vec<f32>> = vec![vec![1.0f32; n]; n];
    for (j, lam) in lambdas.iter().enumerate() {
        let mut acc = 1.0f64;
        for row in a.iter_mut().skip(1) {
            acc *= *lam as f64;
            row[j] = acc as f32;
        }
    }
    let li = solve32(a, exp_coeffs);
    let alpha_t = sigma_next * lt.texp();
    li.into_iter().map(|v| alpha_t * v).collect()
}

/// `Σ_k b_k·p_k` accumulated as `fma(p_k, b_k, acc)` from `p_0·b_0` (float32).
fn fma_dot(b: &[f32], ps: &[Tensor]) -> Result<Tensor> {
    let first = ps
        .first()
        .ok_or_else(|| crate::SamplingError::Invalid("empty sa_solver combination".into()))?;
    let vals: Vec<Vec<f32>> = ps
        .iter()
        .map(|p| {
            p.flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1())
        })
        .collect::<std::result::Result<_, _>>()?;
    let out: Vec<f32> = (0..vals[0].len())
        .map(|i| {
            let mut acc = vals[0][i] * b[0];
            for k in 1..vals.len() {
                acc = vals[k][i].mul_add(b[k], acc);
            }
            acc
        })
        .collect();
    Ok(Tensor::from_vec(out, first.shape(), first.device())?.to_dtype(first.dtype())?)
}

/// `sample_sa_solver` (predictor order 3, corrector order 4, default τ interval), or PECE.
/// Scalars in float32 like torch (the Vandermonde solve is ill-conditioned enough to matter).
pub(crate) fn sa_solver(r: &mut Run, x: &Tensor, s: &[f32], pece: bool) -> Result<Tensor> {
    use super::mul32;
    let (pred_order, corr_order) = (3usize, 4usize);
    let s_noise = 1.0f32;
    let lambdas: Vec<f32> = s.iter().map(|v| -(v.tln())).collect();
    let ms = r.model_sampling().clone();
    let start_sigma = ms.percent_to_sigma(0.2);
    let end_sigma = ms.percent_to_sigma(0.8);
    let tau_func = |sigma: f32| {
        let sigma = sigma as f64;
        if start_sigma >= sigma && sigma >= end_sigma {
            1.0f32
        } else {
            0.0
        }
    };
    let max_used = pred_order.max(corr_order);
    let mut x_pred = x.clone();
    let mut x = x.clone();
    let mut h = 0.0f32;
    let mut tau_t = 0.0f32;
    let mut noise: Option<Tensor> = None;
    let mut preds: Vec<Tensor> = Vec::new();
    let lower_to_end = s[s.len() - 1] == 0.0;
    let n = s.len();
    // `torch.tensordot(stack(preds), b)` is a float32 GEMV that accumulates with fused
    // multiply-adds in order (bit-exact against torch); the state term is added after.
    let combine = |base: &Tensor, c0: f32, b: &[f32], ps: &[Tensor]| -> Result<Tensor> {
        let res = fma_dot(b, ps)?;
        Ok((mul32(base, c0)? + res)?)
    };
    for i in 0..n - 1 {
        let mut den = r.model(&x_pred, s[i])?;
        r.callback(i, &x_pred, &den);
        preds.push(den.clone());
        if preds.len() > max_used {
            preds.remove(0);
        }
        let mut p_used = pred_order.min(preds.len());
        let mut c_used = if i == 0 || (s[i + 1] == 0.0 && !pece) {
            0
        } else {
            corr_order.min(preds.len())
        };
        if lower_to_end {
            p_used = p_used.min(n - 2 - i);
            c_used = c_used.min(n - 1 - i);
        }
        if c_used == 0 {
            x = x_pred.clone();
        } else {
            let cl = &lambdas[i + 1 - c_used..i + 1];
            let b = sa_b_coeffs(s[i], cl, lambdas[i - 1], lambdas[i], tau_t);
            let c0 = s[i] / s[i - 1] * (-(tau_t * tau_t) * h).texp();
            x = combine(&x, c0, &b, &preds[preds.len() - c_used..])?;
            if tau_t > 0.0 && s_noise > 0.0 {
                if let Some(nz) = &noise {
                    x = (x + nz)?;
                }
            }
            if pece {
                den = r.model(&x, s[i])?;
                let last = preds.len() - 1;
                preds[last] = den.clone();
            }
        }
        if s[i + 1] == 0.0 {
            x_pred = den;
        } else {
            tau_t = tau_func(s[i + 1]);
            let cl = &lambdas[i + 1 - p_used..i + 1];
            let b = sa_b_coeffs(s[i + 1], cl, lambdas[i], lambdas[i + 1], tau_t);
            h = lambdas[i + 1] - lambdas[i];
            let c0 = s[i + 1] / s[i] * (-(tau_t * tau_t) * h).texp();
            x_pred = combine(&x, c0, &b, &preds[preds.len() - p_used..])?;
            if tau_t > 0.0 && s_noise > 0.0 {
                let nz = r.noise(s[i], s[i + 1])?;
                let c = (-((-2.0f32 * tau_t * tau_t * h).texpm1())).sqrt();
                let nz = mul32(&mul32(&mul32(&nz, s[i + 1])?, c)?, s_noise)?;
                x_pred = (x_pred + &nz)?;
                noise = Some(nz);
            }
        }
    }
    Ok(x_pred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×2 transposed Vandermonde system solved by torch 2.11's `linalg.solve` (bit patterns).
    #[test]
    fn solve32_matches_torch_on_2x2() {
        let b = |u: u32| f32::from_bits(u);
        let (l0, l1) = (b(1061065928), b(3217940306));
        let a = vec![vec![1.0f32, 1.0], vec![l0, l1]];
        let rhs = vec![b(1050871908), b(1050716120)];
        let x = solve32(a, rhs);
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vec![1051966144, 3171259105]
        );
    }
}
