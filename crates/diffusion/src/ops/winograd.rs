//! 3×3, stride-1, pad-1 convolution by Winograd's minimal filtering F(2×2, 3×3) on F32 CPU
//! data (Lavin & Gray's formulation).
//!
//! Every 2×2 block of output pixels is computed from a 4×4 input tile with 16 products per
//! (input, output) channel pair instead of 36: the input tiles are transformed
//! (`V = Bᵀ d B`), the 3×3 kernels too (`U = G g Gᵀ`), then for each of the 16 tile
//! positions ξ one GEMM `M[ξ] = U[ξ] [O, C] · V[ξ] [C, tiles]` sums over the input channels,
//! and the output transform `Y = Aᵀ M A` gives the 2×2 pixels. The transforms only add,
//! subtract and halve, so the result differs from a direct convolution by a few rounding
//! errors. Work proceeds in bands of tile rows (all images of the batch in sequence) so
//! that the transformed buffers stay bounded; each step is split over the threads (input
//! channels, tile positions, output channels).

use super::cpu::{self, SharedMut};

/// Most elements of the transformed input and product buffers of one band (16 MiB; 4 MiB
/// and 64 MiB measured 10–30 % slower on the VAE's large layers).
pub(crate) const WINOGRAD_BUDGET: usize = 1 << 22;

/// Shapes of one convolution: `B` images of `C × H × W` into `O` channels (same `H × W`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
}

/// The 16 transformed kernels `U[ξ] [O, C]` of `weight [O, C, 3, 3]`, ξ-major, computed
/// on all threads.
fn transform_weights(weight: &[f32], o: usize, c: usize) -> Vec<f32> {
    let oc = o * c;
    let mut u = vec![0f32; 16 * oc];
    let threads = cpu::num_threads().clamp(1, oc.div_ceil(1 << 14).max(1));
    // blocks of LANES kernels, split over the threads
    let blocks = oc.div_ceil(LANES);
    let per = blocks.div_ceil(threads);
    let up = SharedMut(u.as_mut_ptr());
    cpu::parallel_for(threads, |t| {
        let mut blk = [[0f32; 16]; LANES];
        for bk in (t * per).min(blocks)..((t + 1) * per).min(blocks) {
            let k0 = bk * LANES;
            let n = LANES.min(oc - k0);
            transform_kernel_block(&weight[k0 * 9..(k0 + n) * 9], &mut blk);
            for xi in 0..16 {
                // SAFETY: thread `t` writes `U[ξ][k0..k0 + n]` of its own blocks only.
                let dst = unsafe { std::slice::from_raw_parts_mut(up.ptr().add(xi * oc + k0), n) };
                for (d, row) in dst.iter_mut().zip(blk.iter()) {
                    *d = row[xi];
                }
            }
        }
    });
    u
}

/// Kernels per block of [`transform_kernel_block`].
const LANES: usize = 64;

cpu::simd_fn! {
    /// `U = G g Gᵀ` of up to [`LANES`] 3×3 kernels `g` (9 values each) into `out[k][ξ]`.
    fn transform_kernel_block(g: &[f32], out: &mut [[f32; 16]; LANES]) {
        for (g, u) in g.chunks_exact(9).zip(out.iter_mut()) {
            // G g: 4 × 3
            let mut gg = [[0f32; 3]; 4];
            for col in 0..3 {
                let (g0, g1, g2) = (g[col], g[3 + col], g[6 + col]);
                gg[0][col] = g0;
                gg[1][col] = 0.5 * (g0 + g1 + g2);
                gg[2][col] = 0.5 * (g0 - g1 + g2);
                gg[3][col] = g2;
            }
            // (G g) Gᵀ: 4 × 4
            for (i, row) in gg.iter().enumerate() {
                let (h0, h1, h2) = (row[0], row[1], row[2]);
                u[i * 4] = h0;
                u[i * 4 + 1] = 0.5 * (h0 + h1 + h2);
                u[i * 4 + 2] = 0.5 * (h0 - h1 + h2);
                u[i * 4 + 3] = h2;
            }
        }
    }
}

