//! The editor's UI-format workflow (`nodes` + `links`) → API-format prompt.
//!
//! Widget values are matched to input names in `/object_info` order: required then optional
//! inputs whose type is a widget (INT, FLOAT, STRING, BOOLEAN, combos) unless `forceInput`.
//! Inputs with `control_after_generate` are followed in `widgets_values` by the frontend-only
//! mode (`fixed`/`increment`/`decrement`/`randomize`), which is skipped. Linked inputs
//! (including widgets converted to inputs) become `[node_id, slot]`. Frontend-only nodes
//! (`Note`, `MarkdownNote`, `Reroute`, `PrimitiveNode`) never reach the prompt: reroutes are
//! followed, primitives' values are copied into their targets. Muted nodes (mode 2) are left
//! out, and links from bypassed nodes (mode 4) are rewired to the bypassed node's input of the
//! same type.

use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};

/// Node types that exist only in the editor.
pub const FRONTEND_ONLY: &[&str] = &["Note", "MarkdownNote", "Reroute", "PrimitiveNode"];

/// The values of a seed's "control after generate" companion widget.
const CONTROL_MODES: &[&str] = &["fixed", "increment", "decrement", "randomize"];

/// Why a UI workflow could not be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("not a UI-format workflow: {0}")]
    NotUi(String),
    #[error("node {id} ({class}) is a subgraph; subgraphs are not supported here — export the workflow with \"Export (API)\" in the editor")]
    Subgraph { id: String, class: String },
    #[error("link {0} is malformed")]
    BadLink(String),
}

/// True when `doc` looks like the editor's format (has a `nodes` array).
pub fn is_ui_format(doc: &Json) -> bool {
    doc.get("nodes").is_some_and(Json::is_array)
}

/// True when `doc` looks like an API-format prompt (every value has a `class_type`).
pub fn is_api_format(doc: &Json) -> bool {
    match doc.as_object() {
        Some(m) => !m.is_empty() && m.values().all(|n| n.get("class_type").is_some()),
        None => false,
    }
}

fn id_str(v: &Json) -> Option<String> {
    match v {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// One link: origin node/slot, target node/slot, type.
#[derive(Debug, Clone)]
struct UiLink {
    origin: String,
    origin_slot: usize,
    kind: String,
}

fn parse_link(l: &Json) -> Option<(String, UiLink)> {
    let get = |arr_i: usize, key: &str| -> Option<&Json> {
        match l {
            Json::Array(a) => a.get(arr_i),
            Json::Object(o) => o.get(key),
            _ => None,
        }
    };
    let id = id_str(get(0, "id")?)?;
    let origin = id_str(get(1, "origin_id")?)?;
    let origin_slot = get(2, "origin_slot")?.as_u64()? as usize;
    let kind = get(5, "type").and_then(|t| t.as_str()).unwrap_or("*").to_string();
    Some((id, UiLink { origin, origin_slot, kind }))
}

/// Whether an `/object_info` input spec is shown as a widget.
pub fn is_widget(spec: &Json) -> bool {
    let Some(arr) = spec.as_array() else { return false };
    let opts = arr.get(1);
    if opts.and_then(|o| o.get("forceInput")).and_then(Json::as_bool) == Some(true) {
        return false;
    }
    match arr.first() {
        Some(Json::Array(_)) => true,
        Some(Json::String(t)) => matches!(t.as_str(), "INT" | "FLOAT" | "STRING" | "BOOLEAN" | "COMBO"),
        _ => false,
    }
}

fn has_control_after_generate(name: &str, spec: &Json) -> bool {
    let flag = spec.get(1).and_then(|o| o.get("control_after_generate")).and_then(Json::as_bool) == Some(true);
    let seedlike = spec.get(0).and_then(Json::as_str) == Some("INT") && matches!(name, "seed" | "noise_seed");
    flag || seedlike
}

/// Widget input names of a node class, in `/object_info` order (required, then optional).
pub fn widget_order(info: &Json) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    for section in ["required", "optional"] {
        let specs = info.get("input").and_then(|i| i.get(section)).and_then(Json::as_object);
        let Some(specs) = specs else { continue };
        let order: Vec<String> = match info.get("input_order").and_then(|o| o.get(section)).and_then(Json::as_array) {
            Some(o) => o.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            None => specs.keys().cloned().collect(),
        };
        for name in order {
            if let Some(spec) = specs.get(&name) {
                if is_widget(spec) {
                    out.push((name, spec.clone()));
                }
            }
        }
    }
    out
}

/// Where an input's value comes from after following reroutes, primitives and bypasses.
enum Source {
    Link(String, usize),
    Value(Json),
    Nothing,
}

struct Graph<'a> {
    nodes: HashMap<String, &'a Map<String, Json>>,
    links: HashMap<String, UiLink>,
}

fn mode(n: &Map<String, Json>) -> i64 {
    n.get("mode").and_then(Json::as_i64).unwrap_or(0)
}

