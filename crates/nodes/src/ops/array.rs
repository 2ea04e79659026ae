//! A plain row-major f32 array: the CPU working copy of a tensor for the pixel loops.
//!
//! Candle lacks several ops ComfyUI's nodes need (reflect padding, bicubic, area pooling), so
//! node maths runs on [`Array`] and converts back to a `Tensor` at the end.

use candle_core::{DType, Device, Tensor};
use comfy_graph::NodeError;

/// A dense f32 array with an explicit shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Maps a candle error to a node error.
pub fn tensor_err(e: candle_core::Error) -> NodeError {
    NodeError::internal(format!("tensor operation failed: {e}"))
}

impl Array {
    /// Wraps data; the length must equal the product of the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Array { shape, data }
    }

    /// An array filled with one value.
    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        Array { shape, data: vec![value; n] }
    }

    /// Copies a tensor (any dtype, any device) into an f32 array.
    pub fn from_tensor(t: &Tensor) -> Result<Self, NodeError> {
        let shape = t.dims().to_vec();
        let data = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(tensor_err)?;
        Ok(Array { shape, data })
    }

    /// A CPU tensor with this array's shape and data.
    pub fn to_tensor(&self) -> Result<Tensor, NodeError> {
        Tensor::from_vec(self.data.clone(), self.shape.clone(), &Device::Cpu).map_err(tensor_err)
    }

    /// Consumes the array into a CPU tensor.
    pub fn into_tensor(self) -> Result<Tensor, NodeError> {
        Tensor::from_vec(self.data, self.shape, &Device::Cpu).map_err(tensor_err)
    }

    pub fn dims4(&self) -> (usize, usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2], self.shape[3])
    }

    pub fn dims3(&self) -> (usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2])
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Array {
        Array { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// `[B,H,W,C]` -> `[B,C,H,W]` (torch `movedim(-1, 1)`).
    pub fn nhwc_to_nchw(&self) -> Array {
        let (b, h, w, c) = self.dims4();
        let mut out = vec![0f32; self.data.len()];
        for bi in 0..b {
            for y in 0..h {
                for x in 0..w {
                    for ci in 0..c {
                        out[((bi * c + ci) * h + y) * w + x] = self.data[((bi * h + y) * w + x) * c + ci];
                    }
                }
            }
        }
        Array::new(vec![b, c, h, w], out)
    }

    /// `[B,C,H,W]` -> `[B,H,W,C]` (torch `movedim(1, -1)`).
    pub fn nchw_to_nhwc(&self) -> Array {
        let (b, c, h, w) = self.dims4();
        let mut out = vec![0f32; self.data.len()];
        for bi in 0..b {
            for ci in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out[((bi * h + y) * w + x) * c + ci] = self.data[((bi * c + ci) * h + y) * w + x];
                    }
                }
            }
        }
        Array::new(vec![b, h, w, c], out)
    }

    /// The elements of batch entries `[start, start+len)` along the first axis.
    pub fn batch_slice(&self, start: usize, len: usize) -> Array {
        let per: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Array::new(shape, self.data[start * per..(start + len) * per].to_vec())
    }

    /// Concatenates along the first axis (the other dims must match).
    pub fn concat_batch(parts: &[&Array]) -> Array {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Array::new(shape, data)
    }

    /// ComfyUI's `repeat_to_batch_size`: truncate or tile along the first axis to `batch`.
    pub fn repeat_to_batch(&self, batch: usize) -> Array {
        let b = self.shape[0];
        if b == batch || b == 0 {
            return self.clone();
        }
        if b > batch {
            return self.batch_slice(0, batch);
        }
        let per: usize = self.shape[1..].iter().product();
        let mut data = Vec::with_capacity(batch * per);
        for i in 0..batch {
            let src = i % b;
            data.extend_from_slice(&self.data[src * per..(src + 1) * per]);
        }
        let mut shape = self.shape.clone();
        shape[0] = batch;
        Array::new(shape, data)
    }

    /// Tiles the whole array `times` times along the first axis (torch `repeat((n,1,..))`).
    pub fn tile_batch(&self, times: usize) -> Array {
        let mut shape = self.shape.clone();
        shape[0] *= times;
        let mut data = Vec::with_capacity(self.data.len() * times);
        for _ in 0..times {
            data.extend_from_slice(&self.data);
        }
        Array::new(shape, data)
    }

    /// Window `[y0, y0+h) x [x0, x0+w)` of the last two axes (all leading axes kept).
    pub fn crop_last2(&self, y0: usize, x0: usize, h: usize, w: usize) -> Array {
        let n = self.shape.len();
        let (sh, sw) = (self.shape[n - 2], self.shape[n - 1]);
        let lead: usize = self.shape[..n - 2].iter().product();
        let mut data = Vec::with_capacity(lead * h * w);
        for l in 0..lead {
            for y in y0..y0 + h {
                let row = (l * sh + y) * sw;
                data.extend_from_slice(&self.data[row + x0..row + x0 + w]);
            }
        }
        let mut shape = self.shape.clone();
        shape[n - 2] = h;
        shape[n - 1] = w;
        Array::new(shape, data)
    }
}

/// Python's `round()` (half to even) for the size computations ComfyUI does in Python floats.
pub fn py_round(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        // Ties go to the even neighbour.
        let f = x.floor();
        if (f as i64) % 2 == 0 {
            f as i64
        } else {
            f as i64 + 1
        }
    } else {
        r as i64
    }
}

/// Python-style slice bounds `[start, start+len)` clipped to `0..n`: returns (start, len).
pub fn clip_range(start: usize, len: usize, n: usize) -> (usize, usize) {
    let s = start.min(n);
    let e = start.saturating_add(len).min(n);
    (s, e - s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(-0.5), 0);
        assert_eq!(py_round(2.4), 2);
        assert_eq!(py_round(2.6), 3);
    }

    #[test]
    fn layout_roundtrip_and_tensor() {
        let a = Array::new(vec![1, 2, 3, 2], (0..12).map(|x| x as f32).collect());
        let p = a.nhwc_to_nchw();
        assert_eq!(p.shape, vec![1, 2, 2, 3]);
        assert_eq!(&p.data[..6], &[0., 2., 4., 6., 8., 10.]);
        assert_eq!(p.nchw_to_nhwc(), a);
        let t = a.to_tensor().unwrap();
        assert_eq!(Array::from_tensor(&t).unwrap(), a);
    }

    #[test]
    fn repeat_and_crop() {
        let a = Array::new(vec![2, 1, 2], vec![1., 2., 3., 4.]);
        assert_eq!(a.repeat_to_batch(3).data, vec![1., 2., 3., 4., 1., 2.]);
        assert_eq!(a.repeat_to_batch(1).data, vec![1., 2.]);
        assert_eq!(a.crop_last2(0, 1, 1, 1).data, vec![2., 4.]);
    }
}
