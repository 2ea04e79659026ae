//! Read-only description routes: `/object_info`, `/models`, `/embeddings`, `/extensions`,
//! `/features`, `/system_stats`, `/view_metadata/{folder}` (api.md §4.4–4.6, §5, §6).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use comfy_graph::schema::FileLister;
use comfy_graph::Folders;
use serde_json::{json, Map, Value as Json};

use crate::routes::upload::splitext;
use crate::{json, sysinfo, AppState};

/// The ComfyUI version whose API this server reproduces.
pub const COMFYUI_VERSION: &str = "0.29.0";

/// A file lister that lists each folder once per request (ComfyUI caches during `/object_info`).
struct CachedLister<'a> {
    folders: &'a Folders,
    models: RefCell<HashMap<String, Vec<String>>>,
    inputs: RefCell<HashMap<bool, Vec<String>>>,
}

impl FileLister for CachedLister<'_> {
    fn model_files(&self, folder: &str) -> Vec<String> {
        self.models
            .borrow_mut()
            .entry(folder.to_string())
            .or_insert_with(|| self.folders.list_models(folder))
            .clone()
    }
    fn input_files(&self, images_only: bool) -> Vec<String> {
        self.inputs
            .borrow_mut()
            .entry(images_only)
            .or_insert_with(|| self.folders.input_files(images_only))
            .clone()
    }
}

fn lister(folders: &Folders) -> CachedLister<'_> {
    CachedLister {
        folders,
        models: RefCell::default(),
        inputs: RefCell::default(),
    }
}

/// `GET /object_info`: every node class, in registration order.
pub async fn object_info(State(state): State<Arc<AppState>>) -> Response {
    let files = lister(&state.folders);
    let mut out = Map::new();
    for name in state.registry.class_names() {
        if let Some(schema) = state.registry.schema(name) {
            out.insert(name.to_string(), schema.to_object_info(&files));
        }
    }
    json::ok(&Json::Object(out))
}

/// `GET /object_info/{class}`: `{class: info}` or `{}`.
pub async fn object_info_one(
    State(state): State<Arc<AppState>>,
    UrlPath(class): UrlPath<String>,
) -> Response {
    let files = lister(&state.folders);
    let mut out = Map::new();
    if let Some(schema) = state.registry.schema(&class) {
        out.insert(class, schema.to_object_info(&files));
    }
    json::ok(&Json::Object(out))
}

/// `GET /models`: the folder keys in registration order.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    json::ok(
        &state
            .folders
            .models
            .iter()
            .map(|m| Json::String(m.name.clone()))
            .collect(),
    )
}

/// `GET /models/{folder}`: 404 for an unknown key (legacy names are not keys).
pub async fn models_in(
    State(state): State<Arc<AppState>>,
    UrlPath(folder): UrlPath<String>,
) -> Response {
    if !state.folders.models.iter().any(|m| m.name == folder) {
        return json::empty(StatusCode::NOT_FOUND);
    }
    let folders = state.clone();
    let list = tokio::task::spawn_blocking(move || folders.folders.list_models(&folder))
        .await
        .unwrap_or_default();
    json::ok(&json!(list))
}

/// `GET /embeddings`: embedding names without extension.
pub async fn embeddings(State(state): State<Arc<AppState>>) -> Response {
    let names: Vec<String> = state
        .folders
        .list_models("embeddings")
        .iter()
        .map(|n| splitext(n).0.to_string())
        .collect();
    json::ok(&json!(names))
}

fn collect_js(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_js(root, &p, out);
        } else if p.extension().map(|x| x == "js").unwrap_or(false) {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(format!("/{}", rel.to_string_lossy().replace('\\', "/")));
            }
        }
    }
}

/// `GET /extensions`: `*.js` under `<web root>/extensions/`.
pub async fn extensions(State(state): State<Arc<AppState>>) -> Response {
    let mut out = Vec::new();
    if let Some(root) = &state.web_root {
        collect_js(root, &root.join("extensions"), &mut out);
        out.sort();
    }
    json::ok(&json!(out))
}

/// The server feature flags (also the websocket `feature_flags` reply).
pub fn feature_flags(max_upload_bytes: usize) -> Json {
    json!({"supports_preview_metadata": true, "max_upload_size": max_upload_bytes as f64})
}

/// `GET /features`.
pub async fn features(State(state): State<Arc<AppState>>) -> Response {
    json::ok(&feature_flags(state.max_upload_bytes))
}

/// The `/system_stats` device entry of the CUDA compute device, with the driver's figures.
/// `torch_vram_total` is what this process has taken on the device since it opened it;
/// candle keeps no cache of freed blocks, so `torch_vram_free` is 0.
pub fn gpu_device_entry(gpu: &comfy_nodes::sd::device::GpuMemory) -> Json {
    json!({
        "name": gpu.display_name(),
        "type": "cuda",
        "index": gpu.facts.index,
        "vram_total": gpu.total,
        "vram_free": gpu.free,
        "torch_vram_total": gpu.used_by_process(),
        "torch_vram_free": 0
    })
}

