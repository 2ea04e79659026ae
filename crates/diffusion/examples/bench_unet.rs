//! CPU benchmark of the UNet and VAE on the full-size recipe checkpoints.
//!
//! ```text
//! cargo run --release -p comfy-diffusion --example bench_unet -- sd15 [256,512] [--f16]
//! cargo run --release -p comfy-diffusion --example bench_unet -- sdxl [256,512]
//! ```
//!
//! Prints checkpoint open + UNet load time, one UNet evaluation at batch 2 (one CFG step)
//! per image size, one VAE decode (batch 1) per image size, and the process's peak resident
//! memory (`VmHWM`) and anonymous memory (`RssAnon`). Times are wall and process CPU
//! (user + system) seconds; `--ops` micro-benchmarks single ops instead. The recipe checkpoint is generated into `$COMFY_RECIPE_DIR` (default
//! `/tmp/comfy-recipe`) when missing. SDXL keeps UNet weights in F16 (cast per op), SD1.5
//! in F32 unless `--f16`.
//!
//! GPU (a build with `--features cuda`):
//!
//! ```text
//! cargo run --release -p comfy-diffusion --features cuda --example bench_unet -- \
//!     sdxl 1024 --cuda [--cuda-device 0] [--batch 2] [--steps 5] --no-vae
//! ```
//!
//! `--batch B` (default 2) rows per UNet call; `--steps K` timed UNet calls after one
//! untimed warm-up (default: 1 call, no warm-up, as on the CPU), printed as seconds per step;
//! on CUDA also the device memory peak (driver figures, sampled every 2 ms while the UNet
//! runs, minus what was in use before the weights loaded).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use comfy_diffusion::checkpoint::{Checkpoint, UNET_PREFIX, VAE_PREFIX};
use comfy_diffusion::recipe::{write_recipe_checkpoint, Arch};
use comfy_diffusion::unet::UNetModel;
use comfy_diffusion::vae::Vae;