fn node_type(n: &Map<String, Json>) -> &str {
    n.get("type").and_then(Json::as_str).unwrap_or("")
}

fn node_inputs(n: &Map<String, Json>) -> Vec<&Map<String, Json>> {
    n.get("inputs").and_then(Json::as_array).map(|a| a.iter().filter_map(Json::as_object).collect()).unwrap_or_default()
}

impl Graph<'_> {
    fn resolve(&self, link_id: &str, depth: usize) -> Source {
        if depth > 64 {
            return Source::Nothing;
        }
        let Some(link) = self.links.get(link_id) else { return Source::Nothing };
        let Some(origin) = self.nodes.get(&link.origin) else { return Source::Nothing };
        let follow = |input: Option<&Map<String, Json>>| -> Source {
            match input.and_then(|i| i.get("link")).and_then(id_str) {
                Some(l) => self.resolve(&l, depth + 1),
                None => Source::Nothing,
            }
        };
        match node_type(origin) {
            "Reroute" => follow(node_inputs(origin).first().copied()),
            "PrimitiveNode" => match origin.get("widgets_values").and_then(|w| w.get(0)) {
                Some(v) => Source::Value(v.clone()),
                None => Source::Nothing,
            },
            _ if mode(origin) == 2 => Source::Nothing,
            _ if mode(origin) == 4 => {
                let inputs = node_inputs(origin);
                let same = |i: &&Map<String, Json>| i.get("type").and_then(Json::as_str) == Some(link.kind.as_str());
                let pick = inputs.get(link.origin_slot).filter(|i| same(i)).copied().or_else(|| inputs.iter().find(|i| same(i)).copied());
                follow(pick)
            }
            _ => Source::Link(link.origin.clone(), link.origin_slot),
        }
    }
}

