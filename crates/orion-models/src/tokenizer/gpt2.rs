//! GPT-2's tokenizer: tiktoken's `r50k_base` byte-level BPE through tiktoken-rs (vocabulary embedded in
//! that crate, no network).
//!
//! Invariants: ids are exactly tiktoken's `encode_ordinary` — text that spells `<|endoftext|>` is
//! ordinary text, never the special token; 50256 (`<|endoftext|>`) is the EOS id and there is no BOS;
//! decoding is tiktoken's `decode_bytes` (so 50256 decodes to the text `<|endoftext|>`).

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::Tokenizer;
use crate::error::{ModelError, Result};

/// Ids in r50k_base: 50256 mergeable ranks plus `<|endoftext|>`.
const VOCAB_SIZE: usize = 50257;
/// `<|endoftext|>`.
const END_OF_TEXT: u32 = 50256;

/// GPT-2's r50k_base tokenizer.
#[derive(Clone, Copy)]
pub struct Gpt2Tokenizer {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer").field("encoding", &"r50k_base").finish()
    }
}

impl Gpt2Tokenizer {
    /// Builds r50k_base once per process and shares it.
    pub fn new() -> Result<Self> {
        static BPE: OnceLock<std::result::Result<CoreBPE, String>> = OnceLock::new();
        match BPE.get_or_init(|| tiktoken_rs::r50k_base().map_err(|e| e.to_string())) {
            Ok(bpe) => Ok(Gpt2Tokenizer { bpe }),
            Err(message) => Err(ModelError::Tokenizer(format!("building r50k_base: {message}"))),
        }
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.bpe
            .decode_bytes(ids)
            .map_err(|e| ModelError::Tokenizer(format!("GPT-2 has no token {} ({VOCAB_SIZE} ids)", e.token)))
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    fn bos_id(&self) -> Option<u32> {
        None
    }

    fn eos_id(&self) -> Option<u32> {
        Some(END_OF_TEXT)
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.bpe.decode_bytes(&[id]).ok()
    }
}
