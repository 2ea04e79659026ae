//! ComfyUI's `common_upscale`: resizing `[N, C, H, W]` arrays the way torch and Pillow do.
//!
//! - `nearest-exact`, `bilinear`, `bicubic`, `area`: `torch.nn.functional.interpolate`
//!   (`align_corners=False`, no antialias; bicubic `A = -0.75`, not clamped; area =
//!   adaptive average pooling), index maths in f32 as torch's CPU kernels do.
//! - `lanczos`: Pillow's `Image.resize(LANCZOS)` on the uint8 image (truncating conversion),
//!   horizontal pass then vertical, 22-bit fixed-point weights, uint8 intermediate.
//! - `bislerp`: ComfyUI's spherical-linear interpolation across channels (latents).
//! - `crop = center`: the source is first cropped to the target aspect ratio.

use comfy_graph::NodeError;

use super::array::{py_round, Array};

/// The resampling methods `upscale_method` combos offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    NearestExact,
    Bilinear,
    Area,
    Bicubic,
    Bislerp,
    Lanczos,
}

impl Method {
    /// Parses a combo value (`nearest-exact`, `bilinear`, ...).
    pub fn parse(s: &str) -> Result<Self, NodeError> {
        Ok(match s {
            "nearest-exact" => Method::NearestExact,
            "bilinear" => Method::Bilinear,
            "area" => Method::Area,
            "bicubic" => Method::Bicubic,
            "bislerp" => Method::Bislerp,
            "lanczos" => Method::Lanczos,
            other => return Err(NodeError::invalid_input(format!("Unknown upscale method: {other}"))),
        })
    }
}

/// `crop` combo: `disabled` or `center`.
pub fn parse_crop(s: &str) -> Result<bool, NodeError> {
    match s {
        "disabled" => Ok(false),
        "center" => Ok(true),
        other => Err(NodeError::invalid_input(format!("Unknown crop mode: {other}"))),
    }
}

/// ComfyUI's `common_upscale(samples [N,C,H,W], width, height, method, crop)`.
pub fn common_upscale(
    s: &Array,
    width: usize,
    height: usize,
    method: Method,
    center_crop: bool,
) -> Result<Array, NodeError> {
    if width == 0 || height == 0 {
        return Err(NodeError::invalid_input("Target size must be positive"));
    }
    let (_, _, h, w) = s.dims4();
    if h == 0 || w == 0 {
        return Err(NodeError::invalid_input("Cannot resize an empty image"));
    }
    let cropped;
    let src = if center_crop {
        let old_aspect = w as f64 / h as f64;
        let new_aspect = width as f64 / height as f64;
        let (mut x, mut y) = (0i64, 0i64);
        if old_aspect > new_aspect {
            x = py_round((w as f64 - w as f64 * (new_aspect / old_aspect)) / 2.0);
        } else if old_aspect < new_aspect {
            y = py_round((h as f64 - h as f64 * (old_aspect / new_aspect)) / 2.0);
        }
        let (x, y) = (x.max(0) as usize, y.max(0) as usize);
        cropped = s.crop_last2(y, x, h.saturating_sub(2 * y).max(1), w.saturating_sub(2 * x).max(1));
        &cropped
    } else {
        s
    };
    Ok(match method {
        Method::Bislerp => bislerp(src, width, height),
        Method::Lanczos => lanczos(src, width, height),
        _ => per_plane(src, width, height, method),
    })
}

/// Applies a separable torch-style resize to every `H x W` plane.
fn per_plane(s: &Array, ow: usize, oh: usize, method: Method) -> Array {
    let (n, c, h, w) = s.dims4();
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for p in 0..n * c {
        let plane = &s.data[p * h * w..(p + 1) * h * w];
        match method {
            Method::NearestExact => nearest_exact(plane, h, w, oh, ow, &mut out),
            Method::Bilinear => bilinear(plane, h, w, oh, ow, &mut out),
            Method::Area => area(plane, h, w, oh, ow, &mut out),
            _ => bicubic(plane, h, w, oh, ow, &mut out),
        }
    }
    Array::new(vec![n, c, oh, ow], out)
}

