//! Runs one validated prompt: scheduling, list mapping, caching, events (ComfyUI's
//! `PromptExecutor.execute_async`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value as Json};

use crate::cache::{ExecCache, SlotValues, UiEntry};
use crate::events::{now_ms, Emitter, EventSink, PREVIEW_IMAGE_WITH_METADATA};
use crate::node::{PreviewFormat, PreviewMethod};
use crate::prompt::{self, as_link};
use crate::pyfmt::py_repr;
use crate::schema::{InputType, NodeSchema, Section};
use crate::{
    CancelToken, ErrorCategory, ExecContext, Folders, Inputs, Node, NodeError, NodeRegistry, Outputs, ProgressSink,
    Value,
};

/// Appended to the message of an out-of-memory error, as ComfyUI does.
pub const OOM_TIPS: &str = "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number.";

/// What one prompt's execution produced (becomes the history entry).
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub success: bool,
    /// `node_id -> ui dict` of every prompt node with a UI output in the UI cache.
    pub outputs: Map<String, Json>,
    pub meta: Map<String, Json>,
    /// The `[event, data]` pairs recorded for history `status.messages`.
    pub messages: Vec<(String, Json)>,
    /// Whether the run ended with an out-of-memory error (models should be unloaded).
    pub out_of_memory: bool,
}

/// One prompt to execute.
pub struct Job<'a> {
    pub prompt_id: &'a str,
    pub prompt: Json,
    pub extra_data: &'a Map<String, Json>,
    pub outputs: &'a [String],
}

/// The services a run uses.
pub struct Services<'a> {
    pub registry: &'a NodeRegistry,
    pub folders: &'a Folders,
    pub sink: &'a dyn EventSink,
    pub cancel: &'a CancelToken,
    pub preview_method: PreviewMethod,
}

/// The executor and its caches, which persist between prompts.
#[derive(Default)]
pub struct Executor {
    cache: ExecCache,
    runs: u64,
}

// ---------------------------------------------------------------------------------------
// Progress (`progress_state`, `progress`, previews)

#[derive(Clone)]
struct NodeProgress {
    state: &'static str,
    value: Json,
    max: Json,
}

/// The per-prompt progress registry (ComfyUI's `ProgressRegistry` + `WebUIProgressHandler`).
struct Progress<'a> {
    emitter: &'a Emitter<'a>,
    prompt_id: String,
    nodes: Mutex<Vec<(String, NodeProgress)>>,
}

impl Progress<'_> {
    fn update(&self, node: &str, f: impl FnOnce(&mut NodeProgress)) {
        let snapshot = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let i = match nodes.iter().position(|(id, _)| id == node) {
                Some(i) => i,
                None => {
                    let p = NodeProgress { state: "pending", value: json!(0), max: json!(1) };
                    nodes.push((node.to_string(), p));
                    nodes.len() - 1
                }
            };
            f(&mut nodes[i].1);
            let mut m = Map::new();
            for (id, p) in nodes.iter().filter(|(_, p)| p.state != "pending") {
                m.insert(
                    id.clone(),
                    json!({"value": p.value, "max": p.max, "state": p.state, "node_id": id,
                           "prompt_id": self.prompt_id, "display_node_id": id, "parent_node_id": null,
                           "real_node_id": id}),
                );
            }
            m
        };
        self.emitter.to_client_or_all("progress_state", json!({"prompt_id": self.prompt_id, "nodes": snapshot}));
    }

    fn start(&self, node: &str) {
        self.update(node, |p| {
            p.state = "running";
            p.value = json!(0.0);
            p.max = json!(1.0);
        });
    }

    fn finish(&self, node: &str) {
        self.update(node, |p| {
            p.state = "finished";
            p.value = p.max.clone();
        });
    }
}

/// The [`ProgressSink`] handed to one running node.
struct NodeSink<'a> {
    progress: &'a Progress<'a>,
    node_id: &'a str,
    preview_method: PreviewMethod,
    pending_preview: Mutex<Option<(PreviewFormat, Vec<u8>)>>,
}

impl NodeSink<'_> {
    fn flush_preview(&self) {
        let pending = self.pending_preview.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((format, bytes)) = pending {
            let image_type = match format {
                PreviewFormat::Jpeg => "image/jpeg",
                PreviewFormat::Png => "image/png",
            };
            let meta = json!({"node_id": self.node_id, "prompt_id": self.progress.prompt_id,
                              "display_node_id": self.node_id, "parent_node_id": null,
                              "real_node_id": self.node_id, "image_type": image_type});
            let meta = serde_json::to_vec(&meta).unwrap_or_default();
            let mut payload = Vec::with_capacity(4 + meta.len() + bytes.len());
            payload.extend_from_slice(&(meta.len() as u32).to_be_bytes());
            payload.extend_from_slice(&meta);
            payload.extend_from_slice(&bytes);
            self.progress.emitter.binary(PREVIEW_IMAGE_WITH_METADATA, payload);
        }
    }
}

