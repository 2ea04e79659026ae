//! MASK nodes (`comfy_extras.nodes_mask`, V3 schema, category `image/mask`).

use comfy_graph::NodeSchema;

pub mod composite;
pub mod crop;
pub mod feather;
pub mod grow;
pub mod image_to_mask;
pub mod invert;
pub mod solid;
pub mod to_image;

/// The common V3 schema head of the mask nodes.
fn v3(name: &str, display: &str, aliases: Option<&[&str]>) -> NodeSchema {
    let s = NodeSchema::new(name, "image/mask").v3().display(Some(display)).module("comfy_extras.nodes_mask");
    match aliases {
        Some(a) => s.aliases(a),
        None => s,
    }
}
