//! ComfyUI-compatible HTTP + WebSocket server over the comfy-graph engine.
//!
//! # Layout
//! - [`config`]: [`ServerConfig`] (the `main.py` flags) and the directory layout it produces.
//! - [`routes`]: one module per route group; every route also answers under `/api`.
//! - [`hub`]: connected websockets and the delivery of engine events to them.
//! - [`middleware`]: origin check / CORS and cache headers.
//! - [`paths`]: containment of request paths in their root.
//! - [`json`]: Python-style JSON bodies.

pub mod config;
pub mod error;
pub mod hub;
pub mod json;
pub mod middleware;
pub mod paths;
pub mod routes;
pub mod sysinfo;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use comfy_graph::{Engine, EngineConfig, Event, EventSink, Folders, NodeRegistry, PreviewMethod};

pub use config::ServerConfig;
pub use error::{ApiError, ServerError};
pub use hub::Hub;

/// Shared state of every handler.
pub struct AppState {
    /// The queue, worker and history; handlers only call into it.
    pub engine: Engine,
    pub registry: NodeRegistry,
    pub folders: Arc<Folders>,
    pub hub: Arc<Hub>,
    /// Frontend directory (`index.html`, `extensions/`), if one was given.
    pub web_root: Option<PathBuf>,
    /// `Some` = CORS mode with this origin; `None` = origin-only check.
    pub cors_origin: Option<String>,
    pub max_upload_bytes: usize,
    /// The process arguments, shown by `/system_stats`.
    pub argv: Vec<String>,
}

impl AppState {
    /// Pending + running prompts.
    pub fn queue_remaining(&self) -> usize {
        self.engine.queue_remaining()
    }

    /// Starts the engine on `registry` and builds the handler state: creates the directories
    /// and empties `temp/`, as ComfyUI does at start-up.
    pub fn start(
        config: &ServerConfig,
        registry: NodeRegistry,
        argv: Vec<String>,
    ) -> Result<Arc<AppState>, ServerError> {
        let folders = config.folders()?;
        prepare_directories(&folders)?;
        // The precision flags, then the compute device (`--cpu` / `--cuda-device N`); models
        // load onto it in those dtypes and stay.
        comfy_nodes::sd::device::set_precision(config.precision);
        comfy_nodes::sd::device::select(config.device_request())
            .map_err(|e| ServerError::Device(e.to_string()))?;
        let hub = Arc::new(Hub::default());
        let engine_config = EngineConfig {
            max_history: config.max_history,
            max_queue_size: config.max_queue_size,
            max_execution_time: config.max_execution_time,
            preview_method: preview_method(&config.preview_method),
        };
        let engine = Engine::start(
            registry.clone(),
            folders.clone(),
            engine_config,
            hub.clone(),
        );
        comfy_nodes::sd::set_memory_cap(config.memory_cap_bytes());
        // `POST /free {"unload_models": true}` (and an out-of-memory error) drop resident models.
        engine.on_unload_models(Arc::new(|| {
            comfy_nodes::sd::unload_all_models();
        }));
        Ok(Arc::new(AppState {
            engine,
            registry,
            folders: Arc::new(folders),
            hub,
            web_root: config.front_end_root.clone(),
            cors_origin: config.cors_origin.clone(),
            max_upload_bytes: config.max_upload_bytes(),
            argv,
        }))
    }

    /// Stops the engine (interrupting the running prompt), closes every websocket and
    /// empties `temp/`.
    pub fn shutdown(&self) {
        self.engine.shutdown();
        self.hub.close_all();
        let _ = std::fs::remove_dir_all(&self.folders.temp);
    }
}

/// `--preview-method` to the engine's enum (unknown names = none).
pub fn preview_method(name: &str) -> PreviewMethod {
    match name {
        "auto" => PreviewMethod::Auto,
        "latent2rgb" => PreviewMethod::Latent2Rgb,
        "taesd" => PreviewMethod::Taesd,
        _ => PreviewMethod::None,
    }
}

fn prepare_directories(folders: &Folders) -> Result<(), ServerError> {
    let dir_err = |path: &std::path::Path, source| ServerError::Directory {
        path: path.display().to_string(),
        source,
    };
    if folders.temp.exists() {
        std::fs::remove_dir_all(&folders.temp).map_err(|e| dir_err(&folders.temp, e))?;
    }
    folders
        .create_all()
        .map_err(|e| dir_err(&folders.base, e))?;
    let custom = folders.base.join("custom_nodes");
    std::fs::create_dir_all(&custom).map_err(|e| dir_err(&custom, e))?;
    Ok(())
}

/// The engine delivers its websocket events through the hub.
impl EventSink for Hub {
    fn send(&self, event: Event) {
        match event {
            Event::Json {
                kind,
                data,
                client_id,
            } => self.send_json(&kind, &data, client_id.as_deref()),
            Event::Binary {
                event_type,
                payload,
                client_id,
            } => self.send_binary(event_type, &payload, client_id.as_deref()),
        }
    }
}

