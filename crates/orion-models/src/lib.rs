//! Orion's models: GPT-2 and Llama as IR graphs, weight files, tokenizers, generation and training.
//!
//! - `error`: the crate's one error type.

pub mod error;

pub use error::{ModelError, Result};
