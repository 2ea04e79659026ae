//! The `comfy-rs` binary: the ComfyUI-compatible server and its command-line tools.
//!
//! With no subcommand it starts the server, taking ComfyUI's `main.py` flag names; every flag
//! can also come from a `COMFY_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// A native Rust reimplementation of the ComfyUI inference server.
#[derive(Parser, Debug)]
#[command(
    name = "comfy-rs",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Subcommands; none = `serve`.
#[derive(Subcommand, Debug)]
enum Command {
    /// Start the HTTP + WebSocket server (the default).
    Serve(ServeArgs),
    /// The tools behind manage.sh: start/stop/status/logs, models, workflows.
    Manage {
        #[command(subcommand)]
        action: comfy_cli::ManageCommand,
    },
    /// Write a random-weight checkpoint in the real single-file key layout
    /// (`shared/spec/random-checkpoint.md`; `--tiny` for a small test/demo model).
    MakeCheckpoint(MakeCheckpointArgs),
}

/// `make-checkpoint` options.
#[derive(Args, Debug, Clone)]
struct MakeCheckpointArgs {
    /// Architecture: `sd15` or `sdxl`.
    #[arg(long, value_parser = ["sd15", "sdxl"])]
    arch: String,
    /// Small widths and depths (same key scheme): runs a text-to-image in seconds on a CPU.
    #[arg(long)]
    tiny: bool,
    /// Seed of the weights (seed 0 of the full-size recipe matches the spec's sha256).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (`.safetensors`).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Writes the checkpoint `args` describes.
fn make_checkpoint(args: MakeCheckpointArgs) -> anyhow::Result<()> {
    let arch: comfy_diffusion::recipe::Arch = args.arch.parse().context("--arch")?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started = std::time::Instant::now();
    comfy_diffusion::recipe::write_recipe_checkpoint(arch, args.tiny, args.seed, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} bytes, {}{} seed {}) in {:.1}s",
        args.out.display(),
        size,
        args.arch,
        if args.tiny { " tiny" } else { "" },
        args.seed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The server's flags (ComfyUI `main.py` names).
#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address(es) to listen on, comma separated; bare `--listen` means 0.0.0.0.
    #[arg(long, env = "COMFY_LISTEN", default_value = "127.0.0.1", num_args = 0..=1, default_missing_value = "0.0.0.0", value_name = "IP")]
    listen: String,
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long, env = "COMFY_PORT", default_value_t = 8188)]
    port: u16,
    /// ComfyUI base directory (models/, input/, output/, temp/, user/); default: current directory.
    #[arg(long, env = "COMFY_BASE_DIRECTORY")]
    base_directory: Option<PathBuf>,
    /// Output directory (SaveImage results).
    #[arg(long, env = "COMFY_OUTPUT_DIRECTORY")]
    output_directory: Option<PathBuf>,
    /// Input directory (LoadImage sources, uploads).
    #[arg(long, env = "COMFY_INPUT_DIRECTORY")]
    input_directory: Option<PathBuf>,
    /// Directory whose `temp/` subfolder holds temporary files (previews).
    #[arg(long, env = "COMFY_TEMP_DIRECTORY")]
    temp_directory: Option<PathBuf>,
    /// User directory (settings, workflows).
    #[arg(long, env = "COMFY_USER_DIRECTORY")]
    user_directory: Option<PathBuf>,
    /// extra_model_paths.yaml file(s), ComfyUI's format.
    #[arg(long, env = "COMFY_EXTRA_MODEL_PATHS_CONFIG", num_args = 1.., value_name = "PATH")]
    extra_model_paths_config: Vec<PathBuf>,
    /// Send CORS headers allowing ORIGIN (default `*`) instead of refusing cross-origin requests.
    #[arg(long, env = "COMFY_ENABLE_CORS_HEADER", num_args = 0..=1, default_missing_value = "*", value_name = "ORIGIN")]
    enable_cors_header: Option<String>,
    /// Maximum request body size in MB.
    #[arg(long, env = "COMFY_MAX_UPLOAD_SIZE", default_value_t = 100.0)]
    max_upload_size: f64,
    /// Run on the CPU only.
    #[arg(long, env = "COMFY_CPU")]
    cpu: bool,
    /// Run the models on this CUDA device (needs a build with `--features cuda`); default:
    /// device 0 when the build has CUDA and a GPU opens, else the CPU.
    #[arg(long, env = "COMFY_CUDA_DEVICE", value_name = "DEVICE_ID", conflicts_with = "cpu")]
    cuda_device: Option<usize>,
    /// Latent preview method.
    #[arg(long, env = "COMFY_PREVIEW_METHOD", default_value = "none", value_parser = ["none", "auto", "latent2rgb", "taesd"])]
    preview_method: String,
    /// Directory of the web frontend to serve at `/`.
    #[arg(long, env = "COMFY_FRONT_END_ROOT")]
    front_end_root: Option<PathBuf>,
    /// Refuse new prompts (HTTP 503) when this many are pending.
    #[arg(long, env = "COMFY_MAX_QUEUE_SIZE")]
    max_queue_size: Option<usize>,
    /// Interrupt a prompt that runs longer than this many seconds.
    #[arg(long, env = "COMFY_MAX_EXECUTION_TIME", value_name = "SECONDS")]
    max_execution_time: Option<f64>,
    /// Load this checkpoint (name in models/checkpoints) before the server answers; repeatable.
    #[arg(long, env = "COMFY_PRELOAD_CHECKPOINT", value_name = "NAME", value_delimiter = ',')]
    preload_checkpoint: Vec<String>,
    /// Cap in MB on the memory resident models may hold; a load past it fails with out_of_memory.
    #[arg(long, env = "COMFY_MEMORY_CAP", value_name = "MB")]
    memory_cap: Option<f64>,
    /// Keep the models in F32 on the GPU too (ComfyUI's `--force-fp32`).
    #[arg(long, env = "COMFY_FORCE_FP32", group = "fp_group")]
    force_fp32: bool,
    /// Run the UNet in F16 on any GPU (`--force-fp16`).
    #[arg(long, env = "COMFY_FORCE_FP16", group = "fp_group")]
    force_fp16: bool,
    /// Store and run the UNet in F32.
    #[arg(long, group = "unet_group")]
    fp32_unet: bool,
    /// Store the UNet in F16 (computed in F16 on a GPU, in F32 on the CPU).
    #[arg(long, group = "unet_group")]
    fp16_unet: bool,
    /// Store the UNet in BF16 (computed in BF16 on a GPU, in F32 on the CPU).
    #[arg(long, group = "unet_group")]
    bf16_unet: bool,
    /// Run the VAE in F32 (the fix for black SDXL images in F16).
    #[arg(long, group = "vae_group")]
    fp32_vae: bool,
    /// Run the VAE in F16.
    #[arg(long, group = "vae_group")]
    fp16_vae: bool,
    /// Run the VAE in BF16 (on a GPU; F32 on the CPU).
    #[arg(long, group = "vae_group")]
    bf16_vae: bool,
    /// Store the text encoders in F32 (they always run in F32; the default storage is F16).
    #[arg(long, group = "te_group")]
    fp32_text_enc: bool,
    /// Store the text encoders in F16 (the default).
    #[arg(long, group = "te_group")]
    fp16_text_enc: bool,
    /// Store the text encoders in BF16.
    #[arg(long, group = "te_group")]
    bf16_text_enc: bool,
    /// Log level (`RUST_LOG` syntax also accepted), e.g. `info`, `debug`.
    #[arg(long, env = "COMFY_VERBOSE", default_value = "info", num_args = 0..=1, default_missing_value = "debug")]
    verbose: String,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<comfy_server::ServerConfig> {
        let precision = self.precision();
        let base = match self.base_directory {
            Some(b) => b,
            None => std::env::current_dir().context("current directory")?,
        };
        let max_execution_time = match self.max_execution_time {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                anyhow::bail!("--max-execution-time must be a positive number of seconds, got {s}")
            }
            None => None,
        };
        if let Some(mb) = self.memory_cap {
            if !(mb.is_finite() && mb > 0.0) {
                anyhow::bail!("--memory-cap must be a positive number of MB, got {mb}");
            }
        }
        if let Some(n) = self.cuda_device {
            if !comfy_nodes::sd::device::cuda_compiled() {
                anyhow::bail!(
                    "--cuda-device {n}: this comfy-rs build has no CUDA support; build it with `cargo build --release --features cuda`, or run with --cpu"
                );
            }
        }
        if !(self.max_upload_size.is_finite() && self.max_upload_size > 0.0) {
            anyhow::bail!("--max-upload-size must be a positive number of MB");
        }
        Ok(comfy_server::ServerConfig {
            listen: self.listen,
            port: self.port,
            base_directory: base,
            output_directory: self.output_directory,
            input_directory: self.input_directory,
            temp_directory: self.temp_directory,
            user_directory: self.user_directory,
            extra_model_paths_config: self.extra_model_paths_config,
            cors_origin: self.enable_cors_header,
            max_upload_size_mb: self.max_upload_size,
            cpu: self.cpu,
            cuda_device: self.cuda_device,
            preview_method: self.preview_method,
            front_end_root: self.front_end_root,
            max_queue_size: self.max_queue_size,
            max_execution_time,
            preload_checkpoints: self.preload_checkpoint,
            memory_cap_mb: self.memory_cap,
            precision,
            ..Default::default()
        })
    }

    /// The precision flags as the model loader's overrides.
    fn precision(&self) -> comfy_nodes::sd::device::PrecisionOverrides {
        use candle_core::DType;
        let pick = |f32_: bool, f16: bool, bf16: bool| match (f32_, f16, bf16) {
            (true, _, _) => Some(DType::F32),
            (_, true, _) => Some(DType::F16),
            (_, _, true) => Some(DType::BF16),
            _ => None,
        };
        comfy_nodes::sd::device::PrecisionOverrides {
            force_fp32: self.force_fp32,
            force_fp16: self.force_fp16,
            unet: pick(self.fp32_unet, self.fp16_unet, self.bf16_unet),
            vae: pick(self.fp32_vae, self.fp16_vae, self.bf16_vae),
            text_encoder: pick(self.fp32_text_enc, self.fp16_text_enc, self.bf16_text_enc),
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.verbose))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime
        .block_on(comfy_server::run(config))
        .context("server")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Keep freed activations in the process for the next op instead of page-faulting fresh
    // memory on every op (before any other thread starts allocating).
    comfy_diffusion::ops::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Manage { action }) => std::process::exit(comfy_cli::run(action)?),
        Some(Command::MakeCheckpoint(args)) => make_checkpoint(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_flags_parse_like_comfyui() {
        let c = Cli::try_parse_from([
            "comfy-rs",
            "--listen",
            "--port",
            "9000",
            "--enable-cors-header",
            "--cpu",
        ])
        .unwrap();
        assert_eq!(c.serve.listen, "0.0.0.0");
        assert_eq!(c.serve.port, 9000);
        assert_eq!(c.serve.enable_cors_header.as_deref(), Some("*"));
        assert!(c.serve.cpu);
        let c = Cli::try_parse_from(["comfy-rs"]).unwrap();
        assert_eq!(c.serve.listen, "127.0.0.1");
        assert_eq!(c.serve.max_upload_size, 100.0);
        assert!(c.command.is_none());
        let c = Cli::try_parse_from([
            "comfy-rs",
            "--listen",
            "10.0.0.1",
            "--preview-method",
            "auto",
        ])
        .unwrap();
        assert_eq!(c.serve.listen, "10.0.0.1");
        assert!(Cli::try_parse_from(["comfy-rs", "--preview-method", "bogus"]).is_err());
        let c = Cli::try_parse_from([
            "comfy-rs",
            "--preload-checkpoint",
            "a.safetensors",
            "--preload-checkpoint",
            "b.safetensors",
            "--memory-cap",
            "512",
        ])
        .unwrap();
        assert_eq!(c.serve.preload_checkpoint, vec!["a.safetensors", "b.safetensors"]);
        assert_eq!(c.serve.memory_cap, Some(512.0));
        let c = Cli::try_parse_from(["comfy-rs", "make-checkpoint", "--arch", "sd15", "--tiny", "--out", "x.safetensors"]).unwrap();
        assert!(matches!(c.command, Some(Command::MakeCheckpoint(ref a)) if a.tiny && a.seed == 0 && a.arch == "sd15"));
        assert!(Cli::try_parse_from(["comfy-rs", "make-checkpoint", "--arch", "flux", "--out", "x"]).is_err());
        let c = Cli::try_parse_from(["comfy-rs", "serve", "--port", "1"]).unwrap();
        assert!(matches!(c.command, Some(Command::Serve(ref a)) if a.port == 1));
    }

    #[test]
    fn precision_flags() {
        use candle_core::DType;
        let c = Cli::try_parse_from(["comfy-rs", "--force-fp32", "--bf16-unet", "--fp32-vae"]).unwrap();
        let p = c.serve.into_config().unwrap().precision;
        assert!(p.force_fp32 && !p.force_fp16);
        assert_eq!((p.unet, p.vae), (Some(DType::BF16), Some(DType::F32)));
        let p = Cli::try_parse_from(["comfy-rs", "--fp16-vae"]).unwrap().serve.into_config().unwrap().precision;
        assert_eq!((p.unet, p.vae, p.force_fp32), (None, Some(DType::F16), false));
        // one choice per group, as ComfyUI's mutually exclusive groups
        assert!(Cli::try_parse_from(["comfy-rs", "--force-fp32", "--force-fp16"]).is_err());
        assert!(Cli::try_parse_from(["comfy-rs", "--fp16-unet", "--bf16-unet"]).is_err());
        assert!(Cli::try_parse_from(["comfy-rs", "--fp16-vae", "--fp32-vae"]).is_err());
        let p = Cli::try_parse_from(["comfy-rs", "--fp32-text-enc"]).unwrap().serve.into_config().unwrap().precision;
        assert_eq!(p.text_encoder, Some(DType::F32));
        assert!(Cli::try_parse_from(["comfy-rs", "--fp32-text-enc", "--bf16-text-enc"]).is_err());
    }

    #[test]
    fn cuda_device_flag() {
        let c = Cli::try_parse_from(["comfy-rs", "--cuda-device", "1"]).unwrap();
        assert_eq!(c.serve.cuda_device, Some(1));
        assert!(Cli::try_parse_from(["comfy-rs", "--cuda-device", "1", "--cpu"]).is_err());
        assert!(Cli::try_parse_from(["comfy-rs", "--cuda-device", "x"]).is_err());
        let c = Cli::try_parse_from(["comfy-rs"]).unwrap();
        assert_eq!(c.serve.cuda_device, None);
        let c = Cli::try_parse_from(["comfy-rs", "--cuda-device", "0"]).unwrap();
        let r = c.serve.into_config();
        if comfy_nodes::sd::device::cuda_compiled() {
            assert_eq!(r.unwrap().cuda_device, Some(0));
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("no CUDA support") && e.contains("--features cuda"), "{e}");
        }
    }
}
