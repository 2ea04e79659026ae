//! The web editor side of the server (api.md §4.7–4.10, §6.4–6.6, §8.1):
//!
//! - `GET /` and static files: the official ComfyUI frontend from `--front-end-root DIR`, or
//!   `web/frontend/` (relative to the working directory; installed by
//!   `scripts/install-frontend.sh`) when present; otherwise the built-in page of `web/builtin/`,
//!   compiled into the binary.
//! - What the editor calls besides the core API: `/i18n`, `/workflow_templates`,
//!   `/templates/index.json` (no core templates: `[]`), `/experiment/models[/{folder}]`, and the `/internal/*` sub-application (logs,
//!   folder paths, file lists), which, as in ComfyUI, is not duplicated under `/api`.
//! - Log capture for `/internal/logs`: [`LogWriter`] tees the process log into a ring buffer.
//!
//! Frontend version: `comfyui-frontend-package` 1.28.9 is the default of the installer and the
//! one the browser test drives (load, run, show the image); every route its start-up sequence
//! calls is served. (1.27.x throws while building its model-to-node registry when
//! `/object_info` lacks loader classes such as `ControlNetLoader`; 1.28 skips absent ones.)

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::UNIX_EPOCH;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::Router;
use comfy_graph::folders::MODEL_EXTENSIONS;
use serde_json::{json, Map, Value as Json};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::{parse_json, ApiError};
use crate::routes::userdata::percent_decode;
use crate::{json, paths, AppState};

/// Where `scripts/install-frontend.sh` puts the official frontend (relative to the cwd).
pub const DEFAULT_FRONTEND_DIR: &str = "web/frontend";

const BUILTIN_INDEX: &str = include_str!("../../../../web/builtin/index.html");
const BUILTIN_JS: &str = include_str!("../../../../web/builtin/app.js");
const BUILTIN_CSS: &str = include_str!("../../../../web/builtin/style.css");

/// Folders that hold a custom node's example workflows (ComfyUI's `example_workflow_folder_names`).
const EXAMPLE_DIRS: &[&str] = &[
    "example_workflows",
    "example",
    "examples",
    "workflow",
    "workflows",
];

/// Routes mounted bare and under `/api`: the index page, i18n, templates, model library.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/i18n", get(i18n))
        .route("/workflow_templates", get(workflow_templates))
        .route("/experiment/models", get(experiment_models))
        .route("/experiment/models/{folder}", get(experiment_models_in))
        .route(
            "/experiment/models/preview/{folder}/{path_index}/{*filename}",
            get(model_preview),
        )
}

/// Routes mounted once, without the `/api` copy: `/internal/*`, the built-in page's assets
/// and custom-node example workflow files.
pub fn top_level_router() -> Router<Arc<AppState>> {
    Router::new()
        // ComfyUI also answers `/api/` with the index page (its `/` route copied under `/api`).
        .route("/api/", get(index))
        .route("/internal/logs", get(internal_logs))
        .route("/internal/logs/raw", get(internal_logs_raw))
        .route("/internal/logs/subscribe", patch(internal_logs_subscribe))
        .route("/internal/folder_paths", get(internal_folder_paths))
        .route("/internal/files/{directory_type}", get(internal_files))
        .route("/builtin/{file}", get(builtin_asset))
        .route("/templates/index.json", get(core_templates_index))
        .route(
            "/api/workflow_templates/{module}/{*file}",
            get(example_workflow_file),
        )
}

// ---------------------------------------------------------------------------------------------
// Frontend files

/// The frontend directory in use: `--front-end-root`, else `web/frontend` when it holds an
/// `index.html`; `None` means the built-in page.
pub fn frontend_root(state: &AppState) -> Option<PathBuf> {
    if let Some(root) = &state.web_root {
        return Some(paths::absolute(root));
    }
    let default = Path::new(DEFAULT_FRONTEND_DIR);
    default
        .join("index.html")
        .is_file()
        .then(|| paths::absolute(default))
}

fn no_cache(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    resp
}

