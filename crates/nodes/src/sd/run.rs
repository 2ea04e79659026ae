//! The sampling pipeline shared by KSampler, KSamplerAdvanced, SamplerCustom and
//! SamplerCustomAdvanced (ComfyUI's `common_ksampler` → `comfy.sample.sample[_custom]` →
//! `CFGGuider.sample` → `KSAMPLER.sample`): empty-latent channel fix, initial noise, noise mask,
//! `process_in`, noise scaling, the sampler with progress/previews/cancellation,
//! `process_out`.

use candle_core::{DType, Device, Tensor};
use comfy_graph::node::PreviewFormat;
use comfy_graph::{ExecContext, NodeError};
use comfy_sampling::ksampler::{is_max_denoise, noise_scaling};
use comfy_sampling::samplers::sample_sigmas;
use comfy_sampling::{prepare_noise, NormalMath, SampleOptions, Step, TorchGenerator};

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::sd::cond::Conditioning;
use crate::sd::errors::{candle_err, sampling_err};
use crate::sd::guidance::{prepare_conds, CondDenoiser, Inpaint};
use crate::sd::model::SdModel;
use crate::sd::objects::NoiseObj;
use crate::sd::preview::{preview_jpeg, wants_preview, PREVIEW_SIZE};
use crate::types::Latent;

/// The torch `randn` maths used for noise (x86 torch builds: AVX2 polynomials).
pub const NOISE_MATH: NormalMath = NormalMath::Avx2;

/// One sampling run.
pub struct SampleJob<'a> {
    /// The model.
    pub model: &'a SdModel,
    /// Positive conditioning.
    pub positive: &'a Conditioning,
    /// Negative conditioning (`None`: no uncond, BasicGuider).
    pub negative: Option<&'a Conditioning>,
    /// Guidance scale.
    pub cfg: f64,
    /// Sampler name.
    pub sampler: &'a str,
    /// The σ list (already windowed); empty = return the input unchanged.
    pub sigmas: Vec<f32>,
    /// The input latent.
    pub latent: &'a Latent,
    /// Initial noise.
    pub noise: NoiseObj,
    /// The sampler's seed (`extra_args["seed"]`).
    pub seed: u64,
}

/// What a run returns (VAE space).
pub struct SampleOutput {
    /// The sampled latent.
    pub samples: Tensor,
    /// The last x0 prediction (`process_out` applied), if a step ran.
    pub denoised: Option<Tensor>,
}

/// `fix_empty_latent_channels`: an all-zero latent with the wrong channel count gets the
/// model's.
pub fn fix_empty_latent_channels(model: &SdModel, latent: &Tensor) -> Result<Tensor, NodeError> {
    let (b, c, h, w) = latent.dims4().map_err(candle_err)?;
    let want = model.latent_channels();
    if c == want {
        return Ok(latent.clone());
    }
    let zero = latent.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).map_err(candle_err)? == 0.0;
    if !zero {
        return Ok(latent.clone());
    }
    Tensor::zeros((b, want, h, w), DType::F32, latent.device()).map_err(candle_err)
}

