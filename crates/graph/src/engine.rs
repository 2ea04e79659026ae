//! The engine: the prompt queue, its worker thread, history and the control operations the
//! HTTP layer exposes (ComfyUI's `PromptQueue` + `prompt_worker`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value as Json};

use crate::events::{now_ms, status_event, Event, EventSink};
use crate::executor::{Executor, Job, Services};
use crate::history::{history_job, jobs_page, queue_job, History, JobsQuery};
use crate::node::PreviewMethod;
use crate::pyfmt::{py_bool, py_float, py_str};
use crate::validate::{no_prompt_body, prompt_error, validate_prompt};
use crate::{CancelToken, ErrorCategory, Folders, NodeRegistry};

/// `extra_data` keys that never reach history or `/queue` (credentials for API nodes).
pub const SENSITIVE_EXTRA_DATA_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// History cap (ComfyUI's `MAXIMUM_HISTORY_SIZE`, 10000).
    pub max_history: usize,
    /// Pending + running prompts allowed before `POST /prompt` is refused (`None` = unlimited).
    pub max_queue_size: Option<usize>,
    /// Time limit of one prompt (`None` = unlimited); `extra_data.timeout` may shorten it.
    pub max_execution_time: Option<Duration>,
    /// `--preview-method` (a prompt's `extra_data.preview_method` overrides it).
    pub preview_method: PreviewMethod,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_history: 10000,
            max_queue_size: None,
            max_execution_time: None,
            preview_method: PreviewMethod::None,
        }
    }
}

/// Why `submit` refused a prompt; each holds the HTTP 400 body.
#[derive(Debug, Clone)]
pub enum SubmitError {
    /// Validation failed (or no prompt): ComfyUI's `{"error": ..., "node_errors": ...}`.
    Invalid(Json),
    /// `max_queue_size` reached; same shape, error type `queue_full`.
    QueueFull(Json),
}

impl SubmitError {
    /// The response body.
    pub fn body(&self) -> &Json {
        match self {
            SubmitError::Invalid(b) | SubmitError::QueueFull(b) => b,
        }
    }
}

/// One queued prompt.
#[derive(Debug, Clone)]
struct QueueItem {
    /// The queue number as ComfyUI shows it (an int, or a float for an explicit `number`).
    number: Json,
    sort_key: f64,
    prompt_id: String,
    prompt: Json,
    extra_data: Map<String, Json>,
    outputs: Vec<String>,
    /// Credentials split off `extra_data` (given back to the executor only).
    sensitive: Map<String, Json>,
    create_time: i64,
}

impl QueueItem {
    /// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    fn to_json(&self) -> Json {
        json!([self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs])
    }

    fn before(&self, other: &QueueItem) -> bool {
        match self.sort_key.partial_cmp(&other.sort_key) {
            Some(std::cmp::Ordering::Less) => true,
            Some(std::cmp::Ordering::Greater) => false,
            _ => self.prompt_id < other.prompt_id,
        }
    }
}

#[derive(Default)]
struct Flags {
    unload_models: bool,
    free_memory: bool,
}

struct State {
    /// Pending items, kept sorted (a sorted array is a valid heap).
    pending: Vec<QueueItem>,
    running: Option<QueueItem>,
    counter: i64,
    history: History,
    flags: Flags,
    shutdown: bool,
}

impl State {
    fn remaining(&self) -> usize {
        self.pending.len() + self.running.is_some() as usize
    }
    fn push(&mut self, item: QueueItem) {
        let at = self.pending.iter().position(|p| item.before(p)).unwrap_or(self.pending.len());
        self.pending.insert(at, item);
    }
}

type Hook = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    registry: NodeRegistry,
    folders: Folders,
    config: EngineConfig,
    events: Arc<dyn EventSink>,
    state: Mutex<State>,
    wake: Condvar,
    cancel: CancelToken,
    worker: Mutex<Option<JoinHandle<()>>>,
    unload_hook: Mutex<Option<Hook>>,
}

