//! Prompt validation, as ComfyUI's `validate_prompt` / `validate_inputs` do it.
//!
//! The result reproduces ComfyUI's error objects (`type`, `message`, `details`, `extra_info`),
//! its `node_errors` aggregation and its top-level errors, and adds the reference document's
//! `category`, `node_id` and `node_type` to every error object. Validation also rewrites the
//! prompt the way ComfyUI does (`{"__value__": x}` unwrapped, INT/FLOAT/STRING/BOOLEAN coerced).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value as Json};

use crate::prompt;
use crate::pyfmt::{py_bool, py_eq, py_float, py_int, py_lt, py_repr, py_str, py_type_name};
use crate::schema::{FileLister, InputSpec, InputType, NodeSchema, Section};
use crate::{ErrorCategory, Folders, Inputs, NodeRegistry, Value};

/// What validation concluded about a prompt.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The top-level error (`None` when at least one output validated).
    pub error: Option<Json>,
    /// Output node ids that validated (`outputs_to_execute`), in prompt order.
    pub outputs: Vec<String>,
    /// `node_errors` (possibly non-empty even when the prompt is accepted).
    pub node_errors: Map<String, Json>,
}

impl Validation {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The HTTP 400 body ComfyUI sends for a rejected prompt.
    pub fn error_body(&self) -> Json {
        json!({"error": self.error.clone().unwrap_or(Json::Null), "node_errors": Json::Object(self.node_errors.clone())})
    }
}

/// A Python exception raised while validating (becomes `exception_during_*validation`).
#[derive(Debug, Clone)]
struct PyException {
    kind: String,
    message: String,
}

impl PyException {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        PyException { kind: kind.to_string(), message: message.into() }
    }
    fn traceback(&self) -> Json {
        json!([format!(
            "  File \"comfy_graph/validate.rs\", in validate_inputs\n    raise {}({})\n",
            self.kind, self.message
        )])
    }
}

/// A prompt-level error object (`extra_info` is always `{}`).
pub fn prompt_error(
    kind: &str,
    message: &str,
    details: &str,
    category: ErrorCategory,
    node: Option<(&str, Json)>,
) -> Json {
    let (node_id, node_type) = match node {
        Some((id, t)) => (Json::String(id.to_string()), t),
        None => (Json::Null, Json::Null),
    };
    json!({"type": kind, "message": message, "details": details, "extra_info": {},
           "category": category.as_str(), "node_id": node_id, "node_type": node_type})
}

/// The `no_prompt` error body (POST /prompt without a `prompt` key).
pub fn no_prompt_body() -> Json {
    let e = prompt_error("no_prompt", "No prompt provided", "No prompt provided", ErrorCategory::InvalidInput, None);
    json!({"error": e, "node_errors": {}})
}

type NodeResult = (bool, Vec<Json>);

/// Memo of validated nodes, keeping Python dict insertion order (overwrites keep position).
#[derive(Default)]
struct Memo {
    order: Vec<String>,
    map: HashMap<String, NodeResult>,
}

impl Memo {
    fn get(&self, id: &str) -> Option<&NodeResult> {
        self.map.get(id)
    }
    fn set(&mut self, id: &str, r: NodeResult) {
        if self.map.insert(id.to_string(), r).is_none() {
            self.order.push(id.to_string());
        }
    }
}

struct Validator<'a> {
    registry: &'a NodeRegistry,
    folders: &'a Folders,
    prompt: &'a mut Json,
    memo: Memo,
    in_progress: HashSet<String>,
    file_lists: HashMap<String, Vec<Json>>,
}

/// The JSON form of an input declaration (`extra_info.input_config`): `[type, options]`.
pub fn input_config(input: &InputSpec, choices: Option<&[Json]>) -> Json {
    let opts = Json::Object(input.options.clone());
    match &input.kind {
        InputType::Named(t) => json!([t, opts]),
        InputType::ComboV3(c) => {
            let mut o = Map::new();
            o.insert("multiselect".into(), Json::Bool(false));
            o.insert("options".into(), Json::Array(c.clone()));
            for (k, v) in &input.options {
                o.insert(k.clone(), v.clone());
            }
            json!(["COMBO", Json::Object(o)])
        }
        _ => json!([choices.unwrap_or(&[]), opts]),
    }
}

