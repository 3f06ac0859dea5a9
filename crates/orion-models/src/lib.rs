//! Orion's models: GPT-2 and Llama as IR graphs, weight files, tokenizers, generation and training.
//!
//! - `error`: the crate's one error type.
//! - `tokenizer`: GPT-2 (r50k_base) and SentencePiece BPE tokenizers from .model, .json and .bin files.

pub mod error;
pub mod tokenizer;

pub use error::{ModelError, Result};
