//! `CheckpointLoader` (deprecated): a checkpoint plus a legacy YAML config that may switch
//! the model to v-prediction and set the CLIP layer.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::loading::load_checkpoint;
use crate::sd::model::SdModel;

/// The config files ComfyUI ships in `models/configs` (the combo lists them).
pub const SHIPPED_CONFIGS: [&str; 11] = [
    "anything_v3.yaml",
    "v1-inference.yaml",
    "v1-inference_clip_skip_2.yaml",
    "v1-inference_clip_skip_2_fp16.yaml",
    "v1-inference_fp16.yaml",
    "v1-inpainting-inference.yaml",
    "v2-inference-v.yaml",
    "v2-inference-v_fp32.yaml",
    "v2-inference.yaml",
    "v2-inference_fp32.yaml",
    "v2-inpainting-inference.yaml",
];

/// What CheckpointLoader reads from a config: `model.params.parameterization` and
/// `model.params.cond_stage_config.params.layer_idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigOverrides {
    /// `parameterization: "v"`.
    pub v_prediction: bool,
    /// `layer_idx`.
    pub layer_idx: Option<i32>,
}

/// Extracts the two keys from YAML text (line-based: `key: value`).
pub fn parse_config(text: &str) -> ConfigOverrides {
    let mut o = ConfigOverrides::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("parameterization:") {
            o.v_prediction = v.trim().trim_matches(|c| c == '"' || c == '\'') == "v";
        } else if let Some(v) = t.strip_prefix("layer_idx:") {
            o.layer_idx = v.trim().parse().ok();
        }
    }
    o
}

/// The overrides of a shipped config, for when the file itself is not installed.
fn shipped(name: &str) -> ConfigOverrides {
    ConfigOverrides {
        v_prediction: name.starts_with("v2-inference-v"),
        layer_idx: if name.contains("clip_skip_2") || name == "anything_v3.yaml" { Some(-2) } else { None },
    }
}

/// `CheckpointLoader` (`nodes.py`, deprecated).
pub struct CheckpointLoader;

impl Node for CheckpointLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CheckpointLoader", "model/loaders")
            .display(Some("Load Checkpoint With Config (DEPRECATED)"))
            .deprecated()
            .aliases(&["load model", "model loader"])
            .push_input(
                Section::Required,
                "config_name",
                InputType::Combo(SHIPPED_CONFIGS.iter().map(|s| json!(s)).collect()),
                json!({}),
            )
            .push_input(Section::Required, "ckpt_name", InputType::Files("checkpoints".into()), json!({}))
            .output("MODEL")
            .output("CLIP")
            .output("VAE")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let config = inputs.str("config_name")?;
        let ck = load_checkpoint(ctx.folders, inputs.str("ckpt_name")?)?;
        let o = match ctx.folders.model_path("configs", config) {
            Some(p) => parse_config(&std::fs::read_to_string(&p).map_err(|e| NodeError::missing_model(format!("{}: {e}", p.display())))?),
            None => shipped(config),
        };
        let mut model: SdModel = ck.model.clone();
        if o.v_prediction && model.sampling.prediction != comfy_sampling::Prediction::V {
            let mut s = (*model.sampling).clone();
            s.prediction = comfy_sampling::Prediction::V;
            let s = std::sync::Arc::new(s);
            model.net = model
                .net
                .with_sampling(s.clone())
                .ok_or_else(|| NodeError::internal("this model cannot be switched to v-prediction"))?;
            model.sampling = s;
        }
        let clip = match (&ck.clip, o.layer_idx) {
            (Some(c), Some(idx)) => {
                let mut c = c.clone();
                c.layer_idx = Some(idx);
                Value::object(c)
            }
            (Some(c), None) => Value::object(c.clone()),
            (None, _) => Value::None,
        };
        Ok(Outputs::new(vec![Value::object(model), clip, Value::object(ck.vae.clone())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_keys() {
        let o = parse_config("model:\n  params:\n    parameterization: \"v\"\n    cond_stage_config:\n      params:\n        layer_idx: -2\n");
        assert_eq!(o, ConfigOverrides { v_prediction: true, layer_idx: Some(-2) });
        assert_eq!(shipped("v1-inference.yaml"), ConfigOverrides::default());
        assert!(shipped("v2-inference-v_fp32.yaml").v_prediction);
    }
}
