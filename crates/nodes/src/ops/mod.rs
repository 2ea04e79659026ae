//! Shared pixel operations: the plain array type, resampling, filtering and file output.

pub mod array;
pub mod decode;
pub mod filter;
pub mod output;
pub mod pyjson;
pub mod resample;

pub use array::Array;
