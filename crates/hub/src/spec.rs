//! Model specs: which file of which repository goes into which model folder.

use std::fmt;
use std::str::FromStr;

use crate::error::HubError;

/// One file to fetch: `owner/name[@revision]:path/in/repo[:models-folder]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Repository id, `owner/name`.
    pub repo: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// Path of the file inside the repository.
    pub file: String,
    /// Model folder under `models/` (`checkpoints`, `vae`, `loras`, ...).
    pub folder: String,
}

impl ModelSpec {
    /// The local file name: the last path component of [`ModelSpec::file`].
    pub fn local_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

/// The folder a file goes to when the spec names none: `vae` when the repository or file
/// name says VAE, `loras` for LoRA, otherwise `checkpoints`.
fn guess_folder(repo: &str, file: &str) -> &'static str {
    let hay = format!("{repo}/{file}").to_ascii_lowercase();
    if hay.contains("vae") {
        "vae"
    } else if hay.contains("lora") {
        "loras"
    } else {
        "checkpoints"
    }
}

impl FromStr for ModelSpec {
    type Err = HubError;
    fn from_str(s: &str) -> Result<Self, HubError> {
        let bad = |reason: &str| HubError::BadSpec { spec: s.to_string(), reason: reason.to_string() };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad("needs two or three ':'-separated parts"));
        }
        let (repo, revision) = match parts[0].split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return Err(bad("empty revision after '@'")),
            None => (parts[0], "main"),
        };
        let mut halves = repo.split('/');
        let (Some(owner), Some(name), None) = (halves.next(), halves.next(), halves.next()) else {
            return Err(bad("repository must be owner/name"));
        };
        if owner.is_empty() || name.is_empty() {
            return Err(bad("repository must be owner/name"));
        }
        let file = parts[1].trim_matches('/');
        if file.is_empty() || file.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(bad("file must be a relative path inside the repository"));
        }
        let folder = match parts.get(2) {
            Some(f) if f.is_empty() || f.contains('/') || f.contains("..") => {
                return Err(bad("folder must be one model folder name, e.g. checkpoints"))
            }
            Some(f) => f.to_string(),
            None => guess_folder(repo, file).to_string(),
        };
        Ok(ModelSpec { repo: repo.to_string(), revision: revision.to_string(), file: file.to_string(), folder })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.revision == "main" {
            write!(f, "{}:{}:{}", self.repo, self.file, self.folder)
        } else {
            write!(f, "{}@{}:{}:{}", self.repo, self.revision, self.file, self.folder)
        }
    }
}

/// What `download-models` fetches without `--model`: SDXL base 1.0 and the SDXL VAE.
pub fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            repo: "stabilityai/stable-diffusion-xl-base-1.0".into(),
            revision: "main".into(),
            file: "sd_xl_base_1.0.safetensors".into(),
            folder: "checkpoints".into(),
        },
        ModelSpec {
            repo: "stabilityai/sdxl-vae".into(),
            revision: "main".into(),
            file: "sdxl_vae.safetensors".into(),
            folder: "vae".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: ModelSpec = "stabilityai/sdxl-vae:sdxl_vae.safetensors".parse().unwrap();
        assert_eq!((s.repo.as_str(), s.file.as_str(), s.folder.as_str()), ("stabilityai/sdxl-vae", "sdxl_vae.safetensors", "vae"));
        let s: ModelSpec = "a/b@v1.0:sub/x.safetensors:loras".parse().unwrap();
        assert_eq!((s.revision.as_str(), s.local_name(), s.folder.as_str()), ("v1.0", "x.safetensors", "loras"));
        let s: ModelSpec = "runwayml/sd:v1-5.safetensors".parse().unwrap();
        assert_eq!(s.folder, "checkpoints");
        assert_eq!(s.to_string(), "runwayml/sd:v1-5.safetensors:checkpoints");
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["nocolon", "a:b", "a/b:", "a/b:../x", "a/b:x:../up", "a/b/c:x", "a/b@:x", "a:b:c:d"] {
            assert!(bad.parse::<ModelSpec>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn default_set_is_sdxl_base_and_vae() {
        let d = default_models();
        assert_eq!(d[0].to_string(), "stabilityai/stable-diffusion-xl-base-1.0:sd_xl_base_1.0.safetensors:checkpoints");
        assert_eq!(d[1].to_string(), "stabilityai/sdxl-vae:sdxl_vae.safetensors:vae");
    }
}
