//! The server's settings (filled from the command line by the binary) and the directory
//! layout they produce, including ComfyUI's `extra_model_paths.yaml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_graph::folders::ModelFolder;
use comfy_graph::Folders;

use crate::error::ServerError;
use crate::paths;

/// Everything `comfy_server::run` needs; mirrors ComfyUI's `main.py` flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Comma-separated listen addresses (`127.0.0.1`, `0.0.0.0`, `0.0.0.0,::`).
    pub listen: String,
    /// TCP port; 0 picks a free one (the chosen port is printed).
    pub port: u16,
    pub base_directory: PathBuf,
    pub output_directory: Option<PathBuf>,
    pub input_directory: Option<PathBuf>,
    /// ComfyUI semantics: the temp dir is `<this>/temp`.
    pub temp_directory: Option<PathBuf>,
    pub user_directory: Option<PathBuf>,
    pub extra_model_paths_config: Vec<PathBuf>,
    /// `Some(origin)` = `--enable-cors-header` (default origin `*`); `None` = origin-only check.
    pub cors_origin: Option<String>,
    /// Request body limit in MiB (`--max-upload-size`).
    pub max_upload_size_mb: f64,
    /// `--cpu`: run the models on the CPU even when a GPU is available.
    pub cpu: bool,
    /// `--cuda-device N`: run the models on CUDA device `N` (needs a `cuda` build). With
    /// neither this nor `cpu`, CUDA device 0 is used when the build has CUDA and it opens.
    pub cuda_device: Option<usize>,
    /// `none`, `auto`, `latent2rgb` or `taesd`.
    pub preview_method: String,
    /// Directory holding the web frontend (`index.html`, `extensions/`), if any.
    pub front_end_root: Option<PathBuf>,
    pub max_queue_size: Option<usize>,
    pub max_execution_time: Option<Duration>,
    /// History cap (ComfyUI's `MAXIMUM_HISTORY_SIZE`).
    pub max_history: usize,
    /// Checkpoints (names in `models/checkpoints`) loaded before the server answers.
    pub preload_checkpoints: Vec<String>,
    /// Cap in MiB on the memory resident models may hold (`--memory-cap`); a load past it is
    /// an `out_of_memory` execution error.
    pub memory_cap_mb: Option<f64>,
    /// ComfyUI's precision flags (`--force-fp32`, `--fp16-unet`, `--fp32-vae`, …).
    pub precision: comfy_nodes::sd::device::PrecisionOverrides,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1".into(),
            port: 8188,
            base_directory: PathBuf::from("."),
            output_directory: None,
            input_directory: None,
            temp_directory: None,
            user_directory: None,
            extra_model_paths_config: Vec::new(),
            cors_origin: None,
            max_upload_size_mb: 100.0,
            cpu: false,
            cuda_device: None,
            preview_method: "none".into(),
            front_end_root: None,
            max_queue_size: None,
            max_execution_time: None,
            max_history: 10000,
            preload_checkpoints: Vec::new(),
            memory_cap_mb: None,
            precision: Default::default(),
        }
    }
}

impl ServerConfig {
    /// The compute device the flags ask for (`--cpu` wins over `--cuda-device`).
    pub fn device_request(&self) -> comfy_nodes::sd::device::DeviceRequest {
        use comfy_nodes::sd::device::DeviceRequest;
        match (self.cpu, self.cuda_device) {
            (true, _) => DeviceRequest::Cpu,
            (false, Some(n)) => DeviceRequest::Cuda(n),
            (false, None) => DeviceRequest::Auto,
        }
    }

    /// The memory cap in bytes, if one is set.
    pub fn memory_cap_bytes(&self) -> Option<u64> {
        self.memory_cap_mb.filter(|mb| *mb > 0.0).map(|mb| (mb * 1024.0 * 1024.0).round() as u64)
    }

    /// The body limit in bytes.
    pub fn max_upload_bytes(&self) -> usize {
        (self.max_upload_size_mb.max(0.0) * 1024.0 * 1024.0).round() as usize
    }

    /// Builds the directory layout: defaults under the base directory, the directory
    /// overrides, the `custom_nodes` key, then every extra-model-paths file in order.
    pub fn folders(&self) -> Result<Folders, ServerError> {
        let base = paths::absolute(&self.base_directory);
        let mut f = Folders::new(&base);
        if let Some(out) = &self.output_directory {
            let out = paths::absolute(out);
            for m in &mut f.models {
                for d in &mut m.dirs {
                    if let Ok(rest) = d.strip_prefix(&f.output) {
                        *d = out.join(rest);
                    }
                }
            }
            f.output = out;
        }
        if let Some(i) = &self.input_directory {
            f.input = paths::absolute(i);
        }
        if let Some(t) = &self.temp_directory {
            f.temp = paths::absolute(t).join("temp");
        }
        if let Some(u) = &self.user_directory {
            f.user = paths::absolute(u);
        }
        if f.model_folder("custom_nodes").is_none() {
            let at = f
                .models
                .iter()
                .position(|m| m.name == "upscale_models")
                .map(|i| i + 1)
                .unwrap_or(f.models.len());
            f.models.insert(
                at,
                ModelFolder {
                    name: "custom_nodes".into(),
                    dirs: vec![base.join("custom_nodes")],
                    extensions: Vec::new(),
                },
            );
        }
        for file in &self.extra_model_paths_config {
            apply_extra_paths(&mut f, file)?;
        }
        Ok(f)
    }
}

