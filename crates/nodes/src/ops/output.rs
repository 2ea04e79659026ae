//! Writing result files the way ComfyUI names them (`get_save_image_path`), PNG encoding
//! with `prompt`/`workflow` text chunks, and atomic writes.

use std::path::{Component, Path, PathBuf};

use chrono::{Datelike, Local, Timelike};
use comfy_graph::{ExecContext, NodeError};
use serde_json::{json, Map, Value as Json};

use super::array::Array;
use super::pyjson;
use super::resample::to_u8;

/// Where a batch of outputs goes: ComfyUI's `get_save_image_path` result.
#[derive(Debug, Clone, PartialEq)]
pub struct SavePath {
    /// `base/subfolder`, created if missing.
    pub folder: PathBuf,
    /// The file-name stem (after substitution), e.g. `ComfyUI`.
    pub filename: String,
    /// First counter to use.
    pub counter: i64,
    /// Subfolder relative to the base, `/`-separated, `""` for none.
    pub subfolder: String,
}

/// Substitutes `%width%`, `%height%`, `%year%`, `%month%`, `%day%`, `%hour%`, `%minute%`,
/// `%second%` (server local time) as ComfyUI's `compute_vars` does.
pub fn compute_vars(prefix: &str, width: usize, height: usize) -> String {
    let now = Local::now();
    prefix
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string())
        .replace("%year%", &now.year().to_string())
        .replace("%month%", &format!("{:02}", now.month()))
        .replace("%day%", &format!("{:02}", now.day()))
        .replace("%hour%", &format!("{:02}", now.hour()))
        .replace("%minute%", &format!("{:02}", now.minute()))
        .replace("%second%", &format!("{:02}", now.second()))
}

/// Lexical `os.path.normpath` for a relative prefix; `None` if it leaves the base directory.
fn normalize_relative(prefix: &str) -> Option<Vec<String>> {
    let p = Path::new(prefix);
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts)
}

