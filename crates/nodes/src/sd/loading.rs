//! Building MODEL / CLIP / VAE values from files (through the resident-model cache).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use comfy_diffusion::checkpoint::detect::{detect_hf_clip, detect_openclip, detect_unet};
use comfy_diffusion::checkpoint::{
    Checkpoint, ClipKind, Family, HeadSpec, StoredDtype, TextEncoderConfig, UnetConfig, UNET_PREFIX, VAE_PREFIX,
};
use comfy_diffusion::clip::{ClipModel, ClipTextModel};
use comfy_diffusion::lora::{self, Fp8, KeyMap, PatchSet};
use comfy_diffusion::unet::UNetModel;
use comfy_diffusion::vae::Vae;
use comfy_graph::{ErrorCategory, Folders, NodeError};
use comfy_sampling::{ModelSampling, Prediction};

use crate::sd::cache;
use crate::sd::device::device;
use crate::sd::errors::{candle_err, diffusion_err, ensure_memory};
use crate::sd::model::{
    AdmKind, ClipOrigin, ClipPart, LoadedCheckpoint, SdClip, SdModel, SdVae, Source, UnetDenoiser, UnetOrigin,
    WeightStorage,
};

/// On the CPU an F16-stored UNet is widened to F32 (ComfyUI's CPU default, and the fastest
/// path: no per-op weight cast) when its F32 weights take at most this share of the memory
/// models may use ([`model_memory_budget`]); otherwise it stays F16 (cast per op, exact),
/// like `--fp16-unet`.
const F32_UNET_MEMORY_SHARE: f64 = 0.6;

/// The UNet weight dtype: on a GPU, or with a `--fp*-unet` flag, the device policy's
/// `unet_dtype` (F16 weights and F16 compute on a GPU); on the CPU F32, unless the weights
/// are stored as F16 and widening them would not fit in [`F32_UNET_MEMORY_SHARE`] of
/// `available`, the memory budget (then F16 storage; the maths is the same, each weight is cast to F32
/// for its op).
fn default_unet_dtype(stored_f16: bool, params: usize, available: Option<u64>) -> DType {
    if crate::sd::device::is_gpu() || crate::sd::device::precision_flags().unet.is_some() {
        return crate::sd::device::dtypes().unet;
    }
    let f32_bytes = (params as f64) * 4.0;
    match available {
        Some(avail) if stored_f16 && f32_bytes > avail as f64 * F32_UNET_MEMORY_SHARE => DType::F16,
        _ => DType::F32,
    }
}

/// The memory models may use: what the OS has available, or `--memory-cap` when lower.
fn model_memory_budget() -> Option<u64> {
    [crate::sd::errors::available_memory(), crate::sd::errors::memory_cap()].into_iter().flatten().min()
}

/// Resolves a model file name in `folder`, or the missing-model error ComfyUI raises.
pub fn model_path(folders: &Folders, folder: &str, name: &str) -> Result<PathBuf, NodeError> {
    folders
        .model_path(folder, name)
        .ok_or_else(|| NodeError::missing_model(format!("Model in folder '{folder}' with filename '{name}' not found.")))
}

/// Bytes the tensors under `prefix` take once loaded (`dtype` = None: as stored).
fn loaded_bytes(ck: &Checkpoint, prefix: &str, dtype: Option<DType>) -> u64 {
    ck.names_with_prefix(prefix)
        .filter_map(|n| ck.info(n))
        .map(|i| {
            let size = match dtype {
                Some(d) => d.size_in_bytes(),
                None => i.dtype.size(),
            };
            (i.numel() * size) as u64
        })
        .sum()
}

