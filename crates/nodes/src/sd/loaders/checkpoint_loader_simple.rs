//! `CheckpointLoaderSimple`: MODEL, CLIP and VAE from one checkpoint file.

use comfy_graph::{ExecContext, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use crate::sd::loading::load_checkpoint;

/// `CheckpointLoaderSimple` (`nodes.py`), cached in the resident-model cache.
pub struct CheckpointLoaderSimple;

impl Node for CheckpointLoaderSimple {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CheckpointLoaderSimple", "model/loaders")
            .display(Some("Load Checkpoint"))
            .description("Loads a diffusion model checkpoint, diffusion models are used to denoise latents.")
            .aliases(&["load model", "checkpoint", "model loader", "load checkpoint", "ckpt", "model"])
            .push_input(
                Section::Required,
                "ckpt_name",
                InputType::Files("checkpoints".into()),
                json!({"tooltip": "The name of the checkpoint (model) to load."}),
            )
            .named_output("MODEL", "MODEL", Some("The model used for denoising latents."))
            .named_output("CLIP", "CLIP", Some("The CLIP model used for encoding text prompts."))
            .named_output(
                "VAE",
                "VAE",
                Some("The VAE model used for encoding and decoding images to and from latent space."),
            )
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("ckpt_name")?;
        let ck = load_checkpoint(ctx.folders, name)?;
        super::checkpoint_outputs(&ck)
    }
}
