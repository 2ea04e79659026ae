//! `UNETLoader` ("Load Diffusion Model"): a UNet-only file from `models/diffusion_models`
//! (or `models/unet`).

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section, Value};
use serde_json::json;

use crate::sd::loading::{load_unet, UNET_WEIGHT_DTYPES};

/// `UNETLoader` (`nodes.py`).
///
/// The file holds the UNet's keys without the checkpoint's `model.diffusion_model.` prefix (a
/// whole checkpoint's UNet is accepted too). The family (SD1.x, SD2.x with its v-prediction
/// test, SDXL, SDXL refiner) is detected from the keys. `weight_dtype` `fp8_e4m3fn` /
/// `fp8_e4m3fn_fast` / `fp8_e5m2` round every weight to that float8 format (computation stays
/// float32, as ComfyUI's manual cast on a CPU).
pub struct UNETLoader;

impl Node for UNETLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("UNETLoader", "model/loaders")
            .display(Some("Load Diffusion Model"))
            .aliases(&[])
            .push_input(Section::Required, "unet_name", InputType::Files("diffusion_models".into()), json!({}))
            .push_input(
                Section::Required,
                "weight_dtype",
                InputType::Combo(UNET_WEIGHT_DTYPES.iter().map(|s| json!(s)).collect()),
                json!({"advanced": true}),
            )
            .output("MODEL")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let model = load_unet(ctx.folders, inputs.str("unet_name")?, inputs.str("weight_dtype")?)?;
        Ok(Outputs::new(vec![Value::object((*model).clone())]))
    }
}
