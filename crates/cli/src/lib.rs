//! The `comfy-rs` command-line tools behind `manage.sh`.
//!
//! Each action of `./manage.sh --action NAME` is one variant of [`ManageCommand`]; the
//! binary adds them as subcommands and calls [`run`], which returns the process exit code.
//!
//! # Layout
//! - [`instance`]: pid/log/state files of a background server under its base directory.
//! - [`lifecycle`]: `start`, `stop`, `restart`, `logs`.
//! - [`status`]: `status` (process, `/system_stats`, `/queue`, models, disk).
//! - [`gpu`]: `gpu-info` (`nvidia-smi`, else CPU and RAM).
//! - [`models`]: `list-models`, safetensors header checks, `download-models`, `demo`.
//! - [`workflow`]: UI→API conversion, validation, `import-workflow`, `execute-workflow`.
//! - [`client`]: the small HTTP/WebSocket client used to talk to a running server.
//! - [`sys`]: process and file-system facts (signals, `/proc`, free disk space).

pub mod client;
pub mod gpu;
pub mod instance;
pub mod lifecycle;
pub mod models;
pub mod status;
pub mod sys;
pub mod workflow;

/// The downloader crate, re-exported for the end-to-end tests (its mock hub).
pub use comfy_hub;

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Exit code for bad usage (unknown action, missing argument), as clap uses.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of `status` when no server is running (LSB convention).
pub const EXIT_NOT_RUNNING: i32 = 3;

/// One `manage.sh` action.
#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Start the server in the background (pid and log files under the base directory)
    Start(StartArgs),
    /// Stop the background server (SIGTERM, then SIGKILL after --timeout seconds)
    Stop(StopArgs),
    /// Stop the server if running, then start it again (reusing its previous flags by default)
    Restart(StartArgs),
    /// Show whether the server runs, its version, address, device, queue, models and free disk
    Status(InstanceArgs),
    /// Print the end of the server log (--follow keeps printing new lines)
    Logs(LogsArgs),
    /// Show NVIDIA GPUs (via nvidia-smi) or, without one, the CPU and RAM
    GpuInfo,
    /// Download models from Hugging Face into models/ (default: SDXL base 1.0 + SDXL VAE)
    DownloadModels(DownloadArgs),
    /// List every model folder with file sizes and each checkpoint's architecture
    ListModels(BaseArgs),
    /// Validate a workflow (API or editor UI format) and save it to the user's workflows
    ImportWorkflow(ImportArgs),
    /// Run a workflow on a running server (or in-process) and download its images
    ExecuteWorkflow(ExecuteArgs),
    /// Write a tiny random-weight checkpoint into models/checkpoints (no download needed)
    Demo(DemoArgs),
}

/// Where a server instance keeps its files.
#[derive(Debug, Clone, Args)]
pub struct BaseArgs {
    /// ComfyUI base directory (models/, input/, output/, user/; pid and log files)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub base_directory: PathBuf,
}

/// Which server instance: its base directory and, when not recorded there, its address.
#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// Port (default: the one recorded by `start`, else 8188)
    #[arg(long)]
    pub port: Option<u16>,
    /// Listen address(es), comma-separated (default: recorded by `start`, else 127.0.0.1)
    #[arg(long, value_name = "IP")]
    pub listen: Option<String>,
}

/// `start` / `restart` options; other server flags go after them (or after `--`).
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Seconds to wait for the port to answer
    #[arg(long, default_value_t = 120.0)]
    pub wait: f64,
    /// Further server flags passed through unchanged (e.g. --cpu --output-directory DIR)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "SERVER FLAGS")]
    pub server_args: Vec<String>,
}

/// `stop` options.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// `logs` options.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// Number of lines to show
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// Keep printing lines as they are written (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
}

/// `download-models` options.
#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// REPO[@REVISION]:FILE[:FOLDER], repeatable (default: SDXL base 1.0 and the SDXL VAE)
    #[arg(long = "model", value_name = "REPO:FILE[:FOLDER]")]
    pub models: Vec<String>,
    /// Download again even when a file of the right size is present
    #[arg(long)]
    pub force: bool,
}

/// `import-workflow` options.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// Workflow JSON (API format or the editor's UI format)
    #[arg(long, value_name = "FILE")]
    pub workflow: PathBuf,
    /// Name to save under (default: the file name)
    #[arg(long)]
    pub name: Option<String>,
    /// User directory (default: <base>/user)
    #[arg(long, value_name = "DIR")]
    pub user_directory: Option<PathBuf>,
    /// Replace an existing workflow of the same name
    #[arg(long)]
    pub overwrite: bool,
    /// Also write the API-format prompt to this file
    #[arg(long, value_name = "FILE")]
    pub api_output: Option<PathBuf>,
    /// Print validation errors as the JSON body /prompt would return
    #[arg(long)]
    pub json: bool,
}

/// `execute-workflow` options.
#[derive(Debug, Clone, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// Workflow JSON (API format or the editor's UI format)
    #[arg(long, value_name = "FILE")]
    pub workflow: PathBuf,
    /// Directory to download the output images into
    #[arg(long, value_name = "DIR", default_value = "output")]
    pub output: PathBuf,
    /// Server URL (default: the instance `start` recorded in --base-directory when it is
    /// running, else http://127.0.0.1:8188); when it does not answer the workflow runs in-process
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
    /// Never run in-process: fail when the server does not answer
    #[arg(long)]
    pub remote_only: bool,
}

/// `demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// Architecture: sd15 or sdxl
    #[arg(long, default_value = "sd15")]
    pub arch: String,
    /// Seed of the random weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the full-size layout (GBs) instead of the tiny one
    #[arg(long)]
    pub full: bool,
    /// File name (default: comfy-rs-demo-<arch>[-tiny].safetensors)
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs one action; returns the process exit code (errors are printed by the caller).
pub fn run(cmd: ManageCommand) -> anyhow::Result<i32> {
    match cmd {
        ManageCommand::Start(a) => lifecycle::start(&a),
        ManageCommand::Stop(a) => lifecycle::stop(&a),
        ManageCommand::Restart(a) => lifecycle::restart(&a),
        ManageCommand::Status(a) => status::status(&a),
        ManageCommand::Logs(a) => lifecycle::logs(&a),
        ManageCommand::GpuInfo => gpu::gpu_info(),
        ManageCommand::DownloadModels(a) => models::download_models(&a),
        ManageCommand::ListModels(a) => models::list_models(&a),
        ManageCommand::ImportWorkflow(a) => workflow::import::import_workflow(&a),
        ManageCommand::ExecuteWorkflow(a) => workflow::execute::execute_workflow(&a),
        ManageCommand::Demo(a) => models::demo(&a),
    }
}