/// Loads a checkpoint's model, text encoders and VAE (uncached).
pub fn load_checkpoint_uncached(path: &Path, embedding_dirs: Vec<PathBuf>) -> Result<(LoadedCheckpoint, u64), NodeError> {
    let started = std::time::Instant::now();
    let ck = Arc::new(Checkpoint::open(path).map_err(diffusion_err)?);
    let cfg = ck.detect().map_err(|e| {
        NodeError::new(
            ErrorCategory::MissingModel,
            "RuntimeError",
            format!("ERROR: Could not detect model type of: {}\n{}", path.display(), diffusion_err(e)),
        )
    })?;
    let dev = device();
    let unet_params: usize = ck.names_with_prefix(UNET_PREFIX).filter_map(|n| ck.info(n)).map(|i| i.numel()).sum();
    let stored_f16 = ck
        .names_with_prefix(UNET_PREFIX)
        .filter_map(|n| ck.info(n))
        .filter(|i| i.dtype == StoredDtype::F16)
        .map(|i| i.numel())
        .sum::<usize>()
        * 2
        > unet_params;
    let unet_dtype = default_unet_dtype(stored_f16, unet_params, model_memory_budget());
    let te_dtype = crate::sd::device::dtypes().text_encoder;
    let te_bytes: u64 = cfg.text_encoders.iter().map(|t| loaded_bytes(&ck, &t.prefix, Some(te_dtype))).sum();
    let vae_dtype = crate::sd::device::dtypes().vae;
    let needed = loaded_bytes(&ck, UNET_PREFIX, Some(unet_dtype)) + loaded_bytes(&ck, VAE_PREFIX, Some(vae_dtype)) + te_bytes;
    ensure_memory(needed, &format!("checkpoint {}", path.display()))?;

    let unet = UNetModel::load(ck.var_builder(UNET_PREFIX, unet_dtype, &dev), &cfg.unet)
        .map_err(|e| {
            NodeError::new(ErrorCategory::MissingModel, "RuntimeError", format!("ERROR: Could not load the UNet of {}: {e}", path.display()))
        })?
        .with_compute_dtype(crate::sd::device::dtypes().unet_compute);
    let origin = Arc::new(UnetOrigin {
        file: ck.clone(),
        prefix: UNET_PREFIX.to_string(),
        config: cfg.unet.clone(),
        storage: WeightStorage::Plain(unet_dtype),
        patches: Arc::new(PatchSet::new()),
    });
    let prediction = match cfg.prediction {
        comfy_diffusion::checkpoint::Prediction::Eps => Prediction::Eps,
        comfy_diffusion::checkpoint::Prediction::V => Prediction::V,
    };
    let sampling = Arc::new(ModelSampling::discrete(prediction));
    let adm = match (cfg.family, cfg.unet.adm_in_channels) {
        (_, None) => AdmKind::None,
        (Family::SdxlRefiner, Some(_)) => AdmKind::SdxlRefiner,
        (_, Some(_)) => AdmKind::Sdxl,
    };
    let model = SdModel {
        net: Arc::new(UnetDenoiser { unet: Arc::new(unet), sampling: sampling.clone(), origin: Some(origin) }),
        family: cfg.family,
        sampling,
        adm,
        source: Some(Source { file: ck.clone(), prefixes: vec![UNET_PREFIX.to_string()] }),
    };
    let clip = if cfg.text_encoders.is_empty() {
        None
    } else {
        let m = ClipModel::load_with(&ck, &cfg, &dev, Some(te_dtype)).map_err(diffusion_err)?.with_embedding_dirs(embedding_dirs.clone());
        let prefixes = cfg.text_encoders.iter().map(|t| t.prefix.clone()).collect();
        let parts = cfg
            .text_encoders
            .iter()
            .map(|t| ClipPart { file: ck.clone(), config: t.clone(), patches: Arc::new(PatchSet::new()) })
            .collect();
        let origin = ClipOrigin { family: cfg.family, parts, embedding_dirs };
        Some(SdClip {
            model: Arc::new(m),
            layer_idx: None,
            source: Some(Source { file: ck.clone(), prefixes }),
            origin: Some(Arc::new(origin)),
        })
    };
    let vae = match &cfg.vae {
        Some(vc) => {
            let v = Vae::load(ck.var_builder(VAE_PREFIX, vae_dtype, &dev), vc).map_err(candle_err)?;
            SdVae::Kl { vae: Arc::new(v), source: Some(Source { file: ck.clone(), prefixes: vec![VAE_PREFIX.to_string()] }) }
        }
        None => SdVae::Missing { path: path.to_path_buf() },
    };
    tracing::info!(
        "loaded checkpoint {} ({}, unet {:?}) in {:.1}s",
        path.display(),
        cfg.family.name(),
        unet_dtype,
        started.elapsed().as_secs_f64()
    );
    Ok((LoadedCheckpoint { model, clip, vae }, needed))
}

