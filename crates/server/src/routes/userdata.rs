//! Users, settings and per-user files (api.md §7): `/users`, `/settings`, `/userdata`,
//! `/v2/userdata`.
//!
//! Every file lives in `<user dir>/<user id>/`. A request path is accepted only if it stays
//! there: percent-decoded once more when it still holds `%` (as ComfyUI does), then joined and
//! normalised lexically, then every existing component below the user root is checked so a
//! symlink cannot lead out of it (a dangling link is refused too).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Map, Value as Json};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::{parse_json, ApiError};
use crate::{json, paths, AppState};

/// File holding the settings of one user, inside its user root.
pub const SETTINGS_FILE: &str = "comfy.settings.json";
/// File (in the user directory) mapping user ids to display names.
pub const USERS_FILE: &str = "users.json";

/// Whether requests name their user (`--multi-user`, `Comfy-User` header) or all share `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMode {
    /// The only user is `default`; the `Comfy-User` header is ignored (ComfyUI's default).
    Single,
    /// The user is the `Comfy-User` header (default `default`) and must exist in `users.json`.
    Multi,
}

/// The user table and the locks that serialise read-modify-write cycles.
struct UserStore {
    mode: UserMode,
    /// `users.json`, loaded on first use (insertion order kept, as Python's dict).
    users: Mutex<Option<Map<String, Json>>>,
    /// Held while settings or `users.json` are read, changed and written back.
    write: tokio::sync::Mutex<()>,
}

/// Why a request has no usable user root.
#[derive(Debug, thiserror::Error)]
enum UserError {
    #[error("Unknown user: {0}")]
    Unknown(String),
    #[error("user directory outside the user root")]
    Outside,
}

impl UserStore {
    fn new(mode: UserMode) -> Self {
        UserStore {
            mode,
            users: Mutex::new(None),
            write: tokio::sync::Mutex::new(()),
        }
    }

    fn users(&self, user_dir: &Path) -> Map<String, Json> {
        let mut guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let loaded = match self.mode {
                UserMode::Single => {
                    let mut m = Map::new();
                    m.insert("default".into(), json!("default"));
                    m
                }
                UserMode::Multi => std::fs::read(user_dir.join(USERS_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Map<String, Json>>(&b).ok())
                    .unwrap_or_default(),
            };
            *guard = Some(loaded);
        }
        guard.clone().unwrap_or_default()
    }

    fn set_users(&self, users: Map<String, Json>) {
        *self.users.lock().unwrap_or_else(|p| p.into_inner()) = Some(users);
    }

    /// ComfyUI's `get_request_user_id`.
    fn user_id(&self, user_dir: &Path, headers: &HeaderMap) -> Result<String, UserError> {
        let mut user = "default".to_string();
        if self.mode == UserMode::Multi {
            if let Some(h) = headers.get("comfy-user") {
                user = String::from_utf8_lossy(h.as_bytes()).into_owned();
                // System users (`__` prefix) are never reachable over HTTP.
                if user.starts_with("__") {
                    return Err(UserError::Unknown(user));
                }
            }
        }
        if !self.users(user_dir).contains_key(&user) {
            return Err(UserError::Unknown(user));
        }
        Ok(user)
    }

    /// The request's user root `<user dir>/<id>` (lexically inside the user directory).
    fn user_root(&self, state: &AppState, headers: &HeaderMap) -> Result<PathBuf, UserError> {
        let user_dir = paths::absolute(&state.folders.user);
        let id = self.user_id(&user_dir, headers)?;
        if id.is_empty() || id.contains('\0') {
            return Err(UserError::Outside);
        }
        let root = paths::normalize_join(&user_dir, &id);
        if root == user_dir || !paths::is_within(&user_dir, &root) {
            return Err(UserError::Outside);
        }
        Ok(root)
    }
}

/// The routes of this module (mounted bare and under `/api`), single-user mode.
pub fn router() -> Router<Arc<AppState>> {
    router_with(UserMode::Single)
}

