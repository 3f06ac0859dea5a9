//! Token streams and the batcher that turns them into training and validation batches.
//!
//! A [`TokenStream`] is one flat sequence of token ids with the sources it came from (the built-in
//! corpus, a text file tokenised on the fly, or uint16 shards). Text is cut into documents at blank
//! lines; each document is encoded on its own and preceded by the tokenizer's BOS id (or, for a
//! tokenizer without BOS, followed by its EOS id), as llama2.c's pretokenisation does.
//!
//! The [`Batcher`] cuts the stream into consecutive, non-overlapping windows of T+1 tokens (window
//! `w` is tokens `w·(T+1) .. (w+1)·(T+1)`; a final partial window is dropped); a window's inputs are
//! its first T tokens and its targets its last T. The last `val_fraction` of the windows (at least one
//! when the fraction is positive) form the validation split and are never used for training. Training
//! windows are served in file order without shuffling, and in a permutation drawn from
//! ChaCha8(seed, stream = epoch) with shuffling; a batch takes the next B windows and may run over
//! into the next epoch, so every batch is [B, T].
//!
//! Invariants: every id served is below the vocabulary size given to the batcher (checked once, when
//! the batcher is made, with an error naming the file and position); [`BatcherState`] is the whole
//! mutable state, so restoring it makes the batcher serve exactly the batches it would have served.

use std::path::{Path, PathBuf};

use orion_core::Tensor;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::shards::{read_shard, shard_paths};
use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;

/// Where a stretch of a [`TokenStream`] came from.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    /// A file path, or a description such as `<built-in corpus>`.
    name: PathBuf,
    /// Index of its first token in the stream.
    start: usize,
    /// Shards report positions as byte offsets too.
    is_shard: bool,
}

/// A flat sequence of token ids and the sources it was read from, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenStream {
    tokens: Vec<u32>,
    sources: Vec<Source>,
}

impl TokenStream {
    /// A stream of given ids; `name` stands for their origin in errors.
    pub fn from_ids(name: &str, ids: Vec<u32>) -> Self {
        TokenStream {
            tokens: ids,
            sources: vec![Source {
                name: PathBuf::from(name),
                start: 0,
                is_shard: false,
            }],
        }
    }

    /// `text` cut into documents at blank lines, each encoded with `tokenizer` and marked with BOS
    /// (or EOS after it, for a tokenizer without BOS); `name` stands for the origin in errors.
    /// Documents are encoded on all available cores; the result does not depend on their number.
    pub fn from_text(name: &str, text: &str, tokenizer: &dyn Tokenizer) -> Self {
        let documents = documents(text);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let chunk = documents.len().div_ceil(threads).max(1);
        let parts: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = documents
                .chunks(chunk)
                .map(|docs| scope.spawn(move || encode_documents(docs, tokenizer)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        Self::from_ids(name, parts.concat())
    }

    /// The built-in story corpus ([`super::corpus::generate_corpus`]) tokenised as
    /// [`TokenStream::from_text`].
    pub fn from_corpus(seed: u64, target_bytes: usize, tokenizer: &dyn Tokenizer) -> Self {
        let text = super::corpus::generate_corpus(seed, target_bytes);
        Self::from_text(&format!("<built-in corpus, seed {seed}>"), &text, tokenizer)
    }

    /// What `--data PATH` names: a directory or a `.bin` file is read as uint16 shards (see
    /// [`super::shards::shard_paths`]), anything else as UTF-8 text tokenised with `tokenizer`.
    pub fn from_data_path(path: &Path, tokenizer: &dyn Tokenizer) -> Result<Self> {
        let is_bin = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"));
        if path.is_dir() || is_bin {
            Self::from_shards(&shard_paths(path)?)
        } else {
            Self::from_text_file(path, tokenizer)
        }
    }

    /// A UTF-8 text file tokenised as [`TokenStream::from_text`].
    pub fn from_text_file(path: &Path, tokenizer: &dyn Tokenizer) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ModelError::format(
                path,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        let mut stream = Self::from_text("", &text, tokenizer);
        stream.sources[0].name = path.to_path_buf();
        Ok(stream)
    }

    /// The concatenation of uint16 shard files, in the order given (see [`super::shards`]).
    pub fn from_shards(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(ModelError::Usage("no token shard files given".to_string()));
        }
        let mut stream = TokenStream {
            tokens: Vec::new(),
            sources: Vec::with_capacity(paths.len()),
        };
        for path in paths {
            let ids = read_shard(path)?;
            stream.sources.push(Source {
                name: path.clone(),
                start: stream.tokens.len(),
                is_shard: true,
            });
            stream.tokens.extend(ids.into_iter().map(u32::from));
        }
        Ok(stream)
    }

    /// The ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Fails on the first id not below `vocab_size`, naming its source and its position there.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        let Some(index) = self.tokens.iter().position(|&id| id as usize >= vocab_size) else {
            return Ok(());
        };
        let source_index = self.sources.partition_point(|s| s.start <= index).saturating_sub(1);
        let source = &self.sources[source_index];
        let position = index - source.start;
        let offset = if source.is_shard {
            format!(" (byte offset {})", position * 2)
        } else {
            String::new()
        };
        Err(ModelError::format(
            &source.name,
            format!(
                "token id {} at position {position}{offset} is not below the vocabulary size {vocab_size}",
                self.tokens[index]
            ),
        ))
    }
}

