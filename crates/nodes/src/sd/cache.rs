//! The resident-model cache: loaded checkpoints and VAEs stay in memory (on the compute
//! device) between prompts, keyed by (kind, path, modification time, size), so two prompts
//! naming the same file load it once and a rewritten file is reloaded.
//!
//! [`unload_all_models`] empties it (`POST /free`, and after an out-of-memory error — the
//! engine's unload hook calls it); [`resident_models`] lists it (`/system_stats`).
//! Values already handed to the engine's output cache stay alive until that cache drops them.
//!
//! # Memory
//! Every hit stamps the slot as used. A load that would pass the memory cap (`--memory-cap`)
//! or the memory the device has free makes room first: [`make_room`] (called by
//! [`crate::sd::errors::ensure_memory`] from inside the load) evicts the least recently used
//! resident models until the load fits; only when it still does not fit is the load an
//! `out_of_memory` error.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Logical time of the last load or hit (larger = more recent).
    last_used: u64,
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

/// A set of resident models. The process has one ([`global`]); tests make their own.
pub struct ModelCache {
    slots: Mutex<Vec<Slot>>,
    /// Serialises loads, so concurrent requests for the same file load it once. The slot
    /// list itself is locked only briefly, so the memory check inside a load can evict.
    loading: Mutex<()>,
    /// Sum of the slots' `bytes`, readable without a lock.
    resident: AtomicU64,
    clock: AtomicU64,
}

impl Default for ModelCache {
    fn default() -> Self {
        ModelCache { slots: Mutex::new(Vec::new()), loading: Mutex::new(()), resident: AtomicU64::new(0), clock: AtomicU64::new(0) }
    }
}

/// The process-wide cache.
pub fn global() -> &'static ModelCache {
    static CACHE: OnceLock<ModelCache> = OnceLock::new();
    CACHE.get_or_init(ModelCache::default)
}

fn file_key(path: &Path) -> Result<FileKey, NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::missing_model(format!("Model file {} is not readable: {e}", path.display())))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(FileKey { path, mtime: meta.modified().ok(), len: meta.len() })
}

/// Which slots to drop to free `shortfall` bytes: indices in least-recently-used order,
/// as few as needed; empty when even dropping all of them would not free enough.
fn lru_victims(slots: &[(u64, u64)], shortfall: u64) -> Vec<usize> {
    let total: u64 = slots.iter().map(|s| s.1).sum();
    if shortfall == 0 || total < shortfall {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| slots[i].0);
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in order {
        if freed >= shortfall {
            break;
        }
        freed += slots[i].1;
        out.push(i);
    }
    out
}

impl ModelCache {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn update_resident(&self, slots: &[Slot]) {
        self.resident.store(slots.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
    }

    /// Approximate bytes held by the resident models.
    pub fn resident_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// See [`get_or_load`].
    pub fn get_or_load<T: Any + Send + Sync>(
        &self,
        kind: &'static str,
        path: &Path,
        name: &str,
        load: impl FnOnce() -> Result<(T, u64), NodeError>,
    ) -> Result<Arc<T>, NodeError> {
        let key = file_key(path)?;
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut slots = self.lock();
            let now = self.tick();
            if let Some(s) = slots.iter_mut().find(|s| s.kind == kind && s.key == key) {
                if let Ok(v) = s.value.clone().downcast::<T>() {
                    s.last_used = now;
                    tracing::debug!("model cache hit: {} {}", kind, key.path.display());
                    return Ok(v);
                }
            }
            slots.retain(|s| !(s.kind == kind && s.key.path == key.path));
            self.update_resident(&slots);
        }
        let (value, bytes) = load()?;
        let value = Arc::new(value);
        let mut slots = self.lock();
        let now = self.tick();
        slots.push(Slot { kind, key, name: name.to_string(), bytes, last_used: now, value: value.clone() });
        self.update_resident(&slots);
        Ok(value)
    }

    /// Evicts least-recently-used models until `shortfall` bytes are freed; does nothing when
    /// dropping every resident model would not free that much. Returns the bytes freed.
    pub fn make_room(&self, shortfall: u64) -> u64 {
        let mut slots = self.lock();
        let stamps: Vec<(u64, u64)> = slots.iter().map(|s| (s.last_used, s.bytes)).collect();
        let mut victims = lru_victims(&stamps, shortfall);
        if victims.is_empty() {
            return 0;
        }
        victims.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0;
        for i in victims {
            let s = slots.remove(i);
            tracing::info!("evicting least recently used model {} {} ({} MiB) to make room", s.kind, s.name, s.bytes >> 20);
            freed += s.bytes;
        }
        self.update_resident(&slots);
        freed
    }

    /// Drops every resident model; returns how many were dropped.
    pub fn unload_all(&self) -> usize {
        let mut slots = self.lock();
        let n = slots.len();
        slots.clear();
        self.update_resident(&slots);
        n
    }