fn nearest_exact(p: &[f32], h: usize, w: usize, oh: usize, ow: usize, out: &mut Vec<f32>) {
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    let idx = |d: usize, s: f32, n: usize| (((d as f32 + 0.5) * s).floor() as usize).min(n - 1);
    for y in 0..oh {
        let iy = idx(y, sy, h);
        for x in 0..ow {
            out.push(p[iy * w + idx(x, sx, w)]);
        }
    }
}

/// Linear source index and weight (torch `area_pixel_compute_source_index`, non-cubic).
fn linear_index(d: usize, scale: f32, n: usize) -> (usize, usize, f32) {
    let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (real.floor() as usize).min(n - 1);
    let lambda = (real - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < n - 1 { i0 + 1 } else { i0 };
    (i0, i1, lambda)
}

fn bilinear(p: &[f32], h: usize, w: usize, oh: usize, ow: usize, out: &mut Vec<f32>) {
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    let xs: Vec<_> = (0..ow).map(|x| linear_index(x, sx, w)).collect();
    for y in 0..oh {
        let (y0, y1, ly) = linear_index(y, sy, h);
        for &(x0, x1, lx) in &xs {
            let top = (1.0 - lx) * p[y0 * w + x0] + lx * p[y0 * w + x1];
            let bot = (1.0 - lx) * p[y1 * w + x0] + lx * p[y1 * w + x1];
            out.push((1.0 - ly) * top + ly * bot);
        }
    }
}

fn area(p: &[f32], h: usize, w: usize, oh: usize, ow: usize, out: &mut Vec<f32>) {
    let start = |a: usize, o: usize, i: usize| (a * i) / o;
    let end = |a: usize, o: usize, i: usize| ((a + 1) * i).div_ceil(o);
    for y in 0..oh {
        let (y0, y1) = (start(y, oh, h), end(y, oh, h));
        for x in 0..ow {
            let (x0, x1) = (start(x, ow, w), end(x, ow, w));
            let mut sum = 0f32;
            for yy in y0..y1 {
                for xx in x0..x1 {
                    sum += p[yy * w + xx];
                }
            }
            out.push(sum / ((y1 - y0) * (x1 - x0)) as f32);
        }
    }
}

/// Torch's cubic convolution weights for fraction `t` (`A = -0.75`).
pub fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)]
}

fn cubic_taps(d: usize, scale: f32, n: usize) -> ([usize; 4], [f32; 4]) {
    let real = scale * (d as f32 + 0.5) - 0.5;
    let i = real.floor();
    let t = real - i;
    let i = i as i64;
    let clamp = |k: i64| k.clamp(0, n as i64 - 1) as usize;
    ([clamp(i - 1), clamp(i), clamp(i + 1), clamp(i + 2)], cubic_weights(t))
}

fn bicubic(p: &[f32], h: usize, w: usize, oh: usize, ow: usize, out: &mut Vec<f32>) {
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    let xs: Vec<_> = (0..ow).map(|x| cubic_taps(x, sx, w)).collect();
    for y in 0..oh {
        let (iy, wy) = cubic_taps(y, sy, h);
        for (ix, wx) in &xs {
            let mut rows = [0f32; 4];
            for (r, &yy) in iy.iter().enumerate() {
                let row = &p[yy * w..];
                rows[r] = row[ix[0]] * wx[0] + row[ix[1]] * wx[1] + row[ix[2]] * wx[2] + row[ix[3]] * wx[3];
            }
            out.push(rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3]);
        }
    }
}

