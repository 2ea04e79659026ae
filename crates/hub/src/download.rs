//! Resumable, verified downloads into `models/<folder>/<file>`.
//!
//! Bytes go to `<file>.incomplete` first; a later run continues it with an HTTP `Range`
//! request. When the hub published a sha256 (LFS files) the whole file is hashed (resumed
//! bytes included) and must match before it is renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::HubConfig;
use crate::error::HubError;
use crate::progress::Progress;
use crate::remote::{head, join_location, origin, status_error, transport, RemoteFile};
use crate::spec::ModelSpec;

/// What [`download`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was fetched (fully or by resuming `resumed_from` bytes).
    Downloaded {
        path: PathBuf,
        bytes: u64,
        resumed_from: u64,
        /// The sha256 checked against the hub's, or `None` when the hub gave none.
        verified_sha256: Option<String>,
    },
    /// A file of the announced size already sits at the destination; nothing was fetched.
    AlreadyPresent { path: PathBuf, bytes: u64 },
}

/// The final path of a spec under a models directory: `models/<folder>/<file name>`.
pub fn destination(models_dir: &Path, spec: &ModelSpec) -> PathBuf {
    models_dir.join(&spec.folder).join(spec.local_name())
}

/// The partial file next to `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

const CHUNK: usize = 256 * 1024;

