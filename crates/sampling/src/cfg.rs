//! Classifier-free guidance and the model-call plumbing the samplers use:
//! [`Denoiser`] (what a sampler calls), [`CfgGuider`] (ComfyUI's `CFGGuider` /
//! `sampling_function`: `[uncond, cond]` batched in one call, cfg = 1 shortcut) and
//! [`EpsWrapper`] (ComfyUI's `BaseModel.apply_model` for EPS/V networks).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::schedule::ModelSampling;

/// What one guided model evaluation returns.
#[derive(Debug, Clone)]
pub struct Denoised {
    /// The guided x0 prediction `D(x, σ)`.
    pub denoised: Tensor,
    /// The unconditional x0 prediction (only when asked for; CFG++ samplers need it).
    pub uncond: Option<Tensor>,
}

/// A denoiser `D(x, σ)` as the samplers see it (the CFG wrapper applied).
pub trait Denoiser {
    /// Evaluates at noise level `sigma` (float32, the same for every batch row).
    /// `need_uncond` asks for the unconditional prediction too, which also disables the
    /// cfg = 1 shortcut (ComfyUI's `disable_cfg1_optimization`).
    fn denoise(&mut self, x: &Tensor, sigma: f32, need_uncond: bool) -> Result<Denoised>;
}

/// Which conditioning a batch row is evaluated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKind {
    /// The negative prompt.
    Uncond,
    /// The positive prompt.
    Cond,
}

/// A model that predicts x0 for a batch of rows, each with its σ and conditioning.
pub trait ModelFn {
    /// `x`: `[rows, C, H, W]`; `sigmas`/`kinds`: one per row. Returns x0, same shape as `x`.
    fn apply(&mut self, x: &Tensor, sigmas: &[f32], kinds: &[CondKind]) -> Result<Tensor>;
}

/// `cfg_function` without model options: `uncond + (cond − uncond)·scale` in float32
/// (the scale rounded to float32 first), bit-identical to ComfyUI.
pub fn cfg_function(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    let scale = scale as f32 as f64;
    Ok((uncond + (cond - uncond)?.affine(scale, 0.0)?)?)
}

/// `math.isclose(scale, 1.0)` with Python's default rel_tol 1e-9.
pub fn cfg_is_one(scale: f64) -> bool {
    (scale - 1.0).abs() <= 1e-9 * scale.abs().max(1.0)
}

/// ComfyUI's CFG guider around a [`ModelFn`].
pub struct CfgGuider<M> {
    /// The wrapped model.
    pub model: M,
    /// Guidance scale.
    pub cfg: f64,
}

impl<M: ModelFn> CfgGuider<M> {
    /// Wraps `model` with guidance scale `cfg`.
    pub fn new(model: M, cfg: f64) -> Self {
        Self { model, cfg }
    }
}

impl<M: ModelFn> Denoiser for CfgGuider<M> {
    fn denoise(&mut self, x: &Tensor, sigma: f32, need_uncond: bool) -> Result<Denoised> {
        let b = x.dim(0)?;
        if cfg_is_one(self.cfg) && !need_uncond {
            let out = self
                .model
                .apply(x, &vec![sigma; b], &vec![CondKind::Cond; b])?;
            return Ok(Denoised {
                denoised: out,
                uncond: None,
            });
        }
        let xx = Tensor::cat(&[x, x], 0)?;
        let mut kinds = vec![CondKind::Uncond; b];
        kinds.extend(std::iter::repeat_n(CondKind::Cond, b));
        let out = self.model.apply(&xx, &vec![sigma; 2 * b], &kinds)?;
        let uncond = out.narrow(0, 0, b)?;
        let cond = out.narrow(0, b, b)?;
        let denoised = cfg_function(&cond, &uncond, self.cfg)?;
        Ok(Denoised {
            denoised,
            uncond: Some(uncond),
        })
    }
}

/// A raw network: `f(x_in, timestep, kinds)` → ε̂ (EPS) or v̂ (V), one timestep per row.
pub trait NetworkFn {
    /// `x_in = x / √(σ² + 1)`; `timesteps` are the integer table indices as float32.
    fn forward(&mut self, x_in: &Tensor, timesteps: &[f32], kinds: &[CondKind]) -> Result<Tensor>;
}

/// ComfyUI's `BaseModel.apply_model` for discrete EPS/V models: scales the input, converts
/// σ to the timestep, runs the network in its dtype and converts the output to x0 in float32.
pub struct EpsWrapper<N> {
    /// The network.
    pub net: N,
    /// σ table and parameterisation.
    pub sampling: ModelSampling,
    /// Dtype the network computes in (inputs are cast to it; outputs back to float32).
    pub dtype: DType,
}

impl<N: NetworkFn> ModelFn for EpsWrapper<N> {
    fn apply(&mut self, x: &Tensor, sigmas: &[f32], kinds: &[CondKind]) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let dev = x.device();
        let x = x.to_dtype(DType::F32)?;
        let per_row = |f: &dyn Fn(f32) -> f32| -> Result<Tensor> {
            let v: Vec<f32> = sigmas.iter().map(|s| f(*s)).collect();
            let mut shape = vec![rows];
            shape.extend(std::iter::repeat_n(1, x.rank() - 1));
            Ok(Tensor::from_vec(v, shape, dev)?)
        };
        // x / (σ² + 1)^0.5, computed in float32 as torch does.
        let denom = per_row(&|s| (s * s + 1.0).sqrt())?;
        let x_in = x.broadcast_div(&denom)?;
        let ts: Vec<f32> = sigmas.iter().map(|s| self.sampling.timestep(*s)).collect();
        let out = self
            .net
            .forward(&x_in.to_dtype(self.dtype)?, &ts, kinds)?
            .to_dtype(DType::F32)?;
        let s = per_row(&|s| s)?;
        Ok(match self.sampling.prediction {
            crate::schedule::Prediction::Eps => (x - out.broadcast_mul(&s)?)?,
            crate::schedule::Prediction::V => {
                let c_skip = per_row(&|s| 1.0 / (s * s + 1.0))?;
                let c_out = per_row(&|s| s / (s * s + 1.0).sqrt())?;
                (x.broadcast_mul(&c_skip)? - out.broadcast_mul(&c_out)?)?
            }
        })
    }
}
