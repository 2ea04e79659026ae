//! The reference document's operational promises, end to end against the real binary with a
//! tiny random-weight checkpoint: every error category triggered for real (ComfyUI's own fields
//! unchanged, the classification added), the queue limit, timeouts and model preloading.

mod server_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use server_support::{blur_graph, slow_graph, wait_until, Server};

const CKPT: &str = "tiny-sd15.safetensors";

/// A base directory holding the tiny SD1.5 recipe checkpoint as `models/checkpoints/CKPT`.
fn base_with_checkpoint() -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("temp dir");
    let dir = base.path().join("models/checkpoints");
    std::fs::create_dir_all(&dir).expect("checkpoints dir");
    comfy_diffusion::recipe::write_recipe_checkpoint(comfy_diffusion::recipe::Arch::Sd15, true, 0, &dir.join(CKPT))
        .expect("tiny checkpoint");
    base
}

/// The SD1.5 example workflow on the tiny checkpoint at 64x64 with `steps` steps.
fn text_to_image(steps: u32, prefix: &str) -> Json {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sd15_text_to_image.json"))
        .expect("example workflow");
    let mut wf: Json = serde_json::from_str(&text).expect("example JSON");
    wf["4"]["inputs"]["ckpt_name"] = json!(CKPT);
    wf["5"]["inputs"]["width"] = json!(64);
    wf["5"]["inputs"]["height"] = json!(64);
    wf["3"]["inputs"]["steps"] = json!(steps);
    wf["9"]["inputs"]["filename_prefix"] = json!(prefix);
    wf
}

/// The `execution_error` message of a history entry (panics when the prompt did not fail).
fn execution_error(entry: &Json) -> Json {
    assert_eq!(entry["status"]["status_str"], "error", "{entry}");
    assert_eq!(entry["status"]["completed"], false);
    let messages = entry["status"]["messages"].as_array().expect("status.messages");
    messages
        .iter()
        .find(|m| m[0] == "execution_error")
        .map(|m| m[1].clone())
        .unwrap_or_else(|| panic!("no execution_error in {messages:?}"))
}

