//! The KSampler samplers: one function per ComfyUI sampler name, each with ComfyUI's exact
//! update rule, driven through [`sample_sigmas`].

mod basic;
mod dpm_solver;
mod dpmpp;
mod multistep;
mod tmath;
mod unipc;

use candle_core::Tensor;

use crate::cfg::{Denoised, Denoiser};
use crate::error::{Result, SamplingError};
use crate::noise::{BrownianTreeNoise, DefaultNoise, NoiseSource};
use crate::rng::NormalMath;
use crate::schedule::ModelSampling;

/// KSampler sampler names in ComfyUI's list order (44 entries).
pub const SAMPLER_NAMES: [&str; 44] = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];

/// Where a sampler's per-step randomness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    /// Deterministic (no draws).
    None,
    /// `default_noise_sampler`: torch CPU generator seeded with `seed + 1`.
    Default,
    /// `BrownianTreeNoiseSampler` over `[min positive σ, max σ]`, entropy = `seed`.
    Brownian,
}

/// The noise source each sampler uses (as ComfyUI creates it).
pub fn noise_kind(name: &str) -> NoiseKind {
    match name {
        "dpmpp_sde"
        | "dpmpp_sde_gpu"
        | "dpmpp_2m_sde"
        | "dpmpp_2m_sde_gpu"
        | "dpmpp_2m_sde_heun"
        | "dpmpp_2m_sde_heun_gpu"
        | "dpmpp_3m_sde"
        | "dpmpp_3m_sde_gpu" => NoiseKind::Brownian,
        "euler_ancestral"
        | "euler_ancestral_cfg_pp"
        | "dpm_2_ancestral"
        | "dpmpp_2s_ancestral"
        | "dpmpp_2s_ancestral_cfg_pp"
        | "exp_heun_2_x0_sde"
        | "ddpm"
        | "lcm"
        | "res_multistep"
        | "res_multistep_cfg_pp"
        | "res_multistep_ancestral"
        | "res_multistep_ancestral_cfg_pp"
        | "er_sde"
        | "seeds_2"
        | "seeds_3"
        | "sa_solver"
        | "sa_solver_pece" => NoiseKind::Default,
        _ => NoiseKind::None,
    }
}

/// One progress callback: the state before step `index` and that step's x0 prediction.
pub struct Step<'t> {
    /// 0-based step index.
    pub index: usize,
    /// `len(sigmas) − 1`.
    pub total: usize,
    /// Current sample (model space).
    pub x: &'t Tensor,
    /// Denoised prediction (model space), for previews.
    pub denoised: &'t Tensor,
}

/// Per-run options of [`sample_sigmas`].
#[derive(Default)]
pub struct SampleOptions<'a> {
    /// KSampler seed (`extra_args["seed"]`).
    pub seed: u64,
    /// Which float maths the torch-compatible `randn` uses.
    pub math: NormalMath,
    /// Overrides the sampler's own noise source (e.g. to replay recorded draws).
    pub noise: Option<Box<dyn NoiseSource + 'a>>,
    /// Called once per step (progress, previews).
    pub callback: Option<&'a mut dyn FnMut(&Step<'_>)>,
    /// Checked before every model evaluation; `true` aborts with [`SamplingError::Cancelled`].
    pub cancel: Option<&'a dyn Fn() -> bool>,
    /// The model's σ table (used by `sa_solver`'s noise interval).
    pub model_sampling: ModelSampling,
}

/// Shared state of one sampler run.
pub(crate) struct Run<'r, 'a> {
    den: &'r mut dyn Denoiser,
    opts: &'r mut SampleOptions<'a>,
    noise: Option<Box<dyn NoiseSource + 'a>>,
    total: usize,
}

impl<'r, 'a> Run<'r, 'a> {
    fn check(&self) -> Result<()> {
        if let Some(c) = self.opts.cancel {
            if c() {
                return Err(SamplingError::Cancelled);
            }
        }
        Ok(())
    }

    /// `D(x, σ)`.
    pub(crate) fn model(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        self.check()?;
        Ok(self.den.denoise(x, sigma, false)?.denoised)
    }

