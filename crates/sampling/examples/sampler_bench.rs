//! Sampler overhead per step at 128×128 latents (1×4×128×128, i.e. 1024² SD images), with a
//! near-free model (returns a precomputed tensor), so the time measured is the sampler's own
//! tensor maths, noise generation and bookkeeping. Run:
//! `cargo run -p comfy-sampling --release --example sampler_bench`
use std::time::Instant;

use candle_core::{Device, Tensor};
use comfy_sampling::cfg::{Denoised, Denoiser};
use comfy_sampling::schedule::ksampler_sigmas;
use comfy_sampling::{
    prepare_noise, sample_sigmas, ModelSampling, NormalMath, Result, SampleOptions, SAMPLER_NAMES,
};

struct Free {
    out: Tensor,
    calls: usize,
}

impl Denoiser for Free {
    fn denoise(&mut self, _x: &Tensor, _sigma: f32, need_uncond: bool) -> Result<Denoised> {
        self.calls += 1;
        Ok(Denoised {
            denoised: self.out.clone(),
            uncond: need_uncond.then(|| self.out.clone()),
        })
    }
}

fn main() -> Result<()> {
    let shape = [1usize, 4, 128, 128];
    let steps = 20;
    let t = Instant::now();
    let noise = prepare_noise(1, &shape, None, NormalMath::Avx2)?;
    println!(
        "prepare_noise 1x4x128x128: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let ms = ModelSampling::default();
    let x0 = (&noise * 0.1)?;
    // Baseline: one candle elementwise add at this size, to read the numbers below in
    // "elementwise ops per step" independently of machine load.
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        let _ = (&noise + &x0)?;
    }
    let op_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("baseline: one elementwise add = {op_ms:.3} ms");
    let filter: Option<String> = std::env::args().nth(1);
    println!(
        "{:<32} {:>10} {:>8} {:>10}",
        "sampler", "ms/step", "calls", "adds/step"
    );
    for name in SAMPLER_NAMES {
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) {
                continue;
            }
        }
        let sigmas = ksampler_sigmas(&ms, "karras", name, steps, 1.0)?;
        let x = (&noise * (sigmas[0] as f64))?;
        let mut den = Free {
            out: x0.clone(),
            calls: 0,
        };
        let mut opts = SampleOptions {
            seed: 1,
            model_sampling: ms.clone(),
            ..Default::default()
        };
        let t = Instant::now();
        let out = sample_sigmas(name, &mut den, &x, &sigmas, &mut opts)?;
        let _ = out.flatten_all()?.get(0)?;
        let dt = t.elapsed().as_secs_f64() * 1e3 / (sigmas.len() - 1) as f64;
        println!(
            "{name:<32} {dt:>10.3} {:>8} {:>10.1}",
            den.calls,
            dt / op_ms
        );
    }
    let _ = Device::Cpu;
    Ok(())
}