// ---- Pillow LANCZOS -------------------------------------------------------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel (first tap, taps).
fn lanczos_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n).map(|x| lanczos_filter((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if ww != 0.0 { v / ww } else { v };
                    let f = v * (1u64 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (f - 0.5) as i64
                    } else {
                        (f + 0.5) as i64
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// One 8-bit plane resized along one axis (`stride` apart taps, `lines` independent lines).
fn lanczos_pass(src: &[u8], h: usize, w: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if out_w != w {
        let co = lanczos_coeffs(w, out_w);
        let mut next = Vec::with_capacity(h * out_w);
        for y in 0..h {
            for (xmin, k) in &co {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (i, kv) in k.iter().enumerate() {
                    ss += cur[y * cw + xmin + i] as i64 * kv;
                }
                next.push(clip8(ss));
            }
        }
        cur = next;
        cw = out_w;
    }
    if out_h != h {
        let co = lanczos_coeffs(h, out_h);
        let mut next = Vec::with_capacity(out_h * cw);
        for (ymin, k) in &co {
            for x in 0..cw {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (i, kv) in k.iter().enumerate() {
                    ss += cur[(ymin + i) * cw + x] as i64 * kv;
                }
                next.push(clip8(ss));
            }
        }
        cur = next;
    }
    cur
}

/// ComfyUI's `lanczos`: uint8 round trip through Pillow's resize, per plane.
fn lanczos(s: &Array, ow: usize, oh: usize) -> Array {
    let (n, c, h, w) = s.dims4();
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for p in 0..n * c {
        let plane: Vec<u8> = s.data[p * h * w..(p + 1) * h * w].iter().map(|&v| to_u8(v)).collect();
        out.extend(lanczos_pass(&plane, h, w, ow, oh).into_iter().map(|v| v as f32 / 255.0));
    }
    Array::new(vec![n, c, oh, ow], out)
}

/// numpy's `clip(255 * x, 0, 255).astype(uint8)`: truncation (NaN becomes 0).
pub fn to_u8(v: f32) -> u8 {
    let x = (255.0 * v).clamp(0.0, 255.0);
    if x.is_nan() {
        0
    } else {
        x as u8
    }
}

// ---- bislerp --------------------------------------------------------------------------------

/// Per output index: (first source index, second source index, ratio), from ComfyUI's
/// bilinear interpolation of the coordinate ramps.
fn bislerp_coords(old: usize, new: usize) -> Vec<(usize, usize, f32)> {
    let scale = old as f32 / new as f32;
    (0..new)
        .map(|d| {
            let (i0, i1, l) = linear_index(d, scale, old);
            // coords_1 = interpolated ramp 0..old-1; coords_2 = ramp 1..old with the last clamped.
            let c1 = if i0 == i1 { i0 as f32 } else { (1.0 - l) * i0 as f32 + l * i1 as f32 };
            let ramp2 = |i: usize| if i + 1 < old { (i + 1) as f32 } else { (old - 1) as f32 };
            let (r0, r1) = (ramp2(i0), ramp2(i1));
            let c2 = if r0 == r1 { r0 } else { (1.0 - l) * r0 + l * r1 };
            (c1 as usize, c2 as usize, c1 - c1.floor())
        })
        .collect()
}

/// Slerp between two channel vectors (ComfyUI's `slerp`, including its edge cases).
fn slerp(b1: &[f32], b2: &[f32], r: f32, out: &mut [f32]) {
    let n1 = b1.iter().map(|x| x * x).sum::<f32>().sqrt();
    let n2 = b2.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norm = |v: f32, n: f32| if n == 0.0 { 0.0 } else { v / n };
    let dot: f32 = b1.iter().zip(b2).map(|(a, b)| norm(*a, n1) * norm(*b, n2)).sum();
    if dot > 1.0 - 1e-5 {
        out.copy_from_slice(b1);
        return;
    }
    if dot < 1e-5 - 1.0 {
        for ((o, a), b) in out.iter_mut().zip(b1).zip(b2) {
            *o = a * (1.0 - r) + b * r;
        }
        return;
    }
    let omega = dot.acos();
    let so = omega.sin();
    let w1 = ((1.0 - r) * omega).sin() / so;
    let w2 = (r * omega).sin() / so;
    let mag = n1 * (1.0 - r) + n2 * r;
    for ((o, a), b) in out.iter_mut().zip(b1).zip(b2) {
        *o = (w1 * norm(*a, n1) + w2 * norm(*b, n2)) * mag;
    }
}

/// ComfyUI's `bislerp`: slerp along width, then along height.
fn bislerp(s: &Array, ow: usize, oh: usize) -> Array {
    let (n, c, h, w) = s.dims4();
    let at = |a: &Array, b: usize, ch: usize, y: usize, x: usize, hh: usize, ww: usize| {
        a.data[((b * c + ch) * hh + y) * ww + x]
    };
    let mut v1 = vec![0f32; c];
    let mut v2 = vec![0f32; c];
    let mut res = vec![0f32; c];
    // Pass 1: width.
    let cx = bislerp_coords(w, ow);
    let mut mid = Array::full(vec![n, c, h, ow], 0.0);
    for b in 0..n {
        for y in 0..h {
            for (x, &(x1, x2, r)) in cx.iter().enumerate() {
                for ch in 0..c {
                    v1[ch] = at(s, b, ch, y, x1, h, w);
                    v2[ch] = at(s, b, ch, y, x2, h, w);
                }
                slerp(&v1, &v2, r, &mut res);
                for ch in 0..c {
                    mid.data[((b * c + ch) * h + y) * ow + x] = res[ch];
                }
            }
        }
    }
    // Pass 2: height.
    let cy = bislerp_coords(h, oh);
    let mut out = Array::full(vec![n, c, oh, ow], 0.0);
    for b in 0..n {
        for (y, &(y1, y2, r)) in cy.iter().enumerate() {
            for x in 0..ow {
                for ch in 0..c {
                    v1[ch] = at(&mid, b, ch, y1, x, h, ow);
                    v2[ch] = at(&mid, b, ch, y2, x, h, ow);
                }
                slerp(&v1, &v2, r, &mut res);
                for ch in 0..c {
                    out.data[((b * c + ch) * oh + y) * ow + x] = res[ch];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(h: usize, w: usize, v: &[f32]) -> Array {
        Array::new(vec![1, 1, h, w], v.to_vec())
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn nearest_exact_upscales_2x3_to_4x6() {
        let s = plane(2, 3, &[1., 2., 3., 4., 5., 6.]);
        let o = common_upscale(&s, 6, 4, Method::NearestExact, false).unwrap();
        close(&o.data[..6], &[1., 1., 2., 2., 3., 3.]);
        close(&o.data[18..], &[4., 4., 5., 5., 6., 6.]);
        // Downscale 3 -> 2 columns: src = floor((d+0.5)*1.5) = 0, 2.
        let o = common_upscale(&s, 2, 2, Method::NearestExact, false).unwrap();
        close(&o.data, &[1., 3., 4., 6.]);
    }

    #[test]
    fn bilinear_matches_torch() {
        // torch: F.interpolate([[[[0,1],[2,3]]]], size=(3,3), mode="bilinear") =
        // src = 2/3*(d+0.5)-0.5 = -1/6 (->0), 0.5, 7/6 (->1, clamped neighbour).
        let s = plane(2, 2, &[0., 1., 2., 3.]);
        let o = common_upscale(&s, 3, 3, Method::Bilinear, false).unwrap();
        close(&o.data, &[0., 0.5, 1., 1., 1.5, 2., 2., 2.5, 3.]);
        // 1x4 -> 1x2: src = 2*(d+0.5)-0.5 = 0.5, 2.5
        let s = plane(1, 4, &[0., 1., 2., 3.]);
        let o = common_upscale(&s, 2, 1, Method::Bilinear, false).unwrap();
        close(&o.data, &[0.5, 2.5]);
    }

    #[test]
    fn area_is_adaptive_average_pool() {
        let s = plane(1, 3, &[1., 2., 6.]);
        // out 2: windows [0,2) and [1,3)
        let o = common_upscale(&s, 2, 1, Method::Area, false).unwrap();
        close(&o.data, &[1.5, 4.0]);
        let s = plane(2, 2, &[1., 2., 3., 4.]);
        let o = common_upscale(&s, 1, 1, Method::Area, false).unwrap();
        close(&o.data, &[2.5]);
    }

    #[test]
    fn bicubic_matches_hand_computed() {
        // 1x4 -> 1x2: real = 2*(d+0.5)-0.5 = 0.5 and 2.5, t = 0.5,
        // weights(A=-0.75, t=.5) = [-0.09375, 0.59375, 0.59375, -0.09375].
        let w = cubic_weights(0.5);
        close(&w, &[-0.09375, 0.59375, 0.59375, -0.09375]);
        let s = plane(1, 4, &[0., 1., 4., 9.]);
        let o = common_upscale(&s, 2, 1, Method::Bicubic, false).unwrap();
        // d=0: taps idx -1,0,1,2 -> 0,0,1,4 ; d=1: taps 1,2,3,4 -> 1,4,9,9
        let e0 = -0.09375 * 0. + 0.59375 * 0. + 0.59375 * 1. - 0.09375 * 4.;
        let e1 = -0.09375 * 1. + 0.59375 * 4. + 0.59375 * 9. - 0.09375 * 9.;
        close(&o.data, &[e0, e1]);
        // Not clamped: overshoot possible.
        let s = plane(1, 2, &[0., 1.]);
        let o = common_upscale(&s, 4, 1, Method::Bicubic, false).unwrap();
        assert!(o.data[0] < 0.0);
    }

    #[test]
    fn center_crop_then_resize() {
        // 2x4 to a 1:1 target: x = round((4 - 4*(1/2))/2) = 1 -> columns 1..3.
        let s = plane(2, 4, &[1., 2., 3., 4., 5., 6., 7., 8.]);
        let o = common_upscale(&s, 2, 2, Method::NearestExact, true).unwrap();
        close(&o.data, &[2., 3., 6., 7.]);
        // 3x2 to a 2:1 target: y = round((3 - 3*(0.6667/2))/2) = round(1.0) = 1 -> row 1.
        let s = plane(3, 2, &[1., 2., 3., 4., 5., 6.]);
        let o = common_upscale(&s, 2, 1, Method::NearestExact, true).unwrap();
        close(&o.data, &[3., 4.]);
    }

    #[test]
    fn lanczos_identity_and_hand_computed() {
        // Same size: no pass runs; the uint8 round trip truncates.
        let s = plane(1, 2, &[0.5, 1.0]);
        let o = common_upscale(&s, 2, 1, Method::Lanczos, false).unwrap();
        close(&o.data, &[127. / 255., 1.0]);
        // 1x2 -> 1x1: scale 2, support 6, center 1: taps x=0,1 at (x-0.5)/2 = -0.25, 0.25:
        // equal weights 0.5 each -> (100 + 200)/2 = 150.
        let s = plane(1, 2, &[100.5 / 255., 200.5 / 255.]);
        let o = common_upscale(&s, 1, 1, Method::Lanczos, false).unwrap();
        close(&o.data, &[150. / 255.]);
        // Upscale 1x2 -> 1x4: output pixel 0 has center 0.25, taps x=0,1 at 0.25 and 1.25.
        let s = plane(1, 2, &[0.0, 1.0]);
        let o = common_upscale(&s, 4, 1, Method::Lanczos, false).unwrap();
        let (a, b) = (lanczos_filter(0.25), lanczos_filter(1.25));
        let k1 = ((b / (a + b)) * (1u64 << 22) as f64 + if b < 0.0 { -0.5 } else { 0.5 }) as i64;
        let expect = clip8((1 << 21) + 255 * k1);
        assert_eq!(o.data[0], expect as f32 / 255.);
        // Symmetric output.
        assert!((o.data[0] + o.data[3] - 1.0).abs() < 1.5 / 255.);
    }

    #[test]
    fn bislerp_keeps_equal_vectors_and_interpolates_norms() {
        // 2 channels, 1x2 -> 1x3. Columns: (1,0) and (0,2) (orthogonal).
        let s = Array::new(vec![1, 2, 1, 2], vec![1., 0., 0., 2.]);
        let o = bislerp(&s, 3, 1);
        // x=0: src -1/6 -> clamped 0: ratio 0 -> b1 = (1, 0).
        close(&[o.data[0], o.data[3]], &[1., 0.]);
        // x=1: ratio 0.5 between orthogonal unit vectors: w = sin(pi/4)/sin(pi/2), norm 1.5.
        let w = (std::f32::consts::FRAC_PI_4).sin();
        close(&[o.data[1], o.data[4]], &[w * 1.5, w * 1.5]);
        // x=2: at the last column -> (0, 2).
        close(&[o.data[2], o.data[5]], &[0., 2.]);
    }

    #[test]
    fn lanczos_matches_pillow() {
        // A 5x4 RGB image with bytes (i*37 + 11) % 256, resized by Pillow 13's
        // `Image.resize(size, LANCZOS)`; outputs are Pillow's bytes.
        let (w, h) = (5usize, 4usize);
        let bytes: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        // uint8 -> float such that the truncating conversion gives the same bytes back.
        let nhwc = Array::new(vec![1, h, w, 3], bytes.iter().map(|&b| (b as f32 + 0.5) / 255.0).collect());
        let src = nhwc.nhwc_to_nchw();
        let cases: [((usize, usize), &[u8]); 3] = [
            ((3, 2), &[83, 126, 143, 124, 105, 145, 162, 128, 106, 162, 143, 134, 142, 159, 129, 116, 140, 140]),
            (
                (2, 4),
                &[
                    105, 77, 129, 170, 142, 88, 83, 135, 172, 148, 94, 131, 141, 178, 110, 100, 137, 164, 184, 116,
                    143, 143, 170, 102,
                ],
            ),
            (
                (5, 9),
                &[
                    7, 44, 81, 118, 155, 181, 255, 10, 47, 84, 121, 158, 184, 255, 13, 15, 52, 89, 126, 162, 209, 206,
                    18, 55, 92, 129, 165, 212, 209, 21, 32, 69, 106, 143, 173, 245, 106, 35, 72, 109, 146, 176, 248,
                    109, 38, 57, 94, 131, 168, 208, 232, 12, 60, 97, 134, 171, 211, 235, 15, 63, 76, 113, 150, 187,
                    255, 133, 5, 79, 116, 153, 190, 255, 136, 8, 82, 94, 131, 168, 205, 253, 33, 57, 97, 134, 171, 208,
                    255, 36, 60, 100, 119, 156, 193, 230, 159, 20, 92, 122, 159, 196, 233, 162, 23, 95, 125, 136, 173,
                    210, 247, 59, 56, 103, 139, 176, 213, 250, 62, 59, 106, 142, 144, 181, 218, 255, 0, 84, 110, 147,
                    184, 221, 255, 3, 87, 113, 150,
                ],
            ),
        ];
        for ((ow, oh), want) in cases {
            let out = common_upscale(&src, ow, oh, Method::Lanczos, false).unwrap().nchw_to_nhwc();
            let got: Vec<u8> = out.data.iter().map(|v| (v * 255.0).round() as u8).collect();
            assert_eq!(got, want, "size {ow}x{oh}");
        }
    }
}