/// The execution engine: a queue served by one worker thread. Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Starts the worker thread. Call [`Engine::shutdown`] to stop it.
    pub fn start(registry: NodeRegistry, folders: Folders, config: EngineConfig, events: Arc<dyn EventSink>) -> Engine {
        let inner = Arc::new(Inner {
            registry,
            folders,
            state: Mutex::new(State {
                pending: Vec::new(),
                running: None,
                counter: 0,
                history: History::new(config.max_history),
                flags: Flags::default(),
                shutdown: false,
            }),
            config,
            events,
            wake: Condvar::new(),
            cancel: CancelToken::new(),
            worker: Mutex::new(None),
            unload_hook: Mutex::new(None),
        });
        let worker_inner = inner.clone();
        let handle = std::thread::Builder::new().name("comfy-engine".into()).spawn(move || worker(worker_inner)).ok();
        if handle.is_none() {
            tracing::error!("could not start the engine worker thread");
        }
        *lock(&inner.worker) = handle;
        Engine { inner }
    }

    /// Registers what "unload models" means (called for `/free` `unload_models`/`free_memory`
    /// and after an out-of-memory error).
    pub fn on_unload_models(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.inner.unload_hook) = Some(hook);
    }

    fn broadcast_status(&self, remaining: usize) {
        self.inner.events.send(status_event(remaining));
    }

    fn queue_full_body(&self, limit: usize, remaining: usize) -> Json {
        let mut e = prompt_error(
            "queue_full",
            "Queue is full",
            &format!("The queue already holds {remaining} prompts (limit {limit})."),
            ErrorCategory::QueueFull,
            None,
        );
        if let Some(o) = e.as_object_mut() {
            o.insert("extra_info".into(), json!({"queue_remaining": remaining, "max_queue_size": limit}));
        }
        json!({"error": e, "node_errors": {}})
    }

    /// `POST /prompt`: validates and queues a prompt; returns `{"prompt_id","number","node_errors"}`.
    pub fn submit(&self, body: Json) -> Result<Json, SubmitError> {
        let Json::Object(body) = body else { return Err(SubmitError::Invalid(no_prompt_body())) };
        let limit = self.inner.config.max_queue_size;
        if let Some(limit) = limit {
            let remaining = lock(&self.inner.state).remaining();
            if remaining >= limit {
                return Err(SubmitError::QueueFull(self.queue_full_body(limit, remaining)));
            }
        }
        // The queue number is taken before validation, as in ComfyUI.
        let (number, sort_key) = match body.get("number") {
            Some(n) => match py_float(n) {
                Ok(Json::Number(f)) => {
                    let v = f.as_f64().unwrap_or(0.0);
                    (Json::Number(f), v)
                }
                Ok(other) => {
                    let v = other.as_str().and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(f64::NAN);
                    (serde_json::Number::from_f64(v).map(Json::Number).unwrap_or(Json::Null), v)
                }
                Err(msg) => {
                    let e =
                        prompt_error("invalid_prompt", "Invalid queue number", &msg, ErrorCategory::InvalidInput, None);
                    return Err(SubmitError::Invalid(json!({"error": e, "node_errors": {}})));
                }
            },
            None => {
                let mut st = lock(&self.inner.state);
                let mut n = st.counter;
                if body.get("front").is_some_and(py_bool) {
                    n = -n;
                }
                st.counter += 1;
                (json!(n), n as f64)
            }
        };
        let Some(prompt) = body.get("prompt") else { return Err(SubmitError::Invalid(no_prompt_body())) };
        let mut prompt = prompt.clone();
        let prompt_id = match body.get("prompt_id") {
            Some(v) => py_str(v),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let validation = validate_prompt(
            &self.inner.registry,
            &self.inner.folders,
            &mut prompt,
            body.get("partial_execution_targets"),
        );
        if !validation.ok() {
            tracing::warn!(error = %validation.error.clone().unwrap_or_default(), "invalid prompt");
            return Err(SubmitError::Invalid(validation.error_body()));
        }
        let mut extra_data = match body.get("extra_data") {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if let Some(c) = body.get("client_id") {
            extra_data.insert("client_id".into(), c.clone());
        }
        let mut sensitive = Map::new();
        for k in SENSITIVE_EXTRA_DATA_KEYS {
            if let Some(v) = extra_data.shift_remove(k) {
                sensitive.insert(k.to_string(), v);
            }
        }
        let item = QueueItem {
            number: number.clone(),
            sort_key,
            prompt_id: prompt_id.clone(),
            prompt,
            extra_data,
            outputs: validation.outputs,
            sensitive,
            create_time: now_ms(),
        };
        {
            let mut st = lock(&self.inner.state);
            if let Some(limit) = limit {
                let remaining = st.remaining();
                if remaining >= limit {
                    drop(st);
                    return Err(SubmitError::QueueFull(self.queue_full_body(limit, remaining)));
                }
            }
            st.push(item);
            // Sent under the lock so status messages keep the queue's order.
            self.broadcast_status(st.remaining());
        }
        self.inner.wake.notify_all();
        Ok(json!({"prompt_id": prompt_id, "number": number, "node_errors": Json::Object(validation.node_errors)}))
    }

    /// `GET /queue`: `{"queue_running": [...], "queue_pending": [...]}` (credentials stripped).
    pub fn queue_json(&self) -> Json {
        let st = lock(&self.inner.state);
        let running: Vec<Json> = st.running.iter().map(QueueItem::to_json).collect();
        let pending: Vec<Json> = st.pending.iter().map(QueueItem::to_json).collect();
        json!({"queue_running": running, "queue_pending": pending})
    }

    /// Pending + running prompts (`queue_remaining`).
    pub fn queue_remaining(&self) -> usize {
        lock(&self.inner.state).remaining()
    }

    /// `POST /queue {"clear": true}`: drops every pending prompt.
    pub fn queue_clear(&self) {
        let mut st = lock(&self.inner.state);
        st.pending.clear();
        self.broadcast_status(st.remaining());
    }

    /// `POST /queue {"delete": [...]}`: drops the pending prompts with these ids.
    pub fn queue_delete(&self, prompt_ids: &[String]) {
        for id in prompt_ids {
            let mut st = lock(&self.inner.state);
            if let Some(i) = st.pending.iter().position(|p| &p.prompt_id == id) {
                st.pending.remove(i);
                self.broadcast_status(st.remaining());
            }
        }
    }

    /// `POST /interrupt`: stops the running prompt (only if it is `prompt_id`, when given).
    pub fn interrupt(&self, prompt_id: Option<&str>) {
        let st = lock(&self.inner.state);
        match prompt_id.filter(|p| !p.is_empty()) {
            Some(id) => {
                if st.running.as_ref().is_some_and(|r| r.prompt_id == id) {
                    self.inner.cancel.interrupt();
                } else {
                    tracing::info!(prompt_id = id, "interrupt: prompt is not running");
                }
            }
            None => self.inner.cancel.interrupt(),
        }
    }

    /// `GET /history`. `offset` counts from the oldest entry; use [`Engine::history_json_at`]
    /// for ComfyUI's default (`offset=-1`: the `max_items` most recent).
    pub fn history_json(&self, max_items: Option<usize>, offset: usize) -> Json {
        self.history_json_at(max_items, offset as i64)
    }

    /// `GET /history` with ComfyUI's signed offset (default `-1`).
    pub fn history_json_at(&self, max_items: Option<usize>, offset: i64) -> Json {
        lock(&self.inner.state).history.page(max_items, offset)
    }

    /// `GET /history/{id}`: `{id: entry}`, or `{}` if unknown.
    pub fn history_item(&self, prompt_id: &str) -> Json {
        lock(&self.inner.state).history.item(prompt_id)
    }

    pub fn history_clear(&self) {
        lock(&self.inner.state).history.clear();
    }

    pub fn history_delete(&self, prompt_ids: &[String]) {
        let mut st = lock(&self.inner.state);
        for id in prompt_ids {
            st.history.delete(id);
        }
    }

    fn all_jobs(&self, st: &State) -> Vec<Json> {
        let mut jobs = Vec::new();
        if let Some(r) = &st.running {
            jobs.push(queue_job(&r.to_json(), "in_progress", Some(r.create_time)));
        }
        for p in &st.pending {
            jobs.push(queue_job(&p.to_json(), "pending", Some(p.create_time)));
        }
        for (id, entry, t) in st.history.iter() {
            jobs.push(history_job(id, entry, t, false));
        }
        jobs
    }

    /// `GET /api/jobs`.
    pub fn jobs_json(&self, query: &JobsQuery) -> Json {
        let st = lock(&self.inner.state);
        jobs_page(self.all_jobs(&st), query)
    }

    /// `GET /api/jobs/{id}` (`None` = 404).
    pub fn job_json(&self, id: &str) -> Option<Json> {
        let st = lock(&self.inner.state);
        if let Some((k, entry, t)) = st.history.iter().find(|(k, _, _)| k.as_str() == id) {
            return Some(history_job(k, entry, t, true));
        }
        if let Some(r) = st.running.as_ref().filter(|r| r.prompt_id == id) {
            return Some(queue_job(&r.to_json(), "in_progress", Some(r.create_time)));
        }
        st.pending.iter().find(|p| p.prompt_id == id).map(|p| queue_job(&p.to_json(), "pending", Some(p.create_time)))
    }

    /// `POST /free`: handled by the worker after the running prompt (at once when idle).
    /// `free_memory` also empties the output cache.
    pub fn free(&self, unload_models: bool, free_memory: bool) {
        {
            let mut st = lock(&self.inner.state);
            st.flags.unload_models |= unload_models;
            st.flags.free_memory |= free_memory;
        }
        self.inner.wake.notify_all();
    }

    pub fn registry(&self) -> &NodeRegistry {
        &self.inner.registry
    }

    pub fn folders(&self) -> &Folders {
        &self.inner.folders
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Interrupts the running prompt, stops the worker and waits for it.
    pub fn shutdown(&self) {
        {
            let mut st = lock(&self.inner.state);
            st.shutdown = true;
            self.inner.cancel.interrupt();
        }
        self.inner.wake.notify_all();
        let handle = lock(&self.inner.worker).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// The prompt's deadline: the engine limit, shortened by `extra_data.timeout` (seconds).
fn deadline(config: &EngineConfig, extra_data: &Map<String, Json>) -> Option<Instant> {
    let per_prompt = extra_data
        .get("timeout")
        .and_then(Json::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    let limit = match (config.max_execution_time, per_prompt) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    limit.map(|d| Instant::now() + d)
}

fn worker(inner: Arc<Inner>) {
    let mut executor = Executor::new();
    loop {
        let (item, flags) = {
            let mut st = lock(&inner.state);
            while st.pending.is_empty() && !st.shutdown && !st.flags.unload_models && !st.flags.free_memory {
                st = inner.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.shutdown {
                break;
            }
            if st.pending.is_empty() || st.flags.unload_models || st.flags.free_memory {
                // `/free` requests are served before the next prompt starts.
                (None, std::mem::take(&mut st.flags))
            } else {
                let item = st.pending.remove(0);
                st.running = Some(item.clone());
                // The interrupt flag is cleared at the start of every prompt.
                inner.cancel.reset();
                inner.cancel.set_deadline(deadline(&inner.config, &item.extra_data));
                inner.events.send(status_event(st.remaining()));
                (Some(item), Flags::default())
            }
        };
        let Some(item) = item else {
            apply_flags(&inner, &mut executor, flags);
            continue;
        };

        let mut extra = item.extra_data.clone();
        for (k, v) in &item.sensitive {
            extra.insert(k.clone(), v.clone());
        }
        let started = Instant::now();
        let services = Services {
            registry: &inner.registry,
            folders: &inner.folders,
            sink: inner.events.as_ref(),
            cancel: &inner.cancel,
            preview_method: inner.config.preview_method,
        };
        let result = executor.execute(
            &services,
            Job { prompt_id: &item.prompt_id, prompt: item.prompt.clone(), extra_data: &extra, outputs: &item.outputs },
        );
        tracing::info!("Prompt executed in {:.2} seconds", started.elapsed().as_secs_f64());

        let status_str = if result.success { "success" } else { "error" };
        let messages: Vec<Json> = result.messages.iter().map(|(e, d)| json!([e, d])).collect();
        let entry = json!({
            "prompt": item.to_json(),
            "outputs": Json::Object(result.outputs),
            "status": {"status_str": status_str, "completed": result.success, "messages": messages},
            "meta": Json::Object(result.meta),
        });
        let flags = {
            let mut st = lock(&inner.state);
            st.running = None;
            st.history.insert(&item.prompt_id, entry, item.create_time);
            inner.cancel.set_deadline(None);
            inner.events.send(status_event(st.remaining()));
            // Still under the lock: whoever sees the history entry has also seen the run's
            // last message.
            if let Some(client) = item.extra_data.get("client_id").and_then(Json::as_str) {
                inner.events.send(Event::Json {
                    kind: "executing".into(),
                    data: json!({"node": null, "prompt_id": item.prompt_id}),
                    client_id: Some(client.to_string()),
                });
            }
            std::mem::take(&mut st.flags)
        };
        let mut flags = flags;
        if result.out_of_memory {
            flags.unload_models = true;
        }
        apply_flags(&inner, &mut executor, flags);
    }
}

fn apply_flags(inner: &Inner, executor: &mut Executor, flags: Flags) {
    if flags.unload_models || flags.free_memory {
        let hook = lock(&inner.unload_hook).clone();
        if let Some(h) = hook {
            h();
        }
    }
    if flags.free_memory {
        executor.reset();
    }
}
