//! Training checkpoints: everything needed to continue a run bit-identically — step, model config,
//! weights, AdamW state, loss-scaler state, RNG state, the arithmetic of the run's matrix products,
//! the data position (the batcher's state, opaque here) and free-form extras.
//!
//! A checkpoint directory holds one file, [`CHECKPOINT_FILE`] (layout in `format`). Saving is atomic:
//! the bytes go to a temporary file in the same directory, which is synced, renamed over the old file,
//! and the directory is synced; a failure at any point leaves the previous checkpoint as it was.
//! Loading verifies the magic, the length and a CRC-32 of the whole content before decoding, so a
//! truncated or corrupted file is an error naming the path, never a panic and never silently wrong
//! weights.
//!
//! Invariants: tensors are stored as raw little-endian f32 bits (NaN payloads included), so
//! `load(save(c)) == c` bit for bit; the RNG is stored as seed + stream + word position, which
//! restores a `ChaCha8Rng` to exactly the same place in its stream.

pub mod format;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::optim::{AdamWState, LossScalerState};
use orion_core::cpu::ProductPrecision;
use orion_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name of the checkpoint file inside a checkpoint directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.orionckpt";

/// The exact position of a `ChaCha8Rng`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// Position in the key stream, in 32-bit words (`ChaCha8Rng::get_word_pos`).
    pub word_pos: u128,
}

impl RngState {
    /// Captures where `rng` is.
    pub fn capture(rng: &ChaCha8Rng) -> RngState {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at exactly the captured position.
    pub fn restore(&self) -> ChaCha8Rng {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

/// Everything a training run needs to continue.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Optimiser updates applied so far (training step to continue from).
    pub step: u64,
    pub config: ModelConfig,
    /// Model weights by canonical name; F32 tensors only.
    pub weights: BTreeMap<String, Tensor>,
    pub optimizer: AdamWState,
    pub loss_scaler: LossScalerState,
    pub rng: RngState,
    /// The arithmetic of the run's matrix products (`StepRunner::products`): continuing in another
    /// would not be the same run. `F32` for checkpoints written before it was recorded.
    pub products: ProductPrecision,
    /// The data pipeline's position (the batcher's serialised state), stored as given.
    pub data: serde_json::Value,
    /// Anything else the trainer wants back (options, counters, …), stored as given.
    pub extra: serde_json::Value,
}

/// The checkpoint file inside `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Writes `ckpt` to `dir` (created if missing) atomically; see the module header.
pub fn save_checkpoint(dir: &Path, ckpt: &Checkpoint) -> Result<()> {
    let path = checkpoint_path(dir);
    let bytes = format::encode(ckpt, &path)?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    crate::weights::export::write_atomically(&path, &bytes)
}

/// Reads and verifies the checkpoint in `dir`.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = checkpoint_path(dir);
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
    format::decode(&bytes, &path)
}