/// Peak resident memory (`VmHWM`, includes the checkpoint's mapped file pages) and the
/// current anonymous resident memory (`RssAnon`: weights and activations).
fn vm_hwm() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| format!("{name} unknown"))
    };
    format!("{}, {}", field("VmHWM"), field("RssAnon"))
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are the 12th and 13th
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` once and prints wall and CPU time.
fn timed<T>(label: &str, f: impl FnOnce() -> candle_core::Result<T>) -> candle_core::Result<T> {
    let c0 = cpu_seconds();
    let t = Instant::now();
    let r = f()?;
    println!(
        "{label}: wall {:.2?}, cpu {:.1}s   {}",
        t.elapsed(),
        cpu_seconds() - c0,
        vm_hwm()
    );
    Ok(r)
}

/// Micro-benchmarks of the hot ops at SD1.5 512×512 batch-2 shapes.
fn bench_ops() -> candle_core::Result<()> {
    use comfy_diffusion::ops;
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 320, 64, 64), &dev)?;
    let w = Tensor::randn(0f32, 0.02, (320, 320, 3, 3), &dev)?;
    let gflop = 2.0 * 2.0 * 320.0 * 320.0 * 9.0 * 4096.0 / 1e9;
    println!("conv 3x3 320->320 @64x64 b2 = {gflop:.1} GFLOP");
    timed("  conv2d (candle)", || {
        ops::conv2d(&x, &w, None, 1, 1)?.sum_all()
    })?;
    timed("  conv2d (im2col bands)", || {
        ops::conv2d_im2col(&x, &w, None, 1, 1)?.sum_all()
    })?;
    let g = Tensor::ones(320, DType::F32, &dev)?;
    let b = Tensor::zeros(320, DType::F32, &dev)?;
    timed("  group_norm+silu fused", || {
        ops::group_norm_act(&x, &g, &b, 32, 1e-5, true)?.sum_all()
    })?;
    timed("  group_norm generic", || {
        ops::group_norm(&x, &g, &b, 32, 1e-5)?.sum_all()
    })?;
    let q = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev)?;
    println!(
        "self-attention 4096 tokens, 8 heads x 40, b2 = {:.1} GFLOP",
        2.0 * 2.0 * 2.0 * 4096.0 * 4096.0 * 320.0 / 1e9
    );
    timed("  attention", || ops::attention(&q, &q, &q, 8)?.sum_all())?;
    let qh = Tensor::randn(0f32, 1.0, (16, 4096, 40), &dev)?;
    for budget in [1usize << 25, 1 << 22, 1 << 20] {
        timed(
            &format!(
                "  attention heads, score budget 2^{}",
                budget.trailing_zeros()
            ),
            || ops::attention_heads_budget(&qh, &qh, &qh, 0.15, budget)?.sum_all(),
        )?;
    }
    // one query slice of it, step by step
    let qh = Tensor::randn(0f32, 1.0, (16, 512, 40), &dev)?;
    let kh = Tensor::randn(0f32, 1.0, (16, 4096, 40), &dev)?;
    let kt = kh.t()?;
    let s = timed("    q·kT (one 512-query slice)", || qh.matmul(&kt))?;
    let s2 = timed("    × scale", || s.affine(0.15, 0.0))?;
    let p = timed("    softmax", || candle_nn::ops::softmax_last_dim(&s2))?;
    timed("    p·v", || p.matmul(&kh))?;
    let ktc = kt.contiguous()?;
    timed("    q·kT with kT contiguous", || qh.matmul(&ktc))?;
    let lw = Tensor::randn(0f32, 0.02, (2560, 320), &dev)?;
    let lin = Tensor::randn(0f32, 1.0, (8192, 320), &dev)?;
    println!(
        "linear 8192x320 -> 2560 = {:.1} GFLOP",
        2.0 * 8192.0 * 320.0 * 2560.0 / 1e9
    );
    timed("  matmul (w transposed)", || {
        lin.matmul(&lw.t()?)?.sum_all()
    })?;
    let lwt = lw.t()?.contiguous()?;
    timed("  matmul (w pre-transposed)", || {
        lin.matmul(&lwt)?.sum_all()
    })?;
    Ok(())
}

/// The value after flag `name` (`--name V`), if given.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Samples the device's used memory (driver figures) every 2 ms on a thread; `peak()` is
/// the largest `total - free` seen. A no-op on the CPU.
struct VramSampler {
    #[cfg(feature = "cuda")]
    stop: Arc<std::sync::atomic::AtomicBool>,
    #[cfg(feature = "cuda")]
    peak: Arc<std::sync::atomic::AtomicU64>,
    #[cfg(feature = "cuda")]
    handle: Option<std::thread::JoinHandle<()>>,
    /// Device bytes in use before the model loaded (context, other processes).
    baseline: u64,
    total: u64,
}

impl VramSampler {
    #[cfg(feature = "cuda")]
    fn start(dev: &Device) -> Option<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let ctx = dev.as_cuda_device().ok()?.cuda_stream().context().clone();
        let (free, total) = ctx.mem_get_info().ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new((total - free) as u64));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok((free, total)) = ctx.mem_get_info() {
                    p.fetch_max((total - free) as u64, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        Some(VramSampler { stop, peak, handle: Some(handle), baseline: (total - free) as u64, total: total as u64 })
    }

    #[cfg(not(feature = "cuda"))]
    fn start(_dev: &Device) -> Option<Self> {
        None
    }

    /// Peak bytes used above the baseline so far.
    fn peak(&self) -> u64 {
        #[cfg(feature = "cuda")]
        {
            self.peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(self.baseline)
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    fn report(&self, label: &str) {
        println!(
            "{label}: VRAM peak {:.0} MiB above the {:.0} MiB in use before loading (device total {:.0} MiB)",
            self.peak() as f64 / 1048576.0,
            self.baseline as f64 / 1048576.0,
            self.total as f64 / 1048576.0
        );
    }
}

impl Drop for VramSampler {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--ops") {
        bench_ops()?;
        return Ok(());
    }
    let arch: Arch = args.first().map(|s| s.as_str()).unwrap_or("sd15").parse()?;
    // flags that take a value, and their values, are not the size list
    let valued = ["--batch", "--steps", "--cuda-device"];
    let sizes: Vec<usize> = args
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, a)| !a.starts_with("--") && !valued.contains(&args[i - 1].as_str()))
        .map(|(_, a)| a)
        .next()
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512]);
    let f16 = args.iter().any(|a| a == "--f16") || arch == Arch::Sdxl;
    let skip_vae = args.iter().any(|a| a == "--no-vae");

    let dir = std::env::var_os("COMFY_RECIPE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/comfy-recipe"));
    std::fs::create_dir_all(&dir)?;
    let (name, bytes) = match arch {
        Arch::Sd15 => ("sd15_recipe_s0.safetensors", 2_132_625_150u64),
        Arch::Sdxl => ("sdxl_recipe_s0.safetensors", 6_938_041_144u64),
    };
    let path = dir.join(name);
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes) {
        let t = Instant::now();
        let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
        write_recipe_checkpoint(arch, false, 0, &tmp)?;
        std::fs::rename(&tmp, &path)?;
        println!("generated {} in {:.1?}", path.display(), t.elapsed());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "{arch:?}: {} ({threads} threads, UNet weights {})",
        path.display(),
        if f16 { "F16" } else { "F32" }
    );

    let batch: usize = flag_value(&args, "--batch").map(|v| v.parse()).transpose()?.unwrap_or(2);
    let steps: Option<usize> = flag_value(&args, "--steps").map(|v| v.parse()).transpose()?;
    let cuda_ordinal: Option<usize> = match flag_value(&args, "--cuda-device") {
        Some(v) => Some(v.parse()?),
        None if args.iter().any(|a| a == "--cuda") => Some(0),
        None => None,
    };
    let dev = match cuda_ordinal {
        // Fails with "not compiled with cuda" unless built with `--features cuda`.
        Some(n) => Device::new_cuda(n)?,
        None => Device::Cpu,
    };
    println!("device {dev:?}, batch {batch}");
    let vram = VramSampler::start(&dev);
    let wdt = if f16 { DType::F16 } else { DType::F32 };
    let (cfg, unet) = timed("open + detect + UNet load", || {
        let ckpt = Checkpoint::open(&path).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let cfg = ckpt
            .detect()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let ckpt = Arc::new(ckpt);
        let unet = UNetModel::load(ckpt.var_builder(UNET_PREFIX, wdt, &dev), &cfg.unet)?;
        Ok(((cfg, ckpt), unet))
    })?;
    let (cfg, ckpt) = cfg;

    let ctx_dim = cfg.unet.context_dim;
    for &size in &sizes {
        let l = size / 8;
        let x = Tensor::randn(0f32, 1.0, (batch, 4, l, l), &dev)?;
        let ctx = Tensor::randn(0f32, 1.0, (batch, 77, ctx_dim), &dev)?;
        let y = match cfg.unet.adm_in_channels {
            Some(a) => Some(Tensor::randn(0f32, 1.0, (batch, a), &dev)?),
            None => None,
        };
        let ts = vec![999.0f32; batch];
        // `to_scalar` copies the result to the host, so the time includes the whole call.
        let step = || -> candle_core::Result<f32> {
            unet.forward(&x, &ts, &ctx, y.as_ref())?.sum_all()?.to_scalar::<f32>()
        };
        match steps {
            None => {
                timed(&format!("UNet {size}x{size} batch {batch} (one CFG step)"), step)?;
            }
            Some(k) => {
                timed(&format!("UNet {size}x{size} batch {batch} warm-up"), step)?;
                let t = Instant::now();
                for _ in 0..k.max(1) {
                    step()?;
                }
                let per = t.elapsed().as_secs_f64() / k.max(1) as f64;
                println!("UNet {size}x{size} batch {batch}: {per:.4} s/step over {} steps   {}", k.max(1), vm_hwm());
            }
        }
        if let Some(v) = &vram {
            v.report(&format!("UNet {size}x{size} batch {batch}"));
        }
    }
    drop(unet);

    if !skip_vae {
        let vae_cfg = cfg.vae.clone().ok_or("no VAE in checkpoint")?;
        let vae = timed("VAE load", || {
            Vae::load(ckpt.var_builder(VAE_PREFIX, DType::F32, &dev), &vae_cfg)
        })?;
        for &size in &sizes {
            let l = size / 8;
            let z = Tensor::randn(0f32, 1.0, (1, 4, l, l), &dev)?;
            timed(&format!("VAE decode {size}x{size}"), || {
                vae.decode_image(&z)?.sum_all()
            })?;
        }
    }
    println!("peak {}", vm_hwm());
    Ok(())
}