impl ProgressSink for NodeSink<'_> {
    /// Sends `progress_state`, the preview given just before (if any), then `progress`.
    fn progress(&self, value: u64, max: u64) {
        self.progress.update(self.node_id, |p| {
            p.state = "running";
            p.value = json!(value);
            p.max = json!(max);
        });
        self.flush_preview();
        self.progress.emitter.to_client_or_all(
            "progress",
            json!({"value": value, "max": max, "prompt_id": self.progress.prompt_id, "node": self.node_id}),
        );
    }

    /// Queues a preview; it is sent with the next `progress` call (or when the node ends).
    fn preview(&self, format: PreviewFormat, bytes: Vec<u8>) {
        if self.preview_method == PreviewMethod::None {
            return;
        }
        *self.pending_preview.lock().unwrap_or_else(|p| p.into_inner()) = Some((format, bytes));
    }
}

// ---------------------------------------------------------------------------------------
// Scheduling (ComfyUI's `ExecutionList`)

#[derive(Default)]
struct ExecList {
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    blocking: HashMap<String, Vec<String>>,
}

impl ExecList {
    fn add_node(&mut self, id: &str, prompt: &Json, cache: &ExecCache) {
        let mut stack = vec![id.to_string()];
        let mut links = Vec::new();
        while let Some(u) = stack.pop() {
            if self.block_count.contains_key(&u) {
                continue;
            }
            self.pending.push(u.clone());
            self.block_count.insert(u.clone(), 0);
            self.blocking.insert(u.clone(), Vec::new());
            if let Some(inputs) = prompt::inputs(prompt, &u) {
                for v in inputs.values() {
                    if let Some(link) = as_link(v) {
                        if prompt::node(prompt, &link.node).is_none() {
                            continue;
                        }
                        if !cache.is_cached(&link.node) {
                            stack.push(link.node.clone());
                        }
                        links.push((link.node, u.clone()));
                    }
                }
            }
        }
        for (from, to) in links {
            if !cache.is_cached(&from) {
                self.add_node(&from, prompt, cache);
                let blocked = self.blocking.entry(from).or_default();
                if !blocked.contains(&to) {
                    blocked.push(to.clone());
                    *self.block_count.entry(to).or_default() += 1;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// ComfyUI's `ux_friendly_pick_node` over the ready nodes; `None` = dependency cycle.
    fn pick(&self, is_output: &dyn Fn(&str) -> bool) -> Option<String> {
        let ready: Vec<&String> = self.pending.iter().filter(|id| self.block_count[*id] == 0).collect();
        let blocks = |id: &str| self.blocking.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(id) = ready.iter().find(|id| is_output(id)) {
            return Some((*id).clone());
        }
        if let Some(id) = ready.iter().find(|id| blocks(id).iter().any(|b| is_output(b))) {
            return Some((*id).clone());
        }
        if let Some(id) = ready.iter().find(|id| blocks(id).iter().any(|b| blocks(b).iter().any(|c| is_output(c)))) {
            return Some((*id).clone());
        }
        ready.first().map(|id| (*id).clone())
    }

    fn complete(&mut self, id: &str) {
        self.pending.retain(|p| p != id);
        if let Some(blocked) = self.blocking.remove(id) {
            for b in blocked {
                if let Some(c) = self.block_count.get_mut(&b) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Executing nodes

/// A failed node: the error and the inputs ComfyUI reports (`current_inputs`).
struct NodeFailure {
    error: NodeError,
    current_inputs: Json,
}

/// ComfyUI's `format_value` for `current_inputs`.
fn format_value(v: &Value, type_name: &str) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Json(j @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_))) => j.clone(),
        Value::Json(other) => Json::String(py_repr(other)),
        Value::Object(_) => Json::String(format!("<{type_name} object>")),
        Value::List(items) => Json::String(format!("<list of {} items>", items.len())),
    }
}

/// Calls a node, turning a panic into a `RuntimeError` so the worker survives it.
fn run_guarded(node: &Arc<dyn Node>, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.execute(inputs, ctx))) {
        Ok(r) => r,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "node panicked".to_string());
            Err(NodeError::internal(format!("panic in node: {text}")))
        }
    }
}

