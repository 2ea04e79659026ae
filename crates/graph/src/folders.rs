//! ComfyUI's directory layout: input/output/temp/user and the `models/<kind>/` folders.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::schema::FileLister;

/// Extensions ComfyUI accepts for model files ("model set"), compared case-insensitively.
pub const MODEL_EXTENSIONS: &[&str] = &["ckpt", "pt", "pt2", "bin", "pth", "safetensors", "pkl", "sft"];

/// Extensions of files LoadImage lists (MIME type `image/*`).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "ico", "avif", "svg", "jfif"];

/// One model folder key (`checkpoints`, `vae`, ...) with its directories in search order.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub name: String,
    pub dirs: Vec<PathBuf>,
    /// Accepted extensions (lower case, no dot); empty = every file.
    pub extensions: Vec<String>,
}

/// The server's directories.
#[derive(Debug, Clone)]
pub struct Folders {
    pub base: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
    pub user: PathBuf,
    pub models: Vec<ModelFolder>,
}

impl Folders {
    /// ComfyUI's default layout under `base` (`base/models/...`, `base/input`, ...).
    pub fn new(base: impl Into<PathBuf>) -> Self {
        let base = base.into();
        let m = base.join("models");
        let o = base.join("output");
        let model_set: Vec<String> = MODEL_EXTENSIONS.iter().map(|s| s.to_string()).collect();
        let folder = |name: &str, dirs: Vec<PathBuf>, ext: &Vec<String>| ModelFolder {
            name: name.to_string(),
            dirs,
            extensions: ext.clone(),
        };
        let models = vec![
            folder("checkpoints", vec![m.join("checkpoints"), o.join("checkpoints")], &model_set),
            folder("configs", vec![m.join("configs")], &vec!["yaml".to_string()]),
            folder("loras", vec![m.join("loras"), o.join("loras")], &model_set),
            folder("vae", vec![m.join("vae"), o.join("vae")], &model_set),
            folder("text_encoders", vec![m.join("text_encoders"), m.join("clip"), o.join("clip")], &model_set),
            folder("diffusion_models", vec![m.join("unet"), m.join("diffusion_models"), o.join("diffusion_models")], &model_set),
            folder("clip_vision", vec![m.join("clip_vision")], &model_set),
            folder("style_models", vec![m.join("style_models")], &model_set),
            folder("embeddings", vec![m.join("embeddings")], &model_set),
            folder("diffusers", vec![m.join("diffusers")], &vec![]),
            folder("vae_approx", vec![m.join("vae_approx")], &model_set),
            folder("controlnet", vec![m.join("controlnet"), m.join("t2i_adapter")], &model_set),
            folder("gligen", vec![m.join("gligen")], &model_set),
            folder("upscale_models", vec![m.join("upscale_models")], &model_set),
            folder("hypernetworks", vec![m.join("hypernetworks")], &model_set),
            folder("photomaker", vec![m.join("photomaker")], &model_set),
            folder("classifiers", vec![m.join("classifiers")], &vec![]),
            folder("model_patches", vec![m.join("model_patches")], &model_set),
            folder("audio_encoders", vec![m.join("audio_encoders")], &model_set),
        ];
        Folders {
            input: base.join("input"),
            output: base.join("output"),
            temp: base.join("temp"),
            user: base.join("user"),
            models,
            base,
        }
    }

    /// Maps legacy folder names (`clip`, `unet`) to their current key.
    pub fn canonical_name(name: &str) -> &str {
        match name {
            "clip" => "text_encoders",
            "unet" => "diffusion_models",
            other => other,
        }
    }

    pub fn model_folder(&self, name: &str) -> Option<&ModelFolder> {
        let name = Self::canonical_name(name);
        self.models.iter().find(|f| f.name == name)
    }

    /// Creates input/output/temp/user and every model directory (done at start-up).
    pub fn create_all(&self) -> std::io::Result<()> {
        for d in [&self.input, &self.output, &self.temp, &self.user] {
            std::fs::create_dir_all(d)?;
        }
        for f in &self.models {
            if let Some(first) = f.dirs.first() {
                std::fs::create_dir_all(first)?;
            }
        }
        Ok(())
    }

