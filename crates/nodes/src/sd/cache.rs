//! The resident-model cache: loaded checkpoints and VAEs stay in memory between prompts,
//! keyed by (kind, path, modification time, size), so two prompts naming the same file load
//! it once and a rewritten file is reloaded.
//!
//! [`unload_all_models`] empties it (`POST /free`, and after an out-of-memory error — the
//! engine's unload hook should call it); [`resident_models`] lists it (`/system_stats`).
//! Values already handed to the engine's output cache stay alive until that cache drops them.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use comfy_graph::NodeError;
use serde::Serialize;

/// Identity of a file version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    path: PathBuf,
    mtime: Option<SystemTime>,
    len: u64,
}

struct Slot {
    kind: &'static str,
    key: FileKey,
    name: String,
    bytes: u64,
    value: Arc<dyn Any + Send + Sync>,
}

/// One resident model, as `/system_stats` may list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResidentModel {
    /// `checkpoint` or `vae`.
    pub kind: String,
    /// The name the prompt used (relative to its model folder).
    pub name: String,
    /// Absolute path of the file.
    pub path: String,
    /// Approximate bytes held in memory.
    pub bytes: u64,
}

fn slots() -> MutexGuard<'static, Vec<Slot>> {
    static CACHE: OnceLock<Mutex<Vec<Slot>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|p| p.into_inner())
}

fn file_key(path: &Path) -> Result<FileKey, NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::missing_model(format!("Model file {} is not readable: {e}", path.display())))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(FileKey { path, mtime: meta.modified().ok(), len: meta.len() })
}

/// The cached value of kind `kind` for `path`, or `load()`'s result (then cached).
///
/// `load` returns the value and its approximate size in bytes. The cache lock is held while
/// loading, so concurrent requests for the same file load it once. A cached entry for an
/// older version of the file is dropped first.
pub fn get_or_load<T: Any + Send + Sync>(
    kind: &'static str,
    path: &Path,
    name: &str,
    load: impl FnOnce() -> Result<(T, u64), NodeError>,
) -> Result<Arc<T>, NodeError> {
    let key = file_key(path)?;
    let mut slots = slots();
    if let Some(s) = slots.iter().find(|s| s.kind == kind && s.key == key) {
        if let Ok(v) = s.value.clone().downcast::<T>() {
            tracing::debug!("model cache hit: {} {}", kind, key.path.display());
            return Ok(v);
        }
    }
    slots.retain(|s| !(s.kind == kind && s.key.path == key.path));
    let (value, bytes) = load()?;
    let value = Arc::new(value);
    slots.push(Slot { kind, key, name: name.to_string(), bytes, value: value.clone() });
    Ok(value)
}

/// Drops every resident model; returns how many were dropped.
pub fn unload_all_models() -> usize {
    let mut slots = slots();
    let n = slots.len();
    slots.clear();
    if n > 0 {
        tracing::info!("unloaded {n} model(s)");
    }
    n
}

/// The resident models, in load order.
pub fn resident_models() -> Vec<ResidentModel> {
    slots()
        .iter()
        .map(|s| ResidentModel {
            kind: s.kind.to_string(),
            name: s.name.clone(),
            path: s.key.path.display().to_string(),
            bytes: s.bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn loads_once_and_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cache_test.bin");
        std::fs::write(&p, b"one").unwrap();
        let loads = AtomicUsize::new(0);
        let load = || {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok((String::from("v"), 3u64))
        };
        let a = get_or_load("test-kind", &p, "cache_test.bin", load).unwrap();
        let b = get_or_load("test-kind", &p, "cache_test.bin", load).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(resident_models().iter().any(|m| m.name == "cache_test.bin" && m.bytes == 3));
        // A different size is a different file version.
        std::fs::write(&p, b"longer").unwrap();
        let _c = get_or_load("test-kind", &p, "cache_test.bin", load).unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(resident_models().iter().filter(|m| m.name == "cache_test.bin").count(), 1);
    }

    #[test]
    fn missing_file_is_missing_model() {
        let e = get_or_load("test-kind", Path::new("/nonexistent/x.safetensors"), "x", || Ok((1u8, 1))).unwrap_err();
        assert_eq!(e.category(), comfy_graph::ErrorCategory::MissingModel);
    }
}
