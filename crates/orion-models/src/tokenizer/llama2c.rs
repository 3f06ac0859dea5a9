//! Reads llama2.c's `tokenizer.bin`: little-endian `u32 max_token_length`, then one record per id to the
//! end of the file — `f32 score`, `i32 length`, `length` bytes of UTF-8 — as llama2.c's tokenizer.py
//! `export()` writes it from a SentencePiece model (`▁` written as a space, BOS as `"\n<s>\n"`, EOS as
//! `"\n</s>\n"`).
//!
//! The file keeps only piece texts and scores, so the piece types and normaliser are restored by rule:
//! `<unk>` is the unknown piece; `\n<s>\n`/`<s>` and `\n</s>\n`/`</s>` are the BOS/EOS control pieces;
//! `<0xXX>` pieces are byte pieces, and byte fallback is on, when all 256 are present; every other piece
//! is normal with spaces turned back into `▁`; the normaliser is Llama's (dummy prefix, spaces kept).
//! Encoding then follows sentencepiece (not llama2.c's own encoder, which approximates it).
//! Invariant: a record never reads past the end of the file, and no length exceeds max_token_length.

use std::path::Path;

use super::sentencepiece::{
    byte_piece_value, NormalizerSpec, Piece, PieceKind, SentencePieceTokenizer, SpmConfig, DEFAULT_UNK_SURFACE,
    SPACE_SYMBOL,
};
use crate::error::{ModelError, Result};

const BOS_TEXTS: [&str; 2] = ["\n<s>\n", "<s>"];
const EOS_TEXTS: [&str; 2] = ["\n</s>\n", "</s>"];
const UNK_TEXT: &str = "<unk>";

impl SentencePieceTokenizer {
    /// Reads a llama2.c `tokenizer.bin` file.
    pub fn load_llama2c(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_llama2c_bytes(&bytes, path)
    }

    /// Parses the bytes of a llama2.c `tokenizer.bin`; `origin` names the file in errors.
    pub fn from_llama2c_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let records = read_records(bytes, origin)?;
        let mut byte_seen = [false; 256];
        for (text, _) in &records {
            if let Some(byte) = byte_piece_value(text) {
                byte_seen[byte as usize] = true;
            }
        }
        let all_bytes_present = byte_seen.iter().all(|&seen| seen);
        let mut seen_unknown = false;
        let mut bos_piece = BOS_TEXTS[1];
        let mut eos_piece = EOS_TEXTS[1];
        let mut pieces = Vec::with_capacity(records.len());
        for (text, score) in records {
            let kind = if text == UNK_TEXT && !seen_unknown {
                seen_unknown = true;
                PieceKind::Unknown
            } else if let Some(bos) = BOS_TEXTS.iter().find(|t| **t == text) {
                bos_piece = bos;
                PieceKind::Control
            } else if let Some(eos) = EOS_TEXTS.iter().find(|t| **t == text) {
                eos_piece = eos;
                PieceKind::Control
            } else {
                match byte_piece_value(&text) {
                    Some(byte) if all_bytes_present => PieceKind::Byte(byte),
                    _ => PieceKind::Normal,
                }
            };
            let text = if kind == PieceKind::Normal {
                text.replace(' ', &SPACE_SYMBOL.to_string())
            } else {
                text
            };
            pieces.push(Piece { text, score, kind });
        }
        if !seen_unknown {
            return Err(ModelError::format(
                origin,
                "no <unk> piece (a tokenizer.bin exported from SentencePiece has it at id 0)",
            ));
        }
        let config = SpmConfig {
            normalizer: NormalizerSpec::LLAMA,
            byte_fallback: all_bytes_present,
            unk_surface: DEFAULT_UNK_SURFACE.to_string(),
            bos_piece: bos_piece.to_string(),
            eos_piece: eos_piece.to_string(),
        };
        SentencePieceTokenizer::new(pieces, config, origin)
    }
}

/// The (text, score) records of the file, in id order.
fn read_records(bytes: &[u8], origin: &Path) -> Result<Vec<(String, f32)>> {
    let mut cursor = Cursor { bytes, at: 0, origin };
    let max_token_length = cursor.u32("max_token_length")?;
    let mut records = Vec::new();
    while cursor.at < bytes.len() {
        let id = records.len();
        let score = f32::from_bits(cursor.u32("score")?);
        let length = cursor.u32("length")?;
        let length = i32::try_from(length)
            .ok()
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| cursor.error(format!("token {id} has a negative length")))?;
        if length > max_token_length as usize {
            return Err(cursor.error(format!(
                "token {id} is {length} bytes long, more than max_token_length {max_token_length}"
            )));
        }
        let raw = cursor.take(length, "token bytes")?;
        let text =
            String::from_utf8(raw.to_vec()).map_err(|_| cursor.error(format!("token {id} is not valid UTF-8")))?;
        records.push((text, score));
    }
    if records.is_empty() {
        return Err(ModelError::format(origin, "no tokens after max_token_length"));
    }
    Ok(records)
}

/// Reads little-endian fields, failing with the offset and field name at a short read.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    origin: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            None => Err(self.error(format!("truncated: {what} needs {len} bytes at offset {}", self.at))),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let raw = self.take(4, what)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::format(self.origin, format!("llama2.c tokenizer.bin: {message}"))
    }
}
