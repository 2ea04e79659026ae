//! `GET /view`: serves a file of input/output/temp, optionally re-encoded (api.md §4.3).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::ApiError;
use crate::paths;
use crate::AppState;

/// Content types that a browser could execute or render as a document: never served inline.
fn is_active_content(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        m.as_str(),
        "text/html"
            | "text/html-sandboxed"
            | "application/xhtml+xml"
            | "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "text/css"
            | "image/svg+xml"
            | "application/xml"
            | "text/xml"
            | "application/xslt+xml"
    ) || m.ends_with("+xml")
}

/// A `Content-Disposition` value naming `name` (RFC 5987 form for non-ASCII names).
pub fn disposition(attachment: bool, name: &str) -> HeaderValue {
    let prefix = if attachment { "attachment; " } else { "" };
    let plain = name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    let value = if plain {
        format!("{prefix}filename=\"{name}\"")
    } else {
        let mut enc = String::new();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{prefix}filename*=UTF-8''{enc}")
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Splits ComfyUI's ` [output]`/` [input]`/` [temp]` annotation off a file name.
pub fn split_annotation(name: &str) -> (&str, Option<&'static str>) {
    for (suffix, kind) in [
        (" [output]", "output"),
        (" [input]", "input"),
        (" [temp]", "temp"),
    ] {
        if let Some(n) = name.strip_suffix(suffix) {
            return (n, Some(kind));
        }
    }
    (name, None)
}

/// Resolves the query to a file path, applying every containment rule.
fn resolve(state: &AppState, q: &HashMap<String, String>) -> Result<(PathBuf, String), ApiError> {
    let Some(raw) = q.get("filename") else {
        return Err(ApiError::Bare(StatusCode::NOT_FOUND));
    };
    let (filename, annotated) = split_annotation(raw);
    if filename.is_empty() {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    if filename.starts_with('/') || filename.contains("..") || filename.contains('\0') {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    let kind = annotated
        .or(q.get("type").map(String::as_str))
        .unwrap_or("output");
    let Some(root) = state.folders.dir_for_type(kind) else {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    };
    let root = paths::absolute(root);
    let mut dir = root.clone();
    if let Some(sub) = q.get("subfolder") {
        dir = paths::normalize_join(&root, sub);
        if !paths::is_within(&root, &dir) || sub.contains('\0') {
            return Err(ApiError::Bare(StatusCode::FORBIDDEN));
        }
    }
    let base = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(filename)
        .to_string();
    if base.is_empty() {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST));
    }
    let file = dir.join(&base);
    if !file.is_file() {
        return Err(ApiError::Bare(StatusCode::NOT_FOUND));
    }
    if !paths::real_within(&root, &file) {
        return Err(ApiError::Bare(StatusCode::FORBIDDEN));
    }
    Ok((file, base))
}

/// `GET /view`.
pub async fn view(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let (file, name) = match resolve(&state, &q) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let channel = q.get("channel").cloned().unwrap_or_default();
    if q.contains_key("preview") || channel == "rgb" || channel == "a" {
        let preview = q.get("preview").cloned();
        let result =
            tokio::task::spawn_blocking(move || reencode(&file, preview.as_deref(), &channel))
                .await;
        return match result {
            Ok(Ok((bytes, mime))) => {
                let mut resp = (StatusCode::OK, bytes).into_response();
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
                resp.headers_mut()
                    .insert(header::CONTENT_DISPOSITION, disposition(false, &name));
                resp
            }
            Ok(Err(e)) => e.into_response(),
            Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
        };
    }
    serve_file(&file, &name, req).await
}

/// The file as-is, with Range/conditional support, and active content forced to a download.
async fn serve_file(file: &Path, name: &str, req: Request) -> Response {
    let mime = mime_guess::from_path(file)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let active = is_active_content(mime);
    let (parts, _) = req.into_parts();
    let mut fwd = Request::new(Body::empty());
    *fwd.headers_mut() = parts.headers;
    *fwd.method_mut() = parts.method;
    let mut resp = match ServeFile::new(file).oneshot(fwd).await {
        Ok(r) => r.map(Body::new),
        Err(_) => return ApiError::Bare(StatusCode::NOT_FOUND).into_response(),
    };
    let h = resp.headers_mut();
    if active {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    } else if mime == "application/javascript" || mime == "text/javascript" {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript; charset=utf-8"),
        );
    }
    h.insert(header::CONTENT_DISPOSITION, disposition(active, name));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn encode_png(img: &image::DynamicImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|_| ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(out.into_inner())
}

/// The `preview` / `channel` re-encodings (`channel` is the raw query value, `""` if absent).
/// As ComfyUI: `preview=FORMAT;QUALITY` answers `jpeg` or `webp` (any other format, or a
/// `channel` containing `a`, means WebP, which keeps alpha). WebP is written lossless (the
/// pure-Rust encoder has no lossy mode), so its quality figure is not used.
fn reencode(
    file: &Path,
    preview: Option<&str>,
    channel: &str,
) -> Result<(Vec<u8>, &'static str), ApiError> {
    let bytes = std::fs::read(file).map_err(|_| ApiError::Bare(StatusCode::NOT_FOUND))?;
    let img = image::load_from_memory(&bytes).map_err(|e| {
        ApiError::Text(StatusCode::BAD_REQUEST, format!("Cannot decode image: {e}"))
    })?;
    if let Some(p) = preview {
        let parts: Vec<&str> = p.split(';').collect();
        let quality = parts
            .last()
            .filter(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|q| q.parse::<u8>().ok())
            .unwrap_or(90)
            .clamp(1, 100);
        let jpeg = parts.first() == Some(&"jpeg") && !channel.contains('a');
        let internal = |_| ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR);
        let mut out = Cursor::new(Vec::new());
        if jpeg {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            img.to_rgb8().write_with_encoder(enc).map_err(internal)?;
            return Ok((out.into_inner(), "image/jpeg"));
        }
        let enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
        if channel == "rgb" || !img.color().has_alpha() {
            img.to_rgb8().write_with_encoder(enc).map_err(internal)?;
        } else {
            img.to_rgba8().write_with_encoder(enc).map_err(internal)?;
        }
        return Ok((out.into_inner(), "image/webp"));
    }
    if channel == "rgb" {
        return Ok((
            encode_png(&image::DynamicImage::ImageRgb8(img.to_rgb8()))?,
            "image/png",
        ));
    }
    // channel == "a": RGB zero, alpha kept (255 when the image has none).
    let mut rgba = img.to_rgba8();
    for px in rgba.pixels_mut() {
        px.0[0] = 0;
        px.0[1] = 0;
        px.0[2] = 0;
    }
    Ok((
        encode_png(&image::DynamicImage::ImageRgba8(rgba))?,
        "image/png",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_types_are_detected() {
        for m in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "text/xml",
            "application/atom+xml",
        ] {
            assert!(is_active_content(m), "{m}");
        }
        for m in [
            "image/png",
            "image/jpeg",
            "application/octet-stream",
            "text/plain",
        ] {
            assert!(!is_active_content(m), "{m}");
        }
    }

    #[test]
    fn annotations_and_dispositions() {
        assert_eq!(split_annotation("a.png [temp]"), ("a.png", Some("temp")));
        assert_eq!(split_annotation("a.png"), ("a.png", None));
        assert_eq!(disposition(false, "a.png"), "filename=\"a.png\"");
        assert_eq!(
            disposition(true, "x\".html"),
            "attachment; filename*=UTF-8''x%22.html"
        );
    }
}