cpu::simd_fn! {
    /// Input transform of one tile row of one channel: `rows[r]` are the 4 input rows (zero
    /// rows outside the image) as `even[j] = x[2j]`, `odd[j] = x[2j − 1]` (`tw + 1` each,
    /// zero outside); writes `V[ξ][tx]` at `v[ξ·ld + tx]` for the `tw` tiles.
    fn input_tile_row(even: &[f32], odd: &[f32], tw: usize, v: &mut [f32], ld: usize, scratch: &mut [f32]) {
        // column transform of each row: C_r[j][tx]
        let (cs, _) = scratch.split_at_mut(16 * tw);
        for r in 0..4 {
            let e = &even[r * (tw + 1)..(r + 1) * (tw + 1)];
            let od = &odd[r * (tw + 1)..(r + 1) * (tw + 1)];
            let (c0, rest) = cs[r * 4 * tw..(r + 1) * 4 * tw].split_at_mut(tw);
            let (c1, rest) = rest.split_at_mut(tw);
            let (c2, c3) = rest.split_at_mut(tw);
            for tx in 0..tw {
                let (x0, x1, x2, x3) = (od[tx], e[tx], od[tx + 1], e[tx + 1]);
                c0[tx] = x0 - x2;
                c1[tx] = x1 + x2;
                c2[tx] = x2 - x1;
                c3[tx] = x1 - x3;
            }
        }
        // row transform: V[i·4 + j] from C_0..C_3 column j
        for j in 0..4 {
            let r0 = &cs[j * tw..(j + 1) * tw];
            let r1 = &cs[(4 + j) * tw..(5 + j) * tw];
            let r2 = &cs[(8 + j) * tw..(9 + j) * tw];
            let r3 = &cs[(12 + j) * tw..(13 + j) * tw];
            for tx in 0..tw {
                let (a, b, c, d) = (r0[tx], r1[tx], r2[tx], r3[tx]);
                v[j * ld + tx] = a - c;
                v[(4 + j) * ld + tx] = b + c;
                v[(8 + j) * ld + tx] = c - b;
                v[(12 + j) * ld + tx] = b - d;
            }
        }
    }
}

cpu::simd_fn! {
    /// Output transform of one tile row of one output channel: `m[ξ·ld + tx]` → the two
    /// output rows `y0`, `y1` (`2·tw` wide scratch rows), plus `bias`.
    fn output_tile_row(m: &[f32], ld: usize, tw: usize, bias: f32, y0: &mut [f32], y1: &mut [f32]) {
        for tx in 0..tw {
            let g = |xi: usize| m[xi * ld + tx];
            let s0 = [g(0) + g(4) + g(8), g(1) + g(5) + g(9), g(2) + g(6) + g(10), g(3) + g(7) + g(11)];
            let s1 = [g(4) - g(8) - g(12), g(5) - g(9) - g(13), g(6) - g(10) - g(14), g(7) - g(11) - g(15)];
            y0[2 * tx] = s0[0] + s0[1] + s0[2] + bias;
            y0[2 * tx + 1] = s0[1] - s0[2] - s0[3] + bias;
            y1[2 * tx] = s1[0] + s1[1] + s1[2] + bias;
            y1[2 * tx + 1] = s1[1] - s1[2] - s1[3] + bias;
        }
    }
}

/// `out [B, O, H, W] = conv3x3(x [B, C, H, W], weight [O, C, 3, 3], stride 1, pad 1) + bias`.
///
/// `x`, `weight` and `out` are contiguous; every element of `out` is written.
pub(crate) fn conv3x3(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: Shape, out: &mut [f32]) {
    conv3x3_budget(x, weight, bias, s, out, WINOGRAD_BUDGET)
}

