//! The output cache between prompts: ComfyUI's input-signature keys and classic policy.
//!
//! A node's key is its class, its `IS_CHANGED` fingerprint, its constants and the same data of
//! its whole upstream graph (ancestors numbered by a depth-first walk over sorted input names),
//! so it does not depend on node ids. The classic policy keeps only entries whose key the
//! current prompt produces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::prompt::{self, as_link};
use crate::pyfmt::float_repr;
use crate::schema::{InputType, Section};
use crate::{Folders, Inputs, NodeRegistry, Value};

/// A node's outputs: for each slot, the list of values (one per list-mapped call).
pub type SlotValues = Arc<Vec<Vec<Value>>>;

/// A node's UI output as ComfyUI's UI cache stores it.
#[derive(Debug, Clone)]
pub struct UiEntry {
    /// `{"node_id", "display_node", "parent_node", "real_node_id"}` of the run that produced it.
    pub meta: Json,
    pub output: Map<String, Json>,
}

/// Canonical text of a JSON value under Python's hash equality (`1 == 1.0 == True`, dict
/// order irrelevant).
fn canon(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("None"),
        Json::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string())
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 1e18 {
                    out.push_str(&(f as i64).to_string())
                } else {
                    out.push_str(&float_repr(f))
                }
            }
        }
        Json::String(s) => out.push_str(&Json::String(s.clone()).to_string()),
        Json::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon(x, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                canon(&o[k], out);
            }
            out.push('}');
        }
    }
}

/// Computes the cache keys of every node of one prompt.
pub(crate) struct KeyBuilder<'a> {
    pub registry: &'a NodeRegistry,
    pub folders: &'a Folders,
    /// Makes "never equal" markers (Python NaN) unique to this prompt.
    pub nonce: u64,
    is_changed: HashMap<String, Json>,
}

impl<'a> KeyBuilder<'a> {
    pub fn new(registry: &'a NodeRegistry, folders: &'a Folders, nonce: u64) -> Self {
        KeyBuilder { registry, folders, nonce, is_changed: HashMap::new() }
    }

    /// `IS_CHANGED` of a node: `false` without a fingerprint; the prompt's own `is_changed`
    /// value if present; else `[fingerprint]`, also written into the prompt node.
    fn is_changed(&mut self, prompt: &mut Json, id: &str) -> Json {
        if let Some(v) = self.is_changed.get(id) {
            return v.clone();
        }
        let class = prompt::class_type(prompt, id).unwrap_or_default().to_string();
        let mut result = Json::Bool(false);
        if let (Some(node), Some(schema)) = (self.registry.get(&class), self.registry.schema(&class)) {
            let mut constants = Inputs::new();
            if let Some(inputs) = prompt::inputs(prompt, id) {
                for (k, v) in inputs {
                    if as_link(v).is_some() {
                        constants.insert(k.clone(), Value::None);
                    } else if schema.find_input(k).is_some_and(|i| i.section != Section::Hidden) {
                        constants.insert(k.clone(), Value::Json(v.clone()));
                    }
                }
            }
            if let Some(fp) = node.fingerprint(&constants, self.folders) {
                let n = prompt.get_mut(id).and_then(Json::as_object_mut);
                result = match n {
                    Some(n) => match n.get("is_changed") {
                        Some(v) => v.clone(),
                        None => {
                            let v = Json::Array(vec![Json::String(fp)]);
                            n.insert("is_changed".into(), v.clone());
                            v
                        }
                    },
                    None => Json::Array(vec![Json::String(fp)]),
                };
            }
        }
        self.is_changed.insert(id.to_string(), result.clone());
        result
    }

    fn ancestry(prompt: &Json, id: &str, ancestors: &mut Vec<String>, index: &mut HashMap<String, usize>) {
        let Some(inputs) = prompt::inputs(prompt, id) else { return };
        let mut keys: Vec<&String> = inputs.keys().collect();
        keys.sort();
        for k in keys {
            if let Some(link) = as_link(&inputs[k]) {
                if !index.contains_key(&link.node) {
                    ancestors.push(link.node.clone());
                    index.insert(link.node.clone(), ancestors.len() - 1);
                    Self::ancestry(prompt, &link.node, ancestors, index);
                }
            }
        }
    }

