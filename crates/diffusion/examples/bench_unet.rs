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
//! (user + system) seconds; `--ops [--only TEXT] [--reps N]` micro-benchmarks single ops
//! instead (best of N runs). The allocator is
//! tuned as the server tunes it ([`comfy_diffusion::ops::tune_allocator`]) unless
//! `--no-alloc-tuning` is given. The recipe checkpoint is generated into `$COMFY_RECIPE_DIR` (default
//! `/tmp/comfy-recipe`) when missing. SDXL keeps UNet weights in F16 (cast per op) unless
//! `--f32`, SD1.5 in F32 unless `--f16`. On a GPU the UNet computes in its weights' dtype (F16 with `--f16`
//! or SDXL, as ComfyUI) and the VAE in BF16.
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

/// Runs `f` `reps` times and prints the best wall and CPU seconds (quieter than one run on
/// a busy machine).
fn best<T>(
    label: &str,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<T>,
) -> candle_core::Result<Option<T>> {
    if let Some(only) = OPS_FILTER.get() {
        if !label.contains(only.as_str()) {
            return Ok(None);
        }
    }
    let reps = OPS_REPS.get().copied().unwrap_or(reps);
    let mut wall = f64::MAX;
    let mut cpu = f64::MAX;
    let mut last = None;
    for _ in 0..reps.max(1) {
        let c0 = cpu_seconds();
        let t = Instant::now();
        last = Some(f()?);
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c0);
    }
    println!(
        "{label}: best of {reps}: wall {:.1} ms, cpu {:.3}s",
        wall * 1e3,
        cpu
    );
    Ok(last)
}

