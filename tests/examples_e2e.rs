//! Every `examples/*.json` end to end against the real binary: tiny SD1.5 and SDXL recipe
//! checkpoints, the examples shrunk to them (checkpoint names, sizes ÷16, 2 steps), submitted
//! over HTTP while `/ws` is followed. Checks per example: the event sequence, the history
//! entry, every PNG through `/view` (size, `prompt`/`workflow` tEXt chunks); an identical
//! resubmission is fully cached; a seed change re-runs only the sampler and what follows;
//! an interrupt mid-sampling ends the prompt and the next one runs. A second test covers the
//! model lists of `/object_info` (refreshed as files come and go) and VAE files in `models/vae`.

mod examples_support;
mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use examples_support::*;
use serde_json::{json, Value as Json};
use server_support::ws::{connect, next_json, next_message, until_done, Ws};
use server_support::Server;

const CLIENT: &str = "examples-e2e-client";

/// `POST /prompt` with our client id and a `workflow` in `extra_pnginfo`; returns the id.
fn submit(s: &Server, prompt: &Json, workflow: &Json) -> String {
    let body = json!({"prompt": prompt, "client_id": CLIENT,
                      "extra_data": {"extra_pnginfo": {"workflow": workflow}}});
    let r = s.post_json("/prompt", &body);
    assert_eq!(r.status, 200, "POST /prompt: {}", r.text());
    let v = r.json();
    assert_eq!(v["node_errors"], json!({}), "{v}");
    v["prompt_id"].as_str().expect("prompt_id").to_string()
}

fn class_of<'a>(prompt: &'a Json, id: &str) -> &'a str {
    prompt[id]["class_type"].as_str().unwrap_or_default()
}

/// What one finished run looked like on `/ws`.
#[derive(Debug)]
struct Run {
    id: String,
    cached: Vec<String>,
    executing: Vec<String>,
    /// `executed` events: node → output.
    executed: BTreeMap<String, Json>,
    /// The final execution event (`execution_success` / `_error` / `_interrupted`).
    end: Json,
}

const EXEC_KINDS: &[&str] = &[
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
];

