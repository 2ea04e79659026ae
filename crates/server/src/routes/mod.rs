//! One module per route group; handlers parse, call the engine and shape JSON.

pub mod frontend;
pub mod history;
pub mod info;
pub mod jobs;
pub mod prompt;
pub mod upload;
pub mod userdata;
pub mod view;
pub mod ws;