/// ComfyUI's `validate_node_input` for two type strings.
pub fn types_compatible(received: &str, input: &str) -> bool {
    if received == input {
        return true;
    }
    let r: HashSet<&str> = received.split(',').map(str::trim).collect();
    let i: HashSet<&str> = input.split(',').map(str::trim).collect();
    if r.contains("*") || i.contains("*") {
        return true;
    }
    r.intersection(&i).next().is_some()
}

fn is_file_combo(input: &InputSpec) -> bool {
    matches!(input.kind, InputType::InputImages | InputType::InputFiles)
}

impl<'a> Validator<'a> {
    fn choices(&mut self, schema: &NodeSchema, input: &InputSpec) -> Vec<Json> {
        let key = match &input.kind {
            InputType::Files(f) => format!("files:{f}"),
            InputType::FilesThen(f, extra) => format!("files:{f}+{}", extra.join("\u{0}")),
            InputType::InputImages => "input:images".to_string(),
            InputType::InputFiles => "input:all".to_string(),
            _ => return schema.combo_choices(input, self.folders as &dyn FileLister).unwrap_or_default(),
        };
        if let Some(c) = self.file_lists.get(&key) {
            return c.clone();
        }
        let c = schema.combo_choices(input, self.folders as &dyn FileLister).unwrap_or_default();
        self.file_lists.insert(key, c.clone());
        c
    }

    fn class_of(&self, id: &str) -> String {
        prompt::class_type(self.prompt, id).unwrap_or_default().to_string()
    }

    /// Adds the reference document's extra fields to an error of node `id`.
    fn tag(&self, id: &str, mut e: Json, category: ErrorCategory) -> Json {
        if let Some(o) = e.as_object_mut() {
            o.insert("category".into(), json!(category.as_str()));
            o.insert("node_id".into(), json!(id));
            o.insert("node_type".into(), json!(self.class_of(id)));
        }
        e
    }

    fn validate(&mut self, id: &str) -> Result<NodeResult, PyException> {
        if let Some(r) = self.memo.get(id) {
            return Ok(r.clone());
        }
        if !self.in_progress.insert(id.to_string()) {
            // Python recurses around a cycle until its stack limit.
            return Err(PyException::new("RecursionError", "maximum recursion depth exceeded"));
        }
        let r = self.validate_uncached(id);
        self.in_progress.remove(id);
        let r = r?;
        self.memo.set(id, r.clone());
        Ok(r)
    }

