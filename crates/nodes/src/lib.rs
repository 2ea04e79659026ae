//! ComfyUI's node classes for comfy-rs, and the registry that lists them.
//!
//! # Layout
//! - [`types`]: the runtime shapes of IMAGE, MASK and LATENT values (candle tensors).
//! - [`ops`]: shared pixel maths (resampling, filters, compositing helpers, file output).
//! - one file per node, grouped by category folder ([`image`], [`mask`], [`latent`]).
//! - [`register_all`]: adds every node to a [`comfy_graph::NodeRegistry`].

pub mod image;
pub mod latent;
pub mod mask;
pub mod ops;
pub mod sd;
pub mod types;
pub mod values;

#[cfg(test)]
mod schema_tests;

use comfy_graph::NodeRegistry;

/// Registers every node class this crate implements (in `/object_info` order).
pub fn register_all(registry: &mut NodeRegistry) {
    registry.register(latent::empty::EmptyLatentImage);
    registry.register(latent::upscale::LatentUpscale);
    registry.register(latent::upscale_by::LatentUpscaleBy);
    registry.register(latent::composite::LatentComposite);
    registry.register(latent::blend::LatentBlend);
    registry.register(latent::from_batch::LatentFromBatch);
    registry.register(latent::repeat_batch::RepeatLatentBatch);
    registry.register(latent::set_noise_mask::SetLatentNoiseMask);
    registry.register(image::save_image::SaveImage);
    registry.register(image::preview_image::PreviewImage::new());
    registry.register(image::load_image::LoadImage);
    registry.register(image::load_image_mask::LoadImageMask);
    registry.register(image::scale::ImageScale);
    registry.register(image::scale_by::ImageScaleBy);
    registry.register(image::invert::ImageInvert);
    registry.register(image::batch::ImageBatch);
    registry.register(image::pad_for_outpaint::ImagePadForOutpaint);
    registry.register(image::crop::ImageCrop);
    registry.register(image::composite_masked::ImageCompositeMasked);
    registry.register(image::blend::ImageBlend);
    registry.register(image::blur::ImageBlur);
    registry.register(image::sharpen::ImageSharpen);
    registry.register(image::empty_image::EmptyImage);
    registry.register(mask::solid::SolidMask);
    registry.register(mask::invert::InvertMask);
    registry.register(mask::to_image::MaskToImage);
    registry.register(mask::image_to_mask::ImageToMask);
    registry.register(mask::grow::GrowMask);
    registry.register(mask::feather::FeatherMask);
    registry.register(mask::crop::CropMask);
    registry.register(mask::composite::MaskComposite);
    registry.register(latent::save::SaveLatent);
    registry.register(latent::load::LoadLatent);
    sd::register_sd(registry);
    sd::loaders::register_loaders(registry);
}

/// A registry holding every node class.
pub fn registry() -> NodeRegistry {
    let mut r = NodeRegistry::new();
    register_all(&mut r);
    r
}
