//! `execute-workflow`: submit to a running server (progress from `/ws`, images via `/view`),
//! or, when none answers, run the engine in-process.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use comfy_graph::{Engine, EngineConfig, Event, EventSink, Folders};
use comfy_hub::{Progress, ProgressBar};
use serde_json::{json, Map, Value as Json};

use super::load::{local_object_info, print_validation_errors, read_workflow, Workflow};
use crate::client::{encode_component, Server};
use crate::ExecuteArgs;

/// What one execution event means for the waiting client.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Keep waiting.
    Continue,
    /// The prompt finished successfully.
    Done,
    /// The prompt failed; the text says why.
    Failed(String),
}

/// Follows one prompt's events: drives the progress bar and says when it has ended.
pub struct Tracker<'a> {
    pub prompt_id: String,
    pub prompt: &'a Json,
    bar: ProgressBar,
    bar_active: bool,
}

impl<'a> Tracker<'a> {
    pub fn new(prompt_id: &str, prompt: &'a Json) -> Self {
        Tracker { prompt_id: prompt_id.to_string(), prompt, bar: ProgressBar::steps(), bar_active: false }
    }

    fn end_bar(&mut self) {
        if self.bar_active {
            self.bar.finish();
            self.bar_active = false;
        }
    }

    fn label(&self, node: &str) -> String {
        let class = self.prompt.get(node).and_then(|n| n.get("class_type")).and_then(Json::as_str).unwrap_or("?");
        format!("{class} #{node}")
    }

    /// Handles a `{"type", "data"}` message.
    pub fn handle(&mut self, kind: &str, data: &Json) -> Step {
        let pid = data.get("prompt_id").and_then(Json::as_str);
        if pid.is_some_and(|p| p != self.prompt_id) {
            return Step::Continue;
        }
        match kind {
            "executing" => {
                self.end_bar();
                match data.get("node").and_then(Json::as_str) {
                    Some(node) => {
                        eprintln!("executing {}", self.label(node));
                        Step::Continue
                    }
                    None if pid.is_some() => Step::Done,
                    None => Step::Continue,
                }
            }
            "progress" => {
                let value = data.get("value").and_then(Json::as_u64).unwrap_or(0);
                let max = data.get("max").and_then(Json::as_u64).unwrap_or(0);
                let node = data.get("node").and_then(Json::as_str).unwrap_or("?").to_string();
                if !self.bar_active {
                    self.bar.start(&self.label(&node), Some(max), value);
                    self.bar_active = true;
                } else {
                    self.bar.update(value);
                }
                Step::Continue
            }
            "execution_cached" => {
                let n = data.get("nodes").and_then(Json::as_array).map(|a| a.len()).unwrap_or(0);
                if n > 0 {
                    eprintln!("{n} node(s) reused from cache");
                }
                Step::Continue
            }
            "execution_success" => {
                self.end_bar();
                Step::Done
            }
            "execution_error" => {
                self.end_bar();
                Step::Failed(describe_execution_error(data))
            }
            "execution_interrupted" => {
                self.end_bar();
                Step::Failed("execution was interrupted".into())
            }
            _ => Step::Continue,
        }
    }
}

/// The images (`{filename, subfolder, type}`) of a history entry's outputs, in node order.
pub fn output_images(entry: &Json) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Some(outputs) = entry.get("outputs").and_then(Json::as_object) else { return out };
    for ui in outputs.values() {
        for img in ui.get("images").and_then(Json::as_array).into_iter().flatten() {
            let f = img.get("filename").and_then(Json::as_str).unwrap_or("");
            if f.is_empty() {
                continue;
            }
            let sub = img.get("subfolder").and_then(Json::as_str).unwrap_or("").to_string();
            let ty = img.get("type").and_then(Json::as_str).unwrap_or("output").to_string();
            out.push((f.to_string(), sub, ty));
        }
    }
    out
}

