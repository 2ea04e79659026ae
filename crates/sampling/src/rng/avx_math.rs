//! Float32 `ln`/`sincos` exactly as PyTorch's AVX2 kernels compute them (Cephes-style
//! polynomials of `avx_mathfun.h`, with GCC's FMA contraction of the released wheels),
//! so that `torch.randn` on x86 CPUs can be reproduced bit for bit.

// The Cephes constants are kept verbatim from avx_mathfun.h.
#![allow(clippy::excessive_precision)]

const P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461_03e-1,
    1.167_699_874e-1,
    -1.242_014_084_6e-1,
    1.424_932_278_7e-1,
    -1.666_805_766_5e-1,
    2.000_071_476_5e-1,
    -2.499_999_399_3e-1,
    3.333_333_117_4e-1,
];
const LOG_Q1: f32 = -2.121_944_4e-4;
const LOG_Q2: f32 = 0.693_359_375;
const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
const MIN_NORM_POS: f32 = f32::MIN_POSITIVE;

/// `log256_ps` for one lane.
#[inline(always)]
pub fn log_ps(x: f32) -> f32 {
    let invalid = x <= 0.0;
    let x = if x > MIN_NORM_POS { x } else { MIN_NORM_POS };
    let bits = x.to_bits();
    let imm0 = (bits >> 23) as i32 - 0x7f;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let mut e = imm0 as f32 + 1.0;
    let mask = x < SQRTHF;
    let tmp = if mask { x } else { 0.0 };
    x -= 1.0;
    if mask {
        e -= 1.0;
    }
    x += tmp;
    let z = x * x;
    let mut y = P[0];
    for p in &P[1..] {
        y = y.mul_add(x, *p);
    }
    y *= x;
    // y*z + e*q1: the product y*z is fused, e*q1 rounded separately.
    y = y.mul_add(z, e * LOG_Q1);
    // y - z*0.5 (z*0.5 is exact).
    y = (-z).mul_add(0.5, y);
    x += y;
    x = e.mul_add(LOG_Q2, x);
    if invalid {
        f32::NAN
    } else {
        x
    }
}

const FOPI: f32 = 1.273_239_544_735_16;
const DP1: f32 = -0.785_156_25;
const DP2: f32 = -2.418_756_484_985_351_562_5e-4;
const DP3: f32 = -3.774_894_977_445_941_08e-8;
const COS_P0: f32 = 2.443_315_711_809_948e-5;
const COS_P1: f32 = -1.388_731_625_493_765e-3;
const COS_P2: f32 = 4.166_664_568_298_827e-2;
const SIN_P0: f32 = -1.951_529_589_1e-4;
const SIN_P1: f32 = 8.332_160_873_6e-3;
const SIN_P2: f32 = -1.666_665_461_1e-1;

/// `sincos256_ps` for one lane: returns `(sin x, cos x)`.
#[inline(always)]
pub fn sincos_ps(x: f32) -> (f32, f32) {
    let mut sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    let y = x * FOPI;
    let mut j = y as i32; // truncation (cvttps)
    j = (j + 1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let poly_mask = (j & 2) == 0;
    x = y.mul_add(DP1, x);
    x = y.mul_add(DP2, x);
    x = y.mul_add(DP3, x);
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;
    sign_sin ^= swap_sign_sin;
    let z = x * x;
    let mut yc = COS_P0.mul_add(z, COS_P1);
    yc = yc.mul_add(z, COS_P2);
    yc *= z;
    // yc*z - z*0.5: the product yc*z is fused.
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;
    let mut ys = SIN_P0.mul_add(z, SIN_P1);
    ys = ys.mul_add(z, SIN_P2);
    ys *= z;
    ys = ys.mul_add(x, x);
    let (s, c) = if poly_mask {
        (ys + 0.0, yc + 0.0)
    } else {
        (yc + 0.0, ys + 0.0)
    };
    (
        f32::from_bits(s.to_bits() ^ sign_sin),
        f32::from_bits(c.to_bits() ^ sign_cos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_libm() {
        for i in 1..1000 {
            let u = i as f32 / 1000.0;
            assert!((log_ps(u) - u.ln()).abs() < 1e-6 * (1.0 + u.ln().abs()));
            let t = u * 6.283_185_5;
            let (s, c) = sincos_ps(t);
            assert!(
                (s - t.sin()).abs() < 1e-6 && (c - t.cos()).abs() < 1e-6,
                "{t}"
            );
        }
    }
}