/// The `/system_stats` body.
pub fn system_stats(argv: &[String]) -> Json {
    let (total, free) = sysinfo::ram();
    let resident = comfy_nodes::sd::resident_models();
    let process_rss = sysinfo::rss_of(std::process::id());
    let rs = concat!("comfy-rs ", env!("CARGO_PKG_VERSION"));
    json!({
        "system": {
            "os": if cfg!(windows) { "nt" } else { "posix" },
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": null,
            "installed_templates_version": null,
            "required_templates_version": null,
            "python_version": format!("{rs} (native Rust build, no Python)"),
            "pytorch_version": format!("{rs} (candle, no PyTorch)"),
            "embedded_python": false,
            "argv": argv,
        },
        "devices": [match comfy_nodes::sd::device::gpu_memory() {
            Some(gpu) => gpu_device_entry(&gpu),
            None => json!({
                "name": "cpu",
                "type": "cpu",
                "index": null,
                "vram_total": total,
                "vram_free": free,
                "torch_vram_total": total,
                "torch_vram_free": free
            }),
        }],
        // comfy-rs additions (ComfyUI clients ignore unknown keys): what the process really
        // holds, the models resident between prompts, and the dtypes models load in (after
        // the precision flags).
        "comfy_rs": {
            "process_rss": process_rss,
            "models_bytes": comfy_nodes::sd::resident_bytes(),
            "memory_cap": comfy_nodes::sd::errors::memory_cap(),
            "resident_models": resident,
            "dtypes": dtypes_entry(&comfy_nodes::sd::device::dtypes()),
        }
    })
}

/// The dtypes as torch names (`float32`, `float16`, `bfloat16`).
fn dtypes_entry(d: &comfy_nodes::sd::device::ComputeDtypes) -> Json {
    let name = |t: candle_core::DType| match t {
        candle_core::DType::F16 => "float16",
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::F64 => "float64",
        _ => "float32",
    };
    json!({
        "unet": name(d.unet),
        "unet_compute": name(d.unet_compute),
        "text_encoder": name(d.text_encoder),
        "text_encoder_compute": name(d.text_encoder_compute),
        "vae": name(d.vae),
    })
}

/// `GET /system_stats`.
pub async fn system_stats_route(State(state): State<Arc<AppState>>) -> Response {
    json::ok(&system_stats(&state.argv))
}

/// The `__metadata__` of a safetensors file; `None` when absent, unreadable or the header is
/// larger than 1 MiB.
pub fn safetensors_metadata(path: &Path) -> Option<Json> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 1024 * 1024 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: Json = serde_json::from_slice(&header).ok()?;
    header
        .get("__metadata__")
        .filter(|m| m.is_object())
        .cloned()
}

/// `GET /view_metadata/{folder}?filename=`.
pub async fn view_metadata(
    State(state): State<Arc<AppState>>,
    UrlPath(folder): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("filename") else {
        return json::empty(StatusCode::NOT_FOUND);
    };
    if !name.ends_with(".safetensors") {
        return json::empty(StatusCode::NOT_FOUND);
    }
    // `model_path` refuses names that leave the folder.
    let Some(path) = state.folders.model_path(&folder, name) else {
        return json::empty(StatusCode::NOT_FOUND);
    };
    match tokio::task::spawn_blocking(move || safetensors_metadata(&path)).await {
        Ok(Some(meta)) => json::ok(&meta),
        _ => json::empty(StatusCode::NOT_FOUND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_safetensors_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let header = br#"{"__metadata__": {"ss_name": "x"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(safetensors_metadata(&p), Some(json!({"ss_name": "x"})));
        let mut huge = (2u64 * 1024 * 1024).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(&p, huge).unwrap();
        assert_eq!(safetensors_metadata(&p), None);
    }

    #[test]
    fn system_stats_shape() {
        let s = system_stats(&["comfy-rs".to_string()]);
        assert!(s["system"]["ram_total"].as_u64().unwrap() > 0);
        if comfy_nodes::sd::device::is_gpu() {
            assert_eq!(s["devices"][0]["type"], "cuda");
            assert!(s["devices"][0]["vram_total"].as_u64().unwrap() > 0);
        } else {
            assert_eq!(s["devices"][0]["type"], "cpu");
            assert!(s["devices"][0]["index"].is_null());
        }
    }

    #[test]
    fn gpu_entry_has_comfyui_keys() {
        use comfy_nodes::sd::device::{GpuFacts, GpuMemory};
        let gpu = GpuMemory {
            facts: GpuFacts { index: 0, name: "NVIDIA H100 80GB HBM3".into(), capability: (9, 0), used_at_start: 600 << 20 },
            total: 80 << 30,
            free: 70 << 30,
        };
        let e = gpu_device_entry(&gpu);
        assert_eq!(e["name"], "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync");
        assert_eq!(e["type"], "cuda");
        assert_eq!(e["index"], 0);
        assert_eq!(e["vram_total"], 80u64 << 30);
        assert_eq!(e["vram_free"], 70u64 << 30);
        assert_eq!(e["torch_vram_total"], (10u64 << 30) - (600 << 20));
        assert_eq!(e["torch_vram_free"], 0);
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"]);
    }
}
