//! F32 CPU kernels behind [`super`]'s fast paths: vectorised `exp`/GELU, a fused
//! multi-head attention (scores kept in cache, one block of queries at a time), GEMM with a
//! fused bias, and the helpers they share (threads, strided row views, runtime SIMD dispatch).
//!
//! Every public op of [`super`] checks "F32 on the CPU" before it comes here and falls back
//! to candle's generic ops for any other dtype or device.

use candle_core::Layout;

/// Worker threads for the CPU kernels: candle's setting (`RAYON_NUM_THREADS`, else the
/// available parallelism), at least 1.
pub(crate) fn num_threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// Runs `f(t)` for `t` in `0..threads`, `t = 0` on the calling thread and the others on
/// scoped threads.
pub(crate) fn parallel_for(threads: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 {
        f(0);
        return;
    }
    std::thread::scope(|s| {
        let f = &f;
        for t in 1..threads {
            s.spawn(move || f(t));
        }
        f(0);
    });
}

/// A raw pointer that may be shared by the threads of one kernel, each writing a disjoint
/// part of the buffer it points into.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: the kernels hand each thread disjoint elements (documented at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// A strided F32 matrix operand of [`gemm_f32`]: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    /// Row stride (elements).
    pub rs: usize,
    /// Column stride (elements).
    pub cs: usize,
}

impl Mat {
    /// A row-major matrix with rows `ld` elements apart.
    pub(crate) fn rows(ptr: *const f32, ld: usize) -> Self {
        Mat { ptr, rs: ld, cs: 1 }
    }
}

/// `dst = lhs · rhs` (`m×k` by `k×n`), or `dst += lhs · rhs` when `accumulate`, into the
/// row-major `dst` with rows `ld_dst` apart: gemm's call without its constant arguments.
///
/// # Safety
///
/// `dst` must hold `m` writable rows of `n` elements `ld_dst` apart (readable when
/// `accumulate`), and `lhs`/`rhs` address valid `m×k` / `k×n` elements through their strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ld_dst: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract. gemm computes dst = 1·dst + 1·lhs·rhs, reading dst only
    // when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ld_dst as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            1f32,
            1f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A tensor layout seen as `rows` rows of `row_len` contiguous elements, `row_stride`
/// apart, starting at `start` (a contiguous tensor, or one narrowed along its last
/// dimension such as `chunk2`'s halves). `None` for any other layout.
pub(crate) fn row_view(layout: &Layout) -> Option<(usize, usize, usize, usize)> {
    let dims = layout.dims();
    let stride = layout.stride();
    let start = layout.start_offset();
    if dims.is_empty() {
        return Some((start, 1, 1, 1));
    }
    let r = dims.len();
    let row_len = dims[r - 1];
    if row_len > 1 && stride[r - 1] != 1 {
        return None;
    }
    let rows: usize = dims[..r - 1].iter().product();
    if rows <= 1 {
        return Some((start, rows, row_len, row_len));
    }
    // the leading dimensions must collapse into one axis of uniform stride
    let mut row_stride = None;
    let mut expect = 0usize;
    for i in (0..r - 1).rev() {
        if dims[i] == 1 {
            continue;
        }
        match row_stride {
            None => {
                row_stride = Some(stride[i]);
                expect = stride[i] * dims[i];
            }
            Some(_) => {
                if stride[i] != expect {
                    return None;
                }
                expect *= dims[i];
            }
        }
    }
    let row_stride = row_stride.unwrap_or(row_len);
    if row_stride < row_len {
        return None;
    }
    Some((start, rows, row_len, row_stride))
}

