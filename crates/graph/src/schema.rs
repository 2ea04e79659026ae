//! A node's declared interface, and its `/object_info` rendering.
//!
//! Schemas are built in Rust with a small builder and rendered to exactly the JSON ComfyUI
//! 0.29 returns (`shared/spec/object_info_core.json` is the reference, checked by tests).

use serde_json::{json, Map, Value as Json};

/// Where an input is declared (`input.required`, `input.optional`, `input.hidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Required,
    Optional,
    Hidden,
}

impl Section {
    pub fn key(self) -> &'static str {
        match self {
            Section::Required => "required",
            Section::Optional => "optional",
            Section::Hidden => "hidden",
        }
    }
}

/// The type part of an input declaration.
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    /// A named type: `"INT"`, `"IMAGE"`, `"*"`, or a comma-separated union.
    Named(String),
    /// A fixed list of choices, rendered ComfyUI-V1 style: `[[choices...], {options}]`.
    Combo(Vec<Json>),
    /// A fixed list rendered V3 style: `["COMBO", {"multiselect": false, "options": [...], ...}]`.
    ComboV3(Vec<Json>),
    /// The files of a model folder (`checkpoints`, `vae`, ...), listed at render time (V1 style).
    Files(String),
    /// The files of a model folder followed by fixed entries, listed at render time and
    /// validated like [`InputType::Files`] (VAELoader: the `vae` files, then `"pixel_space"`).
    FilesThen(String, Vec<String>),
    /// The top-level image files of the input directory (LoadImage), listed at render time.
    InputImages,
    /// All top-level files of the input directory (LoadImageMask), listed at render time.
    InputFiles,
    /// Top-level input files whose name ends with the suffix (LoadLatent: `.latent`).
    InputFilesWithSuffix(String),
}

/// One declared input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub section: Section,
    pub kind: InputType,
    /// The options object (`default`, `min`, `max`, `step`, `tooltip`, ...), in ComfyUI's key order.
    pub options: Map<String, Json>,
}

impl InputSpec {
    /// The declared type name used by link validation (`COMBO` for choices).
    pub fn type_name(&self) -> &str {
        match &self.kind {
            InputType::Named(t) => t,
            _ => "COMBO",
        }
    }
    pub fn is_combo(&self) -> bool {
        !matches!(self.kind, InputType::Named(_))
    }
    pub fn option(&self, key: &str) -> Option<&Json> {
        self.options.get(key)
    }
}

/// One declared output slot.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub type_name: String,
    pub name: String,
    pub is_list: bool,
    pub tooltip: Option<String>,
}

/// Which generation of ComfyUI's node API the node is written in; it decides which keys
/// `/object_info` shows (V3 nodes show every key, V1 nodes only the ones they set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStyle {
    V1,
    V3,
}

/// Everything `/object_info` says about a node class, plus what the executor needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSchema {
    pub name: String,
    pub display_name: Option<String>,
    pub description: String,
    pub python_module: String,
    pub category: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub output_node: bool,
    pub is_input_list: bool,
    /// Re-run on every prompt even when inputs are unchanged (`NOT_IDEMPOTENT`).
    pub not_idempotent: bool,
    pub deprecated: bool,
    pub experimental: bool,
    pub search_aliases: Option<Vec<String>>,
    pub essentials_category: Option<String>,
    pub style: SchemaStyle,
    /// V1 nodes that declare `OUTPUT_TOOLTIPS` show them even though they are V1.
    pub show_output_tooltips: bool,
    /// `OUTPUT_TOOLTIPS` entries beyond the outputs (a subclass inheriting its parent's list,
    /// e.g. `LoraLoaderModelOnly`), listed after the outputs' own tooltips.
    pub extra_output_tooltips: Vec<String>,
}

impl NodeSchema {
    /// Starts a V1-style schema (`nodes.py` classes).
    pub fn new(name: &str, category: &str) -> Self {
        NodeSchema {
            name: name.to_string(),
            display_name: Some(name.to_string()),
            description: String::new(),
            python_module: "nodes".to_string(),
            category: category.to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            is_input_list: false,
            not_idempotent: false,
            deprecated: false,
            experimental: false,
            search_aliases: None,
            essentials_category: None,
            style: SchemaStyle::V1,
            show_output_tooltips: false,
            extra_output_tooltips: Vec::new(),
        }
    }

