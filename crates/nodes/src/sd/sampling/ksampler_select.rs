//! `KSamplerSelect`: a SAMPLER by name.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use comfy_sampling::SAMPLER_NAMES;
use serde_json::json;

use super::names;
use crate::sd::objects::SamplerObj;

/// `KSamplerSelect` (`comfy_extras.nodes_custom_sampler`, V3).
pub struct KSamplerSelect;

impl Node for KSamplerSelect {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerSelect", "model/sampling/samplers")
            .v3()
            .display(None)
            .module("comfy_extras.nodes_custom_sampler")
            .push_input(Section::Required, "sampler_name", InputType::ComboV3(names(&SAMPLER_NAMES)), json!({}))
            .output("SAMPLER")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("sampler_name")?;
        if !SAMPLER_NAMES.contains(&name) {
            return Err(NodeError::invalid_input(format!("Unknown sampler: {name}")));
        }
        Ok(Outputs::new(vec![Value::object(SamplerObj { name: name.to_string() })]))
    }
}