/// `src [rows, cols]` row-major, transposed to `[cols, rows]` row-major (cache-blocked, on
/// all threads).
pub(crate) fn transpose<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
) -> Vec<T> {
    const B: usize = 32;
    let mut out = vec![T::default(); rows * cols];
    let col_blocks = cols.div_ceil(B);
    let threads = num_threads().clamp(1, col_blocks.max(1));
    let per = col_blocks.div_ceil(threads);
    // each thread writes the output rows (= source columns) of its column blocks
    std::thread::scope(|s| {
        let mut rest: &mut [T] = &mut out;
        for t in 0..threads {
            let c0 = (t * per * B).min(cols);
            let c1 = ((t + 1) * per * B).min(cols);
            let (part, tail) = rest.split_at_mut((c1 - c0) * rows);
            rest = tail;
            let mut work = move || {
                // one B × B tile at a time through a local buffer: rows read and written
                // contiguously
                let mut tile = [[T::default(); B]; B];
                for cb in (c0..c1).step_by(B) {
                    let ce = (cb + B).min(c1);
                    for rb in (0..rows).step_by(B) {
                        let re = (rb + B).min(rows);
                        for (r, trow) in (rb..re).zip(tile.iter_mut()) {
                            trow[..ce - cb].copy_from_slice(&src[r * cols + cb..r * cols + ce]);
                        }
                        for c in cb..ce {
                            let dst = &mut part[(c - c0) * rows + rb..(c - c0) * rows + re];
                            for (d, trow) in dst.iter_mut().zip(tile.iter()) {
                                *d = trow[c - cb];
                            }
                        }
                    }
                }
            };
            if t + 1 == threads {
                work();
            } else {
                s.spawn(work);
            }
        }
    });
    out
}

/// Defines `fn $name(args)` that runs the body compiled for AVX-512 or AVX2+FMA when the CPU
/// has them (checked at run time), else for the build's baseline. The body is plain Rust
/// written so that the compiler vectorises it.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// `e^x` for `x ≤ 88`, relative error ≈ 2 ULP (Cody–Waite reduction by ln 2 and a degree-7
/// polynomial); arguments below −87.3 give 0. Branch-free, so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.3);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    // the integer n sits in the low mantissa bits of t (no float→int conversion, which
    // would not vectorise with Rust's saturating `as`)
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients of e^r for |r| ≤ ln2/2 (truncation < 3e-9 relative)
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(ni.wrapping_add(127).wrapping_shl(23) as u32);
    let y = p * scale;
    if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// Exact (erf) GELU `x · Φ(x)`, written as `½·x·erfc(−x/√2)` with erfc from a Chebyshev
/// fit (fractional error < 1.2e-7) so that the negative tail keeps its relative accuracy.
#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    // Chebyshev coefficients of ln(erfc(z)·e^{z²}/t), highest order first
    const C: [f64; 10] = [
        0.170_872_77,
        -0.822_152_23,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ];
    let mut p = C[0] as f32;
    for c in &C[1..] {
        p = p * t + *c as f32;
    }
    // erfc(z) for z ≥ 0
    let e = t * exp_f32(p - z * z);
    let phi2 = if x >= 0.0 { 2.0 - e } else { e };
    0.5 * x * phi2
}

simd_fn! {
    /// `dst[i] = gelu(src[i])`.
    pub(crate) fn gelu_slice(src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = gelu_f32(s);
        }
    }
}

simd_fn! {
    /// `dst[i] = (src[i] − mean)·rstd·w[i] + b[i]` (one layer-norm row).
    pub(crate) fn norm_affine_row(src: &[f32], dst: &mut [f32], mean: f32, rstd: f32, w: &[f32], b: &[f32]) {
        for (((d, &s), &w), &b) in dst.iter_mut().zip(src).zip(w).zip(b) {
            *d = (s - mean) * rstd * w + b;
        }
    }
}

simd_fn! {
    /// `dst[i] = a[i] · gelu(g[i])` (the GEGLU feed-forward gate).
    pub(crate) fn geglu_slice(a: &[f32], g: &[f32], dst: &mut [f32]) {
        for ((d, &a), &g) in dst.iter_mut().zip(a).zip(g) {
            *d = a * gelu_f32(g);
        }
    }
}