/// `--ops --only TEXT`: run only the op benchmarks whose label contains TEXT.
static OPS_FILTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// `--ops --reps N`: repetitions per op benchmark.
static OPS_REPS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Micro-benchmarks of the hot ops at SD1.5 512×512 batch-2 shapes (best of 3 runs each).
fn bench_ops() -> candle_core::Result<()> {
    use comfy_diffusion::ops;
    let dev = Device::Cpu;
    let r = 3;
    let x = Tensor::randn(0f32, 1.0, (2, 320, 64, 64), &dev)?;
    let w = Tensor::randn(0f32, 0.02, (320, 320, 3, 3), &dev)?;
    let bias = Tensor::randn(0f32, 0.02, 320, &dev)?;
    let gflop = 2.0 * 2.0 * 320.0 * 320.0 * 9.0 * 4096.0 / 1e9;
    println!("conv 3x3 320->320 @64x64 b2 = {gflop:.1} GFLOP");
    best("  conv2d (im2col bands, bias)", r, || {
        ops::conv2d_im2col(&x, &w, Some(&bias), 1, 1)
    })?;
    best("  conv2d (Winograd F(2x2,3x3), bias)", r, || {
        ops::conv2d_winograd(&x, &w, Some(&bias))
    })?;
    for (bn, c, o, hw) in [
        (1usize, 128usize, 128usize, 256usize),
        (1, 512, 512, 64),
        (1, 512, 512, 32),
        (2, 320, 320, 32),
        (2, 640, 640, 16),
        (2, 1280, 1280, 16),
        (2, 1280, 1280, 8),
        (2, 960, 320, 32),
    ] {
        let xv = Tensor::randn(0f32, 1.0, (bn, c, hw, hw), &dev)?;
        let wv = Tensor::randn(0f32, 0.02, (o, c, 3, 3), &dev)?;
        let gf = 2.0 * (bn * o * c * 9 * hw * hw) as f64 / 1e9;
        best(
            &format!("  conv {c}->{o} @{hw}x{hw} b{bn} ({gf:.1} GFLOP) im2col"),
            r,
            || ops::conv2d_im2col(&xv, &wv, None, 1, 1),
        )?;
        best(
            &format!("  conv {c}->{o} @{hw}x{hw} b{bn} ({gf:.1} GFLOP) Winograd"),
            r,
            || ops::conv2d_winograd(&xv, &wv, None),
        )?;
    }
    let g = Tensor::ones(320, DType::F32, &dev)?;
    let b = Tensor::zeros(320, DType::F32, &dev)?;
    best("  group_norm+silu fused", r, || {
        ops::group_norm_act(&x, &g, &b, 32, 1e-5, true)
    })?;
    best("  group_norm generic", r, || {
        ops::group_norm(&x, &g, &b, 32, 1e-5)
    })?;
    let q = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev)?;
    println!(
        "self-attention 4096 tokens, 8 heads x 40, b2 = {:.1} GFLOP",
        2.0 * 2.0 * 2.0 * 4096.0 * 4096.0 * 320.0 / 1e9
    );
    best("  attention (fused)", r, || ops::attention(&q, &q, &q, 8))?;
    let ctx = Tensor::randn(0f32, 1.0, (2, 77, 320), &dev)?;
    best("  cross-attention 4096 x 77 tokens", r, || {
        ops::attention(&q, &ctx, &ctx, 8)
    })?;
    let qv = Tensor::randn(0f32, 1.0, (1, 4096, 512), &dev)?;
    best("  VAE attention 4096 tokens, 1 head x 512", r, || {
        ops::attention(&qv, &qv, &qv, 1)
    })?;
    let qh = Tensor::randn(0f32, 1.0, (16, 4096, 40), &dev)?;
    best(
        "  attention heads, generic path (score budget 2^25)",
        1,
        || ops::attention_heads_budget(&qh, &qh, &qh, 0.15, 1 << 25),
    )?;
    let lw = Tensor::randn(0f32, 0.02, (2560, 320), &dev)?;
    let lb = Tensor::randn(0f32, 0.02, 2560, &dev)?;
    let lin = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev)?;
    println!(
        "linear 8192x320 -> 2560 = {:.1} GFLOP",
        2.0 * 8192.0 * 320.0 * 2560.0 / 1e9
    );
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("weight".to_string(), lw.clone());
    tensors.insert("bias".to_string(), lb.clone());
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let linear = ops::Linear::load(vb, 320, 2560, true)?;
    best("  ops::Linear (fused bias)", r, || {
        use candle_core::Module;
        linear.forward(&lin)
    })?;
    best("  candle matmul (w transposed) + bias", r, || {
        lin.reshape((8192, 320))?
            .matmul(&lw.t()?)?
            .broadcast_add(&lb)
    })?;
    for (rows, i, o) in [
        (128usize, 1280usize, 1280usize),
        (32, 1280, 1280),
        (128, 1280, 10240),
        (2048, 320, 320),
    ] {
        let xl = Tensor::randn(0f32, 1.0, (rows, i), &dev)?;
        let wl = Tensor::randn(0f32, 0.02, (o, i), &dev)?;
        let wt = wl.t()?.contiguous()?;
        let gf = 2.0 * (rows * i * o) as f64 / 1e9;
        best(
            &format!("  linear rows {rows} {i}->{o} ({gf:.2} GFLOP) x·Wᵀ"),
            r * 5,
            || xl.matmul(&wl.t()?),
        )?;
        best(
            &format!("  linear rows {rows} {i}->{o} ({gf:.2} GFLOP) x·(Wᵀ contiguous)"),
            r * 5,
            || xl.matmul(&wt),
        )?;
    }
    let h = Tensor::randn(0f32, 1.0, (2, 4096, 2560), &dev)?;
    best("  geglu 8192x2560", r, || ops::geglu(&h))?;
    best("  chunk2 + a*gelu(gate)", r, || {
        let (a, gate) = ops::chunk2(&h, 2)?;
        a * ops::gelu(&gate)?
    })?;
    best("  candle a*gelu_erf(gate)", r, || {
        let (a, gate) = ops::chunk2(&h, 2)?;
        a * gate.gelu_erf()?
    })?;
    best("  layer norm 8192x320", r, || {
        candle_nn::ops::layer_norm(&lin, &g, &b, 1e-5)
    })?;
    best("  residual add 8192x320", r, || &lin + &lin)?;
    Ok(())
}

