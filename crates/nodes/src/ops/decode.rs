//! Opening input images as LoadImage does with Pillow: EXIF orientation applied, RGBA pixels,
//! and whether Pillow would see an alpha band.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use comfy_graph::{Folders, NodeError};
use image::{DynamicImage, ImageDecoder, ImageReader};
use sha2::{Digest, Sha256};

/// A decoded input image.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    /// RGBA8, row-major (transparency from palettes/tRNS applied, as Pillow's `convert("RGBA")`).
    pub rgba: Vec<u8>,
    /// Whether Pillow's image has an `A` band or is a palette image with transparency
    /// (LoadImage's mask rule); grey/RGB images with a tRNS colour key do not count.
    pub alpha_band: bool,
}

/// Resolves an input-file name (`x.png`, `sub/x.png`, `x.png [output]`) to an existing file.
pub fn input_path(folders: &Folders, name: &str, what: &str) -> Result<PathBuf, NodeError> {
    match folders.annotated_path(name) {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(NodeError::missing_model(format!("Invalid {what} file: {name}"))),
    }
}

/// SHA-256 hex of a file (ComfyUI's IS_CHANGED for LoadImage/LoadLatent).
pub fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

/// Decodes PNG or JPEG bytes with EXIF orientation applied.
pub fn decode(bytes: &[u8]) -> Result<Decoded, NodeError> {
    let bad = |e: image::ImageError| NodeError::invalid_input(format!("cannot identify image file: {e}"));
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| NodeError::invalid_input(e.to_string()))?;
    let mut decoder = reader.into_decoder().map_err(bad)?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let alpha_band = if bytes.starts_with(b"\x89PNG") { png_alpha_band(bytes) } else { img.color().has_alpha() };
    let (width, height) = (img.width() as usize, img.height() as usize);
    let rgba = match &img {
        // Pillow reads 16-bit RGB(A)/LA PNGs as 8-bit modes keeping the high byte.
        DynamicImage::ImageRgb16(b) => b.pixels().flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2]), 255]).collect(),
        DynamicImage::ImageRgba16(b) => b.pixels().flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2]), hi(p[3])]).collect(),
        DynamicImage::ImageLumaA16(b) => b.pixels().flat_map(|p| [hi(p[0]), hi(p[0]), hi(p[0]), hi(p[1])]).collect(),
        _ => img.to_rgba8().into_raw(),
    };
    Ok(Decoded { width, height, rgba, alpha_band })
}

fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Pillow's view of a PNG: an alpha band for RGBA/LA, or a palette with a tRNS chunk.
fn png_alpha_band(bytes: &[u8]) -> bool {
    let Ok(r) = png::Decoder::new(Cursor::new(bytes)).read_info() else { return false };
    let info = r.info();
    match info.color_type {
        png::ColorType::Rgba | png::ColorType::GrayscaleAlpha => true,
        png::ColorType::Indexed => info.trns.is_some(),
        _ => false,
    }
}