/// The routes with an explicit user mode (`--multi-user` selects [`UserMode::Multi`]).
pub fn router_with(mode: UserMode) -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(get_users).post(post_users))
        .route("/settings", get(get_settings).post(post_settings))
        .route("/settings/{id}", get(get_setting).post(post_setting))
        .route("/userdata", get(list_userdata))
        .route("/v2/userdata", get(list_userdata_v2))
        .route(
            "/userdata/{file}",
            get(get_userdata)
                .post(post_userdata)
                .delete(delete_userdata),
        )
        .route("/userdata/{file}/move/{dest}", post(move_userdata))
        .layer(Extension(Arc::new(UserStore::new(mode))))
}

// ---------------------------------------------------------------------------------------------
// Path containment

/// Python's `urllib.parse.unquote`: `%XX` decoded, malformed escapes kept, UTF-8 with replacement.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if no existing component of `path` below `root` is a symlink leading outside the
/// (resolved) root, and `root` itself resolves. Missing components end the walk.
pub fn links_stay_inside(root: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let real_root = match root.canonicalize() {
        Ok(r) => r,
        // A missing root holds nothing, but a dangling link as the root is refused.
        Err(_) => return std::fs::symlink_metadata(root).is_err(),
    };
    let mut cur = root.to_path_buf();
    for c in rest.components() {
        let Component::Normal(name) = c else {
            return false;
        };
        cur.push(name);
        match std::fs::symlink_metadata(&cur) {
            Err(_) => return true,
            Ok(m) if m.file_type().is_symlink() => match cur.canonicalize() {
                Ok(real) if real.starts_with(&real_root) => {}
                _ => return false,
            },
            Ok(_) => {}
        }
    }
    true
}

/// A request-supplied relative path resolved inside `root`; `None` when it would leave it
/// (`..`, absolute, encoded traversal, NUL, symlink escape) or names the root itself.
pub fn resolve_in(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = if rel.contains('%') {
        percent_decode(rel)
    } else {
        rel.to_string()
    };
    if rel.contains('\0') {
        return None;
    }
    let path = paths::normalize_join(root, &rel);
    if path == root || !paths::is_within(root, &path) || !links_stay_inside(root, &path) {
        return None;
    }
    Some(path)
}

/// Like [`resolve_in`] but the root itself is allowed (directory listings).
fn resolve_dir_in(root: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel == "." {
        return links_stay_inside(root, root).then(|| root.to_path_buf());
    }
    let rel_decoded = if rel.contains('%') {
        percent_decode(rel)
    } else {
        rel.to_string()
    };
    let path = paths::normalize_join(root, &rel_decoded);
    if path == root {
        return links_stay_inside(root, root).then(|| root.to_path_buf());
    }
    resolve_in(root, rel)
}

// ---------------------------------------------------------------------------------------------
// File information

fn secs(t: std::io::Result<std::time::SystemTime>) -> f64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `os.path.getctime` (inode change time on Unix).
fn ctime(m: &std::fs::Metadata) -> f64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9
    }
    #[cfg(not(unix))]
    {
        secs(m.created())
    }
}

