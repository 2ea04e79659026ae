//! Workflows: the editor's UI format → API format, validation, import and execution.
//!
//! - [`ui`]: converts the editor's `nodes`/`links` JSON to an API-format prompt using
//!   `/object_info` (widget order, `control_after_generate` values, converted widgets).
//! - [`load`]: reads a workflow file in either format.
//! - [`import`]: `import-workflow` (validate as `/prompt` does, save to the user's workflows).
//! - [`execute`]: `execute-workflow` (on a server, or in-process) and output download.

pub mod execute;
pub mod import;
pub mod load;
pub mod ui;