/// [`conv3x3`] with an explicit band budget (elements of `V` + `M`).
pub(crate) fn conv3x3_budget(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: Shape,
    out: &mut [f32],
    budget: usize,
) {
    let Shape { b, c, h, w, o } = s;
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let u = transform_weights(weight, o, c);
    let threads = cpu::num_threads();
    // tile rows per band, over all images (global tile row g = image · th + ty)
    let total_rows = b * th;
    let per_row = 16 * tw * (c + o);
    let band = (budget / per_row.max(1)).clamp(1, total_rows.max(1));
    let ld_max = band * tw;
    let mut v = vec![0f32; 16 * c * ld_max];
    let mut m = vec![0f32; 16 * o * ld_max];
    let out_ptr = SharedMut(out.as_mut_ptr());
    let mut g0 = 0;
    while g0 < total_rows {
        let rows = band.min(total_rows - g0);
        let ld = rows * tw;
        // 1. input transform, channels split over the threads
        {
            let vp = SharedMut(v.as_mut_ptr());
            let per = c.div_ceil(threads);
            cpu::parallel_for(threads.min(c), |t| {
                let mut even = vec![0f32; 4 * (tw + 1)];
                let mut odd = vec![0f32; 4 * (tw + 1)];
                let mut scratch = vec![0f32; 16 * tw];
                let mut vt = vec![0f32; 16 * tw];
                for ch in (t * per).min(c)..((t + 1) * per).min(c) {
                    for k in 0..rows {
                        let g = g0 + k;
                        let (bi, ty) = (g / th, g % th);
                        let plane = &x[(bi * c + ch) * h * w..(bi * c + ch + 1) * h * w];
                        for r in 0..4 {
                            let e = &mut even[r * (tw + 1)..(r + 1) * (tw + 1)];
                            let od = &mut odd[r * (tw + 1)..(r + 1) * (tw + 1)];
                            let iy = (2 * ty + r) as isize - 1;
                            if iy < 0 || iy >= h as isize {
                                e.fill(0.0);
                                od.fill(0.0);
                                continue;
                            }
                            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                            for (j, ej) in e.iter_mut().enumerate() {
                                *ej = src.get(2 * j).copied().unwrap_or(0.0);
                            }
                            od[0] = 0.0;
                            for (j, oj) in od.iter_mut().enumerate().skip(1) {
                                *oj = src.get(2 * j - 1).copied().unwrap_or(0.0);
                            }
                        }
                        input_tile_row(&even, &odd, tw, &mut vt, tw, &mut scratch);
                        for (xi, src) in vt.chunks_exact(tw).enumerate() {
                            // SAFETY: thread `t` writes the columns of its own channels only,
                            // `V[ξ][ch][k·tw .. (k+1)·tw]`, inside `v` (16·c·ld elements).
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    src.as_ptr(),
                                    vp.ptr().add((xi * c + ch) * ld + k * tw),
                                    tw,
                                );
                            }
                        }
                    }
                }
            });
        }
        // 2. one GEMM per tile position, positions split over the threads
        {
            let mp = SharedMut(m.as_mut_ptr());
            let (u, v) = (&u, &v);
            let per = 16usize.div_ceil(threads);
            cpu::parallel_for(threads.min(16), |t| {
                for xi in (t * per).min(16)..((t + 1) * per).min(16) {
                    // SAFETY: M[ξ] (o × ld) belongs to this thread's ξ only; U[ξ] is o × c,
                    // V[ξ] c × ld, all row-major.
                    unsafe {
                        cpu::gemm_f32(
                            o,
                            ld,
                            c,
                            mp.ptr().add(xi * o * ld),
                            ld,
                            false,
                            cpu::Mat::rows(u.as_ptr().add(xi * o * c), c),
                            cpu::Mat::rows(v.as_ptr().add(xi * c * ld), ld),
                            gemm::Parallelism::None,
                        );
                    }
                }
            });
        }
        // 3. output transform, output channels split over the threads
        {
            let m = &m;
            let per = o.div_ceil(threads);
            cpu::parallel_for(threads.min(o), |t| {
                let mut y0 = vec![0f32; 2 * tw];
                let mut y1 = vec![0f32; 2 * tw];
                for oc in (t * per).min(o)..((t + 1) * per).min(o) {
                    let bval = bias.map(|bv| bv[oc]).unwrap_or(0.0);
                    for k in 0..rows {
                        let g = g0 + k;
                        let (bi, ty) = (g / th, g % th);
                        let ms = &m[oc * ld + k * tw..];
                        output_tile_row(ms, o * ld, tw, bval, &mut y0, &mut y1);
                        // SAFETY: thread `t` writes the planes of its output channels only.
                        let plane = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_ptr.ptr().add((bi * o + oc) * h * w),
                                h * w,
                            )
                        };
                        let oy = 2 * ty;
                        plane[oy * w..(oy + 1) * w].copy_from_slice(&y0[..w]);
                        if oy + 1 < h {
                            plane[(oy + 1) * w..(oy + 2) * w].copy_from_slice(&y1[..w]);
                        }
                    }
                }
            });
        }
        g0 += rows;
    }
}
