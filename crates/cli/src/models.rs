//! Model files: `list-models`, safetensors header checks, `download-models` and `demo`.

use std::io::Read;
use std::path::{Path, PathBuf};

use comfy_diffusion::checkpoint::Checkpoint;
use comfy_graph::Folders;
use comfy_hub::progress::human_bytes;
use comfy_hub::{HubConfig, HubError, ModelSpec, Outcome, ProgressBar};

use crate::{BaseArgs, DemoArgs, DownloadArgs};

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Result of reading a model file's safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderCheck {
    /// A well-formed header whose tensors all lie inside the file.
    Valid { tensors: usize },
    /// A `.safetensors` file with a broken header or truncated data.
    Invalid(String),
    /// Not a safetensors file (`.ckpt`, `.pt`, ...): not checked.
    NotSafetensors,
}

impl HeaderCheck {
    /// A short word for listings.
    pub fn label(&self) -> String {
        match self {
            HeaderCheck::Valid { tensors } => format!("header ok ({tensors} tensors)"),
            HeaderCheck::Invalid(why) => format!("INVALID: {why}"),
            HeaderCheck::NotSafetensors => "not safetensors (unchecked)".into(),
        }
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("sft"))
}

/// Reads the header of a `.safetensors` file and checks that it parses and that every
/// tensor's `data_offsets` fit in the file (catches truncated downloads).
pub fn check_header(path: &Path) -> HeaderCheck {
    if !is_safetensors(path) {
        return HeaderCheck::NotSafetensors;
    }
    let bad = |s: String| HeaderCheck::Invalid(s);
    let Ok(mut f) = std::fs::File::open(path) else { return bad("cannot open".into()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut n8 = [0u8; 8];
    if f.read_exact(&mut n8).is_err() {
        return bad(format!("file too short ({len} bytes)"));
    }
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER || 8 + n > len {
        return bad(format!("header length {n} does not fit in a {len}-byte file"));
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return bad("cannot read the header".into());
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return bad("header is not a JSON object".into());
    };
    let data_len = len - 8 - n;
    let mut tensors = 0;
    let mut max_end = 0u64;
    for (name, info) in &map {
        if name == "__metadata__" {
            continue;
        }
        let offs = info.get("data_offsets").and_then(|o| o.as_array());
        let (Some(start), Some(end)) =
            (offs.and_then(|o| o.first()).and_then(|v| v.as_u64()), offs.and_then(|o| o.get(1)).and_then(|v| v.as_u64()))
        else {
            return bad(format!("tensor {name:?} has no data_offsets"));
        };
        if info.get("dtype").and_then(|d| d.as_str()).is_none() || info.get("shape").and_then(|s| s.as_array()).is_none() {
            return bad(format!("tensor {name:?} lacks dtype or shape"));
        }
        if start > end || end > data_len {
            return bad(format!("tensor {name:?} data [{start}, {end}) lies past the end of the data ({data_len} bytes): truncated?"));
        }
        max_end = max_end.max(end);
        tensors += 1;
    }
    if max_end < data_len && tensors > 0 && data_len - max_end > 0 {
        // Trailing bytes are allowed by readers; not an error.
        tracing::debug!(path = %path.display(), extra = data_len - max_end, "trailing bytes after the last tensor");
    }
    HeaderCheck::Valid { tensors }
}

/// What a model file is, for listings: the checkpoint family (via `comfy_diffusion`'s
/// detection) for `checkpoints`, "VAE" for VAE files, nothing for other folders.
pub fn architecture(folder: &str, path: &Path) -> Option<String> {
    if !is_safetensors(path) {
        return None;
    }
    match folder {
        "checkpoints" => Some(match Checkpoint::open(path).and_then(|c| c.detect()) {
            Ok(cfg) => match cfg.comfy_model {
                Some(m) => format!("{} ({m})", cfg.family.name()),
                None => format!("{} (non-standard size)", cfg.family.name()),
            },
            Err(e) => format!("unknown ({})", short_error(&e.to_string())),
        }),
        "vae" => Some(match Checkpoint::open(path).and_then(|c| c.detect_vae()) {
            Ok((cfg, _)) => format!("VAE (latent channels {})", cfg.z_channels),
            Err(e) => format!("unknown ({})", short_error(&e.to_string())),
        }),
        _ => None,
    }
}

fn short_error(s: &str) -> String {
    let s = s.rsplit_once(": ").map(|(_, m)| m).unwrap_or(s);
    let mut s = s.lines().next().unwrap_or("").to_string();
    if s.len() > 100 {
        s.truncate(100);
        s.push('…');
    }
    s
}

/// One model file found under a model folder.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub folder: String,
    /// Name relative to the folder (`sub/x.safetensors`).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Every model file of every folder (ComfyUI's listing rules), plus `.incomplete` downloads.
pub fn model_files(folders: &Folders) -> (Vec<ModelFile>, Vec<PathBuf>) {
    let mut out = Vec::new();
    let mut partial = Vec::new();
    for f in &folders.models {
        for name in folders.list_models(&f.name) {
            if let Some(path) = folders.model_path(&f.name, &name) {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                out.push(ModelFile { folder: f.name.clone(), name, path, size });
            }
        }
        for d in &f.dirs {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().ends_with(".incomplete") {
                        partial.push(e.path());
                    }
                }
            }
        }
    }
    (out, partial)
}

