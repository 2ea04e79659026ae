//! Reading a workflow file in either format and turning it into an API-format prompt.

use std::path::Path;

use comfy_graph::{Folders, NodeRegistry};
use serde_json::{Map, Value as Json};

use super::ui::{is_api_format, is_ui_format, ui_to_api};

/// A workflow as read from disk.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The document exactly as parsed.
    pub document: Json,
    /// True for the editor's UI format.
    pub ui: bool,
}

/// Reads and classifies a workflow file.
pub fn read_workflow(path: &Path) -> anyhow::Result<Workflow> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let document: Json = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
    // An API prompt saved together with its wrapper body (`{"prompt": {...}}`) is accepted too.
    let document = match document.get("prompt") {
        Some(p) if is_api_format(p) && !is_ui_format(&document) => p.clone(),
        _ => document,
    };
    if is_ui_format(&document) {
        Ok(Workflow { document, ui: true })
    } else if is_api_format(&document) {
        Ok(Workflow { document, ui: false })
    } else {
        anyhow::bail!(
            "{} is neither an API-format prompt (node id -> {{class_type, inputs}}) nor an editor workflow (nodes + links)",
            path.display()
        )
    }
}

/// `/object_info` rendered from a local registry (file lists from `folders`).
pub fn local_object_info(registry: &NodeRegistry, folders: &Folders) -> Map<String, Json> {
    let mut m = Map::new();
    for name in registry.class_names() {
        if let Some(s) = registry.schema(name) {
            m.insert(name.to_string(), s.to_object_info(folders));
        }
    }
    m
}

impl Workflow {
    /// The API-format prompt, converting the UI format with `object_info`.
    pub fn to_api(&self, object_info: &Map<String, Json>) -> anyhow::Result<Json> {
        if self.ui {
            Ok(ui_to_api(&self.document, object_info)?)
        } else {
            Ok(self.document.clone())
        }
    }
}

/// Prints a `/prompt` 400 body the way ComfyUI's console reports it.
pub fn print_validation_errors(body: &Json) {
    if let Some(e) = body.get("error") {
        let msg = e.get("message").and_then(Json::as_str).or_else(|| e.as_str()).unwrap_or("invalid prompt");
        eprintln!("{}", error_line(msg, e));
    }
    print_node_errors(body);
}

/// `message: details [category]` for one ComfyUI error object (details and comfy-rs's
/// category only when present).
pub fn error_line(message: &str, err: &Json) -> String {
    let mut line = message.to_string();
    if let Some(d) = err.get("details").and_then(Json::as_str).filter(|d| !d.is_empty()) {
        line.push_str(": ");
        line.push_str(d);
    }
    if let Some(c) = err.get("category").and_then(Json::as_str) {
        line.push_str(&format!(" [{c}]"));
    }
    line
}

/// Prints `node_errors` as `* Class id:` / `  - message: details`.
pub fn print_node_errors(body: &Json) {
    let Some(nodes) = body.get("node_errors").and_then(Json::as_object) else { return };
    for (id, ne) in nodes {
        let class = ne.get("class_type").and_then(Json::as_str).unwrap_or("?");
        eprintln!("* {class} {id}:");
        for err in ne.get("errors").and_then(Json::as_array).into_iter().flatten() {
            let m = err.get("message").and_then(Json::as_str).unwrap_or("");
            eprintln!("  - {}", error_line(m, err));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn error_lines_show_details_and_category() {
        let e = json!({"message": "Value not in list", "details": "ckpt_name: 'x' not in []", "category": "missing_model"});
        assert_eq!(super::error_line("Value not in list", &e), "Value not in list: ckpt_name: 'x' not in [] [missing_model]");
        assert_eq!(super::error_line("Bad", &json!({"details": ""})), "Bad");
    }
}
