//! Building MODEL / CLIP / VAE values from files (through the resident-model cache).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use comfy_diffusion::checkpoint::{Checkpoint, Family, StoredDtype, UNET_PREFIX, VAE_PREFIX};
use comfy_diffusion::clip::ClipModel;
use comfy_diffusion::unet::UNetModel;
use comfy_diffusion::vae::Vae;
use comfy_graph::{ErrorCategory, Folders, NodeError};
use comfy_sampling::{ModelSampling, Prediction};

use crate::sd::cache;
use crate::sd::errors::{candle_err, diffusion_err, ensure_memory};
use crate::sd::model::{AdmKind, LoadedCheckpoint, SdClip, SdModel, SdVae, Source, UnetDenoiser};

/// UNets with more parameters than this keep F16 weights in memory (cast per op, exact),
/// like ComfyUI's `--fp16-unet`; smaller ones are widened to F32 at load.
const F16_UNET_PARAMS: usize = 1_500_000_000;

/// The compute device (CPU: the workspace builds candle without accelerator backends).
pub fn device() -> Device {
    Device::Cpu
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
    let unet_dtype = if stored_f16 && unet_params > F16_UNET_PARAMS { DType::F16 } else { DType::F32 };
    let te_bytes: u64 = cfg.text_encoders.iter().map(|t| loaded_bytes(&ck, &t.prefix, None)).sum();
    let needed = loaded_bytes(&ck, UNET_PREFIX, Some(unet_dtype)) + loaded_bytes(&ck, VAE_PREFIX, Some(DType::F32)) + te_bytes;
    ensure_memory(needed, &format!("checkpoint {}", path.display()))?;

    let unet = UNetModel::load(ck.var_builder(UNET_PREFIX, unet_dtype, &dev), &cfg.unet).map_err(|e| {
        NodeError::new(ErrorCategory::MissingModel, "RuntimeError", format!("ERROR: Could not load the UNet of {}: {e}", path.display()))
    })?;
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
        net: Arc::new(UnetDenoiser { unet: Arc::new(unet), sampling: sampling.clone() }),
        family: cfg.family,
        sampling,
        adm,
        source: Some(Source { file: ck.clone(), prefixes: vec![UNET_PREFIX.to_string()] }),
    };
    let clip = if cfg.text_encoders.is_empty() {
        None
    } else {
        let m = ClipModel::load(&ck, &cfg, &dev).map_err(diffusion_err)?.with_embedding_dirs(embedding_dirs);
        let prefixes = cfg.text_encoders.iter().map(|t| t.prefix.clone()).collect();
        Some(SdClip { model: Arc::new(m), layer_idx: None, source: Some(Source { file: ck.clone(), prefixes }) })
    };
    let vae = match &cfg.vae {
        Some(vc) => {
            let v = Vae::load(ck.var_builder(VAE_PREFIX, DType::F32, &dev), vc).map_err(candle_err)?;
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
        let bytes = loaded_bytes(&ck, &prefix, Some(DType::F32));
        ensure_memory(bytes, &format!("VAE {}", path.display()))?;
        let v = Vae::load(ck.var_builder(&prefix, DType::F32, &device()), &cfg).map_err(|e| {
            NodeError::new(ErrorCategory::MissingModel, "RuntimeError", format!("ERROR: VAE is invalid: {}: {e}", path.display()))
        })?;
        Ok((SdVae::Kl { vae: Arc::new(v), source: Some(Source { file: ck.clone(), prefixes: vec![prefix] }) }, bytes))
    })
}
