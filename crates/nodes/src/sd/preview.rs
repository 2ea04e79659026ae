//! Sampler previews: ComfyUI's `Latent2RGBPreviewer` (latent → RGB through the latent format's
//! 4×3 factor matrix), fitted into the preview square and JPEG-encoded (quality 95).

use candle_core::Tensor;
use comfy_graph::node::PreviewMethod;
use comfy_graph::NodeError;
use image::{ImageBuffer, Rgb};

use crate::ops::Array;
use crate::sd::model::PreviewFactors;

/// Preview square side (`--preview-size` default).
pub const PREVIEW_SIZE: u32 = 512;

/// Whether a preview method produces latent2rgb previews here. `taesd` falls back to
/// latent2rgb (no TAESD decoder is implemented), as ComfyUI does when the TAESD file is absent.
pub fn wants_preview(method: PreviewMethod) -> bool {
    !matches!(method, PreviewMethod::None)
}

/// `rgb[h,w,c] = Σ_k x0[0,k,h,w]·F[k][c] + b[c]` as float32, `[H, W, 3]` row-major.
pub fn latent_to_rgb_linear(x0: &Array, f: &PreviewFactors) -> Result<(usize, usize, Vec<f32>), NodeError> {
    if x0.shape.len() != 4 || x0.shape[1] < 4 {
        return Err(NodeError::internal(format!("preview: latent shape {:?} is not [B, 4, H, W]", x0.shape)));
    }
    let (_, c, h, w) = x0.dims4();
    let plane = h * w;
    let mut out = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        for ch in 0..3 {
            // F.linear: bias added after the dot product, products summed in channel order.
            let mut acc = 0f32;
            for (k, row) in f.factors.iter().enumerate().take(c.min(4)) {
                acc += x0.data[k * plane + p] * row[ch];
            }
            if let Some(b) = f.bias {
                acc += b[ch];
            }
            out.push(acc);
        }
    }
    Ok((h, w, out))
}

/// `trunc(clamp((v + 1) / 2, 0, 1) · 255)`.
pub fn to_preview_u8(v: f32) -> u8 {
    (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8
}

/// The uint8 RGB preview image of batch item 0 of a model-space x0 `[B, 4, h, w]`.
pub fn preview_rgb(x0: &Tensor, f: &PreviewFactors) -> Result<ImageBuffer<Rgb<u8>, Vec<u8>>, NodeError> {
    let b0 = x0.narrow(0, 0, 1).map_err(crate::sd::errors::candle_err)?;
    let a = Array::from_tensor(&b0)?;
    let (h, w, rgb) = latent_to_rgb_linear(&a, f)?;
    let bytes: Vec<u8> = rgb.iter().map(|v| to_preview_u8(*v)).collect();
    ImageBuffer::from_raw(w as u32, h as u32, bytes).ok_or_else(|| NodeError::internal("preview: bad image size"))
}

/// `ImageOps.contain(img, (size, size))` target size.
fn contain(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w == h {
        return (size, size);
    }
    if w > h {
        (size, ((h as f64 / w as f64) * size as f64).round().max(1.0) as u32)
    } else {
        (((w as f64 / h as f64) * size as f64).round().max(1.0) as u32, size)
    }
}

/// A JPEG preview frame for x0 (fitted into `size`², bilinear, quality 95).
pub fn preview_jpeg(x0: &Tensor, f: &PreviewFactors, size: u32) -> Result<Vec<u8>, NodeError> {
    let img = preview_rgb(x0, f)?;
    let (tw, th) = contain(img.width(), img.height(), size);
    let img = image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
    enc.encode_image(&img).map_err(|e| NodeError::internal(format!("preview JPEG encoding failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_keeps_aspect() {
        assert_eq!(contain(32, 32, 512), (512, 512));
        assert_eq!(contain(64, 32, 512), (512, 256));
        assert_eq!(contain(30, 60, 512), (256, 512));
    }

    #[test]
    fn jpeg_is_made() {
        let x0 = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let j = preview_jpeg(&x0, &crate::sd::model::SD15_PREVIEW, 64).unwrap();
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
    }
}
