//! Memory-mapped safetensors checkpoints, the dtype policy and architecture detection.
//!
//! [`Checkpoint::open`] maps the file and parses only its JSON header; tensor data stays in the
//! page cache until a tensor is asked for ([`Checkpoint::tensor`]), when that one tensor is copied
//! and cast to the compute dtype (f32 on CPU). [`Checkpoint::var_builder`] wraps this as a
//! `candle_nn::VarBuilder` over a key prefix, so model constructors load weight by weight.
//!
//! [`Checkpoint::detect`] classifies the file the way ComfyUI does (see
//! `shared/spec/checkpoints.md` §3) and returns a [`ModelConfig`]: [`UnetConfig`] (for
//! `crate::unet`), [`VaeConfig`] (for `crate::vae`), [`TextEncoderConfig`]s (for `crate::clip`).
//!
//! Prefixes: UNet `model.diffusion_model.`, VAE `first_stage_model.` (a VAE-only file: no prefix,
//! see [`Checkpoint::detect_vae`]), text encoders as recorded in `TextEncoderConfig::prefix`.
//!
//! Typical use by a model constructor:
//! ```text
//! let ck = Arc::new(Checkpoint::open(path)?);
//! let cfg = ck.detect()?;                                   // ModelConfig
//! let vb = ck.var_builder(UNET_PREFIX, DType::F32, &device); // names relative to the prefix
//! // vb.pp("input_blocks").pp("0").pp("0").get((c, in, 3, 3), "weight") reads
//! // "model.diffusion_model.input_blocks.0.0.weight" as f32.
//! let (heads, head_dim) = cfg.unet.heads_for(channels).unwrap(); // SD1: 8 heads; SD2/SDXL: dim 64
//! // VAE (full checkpoint, or VAE-only file in LDM or diffusers layout), LDM names always:
//! let (vae_cfg, vae_vb) = ck.vae_var_builder(DType::F32, &device)?;
//! ```

pub mod config;
pub mod detect;
pub mod vae_keys;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use memmap2::Mmap;

pub use config::{
    Activation, ClipKind, ClipLayout, Family, HeadSpec, ModelConfig, Prediction, TextEncoderConfig,
    UnetConfig, VaeConfig,
};

use crate::error::{Error, Result};

/// Key prefix of the UNet in single-file checkpoints.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Key prefix of the VAE in single-file checkpoints.
pub const VAE_PREFIX: &str = "first_stage_model.";

/// Element type of a stored tensor (safetensors names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// bool, 1 byte.
    Bool,
    /// u8.
    U8,
    /// i8.
    I8,
    /// i16.
    I16,
    /// u16.
    U16,
    /// i32.
    I32,
    /// u32.
    U32,
    /// i64.
    I64,
    /// u64.
    U64,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// f32.
    F32,
    /// f64.
    F64,
    /// fp8 e4m3.
    F8E4M3,
    /// fp8 e5m2.
    F8E5M2,
}

impl StoredDtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "I16" => Self::I16,
            "U16" => Self::U16,
            "I32" => Self::I32,
            "U32" => Self::U32,
            "I64" => Self::I64,
            "U64" => Self::U64,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F32" => Self::F32,
            "F64" => Self::F64,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::BF16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }
}