/// Reads one `extra_model_paths.yaml` (ComfyUI's format) and adds its directories.
pub fn apply_extra_paths(folders: &mut Folders, file: &Path) -> Result<(), ServerError> {
    let err = |message: String| ServerError::ExtraPaths {
        path: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let yaml_dir = paths::absolute(file.parent().unwrap_or(Path::new(".")));
    apply_extra_paths_text(folders, &text, &yaml_dir).map_err(err)
}

fn yaml_scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        _ => None,
    }
}

fn expand_user(s: &str) -> String {
    match (s.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => s.to_string(),
    }
}

/// Applies the YAML text of an extra-model-paths file; relative paths are taken from `yaml_dir`.
pub fn apply_extra_paths_text(
    folders: &mut Folders,
    text: &str,
    yaml_dir: &Path,
) -> Result<(), String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let serde_norway::Value::Mapping(sections) = doc else {
        return if doc.is_null() {
            Ok(())
        } else {
            Err("top level is not a mapping".into())
        };
    };
    for (_, conf) in sections {
        let serde_norway::Value::Mapping(conf) = conf else {
            continue;
        };
        let mut base_path: Option<PathBuf> = None;
        let mut is_default = false;
        for (k, v) in &conf {
            match k.as_str() {
                Some("base_path") => {
                    if let Some(s) = yaml_scalar(v) {
                        let p = PathBuf::from(expand_user(&s));
                        base_path = Some(if p.is_absolute() { p } else { yaml_dir.join(p) });
                    }
                }
                Some("is_default") => is_default = matches!(v, serde_norway::Value::Bool(true)),
                _ => {}
            }
        }
        for (k, v) in &conf {
            let Some(key) = k.as_str() else { continue };
            if key == "base_path" || key == "is_default" {
                continue;
            }
            let Some(value) = yaml_scalar(v) else {
                continue;
            };
            for line in value.split('\n') {
                if line.is_empty() {
                    continue;
                }
                let line = expand_user(line);
                let full = match &base_path {
                    Some(b) => paths::normalize_join(b, &line),
                    None => paths::normalize_join(yaml_dir, &line),
                };
                add_model_folder_path(folders, key, full, is_default);
            }
        }
    }
    Ok(())
}

/// ComfyUI's `add_model_folder_path`: append (or prepend when `is_default`) a directory to a
/// folder key, creating the key (listing every file) if it is new.
pub fn add_model_folder_path(folders: &mut Folders, name: &str, dir: PathBuf, is_default: bool) {
    let name = Folders::canonical_name(name).to_string();
    if let Some(f) = folders.models.iter_mut().find(|f| f.name == name) {
        if let Some(pos) = f.dirs.iter().position(|d| d == &dir) {
            if is_default {
                let d = f.dirs.remove(pos);
                f.dirs.insert(0, d);
            }
        } else if is_default {
            f.dirs.insert(0, dir);
        } else {
            f.dirs.push(dir);
        }
    } else {
        folders.models.push(ModelFolder {
            name,
            dirs: vec![dir],
            extensions: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_paths_follow_comfyui_rules() {
        let mut f = Folders::new("/base");
        let yaml = "a111:\n    base_path: /sd/webui\n    checkpoints: models/Stable-diffusion\n    clip: models/CLIP\n    controlnet: |\n        models/ControlNet\n        extensions/cn\n\
mine:\n    is_default: true\n    checkpoints: rel/ckpts\n    brand_new: /x/y\n";
        apply_extra_paths_text(&mut f, yaml, Path::new("/cfg")).unwrap();
        let ck = f.model_folder("checkpoints").unwrap();
        assert_eq!(ck.dirs[0], PathBuf::from("/cfg/rel/ckpts"));
        assert_eq!(
            ck.dirs.last().unwrap(),
            &PathBuf::from("/sd/webui/models/Stable-diffusion")
        );
        assert!(f
            .model_folder("text_encoders")
            .unwrap()
            .dirs
            .contains(&PathBuf::from("/sd/webui/models/CLIP")));
        let cn = f.model_folder("controlnet").unwrap();
        assert!(cn.dirs.contains(&PathBuf::from("/sd/webui/extensions/cn")));
        let new = f.model_folder("brand_new").unwrap();
        assert!(new.extensions.is_empty());
        assert_eq!(new.dirs, vec![PathBuf::from("/x/y")]);
    }

    #[test]
    fn directory_overrides() {
        let c = ServerConfig {
            base_directory: "/b".into(),
            output_directory: Some("/o".into()),
            temp_directory: Some("/t".into()),
            ..Default::default()
        };
        let f = c.folders().unwrap();
        assert_eq!(f.output, PathBuf::from("/o"));
        assert_eq!(f.temp, PathBuf::from("/t/temp"));
        assert!(f
            .model_folder("checkpoints")
            .unwrap()
            .dirs
            .contains(&PathBuf::from("/o/checkpoints")));
        let names: Vec<_> = f.models.iter().map(|m| m.name.as_str()).collect();
        let i = names.iter().position(|n| *n == "custom_nodes").unwrap();
        assert_eq!(names[i - 1], "upscale_models");
        assert_eq!(c.max_upload_bytes(), 104857600);
    }

    #[test]
    fn device_flags() {
        use comfy_nodes::sd::device::DeviceRequest;
        let c = ServerConfig::default();
        assert_eq!(c.device_request(), DeviceRequest::Auto);
        let c = ServerConfig { cuda_device: Some(1), ..Default::default() };
        assert_eq!(c.device_request(), DeviceRequest::Cuda(1));
        let c = ServerConfig { cpu: true, cuda_device: Some(1), ..Default::default() };
        assert_eq!(c.device_request(), DeviceRequest::Cpu);
    }
}