fn typed(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `GET /`: the frontend's `index.html` (never cached), or the built-in page.
async fn index(State(state): State<Arc<AppState>>) -> Response {
    match frontend_root(&state) {
        Some(root) => match tokio::fs::read(root.join("index.html")).await {
            Ok(bytes) => {
                let mut resp = (StatusCode::OK, bytes).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                no_cache(resp)
            }
            Err(_) => ApiError::Bare(StatusCode::NOT_FOUND).into_response(),
        },
        None => no_cache(typed(BUILTIN_INDEX, "text/html; charset=utf-8")),
    }
}

/// `GET /builtin/{file}`: the built-in page's script and style sheet.
async fn builtin_asset(UrlPath(file): UrlPath<String>) -> Response {
    match file.as_str() {
        "app.js" => typed(BUILTIN_JS, "application/javascript; charset=utf-8"),
        "style.css" => typed(BUILTIN_CSS, "text/css; charset=utf-8"),
        "index.html" => no_cache(typed(BUILTIN_INDEX, "text/html; charset=utf-8")),
        _ => ApiError::Bare(StatusCode::NOT_FOUND).into_response(),
    }
}

/// The relative file a static request names, or `None` for anything that could leave the
/// root or reach hidden files (`..`, `.x`, NUL, backslash, encoded forms of these).
pub fn static_rel_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(uri_path);
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with('.') => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Serves `file` with Range / If-Modified-Since support and `nosniff`.
async fn serve_static(file: &Path, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let mut fwd = Request::new(Body::empty());
    *fwd.headers_mut() = parts.headers;
    *fwd.method_mut() = parts.method;
    let mut resp = match ServeFile::new(file).oneshot(fwd).await {
        Ok(r) => r.map(Body::new),
        Err(_) => return ApiError::Bare(StatusCode::NOT_FOUND).into_response(),
    };
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The fallback of the whole router: a file of the frontend directory (GET/HEAD), else 404.
/// Content types come from the extension; `Cache-Control` is set by the cache middleware
/// (ComfyUI's rules: `no-cache` for `.js`/`.css`, a day for images).
pub async fn static_fallback(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    }
    let Some(root) = frontend_root(&state) else {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    };
    let Some(rel) = static_rel_path(req.uri().path()) else {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    };
    let file = root.join(rel);
    if !file.is_file() || !paths::real_within(&root, &file) {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    }
    serve_static(&file, req).await
}

// ---------------------------------------------------------------------------------------------
// Custom-node data: translations and example workflows

fn custom_node_dirs(state: &AppState) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(folder) = state.folders.model_folder("custom_nodes") else {
        return out;
    };
    for base in &folder.dirs {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

/// ComfyUI's `merge_json_recursive`: objects merge key by key, anything else is replaced.
pub fn merge_json(base: &mut Json, add: Json) {
    match (base, add) {
        (Json::Object(b), Json::Object(a)) => {
            for (k, v) in a {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_json(existing, v)
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, a) => *b = a,
    }
}

fn read_json(path: &Path) -> Option<Json> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The merged translations of `custom_nodes/*/locales/<lang>/`.
fn translations(node_dirs: &[PathBuf]) -> Json {
    let mut out = Json::Object(Map::new());
    for dir in node_dirs {
        let Ok(rd) = std::fs::read_dir(dir.join("locales")) else {
            continue;
        };
        let mut langs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        langs.sort();
        for lang_dir in langs {
            let lang = lang_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut lang_data = json!({});
            if let Some(main @ Json::Object(_)) = read_json(&lang_dir.join("main.json")) {
                merge_json(&mut lang_data, main);
            }
            for extra in ["nodeDefs", "commands", "settings"] {
                if let Some(v @ Json::Object(_)) =
                    read_json(&lang_dir.join(format!("{extra}.json")))
                {
                    merge_json(&mut lang_data, json!({ extra: v }));
                }
            }
            merge_json(&mut out, json!({ lang: lang_data }));
        }
    }
    out
}

/// `GET /i18n`.
async fn i18n(State(state): State<Arc<AppState>>) -> Response {
    let dirs = custom_node_dirs(&state);
    match tokio::task::spawn_blocking(move || translations(&dirs)).await {
        Ok(v) => json::ok(&v),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// `GET /workflow_templates`: `{custom node: [workflow stems]}`.
async fn workflow_templates(State(state): State<Arc<AppState>>) -> Response {
    let mut out = Map::new();
    for dir in custom_node_dirs(&state) {
        let module = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for sub in EXAMPLE_DIRS {
            let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
                .collect();
            names.sort();
            if names.is_empty() {
                continue;
            }
            let list = out.entry(module.clone()).or_insert_with(|| json!([]));
            if let Json::Array(a) = list {
                a.extend(names.into_iter().map(Json::String));
            }
        }
    }
    json::ok(&Json::Object(out))
}

/// `GET /templates/index.json`: the index of the core workflow templates. ComfyUI serves the
/// `comfyui-workflow-templates` package there; comfy-rs ships no templates, so the index is an
/// empty list (the editor then shows no template categories instead of logging a failed fetch).
async fn core_templates_index() -> Response {
    no_cache(json::ok(&json!([])))
}

/// `GET /api/workflow_templates/{module}/{file}`: a custom node's example workflow file.
async fn example_workflow_file(
    State(state): State<Arc<AppState>>,
    UrlPath((module, file)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let not_found = || ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    let Some(rel) = static_rel_path(&file) else {
        return not_found();
    };
    let Some(node_dir) = custom_node_dirs(&state).into_iter().find(|d| {
        d.file_name()
            .map(|n| n.to_string_lossy() == module.as_str())
            .unwrap_or(false)
    }) else {
        return not_found();
    };
    let Some(examples) = EXAMPLE_DIRS
        .iter()
        .map(|s| node_dir.join(s))
        .find(|d| d.is_dir())
    else {
        return not_found();
    };
    let path = examples.join(rel);
    if !path.is_file() || !paths::real_within(&examples, &path) {
        return not_found();
    }
    serve_static(&path, req).await
}

// ---------------------------------------------------------------------------------------------
// Model library

fn mtime_secs(m: &std::fs::Metadata) -> f64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ctime_secs(m: &std::fs::Metadata) -> f64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9
    }
    #[cfg(not(unix))]
    {
        mtime_secs(m)
    }
}

fn is_model_file(name: &str) -> bool {
    name.rsplit_once('.')
        .map(|(_, e)| MODEL_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Files under `dir` for the model library: recursive, following symlinks (depth-limited),
/// hidden entries and `.git` skipped, generic model extensions only; sorted by path.
fn model_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, std::fs::Metadata)>) {
    if depth > 32 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            model_files(root, &path, depth + 1, out);
        } else if m.is_file() && is_model_file(&name) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, m));
        }
    }
}