/// `--op-profile`: prints the ops' wall and CPU time per call shape (per step), largest
/// CPU time first (nested ops, e.g. a GEGLU's gelu, are counted in both).
fn print_op_profile(steps: usize) {
    let table = comfy_diffusion::ops::profile::take();
    if table.is_empty() {
        return;
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let wall: f64 = table.iter().map(|(_, e)| per(e.wall)).sum();
    let cpu: f64 = table.iter().map(|(_, e)| per(e.cpu)).sum();
    println!(
        "  ops per step: wall {wall:.0} ms, cpu {cpu:.0} ms in {} op shapes",
        table.len()
    );
    for (label, e) in table.iter().take(45) {
        println!(
            "  wall {:7.1} ms  cpu {:7.1} ms {:5} calls  {label}",
            per(e.wall),
            per(e.cpu),
            e.calls / steps as u64
        );
    }
}

/// The value after flag `name` (`--name V`), if given.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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
        Some(VramSampler {
            stop,
            peak,
            handle: Some(handle),
            baseline: (total - free) as u64,
            total: total as u64,
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn start(_dev: &Device) -> Option<Self> {
        None
    }

    /// Peak bytes used above the baseline so far.
    fn peak(&self) -> u64 {
        #[cfg(feature = "cuda")]
        {
            self.peak
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(self.baseline)
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
    // as the server does at start-up (`--no-alloc-tuning` measures glibc's defaults)
    if !args.iter().any(|a| a == "--no-alloc-tuning") {
        comfy_diffusion::ops::tune_allocator();
    }
    comfy_diffusion::ops::profile::set_enabled(args.iter().any(|a| a == "--op-profile"));
    if args.iter().any(|a| a == "--ops") {
        if let Some(only) = flag_value(&args, "--only") {
            let _ = OPS_FILTER.set(only);
        }
        if let Some(r) = flag_value(&args, "--reps") {
            let _ = OPS_REPS.set(r.parse()?);
        }
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
    let f16 = args.iter().any(|a| a == "--f16")
        || (arch == Arch::Sdxl && !args.iter().any(|a| a == "--f32"));
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

    let batch: usize = flag_value(&args, "--batch")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(2);
    let steps: Option<usize> = flag_value(&args, "--steps")
        .map(|v| v.parse())
        .transpose()?;
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
        // On a GPU the UNet computes in its weights' dtype (ComfyUI's F16 `unet_dtype`); on
        // the CPU in F32 whatever the storage.
        let compute = if dev.is_cpu() { DType::F32 } else { wdt };
        let unet = UNetModel::load(ckpt.var_builder(UNET_PREFIX, wdt, &dev), &cfg.unet)?
            .with_compute_dtype(compute);
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
            unet.forward(&x, &ts, &ctx, y.as_ref())?
                .sum_all()?
                .to_scalar::<f32>()
        };
        match steps {
            None => {
                timed(
                    &format!("UNet {size}x{size} batch {batch} (one CFG step)"),
                    step,
                )?;
            }
            Some(k) => {
                timed(&format!("UNet {size}x{size} batch {batch} warm-up"), step)?;
                comfy_diffusion::ops::profile::take();
                let t = Instant::now();
                for _ in 0..k.max(1) {
                    step()?;
                }
                let per = t.elapsed().as_secs_f64() / k.max(1) as f64;
                println!(
                    "UNet {size}x{size} batch {batch}: {per:.4} s/step over {} steps   {}",
                    k.max(1),
                    vm_hwm()
                );
                print_op_profile(k.max(1));
            }
        }
        if let Some(v) = &vram {
            v.report(&format!("UNet {size}x{size} batch {batch}"));
        }
    }
    drop(unet);
    println!("UNet dropped: {}", vm_hwm());
    comfy_diffusion::ops::release_memory();
    println!("after ops::release_memory(): {}", vm_hwm());

    if !skip_vae {
        let vae_cfg = cfg.vae.clone().ok_or("no VAE in checkpoint")?;
        let vae = timed("VAE load", || {
            // BF16 on a GPU (ComfyUI's `vae_dtype` on Ampere and newer), F32 on the CPU.
            let vdt = if dev.is_cpu() { DType::F32 } else { DType::BF16 };
            Vae::load(ckpt.var_builder(VAE_PREFIX, vdt, &dev), &vae_cfg)
        })?;
        for &size in &sizes {
            let l = size / 8;
            let z = Tensor::randn(0f32, 1.0, (1, 4, l, l), &dev)?;
            comfy_diffusion::ops::profile::take();
            timed(&format!("VAE decode {size}x{size}"), || {
                vae.decode_image(&z)?.sum_all()
            })?;
            print_op_profile(1);
        }
    }
    println!("peak {}", vm_hwm());
    Ok(())
}