/// Hashes the first `len` bytes of `path` into `h`.
fn hash_prefix(path: &Path, len: u64, h: &mut Sha256) -> Result<(), HubError> {
    let f = File::open(path).map_err(|e| HubError::io("cannot read", path, e))?;
    let mut r = f.take(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf).map_err(|e| HubError::io("cannot read", path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Sends `GET url` (with `Range` from `from` when non-zero), following redirects by hand; the
/// token is only sent to the hub's own origin, never to a CDN it redirects to.
fn get(cfg: &HubConfig, url: &str, from: u64) -> Result<(ureq::http::Response<ureq::Body>, String), HubError> {
    let agent = cfg.agent();
    let hub_origin = origin(&cfg.endpoint).to_string();
    let mut current = url.to_string();
    for _ in 0..10 {
        let mut req = agent.get(&current);
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        if let Some(t) = &cfg.token {
            if origin(&current) == hub_origin {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
        }
        let resp = req.call().map_err(|e| transport(cfg, e))?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
            let Some(loc) = loc else { return Err(status_error(&current, status)) };
            current = join_location(&current, &loc);
            continue;
        }
        return Ok((resp, current));
    }
    Err(HubError::Http { url: url.to_string(), status: 310 })
}

/// Parses the start of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes")?.trim().split('-').next()?.trim().parse().ok()
}

/// Downloads `spec` into `models_dir/<folder>/` with resume and verification.
///
/// `force` re-downloads even when a file of the right size is present.
pub fn download(
    cfg: &HubConfig,
    spec: &ModelSpec,
    models_dir: &Path,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<Outcome, HubError> {
    let remote = head(cfg, spec)?;
    let dest = destination(models_dir, spec);
    if !force {
        if let Ok(meta) = std::fs::metadata(&dest) {
            if remote.size.is_none_or(|s| s == meta.len()) {
                return Ok(Outcome::AlreadyPresent { path: dest, bytes: meta.len() });
            }
            tracing::warn!(path = %dest.display(), "size differs from the hub's; downloading again");
        }
    }
    let dir = dest.parent().unwrap_or(models_dir);
    std::fs::create_dir_all(dir).map_err(|e| HubError::io("cannot create", dir, e))?;
    fetch(cfg, spec, &remote, &dest, progress)
}

fn fetch(
    cfg: &HubConfig,
    spec: &ModelSpec,
    remote: &RemoteFile,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<Outcome, HubError> {
    let partial = partial_path(dest);
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if remote.size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut hasher = Sha256::new();
    let (mut resp, url) = if have > 0 && remote.size == Some(have) {
        // Everything is already here: skip the transfer, only verify.
        hash_prefix(&partial, have, &mut hasher)?;
        finish(remote, &partial, dest, hasher, have)?;
        return Ok(Outcome::Downloaded {
            path: dest.to_path_buf(),
            bytes: have,
            resumed_from: have,
            verified_sha256: remote.sha256.clone(),
        });
    } else {
        get(cfg, &remote.location, have)?
    };
    let status = resp.status().as_u16();
    let mut start = 0;
    match status {
        206 => {
            let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).and_then(content_range_start);
            if cr == Some(have) {
                start = have;
            } else {
                // A range we did not ask for: start over from scratch.
                let (r, _) = get(cfg, &remote.location, 0)?;
                resp = r;
                if !resp.status().is_success() {
                    return Err(status_error(&url, resp.status().as_u16()));
                }
            }
        }
        200 => {}
        416 => {
            let (r, _) = get(cfg, &remote.location, 0)?;
            resp = r;
            if !resp.status().is_success() {
                return Err(status_error(&url, resp.status().as_u16()));
            }
        }
        _ => return Err(status_error(&url, status)),
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&partial)
        .map_err(|e| HubError::io("cannot write", &partial, e))?;
    if start > 0 {
        hash_prefix(&partial, start, &mut hasher)?;
    }
    file.set_len(start).map_err(|e| HubError::io("cannot write", &partial, e))?;
    file.seek(SeekFrom::Start(start)).map_err(|e| HubError::io("cannot write", &partial, e))?;
    if start > 0 {
        tracing::info!(bytes = start, file = %partial.display(), "resuming download");
    }
    progress.start(spec.local_name(), remote.size, start);
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut written = start;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = file.write_all(&buf[..n]) {
                    break Err(HubError::io("cannot write", &partial, e));
                }
                hasher.update(&buf[..n]);
                written += n as u64;
                progress.update(written);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(HubError::Interrupted {
                    url: url.clone(),
                    written,
                    partial: partial.clone(),
                    message: e.to_string(),
                })
            }
        }
    };
    let flushed = file.sync_all();
    progress.finish();
    result?;
    flushed.map_err(|e| HubError::io("cannot write", &partial, e))?;
    drop(file);
    if let Some(size) = remote.size {
        if written < size {
            return Err(HubError::Interrupted {
                url,
                written,
                partial: partial.clone(),
                message: format!("the connection ended early ({written} of {size} bytes)"),
            });
        }
    }
    finish(remote, &partial, dest, hasher, written)?;
    Ok(Outcome::Downloaded {
        path: dest.to_path_buf(),
        bytes: written,
        resumed_from: start,
        verified_sha256: remote.sha256.clone(),
    })
}

/// Checks size and sha256 of the finished partial file, then renames it into place.
fn finish(remote: &RemoteFile, partial: &Path, dest: &Path, hasher: Sha256, written: u64) -> Result<(), HubError> {
    if let Some(size) = remote.size {
        if written != size {
            let _ = std::fs::remove_file(partial);
            return Err(HubError::SizeMismatch { file: dest.to_path_buf(), expected: size, actual: written });
        }
    }
    if let Some(expected) = &remote.sha256 {
        let actual = hex::encode(hasher.finalize());
        if &actual != expected {
            let _ = std::fs::remove_file(partial);
            return Err(HubError::ChecksumMismatch { file: dest.to_path_buf(), expected: expected.clone(), actual });
        }
    }
    std::fs::rename(partial, dest).map_err(|e| HubError::io("cannot rename into place", dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ranges() {
        let s: ModelSpec = "a/b:sub/x.safetensors:vae".parse().unwrap();
        let d = destination(Path::new("/m"), &s);
        assert_eq!(d, PathBuf::from("/m/vae/x.safetensors"));
        assert_eq!(partial_path(&d), PathBuf::from("/m/vae/x.safetensors.incomplete"));
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("items 1-2"), None);
    }
}
