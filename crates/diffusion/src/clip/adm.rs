//! SDXL's ADM vector `y` (`comfy.model_base.SDXL.encode_adm` / `SDXLRefiner.encode_adm`).
//!
//! `y = concat(pooled_G, E(height), E(width), E(crop_h), E(crop_w), E(target_height), E(target_width))`
//! (2816 for 1280-wide pooled outputs); the refiner replaces the targets by `E(aesthetic_score)`
//! (2560). `E` is the 256-wide sinusoidal embedding, cosines first.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// `exp(-ln(10000) * i / 128)` for i < 128 as torch's float32 `exp` computes it (three entries
/// are one ulp away from the correctly rounded value; using torch's values makes `E(t)` match
/// ComfyUI's to within one ulp of cos/sin).
const FREQS_256: [u32; 128] = [
    0x3f800000, 0x3f6e39f8, 0x3f5dafd6, 0x3f4e4bac, 0x3f3ff911, 0x3f32a506, 0x3f263de0, 0x3f1ab32b,
    0x3f0ff59a, 0x3f05f6ee, 0x3ef953ce, 0x3ee80460, 0x3ed7e89a, 0x3ec8eb24, 0x3ebaf81b, 0x3eadfcff,
    0x3ea1e89b, 0x3e96aaea, 0x3e8c3503, 0x3e827908, 0x3e72d422, 0x3e61f836, 0x3e5247ed, 0x3e43ae7c,
    0x3e361887, 0x3e297409, 0x3e1db03f, 0x3e12bd90, 0x3e088d77, 0x3dfe24df, 0x3dec7fd5, 0x3ddc1464,
    0x3dcccccc, 0x3dbe94c7, 0x3db15978, 0x3da50957, 0x3d99940d, 0x3d8eea6c, 0x3d84fe4c, 0x3d778511,
    0x3d6655c1, 0x3d5657e3, 0x3d477640, 0x3d399d18, 0x3d2cba16, 0x3d20bc1b, 0x3d159348, 0x3d0b30cb,
    0x3d0186e2, 0x3cf11177, 0x3ce054d1, 0x3cd0c1a8, 0x3cc2434e, 0x3cb4c691, 0x3ca83989, 0x3c9c8b96,
    0x3c91ad39, 0x3c879009, 0x3c7c4d30, 0x3c6ac8e6, 0x3c5a7bf1, 0x3c4b50b5, 0x3c3d330e, 0x3c301050,
    0x3c23d70a, 0x3c187706, 0x3c0de12e, 0x3c040777, 0x3bf5b9ad, 0x3be4aa45, 0x3bd4ca15, 0x3bc6040a,
    0x3bb8449a, 0x3bab7982, 0x3b9f91cc, 0x3b947daf, 0x3b8a2e75, 0x3b80967c, 0x3b6f520d, 0x3b5eb47a,
    0x3b4f3e33, 0x3b40dac2, 0x3b33770d, 0x3b270153, 0x3b1b690d, 0x3b109ed8, 0x3b06946d, 0x3afa78f0,
    0x3ae91528, 0x3ad8e675, 0x3ac9d759, 0x3abbd3eb, 0x3aaec98e, 0x3aa2a6f7, 0x3a975c0b, 0x3a8cd9d9,
    0x3a83126e, 0x3a73f1a2, 0x3a6301e3, 0x3a533f24, 0x3a44948a, 0x3a36ee9d, 0x3a2a3b44, 0x3a1e69a2,
    0x3a136a14, 0x3a092e01, 0x39ff4fac, 0x39ed95e4, 0x39dd1721, 0x39cdbd93, 0x39bf74d6, 0x39b229fb,
    0x39a5cb61, 0x399a48a0, 0x398f9275, 0x39859aa4, 0x3978a80d, 0x3967648c, 0x395753e2, 0x394860c0,
    0x393a7753, 0x392d852a, 0x39217919, 0x39164326, 0x390bd46d, 0x39021f28, 0x38f22cdd, 0x38e15c8e,
];

/// The 128 frequencies of [`timestep_embedding_256`].
pub fn freqs_256() -> [f32; 128] {
    FREQS_256.map(f32::from_bits)
}

/// `timestep_embedding(t, 256)` (ComfyUI `Timestep(256)`): `[cos(t·f_0..127), sin(t·f_0..127)]`
/// with `t·f` rounded to f32 as torch does, cos/sin correctly rounded.
pub fn timestep_embedding_256(t: f64) -> Vec<f32> {
    let t = t as f32;
    let args: Vec<f32> = freqs_256().iter().map(|&f| t * f).collect();
    let mut out: Vec<f32> = args.iter().map(|&a| (a as f64).cos() as f32).collect();
    out.extend(args.iter().map(|&a| (a as f64).sin() as f32));
    out
}

/// Size conditioning of one SDXL base cond (`width`/`height` default to the latent size × 8,
/// crops to 0, targets to the size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdxlSize {
    /// Original image width.
    pub width: f64,
    /// Original image height.
    pub height: f64,
    /// Crop from the left.
    pub crop_w: f64,
    /// Crop from the top.
    pub crop_h: f64,
    /// Target width.
    pub target_width: f64,
    /// Target height.
    pub target_height: f64,
}

impl SdxlSize {
    /// What a plain `CLIPTextEncode` cond gets at sampling time for a `latent_w × latent_h`
    /// latent: size = latent × 8, no crop, target = size.
    pub fn from_latent(latent_w: usize, latent_h: usize) -> Self {
        let (w, h) = ((latent_w * 8) as f64, (latent_h * 8) as f64);
        SdxlSize {
            width: w,
            height: h,
            crop_w: 0.0,
            crop_h: 0.0,
            target_width: w,
            target_height: h,
        }
    }
}

fn adm_from_parts(pooled: &Tensor, values: &[f64]) -> Result<Tensor> {
    let pooled = pooled.to_dtype(candle_core::DType::F32)?;
    let (b, _) = pooled.dims2()?;
    let mut emb = Vec::with_capacity(values.len() * 256);
    for &v in values {
        emb.extend(timestep_embedding_256(v));
    }
    let n = emb.len();
    let e = Tensor::from_vec(emb, (1, n), &Device::Cpu)?
        .to_device(pooled.device())?
        .repeat((b, 1))?;
    Ok(Tensor::cat(&[&pooled, &e], 1)?)
}

/// SDXL base ADM vector for pooled outputs `[B, P]` → `[B, P + 1536]`.
pub fn sdxl_adm(pooled: &Tensor, size: &SdxlSize) -> Result<Tensor> {
    adm_from_parts(
        pooled,
        &[
            size.height,
            size.width,
            size.crop_h,
            size.crop_w,
            size.target_height,
            size.target_width,
        ],
    )
}

/// SDXL refiner ADM vector `[B, P + 1280]`; `aesthetic_score` defaults to 6.0 for positive and
/// 2.5 for negative conds in ComfyUI.
pub fn sdxl_refiner_adm(
    pooled: &Tensor,
    width: f64,
    height: f64,
    crop_w: f64,
    crop_h: f64,
    aesthetic_score: f64,
) -> Result<Tensor> {
    adm_from_parts(pooled, &[height, width, crop_h, crop_w, aesthetic_score])
}