/// The UI dicts of several calls merged key-wise by concatenating lists.
fn merge_ui(uis: Vec<Map<String, Json>>) -> Map<String, Json> {
    if uis.len() == 1 {
        return uis.into_iter().next().unwrap_or_default();
    }
    let mut out = Map::new();
    let Some(first) = uis.first() else { return out };
    for k in first.keys() {
        let mut items = Vec::new();
        for u in &uis {
            match u.get(k) {
                Some(Json::Array(a)) => items.extend(a.iter().cloned()),
                Some(other) => items.push(other.clone()),
                None => {}
            }
        }
        out.insert(k.clone(), Json::Array(items));
    }
    out
}

/// A node's merged result: per-slot value lists and its UI dict.
type CallResult = (Vec<Vec<Value>>, Map<String, Json>);

/// Records an execution message for history and sends it (`add_message` in ComfyUI).
type AddMessage<'a> = dyn Fn(&mut Vec<(String, Json)>, &str, Json, bool) + 'a;

/// The input lists of one node, in prompt input order then hidden inputs.
struct Gathered {
    lists: Vec<(String, Vec<Value>, String)>,
}

impl Gathered {
    fn formatted(&self) -> Json {
        let mut m = Map::new();
        for (k, vs, t) in &self.lists {
            m.insert(k.clone(), Json::Array(vs.iter().map(|v| format_value(v, t)).collect()));
        }
        Json::Object(m)
    }
}