    /// `D(x, σ)` and the uncond prediction (CFG++; cfg = 1 shortcut disabled).
    pub(crate) fn model_uncond(&mut self, x: &Tensor, sigma: f32) -> Result<(Tensor, Tensor)> {
        self.check()?;
        let Denoised { denoised, uncond } = self.den.denoise(x, sigma, true)?;
        let uncond = match uncond {
            Some(u) => u,
            None => denoised.clone(),
        };
        Ok((denoised, uncond))
    }

    pub(crate) fn callback(&mut self, index: usize, x: &Tensor, denoised: &Tensor) {
        let total = self.total;
        if let Some(cb) = self.opts.callback.as_mut() {
            cb(&Step {
                index,
                total,
                x,
                denoised,
            });
        }
    }

    pub(crate) fn noise(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor> {
        match self.noise.as_mut() {
            Some(n) => n.sample(sigma, sigma_next),
            None => Err(SamplingError::Invalid("sampler has no noise source".into())),
        }
    }

    pub(crate) fn model_sampling(&self) -> &ModelSampling {
        &self.opts.model_sampling
    }
}

/// Runs sampler `name` from the (already noise-scaled, model-space) `x` along `sigmas`,
/// exactly as ComfyUI's sampler function would (`KSAMPLER.sample` after noise scaling).
/// Fewer than two sigmas return `x` unchanged.
pub fn sample_sigmas<'a>(
    name: &str,
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    sigmas: &[f32],
    opts: &mut SampleOptions<'a>,
) -> Result<Tensor> {
    if !SAMPLER_NAMES.contains(&name) {
        return Err(SamplingError::UnknownSampler(name.to_string()));
    }
    if sigmas.len() < 2 {
        return Ok(x.clone());
    }
    let noise: Option<Box<dyn NoiseSource + 'a>> = match opts.noise.take() {
        Some(n) => Some(n),
        None => match noise_kind(name) {
            NoiseKind::None => None,
            NoiseKind::Default => Some(Box::new(DefaultNoise::new(opts.seed, x, opts.math))),
            NoiseKind::Brownian => {
                let smin = sigmas
                    .iter()
                    .copied()
                    .filter(|s| *s > 0.0)
                    .fold(f32::INFINITY, f32::min);
                let smax = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                Some(Box::new(BrownianTreeNoise::new(
                    opts.seed, smin, smax, x, opts.math,
                )))
            }
        },
    };
    let mut run = Run {
        den: denoiser,
        opts,
        noise,
        total: sigmas.len() - 1,
    };
    let r = &mut run;
    let s = sigmas;
    match name {
        "euler" | "ddim" => basic::euler(r, x, s),
        "euler_cfg_pp" => basic::euler_ancestral_cfg_pp(r, x, s, 0.0, 0.0),
        "euler_ancestral" => basic::euler_ancestral(r, x, s, 1.0, 1.0),
        "euler_ancestral_cfg_pp" => basic::euler_ancestral_cfg_pp(r, x, s, 1.0, 1.0),
        "heun" => basic::heun(r, x, s),
        "heunpp2" => basic::heunpp2(r, x, s),
        "exp_heun_2_x0" => dpmpp::seeds_2(r, x, s, 0.0, 0.0, 1.0, true),
        "exp_heun_2_x0_sde" => dpmpp::seeds_2(r, x, s, 1.0, 1.0, 1.0, true),
        "dpm_2" => basic::dpm_2(r, x, s),
        "dpm_2_ancestral" => basic::dpm_2_ancestral(r, x, s, 1.0, 1.0),
        "lms" => basic::lms(r, x, s, 4),
        "dpm_fast" => dpm_solver::dpm_fast(r, x, s),
        "dpm_adaptive" => dpm_solver::dpm_adaptive(r, x, s),
        "dpmpp_2s_ancestral" => dpmpp::dpmpp_2s_ancestral(r, x, s, 1.0, 1.0, false),
        "dpmpp_2s_ancestral_cfg_pp" => dpmpp::dpmpp_2s_ancestral(r, x, s, 1.0, 1.0, true),
        "dpmpp_sde" | "dpmpp_sde_gpu" => dpmpp::dpmpp_sde(r, x, s, 1.0, 1.0, 0.5),
        "dpmpp_2m" => dpmpp::dpmpp_2m(r, x, s),
        "dpmpp_2m_cfg_pp" => dpmpp::dpmpp_2m_cfg_pp(r, x, s),
        "dpmpp_2m_sde" | "dpmpp_2m_sde_gpu" => dpmpp::dpmpp_2m_sde(r, x, s, 1.0, 1.0, false),
        "dpmpp_2m_sde_heun" | "dpmpp_2m_sde_heun_gpu" => {
            dpmpp::dpmpp_2m_sde(r, x, s, 1.0, 1.0, true)
        }
        "dpmpp_3m_sde" | "dpmpp_3m_sde_gpu" => dpmpp::dpmpp_3m_sde(r, x, s, 1.0, 1.0),
        "ddpm" => basic::ddpm(r, x, s),
        "lcm" => basic::lcm(r, x, s),
        "ipndm" => multistep::ipndm(r, x, s, 4),
        "ipndm_v" => multistep::ipndm_v(r, x, s, 4),
        "deis" => multistep::deis(r, x, s, 3),
        "res_multistep" => dpmpp::res_multistep(r, x, s, 1.0, 0.0, false),
        "res_multistep_cfg_pp" => dpmpp::res_multistep(r, x, s, 1.0, 0.0, true),
        "res_multistep_ancestral" => dpmpp::res_multistep(r, x, s, 1.0, 1.0, false),
        "res_multistep_ancestral_cfg_pp" => dpmpp::res_multistep(r, x, s, 1.0, 1.0, true),
        "gradient_estimation" => basic::gradient_estimation(r, x, s, 2.0, false),
        "gradient_estimation_cfg_pp" => basic::gradient_estimation(r, x, s, 2.0, true),
        "er_sde" => dpmpp::er_sde(r, x, s, 1.0, 3),
        "seeds_2" => dpmpp::seeds_2(r, x, s, 1.0, 1.0, 0.5, false),
        "seeds_3" => dpmpp::seeds_3(r, x, s, 1.0, 1.0, 1.0 / 3.0, 2.0 / 3.0),
        "sa_solver" => multistep::sa_solver(r, x, s, false),
        "sa_solver_pece" => multistep::sa_solver(r, x, s, true),
        "uni_pc" => unipc::uni_pc(r, x, s, false),
        "uni_pc_bh2" => unipc::uni_pc(r, x, s, true),
        other => Err(SamplingError::UnknownSampler(other.to_string())),
    }
}