    /// The resident models, in load order.
    pub fn list(&self) -> Vec<ResidentModel> {
        self.lock()
            .iter()
            .map(|s| ResidentModel {
                kind: s.kind.to_string(),
                name: s.name.clone(),
                path: s.key.path.display().to_string(),
                bytes: s.bytes,
            })
            .collect()
    }
}

/// Approximate bytes held by the resident models.
pub fn resident_bytes() -> u64 {
    global().resident_bytes()
}

/// The cached value of kind `kind` for `path`, or `load()`'s result (then cached).
///
/// `load` returns the value and its approximate size in bytes; it checks the memory first
/// with [`crate::sd::errors::ensure_memory`], which evicts least-recently-used models when
/// needed. Loads are serialised, so concurrent requests for the same file load it once. A
/// cached entry for an older version of the file is dropped first.
pub fn get_or_load<T: Any + Send + Sync>(
    kind: &'static str,
    path: &Path,
    name: &str,
    load: impl FnOnce() -> Result<(T, u64), NodeError>,
) -> Result<Arc<T>, NodeError> {
    global().get_or_load(kind, path, name, load)
}

/// Evicts least-recently-used resident models to free `shortfall` bytes (see
/// [`ModelCache::make_room`]).
pub fn make_room(shortfall: u64) -> u64 {
    let freed = global().make_room(shortfall);
    if freed > 0 {
        // The allocator keeps freed blocks for reuse (`ops::tune_allocator`); hand them back.
        comfy_diffusion::ops::release_memory();
    }
    freed
}

/// Drops every resident model; returns how many were dropped.
pub fn unload_all_models() -> usize {
    let n = global().unload_all();
    if n > 0 {
        tracing::info!("unloaded {n} model(s)");
        comfy_diffusion::ops::release_memory();
    }
    n
}

/// The resident models, in load order.
pub fn resident_models() -> Vec<ResidentModel> {
    global().list()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::errors::ensure_memory_in;
    use comfy_graph::ErrorCategory;
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

    #[test]
    fn victims_are_least_recently_used_first() {
        // (last_used, bytes)
        let slots = [(5, 100), (1, 100), (9, 100), (3, 100)];
        assert_eq!(lru_victims(&slots, 1), vec![1]);
        assert_eq!(lru_victims(&slots, 150), vec![1, 3]);
        assert_eq!(lru_victims(&slots, 400), vec![1, 3, 0, 2]);
        assert!(lru_victims(&slots, 401).is_empty(), "no eviction when it cannot help");
        assert!(lru_victims(&slots, 0).is_empty());
    }

    /// A fake load of `bytes` through `cache` under `cap` (no OS memory check).
    fn fake_load(cache: &ModelCache, path: &Path, bytes: u64, cap: u64) -> Result<Arc<String>, NodeError> {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        cache.get_or_load("fake", path, &name.clone(), || {
            ensure_memory_in(cache, bytes, Some(cap), None, &name)?;
            Ok((name.clone(), bytes))
        })
    }

    #[test]
    fn a_load_past_the_cap_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, n).unwrap();
            p
        };
        let (a, b, c, d, big) = (file("a"), file("b"), file("c"), file("d"), file("big"));
        let cache = ModelCache::default();
        let names = |cache: &ModelCache| cache.list().into_iter().map(|m| m.name).collect::<Vec<_>>();
        fake_load(&cache, &a, 40, 100).unwrap();
        fake_load(&cache, &b, 40, 100).unwrap();
        // A hit on `a` makes `b` the least recently used.
        fake_load(&cache, &a, 40, 100).unwrap();
        fake_load(&cache, &c, 40, 100).unwrap();
        assert_eq!(names(&cache), ["a", "c"], "b was evicted, not a");
        assert_eq!(cache.resident_bytes(), 80);
        // Needs 90: both residents go, oldest first.
        fake_load(&cache, &d, 90, 100).unwrap();
        assert_eq!(names(&cache), ["d"]);
        // Larger than the cap itself: nothing is evicted and the load fails.
        let e = fake_load(&cache, &big, 150, 100).unwrap_err();
        assert_eq!(e.category(), ErrorCategory::OutOfMemory);
        assert!(e.to_string().contains("memory cap"), "{e}");
        assert_eq!(names(&cache), ["d"]);
    }

    #[test]
    fn device_memory_shortage_also_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let cache = ModelCache::default();
        cache.get_or_load("fake", &a, "a", || Ok(("a".to_string(), 60u64))).unwrap();
        // 50 bytes free on the device, 70 needed: evicting `a` (60) frees enough.
        cache
            .get_or_load("fake", &b, "b", || {
                ensure_memory_in(&cache, 70, None, Some(50), "b")?;
                Ok(("b".to_string(), 70u64))
            })
            .unwrap();
        assert_eq!(cache.list().into_iter().map(|m| m.name).collect::<Vec<_>>(), ["b"]);
        // 10 free, 100 needed, 70 resident: eviction cannot help, so nothing is dropped.
        let e = ensure_memory_in(&cache, 100, None, Some(10), "c").unwrap_err();
        assert_eq!(e.category(), ErrorCategory::OutOfMemory);
        assert_eq!(cache.resident_bytes(), 70);
    }
}