    /// ComfyUI's `get_filename_list`: recursive, relative with `/`, sorted, de-duplicated.
    pub fn list_models(&self, folder: &str) -> Vec<String> {
        let Some(f) = self.model_folder(folder) else { return Vec::new() };
        let mut out = BTreeSet::new();
        for dir in &f.dirs {
            walk(dir, dir, &mut |rel| {
                let ok = f.extensions.is_empty()
                    || rel
                        .rsplit_once('.')
                        .map(|(_, e)| f.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
                        .unwrap_or(false);
                if ok {
                    out.insert(rel);
                }
            });
        }
        out.into_iter().collect()
    }

    /// ComfyUI's `get_full_path`: the first existing file named `name` in the folder's
    /// directories. `None` when absent or when the name would leave the directory.
    pub fn model_path(&self, folder: &str, name: &str) -> Option<PathBuf> {
        let f = self.model_folder(folder)?;
        let rel = safe_relative(name)?;
        f.dirs.iter().map(|d| d.join(&rel)).find(|p| p.is_file())
    }

    /// The directory for a `type` of `/view` and annotated names: `input`, `output`, `temp`.
    pub fn dir_for_type(&self, kind: &str) -> Option<&Path> {
        match kind {
            "input" => Some(&self.input),
            "output" => Some(&self.output),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }

    /// Resolves an input-file name as LoadImage does: `"sub/x.png"`, `"x.png [output]"`.
    /// `None` if the name escapes its directory.
    pub fn annotated_path(&self, name: &str) -> Option<PathBuf> {
        let (name, dir) = if let Some(n) = name.strip_suffix(" [output]") {
            (n, &self.output)
        } else if let Some(n) = name.strip_suffix(" [temp]") {
            (n, &self.temp)
        } else if let Some(n) = name.strip_suffix(" [input]") {
            (n, &self.input)
        } else {
            (name, &self.input)
        };
        Some(dir.join(safe_relative(name)?))
    }
}

impl FileLister for Folders {
    fn model_files(&self, folder: &str) -> Vec<String> {
        self.list_models(folder)
    }

    fn input_files(&self, images_only: bool) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.input) {
            for e in rd.flatten() {
                if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().to_string();
                let is_image = name
                    .rsplit_once('.')
                    .map(|(_, x)| IMAGE_EXTENSIONS.iter().any(|i| i.eq_ignore_ascii_case(x)))
                    .unwrap_or(false);
                if !images_only || is_image {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }
}

/// A relative path with only normal components (no `..`, no root, no drive); `None` otherwise.
pub fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

fn walk(root: &Path, dir: &Path, found: &mut dyn FnMut(String)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name();
        if name == ".git" {
            continue;
        }
        // Follows symlinks, as ComfyUI does.
        if path.is_dir() {
            walk(root, &path, found);
        } else if path.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                found(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_rejects_escapes() {
        assert!(safe_relative("../x.png").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../../x").is_none());
        assert!(safe_relative("").is_none());
        assert_eq!(safe_relative("a/b.png"), Some(PathBuf::from("a/b.png")));
    }

    #[test]
    fn lists_models_recursively_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folders::new(dir.path());
        f.create_all().unwrap();
        let ck = dir.path().join("models/checkpoints");
        std::fs::create_dir_all(ck.join("sub")).unwrap();
        std::fs::write(ck.join("b.safetensors"), b"x").unwrap();
        std::fs::write(ck.join("sub/a.ckpt"), b"x").unwrap();
        std::fs::write(ck.join("notes.txt"), b"x").unwrap();
        assert_eq!(f.list_models("checkpoints"), vec!["b.safetensors", "sub/a.ckpt"]);
        assert!(f.model_path("checkpoints", "sub/a.ckpt").is_some());
        assert!(f.model_path("checkpoints", "../checkpoints/b.safetensors").is_none());
    }
}