/// `list-models`.
pub fn list_models(args: &BaseArgs) -> anyhow::Result<i32> {
    let folders = Folders::new(std::path::absolute(&args.base_directory)?);
    let (files, partial) = model_files(&folders);
    println!("models under {}", folders.base.join("models").display());
    let mut empty = Vec::new();
    for f in &folders.models {
        let mine: Vec<&ModelFile> = files.iter().filter(|m| m.folder == f.name).collect();
        if mine.is_empty() {
            empty.push(f.name.as_str());
            continue;
        }
        println!("{}:", f.name);
        for m in mine {
            let arch = architecture(&f.name, &m.path);
            let header = check_header(&m.path);
            let what = match (&header, arch) {
                (HeaderCheck::Invalid(_), _) => header.label(),
                (_, Some(a)) => a,
                (_, None) => header.label(),
            };
            println!("  {:<48} {:>10}  {}", m.name, human_bytes(m.size), what);
        }
    }
    for p in &partial {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!("partial download: {} ({}); run download-models again to resume", p.display(), human_bytes(size));
    }
    if !empty.is_empty() {
        println!("empty folders: {}", empty.join(", "));
    }
    if files.is_empty() {
        println!("no model files yet: run `./manage.sh --action download-models` or `./manage.sh --action demo`");
    }
    Ok(0)
}

/// `download-models`.
pub fn download_models(args: &DownloadArgs) -> anyhow::Result<i32> {
    let specs: Vec<ModelSpec> = if args.models.is_empty() {
        comfy_hub::default_models()
    } else {
        let mut v = Vec::new();
        for m in &args.models {
            match m.parse::<ModelSpec>() {
                Ok(s) => v.push(s),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(crate::EXIT_USAGE);
                }
            }
        }
        v
    };
    let cfg = HubConfig::from_env();
    let models_dir = std::path::absolute(&args.base.base_directory)?.join("models");
    let mut failed = 0;
    for spec in &specs {
        let dest = comfy_hub::download::destination(&models_dir, spec);
        println!("{} -> {}", spec, dest.display());
        let mut bar = ProgressBar::bytes();
        match comfy_hub::download(&cfg, spec, &models_dir, args.force, &mut bar) {
            Ok(Outcome::AlreadyPresent { path, bytes }) => {
                println!("  already present ({}): {}", human_bytes(bytes), path.display());
            }
            Ok(Outcome::Downloaded { path, bytes, resumed_from, verified_sha256 }) => {
                let resumed = if resumed_from > 0 { format!(", resumed from {}", human_bytes(resumed_from)) } else { String::new() };
                let check = match &verified_sha256 {
                    Some(s) => format!("sha256 {s} verified"),
                    None => "no sha256 published by the hub (size checked only)".to_string(),
                };
                println!("  done: {} ({}{resumed}); {check}", path.display(), human_bytes(bytes));
                if let HeaderCheck::Invalid(why) = check_header(&path) {
                    eprintln!("  warning: the file's safetensors header is invalid: {why}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("  error: {e}");
                if matches!(e, HubError::Offline { .. } | HubError::OfflineMode { .. }) {
                    break;
                }
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `demo`: a random-weight checkpoint (tiny by default) in `models/checkpoints/`.
pub fn demo(args: &DemoArgs) -> anyhow::Result<i32> {
    let arch: comfy_diffusion::recipe::Arch = match args.arch.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return Ok(crate::EXIT_USAGE);
        }
    };
    let tag = match arch {
        comfy_diffusion::recipe::Arch::Sd15 => "sd15",
        comfy_diffusion::recipe::Arch::Sdxl => "sdxl",
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("comfy-rs-demo-{tag}{}.safetensors", if args.full { "" } else { "-tiny" }));
    let dir = std::path::absolute(&args.base.base_directory)?.join("models").join("checkpoints");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(&name);
    comfy_diffusion::recipe::write_recipe_checkpoint(arch, !args.full, args.seed, &out)?;
    let size = std::fs::metadata(&out)?.len();
    println!("wrote {} ({}, random weights, seed {})", out.display(), human_bytes(size), args.seed);
    if let Some(a) = architecture("checkpoints", &out) {
        println!("  detected as {a}");
    }
    println!("  use it as ckpt_name \"{name}\" in CheckpointLoaderSimple; its images are noise-like by design");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_st(path: &Path, header: &str, data: usize) {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn header_checks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.safetensors");
        write_st(&p, r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"a":"b"}}"#, 8);
        assert_eq!(check_header(&p), HeaderCheck::Valid { tensors: 1 });
        write_st(&p, r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4);
        assert!(matches!(check_header(&p), HeaderCheck::Invalid(m) if m.contains("truncated")));
        write_st(&p, "not json", 0);
        assert!(matches!(check_header(&p), HeaderCheck::Invalid(_)));
        std::fs::write(&p, [1u8, 2]).unwrap();
        assert!(matches!(check_header(&p), HeaderCheck::Invalid(_)));
        assert_eq!(check_header(&d.path().join("x.ckpt")), HeaderCheck::NotSafetensors);
    }

    #[test]
    fn demo_checkpoint_is_listed_as_sd1() {
        let d = tempfile::tempdir().unwrap();
        let args = DemoArgs { base: BaseArgs { base_directory: d.path().into() }, arch: "sd15".into(), seed: 0, full: false, name: None };
        assert_eq!(demo(&args).unwrap(), 0);
        let p = d.path().join("models/checkpoints/comfy-rs-demo-sd15-tiny.safetensors");
        assert!(matches!(check_header(&p), HeaderCheck::Valid { .. }));
        assert_eq!(architecture("checkpoints", &p).as_deref(), Some("SD1.x (non-standard size)"));
        let (files, partial) = model_files(&Folders::new(d.path()));
        assert_eq!(files.len(), 1);
        assert!(partial.is_empty());
    }
}