/// Converts a UI-format workflow to an API-format prompt, using `object_info`
/// (`/object_info`'s JSON) for widget names.
pub fn ui_to_api(workflow: &Json, object_info: &Map<String, Json>) -> Result<Json, ConvertError> {
    let nodes_arr = workflow.get("nodes").and_then(Json::as_array).ok_or_else(|| ConvertError::NotUi("no nodes array".into()))?;
    let subgraph_ids: Vec<String> = workflow
        .pointer("/definitions/subgraphs")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(|s| s.get("id").and_then(Json::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    let mut graph = Graph { nodes: HashMap::new(), links: HashMap::new() };
    let mut ordered = Vec::new();
    for n in nodes_arr {
        let Some(obj) = n.as_object() else { continue };
        let Some(id) = obj.get("id").and_then(id_str) else { continue };
        graph.nodes.insert(id.clone(), obj);
        ordered.push((id, obj));
    }
    for l in workflow.get("links").and_then(Json::as_array).into_iter().flatten() {
        let (id, link) = parse_link(l).ok_or_else(|| ConvertError::BadLink(l.to_string()))?;
        graph.links.insert(id, link);
    }
    let mut prompt = Map::new();
    for (id, node) in ordered {
        let class = node_type(node);
        if FRONTEND_ONLY.contains(&class) || mode(node) == 2 || mode(node) == 4 {
            continue;
        }
        if subgraph_ids.iter().any(|s| s == class) {
            return Err(ConvertError::Subgraph { id, class: class.to_string() });
        }
        let info = object_info.get(class);
        let mut inputs = Map::new();
        if let Some(info) = info {
            let widgets = widget_order(info);
            match node.get("widgets_values") {
                Some(Json::Object(values)) => {
                    for (name, _) in &widgets {
                        if let Some(v) = values.get(name) {
                            inputs.insert(name.clone(), wrap(v));
                        }
                    }
                }
                Some(Json::Array(values)) => {
                    let mut i = 0;
                    for (name, spec) in &widgets {
                        let Some(v) = values.get(i) else { break };
                        inputs.insert(name.clone(), wrap(v));
                        i += 1;
                        if has_control_after_generate(name, spec)
                            && values.get(i).and_then(Json::as_str).is_some_and(|s| CONTROL_MODES.contains(&s))
                        {
                            i += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        for input in node_inputs(node) {
            let Some(name) = input.get("name").and_then(Json::as_str) else { continue };
            let Some(link) = input.get("link").and_then(id_str) else { continue };
            match graph.resolve(&link, 0) {
                Source::Link(origin, slot) => {
                    inputs.insert(name.to_string(), json!([origin, slot]));
                }
                Source::Value(v) => {
                    inputs.insert(name.to_string(), wrap(&v));
                }
                Source::Nothing => {}
            }
        }
        let title = node
            .get("title")
            .and_then(Json::as_str)
            .map(str::to_string)
            .or_else(|| info.and_then(|i| i.get("display_name")).and_then(Json::as_str).map(str::to_string))
            .unwrap_or_else(|| class.to_string());
        prompt.insert(id, json!({"inputs": inputs, "class_type": class, "_meta": {"title": title}}));
    }
    Ok(Json::Object(prompt))
}

/// A constant array would read as a link: wrap it as ComfyUI expects.
fn wrap(v: &Json) -> Json {
    if v.is_array() {
        json!({"__value__": v})
    } else {
        v.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Map<String, Json> {
        json!({
            "KSampler": {"input": {"required": {
                "model": ["MODEL"], "seed": ["INT", {"default": 0, "control_after_generate": true}],
                "steps": ["INT", {"default": 20}], "sampler_name": [["euler", "dpmpp_2m"]],
                "positive": ["CONDITIONING"], "denoise": ["FLOAT", {"default": 1.0}]}},
              "input_order": {"required": ["model", "seed", "steps", "sampler_name", "positive", "denoise"]},
              "display_name": "KSampler"},
            "Loader": {"input": {"required": {"ckpt_name": [["a.safetensors"]]}}, "display_name": "Load Checkpoint"},
            "Enc": {"input": {"required": {"text": ["STRING", {"multiline": true}], "clip": ["CLIP"]},
                              "optional": {"strength": ["FLOAT", {"forceInput": true}]}},
                    "input_order": {"required": ["text", "clip"], "optional": ["strength"]}}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn converts_widgets_links_and_frontend_nodes() {
        let wf = json!({
            "nodes": [
                {"id": 4, "type": "Loader", "mode": 0, "widgets_values": ["a.safetensors"], "outputs": []},
                {"id": 6, "type": "Enc", "mode": 0, "title": "Positive",
                 "inputs": [{"name": "clip", "type": "CLIP", "link": 3}, {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 9}],
                 "widgets_values": ["unused when linked"]},
                {"id": 3, "type": "KSampler", "mode": 0,
                 "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 2}],
                 "widgets_values": [42, "randomize", 7, "dpmpp_2m", 0.5]},
                {"id": 10, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 5}], "outputs": []},
                {"id": 11, "type": "PrimitiveNode", "widgets_values": ["a cat", "fixed"]},
                {"id": 12, "type": "Note", "widgets_values": ["hello"]},
                {"id": 13, "type": "KSampler", "mode": 2, "widgets_values": [1, "fixed", 1, "euler", 1.0]}
            ],
            "links": [[1, 10, 0, 3, 0, "MODEL"], [5, 4, 0, 10, 0, "MODEL"], [2, 6, 0, 3, 1, "CONDITIONING"],
                      [3, 4, 1, 6, 0, "CLIP"], [9, 11, 0, 6, 1, "STRING"]]
        });
        let api = ui_to_api(&wf, &info()).unwrap();
        assert_eq!(
            api,
            json!({
                "4": {"inputs": {"ckpt_name": "a.safetensors"}, "class_type": "Loader", "_meta": {"title": "Load Checkpoint"}},
                "6": {"inputs": {"text": "a cat", "clip": ["4", 1]}, "class_type": "Enc", "_meta": {"title": "Positive"}},
                "3": {"inputs": {"seed": 42, "steps": 7, "sampler_name": "dpmpp_2m", "denoise": 0.5, "model": ["4", 0], "positive": ["6", 0]},
                      "class_type": "KSampler", "_meta": {"title": "KSampler"}}
            })
        );
    }

    #[test]
    fn bypassed_nodes_are_rewired() {
        let wf = json!({
            "nodes": [
                {"id": 1, "type": "Loader", "widgets_values": ["a.safetensors"]},
                {"id": 2, "type": "Enc", "mode": 4, "inputs": [{"name": "clip", "type": "CLIP", "link": 1}], "widgets_values": ["x"]},
                {"id": 3, "type": "Enc", "inputs": [{"name": "clip", "type": "CLIP", "link": 2}], "widgets_values": ["y"]}
            ],
            "links": [[1, 1, 1, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CLIP"]]
        });
        let api = ui_to_api(&wf, &info()).unwrap();
        assert!(api.get("2").is_none());
        assert_eq!(api["3"]["inputs"]["clip"], json!(["1", 1]));
    }

    #[test]
    fn seed_without_mode_value_keeps_alignment() {
        // Older exports had no control value after the seed.
        let wf = json!({"nodes": [{"id": 1, "type": "KSampler", "widgets_values": [5, 9, "euler", 1.0]}], "links": []});
        let api = ui_to_api(&wf, &info()).unwrap();
        assert_eq!(api["1"]["inputs"], json!({"seed": 5, "steps": 9, "sampler_name": "euler", "denoise": 1.0}));
    }

    #[test]
    fn formats_are_told_apart() {
        assert!(is_ui_format(&json!({"nodes": [], "links": []})));
        assert!(is_api_format(&json!({"1": {"class_type": "X", "inputs": {}}})));
        assert!(!is_api_format(&json!({"nodes": []})));
        let sub = json!({"nodes": [{"id": 1, "type": "abc-uuid"}], "definitions": {"subgraphs": [{"id": "abc-uuid"}]}});
        assert!(matches!(ui_to_api(&sub, &info()), Err(ConvertError::Subgraph { .. })));
    }
}