/// Checks the shape of one prompt's event sequence and summarises it.
fn check_events(label: &str, prompt: &Json, id: &str, msgs: &[Json]) -> Run {
    let ev: Vec<&Json> = msgs.iter().filter(|m| EXEC_KINDS.contains(&m["type"].as_str().unwrap_or(""))).collect();
    let kinds: Vec<&str> = ev.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(ev.len() >= 4, "{label}: too few events {kinds:?}");
    assert_eq!(kinds[0], "execution_start", "{label}: {kinds:?}");
    assert_eq!(kinds[1], "execution_cached", "{label}: {kinds:?}");
    for m in [ev[0], ev[1]] {
        assert!(m["data"]["timestamp"].is_u64(), "{label}: timestamp of {m}");
    }
    let last = ev[ev.len() - 1];
    assert_eq!(last["data"], json!({"node": null, "prompt_id": id}), "{label}: last event");
    let end = ev[ev.len() - 2];
    assert!(
        ["execution_success", "execution_error", "execution_interrupted"].contains(&end["type"].as_str().unwrap()),
        "{label}: second-to-last event {end}"
    );
    let all: BTreeSet<String> = prompt.as_object().unwrap().keys().cloned().collect();
    let cached: Vec<String> =
        ev[1]["data"]["nodes"].as_array().expect("cached nodes").iter().map(|n| n.as_str().unwrap().to_string()).collect();
    for n in &cached {
        assert!(all.contains(n), "{label}: cached {n} is no node of the prompt");
    }
    let mut executing = Vec::new();
    // Nodes found in the cache only when their turn came (an identical node ran earlier in
    // this prompt): ComfyUI sends `executed` with their cached UI output instead of `executing`.
    let mut hits = Vec::new();
    let mut executed = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut progress: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for m in &ev[2..ev.len() - 2] {
        let d = &m["data"];
        assert_eq!(d["prompt_id"], json!(id), "{label}: {m}");
        match m["type"].as_str().unwrap() {
            "executing" => {
                let node = d["node"].as_str().unwrap_or_else(|| panic!("{label}: executing null before the end"));
                assert_eq!(d["display_node"], json!(node), "{label}: {m}");
                assert!(all.contains(node), "{label}: executing unknown node {node}");
                assert!(!cached.contains(&node.to_string()), "{label}: cached node {node} executed");
                assert!(!executing.contains(&node.to_string()), "{label}: {node} executed twice");
                executing.push(node.to_string());
                current = Some(node.to_string());
            }
            "progress" => {
                let node = d["node"].as_str().expect("progress.node");
                assert_eq!(current.as_deref(), Some(node), "{label}: progress of a node that is not running: {m}");
                let (v, max) = (d["value"].as_u64().expect("value"), d["max"].as_u64().expect("max"));
                assert!(v <= max, "{label}: {m}");
                progress.entry(node.to_string()).or_default().push((v, max));
            }
            "executed" => {
                let node = d["node"].as_str().expect("executed.node");
                assert_eq!(d["display_node"], json!(node), "{label}: {m}");
                if !cached.contains(&node.to_string()) && current.as_deref() != Some(node) {
                    // A cache hit mid-run: only for a node identical to one that already ran.
                    let twin = executing.iter().any(|e: &String| {
                        prompt[e]["class_type"] == prompt[node]["class_type"] && prompt[e]["inputs"] == prompt[node]["inputs"]
                    });
                    assert!(twin, "{label}: executed {node} neither cached, running nor a twin of a node that ran");
                    assert!(!executing.contains(&node.to_string()), "{label}: {node} ran and was a cache hit");
                    hits.push(node.to_string());
                    current = None;
                }
                assert!(executed.insert(node.to_string(), d["output"].clone()).is_none(), "{label}: executed {node} twice");
            }
            other => panic!("{label}: unexpected {other} mid-run: {kinds:?}"),
        }
    }
    if end["type"] == "execution_success" {
        // Every node ran or came from the cache; every sampler reported each of its steps.
        let ran: BTreeSet<String> = cached.iter().chain(&executing).chain(&hits).cloned().collect();
        assert_eq!(ran, all, "{label}: cached ∪ executing ∪ mid-run cache hits");
        assert_eq!(cached.len() + executing.len() + hits.len(), all.len(), "{label}: each node once");
        for n in &executing {
            if class_of(prompt, n).starts_with("KSampler") {
                let want: Vec<(u64, u64)> = (1..=STEPS as u64).map(|v| (v, STEPS as u64)).collect();
                assert_eq!(progress.get(n), Some(&want), "{label}: progress of sampler {n}");
            }
        }
        // Output nodes report their images (also when reused from the cache).
        for n in &all {
            if class_of(prompt, n) == "SaveImage" {
                assert!(executed.contains_key(n), "{label}: no executed for SaveImage {n}");
            }
        }
    }
    Run { id: id.to_string(), cached, executing, executed, end: end.clone() }
}

async fn run_prompt(s: &Server, ws: &mut Ws, label: &str, prompt: &Json, workflow: &Json) -> Run {
    let id = submit(s, prompt, workflow);
    let msgs = until_done(ws, &id, true).await;
    check_events(label, prompt, &id, &msgs)
}

