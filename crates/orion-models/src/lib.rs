//! Orion's models: GPT-2 and Llama as IR graphs, weight files, tokenizers, generation and training.
//!
//! - `error`: the crate's one error type.
//! - `config`: model hyper-parameters, built-in configurations, Hugging Face `config.json`.
//! - `model`: GPT-2 and Llama graphs (forward, prefill, KV-cache decode step) and `Model`.
//! - `weights`: safetensors and llama2.c weight files, canonical safetensors export.
//! - `generate`: prefill + KV-cache decoding with greedy/temperature/top-k/top-p sampling.
//! - `tokenizer`: GPT-2 (r50k_base) and SentencePiece BPE tokenizers from .model, .json and .bin files.
//! - `data`: the built-in story corpus, token streams (text, corpus, uint16 shards) and the batcher.
//! - `optim`: AdamW, learning-rate schedules, global-norm clipping, dynamic loss scaling.
//! - `checkpoint`: atomic, checksummed training checkpoints that resume bit-identically.
//! - `metrics`: the per-step `metrics.jsonl` log and its `loss.png` plot.
//! - `train`: per-layer training programs, one forward/backward step, the training loop.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{Model, WeightMode};