simd_fn! {
    /// `dst[i] = silu(src[i])` (`x / (1 + e^−x)`).
    pub(crate) fn silu_slice(src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s / (1.0 + exp_f32(-s));
        }
    }
}

simd_fn! {
    /// `dst[i] = src[i]·scale + shift`, then SiLU when `silu` is set.
    pub(crate) fn affine_act_slice(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (d, &v) in dst.iter_mut().zip(src) {
                let y = v * scale + shift;
                *d = y / (1.0 + exp_f32(-y));
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * scale + shift;
            }
        }
    }
}

simd_fn! {
    /// Softmax numerators of one block of score rows, in place: every row `r` of `rows`
    /// rows of `len` becomes `exp((s − max_r)·scale)`, and `sums[r]` their sum (NaN in a
    /// row, or an infinite maximum, gives a NaN sum, as PyTorch's softmax gives NaN).
    fn softmax_numerators(s: &mut [f32], len: usize, scale: f32, sums: &mut [f32]) {
        for (row, sum) in s.chunks_mut(len).zip(sums.iter_mut()) {
            let mut m = [f32::NEG_INFINITY; 16];
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for (mi, &v) in m.iter_mut().zip(c) {
                    *mi = if v > *mi { v } else { *mi };
                }
            }
            let mut max = f32::NEG_INFINITY;
            for &v in chunks.remainder().iter().chain(m.iter()) {
                max = if v > max { v } else { max };
            }
            let mut acc = [0f32; 16];
            let mut chunks = row.chunks_exact_mut(16);
            for c in &mut chunks {
                for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
                    let e = exp_f32((*v - max) * scale);
                    *v = e;
                    *a += e;
                }
            }
            let mut tail = 0f32;
            for v in chunks.into_remainder() {
                let e = exp_f32((*v - max) * scale);
                *v = e;
                tail += e;
            }
            let mut total = 0f64;
            for a in acc {
                total += a as f64;
            }
            *sum = (total + tail as f64) as f32;
        }
    }
}

simd_fn! {
    /// `softmax(x·scale)` of every row of `len` of `src` into `dst`.
    pub(crate) fn softmax_rows(src: &[f32], dst: &mut [f32], len: usize, scale: f32) {
        let mut sum = [0f32; 1];
        for (xr, yr) in src.chunks(len).zip(dst.chunks_mut(len)) {
            yr.copy_from_slice(xr);
            softmax_numerators(yr, len, scale, &mut sum);
            let inv = 1.0 / sum[0];
            for y in yr.iter_mut() {
                *y *= inv;
            }
        }
    }
}

/// Shapes of one [`attention`] call: `q [B, Tq, ·]`, `k`/`v` `[B, Tk, ·]`, `heads` heads of
/// `d` channels at column `h·d` of rows `q_rs`/`k_rs`/`v_rs` elements apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub d: usize,
    pub q_rs: usize,
    pub k_rs: usize,
    pub v_rs: usize,
}

/// Bytes of scores per block of queries and thread. Larger blocks amortise the packing
/// of `k` and `v` inside the GEMMs over more queries; past a few MiB nothing is gained
/// (measured on a 2-core AVX-512 machine at 4096 tokens: 1 MiB ≈ 15 % slower than 4 MiB,
/// 8 MiB ≈ 4 % faster, 16 MiB no faster).
const SCORE_BLOCK_BYTES: usize = 8 << 20;