/// `GET /experiment/models`: every folder key (but `configs`, `custom_nodes`) with its paths.
async fn experiment_models(State(state): State<Arc<AppState>>) -> Response {
    let list: Vec<Json> = state
        .folders
        .models
        .iter()
        .filter(|f| f.name != "configs" && f.name != "custom_nodes")
        .map(|f| json!({"name": f.name, "folders": f.dirs.iter().map(|d| d.to_string_lossy()).collect::<Vec<_>>()}))
        .collect();
    json::ok(&Json::Array(list))
}

/// `GET /experiment/models/{folder}`: `[{name, pathIndex, modified, created, size}]`.
async fn experiment_models_in(
    State(state): State<Arc<AppState>>,
    UrlPath(folder): UrlPath<String>,
) -> Response {
    let Some(f) = state
        .folders
        .models
        .iter()
        .find(|f| f.name == folder)
        .cloned()
    else {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    };
    let listed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (i, dir) in f.dirs.iter().enumerate() {
            let mut files = Vec::new();
            model_files(dir, dir, 0, &mut files);
            for (name, m) in files {
                out.push(json!({
                    "name": name,
                    "pathIndex": i,
                    "modified": mtime_secs(&m),
                    "created": ctime_secs(&m),
                    "size": m.len(),
                }));
            }
        }
        Json::Array(out)
    })
    .await;
    match listed {
        Ok(v) => json::ok(&v),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// `GET /experiment/models/preview/{folder}/{path_index}/{filename}`: an image next to the
/// model (`<stem>.<ext>` or `<stem>.preview.<ext>`). It is sent in its own format (ComfyUI
/// re-encodes to WebP, which this build cannot write); the safetensors `ssmd_cover_images`
/// source is not read. 404 when there is none.
async fn model_preview(
    State(state): State<Arc<AppState>>,
    UrlPath((folder, path_index, filename)): UrlPath<(String, usize, String)>,
    req: Request,
) -> Response {
    let not_found = || ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    let Some(f) = state.folders.models.iter().find(|f| f.name == folder) else {
        return not_found();
    };
    let Some(dir) = f.dirs.get(path_index) else {
        return not_found();
    };
    let Some(rel) = comfy_graph::folders::safe_relative(&filename) else {
        return not_found();
    };
    let model = dir.join(&rel);
    let stem = match model.file_stem() {
        Some(s) => s.to_string_lossy().into_owned(),
        None => return not_found(),
    };
    let parent = model.parent().unwrap_or(dir).to_path_buf();
    for candidate in [stem.clone(), format!("{stem}.preview")] {
        for ext in ["webp", "png", "jpg", "jpeg", "gif"] {
            let p = parent.join(format!("{candidate}.{ext}"));
            if p.is_file() && paths::real_within(dir, &p) {
                return serve_static(&p, req).await;
            }
        }
    }
    not_found()
}

// ---------------------------------------------------------------------------------------------
// /internal

/// `GET /internal/folder_paths`: every folder key with its directories.
async fn internal_folder_paths(State(state): State<Arc<AppState>>) -> Response {
    let mut out = Map::new();
    for f in &state.folders.models {
        out.insert(
            f.name.clone(),
            json!(f
                .dirs
                .iter()
                .map(|d| d.to_string_lossy())
                .collect::<Vec<_>>()),
        );
    }
    json::ok(&Json::Object(out))
}

/// `GET /internal/files/{output|input|temp}`: top-level file names, newest first.
async fn internal_files(
    State(state): State<Arc<AppState>>,
    UrlPath(kind): UrlPath<String>,
) -> Response {
    let Some(dir) = state.folders.dir_for_type(&kind).map(Path::to_path_buf) else {
        return json::json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Invalid directory type"}),
        );
    };
    let listed = tokio::task::spawn_blocking(move || {
        let mut files: Vec<(f64, String)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let m = std::fs::metadata(e.path()).ok()?;
                        m.is_file()
                            .then(|| (mtime_secs(&m), e.file_name().to_string_lossy().into_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by(|a, b| b.0.total_cmp(&a.0));
        Json::Array(files.into_iter().map(|(_, n)| Json::String(n)).collect())
    })
    .await;
    match listed {
        Ok(v) => json::ok(&v),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

/// Entries kept for `/internal/logs` (ComfyUI keeps the last 300 writes).
pub const LOG_CAPACITY: usize = 300;

struct LogState {
    entries: Mutex<VecDeque<(String, String)>>,
    tx: tokio::sync::broadcast::Sender<(String, String)>,
    subscribers: Mutex<HashSet<String>>,
    forwarding: AtomicBool,
}

fn logs() -> &'static LogState {
    static LOGS: OnceLock<LogState> = OnceLock::new();
    LOGS.get_or_init(|| LogState {
        entries: Mutex::new(VecDeque::with_capacity(LOG_CAPACITY)),
        tx: tokio::sync::broadcast::channel(1024).0,
        subscribers: Mutex::new(HashSet::new()),
        forwarding: AtomicBool::new(false),
    })
}

/// Records one log write (`{"t": iso time, "m": text}`) for `/internal/logs` and subscribers.
pub fn capture_log(text: &str) {
    if text.is_empty() {
        return;
    }
    let t = chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let l = logs();
    {
        let mut e = l.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back((t.clone(), text.to_string()));
    }
    let _ = l.tx.send((t, text.to_string()));
}

/// A `tracing_subscriber` writer (`.with_writer(LogWriter::new)`) that writes to stderr and
/// keeps a copy of every record for `/internal/logs` and the editor's terminal panel.
#[derive(Debug, Default)]
pub struct LogWriter;

impl LogWriter {
    /// A writer for one log record.
    pub fn new() -> Self {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        capture_log(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn log_entries() -> Vec<(String, String)> {
    logs()
        .entries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

fn terminal_size() -> Json {
    let dim = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    json!({"cols": dim("COLUMNS", 80), "rows": dim("LINES", 24)})
}

/// `GET /internal/logs`: one string, `"<time> - <text>"` per entry.
async fn internal_logs() -> Response {
    let text: String = log_entries()
        .into_iter()
        .map(|(t, m)| format!("{t} - {m}"))
        .collect();
    json::ok(&Json::String(text))
}

/// `GET /internal/logs/raw`: `{"entries": [{t, m}], "size": {cols, rows}}`.
async fn internal_logs_raw() -> Response {
    let entries: Vec<Json> = log_entries()
        .into_iter()
        .map(|(t, m)| json!({"t": t, "m": m}))
        .collect();
    json::ok(&json!({"entries": entries, "size": terminal_size()}))
}

/// Starts (once) the task that forwards new log records as `logs` websocket messages to the
/// subscribed clients. It runs outside the log writer so logging never waits on sockets.
fn start_forwarder(hub: Arc<crate::Hub>) {
    let l = logs();
    if l.forwarding.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut rx = l.tx.subscribe();
    tokio::spawn(async move {
        loop {
            let first = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let mut batch = vec![first];
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
            let subs: Vec<String> = logs()
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            if subs.is_empty() {
                continue;
            }
            let entries: Vec<Json> = batch
                .into_iter()
                .map(|(t, m)| json!({"t": t, "m": m}))
                .collect();
            let data = json!({"entries": entries, "size": Json::Null});
            for sid in subs {
                hub.send_json("logs", &data, Some(&sid));
            }
        }
    });
}

/// `PATCH /internal/logs/subscribe` `{"clientId": sid, "enabled": bool}`.
async fn internal_logs_subscribe(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // ComfyUI reads both keys with `[]`: a missing one is a server error there too.
    let (Some(sid), Some(enabled)) = (
        body.get("clientId").and_then(Json::as_str),
        body.get("enabled"),
    ) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n\nServer got itself in trouble",
        )
            .into_response();
    };
    let on = match enabled {
        Json::Bool(b) => *b,
        Json::Null => false,
        Json::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    };
    {
        let mut subs = logs().subscribers.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            subs.insert(sid.to_string());
        } else {
            subs.remove(sid);
        }
    }
    if on {
        start_forwarder(state.hub.clone());
    }
    json::empty(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_stay_in_the_root() {
        assert_eq!(
            static_rel_path("/assets/index-abc.js"),
            Some(PathBuf::from("assets/index-abc.js"))
        );
        assert_eq!(
            static_rel_path("/a%20b.css"),
            Some(PathBuf::from("a b.css"))
        );
        for bad in [
            "/../etc/passwd",
            "/assets/../../x",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/.comfyui-frontend-version",
            "/a/.git/config",
            "/a%00b",
            "/a%5c..%5cb",
            "/",
            "",
        ] {
            assert_eq!(static_rel_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_merge_is_recursive() {
        let mut a = json!({"en": {"nodeDefs": {"A": 1}, "x": [1]}});
        merge_json(
            &mut a,
            json!({"en": {"nodeDefs": {"B": 2}, "x": [2]}, "fr": {}}),
        );
        assert_eq!(
            a,
            json!({"en": {"nodeDefs": {"A": 1, "B": 2}, "x": [2]}, "fr": {}})
        );
    }

    #[test]
    fn translations_from_custom_node_locales() {
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().join("mynode/locales/en");
        std::fs::create_dir_all(&loc).unwrap();
        std::fs::write(loc.join("main.json"), br#"{"greeting": "hi"}"#).unwrap();
        std::fs::write(
            loc.join("nodeDefs.json"),
            br#"{"MyNode": {"display_name": "Mine"}}"#,
        )
        .unwrap();
        std::fs::write(loc.join("settings.json"), b"not json").unwrap();
        let t = translations(&[dir.path().join("mynode"), dir.path().join("missing")]);
        assert_eq!(
            t,
            json!({"en": {"greeting": "hi", "nodeDefs": {"MyNode": {"display_name": "Mine"}}}})
        );
    }

    #[test]
    fn model_library_walk_filters_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/.hidden")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join("a.safetensors"), b"x").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        std::fs::write(d.join("sub/b.CKPT"), b"xy").unwrap();
        std::fs::write(d.join("sub/.hidden/c.pt"), b"x").unwrap();
        std::fs::write(d.join(".git/d.pt"), b"x").unwrap();
        let mut out = Vec::new();
        model_files(d, d, 0, &mut out);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["a.safetensors", "sub/b.CKPT"]);
        assert_eq!(out[1].1.len(), 2);
    }

    #[test]
    fn log_capture_keeps_the_last_entries() {
        for i in 0..LOG_CAPACITY + 5 {
            capture_log(&format!("line {i}\n"));
        }
        let e = log_entries();
        assert_eq!(e.len(), LOG_CAPACITY);
        assert_eq!(e.last().unwrap().1, format!("line {}\n", LOG_CAPACITY + 4));
        assert!(e[0].0.contains('T'));
    }
}
