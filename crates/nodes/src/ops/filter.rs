//! Gaussian kernels and the reflect-padded depthwise convolution of ImageBlur/ImageSharpen.

use comfy_graph::NodeError;

use super::array::Array;

/// ComfyUI's `gaussian_kernel(k, sigma)`: `exp(-d²/(2σ²))` on a `linspace(-1, 1, k)` grid,
/// normalised to sum 1 (σ is relative to the kernel half-width). Row-major `k x k`.
pub fn gaussian_kernel(k: usize, sigma: f32) -> Vec<f32> {
    let lin = linspace(-1.0, 1.0, k);
    let mut g = Vec::with_capacity(k * k);
    for &x in &lin {
        for &y in &lin {
            let d = (x * x + y * y).sqrt();
            g.push((-(d * d) / (2.0 * sigma * sigma)).exp());
        }
    }
    let sum: f32 = g.iter().sum();
    g.iter().map(|v| v / sum).collect()
}

/// torch's `linspace` in f32 (the second half counted back from `end`).
fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - 1 - i) as f32 }).collect()
}

/// Convolves every channel of an `[B,H,W,C]` image with the `k x k` kernel (k = 2r+1) over a
/// reflect-padded copy (torch `F.pad(..., 'reflect')` then `conv2d`), output the input's size.
pub fn conv_reflect(img: &Array, kernel: &[f32], r: usize) -> Result<Array, NodeError> {
    let (b, h, w, c) = img.dims4();
    if r >= h || r >= w {
        return Err(NodeError::invalid_input(format!(
            "Padding size should be less than the corresponding input dimension, but got: padding ({r}, {r}) at dimension of input [{h}, {w}]"
        )));
    }
    let k = 2 * r + 1;
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let mut out = vec![0f32; img.data.len()];
    for bi in 0..b {
        for y in 0..h {
            for x in 0..w {
                for ci in 0..c {
                    let mut acc = 0f32;
                    for ky in 0..k {
                        let sy = reflect(y as i64 + ky as i64 - r as i64, h);
                        for kx in 0..k {
                            let sx = reflect(x as i64 + kx as i64 - r as i64, w);
                            acc += kernel[ky * k + kx] * img.data[((bi * h + sy) * w + sx) * c + ci];
                        }
                    }
                    out[((bi * h + y) * w + x) * c + ci] = acc;
                }
            }
        }
    }
    Ok(Array::new(img.shape.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_3x3_sigma1() {
        // Grid (-1,0,1)²: corners exp(-1), edges exp(-0.5), centre 1.
        let g = gaussian_kernel(3, 1.0);
        let (c, e, m) = ((-1f32).exp(), (-0.5f32).exp(), 1f32);
        let s = 4.0 * c + 4.0 * e + m;
        let expect = [c, e, c, e, m, e, c, e, c].map(|v| v / s);
        for (a, b) in g.iter().zip(expect) {
            assert!((a - b).abs() < 1e-7);
        }
        assert_eq!(linspace(-1.0, 1.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn reflect_conv_and_small_image_error() {
        // 1x3 rows can't be reflect-padded by 1 vertically with h = 1.
        let img = Array::new(vec![1, 1, 3, 1], vec![0., 1., 2.]);
        assert!(conv_reflect(&img, &[0.0; 9], 1).is_err());
        // 2x3 image, kernel picking the left neighbour: reflect gives x=-1 -> x=1.
        let img = Array::new(vec![1, 2, 3, 1], vec![1., 2., 3., 4., 5., 6.]);
        let mut k = [0f32; 9];
        k[3] = 1.0;
        let o = conv_reflect(&img, &k, 1).unwrap();
        assert_eq!(o.data, vec![2., 1., 2., 5., 4., 5.]);
    }
}