/// Multi-head attention `softmax(q kᵀ·scale) v` per head, written into `out [B, Tq, H·D]`.
///
/// The work is split into (batch, head, block of queries) items shared by the threads;
/// each item computes its block of scores (at most [`SCORE_BLOCK_BYTES`]) with one GEMM
/// into a per-thread buffer, exponentiates it in place (softmax numerators), multiplies by `v` straight
/// into `out` and divides each output row by its sum. Heads are read in place from the
/// `[B, T, H·D]` projections (no head split/merge copies); every element of `out` is
/// written once.
///
/// # Safety
///
/// `q`, `k`, `v` must hold the rows the shape describes and `out` must point to
/// `B·Tq·H·D` writable elements.
pub(crate) unsafe fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: *mut f32,
    s: AttnShape,
    scale: f32,
) {
    let AttnShape {
        b,
        tq,
        tk,
        heads,
        d,
        q_rs,
        k_rs,
        v_rs,
    } = s;
    let inner = heads * d;
    if b == 0 || tq == 0 || heads == 0 || d == 0 {
        return;
    }
    let qb = (SCORE_BLOCK_BYTES / 4 / tk.max(1)).clamp(16, 512).min(tq);
    let blocks = tq.div_ceil(qb);
    let items = b * heads * blocks;
    let threads = num_threads().min(items).max(1);
    let out = SharedMut(out);
    let per = items.div_ceil(threads);
    parallel_for(threads, |t| {
        let out = out.ptr();
        let mut scores = vec![0f32; qb * tk];
        let mut sums = vec![0f32; qb];
        for item in t * per..((t + 1) * per).min(items) {
            let blk = item % blocks;
            let h = (item / blocks) % heads;
            let bi = item / (blocks * heads);
            let q0 = blk * qb;
            let m = qb.min(tq - q0);
            let qp = q[(bi * tq + q0) * q_rs + h * d..].as_ptr();
            let kp = k[bi * tk * k_rs + h * d..].as_ptr();
            let vp = v[bi * tk * v_rs + h * d..].as_ptr();
            let sp = scores.as_mut_ptr();
            // SAFETY (all three blocks): pointers and strides stay inside the rows described
            // by `s` (checked by the caller); `out` rows `q0..q0+m` of head `h` of batch
            // `bi` belong to this item only.
            unsafe {
                // scores[i, j] = q[i, :] · k[j, :]
                gemm_f32(m, tk, d, sp, tk, false, Mat::rows(qp, q_rs), Mat { ptr: kp, rs: 1, cs: k_rs }, gemm::Parallelism::None);
            }
            softmax_numerators(&mut scores[..m * tk], tk, scale, &mut sums[..m]);
            let op = unsafe { out.add((bi * tq + q0) * inner + h * d) };
            unsafe {
                // out[i, :] = Σ_j e[i, j] · v[j, :]
                gemm_f32(m, d, tk, op, inner, false, Mat::rows(sp, tk), Mat::rows(vp, v_rs), gemm::Parallelism::None);
                for (i, &sum) in sums[..m].iter().enumerate() {
                    let inv = 1.0 / sum;
                    let row = std::slice::from_raw_parts_mut(op.add(i * inner), d);
                    for x in row {
                        *x *= inv;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "{worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn gelu_matches_erf_definition() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            // reference: candle's F64 erf GELU
            let want = candle_core::Tensor::new(&[x as f64], &candle_core::Device::Cpu)
                .unwrap()
                .gelu_erf()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[0];
            let got = gelu_f32(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-2));
            x += 0.0173;
        }
        assert!(worst < 1e-6, "{worst}");
    }

    #[test]
    fn row_view_of_narrowed_last_dim() {
        let t = candle_core::Tensor::zeros(
            (2, 3, 8),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let n = t.narrow(2, 4, 4).unwrap();
        assert_eq!(row_view(n.layout()), Some((4, 6, 4, 8)));
        assert_eq!(row_view(t.layout()), Some((0, 6, 8, 8)));
        let tt = t.transpose(1, 2).unwrap();
        assert_eq!(row_view(tt.layout()), None);
        let n0 = t.narrow(1, 1, 2).unwrap();
        // rows of batch 0 and 1 are not uniformly spaced
        assert_eq!(row_view(n0.layout()), None);
    }
}