/// Where an output image lands under `--output`: `<dir>/<subfolder>/<file>` (checked relative).
fn target_path(dir: &Path, subfolder: &str, file: &str) -> Option<PathBuf> {
    let name = Path::new(file).file_name()?.to_str()?.to_string();
    let mut p = dir.to_path_buf();
    if !subfolder.is_empty() {
        p.push(comfy_graph::folders::safe_relative(subfolder)?);
    }
    Some(p.join(name))
}

/// One line for an `execution_error`: `Class #id failed: Type: message [category]` (the
/// category is comfy-rs's classification, shown when the server sends one).
fn describe_execution_error(d: &Json) -> String {
    let node = d.get("node_id").and_then(Json::as_str).unwrap_or("?");
    let class = d.get("node_type").and_then(Json::as_str).unwrap_or("?");
    let ty = d.get("exception_type").and_then(Json::as_str).unwrap_or("error");
    let msg = d.get("exception_message").and_then(Json::as_str).unwrap_or("").trim_end();
    match d.get("category").and_then(Json::as_str) {
        Some(c) => format!("{class} #{node} failed: {ty}: {msg} [{c}]"),
        None => format!("{class} #{node} failed: {ty}: {msg}"),
    }
}

/// The error text of a failed history entry, if it failed.
fn history_failure(entry: &Json) -> Option<String> {
    let status = entry.get("status")?;
    if status.get("status_str").and_then(Json::as_str) != Some("error") {
        return None;
    }
    let msgs = status.get("messages").and_then(Json::as_array)?;
    for m in msgs {
        if m.get(0).and_then(Json::as_str) == Some("execution_error") {
            return Some(describe_execution_error(&m[1]));
        }
    }
    Some("execution failed".into())
}

fn extra_data(wf: &Workflow) -> Json {
    if wf.ui {
        json!({"extra_pnginfo": {"workflow": wf.document}})
    } else {
        json!({})
    }
}

/// The server to submit to: `--server`, else the instance that `start` recorded in the base
/// directory while it runs (so `./manage.sh --action start --port P` followed by plain
/// `execute-workflow` calls in that directory reaches it), else ComfyUI's default address.
pub fn server_url(args: &ExecuteArgs) -> String {
    if let Some(url) = &args.server {
        return url.clone();
    }
    let files = crate::instance::InstanceFiles::new(&args.base.base_directory);
    match (files.running_pid(), files.state()) {
        (Some(_), Some(state)) => crate::instance::base_url(&state.listen, state.port),
        _ => crate::instance::base_url(crate::instance::DEFAULT_LISTEN, crate::instance::DEFAULT_PORT),
    }
}

/// `execute-workflow`.
pub fn execute_workflow(args: &ExecuteArgs) -> anyhow::Result<i32> {
    let wf = match read_workflow(&args.workflow) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let url = server_url(args);
    let server = Server::new(&url, Duration::from_secs(5));
    if server.answers() {
        eprintln!("running on {}", server.base);
        return remote(args, &wf, &server);
    }
    if args.remote_only {
        eprintln!("error: no server answers at {} (start one with ./manage.sh --action start)", url);
        return Ok(1);
    }
    eprintln!("no server answers at {}; running in-process", url);
    in_process(args, &wf)
}

