//! The table of node classes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Node, NodeSchema};

/// All node classes the server offers, with their schemas computed once.
#[derive(Default, Clone)]
pub struct NodeRegistry {
    nodes: BTreeMap<String, (Arc<dyn Node>, Arc<NodeSchema>)>,
    /// Registration order, which is `/object_info`'s key order.
    order: Vec<String>,
}

impl NodeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node class under its schema's name (a later registration replaces an earlier one).
    pub fn register(&mut self, node: impl Node + 'static) {
        let schema = node.schema();
        let name = schema.name.clone();
        if !self.nodes.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.nodes.insert(name, (Arc::new(node), Arc::new(schema)));
    }

    pub fn get(&self, class_type: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.get(class_type).map(|(n, _)| n)
    }

    pub fn schema(&self, class_type: &str) -> Option<&Arc<NodeSchema>> {
        self.nodes.get(class_type).map(|(_, s)| s)
    }

    /// Class names in registration order.
    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