/// The routes that exist both bare and under `/api`.
fn api_routes() -> Router<Arc<AppState>> {
    use routes::*;
    Router::new()
        .merge(routes::frontend::router())
        .merge(routes::userdata::router())
        .route("/ws", get(ws::ws))
        .route("/embeddings", get(info::embeddings))
        .route("/models", get(info::models))
        .route("/models/{folder}", get(info::models_in))
        .route("/extensions", get(info::extensions))
        .route("/upload/image", post(upload::upload_image))
        .route("/upload/mask", post(upload::upload_mask))
        .route("/view", get(view::view))
        .route("/view_metadata/{folder}", get(info::view_metadata))
        .route("/system_stats", get(info::system_stats_route))
        .route("/features", get(info::features))
        .route("/object_info", get(info::object_info))
        .route("/object_info/{class}", get(info::object_info_one))
        .route("/prompt", get(prompt::get_prompt).post(prompt::post_prompt))
        .route("/queue", get(prompt::get_queue).post(prompt::post_queue))
        .route("/interrupt", post(prompt::interrupt))
        .route("/free", post(prompt::free))
        .route(
            "/history",
            get(history::get_history).post(history::post_history),
        )
        .route("/history/{prompt_id}", get(history::get_history_item))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::one))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
}

/// The whole application: `/api` copies, bare routes, middlewares, static frontend fallback.
pub fn router(state: Arc<AppState>) -> Router {
    let api = api_routes();
    let mut app: Router<Arc<AppState>> = Router::new().nest("/api", api.clone()).merge(api);
    // `/internal/*`, built-in page assets; unknown paths fall through to the frontend files.
    app = app
        .merge(routes::frontend::top_level_router())
        .fallback(routes::frontend::static_fallback);
    let limit = state.max_upload_bytes;
    let app = app
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn(middleware::cache_control));
    let app = if state.cors_origin.is_some() {
        app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::cors,
        ))
    } else {
        app.layer(axum::middleware::from_fn(middleware::origin_only))
    };
    app.layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n\nServer got itself in trouble",
        )
            .into_response()
    }))
    .with_state(state)
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The URL ComfyUI prints for a bound address (`0.0.0.0` shown as `127.0.0.1`).
fn gui_url(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
        IpAddr::V6(v6) if v6.is_unspecified() => format!("http://[::1]:{}", addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", addr.port()),
        IpAddr::V4(v4) => format!("http://{v4}:{}", addr.port()),
    }
}

/// Binds every `--listen` address; a failure on the first one is an error, later ones are logged.
async fn bind_all(config: &ServerConfig) -> Result<Vec<tokio::net::TcpListener>, ServerError> {
    let mut listeners = Vec::new();
    for (i, host) in config
        .listen
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .enumerate()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, config.port).to_string(),
            Err(_) => format!("{host}:{}", config.port),
        };
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => listeners.push(l),
            Err(source) if i == 0 => return Err(ServerError::Bind { addr, source }),
            Err(e) => tracing::warn!("cannot listen on {addr}: {e}"),
        }
    }
    if listeners.is_empty() {
        let addr = format!("127.0.0.1:{}", config.port);
        let l = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Serves `state` on the given listeners until `shutdown` resolves, then stops the engine.
pub async fn serve(
    state: Arc<AppState>,
    listeners: Vec<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for l in listeners {
        let mut rx = stop_rx.clone();
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(l, app.into_make_service())
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        }));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let st = state.clone();
    // Interrupt the running prompt and wait for the worker (outputs are written atomically).
    let _ = tokio::task::spawn_blocking(move || st.shutdown()).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        // Open keep-alive connections get a moment to finish, no more.
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Err(e))) => return Err(ServerError::Io(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Loads the `--preload-checkpoint` models into the resident cache before the port opens,
/// so the first prompt naming them pays no load cost. A name that cannot be loaded stops
/// the start-up with the loader's error.
pub async fn preload(state: &Arc<AppState>, names: &[String]) -> Result<(), ServerError> {
    for name in names {
        let folders = state.folders.clone();
        let n = name.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || comfy_nodes::sd::preload_checkpoint(&folders, &n))
            .await
            .map_err(|e| ServerError::Preload { name: name.clone(), message: e.to_string() })?;
        result.map_err(|e| ServerError::Preload { name: name.clone(), message: e.to_string() })?;
        tracing::info!("preloaded checkpoint {name} in {:.2}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Runs the server until SIGTERM/Ctrl-C: directories, engine, listeners, the
/// "To see the GUI go to" line, then graceful shutdown.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let argv: Vec<String> = std::env::args().collect();
    let registry = comfy_nodes::registry();
    tracing::info!(nodes = registry.len(), "node classes registered");
    let state = AppState::start(&config, registry, argv)?;
    preload(&state, &config.preload_checkpoints).await?;
    let listeners = bind_all(&config).await?;
    tracing::info!("Starting server");
    for l in &listeners {
        if let Ok(addr) = l.local_addr() {
            println!("To see the GUI go to: {}", gui_url(addr));
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    serve(state, listeners, shutdown_signal()).await
}