/// `relpath` with `/` separators.
fn rel_slash(path: &Path, base: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// ComfyUI's `get_file_info`: `{path, size, modified, created}`.
fn file_info(path: &Path, base: &Path) -> Json {
    let m = std::fs::metadata(path).ok();
    json!({
        "path": rel_slash(path, base),
        "size": m.as_ref().map(|m| m.len()).unwrap_or(0),
        "modified": m.as_ref().map(|m| secs(m.modified())).unwrap_or(0.0),
        "created": m.as_ref().map(ctime).unwrap_or(0.0),
    })
}

/// Files of `dir` as `glob('*')` / `glob('**/*', recursive=True)` finds them: hidden names
/// skipped, directories before their own subdirectories, names sorted. Symlinked
/// directories are not entered; symlinked files count only when they resolve inside `root`.
fn glob_files(root: &Path, dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let mut subdirs = Vec::new();
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_symlink() {
            if path.is_file() && links_stay_inside(root, &path) {
                out.push(path);
            }
        } else if ft.is_file() {
            out.push(path);
        } else if ft.is_dir() && recurse {
            subdirs.push(path);
        }
    }
    for d in subdirs {
        glob_files(root, &d, recurse, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

type Store = Extension<Arc<UserStore>>;

fn unknown_user(e: UserError) -> Response {
    tracing::warn!("{e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, body.to_string()).into_response()
}

fn query_true(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// `GET /users`.
async fn get_users(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    headers: HeaderMap,
) -> Response {
    let user_dir = paths::absolute(&state.folders.user);
    match store.mode {
        UserMode::Multi => json::ok(&json!({"storage": "server", "users": store.users(&user_dir)})),
        UserMode::Single => match store.user_root(&state, &headers) {
            Ok(root) => json::ok(&json!({"storage": "server", "migrated": root.exists()})),
            Err(e) => unknown_user(e),
        },
    }
}

/// ComfyUI's user id for a display name: runs outside `[a-zA-Z0-9-_]` become `-`, plus a uuid.
pub fn new_user_id(name: &str) -> String {
    let mut id = String::new();
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            id.push(c);
            in_run = false;
        } else if !in_run {
            id.push('-');
            in_run = true;
        }
    }
    format!("{id}_{}", uuid::Uuid::new_v4())
}

/// `POST /users` `{"username": ...}`: creates a user, answers its id.
async fn post_users(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(username) = body.get("username").and_then(Json::as_str) else {
        return unknown_user(UserError::Unknown("<no username>".into()));
    };
    let _guard = store.write.lock().await;
    let user_dir = paths::absolute(&state.folders.user);
    let mut users = store.users(&user_dir);
    if users.values().any(|v| v.as_str() == Some(username)) {
        return json::json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Duplicate username."}),
        );
    }
    let name = username.trim();
    if name.is_empty() {
        return unknown_user(UserError::Unknown("<empty username>".into()));
    }
    let id = new_user_id(name);
    users.insert(id.clone(), json!(name));
    let text = json::to_py_string(&Json::Object(users.clone()));
    if let Err(e) = std::fs::create_dir_all(&user_dir)
        .and_then(|_| std::fs::write(user_dir.join(USERS_FILE), text))
    {
        tracing::error!("cannot write {}: {e}", USERS_FILE);
        return ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    }
    store.set_users(users);
    json::ok(&json!(id))
}

/// The stored settings of the request's user (`{}` when missing or corrupt).
fn read_settings(root: &Path) -> Map<String, Json> {
    let Some(file) = resolve_in(root, SETTINGS_FILE) else {
        return Map::new();
    };
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes settings as 4-space-indented JSON (Python's `json.dump(..., indent=4)`).
fn write_settings(root: &Path, settings: &Map<String, Json>) -> Result<(), ApiError> {
    let Some(file) = resolve_in(root, SETTINGS_FILE) else {
        return Err(ApiError::Bare(StatusCode::FORBIDDEN));
    };
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(settings, &mut ser)
        .map_err(|_| ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR))?;
    let io = |e: std::io::Error| {
        tracing::error!("cannot write settings: {e}");
        ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR)
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let tmp = root.join(format!(".{SETTINGS_FILE}.tmp"));
    std::fs::write(&tmp, &out).map_err(io)?;
    std::fs::rename(&tmp, &file).map_err(io)
}

/// `GET /settings`: every setting (unknown user: 401, so the frontend logs out).
async fn get_settings(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    headers: HeaderMap,
) -> Response {
    match store.user_root(&state, &headers) {
        Ok(root) => json::ok(&Json::Object(read_settings(&root))),
        Err(e) => {
            tracing::warn!("{e}");
            ApiError::Bare(StatusCode::UNAUTHORIZED).into_response()
        }
    }
}

/// `GET /settings/{id}`: one value or `null`.
async fn get_setting(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match store.user_root(&state, &headers) {
        Ok(root) => json::ok(read_settings(&root).get(&id).unwrap_or(&Json::Null)),
        Err(e) => unknown_user(e),
    }
}

/// `POST /settings`: shallow-merges an object into the stored settings.
async fn post_settings(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let new = match parse_json(&body) {
        Ok(Json::Object(m)) => m,
        Ok(_) => return text(StatusCode::BAD_REQUEST, "Settings must be a JSON object"),
        Err(e) => return e.into_response(),
    };
    let root = match store.user_root(&state, &headers) {
        Ok(r) => r,
        Err(e) => return unknown_user(e),
    };
    let _guard = store.write.lock().await;
    let mut settings = read_settings(&root);
    for (k, v) in new {
        settings.insert(k, v);
    }
    match write_settings(&root, &settings) {
        Ok(()) => json::empty(StatusCode::OK),
        Err(e) => e.into_response(),
    }
}

/// `POST /settings/{id}`: stores one JSON value.
async fn post_setting(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let root = match store.user_root(&state, &headers) {
        Ok(r) => r,
        Err(e) => return unknown_user(e),
    };
    let _guard = store.write.lock().await;
    let mut settings = read_settings(&root);
    settings.insert(id, value);
    match write_settings(&root, &settings) {
        Ok(()) => json::empty(StatusCode::OK),
        Err(e) => e.into_response(),
    }
}

/// `GET /userdata?dir=..[&recurse][&full_info][&split]`: the files of a user directory.
async fn list_userdata(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let dir = q.get("dir").cloned().unwrap_or_default();
    if dir.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Directory not provided");
    }
    let root = match store.user_root(&state, &headers) {
        Ok(r) => r,
        Err(UserError::Outside) => return text(StatusCode::FORBIDDEN, "Invalid directory"),
        Err(e) => return unknown_user(e),
    };
    let Some(path) = resolve_dir_in(&root, &dir) else {
        return text(StatusCode::FORBIDDEN, "Invalid directory");
    };
    if !path.exists() {
        return text(StatusCode::NOT_FOUND, "Directory not found");
    }
    let recurse = query_true(&q, "recurse");
    let full_info = query_true(&q, "full_info");
    let split = query_true(&q, "split");
    let listed = tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        glob_files(&root, &path, recurse, &mut files);
        let items: Vec<Json> = files
            .iter()
            .map(|f| {
                if full_info {
                    return file_info(f, &path);
                }
                let rel = rel_slash(f, &path);
                if split {
                    let mut parts = vec![json!(rel)];
                    parts.extend(rel.split('/').map(|p| json!(p)));
                    Json::Array(parts)
                } else {
                    json!(rel)
                }
            })
            .collect();
        Json::Array(items)
    })
    .await;
    match listed {
        Ok(v) => json::ok(&v),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// The `/v2/userdata` walk: every directory and file under `dir`, paths relative to `root`.
fn walk_v2(root: &Path, dir: &Path, out: &mut Vec<Json>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() && !links_stay_inside(root, &path) {
            continue;
        }
        if ft.is_dir() {
            out.push(json!({"name": name, "path": rel_slash(&path, root), "type": "directory"}));
            walk_v2(root, &path, out);
        } else if path.is_file() {
            let m = std::fs::metadata(&path).ok();
            out.push(json!({
                "name": name,
                "path": rel_slash(&path, root),
                "type": "file",
                "size": m.as_ref().map(|m| m.len()).unwrap_or(0),
                "modified": m.as_ref().map(|m| secs(m.modified())).unwrap_or(0.0),
            }));
        }
    }
}

/// `GET /v2/userdata?path=..`: directories and files, directories first, by lower-case name.
async fn list_userdata_v2(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let root = match store.user_root(&state, &headers) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{e}");
            return ApiError::Bare(StatusCode::FORBIDDEN).into_response();
        }
    };
    if !root.exists() {
        return json::ok(&json!([]));
    }
    let rel = q.get("path").cloned().unwrap_or_default();
    let Some(target) = resolve_dir_in(&root, &rel) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Requested path is outside the user directory.",
        );
    };
    if !target.exists() {
        return text(StatusCode::NOT_FOUND, "Path not found.");
    }
    if !target.is_dir() {
        return text(
            StatusCode::BAD_REQUEST,
            "Requested path is not a directory.",
        );
    }
    let listed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        walk_v2(&root, &target, &mut out);
        out.sort_by_cached_key(|v| {
            (
                v["type"] != "directory",
                v["name"].as_str().unwrap_or("").to_lowercase(),
            )
        });
        Json::Array(out)
    })
    .await;
    match listed {
        Ok(v) => json::ok(&v),
        Err(_) => ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// ComfyUI's `get_user_data_path`: 400 empty, 403 outside, 404 missing (when asked).
fn user_data_path(
    store: &UserStore,
    state: &AppState,
    headers: &HeaderMap,
    file: &str,
    must_exist: bool,
) -> Result<(PathBuf, PathBuf), Response> {
    if file.is_empty() {
        return Err(ApiError::Bare(StatusCode::BAD_REQUEST).into_response());
    }
    let root = match store.user_root(state, headers) {
        Ok(r) => r,
        Err(UserError::Outside) => {
            return Err(ApiError::Bare(StatusCode::FORBIDDEN).into_response())
        }
        Err(e) => return Err(unknown_user(e)),
    };
    let Some(path) = resolve_in(&root, file) else {
        tracing::warn!(file, "user data path outside the user directory refused");
        return Err(ApiError::Bare(StatusCode::FORBIDDEN).into_response());
    };
    if must_exist && !path.exists() {
        return Err(ApiError::Bare(StatusCode::NOT_FOUND).into_response());
    }
    Ok((root, path))
}

/// Content types a browser would run or render as a page: user files of these types are
/// sent as downloads, never inline (the user directory is not a place for web pages).
fn is_active(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        m.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "text/javascript"
            | "application/javascript"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
    ) || m.ends_with("+xml")
}