    pub fn v3(mut self) -> Self {
        self.style = SchemaStyle::V3;
        self
    }
    pub fn display(mut self, display_name: Option<&str>) -> Self {
        self.display_name = display_name.map(str::to_string);
        self
    }
    pub fn description(mut self, d: &str) -> Self {
        self.description = d.to_string();
        self
    }
    pub fn module(mut self, m: &str) -> Self {
        self.python_module = m.to_string();
        self
    }
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }
    pub fn experimental(mut self) -> Self {
        self.experimental = true;
        self
    }
    pub fn aliases(mut self, a: &[&str]) -> Self {
        self.search_aliases = Some(a.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn essentials(mut self, c: &str) -> Self {
        self.essentials_category = Some(c.to_string());
        self
    }

    /// Adds an input with a named type and its options object (`json!({...})`).
    pub fn input(self, section: Section, name: &str, type_name: &str, options: Json) -> Self {
        self.push_input(section, name, InputType::Named(type_name.to_string()), options)
    }
    pub fn required(self, name: &str, type_name: &str, options: Json) -> Self {
        self.input(Section::Required, name, type_name, options)
    }
    pub fn optional(self, name: &str, type_name: &str, options: Json) -> Self {
        self.input(Section::Optional, name, type_name, options)
    }
    /// A hidden input such as `("prompt", "PROMPT")`.
    pub fn hidden(self, name: &str, type_name: &str) -> Self {
        self.input(Section::Hidden, name, type_name, json!({}))
    }
    /// Adds an input of any [`InputType`] (combos, file lists).
    pub fn push_input(mut self, section: Section, name: &str, kind: InputType, options: Json) -> Self {
        let options = match options {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        self.inputs.push(InputSpec { name: name.to_string(), section, kind, options });
        self
    }

    /// Adds an output slot whose name is its type.
    pub fn output(self, type_name: &str) -> Self {
        self.named_output(type_name, type_name, None)
    }
    pub fn named_output(mut self, type_name: &str, name: &str, tooltip: Option<&str>) -> Self {
        self.outputs.push(OutputSpec {
            type_name: type_name.to_string(),
            name: name.to_string(),
            is_list: false,
            tooltip: tooltip.map(str::to_string),
        });
        if tooltip.is_some() {
            self.show_output_tooltips = true;
        }
        self
    }

    /// Appends `OUTPUT_TOOLTIPS` entries that belong to no output (see
    /// [`NodeSchema::extra_output_tooltips`]).
    pub fn extra_output_tooltips(mut self, tooltips: &[&str]) -> Self {
        self.extra_output_tooltips.extend(tooltips.iter().map(|t| t.to_string()));
        self.show_output_tooltips = true;
        self
    }

    /// Looks up a declared input by name.
    pub fn find_input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The choices of a combo input, with file lists resolved through `files`.
    pub fn combo_choices(&self, input: &InputSpec, files: &dyn FileLister) -> Option<Vec<Json>> {
        match &input.kind {
            InputType::Named(_) => None,
            InputType::Combo(c) | InputType::ComboV3(c) => Some(c.clone()),
            InputType::Files(folder) => Some(files.model_files(folder).into_iter().map(Json::String).collect()),
            InputType::FilesThen(folder, extra) => Some(
                files.model_files(folder).into_iter().chain(extra.iter().cloned()).map(Json::String).collect(),
            ),
            InputType::InputImages => Some(files.input_files(true).into_iter().map(Json::String).collect()),
            InputType::InputFiles => Some(files.input_files(false).into_iter().map(Json::String).collect()),
            InputType::InputFilesWithSuffix(sfx) => {
                Some(files.input_files_with_suffix(sfx).into_iter().map(Json::String).collect())
            }
        }
    }

    /// The `/object_info` entry for this node.
    pub fn to_object_info(&self, files: &dyn FileLister) -> Json {
        let v3 = self.style == SchemaStyle::V3;
        let mut input = Map::new();
        let mut input_order = Map::new();
        for section in [Section::Required, Section::Optional, Section::Hidden] {
            let mut sec = Map::new();
            let mut order = Vec::new();
            for i in self.inputs.iter().filter(|i| i.section == section) {
                let spec = match (&i.kind, section) {
                    (InputType::Named(t), Section::Hidden) => Json::String(t.clone()),
                    // V1 nodes show an options object only when they declare one.
                    (InputType::Named(t), _) if !v3 && i.options.is_empty() => json!([t]),
                    (InputType::Named(t), _) => json!([t, Json::Object(i.options.clone())]),
                    (InputType::ComboV3(c), _) => {
                        let mut o = Map::new();
                        o.insert("multiselect".into(), Json::Bool(false));
                        o.insert("options".into(), Json::Array(c.clone()));
                        for (k, v) in &i.options {
                            o.insert(k.clone(), v.clone());
                        }
                        json!(["COMBO", Json::Object(o)])
                    }
                    _ => {
                        let choices = self.combo_choices(i, files).unwrap_or_default();
                        if !v3 && i.options.is_empty() {
                            json!([choices])
                        } else {
                            json!([choices, Json::Object(i.options.clone())])
                        }
                    }
                };
                sec.insert(i.name.clone(), spec);
                order.push(Json::String(i.name.clone()));
            }
            if !order.is_empty() {
                input.insert(section.key().into(), Json::Object(sec));
                input_order.insert(section.key().into(), Json::Array(order));
            }
        }
        if !input.contains_key("required") {
            input.insert("required".into(), json!({}));
            if v3 {
                // V3 nodes always list a (possibly empty) required order (DisableNoise).
                let mut order = Map::new();
                order.insert("required".into(), json!([]));
                order.extend(std::mem::take(&mut input_order));
                input_order = order;
            }
        }
        let mut o = Map::new();
        o.insert("input".into(), Json::Object(input));
        o.insert("input_order".into(), Json::Object(input_order));
        o.insert("is_input_list".into(), Json::Bool(self.is_input_list));
        o.insert("output".into(), self.outputs.iter().map(|x| Json::String(x.type_name.clone())).collect());
        o.insert("output_is_list".into(), self.outputs.iter().map(|x| Json::Bool(x.is_list)).collect());
        o.insert("output_name".into(), self.outputs.iter().map(|x| Json::String(x.name.clone())).collect());
        let tooltips = || -> Json {
            self.outputs
                .iter()
                .map(|x| x.tooltip.clone().map(Json::String).unwrap_or(Json::Null))
                .chain(self.extra_output_tooltips.iter().cloned().map(Json::String))
                .collect()
        };
        if v3 {
            o.insert("output_tooltips".into(), tooltips());
            o.insert("output_matchtypes".into(), Json::Null);
        }
        o.insert("name".into(), Json::String(self.name.clone()));
        o.insert("display_name".into(), self.display_name.clone().map(Json::String).unwrap_or(Json::Null));
        o.insert("description".into(), Json::String(self.description.clone()));
        o.insert("python_module".into(), Json::String(self.python_module.clone()));
        o.insert("category".into(), Json::String(self.category.clone()));
        o.insert("output_node".into(), Json::Bool(self.output_node));
        if !v3 {
            // V1 entries carry `has_intermediate_output` right after `output_node`, then the
            // optional keys (ComfyUI 0.29's key order).
            o.insert("has_intermediate_output".into(), Json::Bool(false));
        }
        if v3 || self.deprecated {
            o.insert("deprecated".into(), Json::Bool(self.deprecated));
        }
        if v3 || self.experimental {
            o.insert("experimental".into(), Json::Bool(self.experimental));
        }
        if !v3 && self.show_output_tooltips {
            o.insert("output_tooltips".into(), tooltips());
        }
        if v3 {
            o.insert("dev_only".into(), Json::Bool(false));
            o.insert("api_node".into(), Json::Bool(false));
            o.insert("price_badge".into(), Json::Null);
        }
        if v3 || self.search_aliases.is_some() {
            o.insert("search_aliases".into(), json!(self.search_aliases));
        }
        if v3 || self.essentials_category.is_some() {
            o.insert("essentials_category".into(), json!(self.essentials_category));
        }
        if v3 {
            o.insert("has_intermediate_output".into(), Json::Bool(false));
        }
        Json::Object(o)
    }
}

/// Lists the files that combo inputs offer (implemented by [`crate::Folders`]).
pub trait FileLister {
    /// Files of a model folder (`checkpoints`, `vae`, ...), relative, sorted.
    fn model_files(&self, folder: &str) -> Vec<String>;
    /// Top-level files of the input directory; only images when `images_only`.
    fn input_files(&self, images_only: bool) -> Vec<String>;
    /// Top-level files of the input directory whose name ends with `suffix`, sorted.
    fn input_files_with_suffix(&self, suffix: &str) -> Vec<String> {
        self.input_files(false).into_iter().filter(|f| f.ends_with(suffix)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_prompt;
    use crate::{ExecContext, Folders, Inputs, Node, NodeError, NodeRegistry, Outputs};

    /// A VAELoader-shaped node: `vae` files then `pixel_space`.
    struct Loader;
    impl Node for Loader {
        fn schema(&self) -> NodeSchema {
            NodeSchema::new("Loader", "test")
                .push_input(
                    Section::Required,
                    "vae_name",
                    InputType::FilesThen("vae".into(), vec!["pixel_space".into()]),
                    json!({}),
                )
                .output("VAE")
        }
        fn execute(&self, _inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
            Ok(Outputs::new(vec![]))
        }
    }
    struct Sink;
    impl Node for Sink {
        fn schema(&self) -> NodeSchema {
            NodeSchema::new("Sink", "test").required("vae", "VAE", json!({})).output_node()
        }
        fn execute(&self, _inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
            Ok(Outputs::new(vec![]))
        }
    }

    #[test]
    fn files_then_lists_the_folder_then_the_fixed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        let info = Loader.schema().to_object_info(&folders);
        assert_eq!(info["input"]["required"]["vae_name"], json!([["pixel_space"]]));
        std::fs::write(dir.path().join("models/vae/b.safetensors"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("models/vae/sub")).unwrap();
        std::fs::write(dir.path().join("models/vae/sub/a.pt"), b"x").unwrap();
        std::fs::write(dir.path().join("models/vae/notes.txt"), b"x").unwrap();
        let info = Loader.schema().to_object_info(&folders);
        assert_eq!(info["input"]["required"]["vae_name"], json!([["b.safetensors", "sub/a.pt", "pixel_space"]]));
        assert!(Loader.schema().inputs[0].is_combo());
        assert_eq!(Loader.schema().inputs[0].type_name(), "COMBO");
    }

    #[test]
    fn files_then_validates_like_files() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        std::fs::write(dir.path().join("models/vae/v.safetensors"), b"x").unwrap();
        let mut reg = NodeRegistry::new();
        reg.register(Loader);
        reg.register(Sink);
        let prompt = |name: &str| {
            json!({"1": {"class_type": "Loader", "inputs": {"vae_name": name}},
                   "2": {"class_type": "Sink", "inputs": {"vae": ["1", 0]}}})
        };
        for ok in ["v.safetensors", "pixel_space"] {
            let v = validate_prompt(&reg, &folders, &mut prompt(ok), None);
            assert!(v.ok() && v.node_errors.is_empty(), "{ok}: {:?} {:?}", v.error, v.node_errors);
        }
        let v = validate_prompt(&reg, &folders, &mut prompt("gone.safetensors"), None);
        assert!(!v.ok());
        let e = &v.node_errors["1"]["errors"][0];
        assert_eq!(e["type"], "value_not_in_list");
        assert_eq!(e["details"], "vae_name: 'gone.safetensors' not in ['v.safetensors', 'pixel_space']");
        assert_eq!(e["extra_info"]["input_config"], json!([["v.safetensors", "pixel_space"], {}]));
        assert_eq!(e["category"], "missing_model");
    }
}