/// The images of a SaveImage output: `(filename, subfolder, type)`.
fn images(output: &Json) -> Vec<(String, String, String)> {
    output["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["filename"].as_str().unwrap().to_string(),
                i["subfolder"].as_str().unwrap().to_string(),
                i["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks the history entry of a successful run against its events.
fn check_history(s: &Server, label: &str, run: &Run, prompt: &Json) -> Json {
    let h = s.wait_history(&run.id);
    assert_eq!(h["status"]["status_str"], "success", "{label}: {}", h["status"]);
    assert_eq!(h["status"]["completed"], true, "{label}");
    let names: Vec<&str> = h["status"]["messages"].as_array().unwrap().iter().map(|m| m[0].as_str().unwrap()).collect();
    assert_eq!(names, ["execution_start", "execution_cached", "execution_success"], "{label}");
    assert_eq!(h["status"]["messages"][1][1]["nodes"], json!(run.cached), "{label}: cached list in history");
    assert_eq!(h["prompt"][1], json!(run.id), "{label}");
    assert_eq!(&h["prompt"][2], prompt, "{label}: the prompt in history");
    for (node, out) in &run.executed {
        assert_eq!(&h["outputs"][node], out, "{label}: history output of {node}");
        if !out.is_null() {
            assert_eq!(h["meta"][node]["node_id"], json!(node), "{label}");
        }
    }
    for node in h["outputs"].as_object().unwrap().keys() {
        assert!(run.executed.contains_key(node), "{label}: history output of {node} was never reported");
    }
    h
}

/// Fetches every image of the SaveImage outputs through `/view` and checks it.
fn check_pngs(s: &Server, label: &str, run: &Run, prompt: &Json, workflow: &Json, want: (u32, u32, usize)) {
    let (w, h, n) = want;
    let saves: Vec<&String> = run.executed.keys().filter(|k| class_of(prompt, k) == "SaveImage").collect();
    assert_eq!(saves.len(), 1, "{label}: one SaveImage output");
    let imgs = images(&run.executed[saves[0]]);
    assert_eq!(imgs.len(), n, "{label}: number of images");
    for (file, sub, ty) in imgs {
        assert_eq!(ty, "output", "{label}");
        assert_eq!(sub, "comfy-rs", "{label}: the examples save under output/comfy-rs/");
        let r = s.get(&format!("/view?filename={file}&subfolder={sub}&type=output"));
        assert_eq!(r.status, 200, "{label}: /view {file}");
        assert_eq!(r.header("content-type"), Some("image/png"), "{label}");
        assert_eq!(std::fs::read(s.path("output").join(&sub).join(&file)).unwrap(), r.body, "{label}: file on disk");
        let info = png_info(&r.body);
        assert_eq!((info.width, info.height), (w, h), "{label}: {file} size");
        let mut p: Json = serde_json::from_str(info.text.get("prompt").expect("prompt chunk")).expect("prompt JSON");
        // ComfyUI records the IS_CHANGED result of nodes that have one (LoadImage: the
        // file's sha256) in the prompt those nodes see (execution.md §6.2).
        for (id, node) in p.as_object_mut().unwrap() {
            let changed = node.as_object_mut().unwrap().remove("is_changed");
            if class_of(prompt, id) == "LoadImage" {
                let c = changed.unwrap_or_else(|| panic!("{label}: LoadImage {id} without is_changed"));
                assert!(c[0].as_str().is_some_and(|h| h.len() == 64), "{label}: is_changed {c}");
            } else {
                assert_eq!(changed, None, "{label}: is_changed on {id}");
            }
        }
        assert_eq!(&p, prompt, "{label}: {file} prompt chunk");
        let wf: Json = serde_json::from_str(info.text.get("workflow").expect("workflow chunk")).expect("workflow JSON");
        assert_eq!(&wf, workflow, "{label}: {file} workflow chunk");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_over_http() {
    let t0 = Instant::now();
    let base = tempfile::tempdir().unwrap();
    prepare_base(base.path(), false);
    eprintln!("checkpoints written in {:.1}s", t0.elapsed().as_secs_f64());
    let s = Server::start_in(base, &["--cpu"]);
    let mut ws = connect(&s, &format!("/ws?clientId={CLIENT}")).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["data"]["sid"], CLIENT);

    let oi = s.get("/object_info/CheckpointLoaderSimple").json();
    assert_eq!(oi["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0], json!([TINY_SD15, TINY_SDXL]));

    // The input image of img2img / inpaint, uploaded as the editor does.
    let r = s.post_multipart("/upload/image", &[("image", Some(INPUT_IMAGE), &input_png())]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"name": INPUT_IMAGE, "subfolder": "", "type": "input"}));

    for (name, prompt, want) in tiny_examples() {
        let t = Instant::now();
        let workflow = json!({"example": name, "nodes": [], "links": [], "version": 0.4});
        let run = run_prompt(&s, &mut ws, &name, &prompt, &workflow).await;
        assert_eq!(run.end["type"], "execution_success", "{name}: {}", run.end);
        // Every sampler and everything after it ran (nothing upstream of a sampler with new
        // settings can satisfy it from the cache).
        for (id, _) in prompt.as_object().unwrap() {
            if ["KSampler", "SaveImage", "VAEDecode"].contains(&class_of(&prompt, id)) {
                assert!(run.executing.contains(id), "{name}: {id} did not run");
            }
        }
        check_history(&s, &name, &run, &prompt);
        check_pngs(&s, &name, &run, &prompt, &workflow, want);
        eprintln!("{name}: {:.1}s ({} cached, {} ran)", t.elapsed().as_secs_f64(), run.cached.len(), run.executing.len());

        // The identical prompt again: everything cached, nothing executes, same images.
        let again = run_prompt(&s, &mut ws, &format!("{name} (again)"), &prompt, &workflow).await;
        assert_eq!(again.end["type"], "execution_success", "{name}");
        assert!(again.executing.is_empty(), "{name}: re-ran {:?}", again.executing);
        let all: BTreeSet<String> = prompt.as_object().unwrap().keys().cloned().collect();
        assert_eq!(again.cached.iter().cloned().collect::<BTreeSet<_>>(), all, "{name}: all cached");
        let ui = |r: &Run| r.executed.iter().filter(|(_, o)| !o.is_null()).map(|(k, o)| (k.clone(), o.clone())).collect::<Vec<_>>();
        assert_eq!(ui(&again), ui(&run), "{name}: cached outputs report the same images");
        check_history(&s, &name, &again, &prompt);

        if name == "basic_text_to_image.json" {
            // A new seed: only the sampler and what follows run; the text encodings, the
            // checkpoint and the empty latent come from the cache.
            let mut p = prompt.clone();
            p["3"]["inputs"]["seed"] = json!(43);
            let r = run_prompt(&s, &mut ws, "seed change", &p, &workflow).await;
            assert_eq!(r.end["type"], "execution_success");
            assert_eq!(r.executing, ["3", "8", "9"], "seed change re-runs KSampler, VAEDecode, SaveImage");
            assert_eq!(r.cached.iter().cloned().collect::<BTreeSet<_>>(), BTreeSet::from(["4", "5", "6", "7"].map(String::from)));
            let h = check_history(&s, "seed change", &r, &p);
            assert_ne!(images(&h["outputs"]["9"]), images(&run.executed["9"]), "a new file");
            check_pngs(&s, "seed change", &r, &p, &workflow, want);
        }
    }

    // Interrupt mid-sampling: many steps, interrupt after the first step's progress.
    let (_, basic, _) = tiny_examples().into_iter().find(|(n, _, _)| n == "basic_text_to_image.json").unwrap();
    let mut long = basic.clone();
    long["3"]["inputs"]["steps"] = json!(5000);
    long["3"]["inputs"]["seed"] = json!(7);
    let id = submit(&s, &long, &json!({}));
    let mut seen = Vec::new();
    loop {
        let m = next_json(&mut ws).await;
        if m["data"]["prompt_id"] != json!(id) {
            continue;
        }
        let first_step = m["type"] == "progress" && m["data"]["node"] == "3";
        seen.push(m);
        if first_step {
            break;
        }
    }
    let t_int = Instant::now();
    assert_eq!(s.post_json("/interrupt", &json!({})).status, 200);
    seen.extend(until_done(&mut ws, &id, true).await);
    let stopped_in = t_int.elapsed();
    let run = check_events("interrupt", &long, &id, &seen);
    assert_eq!(run.end["type"], "execution_interrupted", "{}", run.end);
    assert_eq!(run.end["data"]["node_id"], "3");
    assert_eq!(run.end["data"]["node_type"], "KSampler");
    assert!(run.end["data"]["executed"].is_array());
    let steps = seen.iter().filter(|m| m["type"] == "progress").count();
    assert!(steps < 50, "stopped after {steps} of 5000 steps");
    assert!(stopped_in < Duration::from_secs(20), "interrupt took {stopped_in:?}");
    assert!(!run.executing.contains(&"8".to_string()), "nothing after the sampler ran");
    let h = s.wait_history(&id);
    assert_eq!(h["status"]["status_str"], "error");
    assert_eq!(h["status"]["messages"].as_array().unwrap().last().unwrap()[0], "execution_interrupted");
    // The server goes on with the next prompt.
    let mut next = basic.clone();
    next["3"]["inputs"]["seed"] = json!(8);
    let r = run_prompt(&s, &mut ws, "after interrupt", &next, &json!({"after": "interrupt"})).await;
    assert_eq!(r.end["type"], "execution_success", "{}", r.end);
    assert!(r.executing.contains(&"3".to_string()));
    eprintln!("every_example_runs_over_http: {:.1}s", t0.elapsed().as_secs_f64());
}

/// Writes the `first_stage_model.*` tensors of a checkpoint as a standalone VAE file with
/// bare keys (`encoder.conv_in.weight`, ...), the layout of a downloaded VAE such as
/// `sdxl_vae.safetensors`.
fn write_bare_vae(checkpoint: &Path, out: &Path) {
    use comfy_diffusion::checkpoint::{Checkpoint, StoredDtype};
    let ck = Checkpoint::open(checkpoint).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut names: Vec<&str> = ck.names_with_prefix("first_stage_model.").collect();
    names.sort();
    for name in names {
        let (info, bytes) = ck.raw(name).unwrap();
        let dtype = match info.dtype {
            StoredDtype::F16 => "F16",
            StoredDtype::F32 => "F32",
            StoredDtype::BF16 => "BF16",
            other => panic!("unexpected dtype {other:?}"),
        };
        let key = name.strip_prefix("first_stage_model.").unwrap();
        header.insert(key.into(), json!({"dtype": dtype, "shape": info.shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
        data.extend_from_slice(bytes);
    }
    let mut h = Json::Object(header).to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(out, file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_lists_refresh_and_vae_files_load() {
    let s = Server::start(&["--cpu"]);
    let ckpt_choices = |s: &Server| s.get("/object_info/CheckpointLoaderSimple").json()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0].clone();
    let vae_choices = |s: &Server| s.get("/object_info").json()["VAELoader"]["input"]["required"]["vae_name"].clone();
    assert_eq!(ckpt_choices(&s), json!([]));
    assert_eq!(vae_choices(&s), json!([["pixel_space"]]), "ComfyUI's list with no VAE file");

    // Checkpoints appear and disappear with the files (no restart, no cache).
    let ck_dir = s.path("models/checkpoints");
    let scratch = tempfile::tempdir().unwrap();
    let ckpt = scratch.path().join("tiny.safetensors");
    comfy_diffusion::recipe::write_recipe_checkpoint(comfy_diffusion::recipe::Arch::Sd15, true, 0, &ckpt).unwrap();
    std::fs::copy(&ckpt, ck_dir.join("b_model.safetensors")).unwrap();
    assert_eq!(ckpt_choices(&s), json!(["b_model.safetensors"]));
    std::fs::create_dir_all(ck_dir.join("sub")).unwrap();
    std::fs::copy(&ckpt, ck_dir.join("sub/a_model.safetensors")).unwrap();
    std::fs::write(ck_dir.join("notes.txt"), "not a model").unwrap();
    assert_eq!(ckpt_choices(&s), json!(["b_model.safetensors", "sub/a_model.safetensors"]));
    std::fs::remove_file(ck_dir.join("b_model.safetensors")).unwrap();
    assert_eq!(ckpt_choices(&s), json!(["sub/a_model.safetensors"]));
    // ... and validation follows the same list.
    let gone = json!({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b_model.safetensors"}},
                      "2": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
                      "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
                      "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}});
    let r = s.post_json("/prompt", &json!({"prompt": gone}));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["node_errors"]["1"]["errors"][0];
    assert_eq!(e["type"], "value_not_in_list");
    assert_eq!(e["category"], "missing_model");

    // VAE files: a bare-key VAE file and a whole checkpoint, both listed before pixel_space.
    let vae_dir = s.path("models/vae");
    write_bare_vae(&ckpt, &vae_dir.join("tiny_vae.safetensors"));
    std::fs::copy(&ckpt, vae_dir.join("whole_checkpoint.safetensors")).unwrap();
    assert_eq!(vae_choices(&s), json!([["tiny_vae.safetensors", "whole_checkpoint.safetensors", "pixel_space"]]));
    let r = s.post_multipart("/upload/image", &[("image", Some(INPUT_IMAGE), &input_png())]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Encode + decode the input with each VAE: the three share the same weights, so the
    // pixels must be identical.
    let prompt = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sub/a_model.safetensors"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae.safetensors"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "whole_checkpoint.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}},
        "10": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "vae_ckpt"}},
        "20": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["2", 0]}},
        "21": {"class_type": "VAEDecode", "inputs": {"samples": ["20", 0], "vae": ["2", 0]}},
        "22": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "vae_bare"}},
        "30": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["3", 0]}},
        "31": {"class_type": "VAEDecode", "inputs": {"samples": ["30", 0], "vae": ["3", 0]}},
        "32": {"class_type": "SaveImage", "inputs": {"images": ["31", 0], "filename_prefix": "vae_whole"}}
    });
    let mut ws = connect(&s, &format!("/ws?clientId={CLIENT}")).await;
    let run = run_prompt(&s, &mut ws, "vae files", &prompt, &json!({})).await;
    assert_eq!(run.end["type"], "execution_success", "{}", run.end);
    let h = check_history(&s, "vae files", &run, &prompt);
    let mut idats = Vec::new();
    for save in ["12", "22", "32"] {
        let imgs = images(&h["outputs"][save]);
        assert_eq!(imgs.len(), 1);
        let r = s.get(&format!("/view?filename={}&type=output", imgs[0].0));
        assert_eq!(r.status, 200);
        let info = png_info(&r.body);
        assert_eq!((info.width, info.height), (INPUT_W, INPUT_H));
        idats.push(info.idat);
    }
    assert_eq!(idats[0], idats[1], "VAE file with bare keys decodes like the checkpoint's VAE");
    assert_eq!(idats[0], idats[2], "a whole checkpoint in models/vae decodes like the checkpoint's VAE");
    // A VAE file that is not there: value_not_in_list naming the current list.
    let mut p = json!({});
    for id in ["2", "4", "20", "21", "22"] {
        p[id] = prompt[id].clone();
    }
    p["2"]["inputs"]["vae_name"] = json!("absent.safetensors");
    let r = s.post_json("/prompt", &json!({"prompt": p}));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["node_errors"]["2"]["errors"][0];
    assert_eq!(e["type"], "value_not_in_list");
    assert_eq!(
        e["details"],
        "vae_name: 'absent.safetensors' not in ['tiny_vae.safetensors', 'whole_checkpoint.safetensors', 'pixel_space']"
    );
    std::fs::remove_file(vae_dir.join("tiny_vae.safetensors")).unwrap();
    assert_eq!(vae_choices(&s), json!([["whole_checkpoint.safetensors", "pixel_space"]]));
}

/// `--preview-method latent2rgb`: each sampler step sends ComfyUI's binary preview frame to
/// the submitting client — a big-endian u32 event type 1 (PREVIEW_IMAGE), a u32 image type 1
/// (JPEG), then the JPEG — between the step's `progress` messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latent2rgb_previews_arrive_as_binary_frames() {
    use tokio_tungstenite::tungstenite::Message;

    let base = tempfile::tempdir().unwrap();
    prepare_base(base.path(), false);
    let s = Server::start_in(base, &["--preview-method", "latent2rgb"]);
    let mut ws = connect(&s, &format!("/ws?clientId={CLIENT}")).await;
    assert_eq!(next_json(&mut ws).await["type"], "status");
    let (_, mut prompt, _) = tiny_examples().into_iter().find(|(n, _, _)| n == "sd15_text_to_image.json").unwrap();
    prompt["3"]["inputs"]["steps"] = json!(3);
    let id = submit(&s, &prompt, &json!({}));
    let (mut previews, mut progress) = (0, 0);
    loop {
        match next_message(&mut ws).await {
            Message::Binary(b) => {
                assert!(b.len() > 8, "frame too short");
                assert_eq!(&b[0..4], &1u32.to_be_bytes(), "event type PREVIEW_IMAGE");
                assert_eq!(&b[4..8], &1u32.to_be_bytes(), "image type JPEG");
                assert_eq!(&b[8..10], &[0xff, 0xd8], "JPEG start of image");
                previews += 1;
            }
            Message::Text(t) => {
                let m: Json = serde_json::from_str(t.as_str()).unwrap();
                if m["type"] == "progress" && m["data"]["prompt_id"] == id.as_str() {
                    progress += 1;
                }
                if m["type"] == "executing" && m["data"]["node"].is_null() && m["data"]["prompt_id"] == id.as_str() {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(progress, 3, "one progress message per step");
    assert_eq!(previews, 3, "one preview frame per step");
}
