//! Saving nodes.

pub mod checkpoint_save;