/// `prepare_noise` for a latent (or zeros when disabled).
pub fn initial_noise(noise: NoiseObj, latent: &Tensor, batch_index: Option<&[i64]>) -> Result<Tensor, NodeError> {
    match noise {
        NoiseObj::Disabled => Tensor::zeros(latent.dims(), DType::F32, &Device::Cpu).map_err(candle_err),
        NoiseObj::Random { seed } => {
            let idx: Option<Vec<usize>> = match batch_index {
                Some(v) => Some(
                    v.iter()
                        .map(|&i| usize::try_from(i).map_err(|_| NodeError::invalid_input(format!("batch_index {i} is negative"))))
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            };
            prepare_noise(seed, latent.dims(), idx.as_deref(), NOISE_MATH).map_err(candle_err)
        }
    }
}

/// `prepare_mask` / `reshape_mask`: `[*, H, W]` → bilinear to the latent size, channels
/// repeated, batch repeated (or truncated).
pub fn reshape_noise_mask(mask: &Tensor, shape: (usize, usize, usize, usize)) -> Result<Tensor, NodeError> {
    let (b, c, h, w) = shape;
    let a = Array::from_tensor(mask)?;
    let n = a.shape.len();
    if n < 2 {
        return Err(NodeError::invalid_input(format!("noise_mask has shape {:?}", a.shape)));
    }
    let (mh, mw) = (a.shape[n - 2], a.shape[n - 1]);
    let mb = a.data.len() / (mh * mw).max(1);
    let a = Array::new(vec![mb, 1, mh, mw], a.data);
    let a = if (mh, mw) != (h, w) { common_upscale(&a, w, h, Method::Bilinear, false)? } else { a };
    let mut data = Vec::with_capacity(b * c * h * w);
    for bb in 0..b {
        let k = bb % mb.max(1);
        let plane = &a.data[k * h * w..(k + 1) * h * w];
        for _ in 0..c {
            data.extend_from_slice(plane);
        }
    }
    Array::new(vec![b, c, h, w], data).into_tensor()
}

/// Runs one sampling job with progress, previews and cancellation through `ctx`.
pub fn sample(job: SampleJob<'_>, ctx: &ExecContext<'_>) -> Result<SampleOutput, NodeError> {
    let model = job.model;
    // Sampling runs on host tensors; `calc_cond_batch` moves the model's inputs to its device.
    let latent_image = job.latent.samples.to_dtype(DType::F32).and_then(|t| t.to_device(&Device::Cpu)).map_err(candle_err)?;
    let latent_image = fix_empty_latent_channels(model, &latent_image)?;
    let noise = initial_noise(job.noise, &latent_image, job.latent.batch_index.as_deref())?;
    if job.sigmas.is_empty() {
        return Ok(SampleOutput { samples: latent_image, denoised: None });
    }
    let (b, c, h, w) = latent_image.dims4().map_err(candle_err)?;
    let (positive, negative) =
        prepare_conds(model, job.positive, job.negative, (h, w)).map_err(|e| sampling_err(e, ctx.cancel))?;
    let format = model.latent_format();
    let nonzero = latent_image.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).map_err(candle_err)? != 0.0;
    let latent_model = if nonzero { format.process_in(&latent_image).map_err(|e| sampling_err(e, ctx.cancel))? } else { latent_image.clone() };
    let max_denoise = is_max_denoise(model.sampling.sigma_max(), job.sigmas[0]);
    let x = noise_scaling(&noise, &latent_model, job.sigmas[0], max_denoise).map_err(|e| sampling_err(e, ctx.cancel))?;
    let inpaint = match &job.latent.noise_mask {
        None => None,
        Some(m) => {
            let mask = reshape_noise_mask(m, (b, c, h, w))?;
            let ip_noise = if job.sampler == "ddim" {
                // ddim's "random" inpaint option: a separate draw seeded with seed + 1.
                let mut g = TorchGenerator::with_math(job.seed.wrapping_add(1), NOISE_MATH);
                Tensor::from_vec(g.randn(b * c * h * w), (b, c, h, w), &Device::Cpu).map_err(candle_err)?
            } else {
                noise.clone()
            };
            Some(Inpaint { mask, latent: latent_model.clone(), noise: ip_noise })
        }
    };
    let mut den = CondDenoiser { model, positive, negative, cfg: job.cfg, inpaint };
    let factors = model.preview_factors();
    let preview = wants_preview(ctx.preview_method);
    let mut last_x0: Option<Tensor> = None;
    let mut preview_error: Option<NodeError> = None;
    let mut callback = |s: &Step<'_>| {
        last_x0 = Some(s.denoised.clone());
        if preview {
            match preview_jpeg(s.denoised, &factors, PREVIEW_SIZE) {
                Ok(bytes) => ctx.progress.preview(PreviewFormat::Jpeg, bytes),
                Err(e) => {
                    if preview_error.is_none() {
                        preview_error = Some(e);
                    }
                }
            }
        }
        ctx.progress.progress(s.index as u64 + 1, s.total as u64);
    };
    let cancel = || ctx.cancel.check().is_err();
    let mut opts = SampleOptions {
        seed: job.seed,
        math: NOISE_MATH,
        noise: None,
        callback: Some(&mut callback),
        cancel: Some(&cancel),
        model_sampling: (*model.sampling).clone(),
    };
    let out = sample_sigmas(job.sampler, &mut den, &x, &job.sigmas, &mut opts);
    drop(opts);
    let out = out.map_err(|e| sampling_err(e, ctx.cancel))?;
    if let Some(e) = preview_error {
        tracing::warn!("preview failed: {e}");
    }
    let samples = format.process_out(&out.to_dtype(DType::F32).map_err(candle_err)?).map_err(|e| sampling_err(e, ctx.cancel))?;
    let denoised = match last_x0 {
        Some(x0) => Some(format.process_out(&x0.to_dtype(DType::F32).map_err(candle_err)?).map_err(|e| sampling_err(e, ctx.cancel))?),
        None => None,
    };
    Ok(SampleOutput { samples: samples.to_device(&Device::Cpu).map_err(candle_err)?, denoised })
}