    fn immediate(&mut self, prompt: &mut Json, id: &str, index: &HashMap<String, usize>, out: &mut String) {
        if prompt::node(prompt, id).is_none() {
            out.push_str(&format!("[NaN#{}]", self.nonce));
            return;
        }
        let class = prompt::class_type(prompt, id).unwrap_or_default().to_string();
        let is_changed = self.is_changed(prompt, id);
        let mut sig = vec![Json::String(class.clone()), is_changed];
        if let Some(schema) = self.registry.schema(&class) {
            let unique_id = schema
                .inputs
                .iter()
                .any(|i| i.section == Section::Hidden && i.kind == InputType::Named("UNIQUE_ID".into()));
            if schema.not_idempotent || unique_id {
                sig.push(Json::String(id.to_string()));
            }
        }
        if let Some(inputs) = prompt::inputs(prompt, id) {
            let mut keys: Vec<&String> = inputs.keys().collect();
            keys.sort();
            for k in keys {
                let v = &inputs[k];
                let item = match as_link(v) {
                    Some(link) => Json::Array(vec![
                        Json::String("ANCESTOR".into()),
                        Json::from(index.get(&link.node).copied().unwrap_or(usize::MAX)),
                        link.slot,
                    ]),
                    None => v.clone(),
                };
                sig.push(Json::Array(vec![Json::String(k.clone()), item]));
            }
        }
        canon(&Json::Array(sig), out);
    }

    /// The cache key of `id` in `prompt` (ComfyUI's `CacheKeySetInputSignature`).
    pub fn key(&mut self, prompt: &mut Json, id: &str) -> String {
        let mut ancestors = Vec::new();
        let mut index = HashMap::new();
        Self::ancestry(prompt, id, &mut ancestors, &mut index);
        let mut out = String::from("[");
        self.immediate(prompt, id, &index, &mut out);
        for a in &ancestors {
            out.push(',');
            self.immediate(prompt, a, &index, &mut out);
        }
        out.push(']');
        out
    }
}

/// The executor's persistent caches (outputs and UI), keyed by input signature.
#[derive(Default)]
pub struct ExecCache {
    outputs: HashMap<String, SlotValues>,
    ui: HashMap<String, UiEntry>,
    /// node id -> key for the prompt being executed.
    keys: HashMap<String, String>,
}

impl ExecCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the keys of every node of `prompt` (calling fingerprints, which may add
    /// `is_changed` to prompt nodes) and drops entries the prompt does not use (classic policy).
    pub fn set_prompt(&mut self, registry: &NodeRegistry, folders: &Folders, prompt: &mut Json, nonce: u64) {
        let mut kb = KeyBuilder::new(registry, folders, nonce);
        self.keys.clear();
        for id in prompt::node_ids(prompt) {
            let k = kb.key(prompt, &id);
            self.keys.insert(id, k);
        }
        let live: HashSet<&String> = self.keys.values().collect();
        self.outputs.retain(|k, _| live.contains(k));
        self.ui.retain(|k, _| live.contains(k));
    }

    /// The key of a node of the current prompt.
    pub fn key_of(&self, id: &str) -> Option<&String> {
        self.keys.get(id)
    }

    pub fn get(&self, id: &str) -> Option<&SlotValues> {
        self.outputs.get(self.keys.get(id)?)
    }

    pub fn is_cached(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub fn set(&mut self, id: &str, values: SlotValues) {
        if let Some(k) = self.keys.get(id) {
            self.outputs.insert(k.clone(), values);
        }
    }

    pub fn get_ui(&self, id: &str) -> Option<&UiEntry> {
        self.ui.get(self.keys.get(id)?)
    }

    pub fn set_ui(&mut self, id: &str, entry: UiEntry) {
        if let Some(k) = self.keys.get(id) {
            self.ui.insert(k.clone(), entry);
        }
    }

    /// Node ids of the current prompt (`current_outputs` of `execution_error`).
    pub fn node_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Drops everything (`/free` with `free_memory`).
    pub fn clear(&mut self) {
        self.outputs.clear();
        self.ui.clear();
    }

    /// Number of cached output entries.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canon_follows_python_equality() {
        let mut a = String::new();
        let mut b = String::new();
        canon(&json!({"b": 1, "a": [true, 2.0]}), &mut a);
        canon(&json!({"a": [1, 2], "b": 1.0}), &mut b);
        assert_eq!(a, b);
        let mut c = String::new();
        canon(&json!({"a": [1, 2.5], "b": 1}), &mut c);
        assert_ne!(a, c);
    }
}
