//! Tokenizers: the [`Tokenizer`] trait and the loaders that pick an implementation for a file.
//!
//! Implementations: GPT-2's byte-level BPE (`r50k_base`, via tiktoken-rs, [`gpt2`]) and SentencePiece BPE
//! (Llama) read from three file formats — a SentencePiece `tokenizer.model`, a Hugging Face
//! `tokenizer.json`, and llama2.c's `tokenizer.bin` — all of which produce the ids the reference library
//! produces for that file (sentencepiece for `.model`/`.bin`, `tokenizers` for `.json`).
//!
//! Invariants shared by every implementation:
//! - `encode` never adds BOS/EOS (callers add them) and never fails: text the vocabulary cannot
//!   represent becomes byte pieces or the unknown piece, as the reference library does.
//! - `decode` returns raw bytes: byte-level pieces may split a UTF-8 character across tokens, so only
//!   the concatenation is meaningful text; [`Tokenizer::decode_lossy`] makes a `String` of it.
//! - Every id below `vocab_size()` decodes; any other id is a [`ModelError::Tokenizer`].
//! - Loading never panics: a malformed file is a [`ModelError::Format`] naming the file and the fault.

mod gpt2;
mod hf_json;
mod llama2c;
mod sentencepiece;
mod spm_model;
pub mod train_bpe;

use std::path::Path;

use crate::error::{ModelError, Result};

pub use gpt2::Gpt2Tokenizer;
pub use hf_json::HfBpeTokenizer;
pub use sentencepiece::SentencePieceTokenizer;

/// Text ⇄ token ids for one vocabulary.
pub trait Tokenizer: Send + Sync + std::fmt::Debug {
    /// The ids of `text`, without BOS/EOS.
    fn encode(&self, text: &str) -> Vec<u32>;

    /// The bytes `ids` stand for. Fails on an id outside the vocabulary.
    fn decode(&self, ids: &[u32]) -> Result<Vec<u8>>;

    /// [`Tokenizer::decode`] as text: ids outside the vocabulary are skipped and invalid UTF-8 becomes
    /// U+FFFD.
    fn decode_lossy(&self, ids: &[u32]) -> String {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| (id as usize) < self.vocab_size())
            .collect();
        match self.decode(&known) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// Number of ids; every id below it decodes.
    fn vocab_size(&self) -> usize;

    /// The beginning-of-sequence id, if the vocabulary has one.
    fn bos_id(&self) -> Option<u32>;

    /// The end-of-sequence id, if the vocabulary has one.
    fn eos_id(&self) -> Option<u32>;

    /// The bytes one token contributes in the middle of a text (no leading-space stripping), for
    /// streaming decode; `None` for an id outside the vocabulary.
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>>;
}

/// GPT-2's tokenizer: tiktoken's `r50k_base`, `<|endoftext|>` = 50256 as EOS.
pub fn gpt2() -> Result<Box<dyn Tokenizer>> {
    Ok(Box::new(Gpt2Tokenizer::new()?))
}

/// File names looked for, in this order, when [`load_tokenizer`] is given a directory.
const NAMES_IN_DIRECTORY: [&str; 3] = ["tokenizer.model", "tokenizer.json", "tokenizer.bin"];

/// Loads a SentencePiece-family tokenizer from `path`: `.model` (SentencePiece), `.json` (Hugging Face),
/// `.bin` (llama2.c), by extension, otherwise by content. A directory is searched for
/// `tokenizer.model`, `tokenizer.json` and `tokenizer.bin`, in that order.
pub fn load_tokenizer(path: &Path) -> Result<Box<dyn Tokenizer>> {
    if path.is_dir() {
        return match NAMES_IN_DIRECTORY
            .iter()
            .map(|name| path.join(name))
            .find(|p| p.is_file())
        {
            Some(file) => load_tokenizer(&file),
            None => Err(ModelError::format(
                path,
                format!("directory has none of {}", NAMES_IN_DIRECTORY.join(", ")),
            )),
        };
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    load_tokenizer_bytes(&bytes, path)
}

/// [`load_tokenizer`] on bytes already read; `origin` names the file in errors and its extension picks
/// the format (`.model`, `.json`, `.bin`); with any other extension the content decides.
pub fn load_tokenizer_bytes(bytes: &[u8], origin: &Path) -> Result<Box<dyn Tokenizer>> {
    let extension = origin.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("model") => Ok(Box::new(SentencePieceTokenizer::from_model_bytes(bytes, origin)?)),
        Some("json") => Ok(Box::new(HfBpeTokenizer::from_json_bytes(bytes, origin)?)),
        Some("bin") => Ok(Box::new(SentencePieceTokenizer::from_llama2c_bytes(bytes, origin)?)),
        _ => load_by_content(bytes, origin),
    }
}

/// Tries JSON (first non-blank byte `{`), then llama2.c's layout, then the SentencePiece protobuf.
fn load_by_content(bytes: &[u8], origin: &Path) -> Result<Box<dyn Tokenizer>> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(Box::new(HfBpeTokenizer::from_json_bytes(bytes, origin)?));
    }
    let llama2c_error = match SentencePieceTokenizer::from_llama2c_bytes(bytes, origin) {
        Ok(tokenizer) => return Ok(Box::new(tokenizer)),
        Err(e) => e,
    };
    match SentencePieceTokenizer::from_model_bytes(bytes, origin) {
        Ok(tokenizer) => Ok(Box::new(tokenizer)),
        Err(model_error) => Err(ModelError::format(
            origin,
            format!(
                "not a tokenizer.json, tokenizer.bin or tokenizer.model (as llama2.c: {llama2c_error}; \
                 as SentencePiece: {model_error})"
            ),
        )),
    }
}
