//! Training data: the built-in story corpus, token streams and the batcher that cuts them into
//! (inputs, targets) windows.
//!
//! - `corpus`: a deterministic generator of short children's stories (no downloads).
//! - `shards`: llama2.c-style pretokenised files (flat little-endian `u16` ids).
//! - `dataset`: [`TokenStream`] (built-in corpus, a text file, shards) and [`Batcher`] (windows of
//!   T+1 tokens, seeded shuffling, validation split, resumable [`BatcherState`]).

pub mod corpus;
mod corpus_words;
pub mod dataset;
pub mod shards;

pub use corpus::{generate_corpus, DEFAULT_CORPUS_BYTES, DEFAULT_CORPUS_SEED, STORY_SEPARATOR};
pub use dataset::{Batch, Batcher, BatcherConfig, BatcherState, TokenStream};