/// `GET /userdata/{file}`: the file, with conditional/range support.
async fn get_userdata(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath(file): UrlPath<String>,
    req: Request,
) -> Response {
    let (_, path) = match user_data_path(&store, &state, req.headers(), &file, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !path.is_file() {
        return ApiError::Bare(StatusCode::NOT_FOUND).into_response();
    }
    let mime = mime_guess::from_path(&path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let (parts, _) = req.into_parts();
    let mut fwd = Request::new(Body::empty());
    *fwd.headers_mut() = parts.headers;
    *fwd.method_mut() = parts.method;
    let mut resp = match ServeFile::new(&path).oneshot(fwd).await {
        Ok(r) => r.map(Body::new),
        Err(_) => return ApiError::Bare(StatusCode::NOT_FOUND).into_response(),
    };
    let h = resp.headers_mut();
    if is_active(mime) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn written_reply(path: &Path, root: &Path, full_info: bool) -> Response {
    if full_info {
        json::ok(&file_info(path, root))
    } else {
        json::ok(&json!(rel_slash(path, root)))
    }
}

const INVALID_FILENAME: &str = "Invalid filename. Please avoid special characters like :\\/*?\"<>|";

/// `POST /userdata/{file}?overwrite=..&full_info=..`: writes the raw body.
async fn post_userdata(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath(file): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (root, path) = match user_data_path(&store, &state, &headers, &file, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let overwrite = q.get("overwrite").map(String::as_str) != Some("false");
    let full_info = query_true(&q, "full_info");
    if !overwrite && path.exists() {
        return text(StatusCode::CONFLICT, "File already exists");
    }
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Re-check after creating directories: nothing created may have become a way out.
        if !links_stay_inside(&root, &path) || path.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "outside",
            ));
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        use std::io::Write;
        opts.open(&path)?.write_all(&body)
    })();
    match result {
        Ok(()) => written_reply(&path, &root, full_info),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            text(StatusCode::CONFLICT, "File already exists")
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !links_stay_inside(&root, &path) =>
        {
            ApiError::Bare(StatusCode::FORBIDDEN).into_response()
        }
        Err(e) => {
            tracing::warn!("cannot write user file: {e}");
            text(StatusCode::BAD_REQUEST, INVALID_FILENAME)
        }
    }
}