// ---- small tensor helpers -------------------------------------------------------------

/// `Σ cᵢ·tᵢ` (float32 tensor ops, coefficients rounded to the tensor dtype).
pub(crate) fn lc(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    if let Some(t) = lc_cpu(terms)? {
        return Ok(t);
    }
    let mut acc: Option<Tensor> = None;
    for (c, t) in terms {
        let v = if *c == 1.0 {
            (*t).clone()
        } else {
            t.affine(*c, 0.0)?
        };
        acc = Some(match acc {
            None => v,
            Some(a) => (a + v)?,
        });
    }
    acc.ok_or_else(|| SamplingError::Invalid("empty linear combination".into()))
}

/// `t · c` with a float32 scalar (exactly torch's tensor × 0-d tensor product).
pub(crate) fn mul32(t: &Tensor, c: f32) -> Result<Tensor> {
    Ok(t.affine(c as f64, 0.0)?)
}

/// `t / c` with a float32 scalar (a true division, as torch does).
pub(crate) fn div32(t: &Tensor, c: f32) -> Result<Tensor> {
    let s = Tensor::new(c, t.device())?.to_dtype(t.dtype())?;
    Ok(t.broadcast_div(&s)?)
}

/// `torch.lerp(a, b, w)` for float32 scalars. Torch's kernel is compiled with FMA
/// contraction: `fma(w, b − a, a)` for `|w| < ½`, else `fma(−(b − a), 1 − w, b)`.
pub(crate) fn lerp32(a: f32, b: f32, w: f32) -> f32 {
    let d = b - a;
    if w.abs() < 0.5 {
        w.mul_add(d, a)
    } else {
        (-d).mul_add(1.0 - w, b)
    }
}