/// BOS (or, without BOS, EOS after), then the ids, of each document in turn.
fn encode_documents(documents: &[String], tokenizer: &dyn Tokenizer) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(documents.iter().map(String::len).sum::<usize>() / 2);
    for document in documents {
        if let Some(bos) = tokenizer.bos_id() {
            tokens.push(bos);
        }
        tokens.extend(tokenizer.encode(document));
        if let (None, Some(eos)) = (tokenizer.bos_id(), tokenizer.eos_id()) {
            tokens.push(eos);
        }
    }
    tokens
}

/// The documents of `text`: runs of non-blank lines, joined by `\n`.
fn documents(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

/// How a [`Batcher`] cuts and serves a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatcherConfig {
    /// B: windows per batch.
    pub batch_size: usize,
    /// T: tokens per row of inputs (a window has T+1 tokens).
    pub seq_len: usize,
    /// Serve training windows in a seeded random order, a new permutation each epoch.
    pub shuffle: bool,
    /// The permutation seed.
    pub seed: u64,
    /// Share of the windows, taken from the end, kept for validation (0 ≤ f < 1).
    pub val_fraction: f64,
    /// Every id must be below it.
    pub vocab_size: usize,
}

/// The whole mutable state of a [`Batcher`]: save it in a checkpoint, give it to
/// [`Batcher::restore`] to continue with exactly the same batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Completed passes over the training windows.
    pub epoch: u64,
    /// Training windows already served in this epoch.
    pub cursor: u64,
    pub shuffle: bool,
    pub seed: u64,
    /// Checked on restore: the state only fits a batcher with the same windows.
    pub train_windows: u64,
    pub seq_len: u64,
}

/// One batch: `inputs` and `targets` are i32 tensors [rows, T]; `targets[r][t] = inputs[r][t+1]`
/// within the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

/// Serves training batches and the validation split of a [`TokenStream`]; see the module header.
#[derive(Debug, Clone)]
pub struct Batcher {
    tokens: Vec<u32>,
    config: BatcherConfig,
    train_windows: usize,
    val_windows: usize,
    state: BatcherState,
    /// The order of this epoch's training windows.
    order: Vec<usize>,
}

impl Batcher {
    /// Checks the configuration and every id of `stream`, and starts at epoch 0.
    pub fn new(stream: TokenStream, config: BatcherConfig) -> Result<Self> {
        if config.batch_size == 0 || config.seq_len == 0 {
            return Err(ModelError::Usage(format!(
                "batch size ({}) and sequence length ({}) must be positive",
                config.batch_size, config.seq_len
            )));
        }
        if !(0.0..1.0).contains(&config.val_fraction) {
            return Err(ModelError::Usage(format!(
                "the validation fraction must be in [0, 1), not {}",
                config.val_fraction
            )));
        }
        if config.vocab_size == 0 || config.vocab_size > i32::MAX as usize {
            return Err(ModelError::Usage(format!(
                "vocabulary size {} is out of range",
                config.vocab_size
            )));
        }
        stream.check_vocab(config.vocab_size)?;
        let windows = stream.len() / (config.seq_len + 1);
        let val_windows = validation_windows(windows, config.val_fraction);
        if windows <= val_windows {
            return Err(ModelError::Usage(format!(
                "{} tokens make {windows} windows of {} tokens, too few for training with {val_windows} \
                 kept for validation",
                stream.len(),
                config.seq_len + 1
            )));
        }
        let train_windows = windows - val_windows;
        let state = BatcherState {
            epoch: 0,
            cursor: 0,
            shuffle: config.shuffle,
            seed: config.seed,
            train_windows: train_windows as u64,
            seq_len: config.seq_len as u64,
        };
        let mut batcher = Batcher {
            tokens: stream.tokens,
            config,
            train_windows,
            val_windows,
            state,
            order: Vec::new(),
        };
        batcher.order = batcher.epoch_order(0);
        Ok(batcher)
    }