/// `DELETE /userdata/{file}`: 204.
async fn delete_userdata(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let (_, path) = match user_data_path(&store, &state, &headers, &file, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if path.is_dir()
        && std::fs::symlink_metadata(&path)
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(true)
    {
        return text(StatusCode::BAD_REQUEST, "Is a directory");
    }
    match std::fs::remove_file(&path) {
        Ok(()) => json::empty(StatusCode::NO_CONTENT),
        Err(e) => {
            tracing::warn!("cannot delete user file: {e}");
            ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

/// `POST /userdata/{file}/move/{dest}?overwrite=..&full_info=..`.
async fn move_userdata(
    State(state): State<Arc<AppState>>,
    Extension(store): Store,
    UrlPath((file, dest)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (root, source) = match user_data_path(&store, &state, &headers, &file, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (_, target) = match user_data_path(&store, &state, &headers, &dest, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let overwrite = q.get("overwrite").map(String::as_str) != Some("false");
    let full_info = query_true(&q, "full_info");
    if !overwrite && target.exists() {
        return text(StatusCode::CONFLICT, "File already exists");
    }
    tracing::info!("moving '{}' -> '{}'", source.display(), target.display());
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !links_stay_inside(&root, &target) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "outside",
            ));
        }
        std::fs::rename(&source, &target)
    })();
    match result {
        Ok(()) => written_reply(&target, &root, full_info),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            ApiError::Bare(StatusCode::FORBIDDEN).into_response()
        }
        Err(e) => {
            tracing::warn!("cannot move user file: {e}");
            text(StatusCode::BAD_REQUEST, INVALID_FILENAME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_like_python_unquote() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%2e%2e%2fx"), "../x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }

    #[test]
    fn resolve_refuses_every_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("default");
        std::fs::create_dir_all(root.join("workflows")).unwrap();
        assert_eq!(
            resolve_in(&root, "workflows/a.json"),
            Some(root.join("workflows/a.json"))
        );
        assert_eq!(
            resolve_in(&root, "workflows%2Fa.json"),
            Some(root.join("workflows/a.json"))
        );
        for bad in [
            "../x",
            "../default2/x",
            "workflows/../../x",
            "/etc/passwd",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "..%2fx",
            "a\0b",
            "a%00b",
            "",
            ".",
            "workflows/..",
        ] {
            assert_eq!(resolve_in(&root, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn symlinks_leaving_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"s").unwrap();
        let root = dir.path().join("default");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/ok.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("secret.json"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path().join("nope.txt"), root.join("dangling.json"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("inner")).unwrap();
        assert!(resolve_in(&root, "out/secret.txt").is_none());
        assert!(resolve_in(&root, "out/new.json").is_none());
        assert!(resolve_in(&root, "secret.json").is_none());
        assert!(resolve_in(&root, "dangling.json").is_none());
        assert_eq!(
            resolve_in(&root, "inner/ok.json"),
            Some(root.join("inner/ok.json"))
        );
        assert!(resolve_in(&root, "real/new/deeper.json").is_some());
        // The glob listing skips the escaping links too.
        let mut files = Vec::new();
        glob_files(&root, &root, true, &mut files);
        let names: Vec<String> = files.iter().map(|f| rel_slash(f, &root)).collect();
        assert_eq!(names, vec!["real/ok.json"]);
    }

    #[test]
    fn user_ids_are_sanitised() {
        let id = new_user_id("Jo Smith/../x");
        let (name, uuid) = id.rsplit_once('_').unwrap();
        assert_eq!(name, "Jo-Smith-x");
        assert_eq!(uuid.len(), 36);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn multi_user_requires_a_known_header() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(USERS_FILE), br#"{"alice_1": "alice"}"#).unwrap();
        let store = UserStore::new(UserMode::Multi);
        let mut h = HeaderMap::new();
        assert!(
            store.user_id(dir.path(), &h).is_err(),
            "default is not a user in multi-user mode"
        );
        h.insert("comfy-user", HeaderValue::from_static("alice_1"));
        assert_eq!(store.user_id(dir.path(), &h).unwrap(), "alice_1");
        h.insert("comfy-user", HeaderValue::from_static("__system"));
        assert!(store.user_id(dir.path(), &h).is_err());
        let single = UserStore::new(UserMode::Single);
        assert_eq!(single.user_id(dir.path(), &h).unwrap(), "default");
    }
}