fn remote(args: &ExecuteArgs, wf: &Workflow, server: &Server) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(1.0));
    let prompt = if wf.ui {
        let info = match server.get_json("/object_info")? {
            Json::Object(m) => m,
            _ => anyhow::bail!("{}/object_info did not return an object", server.base),
        };
        match wf.to_api(&info) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        }
    } else {
        wf.document.clone()
    };
    let client_id = uuid::Uuid::new_v4().simple().to_string();
    let mut ws = match server.websocket(&client_id, Duration::from_millis(500)) {
        Ok(ws) => Some(ws),
        Err(e) => {
            eprintln!("warning: {e}; progress will not be shown");
            None
        }
    };
    let body = json!({"prompt": prompt, "client_id": client_id, "extra_data": extra_data(wf)});
    let (status, resp) = server.post_json("/prompt", &body)?;
    if status != 200 {
        eprintln!("{}: the server refused the workflow (HTTP {status}):", args.workflow.display());
        print_validation_errors(&resp);
        return Ok(1);
    }
    let Some(prompt_id) = resp.get("prompt_id").and_then(Json::as_str).map(str::to_string) else {
        eprintln!("error: /prompt answered without a prompt_id: {resp}");
        return Ok(1);
    };
    if resp.get("node_errors").and_then(Json::as_object).is_some_and(|m| !m.is_empty()) {
        eprintln!("warning: some outputs failed validation and are skipped:");
        super::load::print_node_errors(&resp);
    }
    eprintln!("queued prompt {prompt_id}");
    let mut tracker = Tracker::new(&prompt_id, &prompt);
    let history_path = format!("/history/{}", encode_component(&prompt_id));
    let mut last_poll = Instant::now();
    let entry = loop {
        if Instant::now() > deadline {
            let _ = server.post_json("/interrupt", &json!({"prompt_id": prompt_id}));
            eprintln!("error: timed out after {:.0} s (the prompt was interrupted)", args.timeout);
            return Ok(1);
        }
        let mut step = Step::Continue;
        if let Some(sock) = ws.as_mut() {
            match sock.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    if let Ok(msg) = serde_json::from_str::<Json>(t.as_str()) {
                        let kind = msg.get("type").and_then(Json::as_str).unwrap_or("");
                        step = tracker.handle(kind, msg.get("data").unwrap_or(&Json::Null));
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    eprintln!("warning: websocket closed ({e}); polling history");
                    ws = None;
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Step::Failed(why) = step {
            eprintln!("error: {why}");
            return Ok(1);
        }
        if step == Step::Done || last_poll.elapsed() > Duration::from_secs(1) {
            last_poll = Instant::now();
            let h = server.get_json(&history_path)?;
            if let Some(e) = h.get(&prompt_id) {
                break e.clone();
            }
        }
    };
    if let Some(why) = history_failure(&entry) {
        eprintln!("error: {why}");
        return Ok(1);
    }
    std::fs::create_dir_all(&args.output)?;
    let mut saved = 0;
    for (file, sub, ty) in output_images(&entry) {
        let Some(dest) = target_path(&args.output, &sub, &file) else { continue };
        let q = format!(
            "/view?filename={}&subfolder={}&type={}",
            encode_component(&file),
            encode_component(&sub),
            encode_component(&ty)
        );
        let bytes = server.get_bytes(&q)?;
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&dest, bytes)?;
        println!("{}", dest.display());
        saved += 1;
    }
    eprintln!("done: {saved} image(s) in {}", args.output.display());
    Ok(0)
}

/// Forwards engine events into a channel.
struct ChannelSink(Mutex<mpsc::Sender<Event>>);

impl EventSink for ChannelSink {
    fn send(&self, event: Event) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(event);
        }
    }
}

fn in_process(args: &ExecuteArgs, wf: &Workflow) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(1.0));
    let base = std::path::absolute(&args.base.base_directory)?;
    let folders = Folders::new(&base);
    folders.create_all()?;
    let registry = comfy_nodes::registry();
    let info: Map<String, Json> = local_object_info(&registry, &folders);
    let prompt = match wf.to_api(&info) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(registry, folders.clone(), EngineConfig::default(), Arc::new(ChannelSink(Mutex::new(tx))));
    let result = run_in(&engine, args, wf, &prompt, &folders, &rx, deadline);
    engine.shutdown();
    result
}