impl Executor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every cached output (`/free` with `free_memory`).
    pub fn reset(&mut self) {
        self.cache.clear();
    }

    /// Number of cached node outputs.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    fn gather(
        &self,
        id: &str,
        schema: &NodeSchema,
        prompt: &Json,
        extra_data: &Map<String, Json>,
        registry: &NodeRegistry,
    ) -> Gathered {
        let mut lists = Vec::new();
        if let Some(inputs) = prompt::inputs(prompt, id) {
            for (k, v) in inputs {
                let declared = schema.find_input(k);
                if let Some(link) = as_link(v) {
                    let source_type = prompt::class_type(prompt, &link.node)
                        .and_then(|c| registry.schema(c))
                        .and_then(|s| link.index().and_then(|i| s.outputs.get(i)).map(|o| o.type_name.clone()))
                        .unwrap_or_else(|| "*".into());
                    let values = match (self.cache.get(&link.node), link.index()) {
                        (Some(out), Some(i)) if i < out.len() => out[i].clone(),
                        _ => vec![Value::None],
                    };
                    lists.push((k.clone(), values, source_type));
                } else if let Some(d) = declared {
                    lists.push((k.clone(), vec![Value::Json(v.clone())], d.type_name().to_string()));
                }
            }
        }
        for h in schema.inputs.iter().filter(|i| i.section == Section::Hidden) {
            let InputType::Named(t) = &h.kind else { continue };
            let v = match t.as_str() {
                "PROMPT" => Value::Json(prompt.clone()),
                "EXTRA_PNGINFO" => extra_data.get("extra_pnginfo").cloned().map(Value::Json).unwrap_or(Value::None),
                "UNIQUE_ID" => Value::Json(Json::String(id.to_string())),
                "AUTH_TOKEN_COMFY_ORG" => {
                    extra_data.get("auth_token_comfy_org").cloned().map(Value::Json).unwrap_or(Value::None)
                }
                "API_KEY_COMFY_ORG" => {
                    extra_data.get("api_key_comfy_org").cloned().map(Value::Json).unwrap_or(Value::None)
                }
                _ => continue,
            };
            lists.retain(|(k, _, _)| k != &h.name);
            lists.push((h.name.clone(), vec![v], t.clone()));
        }
        Gathered { lists }
    }

    /// Runs the list-mapped calls of one node and merges their results.
    #[allow(clippy::too_many_arguments)]
    fn call_node(
        &self,
        node: &Arc<dyn Node>,
        schema: &NodeSchema,
        gathered: &Gathered,
        ctx: &ExecContext<'_>,
    ) -> Result<CallResult, NodeError> {
        let mut results = Vec::new();
        if schema.is_input_list {
            ctx.cancel.check()?;
            let mut inputs = Inputs::new();
            for (k, vs, _) in &gathered.lists {
                inputs.insert_list(k.clone(), vs.clone());
            }
            results.push(run_guarded(node, &inputs, ctx)?);
        } else {
            let calls = gathered.lists.iter().map(|(_, vs, _)| vs.len()).max().unwrap_or(0).max(1);
            for i in 0..calls {
                ctx.cancel.check()?;
                let mut inputs = Inputs::new();
                for (k, vs, _) in &gathered.lists {
                    let v = vs.get(i).or_else(|| vs.last()).cloned().unwrap_or(Value::None);
                    inputs.insert(k.clone(), v);
                }
                results.push(run_guarded(node, &inputs, ctx)?);
            }
        }
        let slots = results.first().map(|r| r.values.len()).unwrap_or(0);
        let mut out = Vec::with_capacity(slots);
        for k in 0..slots {
            let is_list = schema.outputs.get(k).is_some_and(|o| o.is_list);
            let mut list = Vec::new();
            for r in &results {
                let v = r.values.get(k).cloned().unwrap_or(Value::None);
                match (is_list, v) {
                    (true, Value::List(items)) => list.extend(items),
                    (_, v) => list.push(v),
                }
            }
            out.push(list);
        }
        let uis: Vec<Map<String, Json>> = results.into_iter().filter_map(|r| r.ui).collect();
        let ui = if uis.is_empty() { Map::new() } else { merge_ui(uis) };
        Ok((out, ui))
    }

    /// Executes one prompt, emitting its websocket events, and returns its history data.
    pub fn execute(&mut self, svc: &Services<'_>, job: Job<'_>) -> RunResult {
        let prompt_id = job.prompt_id;
        let mut prompt = job.prompt;
        let emitter = Emitter {
            sink: svc.sink,
            client_id: job.extra_data.get("client_id").and_then(Json::as_str).map(str::to_string),
        };
        let mut messages: Vec<(String, Json)> = Vec::new();
        // ComfyUI's add_message: recorded for history; sent to the client (or broadcast).
        let add_message = |messages: &mut Vec<(String, Json)>, event: &str, mut data: Json, broadcast: bool| {
            if let Some(o) = data.as_object_mut() {
                o.insert("timestamp".into(), json!(now_ms()));
            }
            messages.push((event.to_string(), data.clone()));
            if emitter.client_id.is_some() || broadcast {
                emitter.to_client_or_all(event, data);
            }
        };
        let preview_method = match job.extra_data.get("preview_method").and_then(Json::as_str) {
            Some("none") => PreviewMethod::None,
            Some("auto") => PreviewMethod::Auto,
            Some("latent2rgb") => PreviewMethod::Latent2Rgb,
            Some("taesd") => PreviewMethod::Taesd,
            _ => svc.preview_method,
        };

        add_message(&mut messages, "execution_start", json!({"prompt_id": prompt_id}), false);

        self.runs += 1;
        self.cache.set_prompt(svc.registry, svc.folders, &mut prompt, self.runs);
        let node_ids = prompt::node_ids(&prompt);
        let cached: Vec<String> = node_ids.iter().filter(|id| self.cache.is_cached(id)).cloned().collect();
        add_message(&mut messages, "execution_cached", json!({"nodes": cached, "prompt_id": prompt_id}), false);

        let progress = Progress { emitter: &emitter, prompt_id: prompt_id.to_string(), nodes: Mutex::new(Vec::new()) };
        let mut list = ExecList::default();
        for o in job.outputs {
            if prompt::node(&prompt, o).is_some() {
                list.add_node(o, &prompt, &self.cache);
            }
        }
        let registry = svc.registry;
        let is_output =
            |id: &str| prompt::class_type(&prompt, id).and_then(|c| registry.schema(c)).is_some_and(|s| s.output_node);
        let mut executed: Vec<String> = Vec::new();
        let mut executed_set: HashSet<String> = HashSet::new();
        let mut success = true;
        let mut out_of_memory = false;
        let extra_pnginfo = job.extra_data.get("extra_pnginfo");

        while !list.is_empty() {
            let Some(id) = list.pick(&is_output) else {
                let blamed = list.pending.first().cloned().unwrap_or_default();
                let class = prompt::class_type(&prompt, &blamed).unwrap_or_default().to_string();
                add_message(
                    &mut messages,
                    "execution_error",
                    json!({"prompt_id": prompt_id, "node_id": blamed, "node_type": class, "executed": executed,
                           "exception_message": "Dependency cycle detected", "exception_type": "graph.DependencyCycleError",
                           "traceback": [], "current_inputs": [], "current_outputs": node_ids,
                           "category": ErrorCategory::Internal.as_str()}),
                    false,
                );
                success = false;
                break;
            };
            let class = prompt::class_type(&prompt, &id).unwrap_or_default().to_string();

            // Served from the cache: replay the UI output (output nodes reach this path).
            if self.cache.is_cached(&id) {
                let cached_ui = self.cache.get_ui(&id).map(|u| Json::Object(u.output.clone())).unwrap_or(Json::Null);
                emitter.to_client(
                    "executed",
                    json!({"node": id, "display_node": id, "output": cached_ui, "prompt_id": prompt_id}),
                );
                progress.finish(&id);
                list.complete(&id);
                continue;
            }

            let (Some(node), Some(schema)) = (registry.get(&class), registry.schema(&class)) else {
                // Validation guarantees known classes; treat anything else as a node error.
                let err = NodeError::internal(format!("Node class {class} is not registered"));
                self.report_error(
                    &mut messages,
                    &add_message,
                    prompt_id,
                    &id,
                    &class,
                    &executed,
                    &node_ids,
                    err,
                    json!({}),
                );
                success = false;
                break;
            };
            progress.start(&id);
            let gathered = self.gather(&id, schema, &prompt, job.extra_data, registry);
            emitter.to_client("executing", json!({"node": id, "display_node": id, "prompt_id": prompt_id}));

            let sink =
                NodeSink { progress: &progress, node_id: &id, preview_method, pending_preview: Mutex::new(None) };
            let result = {
                let ctx = ExecContext {
                    prompt_id,
                    node_id: &id,
                    prompt: &prompt,
                    extra_pnginfo,
                    folders: svc.folders,
                    cancel: svc.cancel,
                    progress: &sink,
                    preview_method,
                };
                self.call_node(node, schema, &gathered, &ctx)
                    .map_err(|error| NodeFailure { error, current_inputs: gathered.formatted() })
            };
            sink.flush_preview();
            match result {
                Ok((values, ui)) => {
                    if !ui.is_empty() {
                        let meta = json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id});
                        self.cache.set_ui(&id, UiEntry { meta, output: ui.clone() });
                        emitter.to_client(
                            "executed",
                            json!({"node": id, "display_node": id, "output": ui, "prompt_id": prompt_id}),
                        );
                    }
                    self.cache.set(&id, SlotValues::new(values));
                    progress.finish(&id);
                    if executed_set.insert(id.clone()) {
                        executed.push(id.clone());
                    }
                    list.complete(&id);
                }
                Err(NodeFailure { error, current_inputs }) => {
                    if error.category() == ErrorCategory::OutOfMemory {
                        out_of_memory = true;
                    }
                    self.report_error(
                        &mut messages,
                        &add_message,
                        prompt_id,
                        &id,
                        &class,
                        &executed,
                        &node_ids,
                        error,
                        current_inputs,
                    );
                    success = false;
                    break;
                }
            }
        }
        if success {
            add_message(&mut messages, "execution_success", json!({"prompt_id": prompt_id}), false);
        }

        let mut outputs = Map::new();
        let mut meta = Map::new();
        for id in &node_ids {
            if let Some(ui) = self.cache.get_ui(id) {
                outputs.insert(id.clone(), Json::Object(ui.output.clone()));
                meta.insert(id.clone(), ui.meta.clone());
            }
        }
        RunResult { success, outputs, meta, messages, out_of_memory }
    }

    #[allow(clippy::too_many_arguments)]
    fn report_error(
        &self,
        messages: &mut Vec<(String, Json)>,
        add_message: &AddMessage<'_>,
        prompt_id: &str,
        id: &str,
        class: &str,
        executed: &[String],
        node_ids: &[String],
        error: NodeError,
        current_inputs: Json,
    ) {
        match error {
            NodeError::Interrupted => {
                tracing::info!("Processing interrupted");
                add_message(
                    messages,
                    "execution_interrupted",
                    json!({"prompt_id": prompt_id, "node_id": id, "node_type": class, "executed": executed}),
                    true,
                );
            }
            NodeError::Failed { exception_type, message, category } => {
                tracing::error!(node = %id, class = %class, "!!! Exception during processing !!! {message}");
                let tips = if category == ErrorCategory::OutOfMemory { OOM_TIPS } else { "" };
                let traceback = vec![format!(
                    "  File \"comfy-rs\", node {id} ({class}), in execute\n    raise {exception_type}({})\n",
                    py_repr(&Json::String(message.clone()))
                )];
                add_message(
                    messages,
                    "execution_error",
                    json!({"prompt_id": prompt_id, "node_id": id, "node_type": class, "executed": executed,
                           "exception_message": format!("{message}\n{tips}"), "exception_type": exception_type,
                           "traceback": traceback, "current_inputs": current_inputs, "current_outputs": node_ids,
                           "category": category.as_str()}),
                    false,
                );
            }
        }
    }
}
