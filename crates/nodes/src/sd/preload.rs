//! Start-up preloading (`--preload-checkpoint`): checkpoints loaded into the resident-model
//! cache before the server answers, so the first prompt naming them pays no load cost.

use comfy_graph::{Folders, NodeError};

use crate::sd::loading::load_checkpoint;

/// Loads checkpoint `name` (relative to `models/checkpoints`) into the resident cache, as
/// `CheckpointLoaderSimple` would; an unknown name is a `missing_model` error.
pub fn preload_checkpoint(folders: &Folders, name: &str) -> Result<(), NodeError> {
    load_checkpoint(folders, name).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use comfy_graph::ErrorCategory;

    #[test]
    fn unknown_checkpoint_is_missing_model() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        let e = preload_checkpoint(&folders, "nope.safetensors").unwrap_err();
        assert_eq!(e.category(), ErrorCategory::MissingModel);
        assert!(e.to_string().contains("nope.safetensors"), "{e}");
    }
}