    /// Number of training windows (one epoch).
    pub fn train_windows(&self) -> usize {
        self.train_windows
    }

    /// Number of validation windows.
    pub fn val_windows(&self) -> usize {
        self.val_windows
    }

    /// The configuration this batcher was made with.
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// The state to save; [`Batcher::restore`] takes it back.
    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// Continues from a saved state (its epoch, cursor, seed and shuffle setting). Fails if the state
    /// was saved by a batcher with other windows.
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        if state.train_windows != self.train_windows as u64 || state.seq_len != self.config.seq_len as u64 {
            return Err(ModelError::Usage(format!(
                "the saved data position is for {} training windows of length {}, this data has {} of length {}",
                state.train_windows, state.seq_len, self.train_windows, self.config.seq_len
            )));
        }
        if state.cursor >= self.train_windows as u64 {
            return Err(ModelError::Usage(format!(
                "the saved data cursor {} is past the {} training windows",
                state.cursor, self.train_windows
            )));
        }
        self.state = state;
        self.order = self.epoch_order(state.epoch);
        Ok(())
    }

    /// The next B training windows as a batch, moving to the next epoch when this one runs out.
    pub fn next_batch(&mut self) -> Batch {
        let mut windows = Vec::with_capacity(self.config.batch_size);
        for _ in 0..self.config.batch_size {
            windows.push(self.order[self.state.cursor as usize]);
            self.state.cursor += 1;
            if self.state.cursor == self.train_windows as u64 {
                self.state.cursor = 0;
                self.state.epoch += 1;
                self.order = self.epoch_order(self.state.epoch);
            }
        }
        self.batch_of(&windows)
    }

    /// The validation windows in order, B per batch; the last batch has fewer rows when B does not
    /// divide their number. Empty without a validation split.
    pub fn validation_batches(&self) -> Vec<Batch> {
        let first = self.train_windows;
        let windows: Vec<usize> = (first..first + self.val_windows).collect();
        windows
            .chunks(self.config.batch_size)
            .map(|chunk| self.batch_of(chunk))
            .collect()
    }

    /// The training windows in the order epoch `epoch` serves them.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train_windows).collect();
        if self.state.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.state.seed);
            rng.set_stream(epoch);
            // Fisher–Yates with a multiply-shift draw: fixed here, independent of rand's version.
            for i in (1..order.len()).rev() {
                let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// Inputs and targets of the given windows, one row each.
    fn batch_of(&self, windows: &[usize]) -> Batch {
        let t = self.config.seq_len;
        let mut inputs = Vec::with_capacity(windows.len() * t);
        let mut targets = Vec::with_capacity(windows.len() * t);
        for &w in windows {
            let window = &self.tokens[w * (t + 1)..(w + 1) * (t + 1)];
            // Ids were checked below vocab_size ≤ i32::MAX when the batcher was made.
            inputs.extend(window[..t].iter().map(|&id| id as i32));
            targets.extend(window[1..].iter().map(|&id| id as i32));
        }
        Batch {
            inputs: Tensor::i32(vec![windows.len(), t], inputs),
            targets: Tensor::i32(vec![windows.len(), t], targets),
        }
    }
}

/// The number of windows kept for validation: `fraction` of them rounded, at least one if positive.
fn validation_windows(windows: usize, fraction: f64) -> usize {
    if fraction <= 0.0 {
        return 0;
    }
    ((windows as f64 * fraction).round() as usize).max(1)
}
