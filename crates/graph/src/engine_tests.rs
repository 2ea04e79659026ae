//! End-to-end tests of validation, execution, caching, events and history with small
//! test nodes (no ML).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value as Json};

use crate::node::PreviewFormat;
use crate::schema::InputType;
use crate::validate::validate_prompt;
use crate::{
    Engine, EngineConfig, Event, EventSink, ExecContext, Folders, Inputs, JobsQuery, Node, NodeError, NodeRegistry,
    NodeSchema, Outputs, Section, SubmitError, Value,
};

// ---------------------------------------------------------------------------------------
// Test nodes

/// Shared record of which node ids ran, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);
impl Log {
    fn push(&self, id: &str) {
        self.0.lock().unwrap().push(id.to_string());
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A generic node: declared schema, logs its id, returns one value per output slot.
struct TestNode {
    schema: NodeSchema,
    log: Log,
    /// What `execute` does.
    run: fn(&Inputs, &ExecContext<'_>) -> Result<Outputs, NodeError>,
    fingerprint: Option<fn(&Inputs) -> String>,
}

impl Node for TestNode {
    fn schema(&self) -> NodeSchema {
        self.schema.clone()
    }
    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        self.log.push(ctx.node_id);
        (self.run)(inputs, ctx)
    }
    fn fingerprint(&self, inputs: &Inputs, _folders: &Folders) -> Option<String> {
        self.fingerprint.map(|f| f(inputs))
    }
}

fn objects(n: usize) -> Result<Outputs, NodeError> {
    Ok(Outputs::new((0..n).map(Value::object).collect()))
}

fn sd_registry(log: &Log) -> NodeRegistry {
    let mut r = NodeRegistry::new();
    let samplers: Vec<Json> = (0..41).map(|i| json!(format!("sampler{i}"))).chain([json!("euler")]).collect();
    let add =
        |r: &mut NodeRegistry, schema: NodeSchema, run: fn(&Inputs, &ExecContext<'_>) -> Result<Outputs, NodeError>| {
            r.register(TestNode { schema, log: log.clone(), run, fingerprint: None })
        };
    add(
        &mut r,
        NodeSchema::new("CheckpointLoaderSimple", "loaders")
            .push_input(Section::Required, "ckpt_name", InputType::Files("checkpoints".into()), json!({}))
            .output("MODEL")
            .output("CLIP")
            .output("VAE"),
        |_, _| objects(3),
    );
    add(
        &mut r,
        NodeSchema::new("EmptyLatentImage", "latent")
            .required("width", "INT", json!({"default": 512, "min": 16, "max": 16384, "step": 8}))
            .required("height", "INT", json!({"default": 512, "min": 16, "max": 16384, "step": 8}))
            .required("batch_size", "INT", json!({"default": 1, "min": 1, "max": 4096}))
            .output("LATENT"),
        |_, _| objects(1),
    );
    add(
        &mut r,
        NodeSchema::new("CLIPTextEncode", "conditioning")
            .required("text", "STRING", json!({"multiline": true, "dynamicPrompts": true}))
            .required("clip", "CLIP", json!({}))
            .output("CONDITIONING"),
        |i, _| {
            i.object::<usize>("clip")?;
            objects(1)
        },
    );
    add(
        &mut r,
        NodeSchema::new("KSampler", "sampling")
            .required("model", "MODEL", json!({}))
            .required("seed", "INT", json!({"default": 0, "min": 0, "max": 0xffffffffffffffffu64}))
            .required(
                "steps",
                "INT",
                json!({"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}),
            )
            .required("cfg", "FLOAT", json!({"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}))
            .push_input(Section::Required, "sampler_name", InputType::Combo(samplers), json!({}))
            .push_input(Section::Required, "scheduler", InputType::Combo(vec![json!("normal"), json!("karras")]), json!({}))
            .required("positive", "CONDITIONING", json!({}))
            .required("negative", "CONDITIONING", json!({}))
            .required("latent_image", "LATENT", json!({}))
            .required("denoise", "FLOAT", json!({"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}))
            .output("LATENT"),
        |i, ctx| {
            let steps = i.u64("steps")?;
            for s in 0..steps {
                ctx.cancel.check()?;
                ctx.progress.preview(PreviewFormat::Jpeg, vec![0xff, 0xd8, s as u8]);
                ctx.progress.progress(s + 1, steps);
            }
            objects(1)
        },
    );
    add(
        &mut r,
        NodeSchema::new("VAEDecode", "latent")
            .required("samples", "LATENT", json!({}))
            .required("vae", "VAE", json!({}))
            .output("IMAGE"),
        |_, _| objects(1),
    );
    add(
        &mut r,
        NodeSchema::new("SaveImage", "image")
            .required("images", "IMAGE", json!({}))
            .required("filename_prefix", "STRING", json!({"default": "ComfyUI"}))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node(),
        |i, ctx| {
            assert!(ctx.prompt.get("9").is_some());
            assert_eq!(i.get("prompt").and_then(|p| p.as_json()).map(|p| p.get("9").is_some()), Some(true));
            let prefix = i.str("filename_prefix")?;
            let mut ui = Map::new();
            ui.insert(
                "images".into(),
                json!([{"filename": format!("{prefix}_00001_.png"), "subfolder": "", "type": "output"}]),
            );
            Ok(Outputs::new(vec![]).with_ui(ui))
        },
    );
    r
}

fn sd_prompt() -> Json {
    json!({
        "3": {"inputs": {"seed": 156680208700286u64, "steps": 2, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
              "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": "model.safetensors"}, "class_type": "CheckpointLoaderSimple"},
        "5": {"inputs": {"width": 512, "height": 512, "batch_size": 1}, "class_type": "EmptyLatentImage"},
        "6": {"inputs": {"text": "a cat", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
        "7": {"inputs": {"text": "bad", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage"}
    })
}

/// Collects events.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);
impl EventSink for Collect {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}
impl Collect {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fixture {
    engine: Engine,
    events: Arc<Collect>,
    log: Log,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

fn folders_with_model() -> (tempfile::TempDir, Folders) {
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    std::fs::write(dir.path().join("models/checkpoints/model.safetensors"), b"x").unwrap();
    (dir, folders)
}

fn fixture_with(registry: impl FnOnce(&Log) -> NodeRegistry, config: EngineConfig) -> Fixture {
    let log = Log::default();
    let (dir, folders) = folders_with_model();
    let events = Arc::new(Collect::default());
    let engine = Engine::start(registry(&log), folders, config, events.clone());
    Fixture { engine, events, log, _dir: dir }
}

fn fixture() -> Fixture {
    fixture_with(sd_registry, EngineConfig::default())
}

fn wait_done(engine: &Engine, prompt_id: &str) -> Json {
    let t0 = Instant::now();
    loop {
        let h = engine.history_item(prompt_id);
        if let Some(e) = h.get(prompt_id) {
            return e.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "prompt {prompt_id} did not finish; queue {}, history {}",
            engine.queue_json(),
            engine.history_json_at(None, -1)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_running(engine: &Engine) {
    let t0 = Instant::now();
    while engine.queue_json()["queue_running"].as_array().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "nothing started");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn submit(engine: &Engine, body: Json) -> String {
    let r = engine.submit(body).unwrap_or_else(|e| panic!("rejected: {}", e.body()));
    r["prompt_id"].as_str().unwrap().to_string()
}

/// `kind` or `kind:node` of the JSON events sent to `client` (or broadcast).
fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Json { kind, data, .. } => match kind.as_str() {
                "executing" | "executed" => format!("{kind}:{}", data["node"].as_str().unwrap_or("null")),
                "status" => format!("status({})", data["status"]["exec_info"]["queue_remaining"]),
                "progress" => format!("progress:{}", data["value"]),
                "progress_state" => {
                    let (id, st) = data["nodes"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .find(|(_, v)| v["state"] == "running")
                        .map(|(k, v)| (k.clone(), v["state"].as_str().unwrap().to_string()))
                        .unwrap_or(("-".into(), "finished".into()));
                    format!("ps:{id}:{st}")
                }
                _ => kind.clone(),
            },
            Event::Binary { event_type, .. } => format!("bin{event_type}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Validation

fn validate(registry: &NodeRegistry, folders: &Folders, prompt: &mut Json) -> crate::validate::Validation {
    validate_prompt(registry, folders, prompt, None)
}

#[test]
fn spec_example_400_body() {
    let log = Log::default();
    let reg = sd_registry(&log);
    let (_d, folders) = folders_with_model();
    let mut p = sd_prompt();
    p["3"]["inputs"]["steps"] = json!(0);
    p["3"]["inputs"]["sampler_name"] = json!("eulerx");
    let v = validate(&reg, &folders, &mut p);
    let expected = json!({
      "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                "details": "", "extra_info": {}, "category": "invalid_input", "node_id": null, "node_type": null},
      "node_errors": {
        "3": {
          "errors": [
            {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps",
             "extra_info": {"input_name": "steps",
                            "input_config": ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}],
                            "received_value": 0},
             "category": "invalid_input", "node_id": "3", "node_type": "KSampler"},
            {"type": "value_not_in_list", "message": "Value not in list",
             "details": "sampler_name: 'eulerx' not in (list of length 42)",
             "extra_info": {"input_name": "sampler_name", "input_config": null, "received_value": "eulerx"},
             "category": "invalid_input", "node_id": "3", "node_type": "KSampler"}
          ],
          "dependent_outputs": ["9"],
          "class_type": "KSampler"
        }
      }
    });
    assert_eq!(v.error_body(), expected);
    assert!(v.outputs.is_empty());
}

#[test]
fn prompt_level_errors() {
    let log = Log::default();
    let reg = sd_registry(&log);
    let (_d, folders) = folders_with_model();
    let mut p = json!({"1": {"inputs": {}}});
    let v = validate(&reg, &folders, &mut p);
    let e = v.error.unwrap();
    assert_eq!(e["type"], "invalid_prompt");
    assert_eq!(e["message"], "Cannot execute because a node is missing the class_type property.");
    assert_eq!(e["details"], "Node ID '#1'");
    assert_eq!(e["extra_info"], json!({}));

    let mut p = json!({"1": {"inputs": {}, "class_type": "Nope"}});
    let e = validate(&reg, &folders, &mut p).error.unwrap();
    assert_eq!(e["message"], "Cannot execute because node Nope does not exist.");
    assert_eq!(e["node_type"], "Nope");

    let mut p = json!({"5": {"inputs": {"width": 8, "height": 8, "batch_size": 1}, "class_type": "EmptyLatentImage"}});
    let v = validate(&reg, &folders, &mut p);
    assert_eq!(
        v.error_body(),
        json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {},
                         "category": "invalid_input", "node_id": null, "node_type": null}, "node_errors": {}})
    );

    let body = crate::validate::no_prompt_body();
    assert_eq!(body["error"]["type"], "no_prompt");
    assert_eq!(body["error"]["details"], "No prompt provided");
}

#[test]
fn per_input_error_types() {
    let log = Log::default();
    let reg = sd_registry(&log);
    let (_d, folders) = folders_with_model();

    // Missing model file -> value_not_in_list with category missing_model; downstream nodes
    // are invalid without own errors; SaveImage's own errors feed the details.
    let mut p = sd_prompt();
    p["4"]["inputs"]["ckpt_name"] = json!("absent.safetensors");
    p["9"]["inputs"].as_object_mut().unwrap().remove("filename_prefix");
    p["7"]["inputs"]["clip"] = json!(["4", 1, 2]);
    p["5"]["inputs"]["width"] = json!("abc");
    p["3"]["inputs"]["positive"] = json!(["5", 0]);
    p["3"]["inputs"]["cfg"] = json!(200);
    let v = validate(&reg, &folders, &mut p);
    let ne = &v.node_errors;
    let e4 = &ne["4"]["errors"][0];
    assert_eq!(e4["type"], "value_not_in_list");
    assert_eq!(e4["details"], "ckpt_name: 'absent.safetensors' not in ['model.safetensors']");
    assert_eq!(e4["extra_info"]["input_config"], json!([["model.safetensors"], {}]));
    assert_eq!(e4["category"], "missing_model");
    assert_eq!(e4["node_type"], "CheckpointLoaderSimple");
    let e9 = &ne["9"]["errors"][0];
    assert_eq!(e9["type"], "required_input_missing");
    assert_eq!(e9["message"], "Required input is missing");
    assert_eq!(e9["extra_info"], json!({"input_name": "filename_prefix"}));
    let e7 = &ne["7"]["errors"][0];
    assert_eq!(e7["type"], "bad_linked_input");
    assert_eq!(e7["extra_info"]["received_value"], json!(["4", 1, 2]));
    let e5 = &ne["5"]["errors"][0];
    assert_eq!(e5["type"], "invalid_input_type");
    assert_eq!(e5["message"], "Failed to convert an input value to a INT value");
    assert_eq!(e5["details"], "width, abc, invalid literal for int() with base 10: 'abc'");
    let e3: Vec<&Json> = ne["3"]["errors"].as_array().unwrap().iter().collect();
    assert_eq!(e3[0]["type"], "value_bigger_than_max");
    assert_eq!(e3[0]["message"], "Value 200.0 bigger than max of 100.0");
    assert_eq!(e3[1]["type"], "return_type_mismatch");
    assert_eq!(e3[1]["details"], "positive, received_type(LATENT) mismatch input_type(CONDITIONING)");
    assert_eq!(e3[1]["extra_info"]["linked_node"], json!(["5", 0]));
    assert!(!ne.contains_key("8"), "8 is invalid only through its inputs");
    assert_eq!(v.error.as_ref().unwrap()["details"], "Required input is missing: filename_prefix");
    assert_eq!(v.error.as_ref().unwrap()["category"], "missing_model");
    for (_, n) in ne {
        assert_eq!(n["dependent_outputs"], json!(["9"]));
    }

    // A link to an unknown node: exception_during_inner_validation on the linking node's source.
    let mut p = sd_prompt();
    p["8"]["inputs"]["samples"] = json!(["99", 0]);
    let v = validate(&reg, &folders, &mut p);
    let e = &v.node_errors["8"]["errors"][0];
    assert_eq!(e["type"], "exception_during_inner_validation");
    assert_eq!(e["details"], "'99'");
    assert_eq!(e["extra_info"]["exception_type"], "KeyError");
    assert_eq!(e["extra_info"]["linked_node"], json!(["8", 0]));

    // ... and on the output itself: exception_during_validation.
    let mut p = sd_prompt();
    p["9"]["inputs"]["images"] = json!(["8", 5]);
    let v = validate(&reg, &folders, &mut p);
    let e = &v.node_errors["9"]["errors"][0];
    assert_eq!(e["type"], "exception_during_validation");
    assert_eq!(e["details"], "tuple index out of range");
    assert_eq!(e["extra_info"]["exception_type"], "IndexError");
    assert_eq!(v.error.unwrap()["details"], "Exception when validating node: tuple index out of range");
}

#[test]
fn coercion_and_value_unwrapping_rewrite_the_prompt() {
    let log = Log::default();
    let reg = sd_registry(&log);
    let (_d, folders) = folders_with_model();
    let mut p = sd_prompt();
    p["3"]["inputs"]["steps"] = json!("12");
    p["3"]["inputs"]["cfg"] = json!(7);
    p["3"]["inputs"]["denoise"] = json!({"__value__": 0.5});
    p["6"]["inputs"]["text"] = json!(5);
    let v = validate(&reg, &folders, &mut p);
    assert!(v.ok(), "{:?}", v.error_body());
    assert_eq!(v.outputs, ["9"]);
    assert_eq!(p["3"]["inputs"]["steps"], json!(12));
    assert_eq!(p["3"]["inputs"]["cfg"], json!(7.0));
    assert_eq!(p["3"]["inputs"]["denoise"], json!(0.5));
    assert_eq!(p["6"]["inputs"]["text"], json!("5"));
    assert_eq!(p["3"]["_meta"], json!({"title": "KSampler"}));
}

#[test]
fn partial_execution_and_accepted_node_errors() {
    let log = Log::default();
    let reg = sd_registry(&log);
    let (_d, folders) = folders_with_model();
    let mut p = sd_prompt();
    // A second, broken output.
    p["10"] = json!({"inputs": {"images": ["8", 0]}, "class_type": "SaveImage"});
    let v = validate(&reg, &folders, &mut p.clone());
    assert!(v.ok());
    assert_eq!(v.outputs, ["9"]);
    assert_eq!(v.node_errors["10"]["dependent_outputs"], json!(["10"]));
    let v = validate_prompt(&reg, &folders, &mut p.clone(), Some(&json!(["9"])));
    assert!(v.ok() && v.node_errors.is_empty());
    let v = validate_prompt(&reg, &folders, &mut p, Some(&json!(["3"])));
    assert_eq!(v.error.unwrap()["type"], "prompt_no_outputs");
}

// ---------------------------------------------------------------------------------------
// Execution

#[test]
fn default_graph_order_events_and_history() {
    let f = fixture();
    let body =
        json!({"prompt": sd_prompt(), "client_id": "C", "extra_data": {"extra_pnginfo": {"workflow": {"id": "w1"}}}});
    let r = f.engine.submit(body).unwrap();
    assert_eq!(r["number"], json!(0));
    assert_eq!(r["node_errors"], json!({}));
    let id = r["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    let entry = wait_done(&f.engine, &id);
    assert_eq!(f.log.take(), ["4", "5", "7", "6", "3", "8", "9"]);

    // History entry.
    assert_eq!(entry["prompt"][0], json!(0));
    assert_eq!(entry["prompt"][1], json!(id));
    assert_eq!(entry["prompt"][3], json!({"extra_pnginfo": {"workflow": {"id": "w1"}}, "client_id": "C"}));
    assert_eq!(entry["prompt"][4], json!(["9"]));
    assert_eq!(entry["prompt"][2]["3"]["inputs"]["cfg"], json!(8.0));
    assert_eq!(
        entry["outputs"],
        json!({"9": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}})
    );
    assert_eq!(
        entry["meta"],
        json!({"9": {"node_id": "9", "display_node": "9", "parent_node": null, "real_node_id": "9"}})
    );
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    let msgs: Vec<&str> =
        entry["status"]["messages"].as_array().unwrap().iter().map(|m| m[0].as_str().unwrap()).collect();
    assert_eq!(msgs, ["execution_start", "execution_cached", "execution_success"]);
    assert!(entry["status"]["messages"][0][1]["timestamp"].is_i64());
    let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["prompt", "outputs", "status", "meta"]);

    // Websocket sequence (websocket.md §6), previews off.
    let ev = f.events.take();
    let mut expect: Vec<String> =
        vec!["status(1)".into(), "status(1)".into(), "execution_start".into(), "execution_cached".into()];
    for n in ["4", "5", "7", "6"] {
        expect.extend([format!("ps:{n}:running"), format!("executing:{n}"), "ps:-:finished".into()]);
    }
    expect.extend(["ps:3:running".into(), "executing:3".into()]);
    for k in 1..=2 {
        expect.extend(["ps:3:running".to_string(), format!("progress:{k}")]);
    }
    expect.push("ps:-:finished".into());
    expect.extend(["ps:8:running".into(), "executing:8".into(), "ps:-:finished".into()]);
    expect.extend(["ps:9:running".into(), "executing:9".into(), "executed:9".into(), "ps:-:finished".into()]);
    expect.extend(["execution_success".into(), "status(0)".into(), "executing:null".into()]);
    assert_eq!(kinds(&ev), expect);
    for e in &ev {
        if let Event::Json { kind, data, client_id } = e {
            if kind == "status" {
                assert_eq!(client_id, &None);
            } else {
                assert_eq!(client_id.as_deref(), Some("C"), "{kind}");
            }
            if kind == "executed" {
                assert_eq!(
                    data,
                    &json!({"node": "9", "display_node": "9", "output": entry["outputs"]["9"], "prompt_id": id})
                );
            }
            if kind == "progress" {
                assert_eq!(data["node"], "3");
                assert_eq!(data["max"], 2);
                assert_eq!(data["prompt_id"], json!(id));
            }
        }
    }

    // Same prompt again: everything cached, SaveImage replays its UI.
    let id2 = submit(&f.engine, json!({"prompt": sd_prompt(), "client_id": "C"}));
    let entry2 = wait_done(&f.engine, &id2);
    assert!(f.log.take().is_empty());
    assert_eq!(entry2["outputs"], entry["outputs"]);
    let ev = f.events.take();
    assert_eq!(
        kinds(&ev),
        [
            "status(1)",
            "status(1)",
            "execution_start",
            "execution_cached",
            "executed:9",
            "ps:-:finished",
            "execution_success",
            "status(0)",
            "executing:null"
        ]
    );
    let cached = ev.iter().find(|e| e.kind() == "execution_cached").unwrap();
    if let Event::Json { data, .. } = cached {
        assert_eq!(data["nodes"], json!(["3", "4", "5", "6", "7", "8", "9"]));
    }

    // Changing a constant re-runs only what is downstream of it.
    let mut p = sd_prompt();
    p["6"]["inputs"]["text"] = json!("a dog");
    let id3 = submit(&f.engine, json!({"prompt": p}));
    wait_done(&f.engine, &id3);
    assert_eq!(f.log.take(), ["6", "3", "8", "9"]);
    // Without a client id only status (and progress, broadcast) messages go out.
    let ev = f.events.take();
    assert!(ev.iter().all(|e| matches!(e.kind(), "status" | "progress" | "progress_state")), "{:?}", kinds(&ev));
    assert!(ev.iter().all(|e| matches!(e, Event::Json { client_id: None, .. })));
}

#[test]
fn cache_ignores_node_ids_and_free_memory_clears_it() {
    let f = fixture();
    let id = submit(&f.engine, json!({"prompt": sd_prompt()}));
    wait_done(&f.engine, &id);
    f.log.take();
    // Rename every node: same signatures, everything cached.
    let text = sd_prompt().to_string();
    let mut renamed = text.clone();
    for n in ["3", "4", "5", "6", "7", "8", "9"] {
        renamed = renamed.replace(&format!("\"{n}\""), &format!("\"1{n}\""));
    }
    let id = submit(&f.engine, json!({"prompt": serde_json::from_str::<Json>(&renamed).unwrap()}));
    wait_done(&f.engine, &id);
    assert!(f.log.take().is_empty());
    f.engine.free(true, true);
    let id = submit(&f.engine, json!({"prompt": sd_prompt()}));
    wait_done(&f.engine, &id);
    assert_eq!(f.log.take().len(), 7);
}

fn list_registry(log: &Log) -> NodeRegistry {
    let mut r = NodeRegistry::new();
    let mut maker =
        NodeSchema::new("MakeList", "test").required("count", "INT", json!({"default": 3, "min": 0})).output("INT");
    maker.outputs[0].is_list = true;
    r.register(TestNode {
        schema: maker,
        log: log.clone(),
        run: |i, _| {
            let n = i.i64("count")?;
            Ok(Outputs::new(vec![Value::List((1..=n).map(|k| Value::Json(json!(k))).collect())]))
        },
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Double", "test").required("x", "INT", json!({})).output("INT"),
        log: log.clone(),
        run: |i, _| Ok(Outputs::new(vec![Value::Json(json!(i.i64("x")? * 2))])),
        fingerprint: None,
    });
    let mut sum = NodeSchema::new("Sum", "test").required("xs", "INT", json!({})).output("INT");
    sum.is_input_list = true;
    r.register(TestNode {
        schema: sum,
        log: log.clone(),
        run: |i, _| {
            let s: i64 = i.list("xs").iter().filter_map(Value::as_i64).sum();
            Ok(Outputs::new(vec![Value::Json(json!(s))]))
        },
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Show", "test").required("value", "*", json!({})).output_node(),
        log: log.clone(),
        run: |i, _| {
            let mut ui = Map::new();
            ui.insert("text".into(), json!([i.get("value").and_then(Value::as_json).cloned().unwrap_or(Json::Null)]));
            Ok(Outputs::default().with_ui(ui))
        },
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Fail", "test").required("x", "INT", json!({})).output("INT"),
        log: log.clone(),
        run: |_, _| Err(NodeError::missing_model("model file is gone")),
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Panic", "test").required("x", "INT", json!({})).output("INT"),
        log: log.clone(),
        run: |_, _| panic!("shape mismatch"),
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Slow", "test").required("ms", "INT", json!({})).output("INT"),
        log: log.clone(),
        run: |i, ctx| {
            let end = Instant::now() + Duration::from_millis(i.u64("ms")?);
            while Instant::now() < end {
                ctx.cancel.check()?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(Outputs::new(vec![Value::Json(json!(1))]))
        },
        fingerprint: None,
    });
    r.register(TestNode {
        schema: NodeSchema::new("Changing", "test").required("seed", "INT", json!({})).output("INT"),
        log: log.clone(),
        run: |_, _| Ok(Outputs::new(vec![Value::Json(json!(7))])),
        fingerprint: Some(|i| format!("fp-{}", i.i64("seed").unwrap_or(-1))),
    });
    r
}

#[test]
fn list_mapping() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let p = json!({
        "1": {"class_type": "MakeList", "inputs": {"count": 3}},
        "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Sum", "inputs": {"xs": ["2", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}}
    });
    let id = submit(&f.engine, json!({"prompt": p}));
    let e = wait_done(&f.engine, &id);
    assert_eq!(e["outputs"]["3"], json!({"text": [2, 4, 6]}));
    assert_eq!(e["outputs"]["5"], json!({"text": [12]}));
    let log = f.log.take();
    assert_eq!(log.iter().filter(|n| *n == "2").count(), 3, "Double is called once per item");
    assert_eq!(log.iter().filter(|n| *n == "4").count(), 1, "Sum gets the whole list");
}

#[test]
fn node_error_then_next_prompt_runs() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let bad = json!({
        "1": {"class_type": "MakeList", "inputs": {"count": 1}},
        "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}
    });
    let good = json!({"1": {"class_type": "MakeList", "inputs": {"count": 2}}, "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let id1 = submit(&f.engine, json!({"prompt": bad, "client_id": "C"}));
    let id2 = submit(&f.engine, json!({"prompt": good}));
    let e1 = wait_done(&f.engine, &id1);
    let e2 = wait_done(&f.engine, &id2);
    assert_eq!(e1["status"]["status_str"], "error");
    assert_eq!(e1["status"]["completed"], false);
    assert_eq!(e1["outputs"], json!({}));
    let err = &e1["status"]["messages"][2];
    assert_eq!(err[0], "execution_error");
    let d = &err[1];
    assert_eq!(d["node_id"], "2");
    assert_eq!(d["node_type"], "Fail");
    assert_eq!(d["executed"], json!(["1"]));
    assert_eq!(d["exception_message"], "model file is gone\n");
    assert_eq!(d["exception_type"], "FileNotFoundError");
    assert_eq!(d["current_inputs"], json!({"x": [1]}));
    assert_eq!(d["category"], "missing_model");
    assert!(d["traceback"].as_array().is_some_and(|t| !t.is_empty()));
    let mut outs: Vec<String> =
        d["current_outputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    outs.sort();
    assert_eq!(outs, ["1", "2", "3"]);
    let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
    assert_eq!(
        keys[..9],
        [
            "prompt_id",
            "node_id",
            "node_type",
            "executed",
            "exception_message",
            "exception_type",
            "traceback",
            "current_inputs",
            "current_outputs"
        ]
    );
    assert_eq!(e2["status"]["status_str"], "success");
    assert_eq!(e2["outputs"]["3"], json!({"text": [1, 2]}));
    // The error went to the client; it is followed by status and `executing null`.
    let k = kinds(&f.events.take());
    let i = k.iter().position(|x| x == "execution_error").unwrap();
    assert!(k[i + 1].starts_with("status("), "{k:?}");
    assert_eq!(k[i + 2], "executing:null");
}

#[test]
fn interrupt_running_prompt_only() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let slow = json!({"1": {"class_type": "Slow", "inputs": {"ms": 5000}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let quick = json!({"1": {"class_type": "MakeList", "inputs": {"count": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    // An interrupt while idle has no effect on later prompts.
    f.engine.interrupt(None);
    let id1 = submit(&f.engine, json!({"prompt": slow}));
    let id2 = submit(&f.engine, json!({"prompt": quick}));
    while f.log.0.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    f.engine.interrupt(Some(&id2)); // not running: ignored
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(f.engine.queue_remaining(), 2);
    let t0 = Instant::now();
    f.engine.interrupt(Some(&id1));
    let e1 = wait_done(&f.engine, &id1);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(e1["status"]["status_str"], "error");
    let last = &e1["status"]["messages"][2];
    assert_eq!(last[0], "execution_interrupted");
    assert_eq!(last[1]["node_id"], "1");
    assert_eq!(last[1]["node_type"], "Slow");
    assert_eq!(last[1]["executed"], json!([]));
    let e2 = wait_done(&f.engine, &id2);
    assert_eq!(e2["status"]["status_str"], "success");
    // Interrupted is broadcast even without a client id.
    assert!(f
        .events
        .take()
        .iter()
        .any(|e| matches!(e, Event::Json { kind, client_id: None, .. } if kind == "execution_interrupted")));
}

#[test]
fn timeout_is_reported_with_category() {
    let config = EngineConfig { max_execution_time: Some(Duration::from_secs(30)), ..EngineConfig::default() };
    let f = fixture_with(list_registry, config);
    let slow = json!({"1": {"class_type": "Slow", "inputs": {"ms": 10000}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let t0 = Instant::now();
    let id = submit(&f.engine, json!({"prompt": slow, "extra_data": {"timeout": 0.1}}));
    let e = wait_done(&f.engine, &id);
    assert!(t0.elapsed() < Duration::from_secs(3));
    let last = &e["status"]["messages"][2];
    assert_eq!(last[0], "execution_error");
    assert_eq!(last[1]["category"], "timeout");
    assert_eq!(last[1]["exception_type"], "TimeoutError");
}

#[test]
fn queue_full_order_and_queue_ops() {
    let config = EngineConfig { max_queue_size: Some(2), ..EngineConfig::default() };
    let f = fixture_with(list_registry, config);
    let slow = json!({"1": {"class_type": "Slow", "inputs": {"ms": 3000}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let quick = json!({"1": {"class_type": "MakeList", "inputs": {"count": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let id1 = submit(&f.engine, json!({"prompt": slow, "prompt_id": "slow"}));
    assert_eq!(id1, "slow");
    wait_running(&f.engine);
    let r = f.engine.submit(json!({"prompt": quick, "number": 5})).unwrap();
    assert_eq!(r["number"], json!(5.0));
    match f.engine.submit(json!({"prompt": quick})) {
        Err(SubmitError::QueueFull(b)) => {
            assert_eq!(b["error"]["type"], "queue_full");
            assert_eq!(b["error"]["category"], "queue_full");
            assert_eq!(b["node_errors"], json!({}));
        }
        other => panic!("expected queue full, got {other:?}"),
    }
    assert_eq!(f.engine.queue_remaining(), 2);
    let q = f.engine.queue_json();
    assert_eq!(q["queue_running"].as_array().unwrap().len() + q["queue_pending"].as_array().unwrap().len(), 2);
    let pid = r["prompt_id"].as_str().unwrap().to_string();
    f.engine.queue_delete(std::slice::from_ref(&pid));
    assert_eq!(f.engine.queue_remaining(), 1);
    // front / explicit numbers order the pending queue.
    let a = submit(&f.engine, json!({"prompt": quick}));
    f.engine.queue_clear();
    assert!(f.engine.queue_json()["queue_pending"].as_array().unwrap().is_empty());
    assert_eq!(f.engine.history_item(&a), json!({}));
    f.engine.interrupt(None);
    wait_done(&f.engine, "slow");
    // Jobs API.
    let jobs = f.engine.jobs_json(&JobsQuery::default());
    assert_eq!(jobs["pagination"]["total"], 1);
    assert_eq!(jobs["jobs"][0]["status"], "failed");
    let job = f.engine.job_json("slow").unwrap();
    assert!(job["workflow"]["prompt"].is_object());
    assert!(f.engine.job_json("nope").is_none());
}

#[test]
fn pending_order_by_number_and_front() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let slow = json!({"1": {"class_type": "Slow", "inputs": {"ms": 300}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let quick = |n: i64| json!({"1": {"class_type": "MakeList", "inputs": {"count": n}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let s = submit(&f.engine, json!({"prompt": slow}));
    wait_running(&f.engine);
    let a = f.engine.submit(json!({"prompt": quick(1)})).unwrap();
    let b = f.engine.submit(json!({"prompt": quick(2), "front": true})).unwrap();
    assert_eq!(a["number"], json!(1));
    assert_eq!(b["number"], json!(-2));
    let pending: Vec<Json> =
        f.engine.queue_json()["queue_pending"].as_array().unwrap().iter().map(|i| i[1].clone()).collect();
    assert_eq!(pending, [b["prompt_id"].clone(), a["prompt_id"].clone()]);
    wait_done(&f.engine, a["prompt_id"].as_str().unwrap());
    let h = f.engine.history_json_at(None, -1);
    let order: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(
        order,
        [
            &s,
            b["prompt_id"].as_str().map(String::from).as_ref().unwrap(),
            a["prompt_id"].as_str().map(String::from).as_ref().unwrap()
        ]
    );
}

#[test]
fn history_cap_and_sensitive_keys() {
    let config = EngineConfig { max_history: 2, ..EngineConfig::default() };
    let f = fixture_with(list_registry, config);
    let quick = |n: i64| json!({"1": {"class_type": "MakeList", "inputs": {"count": n}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(submit(&f.engine, json!({"prompt": quick(n), "extra_data": {"api_key_comfy_org": "secret"}})));
    }
    wait_done(&f.engine, ids.last().unwrap());
    let h = f.engine.history_json(None, 0);
    let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(keys, ids[2..].iter().collect::<Vec<_>>(), "ComfyUI keeps max + 1 entries");
    assert!(!h.to_string().contains("secret"));
    f.engine.history_delete(&[ids[3].clone()]);
    assert_eq!(f.engine.history_json(None, 0).as_object().unwrap().len(), 2);
    f.engine.history_clear();
    assert_eq!(f.engine.history_json(None, 0), json!({}));
}

#[test]
fn fingerprint_is_written_into_prompt_and_drives_cache() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let p = |seed: i64| json!({"1": {"class_type": "Changing", "inputs": {"seed": seed}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let id = submit(&f.engine, json!({"prompt": p(1)}));
    wait_done(&f.engine, &id);
    assert_eq!(f.log.take(), ["1", "2"]);
    let id = submit(&f.engine, json!({"prompt": p(1)}));
    let e = wait_done(&f.engine, &id);
    assert!(f.log.take().is_empty());
    // History keeps the prompt as queued (without the added `is_changed`).
    assert!(e["prompt"][2]["1"].get("is_changed").is_none());
    let id = submit(&f.engine, json!({"prompt": p(2)}));
    wait_done(&f.engine, &id);
    assert_eq!(f.log.take(), ["1", "2"]);
}

#[test]
fn previews_are_sent_with_metadata_when_enabled() {
    let config = EngineConfig { preview_method: crate::PreviewMethod::Auto, ..EngineConfig::default() };
    let f = fixture_with(sd_registry, config);
    let id = submit(&f.engine, json!({"prompt": sd_prompt(), "client_id": "C"}));
    wait_done(&f.engine, &id);
    let ev = f.events.take();
    let k = kinds(&ev);
    let i = k.iter().position(|x| x == "bin4").expect("a preview");
    assert_eq!(k[i - 1], "ps:3:running");
    assert_eq!(k[i + 1], "progress:1");
    let Event::Binary { payload, client_id, .. } = &ev[i] else { unreachable!() };
    assert_eq!(client_id.as_deref(), Some("C"));
    let len = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
    let meta: Json = serde_json::from_slice(&payload[4..4 + len]).unwrap();
    assert_eq!(meta["node_id"], "3");
    assert_eq!(meta["image_type"], "image/jpeg");
    assert_eq!(&payload[4 + len..], &[0xff, 0xd8, 0]);
    // A prompt can turn previews off.
    let mut p = sd_prompt();
    p["3"]["inputs"]["seed"] = json!(1);
    let id = submit(&f.engine, json!({"prompt": p, "extra_data": {"preview_method": "none"}}));
    wait_done(&f.engine, &id);
    assert_eq!(f.log.take(), ["4", "5", "7", "6", "3", "8", "9", "3", "8", "9"]);
    assert!(!f.events.take().iter().any(|e| matches!(e, Event::Binary { .. })));
}

/// A LoadImage-like node (input-file combo) and a node with its own validator.
fn validator_registry(log: &Log) -> NodeRegistry {
    struct Custom;
    impl Node for Custom {
        fn schema(&self) -> NodeSchema {
            NodeSchema::new("Custom", "test")
                .required("a", "INT", json!({"min": 10}))
                .required("b", "STRING", json!({}))
                .output_node()
        }
        fn execute(&self, _inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
            Ok(Outputs::default())
        }
        fn custom_validated_inputs(&self) -> &'static [&'static str] {
            &["a"]
        }
        fn validate_inputs(&self, inputs: &Inputs, _folders: &Folders) -> Result<(), Option<String>> {
            match inputs.i64("a") {
                Ok(5) => Ok(()),
                Ok(7) => Err(None),
                _ => Err(Some("a must be 5".into())),
            }
        }
    }
    let mut r = list_registry(log);
    r.register(Custom);
    r.register(TestNode {
        schema: NodeSchema::new("LoadImage", "image")
            .push_input(Section::Required, "image", InputType::InputImages, json!({"image_upload": true}))
            .output("IMAGE")
            .output_node(),
        log: log.clone(),
        run: |_, _| objects(1),
        fingerprint: None,
    });
    r
}

#[test]
fn custom_validators_and_input_files() {
    let log = Log::default();
    let reg = validator_registry(&log);
    let (dir, folders) = folders_with_model();
    std::fs::create_dir_all(dir.path().join("input/pasted")).unwrap();
    std::fs::write(dir.path().join("input/pasted/x.png"), b"png").unwrap();

    // The validator takes `a`: no min check; 5 passes.
    let mut p = json!({"1": {"class_type": "Custom", "inputs": {"a": 5, "b": "s"}}});
    assert!(validate(&reg, &folders, &mut p).ok());
    let mut p = json!({"1": {"class_type": "Custom", "inputs": {"a": 7, "b": "s"}}});
    let v = validate(&reg, &folders, &mut p);
    let e = &v.node_errors["1"]["errors"];
    assert_eq!(e[0]["type"], "custom_validation_failed");
    assert_eq!(e[0]["message"], "Custom validation failed for node");
    assert_eq!(e[0]["details"], "a");
    assert_eq!(e[0]["extra_info"], json!({"input_name": "a"}));
    let mut p = json!({"1": {"class_type": "Custom", "inputs": {"a": 1, "b": "s"}}});
    let v = validate(&reg, &folders, &mut p);
    assert_eq!(v.node_errors["1"]["errors"][0]["details"], "a - a must be 5");
    assert_eq!(v.node_errors["1"]["errors"].as_array().unwrap().len(), 1);

    // Input files: existence replaces the choice check (subfolders allowed).
    let mut p = json!({"1": {"class_type": "LoadImage", "inputs": {"image": "pasted/x.png"}}});
    assert!(validate(&reg, &folders, &mut p).ok());
    let mut p = json!({"1": {"class_type": "LoadImage", "inputs": {"image": "foo.png"}}});
    let v = validate(&reg, &folders, &mut p);
    assert_eq!(v.node_errors["1"]["errors"][0]["details"], "image - Invalid image file: foo.png");
    assert_eq!(v.error.unwrap()["details"], "Custom validation failed for node: image - Invalid image file: foo.png");
}

#[test]
fn link_types_and_cycles() {
    use crate::validate::types_compatible;
    assert!(types_compatible("INT", "FLOAT,INT"));
    assert!(types_compatible("IMAGE", "*"));
    assert!(types_compatible("*", "LATENT"));
    assert!(!types_compatible("IMAGE", "MASK"));

    let log = Log::default();
    let reg = list_registry(&log);
    let (_d, folders) = folders_with_model();
    // Show takes "*": anything links into it.
    let mut p = json!({"1": {"class_type": "MakeList", "inputs": {"count": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    assert!(validate(&reg, &folders, &mut p).ok());
    // A cycle fails validation instead of recursing forever.
    let mut p = json!({
        "1": {"class_type": "Double", "inputs": {"x": ["2", 0]}},
        "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}
    });
    let v = validate(&reg, &folders, &mut p);
    assert_eq!(v.error.unwrap()["type"], "prompt_outputs_failed_validation");
}

#[test]
fn a_panicking_node_is_an_execution_error() {
    let f = fixture_with(list_registry, EngineConfig::default());
    let p = json!({"1": {"class_type": "Panic", "inputs": {"x": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let id = submit(&f.engine, json!({"prompt": p}));
    let e = wait_done(&f.engine, &id);
    let err = &e["status"]["messages"][2][1];
    assert_eq!(err["exception_message"], "panic in node: shape mismatch\n");
    assert_eq!(err["category"], "internal");
    // The worker is still alive.
    let q = json!({"1": {"class_type": "MakeList", "inputs": {"count": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}});
    let id = submit(&f.engine, json!({"prompt": q}));
    assert_eq!(wait_done(&f.engine, &id)["status"]["status_str"], "success");
}