/// Header entry of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Stored element type.
    pub dtype: StoredDtype,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub offsets: (usize, usize),
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A memory-mapped `.safetensors` file: header parsed, data untouched until asked for.
pub struct Checkpoint {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Largest header accepted (the safetensors crate's limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

impl Checkpoint {
    /// Maps `path` and parses the safetensors header. Pickle checkpoints (`.ckpt`, `.pt`,
    /// `.bin`), empty, truncated and corrupt files give an [`Error::Checkpoint`] naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| ckpt_err(path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| ckpt_err(path, format!("cannot stat: {e}")))?
            .len();
        if len == 0 {
            return Err(ckpt_err(
                path,
                "empty file (0 bytes), not a safetensors checkpoint",
            ));
        }
        let mut head = [0u8; 8];
        let n = read_up_to(&mut file, &mut head)
            .map_err(|e| ckpt_err(path, format!("cannot read: {e}")))?;
        const PICKLE: &str =
            "a PyTorch pickle/zip checkpoint (.ckpt/.pt/.bin); only .safetensors files are supported, convert it first";
        if head.starts_with(b"PK\x03\x04") {
            return Err(ckpt_err(path, PICKLE));
        }
        // A pickle starts with PROTO (0x80) and a protocol number; only call it one when the
        // bytes do not also read as a plausible safetensors header.
        let looks_pickle = n >= 2 && head[0] == 0x80 && (1..=5).contains(&head[1]);
        if looks_pickle
            && (n < 8 || {
                let hl = u64::from_le_bytes(head);
                hl > MAX_HEADER || 8 + hl > len || first_header_byte(&mut file)? != Some(b'{')
            })
        {
            return Err(ckpt_err(path, PICKLE));
        }
        if n < 8 {
            return Err(ckpt_err(
                path,
                format!(
                    "truncated: {len} bytes, shorter than the 8-byte safetensors header length"
                ),
            ));
        }
        let header_len = u64::from_le_bytes(head);
        if header_len > MAX_HEADER {
            return Err(ckpt_err(
                path,
                format!("not a safetensors file: header length field is {header_len} (file is {len} bytes)"),
            ));
        }
        if 8 + header_len > len {
            return Err(ckpt_err(
                path,
                format!(
                    "truncated: header needs {} bytes but the file has {len}",
                    8 + header_len
                ),
            ));
        }
        // SAFETY: the file is opened read-only; like every mmap user we rely on it not being
        // truncated underneath us while mapped.
        let mmap =
            unsafe { Mmap::map(&file) }.map_err(|e| ckpt_err(path, format!("cannot mmap: {e}")))?;
        let data_start = 8 + header_len as usize;
        let header = std::str::from_utf8(&mmap[8..data_start])
            .map_err(|_| ckpt_err(path, "corrupt safetensors header: not UTF-8"))?;
        let json: serde_json::Value = serde_json::from_str(header.trim_end()).map_err(|e| {
            ckpt_err(
                path,
                format!("corrupt safetensors header: invalid JSON ({e})"),
            )
        })?;
        let obj = json
            .as_object()
            .ok_or_else(|| ckpt_err(path, "corrupt safetensors header: not a JSON object"))?;
        let data_len = mmap.len() - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        metadata.insert(
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        );
                    }
                }
                continue;
            }
            let bad = |what: &str| {
                ckpt_err(
                    path,
                    format!("corrupt safetensors header: tensor {name:?}: {what}"),
                )
            };
            let dt = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad("no dtype"))?;
            let dtype =
                StoredDtype::parse(dt).ok_or_else(|| bad(&format!("unsupported dtype {dt}")))?;
            let shape = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("bad shape"))?;
            let offs = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
                .ok_or_else(|| bad("bad data_offsets"))?;
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad("shape overflows"))?;
            if offs.1 < offs.0 || offs.1 - offs.0 != numel * dtype.size() {
                return Err(bad(&format!(
                    "data_offsets {offs:?} do not match shape {shape:?} {dt}"
                )));
            }
            if offs.1 > data_len {
                return Err(ckpt_err(
                    path,
                    format!(
                        "truncated: tensor {name:?} ends at data byte {} but the file holds only {data_len} data bytes",
                        offs.1
                    ),
                ));
            }
            tensors.insert(
                name.clone(),
                TensorInfo {
                    dtype,
                    shape,
                    offsets: offs,
                },
            );
        }
        if tensors.is_empty() {
            return Err(ckpt_err(path, "safetensors file holds no tensors"));
        }
        tracing::debug!("opened {} ({} tensors)", path.display(), tensors.len());
        Ok(Checkpoint {
            path: path.to_path_buf(),
            mmap,
            data_start,
            tensors,
            metadata,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `__metadata__` entries of the header.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file has no tensors (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Header entry of `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|i| i.shape.as_slice())
    }

    /// Names starting with `prefix`.
    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tensors
            .range(prefix.to_string()..)
            .map(|(k, _)| k.as_str())
            .take_while(move |k| k.starts_with(prefix))
    }

    /// The stored little-endian bytes of `name` (borrowed from the mapping, no copy).
    pub fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| ckpt_err(&self.path, format!("missing tensor {name:?}")))?;
        let (a, b) = info.offsets;
        Ok((info, &self.mmap[self.data_start + a..self.data_start + b]))
    }

    /// Loads `name` as a tensor of `dtype` on `device` (copying and casting only this tensor).
    pub fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (info, bytes) = self.raw(name)?;
        let shape = Shape::from_dims(&info.shape);
        let t = match (info.dtype, dtype) {
            (StoredDtype::F16, DType::F32) => {
                let v: Vec<f32> = bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                    .collect();
                Tensor::from_vec(v, shape, device)?
            }
            (StoredDtype::BF16, DType::F32) => {
                let v: Vec<f32> = bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                    .collect();
                Tensor::from_vec(v, shape, device)?
            }
            (StoredDtype::F32, DType::F32) => {
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_vec(v, shape, device)?
            }
            (sd, _) => {
                let cd = match sd {
                    StoredDtype::U8 | StoredDtype::Bool => DType::U8,
                    StoredDtype::U32 => DType::U32,
                    StoredDtype::I16 => DType::I16,
                    StoredDtype::I32 => DType::I32,
                    StoredDtype::I64 => DType::I64,
                    StoredDtype::F16 => DType::F16,
                    StoredDtype::BF16 => DType::BF16,
                    StoredDtype::F32 => DType::F32,
                    StoredDtype::F64 => DType::F64,
                    StoredDtype::F8E4M3 => DType::F8E4M3,
                    other => {
                        return Err(ckpt_err(
                            &self.path,
                            format!("tensor {name:?}: dtype {other:?} is not supported"),
                        ))
                    }
                };
                Tensor::from_raw_buffer(bytes, cd, &info.shape, device)?.to_dtype(dtype)?
            }
        };
        Ok(t)
    }

    /// A `VarBuilder` over the keys starting with `prefix` (e.g. [`UNET_PREFIX`]): names asked
    /// for are `prefix + name`; each tensor is cast to `dtype` when fetched.
    pub fn var_builder(
        self: &Arc<Self>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_nn::VarBuilder<'static> {
        let backend = PrefixBackend {
            ckpt: Arc::clone(self),
            prefix: prefix.to_string(),
            diffusers_vae_levels: None,
        };
        candle_nn::VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// The VAE of this file (full checkpoint or VAE-only, LDM or diffusers layout) as a
    /// `VarBuilder` that always speaks LDM names (`encoder.down.0.block.0.norm1.weight`, ...),
    /// with its config.
    pub fn vae_var_builder(
        self: &Arc<Self>,
        dtype: DType,
        device: &Device,
    ) -> Result<(VaeConfig, candle_nn::VarBuilder<'static>)> {
        let (cfg, prefix) = self.detect_vae()?;
        let diffusers = vae_keys::is_diffusers_vae(self, &prefix);
        let backend = PrefixBackend {
            ckpt: Arc::clone(self),
            prefix,
            diffusers_vae_levels: diffusers.then_some(cfg.ch_mult.len()),
        };
        let vb = candle_nn::VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        Ok((cfg, vb))
    }

    /// Detects the model architecture (see [`detect::detect`]).
    pub fn detect(&self) -> Result<ModelConfig> {
        detect::detect(self)
    }

    /// Detects a VAE either inside a full checkpoint (`first_stage_model.`) or in a VAE-only file
    /// (no prefix, or `vae.`); returns its config and key prefix.
    pub fn detect_vae(&self) -> Result<(VaeConfig, String)> {
        detect::detect_vae(self)
    }

    /// Error helper naming this file.
    pub fn error(&self, message: impl Into<String>) -> Error {
        ckpt_err(&self.path, message)
    }
}

fn first_header_byte(f: &mut File) -> Result<Option<u8>> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(8))?;
    let mut b = [0u8; 1];
    let n = read_up_to(f, &mut b)?;
    Ok(if n == 1 { Some(b[0]) } else { None })
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// `candle_nn` backend that reads `prefix + name` from a [`Checkpoint`].
struct PrefixBackend {
    ckpt: Arc<Checkpoint>,
    prefix: String,
    /// `Some(levels)`: translate LDM VAE names to diffusers keys.
    diffusers_vae_levels: Option<usize>,
}

impl PrefixBackend {
    fn key(&self, name: &str) -> String {
        match self.diffusers_vae_levels {
            Some(levels) => vae_keys::diffusers_key(&self.ckpt, &self.prefix, levels, name),
            None => format!("{}{name}", self.prefix),
        }
    }
}

/// A stored tensor as the module wants it: as is when the shapes agree; reshaped when only
/// trailing 1-dims differ (VAE attention weights stored as linear `[C, C]` by diffusers where
/// the LDM module wants a 1x1 conv `[C, C, 1, 1]`: same data); else a shape error naming
/// `what()`.
pub(crate) fn fit_stored_shape(t: Tensor, s: Shape, what: impl FnOnce() -> String) -> candle_core::Result<Tensor> {
    if t.shape() == &s {
        return Ok(t);
    }
    if t.elem_count() == s.elem_count() && s.dims().iter().skip(t.rank()).all(|&d| d == 1) && s.dims().starts_with(t.dims()) {
        return t.reshape(s);
    }
    Err(candle_core::Error::UnexpectedShape { msg: what(), expected: s, got: t.shape().clone() }.bt())
}

impl candle_nn::var_builder::SimpleBackend for PrefixBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        fit_stored_shape(t, s, || format!("{}: tensor {}", self.ckpt.path.display(), self.key(name)))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let full = self.key(name);
        self.ckpt.tensor(&full, dtype, dev).map_err(|e| match e {
            Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.ckpt.contains(&self.key(name))
    }
}

#[cfg(test)]
pub(crate) mod tests;