/// Fused single-pass [`lc`] for contiguous float32 CPU tensors (same rounding: each term is
/// `t·c` in float32, summed left to right). `None` when the fast path does not apply.
fn lc_cpu(terms: &[(f64, &Tensor)]) -> Result<Option<Tensor>> {
    use candle_core::{CpuStorage, DType, Storage};
    let Some((_, first)) = terms.first() else {
        return Ok(None);
    };
    if !first.device().is_cpu() || first.dtype() != DType::F32 || terms.len() > 8 {
        return Ok(None);
    }
    let guards: Vec<_> = terms.iter().map(|(_, t)| t.storage_and_layout()).collect();
    let mut slices: Vec<&[f32]> = Vec::with_capacity(terms.len());
    for ((storage, layout), (_, t)) in guards.iter().zip(terms) {
        if t.dims() != first.dims() {
            return Ok(None);
        }
        let Some((a, b)) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        match &**storage {
            Storage::Cpu(CpuStorage::F32(v)) => slices.push(&v[a..b]),
            _ => return Ok(None),
        }
    }
    let cs: Vec<f32> = terms.iter().map(|(c, _)| *c as f32).collect();
    let n = slices[0].len();
    let term = |k: usize, i: usize| {
        if cs[k] == 1.0 {
            slices[k][i]
        } else {
            slices[k][i] * cs[k]
        }
    };
    let out: Vec<f32> = (0..n)
        .map(|i| {
            let mut acc = term(0, i);
            for k in 1..slices.len() {
                acc += term(k, i);
            }
            acc
        })
        .collect();
    drop(slices);
    drop(guards);
    Ok(Some(Tensor::from_vec(out, first.shape(), first.device())?))
}

/// `(x − D)/σ`, the Karras ODE derivative: a true float32 division by σ (torch divides by the
/// 0-d σ tensor; multiplying by a rounded reciprocal would be up to 1 ulp off).
pub(crate) fn to_d(x: &Tensor, denoised: &Tensor, sigma: f64) -> Result<Tensor> {
    div32(&(x - denoised)?, sigma as f32)
}

/// `get_ancestral_step` in float32, as torch evaluates it on 0-d tensors.
pub(crate) fn ancestral_step32(from: f32, to: f32, eta: f32) -> (f32, f32) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let up = (eta * (to * to * (from * from - to * to) / (from * from)).sqrt()).min(to);
    let down = (to * to - up * up).sqrt();
    (down, up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// torch's fused `lerp` (w = 1/3): differs from the unfused formula on this input.
    #[test]
    fn lerp32_is_fused_like_torch() {
        let (a, b) = (f32::from_bits(1073806191), f32::from_bits(1085029214));
        let w = (1.0f64 / 3.0) as f32;
        assert_eq!(lerp32(a, b, w).to_bits(), 1078513459);
        assert_ne!((a + w * (b - a)).to_bits(), 1078513459);
    }

    /// D(x, σ) = 0.5·x: cheap and deterministic.
    struct Half;

    impl Denoiser for Half {
        fn denoise(&mut self, x: &Tensor, _sigma: f32, need_uncond: bool) -> Result<Denoised> {
            let d = (x * 0.5)?;
            Ok(Denoised {
                uncond: need_uncond.then(|| d.clone()),
                denoised: d,
            })
        }
    }

    #[test]
    fn every_sampler_runs_calls_back_and_cancels() {
        let ms = ModelSampling::default();
        let x = Tensor::ones((1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        for name in SAMPLER_NAMES {
            let sigmas = crate::schedule::ksampler_sigmas(&ms, "karras", name, 4, 1.0).unwrap();
            let mut steps = Vec::new();
            let mut cb = |s: &Step<'_>| steps.push((s.index, s.total));
            let mut opts = SampleOptions {
                seed: 3,
                callback: Some(&mut cb),
                ..Default::default()
            };
            let out = sample_sigmas(name, &mut Half, &x, &sigmas, &mut opts).unwrap();
            drop(opts);
            assert_eq!(out.dims(), x.dims(), "{name}");
            assert!(!steps.is_empty(), "{name}: no callback");
            assert!(steps.iter().all(|(_, t)| *t == sigmas.len() - 1), "{name}");
            let cancel = || true;
            let mut opts = SampleOptions {
                cancel: Some(&cancel),
                ..Default::default()
            };
            let err = sample_sigmas(name, &mut Half, &x, &sigmas, &mut opts).unwrap_err();
            assert!(matches!(err, SamplingError::Cancelled), "{name}: {err}");
        }
        let mut opts = SampleOptions::default();
        assert!(matches!(
            sample_sigmas("nope", &mut Half, &x, &[1.0, 0.0], &mut opts),
            Err(SamplingError::UnknownSampler(_))
        ));
    }
}