fn run_in(
    engine: &Engine,
    args: &ExecuteArgs,
    wf: &Workflow,
    prompt: &Json,
    folders: &Folders,
    rx: &mpsc::Receiver<Event>,
    deadline: Instant,
) -> anyhow::Result<i32> {
    let client_id = "manage-cli";
    let body = json!({"prompt": prompt, "client_id": client_id, "extra_data": extra_data(wf)});
    let resp = match engine.submit(body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: the workflow does not validate:", args.workflow.display());
            print_validation_errors(e.body());
            return Ok(1);
        }
    };
    let prompt_id = resp.get("prompt_id").and_then(Json::as_str).unwrap_or_default().to_string();
    let mut tracker = Tracker::new(&prompt_id, prompt);
    loop {
        if Instant::now() > deadline {
            engine.interrupt(Some(&prompt_id));
            eprintln!("error: timed out after {:.0} s (the prompt was interrupted)", args.timeout);
            return Ok(1);
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Json { kind, data, .. }) => match tracker.handle(&kind, &data) {
                Step::Continue => {}
                Step::Done => break,
                Step::Failed(why) => {
                    eprintln!("error: {why}");
                    return Ok(1);
                }
            },
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if engine.history_item(&prompt_id).get(&prompt_id).is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // History is written right after the final event: wait briefly for it.
    let entry = loop {
        if let Some(e) = engine.history_item(&prompt_id).get(&prompt_id) {
            break e.clone();
        }
        if Instant::now() > deadline {
            eprintln!("error: the prompt ended but left no history entry");
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(why) = history_failure(&entry) {
        eprintln!("error: {why}");
        return Ok(1);
    }
    std::fs::create_dir_all(&args.output)?;
    let mut saved = 0;
    for (file, sub, ty) in output_images(&entry) {
        let Some(dir) = folders.dir_for_type(&ty) else { continue };
        let Some(src) = target_path(dir, &sub, &file) else { continue };
        let Some(dest) = target_path(&args.output, &sub, &file) else { continue };
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        if src != dest {
            std::fs::copy(&src, &dest)?;
        }
        println!("{}", dest.display());
        saved += 1;
    }
    eprintln!("done: {saved} image(s) in {}", args.output.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_follows_one_prompt() {
        let prompt = json!({"3": {"class_type": "KSampler", "inputs": {}}});
        let mut t = Tracker::new("p1", &prompt);
        assert_eq!(t.handle("executing", &json!({"node": "3", "prompt_id": "p1"})), Step::Continue);
        assert_eq!(t.handle("progress", &json!({"value": 1, "max": 2, "node": "3", "prompt_id": "p1"})), Step::Continue);
        assert_eq!(t.handle("execution_success", &json!({"prompt_id": "other"})), Step::Continue);
        let f = t.handle("execution_error", &json!({"prompt_id": "p1", "node_id": "3", "node_type": "KSampler",
            "exception_type": "RuntimeError", "exception_message": "boom\n"}));
        assert_eq!(f, Step::Failed("KSampler #3 failed: RuntimeError: boom".into()));
        assert_eq!(t.handle("executing", &json!({"node": null, "prompt_id": "p1"})), Step::Done);
    }

    #[test]
    fn lists_output_images_and_failures() {
        let e = json!({"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "s", "type": "output"}]},
                                   "10": {"images": [{"filename": "b.png", "subfolder": "", "type": "temp"}]}},
                       "status": {"status_str": "success", "messages": []}});
        assert_eq!(output_images(&e).len(), 2);
        assert!(history_failure(&e).is_none());
        assert_eq!(target_path(Path::new("/o"), "s", "a.png"), Some(PathBuf::from("/o/s/a.png")));
        assert_eq!(target_path(Path::new("/o"), "../x", "a.png"), None);
        let bad = json!({"status": {"status_str": "error", "messages": [["execution_error", {"node_id": "1", "node_type": "X",
            "exception_type": "ValueError", "exception_message": "bad\n"}]]}});
        assert_eq!(history_failure(&bad).as_deref(), Some("X #1 failed: ValueError: bad"));
        let timed_out = json!({"status": {"status_str": "error", "messages": [["execution_error", {"node_id": "3",
            "node_type": "KSampler", "exception_type": "TimeoutError", "exception_message": "late\n", "category": "timeout"}]]}});
        assert_eq!(history_failure(&timed_out).as_deref(), Some("KSampler #3 failed: TimeoutError: late [timeout]"));
    }
}
