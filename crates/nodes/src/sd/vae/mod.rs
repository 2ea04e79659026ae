//! VAE nodes: decode/encode (plain, tiled, inpainting).

pub mod decode;
pub mod decode_tiled;
pub mod encode;
pub mod encode_for_inpaint;
pub mod encode_tiled;

use candle_core::Tensor;
use comfy_graph::{CancelToken, NodeError};

use crate::ops::Array;
use crate::sd::errors::candle_err;
use crate::sd::model::SdVae;

/// `VAE.decode`: latent `[B, C, h, w]` → IMAGE `[B, H, W, 3]`, one image at a time (bounded
/// memory; the interrupt flag is checked between images).
pub fn decode(vae: &SdVae, latent: &Tensor, cancel: &CancelToken) -> Result<Tensor, NodeError> {
    match vae {
        SdVae::Kl { vae, .. } => {
            let b = latent.dim(0).map_err(candle_err)?;
            let mut parts = Vec::with_capacity(b);
            for i in 0..b {
                cancel.check()?;
                let z = latent.narrow(0, i, 1).map_err(candle_err)?;
                parts.push(vae.decode_image(&z).map_err(candle_err)?);
            }
            Tensor::cat(&parts, 0).map_err(candle_err)
        }
        SdVae::PixelSpace => comfy_diffusion::vae::to_image(latent).map_err(candle_err),
        SdVae::Missing { .. } => Err(NodeError::internal("ERROR: VAE is invalid: None")),
    }
}

/// ComfyUI's `vae_encode_crop_pixels`: crops H and W down to multiples of `r`, centred.
pub fn crop_pixels(pixels: &Tensor, r: usize) -> Result<Tensor, NodeError> {
    let (_, h, w, _) = pixels.dims4().map_err(candle_err)?;
    let (ch, cw) = ((h / r) * r, (w / r) * r);
    let mut p = pixels.clone();
    if ch != h {
        p = p.narrow(1, (h % r) / 2, ch).map_err(candle_err)?;
    }
    if cw != w {
        p = p.narrow(2, (w % r) / 2, cw).map_err(candle_err)?;
    }
    Ok(p)
}

/// `VAE.encode`: IMAGE `[B, H, W, C]` → latent (posterior mean), cropped to the down-scale
/// factor, one image at a time.
pub fn encode(vae: &SdVae, pixels: &Tensor, cancel: &CancelToken) -> Result<Tensor, NodeError> {
    let p = crop_pixels(pixels, vae.downscale())?;
    match vae {
        SdVae::Kl { vae, .. } => {
            let b = p.dim(0).map_err(candle_err)?;
            let mut parts = Vec::with_capacity(b);
            for i in 0..b {
                cancel.check()?;
                let x = p.narrow(0, i, 1).map_err(candle_err)?;
                parts.push(vae.encode_image(&x).map_err(candle_err)?);
            }
            Tensor::cat(&parts, 0).map_err(candle_err)
        }
        SdVae::PixelSpace => comfy_diffusion::vae::from_image(&p).map_err(candle_err),
        SdVae::Missing { .. } => Err(NodeError::internal("ERROR: VAE is invalid: None")),
    }
}

/// An IMAGE input as a CPU f32 tensor.
pub fn image(t: &Tensor) -> Result<Tensor, NodeError> {
    Array::from_tensor(t)?.into_tensor()
}

