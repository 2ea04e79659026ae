//! `POST /upload/image` and `POST /upload/mask` (api.md §4.1–4.2): naming, de-duplication,
//! containment and atomic writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::routes::view::split_annotation;
use crate::{json, paths, AppState};

/// The fields of an upload form.
#[derive(Default)]
struct UploadForm {
    image: Option<(String, Vec<u8>)>,
    kind: Option<String>,
    subfolder: Option<String>,
    overwrite: Option<String>,
    original_ref: Option<String>,
}

async fn read_form(mut mp: Multipart) -> Result<UploadForm, ApiError> {
    let mut form = UploadForm::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError::Text(e.status(), e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(ApiError::Text(e.status(), e.body_text())),
        };
        let text = || String::from_utf8_lossy(&data).into_owned();
        match name.as_str() {
            "image" => {
                if let Some(f) = file_name {
                    form.image = Some((f, data.to_vec()));
                }
            }
            "type" => form.kind = Some(text()),
            "subfolder" => form.subfolder = Some(text()),
            "overwrite" => form.overwrite = Some(text()),
            "original_ref" => form.original_ref = Some(text()),
            _ => {}
        }
    }
    Ok(form)
}

/// Python's `os.path.splitext` on a base name: leading dots belong to the stem.
pub fn splitext(name: &str) -> (&str, &str) {
    let lead = name.len() - name.trim_start_matches('.').len();
    match name[lead..].rfind('.') {
        Some(i) => name.split_at(lead + i),
        None => (name, ""),
    }
}

fn sha256_file(path: &Path) -> Option<[u8; 32]> {
    let data = std::fs::read(path).ok()?;
    Some(Sha256::digest(&data).into())
}