/// Asserts ComfyUI's `execution_error` fields and the added classification.
fn assert_execution_error(e: &Json, prompt_id: &str, node_id: &str, node_type: &str, category: &str, exception_type: &str) {
    assert_eq!(e["prompt_id"], prompt_id, "{e}");
    assert_eq!(e["node_id"], node_id, "{e}");
    assert_eq!(e["node_type"], node_type, "{e}");
    assert_eq!(e["exception_type"], exception_type, "{e}");
    assert!(e["exception_message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["traceback"].is_array(), "{e}");
    assert!(e["executed"].is_array(), "{e}");
    assert!(e["current_inputs"].is_object() && e["current_outputs"].is_array(), "{e}");
    assert_eq!(e["category"], category, "{e}");
}

/// The server still runs prompts after a failure.
fn assert_still_serving(s: &Server, prefix: &str) {
    let id = s.submit(&blur_graph(prefix, 8), None);
    let entry = s.wait_history(&id);
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
}

#[test]
fn missing_model_at_validation_and_at_execution() {
    let s = Server::start_in(base_with_checkpoint(), &[]);

    // Validation: an unknown ckpt_name is value_not_in_list (ComfyUI) + missing_model.
    let mut wf = text_to_image(2, "never");
    wf["4"]["inputs"]["ckpt_name"] = json!("absent.safetensors");
    let r = s.post_json("/prompt", &json!({"prompt": wf}));
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(body["error"]["message"], "Prompt outputs failed validation");
    let node = &body["node_errors"]["4"];
    assert_eq!(node["class_type"], "CheckpointLoaderSimple");
    assert_eq!(node["dependent_outputs"], json!(["9"]));
    let err = &node["errors"][0];
    assert_eq!(err["type"], "value_not_in_list");
    assert_eq!(err["message"], "Value not in list");
    assert!(err["details"].as_str().unwrap().starts_with("ckpt_name: 'absent.safetensors' not in "), "{err}");
    assert_eq!(err["category"], "missing_model");
    assert_eq!(err["node_id"], "4");
    assert_eq!(err["node_type"], "CheckpointLoaderSimple");

    // Execution: the file exists at validation and is deleted before the prompt runs.
    let blocker = s.submit(&slow_graph("blocker", 60), None);
    wait_until("the blocking prompt to run", || {
        s.get("/queue").json()["queue_running"].as_array().map(|r| r.len()) == Some(1)
    });
    let id = s.submit(&text_to_image(2, "vanished"), None);
    std::fs::remove_file(s.path(&format!("models/checkpoints/{CKPT}"))).expect("delete checkpoint");
    s.post_json("/interrupt", &json!({"prompt_id": blocker}));
    let entry = s.wait_history(&id);
    let e = execution_error(&entry);
    assert_execution_error(&e, &id, "4", "CheckpointLoaderSimple", "missing_model", "FileNotFoundError");
    assert!(e["exception_message"].as_str().unwrap().contains(CKPT), "{e}");
    assert_still_serving(&s, "after_missing");
}

#[test]
fn allocation_beyond_the_memory_cap_is_out_of_memory() {
    // The tiny checkpoint needs a few MiB once loaded: a 1 MB cap refuses it.
    let s = Server::start_in(base_with_checkpoint(), &["--memory-cap", "1"]);
    let stats = s.get("/system_stats").json();
    assert_eq!(stats["comfy_rs"]["memory_cap"], json!(1024 * 1024));
    let id = s.submit(&text_to_image(2, "oom"), None);
    let entry = s.wait_history(&id);
    let e = execution_error(&entry);
    assert_execution_error(&e, &id, "4", "CheckpointLoaderSimple", "out_of_memory", "torch.OutOfMemoryError");
    assert!(e["exception_message"].as_str().unwrap().contains("memory cap"), "{e}");
    // Nothing stays resident after an out-of-memory error, and the server goes on.
    assert_eq!(s.get("/system_stats").json()["comfy_rs"]["resident_models"], json!([]));
    assert_still_serving(&s, "after_oom");
}

#[test]
fn bad_links_and_values_are_invalid_input() {
    let s = Server::start(&[]);
    let mut g = blur_graph("bad", 8);
    g["2"]["inputs"]["image"] = json!(["7", 0]); // no node 7
    let r = s.post_json("/prompt", &json!({"prompt": g}));
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let err = &body["node_errors"]["2"]["errors"][0];
    assert_eq!(err["category"], "invalid_input", "{err}");
    assert_eq!(err["node_id"], "2");
    assert_eq!(err["node_type"], "ImageBlur");

    // A link of the wrong type: an IMAGE input fed from a MASK output.
    let mut g = blur_graph("bad2", 8);
    g["5"] = json!({"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}});
    g["2"]["inputs"]["image"] = json!(["5", 0]);
    let body = s.post_json("/prompt", &json!({"prompt": g})).json();
    let err = &body["node_errors"]["2"]["errors"][0];
    assert_eq!(err["type"], "return_type_mismatch", "{err}");
    assert_eq!(err["category"], "invalid_input");

    // An out-of-range value.
    let mut g = blur_graph("bad3", 8);
    g["2"]["inputs"]["blur_radius"] = json!(500);
    let body = s.post_json("/prompt", &json!({"prompt": g})).json();
    let err = &body["node_errors"]["2"]["errors"][0];
    assert_eq!(err["type"], "value_bigger_than_max", "{err}");
    assert_eq!(err["category"], "invalid_input");
    assert_still_serving(&s, "after_invalid");
}

#[test]
fn timeouts_from_the_flag_and_from_extra_data() {
    let s = Server::start_in(base_with_checkpoint(), &["--max-execution-time", "2"]);
    // Thousands of tiny-model steps take far longer than 2 s: interrupted in KSampler.
    let id = s.submit(&text_to_image(5000, "slow"), None);
    let started = Instant::now();
    let entry = s.wait_history(&id);
    assert!(started.elapsed() < Duration::from_secs(60), "timeout not enforced: {:?}", started.elapsed());
    let e = execution_error(&entry);
    assert_execution_error(&e, &id, "3", "KSampler", "timeout", "TimeoutError");
    // The next prompt runs (the checkpoint and encodings come from the cache).
    let id = s.submit(&text_to_image(2, "fast"), None);
    assert_eq!(s.wait_history(&id)["status"]["status_str"], "success");

    // A per-prompt `extra_data.timeout` shorter than the server's.
    let r = s.post_json("/prompt", &json!({"prompt": text_to_image(5000, "slow2"), "extra_data": {"timeout": 0.5}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    let e = execution_error(&s.wait_history(&id));
    assert_execution_error(&e, &id, "3", "KSampler", "timeout", "TimeoutError");
}

#[test]
fn a_full_queue_answers_429_and_queues_nothing() {
    let s = Server::start(&["--max-queue-size", "2"]);
    let a = s.submit(&slow_graph("full_a", 60), None);
    let b = s.submit(&blur_graph("full_b", 8), None);
    let before = s.get("/queue").json();
    let r = s.post_json("/prompt", &json!({"prompt": blur_graph("full_c", 8)}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let body = r.json();
    assert_eq!(body["error"]["type"], "queue_full");
    assert_eq!(body["error"]["category"], "queue_full");
    assert_eq!(body["node_errors"], json!({}));
    assert!(body["error"]["message"].is_string() && body["error"]["details"].is_string(), "{body}");
    // Nothing half-queued: the queue is unchanged (same ids) after the refusal.
    let ids = |q: &Json| {
        let mut v: Vec<String> = ["queue_running", "queue_pending"]
            .iter()
            .flat_map(|k| q[*k].as_array().cloned().unwrap_or_default())
            .map(|item| item[1].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&s.get("/queue").json()), ids(&before));
    wait_until("A running", || s.get("/queue").json()["queue_running"].as_array().map(|r| r.len()) == Some(1));
    s.post_json("/interrupt", &json!({"prompt_id": a}));
    s.wait_history(&a);
    assert_eq!(s.wait_history(&b)["status"]["status_str"], "success");
    // Room again.
    assert_still_serving(&s, "after_full");
}

#[test]
fn preloaded_checkpoint_is_resident_before_the_first_prompt() {
    let s = Server::start_in(base_with_checkpoint(), &["--preload-checkpoint", CKPT]);
    // The port opened only after the load: the model is already listed.
    let stats = s.get("/system_stats").json();
    let resident = stats["comfy_rs"]["resident_models"].as_array().expect("resident_models").clone();
    assert_eq!(resident.len(), 1, "{stats}");
    assert_eq!(resident[0]["kind"], "checkpoint");
    assert_eq!(resident[0]["name"], CKPT);
    assert!(resident[0]["bytes"].as_u64().unwrap() > 0);
    assert!(stats["comfy_rs"]["process_rss"].as_u64().unwrap() > 0);
    // The first prompt uses it (still one resident model, nothing reloaded).
    let id = s.submit(&text_to_image(2, "preloaded"), None);
    assert_eq!(s.wait_history(&id)["status"]["status_str"], "success");
    let after = s.get("/system_stats").json()["comfy_rs"]["resident_models"].clone();
    assert_eq!(after.as_array().map(Vec::len), Some(1), "{after}");
    // `manage.sh --action status` (the same subcommand) lists it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-rs"))
        .args(["manage", "status", "--port", &s.port.to_string(), "--base-directory"])
        .arg(s.path(""))
        .output()
        .expect("manage status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("loaded:    1 model(s) resident"), "{text}");
    assert!(text.contains(&format!("checkpoint {CKPT}")), "{text}");
    // `POST /free` unloads it.
    s.post_json("/free", &json!({"unload_models": true}));
    wait_until("models unloaded", || s.get("/system_stats").json()["comfy_rs"]["resident_models"] == json!([]));
}

#[test]
fn preloading_a_missing_checkpoint_stops_the_start() {
    let base = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-rs"))
        .arg("--base-directory")
        .arg(base.path())
        .args(["--port", "0", "--preload-checkpoint", "absent.safetensors"])
        .output()
        .expect("run comfy-rs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot preload checkpoint absent.safetensors"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("To see the GUI"));
}