/// `CheckpointLoaderSimple`'s loading: `ckpt_name` in `checkpoints`, cached.
pub fn load_checkpoint(folders: &Folders, ckpt_name: &str) -> Result<Arc<LoadedCheckpoint>, NodeError> {
    let path = model_path(folders, "checkpoints", ckpt_name)?;
    let emb = folders.model_folder("embeddings").map(|f| f.dirs.clone()).unwrap_or_default();
    cache::get_or_load("checkpoint", &path, ckpt_name, || load_checkpoint_uncached(&path, emb))
}

/// Loads a VAE file (a full checkpoint's `first_stage_model.*` or a VAE-only file), cached.
pub fn load_vae(folders: &Folders, vae_name: &str) -> Result<Arc<SdVae>, NodeError> {
    let path = model_path(folders, "vae", vae_name)?;
    cache::get_or_load("vae", &path, vae_name, || {
        let ck = Arc::new(Checkpoint::open(&path).map_err(diffusion_err)?);
        let (cfg, prefix) = ck.detect_vae().map_err(|e| {
            NodeError::new(ErrorCategory::MissingModel, "RuntimeError", format!("ERROR: VAE is invalid: {}", diffusion_err(e)))
        })?;
        let vae_dtype = crate::sd::device::dtypes().vae;
        let bytes = loaded_bytes(&ck, &prefix, Some(vae_dtype));
        ensure_memory(bytes, &format!("VAE {}", path.display()))?;
        let v = Vae::load(ck.var_builder(&prefix, vae_dtype, &device()), &cfg).map_err(|e| {
            NodeError::new(ErrorCategory::MissingModel, "RuntimeError", format!("ERROR: VAE is invalid: {}: {e}", path.display()))
        })?;
        Ok((SdVae::Kl { vae: Arc::new(v), source: Some(Source { file: ck.clone(), prefixes: vec![prefix] }) }, bytes))
    })
}

// ---------------------------------------------------------------------------------------------
// Diffusion-model-only files (UNETLoader)

/// `UNETLoader`'s `weight_dtype` choices.
pub const UNET_WEIGHT_DTYPES: [&str; 4] = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"];

/// Where the UNet keys of a diffusion-model file start: `model.diffusion_model.` (a whole
/// checkpoint) or nothing (a bare UNet state dict).
fn unet_prefix(ck: &Checkpoint) -> Option<&'static str> {
    [UNET_PREFIX, ""].into_iter().find(|p| ck.contains(&format!("{p}input_blocks.0.0.weight")))
}

