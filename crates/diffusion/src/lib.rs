//! Stable Diffusion (SD1.5, SD2.x, SDXL) on candle, from ComfyUI's single-file checkpoints.
//!
//! # Layout
//! - [`error`]: the crate's error type.
//! - [`checkpoint`]: memory-mapped safetensors reading, dtype policy, architecture detection.
//! - [`recipe`]: deterministic random-weight checkpoints (full-size and tiny) in the real key layout.
//! - [`tokenizer`]: CLIP BPE and ComfyUI's prompt weighting syntax.
//! - [`clip`]: CLIP-L / OpenCLIP-G text encoders and SDXL's ADM vector.
//! - [`ops`]: the hot tensor ops (convolution, attention, normalisation) behind one small module.
//! - [`flash`]: flash attention on CUDA (feature `flash-attn`), dispatched to from [`ops`].
//! - [`unet`]: the LDM UNet with the checkpoint's own key names (incl. SDXL label embedding).
//! - [`vae`]: the KL autoencoder, encode/decode, tiled variants.
//! - [`lora`]: LoRA files: key mapping onto UNet / text-encoder weights and weight patching.

pub mod checkpoint;
pub mod clip;
pub mod error;
pub mod flash;
pub mod lora;
pub mod ops;
pub mod recipe;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use error::{Error, Result};
