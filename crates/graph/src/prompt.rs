//! The API-format prompt: `{node_id: {"class_type", "inputs", "_meta"?, ...}}`.
//!
//! The prompt stays a `serde_json` object (keys keep their order, unknown keys such as `_meta`
//! are preserved); this module only adds typed access to it.

use serde_json::{Map, Value as Json};

/// A link `["<source id>", <slot>]` as the scheduler sees it (ComfyUI's `is_link`).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub node: String,
    /// The slot as written (an int, or a float the scheduler also accepts).
    pub slot: Json,
}

impl Link {
    /// The slot as an index, when it is a non-negative integer.
    pub fn index(&self) -> Option<usize> {
        self.slot.as_u64().map(|s| s as usize)
    }
}

/// ComfyUI's `is_link`: a 2-element array, first a string, second an int or float.
pub fn as_link(v: &Json) -> Option<Link> {
    let a = v.as_array()?;
    if a.len() != 2 {
        return None;
    }
    let node = a[0].as_str()?;
    if !a[1].is_number() {
        return None;
    }
    Some(Link { node: node.to_string(), slot: a[1].clone() })
}

/// One node of a prompt.
pub fn node<'a>(prompt: &'a Json, id: &str) -> Option<&'a Map<String, Json>> {
    prompt.get(id)?.as_object()
}

/// A node's `class_type`, when it is a string.
pub fn class_type<'a>(prompt: &'a Json, id: &str) -> Option<&'a str> {
    node(prompt, id)?.get("class_type")?.as_str()
}

/// A node's `inputs` object (empty when absent or malformed).
pub fn inputs<'a>(prompt: &'a Json, id: &str) -> Option<&'a Map<String, Json>> {
    node(prompt, id)?.get("inputs")?.as_object()
}

/// The node ids of a prompt in key order.
pub fn node_ids(prompt: &Json) -> Vec<String> {
    prompt.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_are_string_number_pairs() {
        assert_eq!(as_link(&json!(["4", 0])).map(|l| l.node), Some("4".to_string()));
        assert!(as_link(&json!(["4", 1.0])).is_some());
        assert!(as_link(&json!([4, 0])).is_none());
        assert!(as_link(&json!(["4", "0"])).is_none());
        assert!(as_link(&json!(["4", 0, 1])).is_none());
        assert!(as_link(&json!({"__value__": ["4", 0]})).is_none());
    }
}