/// Family, head layout and prediction of a bare UNet (ComfyUI's `model_config_from_unet` for
/// the SD families): SD1 (conv `proj_in`, no ADM), SD2 (linear, no ADM; v-prediction when
/// the std of `output_blocks.11.1.transformer_blocks.0.norm1.bias` exceeds 0.09), SDXL (ADM;
/// the refiner has context width 1280; a `v_pred` key selects v-prediction).
fn bare_unet_family(ck: &Checkpoint, prefix: &str, cfg: &mut UnetConfig) -> Result<(Family, Prediction), NodeError> {
    let family = match (cfg.adm_in_channels, cfg.use_linear_in_transformer) {
        (None, false) => Family::Sd1,
        (None, true) => Family::Sd2,
        (Some(_), _) if cfg.context_dim == 1280 => Family::SdxlRefiner,
        (Some(_), _) => Family::Sdxl,
    };
    cfg.heads = match family {
        Family::Sd1 => HeadSpec::Count(8),
        _ => HeadSpec::Dim(64),
    };
    let prediction = match family {
        Family::Sd2 if cfg.in_channels == 4 => {
            let name = format!("{prefix}output_blocks.11.1.transformer_blocks.0.norm1.bias");
            let std = if ck.contains(&name) {
                let v: Vec<f32> = ck
                    .tensor(&name, DType::F32, &Device::Cpu)
                    .map_err(diffusion_err)?
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(candle_err)?;
                let n = v.len().max(1) as f64;
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
                (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
            } else {
                0.0
            };
            if std > 0.09 {
                Prediction::V
            } else {
                Prediction::Eps
            }
        }
        Family::Sdxl if ck.contains("v_pred") => Prediction::V,
        _ => Prediction::Eps,
    };
    Ok((family, prediction))
}

/// Builds a UNet from `origin` (its file, prefix, config, storage and LoRA patches).
fn build_unet(origin: &UnetOrigin) -> Result<UNetModel, NodeError> {
    let (fp8, dtype) = match origin.storage {
        WeightStorage::Plain(d) => (None, d),
        WeightStorage::Fp8E4M3 => (Some(Fp8::E4M3Fn), DType::F32),
        WeightStorage::Fp8E5M2 => (Some(Fp8::E5M2), DType::F32),
    };
    let vb = lora::patched_var_builder(&origin.file, &origin.prefix, origin.patches.clone(), fp8, dtype, &device());
    UNetModel::load(vb, &origin.config)
        .map(|u| u.with_compute_dtype(crate::sd::device::dtypes().unet_compute))
        .map_err(|e| {
            NodeError::new(
                ErrorCategory::MissingModel,
                "RuntimeError",
                format!("ERROR: Could not load the UNet of {}: {e}", origin.file.path().display()),
            )
        })
}

/// Loads a diffusion-model-only file (`UNETLoader`), uncached.
pub fn load_unet_uncached(path: &Path, weight_dtype: &str) -> Result<(SdModel, u64), NodeError> {
    let ck = Arc::new(Checkpoint::open(path).map_err(diffusion_err)?);
    let undetected = || {
        NodeError::new(
            ErrorCategory::MissingModel,
            "RuntimeError",
            format!("ERROR: Could not detect model type of: {}", path.display()),
        )
    };
    let prefix = unet_prefix(&ck).ok_or_else(undetected)?;
    let mut config = detect_unet(&ck, prefix).map_err(|e| {
        NodeError::new(
            ErrorCategory::MissingModel,
            "RuntimeError",
            format!("ERROR: Could not detect model type of: {}\n{}", path.display(), diffusion_err(e)),
        )
    })?;
    let (family, prediction) = bare_unet_family(&ck, prefix, &mut config)?;
    let params: usize = ck.names_with_prefix(prefix).filter_map(|n| ck.info(n)).map(|i| i.numel()).sum();
    let f16_params: usize = ck
        .names_with_prefix(prefix)
        .filter_map(|n| ck.info(n))
        .filter(|i| i.dtype == StoredDtype::F16)
        .map(|i| i.numel())
        .sum();
    let storage = match weight_dtype {
        "default" => WeightStorage::Plain(default_unet_dtype(f16_params * 2 > params, params, model_memory_budget())),
        "fp8_e4m3fn" | "fp8_e4m3fn_fast" => WeightStorage::Fp8E4M3,
        "fp8_e5m2" => WeightStorage::Fp8E5M2,
        other => return Err(NodeError::invalid_input(format!("unknown weight_dtype '{other}'"))),
    };
    let bytes_per = match storage {
        WeightStorage::Plain(d) => d.size_in_bytes(),
        _ => 4,
    };
    let needed = (params * bytes_per) as u64;
    ensure_memory(needed, &format!("diffusion model {}", path.display()))?;
    let origin = Arc::new(UnetOrigin {
        file: ck.clone(),
        prefix: prefix.to_string(),
        config,
        storage,
        patches: Arc::new(PatchSet::new()),
    });
    let unet = build_unet(&origin)?;
    let sampling = Arc::new(ModelSampling::discrete(prediction));
    let adm = match (family, origin.config.adm_in_channels) {
        (_, None) => AdmKind::None,
        (Family::SdxlRefiner, Some(_)) => AdmKind::SdxlRefiner,
        (_, Some(_)) => AdmKind::Sdxl,
    };
    tracing::info!("loaded diffusion model {} ({}, {:?})", path.display(), family.name(), storage);
    let model = SdModel {
        net: Arc::new(UnetDenoiser { unet: Arc::new(unet), sampling: sampling.clone(), origin: Some(origin) }),
        family,
        sampling,
        adm,
        source: (prefix == UNET_PREFIX && weight_dtype == "default")
            .then(|| Source { file: ck.clone(), prefixes: vec![UNET_PREFIX.to_string()] }),
    };
    Ok((model, needed))
}

/// `UNETLoader`'s loading: `unet_name` in `diffusion_models` (`models/unet`,
/// `models/diffusion_models`), cached per weight dtype.
pub fn load_unet(folders: &Folders, unet_name: &str, weight_dtype: &str) -> Result<Arc<SdModel>, NodeError> {
    let path = model_path(folders, "diffusion_models", unet_name)?;
    let kind = match weight_dtype {
        "default" => "unet",
        "fp8_e4m3fn" | "fp8_e4m3fn_fast" => "unet-fp8_e4m3fn",
        "fp8_e5m2" => "unet-fp8_e5m2",
        other => return Err(NodeError::invalid_input(format!("unknown weight_dtype '{other}'"))),
    };
    cache::get_or_load(kind, &path, unet_name, || load_unet_uncached(&path, weight_dtype))
}

// ---------------------------------------------------------------------------------------------
// Text-encoder-only files (CLIPLoader, DualCLIPLoader)

/// One text encoder loaded from a standalone file.
#[derive(Clone)]
pub struct LoadedEncoder {
    /// The encoder.
    pub model: ClipTextModel,
    /// Its file and config.
    pub part: ClipPart,
}

/// The shortest `p` such that `ck` has a tensor named `p + suffix` (the outermost model).
fn shortest_prefix(ck: &Checkpoint, suffix: &str) -> Option<String> {
    ck.names().filter_map(|k| k.strip_suffix(suffix)).min_by_key(|p| p.len()).map(str::to_string)
}

/// Finds the text encoder in a standalone file: Hugging Face layout (`…text_model.` prefix,
/// possibly empty) or OpenCLIP layout (`…transformer.resblocks.`). The tower is told by depth
/// as ComfyUI does: a layer 30 means CLIP-G, a layer 22 CLIP-H, otherwise CLIP-L (OpenCLIP
/// layouts are never CLIP-L: CLIP-H below 30 layers).
pub fn detect_text_encoder(ck: &Checkpoint) -> Result<TextEncoderConfig, NodeError> {
    let bad = |msg: String| NodeError::new(ErrorCategory::MissingModel, "RuntimeError", msg);
    if let Some(prefix) = shortest_prefix(ck, "embeddings.token_embedding.weight") {
        let kind = if ck.contains(&format!("{prefix}encoder.layers.30.mlp.fc1.weight")) {
            ClipKind::G
        } else if ck.contains(&format!("{prefix}encoder.layers.22.mlp.fc1.weight")) {
            ClipKind::H
        } else {
            ClipKind::L
        };
        return detect_hf_clip(ck, &prefix, kind).map_err(|e| bad(diffusion_err(e).to_string()));
    }
    if let Some(prefix) = shortest_prefix(ck, "transformer.resblocks.0.ln_1.weight") {
        let kind = if ck.contains(&format!("{prefix}transformer.resblocks.30.mlp.c_fc.weight")) {
            ClipKind::G
        } else {
            ClipKind::H
        };
        return detect_openclip(ck, &prefix, kind).map_err(|e| bad(diffusion_err(e).to_string()));
    }
    Err(bad(format!(
        "ERROR: {} is not a CLIP text encoder comfy-rs can load (no CLIP-L/H/G text model keys)",
        ck.path().display()
    )))
}

/// Loads (cached) the text encoder of a file in `text_encoders` (`models/text_encoders`,
/// `models/clip`).
pub fn load_text_encoder(folders: &Folders, name: &str) -> Result<Arc<LoadedEncoder>, NodeError> {
    let path = model_path(folders, "text_encoders", name)?;
    cache::get_or_load("text_encoder", &path, name, || {
        let ck = Arc::new(Checkpoint::open(&path).map_err(diffusion_err)?);
        let config = detect_text_encoder(&ck)?;
        let storage = crate::sd::device::dtypes().text_encoder;
        let bytes = loaded_bytes(&ck, &config.prefix, Some(storage));
        ensure_memory(bytes, &format!("text encoder {}", path.display()))?;
        let model = ClipTextModel::load_with(&ck, &config, &device(), None, Some(storage)).map_err(diffusion_err)?;
        tracing::info!("loaded text encoder {} ({:?})", path.display(), config.kind);
        Ok((LoadedEncoder { model, part: ClipPart { file: ck.clone(), config, patches: Arc::new(PatchSet::new()) } }, bytes))
    })
}

/// A CLIP value from standalone encoders of `family` (ComfyUI order: CLIP-L before CLIP-G).
pub fn clip_from_encoders(folders: &Folders, family: Family, encoders: &[Arc<LoadedEncoder>]) -> Result<SdClip, NodeError> {
    let embedding_dirs = folders.model_folder("embeddings").map(|f| f.dirs.clone()).unwrap_or_default();
    let model = ClipModel::from_encoders(family, encoders.iter().map(|e| e.model.clone()).collect())
        .map_err(diffusion_err)?
        .with_embedding_dirs(embedding_dirs.clone());
    let origin = ClipOrigin { family, parts: encoders.iter().map(|e| e.part.clone()).collect(), embedding_dirs };
    Ok(SdClip { model: Arc::new(model), layer_idx: None, source: None, origin: Some(Arc::new(origin)) })
}

// ---------------------------------------------------------------------------------------------
// LoRA (LoraLoader, LoraLoaderModelOnly)

/// What applying a LoRA file produced.
pub struct LoraApplied {
    /// The patched model (`None` when no model was given).
    pub model: Option<SdModel>,
    /// The patched CLIP (`None` when no CLIP was given).
    pub clip: Option<SdClip>,
    /// Keys of the file neither the model nor the CLIP used (ComfyUI: `lora key not loaded`).
    pub not_loaded: Vec<String>,
}

/// Applies LoRA file `name` (in `loras`) to `model` with `strength_model` and to `clip` with
/// `strength_clip` (ComfyUI's `load_lora_for_models`): the LoRA's names are mapped onto the
/// model's and the CLIP's weights, the matching patches are added to those already applied,
/// and the networks are rebuilt from their files with every patch. The results are new
/// values; the inputs (and the resident cache) are untouched.
pub fn apply_lora(
    folders: &Folders,
    name: &str,
    model: Option<&SdModel>,
    clip: Option<&SdClip>,
    strength_model: f64,
    strength_clip: f64,
) -> Result<LoraApplied, NodeError> {
    let path = model_path(folders, "loras", name)?;
    let file = Checkpoint::open(&path).map_err(diffusion_err)?;
    let not_from_file = |what: &str| {
        NodeError::invalid_input(format!("LoRA {name}: this {what} was not loaded from a model file, so it cannot be patched"))
    };
    let unet_origin = match model {
        Some(m) => Some(m.net.origin().ok_or_else(|| not_from_file("MODEL"))?),
        None => None,
    };
    let clip_origin = match clip {
        Some(c) => Some(c.origin.clone().ok_or_else(|| not_from_file("CLIP"))?),
        None => None,
    };
    let mut unet_map = KeyMap::new();
    if let Some(o) = &unet_origin {
        lora::unet_key_map(&o.file, &o.prefix, &o.config, &mut unet_map);
    }
    let mut clip_map = KeyMap::new();
    if let Some(o) = &clip_origin {
        let parts: Vec<_> = o.parts.iter().map(|p| (&*p.file, &p.config)).collect();
        lora::clip_key_map_multi(&parts, &mut clip_map);
    }
    let quiet = |r: Result<lora::Lora, comfy_diffusion::Error>| r.map_err(diffusion_err);
    let unet_lora = quiet(lora::load_lora_quiet(&file, &unet_map))?;
    let clip_lora = quiet(lora::load_lora_quiet(&file, &clip_map))?;
    let not_loaded: Vec<String> =
        unet_lora.not_loaded.iter().filter(|k| clip_lora.not_loaded.contains(k)).cloned().collect();
    for k in &not_loaded {
        tracing::warn!("lora key not loaded: {k}");
    }

    let new_model = match (model, unet_origin) {
        (Some(m), Some(o)) => {
            let mut patches = (*o.patches).clone();
            let n = patches.add(&unet_lora, strength_model, |_| true);
            if n == 0 {
                Some(m.clone())
            } else {
                let origin = Arc::new(UnetOrigin {
                    file: o.file.clone(),
                    prefix: o.prefix.clone(),
                    config: o.config.clone(),
                    storage: o.storage,
                    patches: Arc::new(patches),
                });
                let params: usize = o.file.names_with_prefix(&o.prefix).filter_map(|k| o.file.info(k)).map(|i| i.numel()).sum();
                let bytes_per = match o.storage {
                    WeightStorage::Plain(d) => d.size_in_bytes(),
                    _ => 4,
                };
                ensure_memory((params * bytes_per) as u64, &format!("LoRA-patched model ({name})"))?;
                let unet = build_unet(&origin)?;
                tracing::info!("LoRA {name}: {n} model weights patched (strength {strength_model})");
                Some(SdModel {
                    net: Arc::new(UnetDenoiser { unet: Arc::new(unet), sampling: m.sampling.clone(), origin: Some(origin) }),
                    family: m.family,
                    sampling: m.sampling.clone(),
                    adm: m.adm,
                    source: None,
                })
            }
        }
        _ => None,
    };

    let new_clip = match (clip, clip_origin) {
        (Some(c), Some(o)) => {
            let mut total = 0;
            let mut parts = Vec::with_capacity(o.parts.len());
            for (i, p) in o.parts.iter().enumerate() {
                let mut patches = (*p.patches).clone();
                total += patches.add(&clip_lora, strength_clip, |t| t.file == i);
                parts.push(ClipPart { file: p.file.clone(), config: p.config.clone(), patches: Arc::new(patches) });
            }
            if total == 0 {
                Some(c.clone())
            } else {
                let encoders = parts
                    .iter()
                    .map(|p| {
                        let storage = Some(crate::sd::device::dtypes().text_encoder);
                        ClipTextModel::load_with(&p.file, &p.config, &device(), Some(&p.patches), storage)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(diffusion_err)?;
                let model = ClipModel::from_encoders(o.family, encoders)
                    .map_err(diffusion_err)?
                    .with_embedding_dirs(o.embedding_dirs.clone());
                tracing::info!("LoRA {name}: {total} text encoder weights patched (strength {strength_clip})");
                let origin = ClipOrigin { family: o.family, parts, embedding_dirs: o.embedding_dirs.clone() };
                Some(SdClip { model: Arc::new(model), layer_idx: c.layer_idx, source: None, origin: Some(Arc::new(origin)) })
            }
        }
        _ => None,
    };
    Ok(LoraApplied { model: new_model, clip: new_clip, not_loaded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_unet_dtype_widens_f16_files_when_memory_allows() {
        const GIB: u64 = 1 << 30;
        let sdxl = 2_567_463_684; // SDXL base UNet parameters: 10.3 GB in F32
        assert_eq!(default_unet_dtype(true, sdxl, Some(20 * GIB)), DType::F32);
        assert_eq!(default_unet_dtype(true, sdxl, Some(12 * GIB)), DType::F16);
        // F32 files stay F32; an unknown amount of memory means ComfyUI's CPU default.
        assert_eq!(default_unet_dtype(false, sdxl, Some(12 * GIB)), DType::F32);
        assert_eq!(default_unet_dtype(true, sdxl, None), DType::F32);
    }
}