/// Python `int()` of a counter field (surrounding whitespace and a sign allowed).
fn parse_py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// ComfyUI's `get_save_image_path(prefix, base, w, h)`: splits the prefix into subfolder and
/// file stem, rejects paths outside `base`, and finds the next free counter.
pub fn save_path(prefix: &str, base: &Path, width: usize, height: usize) -> Result<SavePath, NodeError> {
    let prefix = if prefix.contains('%') { compute_vars(prefix, width, height) } else { prefix.to_string() };
    let outside = || {
        NodeError::invalid_input(format!(
            "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}",
            base.join(&prefix).display(),
            base.display()
        ))
    };
    let mut parts = normalize_relative(&prefix).ok_or_else(outside)?;
    let filename = parts.pop().unwrap_or_default();
    let subfolder = parts.join("/");
    let folder = parts.iter().fold(base.to_path_buf(), |p, s| p.join(s));
    // The stem the counter scan compares against (the basename of the un-normalised prefix).
    let stem: Vec<char> = prefix.rsplit('/').next().unwrap_or("").chars().collect();
    let name: Vec<char> = filename.chars().collect();
    let counter = match std::fs::read_dir(&folder) {
        Ok(rd) => {
            let mut best: Option<i64> = None;
            for e in rd.flatten() {
                let entry: Vec<char> = e.file_name().to_string_lossy().chars().collect();
                let l = stem.len();
                let head: &[char] = &entry[..(l + 1).min(entry.len())];
                if head.len() == l + 1 && head[..l] == name[..] && head[l] == '_' {
                    let rest: String = entry[l + 1..].iter().collect();
                    let n = parse_py_int(rest.split('_').next().unwrap_or("")).unwrap_or(0);
                    best = Some(best.map_or(n, |b| b.max(n)));
                }
            }
            best.map_or(1, |b| b + 1)
        }
        Err(_) => {
            std::fs::create_dir_all(&folder)
                .map_err(|e| NodeError::internal(format!("cannot create {}: {e}", folder.display())))?;
            1
        }
    };
    Ok(SavePath { folder, filename, counter, subfolder })
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |e: std::io::Error| NodeError::internal(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The tEXt chunks ComfyUI writes: `prompt`, then one per `extra_pnginfo` key (JSON-encoded
/// with Python's `json.dumps`).
pub fn metadata_chunks(ctx: &ExecContext<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !ctx.prompt.is_null() {
        out.push(("prompt".to_string(), pyjson::dumps(ctx.prompt)));
    }
    if let Some(Json::Object(extra)) = ctx.extra_pnginfo {
        for (k, v) in extra {
            out.push((k.clone(), pyjson::dumps(v)));
        }
    }
    out
}

/// Encodes one `[H,W,C]` image (C = 1, 3 or 4; values 0..1, truncated to uint8) as a PNG.
pub fn encode_png(
    data: &[f32],
    h: usize,
    w: usize,
    c: usize,
    texts: &[(String, String)],
    fast: bool,
) -> Result<Vec<u8>, NodeError> {
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(NodeError::invalid_input(format!("Cannot save an image with {c} channels"))),
    };
    let pixels: Vec<u8> = data.iter().map(|&v| to_u8(v)).collect();
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w as u32, h as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(if fast { png::Compression::Fast } else { png::Compression::Default });
        let err = |e: png::EncodingError| NodeError::internal(format!("PNG encoding failed: {e}"));
        for (k, v) in texts {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(err)?;
        }
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(&pixels).map_err(err)?;
        wr.finish().map_err(err)?;
    }
    Ok(buf)
}

/// Saves every image of an `[B,H,W,C]` batch as `<stem>_<counter:05>_.png` under `base`;
/// returns the UI list (`[{"filename","subfolder","type"}]`).
pub fn save_images(
    images: &Array,
    prefix: &str,
    base: &Path,
    kind: &str,
    fast: bool,
    ctx: &ExecContext<'_>,
) -> Result<Vec<Json>, NodeError> {
    if images.shape.len() != 4 {
        return Err(NodeError::invalid_input("IMAGE must have shape [B, H, W, C]"));
    }
    let (b, h, w, c) = images.dims4();
    let sp = save_path(prefix, base, w, h)?;
    let texts = metadata_chunks(ctx);
    let mut results = Vec::with_capacity(b);
    let per = h * w * c;
    let mut counter = sp.counter;
    for i in 0..b {
        ctx.cancel.check()?;
        let name = sp.filename.replace("%batch_num%", &i.to_string());
        let file = format!("{name}_{counter:05}_.png");
        let bytes = encode_png(&images.data[i * per..(i + 1) * per], h, w, c, &texts, fast)?;
        write_atomic(&sp.folder.join(&file), &bytes)?;
        results.push(json!({"filename": file, "subfolder": sp.subfolder, "type": kind}));
        counter += 1;
    }
    Ok(results)
}

/// `{"<key>": results}` for an output node's UI dict.
pub fn ui(key: &str, results: Vec<Json>) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert(key.to_string(), Json::Array(results));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_rule() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let sp = save_path("ComfyUI", base, 8, 8).unwrap();
        assert_eq!((sp.counter, sp.filename.as_str(), sp.subfolder.as_str()), (1, "ComfyUI", ""));
        for f in [
            "ComfyUI_00001_.png",
            "ComfyUI_00007_.png",
            "ComfyUI_temp_abcde_00009_.png",
            "ComfyUIx_00050_.png",
            "comfyui_00040_.png",
        ] {
            std::fs::write(base.join(f), b"").unwrap();
        }
        assert_eq!(save_path("ComfyUI", base, 8, 8).unwrap().counter, 8);
        // Subfolders come from the prefix and are created.
        let sp = save_path("a/b/img", base, 8, 8).unwrap();
        assert_eq!((sp.subfolder.as_str(), sp.filename.as_str(), sp.counter), ("a/b", "img", 1));
        assert!(base.join("a/b").is_dir());
        // Escapes are refused.
        assert!(save_path("../x", base, 8, 8).is_err());
        assert!(save_path("/etc/x", base, 8, 8).is_err());
        assert_eq!(save_path("a/../y", base, 8, 8).unwrap().subfolder, "");
        // %width% / %height%.
        assert_eq!(save_path("s_%width%x%height%", base, 3, 2).unwrap().filename, "s_3x2");
        assert_eq!(parse_py_int(" 12 "), Some(12));
        assert_eq!(parse_py_int("12.png"), None);
    }
}
