//! The [`Node`] trait: what one node class declares and how it runs.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::{CancelToken, Folders, NodeError, NodeSchema, Value};

/// A node class (`class_type`): its schema and its execute function.
///
/// Implementations are stateless or hold shared caches behind `Arc`s; one instance serves every
/// node of that class in every prompt.
pub trait Node: Send + Sync {
    /// The declared interface (what `/object_info` shows and validation checks).
    fn schema(&self) -> NodeSchema;

    /// Runs one call of the node. For non-list nodes every input holds exactly one value;
    /// the executor calls this once per list element (ComfyUI's list mapping).
    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError>;

    /// ComfyUI's `IS_CHANGED`: a fingerprint of external state (a file's hash) folded into the
    /// cache key. `inputs` holds only the constant inputs. `None` = depends on inputs alone.
    fn fingerprint(&self, _inputs: &Inputs, _folders: &Folders) -> Option<String> {
        None
    }

    /// ComfyUI's `VALIDATE_INPUTS` parameters: the inputs this node checks itself. They skip
    /// the built-in min/max/choice checks and are passed to [`Node::validate_inputs`].
    /// Empty (the default) = no custom validator.
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// ComfyUI's `VALIDATE_INPUTS`, called at submit time with the named inputs (linked ones
    /// are absent: they are not computed yet). `Ok(())` = valid; `Err(None)` = the validator
    /// returned `False`; `Err(Some(text))` = it returned `text` (shown as `"<input> - <text>"`).
    fn validate_inputs(&self, _inputs: &Inputs, _folders: &Folders) -> Result<(), Option<String>> {
        Ok(())
    }
}

/// The inputs of one call, by input name. Linked inputs and constants alike.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    values: HashMap<String, Vec<Value>>,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an input to a single value.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), vec![value]);
    }

    /// Sets an input to a whole list (for `is_input_list` nodes).
    pub fn insert_list(&mut self, name: impl Into<String>, values: Vec<Value>) {
        self.values.insert(name.into(), values);
    }

    /// The (first) value of an input, if present and not `None`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).and_then(|v| v.first()).filter(|v| !matches!(v, Value::None))
    }

    /// The whole list of an input (list nodes).
    pub fn list(&self, name: &str) -> &[Value] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.values.keys()
    }

    /// A required object input of type `T`, or a clear error naming the input.
    pub fn object<T: std::any::Any + Send + Sync>(&self, name: &str) -> Result<&T, NodeError> {
        self.get(name)
            .ok_or_else(|| NodeError::invalid_input(format!("Required input is missing: {name}")))?
            .downcast::<T>()
            .ok_or_else(|| NodeError::invalid_input(format!("Input '{name}' has the wrong type")))
    }

    pub fn i64(&self, name: &str) -> Result<i64, NodeError> {
        self.get(name).and_then(Value::as_i64).ok_or_else(|| bad(name, "an integer"))
    }
    pub fn u64(&self, name: &str) -> Result<u64, NodeError> {
        self.get(name).and_then(Value::as_u64).ok_or_else(|| bad(name, "a non-negative integer"))
    }
    pub fn f64(&self, name: &str) -> Result<f64, NodeError> {
        self.get(name).and_then(Value::as_f64).ok_or_else(|| bad(name, "a number"))
    }
    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        self.get(name).and_then(Value::as_str).ok_or_else(|| bad(name, "a string"))
    }
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        self.get(name).and_then(Value::as_bool).ok_or_else(|| bad(name, "a boolean"))
    }
}

fn bad(name: &str, what: &str) -> NodeError {
    NodeError::invalid_input(format!("Input '{name}' must be {what}"))
}

/// What one call returns: one value per output slot, and the optional UI dict
/// (`{"images": [...]}`) that becomes the `executed` message and the history output.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub values: Vec<Value>,
    pub ui: Option<Map<String, Json>>,
}

impl Outputs {
    pub fn new(values: Vec<Value>) -> Self {
        Outputs { values, ui: None }
    }
    pub fn with_ui(mut self, ui: Map<String, Json>) -> Self {
        self.ui = Some(ui);
        self
    }
}

/// Receives a running node's progress (`progress` messages) and previews (binary frames).
pub trait ProgressSink: Send + Sync {
    /// `value` of `max` units done (sampler steps).
    fn progress(&self, value: u64, max: u64);
    /// An encoded preview image (JPEG or PNG bytes) for `--preview-method`.
    fn preview(&self, _format: PreviewFormat, _bytes: Vec<u8>) {}
}

/// Image format of a preview frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    Jpeg,
    Png,
}

/// How previews are made (`--preview-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreviewMethod {
    #[default]
    None,
    Auto,
    Latent2Rgb,
    Taesd,
}

/// A sink that drops everything (tests, CLI runs without progress).
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn progress(&self, _value: u64, _max: u64) {}
}

/// What a running node may know about its surroundings (ComfyUI's hidden inputs and more).
pub struct ExecContext<'a> {
    pub prompt_id: &'a str,
    /// `UNIQUE_ID`: the node's id in the prompt.
    pub node_id: &'a str,
    /// `PROMPT`: the whole prompt being executed (written into PNG metadata).
    pub prompt: &'a Json,
    /// `EXTRA_PNGINFO`: `extra_data.extra_pnginfo` (the UI workflow), if any.
    pub extra_pnginfo: Option<&'a Json>,
    pub folders: &'a Folders,
    pub cancel: &'a CancelToken,
    pub progress: &'a dyn ProgressSink,
    pub preview_method: PreviewMethod,
}