    fn validate_uncached(&mut self, id: &str) -> Result<NodeResult, PyException> {
        let class_type = self.class_of(id);
        let (node, schema) = match (self.registry.get(&class_type), self.registry.schema(&class_type)) {
            (Some(n), Some(s)) => (n.clone(), s.clone()),
            _ => return Err(PyException::new("KeyError", py_repr(&json!(class_type)))),
        };
        let inputs_val = prompt::node(self.prompt, id).and_then(|n| n.get("inputs")).cloned();
        let mut inputs = match inputs_val {
            Some(Json::Object(m)) => m,
            Some(other) => {
                return Err(PyException::new(
                    "TypeError",
                    format!("argument of type '{}' is not iterable", py_type_name(&other)),
                ))
            }
            None => return Err(PyException::new("KeyError", "'inputs'")),
        };
        let custom: Vec<&str> = node.custom_validated_inputs().to_vec();
        let mut errors = Vec::new();
        let mut valid = true;

        for input in schema.inputs.iter().filter(|i| i.section != Section::Hidden) {
            let x = input.name.as_str();
            let is_list_combo = input.is_combo() && !matches!(input.kind, InputType::ComboV3(_));
            let choices = if is_list_combo { Some(self.choices(&schema, input)) } else { None };
            let info = input_config(input, choices.as_deref());
            let Some(val) = inputs.get(x).cloned() else {
                if input.section == Section::Required {
                    let e = json!({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": x, "extra_info": {"input_name": x}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                }
                continue;
            };
            if let Json::Array(link) = &val {
                if link.len() != 2 {
                    let e = json!({"type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": x, "extra_info": {"input_name": x, "input_config": info, "received_value": val}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                    continue;
                }
                let o_id = match &link[0] {
                    Json::String(s) if prompt::node(self.prompt, s).is_some() => s.clone(),
                    other => return Err(PyException::new("KeyError", py_repr(other))),
                };
                let o_class = self.class_of(&o_id);
                let returns = self
                    .registry
                    .schema(&o_class)
                    .map(|s| s.outputs.iter().map(|o| o.type_name.clone()).collect::<Vec<_>>())
                    .unwrap_or_default();
                let received_type = match &link[1] {
                    Json::Number(n) if !n.is_f64() => {
                        let i = n.as_i64().unwrap_or(i64::MAX);
                        let idx = if i < 0 { returns.len() as i64 + i } else { i };
                        if idx < 0 || idx as usize >= returns.len() {
                            return Err(PyException::new("IndexError", "tuple index out of range"));
                        }
                        returns[idx as usize].clone()
                    }
                    Json::Bool(b) => {
                        let idx = *b as usize;
                        returns
                            .get(idx)
                            .cloned()
                            .ok_or_else(|| PyException::new("IndexError", "tuple index out of range"))?
                    }
                    other => {
                        return Err(PyException::new(
                            "TypeError",
                            format!("tuple indices must be integers or slices, not {}", py_type_name(other)),
                        ))
                    }
                };
                let (compatible, input_type_text) = match &input.kind {
                    InputType::Named(t) => (types_compatible(&received_type, t), t.clone()),
                    InputType::ComboV3(_) => (types_compatible(&received_type, "COMBO"), "COMBO".to_string()),
                    _ => (
                        received_type == "*" || received_type == "COMBO",
                        py_repr(&Json::Array(choices.clone().unwrap_or_default())),
                    ),
                };
                if !compatible {
                    let e = json!({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                        "details": format!("{x}, received_type({received_type}) mismatch input_type({input_type_text})"),
                        "extra_info": {"input_name": x, "input_config": info, "received_type": received_type,
                                       "linked_node": val}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                    continue;
                }
                match self.validate(&o_id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(ex) => {
                        valid = false;
                        let e = json!({"type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node", "details": ex.message,
                            "extra_info": {"input_name": x, "input_config": info, "exception_message": ex.message,
                                           "exception_type": ex.kind, "traceback": ex.traceback(), "linked_node": val}});
                        let e = self.tag(&o_id, e, ErrorCategory::InvalidInput);
                        self.memo.set(&o_id, (false, vec![e]));
                    }
                }
                continue;
            }

            // A constant.
            let mut val = val;
            if let Some(inner) = val.as_object().and_then(|o| o.get("__value__")).cloned() {
                val = inner;
                inputs.insert(x.to_string(), val.clone());
            }
            if let InputType::Named(t) = &input.kind {
                let converted = match t.as_str() {
                    "INT" => Some(py_int(&val)),
                    "FLOAT" => Some(py_float(&val)),
                    "STRING" => Some(Ok(Json::String(py_str(&val)))),
                    "BOOLEAN" => Some(Ok(Json::Bool(py_bool(&val)))),
                    _ => None,
                };
                match converted {
                    Some(Ok(v)) => {
                        val = v;
                        inputs.insert(x.to_string(), val.clone());
                    }
                    Some(Err(msg)) => {
                        let e = json!({"type": "invalid_input_type",
                            "message": format!("Failed to convert an input value to a {t} value"),
                            "details": format!("{x}, {}, {msg}", py_str(&val)),
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                           "exception_message": msg}});
                        errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                        continue;
                    }
                    None => {}
                }
            }
            if custom.contains(&x) || is_file_combo(input) {
                continue;
            }
            if let Some(min) = input.option("min") {
                let lt = py_lt(&val, min).ok_or_else(|| compare_error(&val, min))?;
                if lt {
                    let e = json!({"type": "value_smaller_than_min",
                        "message": format!("Value {} smaller than min of {}", py_str(&val), py_str(min)),
                        "details": x, "extra_info": {"input_name": x, "input_config": info, "received_value": val}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                    continue;
                }
            }
            if let Some(max) = input.option("max") {
                let gt = py_lt(max, &val).ok_or_else(|| compare_error(&val, max))?;
                if gt {
                    let e = json!({"type": "value_bigger_than_max",
                        "message": format!("Value {} bigger than max of {}", py_str(&val), py_str(max)),
                        "details": x, "extra_info": {"input_name": x, "input_config": info, "received_value": val}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                    continue;
                }
            }
            if let Some(choices) = &choices {
                if !choices.iter().any(|c| py_eq(c, &val)) {
                    let (list_info, config) = if choices.len() > 20 {
                        (format!("(list of length {})", choices.len()), Json::Null)
                    } else {
                        (py_repr(&Json::Array(choices.clone())), info.clone())
                    };
                    let e = json!({"type": "value_not_in_list", "message": "Value not in list",
                        "details": format!("{x}: '{}' not in {list_info}", py_str(&val)),
                        "extra_info": {"input_name": x, "input_config": config, "received_value": val}});
                    let category = if matches!(input.kind, InputType::Files(_) | InputType::FilesThen(..)) {
                        ErrorCategory::MissingModel
                    } else {
                        ErrorCategory::InvalidInput
                    };
                    errors.push(self.tag(id, e, category));
                    continue;
                }
            }
        }

        // Write coercions back into the prompt (ComfyUI mutates the queued prompt).
        if let Some(n) = self.prompt.get_mut(id).and_then(Json::as_object_mut) {
            n.insert("inputs".into(), Json::Object(inputs.clone()));
        }

        // Custom validators (`VALIDATE_INPUTS`): the node's own, then the built-in file check of
        // LoadImage-style inputs (`exists_annotated_filepath`).
        if !custom.is_empty() {
            let mut call = Inputs::new();
            let mut passed = Vec::new();
            for (k, v) in &inputs {
                if custom.contains(&k.as_str()) {
                    passed.push(k.clone());
                    if prompt::as_link(v).is_some() {
                        call.insert(k.clone(), Value::None);
                    } else {
                        call.insert(k.clone(), Value::Json(v.clone()));
                    }
                }
            }
            if let Err(ret) = node.validate_inputs(&call, self.folders) {
                for x in passed {
                    let details = match &ret {
                        Some(text) => format!("{x} - {text}"),
                        None => x.clone(),
                    };
                    let e = json!({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": x}});
                    errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
                }
            }
        }
        for input in schema.inputs.iter().filter(|i| is_file_combo(i) && !custom.contains(&i.name.as_str())) {
            let Some(Json::String(name)) = inputs.get(&input.name) else { continue };
            let exists = self.folders.annotated_path(name).map(|p| p.is_file()).unwrap_or(false);
            if !exists {
                let e = json!({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                               "details": format!("{} - Invalid image file: {name}", input.name),
                               "extra_info": {"input_name": input.name}});
                errors.push(self.tag(id, e, ErrorCategory::InvalidInput));
            }
        }

        Ok((errors.is_empty() && valid, errors))
    }
}

fn compare_error(a: &Json, b: &Json) -> PyException {
    PyException::new(
        "TypeError",
        format!("'<' not supported between instances of '{}' and '{}'", py_type_name(a), py_type_name(b)),
    )
}

/// Validates `prompt` (rewriting its constants) as ComfyUI's `validate_prompt` does.
/// `partial` is the body's `partial_execution_targets` (only those outputs are kept).
pub fn validate_prompt(
    registry: &NodeRegistry,
    folders: &Folders,
    prompt: &mut Json,
    partial: Option<&Json>,
) -> Validation {
    let fail = |error: Json| Validation { error: Some(error), outputs: Vec::new(), node_errors: Map::new() };
    let Some(obj) = prompt.as_object() else {
        return fail(prompt_error(
            "invalid_prompt",
            "Cannot execute because the prompt is not a JSON object.",
            "",
            ErrorCategory::InvalidInput,
            None,
        ));
    };
    let partial: Option<Vec<String>> =
        partial.and_then(Json::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
    let partial_given = partial.is_some();
    let mut outputs = Vec::new();
    for (id, node) in obj {
        let Some(ct) = node.as_object().and_then(|n| n.get("class_type")) else {
            return fail(prompt_error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                &format!("Node ID '#{id}'"),
                ErrorCategory::InvalidInput,
                Some((id, Json::Null)),
            ));
        };
        let schema = ct.as_str().and_then(|c| registry.schema(c));
        let Some(schema) = schema else {
            return fail(prompt_error(
                "invalid_prompt",
                &format!("Cannot execute because node {} does not exist.", py_str(ct)),
                &format!("Node ID '#{id}'"),
                ErrorCategory::InvalidInput,
                Some((id, ct.clone())),
            ));
        };
        if schema.output_node && (!partial_given || partial.as_ref().is_some_and(|p| p.contains(id))) {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return fail(prompt_error("prompt_no_outputs", "Prompt has no outputs", "", ErrorCategory::InvalidInput, None));
    }

    let mut v = Validator {
        registry,
        folders,
        prompt,
        memo: Memo::default(),
        in_progress: HashSet::new(),
        file_lists: HashMap::new(),
    };
    let mut good = Vec::new();
    let mut failed: Vec<(String, Vec<Json>)> = Vec::new();
    let mut node_errors = Map::new();
    for o in &outputs {
        let (ok, reasons) = match v.validate(o) {
            Ok(r) => r,
            Err(ex) => {
                let e = json!({"type": "exception_during_validation", "message": "Exception when validating node",
                    "details": ex.message, "extra_info": {"exception_type": ex.kind, "traceback": ex.traceback()}});
                let reasons = vec![v.tag(o, e, ErrorCategory::InvalidInput)];
                v.memo.set(o, (false, reasons.clone()));
                (false, reasons)
            }
        };
        if ok {
            good.push(o.clone());
            continue;
        }
        tracing::warn!(output = %o, "prompt output failed validation");
        failed.push((o.clone(), reasons));
        // ComfyUI walks the whole memo for every failed output.
        for id in &v.memo.order {
            let (ok, reasons) = &v.memo.map[id];
            if *ok || reasons.is_empty() {
                continue;
            }
            let entry = node_errors
                .entry(id.clone())
                .or_insert_with(|| json!({"errors": reasons, "dependent_outputs": [], "class_type": v.class_of(id)}));
            if let Some(d) = entry.get_mut("dependent_outputs").and_then(Json::as_array_mut) {
                d.push(Json::String(o.clone()));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failed
            .iter()
            .flat_map(|(_, es)| es.iter())
            .map(|e| format!("{}: {}", e["message"].as_str().unwrap_or(""), e["details"].as_str().unwrap_or("")))
            .collect();
        let missing_model = node_errors
            .values()
            .any(|ne| ne["errors"].as_array().is_some_and(|es| es.iter().any(|e| e["category"] == "missing_model")));
        let category = if missing_model { ErrorCategory::MissingModel } else { ErrorCategory::InvalidInput };
        let error = prompt_error(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            &details.join("\n"),
            category,
            None,
        );
        return Validation { error: Some(error), outputs: Vec::new(), node_errors };
    }
    Validation { error: None, outputs: good, node_errors }
}
