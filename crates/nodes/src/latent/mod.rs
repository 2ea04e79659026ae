//! LATENT nodes: creating, resizing, combining, batching, saving and loading latents.

pub mod blend;
pub mod composite;
pub mod empty;
pub mod from_batch;
pub mod load;
pub mod repeat_batch;
pub mod save;
pub mod set_noise_mask;
pub mod upscale;
pub mod upscale_by;
