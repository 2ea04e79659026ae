//! IMAGE nodes: loading, saving, creating, resizing, filtering and compositing images.

pub mod batch;
pub mod blend;
pub mod blur;
pub mod composite_masked;
pub mod crop;
pub mod empty_image;
pub mod invert;
pub mod load_image;
pub mod load_image_mask;
pub mod pad_for_outpaint;
pub mod preview_image;
pub mod save_image;
pub mod scale;
pub mod scale_by;
pub mod sharpen;