/// Writes `data` next to `target` under a temporary name, then moves it into place.
/// Without `overwrite` the final step is a hard link, which fails if `target` appeared meanwhile.
fn atomic_write(target: &Path, data: &[u8], overwrite: bool) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".upload-{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        if overwrite {
            std::fs::rename(&tmp, target)
        } else {
            std::fs::hard_link(&tmp, target)
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Where an upload goes: `(type dir, folder inside it, file name)`, all checked.
fn target_folder(
    state: &AppState,
    form: &UploadForm,
) -> Result<(PathBuf, PathBuf, String), ApiError> {
    let Some((filename, _)) = &form.image else {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    };
    if filename.is_empty()
        || filename == "."
        || filename == ".."
        || filename.contains(['/', '\\', '\0'])
    {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    let kind = form
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or("input");
    let Some(root) = state.folders.dir_for_type(kind) else {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    };
    let root = paths::absolute(root);
    let sub = form.subfolder.as_deref().unwrap_or("");
    let folder = paths::normalize_join(&root, sub);
    if sub.contains('\0')
        || !paths::is_within(&root, &folder)
        || !paths::is_within(&root, &folder.join(filename))
    {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    if !paths::real_within(&root, &folder) {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    Ok((root, folder, filename.clone()))
}

/// Picks the final name and writes `data` there (unless an identical file already exists),
/// returning the name. `render` produces the bytes to write (raw upload or merged mask).
fn place(
    folder: &Path,
    filename: &str,
    upload: &[u8],
    overwrite: bool,
    data: &[u8],
) -> Result<String, ApiError> {
    std::fs::create_dir_all(folder)
        .map_err(|e| ApiError::Text(StatusCode::BAD_REQUEST, e.to_string()))?;
    let io_err = |e: std::io::Error| ApiError::Text(StatusCode::BAD_REQUEST, e.to_string());
    if overwrite {
        atomic_write(&folder.join(filename), data, true).map_err(io_err)?;
        return Ok(filename.to_string());
    }
    let upload_hash: [u8; 32] = Sha256::digest(upload).into();
    let (stem, ext) = splitext(filename);
    let mut name = filename.to_string();
    for i in 1..=100_000u32 {
        let path = folder.join(&name);
        if path.exists() {
            if sha256_file(&path) == Some(upload_hash) {
                return Ok(name);
            }
            name = format!("{stem} ({i}){ext}");
            continue;
        }
        match atomic_write(&path, data, false) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(ApiError::Text(
        StatusCode::CONFLICT,
        "no free file name".into(),
    ))
}

fn wants_overwrite(form: &UploadForm) -> bool {
    matches!(form.overwrite.as_deref(), Some("true") | Some("1"))
}

fn reply(name: &str, form: &UploadForm) -> Response {
    let kind = form
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or("input");
    json::ok(
        &json!({"name": name, "subfolder": form.subfolder.clone().unwrap_or_default(), "type": kind}),
    )
}

/// `POST /upload/image`.
pub async fn upload_image(State(state): State<Arc<AppState>>, mp: Multipart) -> Response {
    let form = match read_form(mp).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (_, folder, filename) = match target_folder(&state, &form) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let overwrite = wants_overwrite(&form);
    let result = {
        let data = form
            .image
            .as_ref()
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default();
        place(&folder, &filename, data, overwrite, data)
    };
    match result {
        Ok(name) => reply(&name, &form),
        Err(e) => e.into_response(),
    }
}

/// The original image a mask refers to, if the reference is valid and the file exists.
fn original_path(state: &AppState, original_ref: &str) -> Option<PathBuf> {
    let r: Json = serde_json::from_str(original_ref).ok()?;
    let (filename, annotated) = split_annotation(r.get("filename")?.as_str()?);
    if filename.is_empty() || paths::has_traversal(filename) || filename.contains("..") {
        return None;
    }
    let kind = annotated
        .or(r.get("type").and_then(Json::as_str))
        .unwrap_or("output");
    let root = paths::absolute(state.folders.dir_for_type(kind)?);
    let sub = r.get("subfolder").and_then(Json::as_str).unwrap_or("");
    let dir = paths::normalize_join(&root, sub);
    let file = dir.join(filename);
    (paths::is_within(&root, &file) && file.is_file() && paths::real_within(&root, &file))
        .then_some(file)
}

/// The PNG text chunks of a file (empty for non-PNG or unreadable files).
fn png_text_chunks(bytes: &[u8]) -> Vec<(String, String)> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let Ok(reader) = decoder.read_info() else {
        return Vec::new();
    };
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.compressed_latin1_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out.extend(
        info.utf8_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out
}

use std::io::Cursor;

/// The original image with its alpha replaced by the mask's alpha, as PNG with the
/// original's text chunks.
fn merge_mask(original: &[u8], mask: &[u8]) -> Result<Vec<u8>, String> {
    let base = image::load_from_memory(original).map_err(|e| e.to_string())?;
    let mask = image::load_from_memory(mask)
        .map_err(|e| e.to_string())?
        .to_rgba8();
    let mut rgba = base.to_rgba8();
    let mask = if mask.dimensions() != rgba.dimensions() {
        image::imageops::resize(
            &mask,
            rgba.width(),
            rgba.height(),
            image::imageops::FilterType::Triangle,
        )
    } else {
        mask
    };
    for (p, m) in rgba.pixels_mut().zip(mask.pixels()) {
        p.0[3] = m.0[3];
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, rgba.width(), rgba.height());
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in png_text_chunks(original) {
            enc.add_text_chunk(k, v).map_err(|e| e.to_string())?;
        }
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(rgba.as_raw())
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `POST /upload/mask`.
pub async fn upload_mask(State(state): State<Arc<AppState>>, mp: Multipart) -> Response {
    let form = match read_form(mp).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (_, folder, filename) = match target_folder(&state, &form) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let Some(original) = form
        .original_ref
        .as_deref()
        .and_then(|r| original_path(&state, r))
    else {
        // ComfyUI quirk: an invalid or missing original writes nothing but still answers 200.
        return reply(&filename, &form);
    };
    let upload = form
        .image
        .as_ref()
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    let overwrite = wants_overwrite(&form);
    let result = tokio::task::spawn_blocking(move || {
        let orig = std::fs::read(&original)
            .map_err(|e| ApiError::Text(StatusCode::NOT_FOUND, e.to_string()))?;
        let merged =
            merge_mask(&orig, &upload).map_err(|e| ApiError::Text(StatusCode::BAD_REQUEST, e))?;
        place(&folder, &filename, &upload, overwrite, &merged)
    })
    .await;
    match result {
        Ok(Ok(name)) => reply(&name, &form),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitext_like_python() {
        assert_eq!(splitext("a.png"), ("a", ".png"));
        assert_eq!(splitext("a.tar.gz"), ("a.tar", ".gz"));
        assert_eq!(splitext(".hidden"), (".hidden", ""));
        assert_eq!(splitext("noext"), ("noext", ""));
    }

    #[test]
    fn place_renames_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(place(d, "x.png", b"one", false, b"one").unwrap(), "x.png");
        assert_eq!(place(d, "x.png", b"one", false, b"one").unwrap(), "x.png");
        assert_eq!(
            place(d, "x.png", b"two", false, b"two").unwrap(),
            "x (1).png"
        );
        assert_eq!(
            place(d, "x.png", b"three", false, b"three").unwrap(),
            "x (2).png"
        );
        assert_eq!(
            place(d, "x.png", b"two", false, b"two").unwrap(),
            "x (1).png"
        );
        assert_eq!(place(d, "x.png", b"four", true, b"four").unwrap(), "x.png");
        assert_eq!(std::fs::read(d.join("x.png")).unwrap(), b"four");
        let leftovers = std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
