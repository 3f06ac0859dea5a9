//! Reads a Hugging Face `tokenizer.json` of the SentencePiece-BPE kind (Llama, Mistral, …) and encodes as
//! the `tokenizers` library does with it.
//!
//! Supported, as the file says: model `BPE` (vocab, merges as `"a b"` strings or `["a", "b"]` pairs,
//! `unk_token`, `fuse_unk`, `byte_fallback`, `ignore_merges`); normalizers `Prepend` and string `Replace`
//! (in a `Sequence`); pre-tokenizer `Metaspace` (`▁`, prepend scheme, split or not); decoders `Replace`
//! `▁`→space, `ByteFallback`, `Fuse`, `Strip` and `Metaspace`. Anything else (byte-level GPT-style
//! files, regex normalizers, Unigram/WordPiece models, BPE dropout, non-special added tokens) is refused
//! with the JSON path of the setting.
//!
//! Deliberate differences from `tokenizers`: text that spells a special token (`<s>`) is ordinary text
//! (as in sentencepiece; `tokenizers` would emit the special id); special tokens decode to nothing and
//! the unknown token to ` ⁇ ` (sentencepiece's surface), so that every SentencePiece loader decodes alike;
//! `post_processor` is ignored (callers add BOS).
//!
//! Invariants: ids are dense (every id below the vocabulary size names one token); every merge names
//! vocabulary tokens and its result is in the vocabulary; so encoding cannot fail or panic.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::sentencepiece::{
    byte_piece_value, DecodeRule, LeadingSpace, Piece, PieceKind, PieceTable, DEFAULT_UNK_SURFACE, SPACE_SYMBOL,
};
use super::Tokenizer;
use crate::error::{ModelError, Result};

/// Token text → id, for the BPE model's own vocabulary.
type Vocab = HashMap<String, u32>;
/// (left id, right id) → (rank, merged id); lower rank merges first.
type Merges = HashMap<(u32, u32), (u32, u32)>;

/// A SentencePiece-style BPE tokenizer read from a Hugging Face `tokenizer.json`.
#[derive(Clone)]
pub struct HfBpeTokenizer {
    table: PieceTable,
    /// The BPE model's vocabulary (not the added tokens).
    vocab: Vocab,
    merges: Merges,
    normalizers: Vec<NormalizerStep>,
    metaspace: Option<Metaspace>,
    /// Byte value → id of `<0xXX>`, when the model has byte fallback.
    byte_ids: Option<Vec<Option<u32>>>,
    fuse_unk: bool,
    ignore_merges: bool,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for HfBpeTokenizer {
    /// A summary: the vocabulary and merges are too long to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfBpeTokenizer")
            .field("tokens", &self.table.len())
            .field("merges", &self.merges.len())
            .field("normalizers", &self.normalizers)
            .field("metaspace", &self.metaspace)
            .field("byte_fallback", &self.byte_ids.is_some())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum NormalizerStep {
    Prepend(String),
    Replace { from: String, to: String },
}

/// The `Metaspace` pre-tokenizer: spaces → `▁`, an optional `▁` prepended, optional split before `▁`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Metaspace {
    prepend: bool,
    split: bool,
}

/// The decoder chain, reduced to what it does.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DecoderChain {
    meta_to_space: bool,
    byte_fallback: bool,
    leading: LeadingSpace,
}

/// Errors that name the file and the JSON path.
struct Json<'a> {
    origin: &'a Path,
}

impl Json<'_> {
    fn error(&self, at: &str, message: impl std::fmt::Display) -> ModelError {
        ModelError::format(self.origin, format!("tokenizer.json {at}: {message}"))
    }

    /// `value[key]`, treating JSON null as absent.
    fn get<'v>(&self, value: &'v Value, key: &str) -> Option<&'v Value> {
        value.get(key).filter(|v| !v.is_null())
    }

    fn string<'v>(&self, value: &'v Value, key: &str, at: &str) -> Result<&'v str> {
        self.get(value, key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.error(at, format!("{key:?} must be a string")))
    }

    fn bool_or(&self, value: &Value, key: &str, default: bool, at: &str) -> Result<bool> {
        match self.get(value, key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(at, format!("{key:?} must be true or false"))),
        }
    }

    fn count(&self, value: &Value, key: &str, at: &str) -> Result<usize> {
        self.get(value, key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(at, format!("{key:?} must be a non-negative integer")))
    }

    /// The items of a `Sequence` (under `key`), or the value itself.
    fn flatten<'v>(&self, value: &'v Value, key: &str, at: &str, out: &mut Vec<&'v Value>) -> Result<()> {
        if self.get(value, "type").and_then(Value::as_str) != Some("Sequence") {
            out.push(value);
            return Ok(());
        }
        let items = self
            .get(value, key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.error(at, format!("Sequence needs a {key:?} array")))?;
        for item in items {
            self.flatten(item, key, at, out)?;
        }
        Ok(())
    }
}

impl HfBpeTokenizer {
    /// Reads a Hugging Face `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_bytes(&bytes, path)
    }

    /// Parses the bytes of a `tokenizer.json`; `origin` names the file in errors.
    pub fn from_json_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let json = Json { origin };
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| ModelError::format(origin, format!("not JSON: {e}")))?;
        let model = json
            .get(&root, "model")
            .filter(|m| m.is_object())
            .ok_or_else(|| json.error("model", "missing"))?;
        check_model_options(&json, model)?;
        let chain = decoder_chain(&json, json.get(&root, "decoder"))?;
        let (table, vocab) = vocabulary(&json, &root, model, &chain)?;
        let merges = merges(&json, model, &vocab)?;
        let byte_fallback = json.bool_or(model, "byte_fallback", false, "model")?;
        let byte_ids = byte_fallback.then(|| {
            (0..=255u8)
                .map(|b| vocab.get(&format!("<0x{b:02X}>")).copied())
                .collect()
        });
        let find = |text: &str| table.pieces().iter().position(|p| p.text == text).map(|i| i as u32);
        Ok(HfBpeTokenizer {
            bos_id: find("<s>"),
            eos_id: find("</s>"),
            normalizers: normalizer_steps(&json, json.get(&root, "normalizer"))?,
            metaspace: pre_tokenizer(&json, json.get(&root, "pre_tokenizer"))?,
            fuse_unk: json.bool_or(model, "fuse_unk", false, "model")?,
            ignore_merges: json.bool_or(model, "ignore_merges", false, "model")?,
            table,
            vocab,
            merges,
            byte_ids,
        })
    }

    /// The normalizers, then the pre-tokenizer: the words BPE runs on.
    fn words(&self, text: &str) -> Vec<String> {
        let mut s = text.to_string();
        for step in &self.normalizers {
            match step {
                NormalizerStep::Prepend(prefix) => {
                    if !s.is_empty() {
                        s.insert_str(0, prefix);
                    }
                }
                NormalizerStep::Replace { from, to } => s = s.replace(from.as_str(), to),
            }
        }
        let Some(metaspace) = self.metaspace else {
            return vec![s];
        };
        let mut s = s.replace(' ', "\u{2581}");
        if metaspace.prepend && !s.is_empty() && !s.starts_with(SPACE_SYMBOL) {
            s.insert(0, SPACE_SYMBOL);
        }
        if !metaspace.split {
            return vec![s];
        }
        let mut words = Vec::new();
        let mut start = 0;
        for (at, _) in s.match_indices(SPACE_SYMBOL) {
            if at > start {
                words.push(s[start..at].to_string());
                start = at;
            }
        }
        words.push(s[start..].to_string());
        words
    }

    /// The symbols of one word before merging: vocabulary characters, byte pieces, unknown runs.
    fn initial_symbols(&self, word: &str) -> Vec<u32> {
        let unk_id = self.table.unk_id();
        let mut ids = Vec::with_capacity(word.len());
        let mut pending_unknown = false;
        let mut buffer = [0u8; 4];
        for c in word.chars() {
            let text = c.encode_utf8(&mut buffer);
            if let Some(&id) = self.vocab.get(&*text) {
                if std::mem::take(&mut pending_unknown) {
                    ids.push(unk_id);
                }
                ids.push(id);
                continue;
            }
            let bytes: Option<Vec<u32>> = self
                .byte_ids
                .as_ref()
                .and_then(|table| text.bytes().map(|b| table[b as usize]).collect());
            if let Some(bytes) = bytes {
                if std::mem::take(&mut pending_unknown) {
                    ids.push(unk_id);
                }
                ids.extend(bytes);
            } else if pending_unknown && !self.fuse_unk {
                ids.push(unk_id);
            } else {
                pending_unknown = true;
            }
        }
        if pending_unknown {
            ids.push(unk_id);
        }
        ids
    }

    /// Applies the merges to one word, lowest rank first, leftmost on ties (tokenizers' `merge_all`).
    fn bpe_word(&self, word: &str) -> Vec<u32> {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                return vec![id];
            }
        }
        let ids = self.initial_symbols(word);
        let count = ids.len();
        let mut symbols: Vec<RankSymbol> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| RankSymbol {
                id,
                prev: i.checked_sub(1),
                next: (i + 1 < count).then_some(i + 1),
                alive: true,
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for pos in 1..count {
            self.queue_merge(&symbols, pos - 1, pos, &mut queue);
        }
        while let Some(top) = queue.pop() {
            let Some(next) = symbols[top.pos].next.filter(|_| symbols[top.pos].alive) else {
                continue;
            };
            let pair = (symbols[top.pos].id, symbols[next].id);
            if self.merges.get(&pair).map(|m| m.1) != Some(top.new_id) {
                continue;
            }
            let after = symbols[next].next;
            symbols[top.pos].id = top.new_id;
            symbols[top.pos].next = after;
            symbols[next].alive = false;
            if let Some(after) = after {
                symbols[after].prev = Some(top.pos);
                self.queue_merge(&symbols, top.pos, after, &mut queue);
            }
            if let Some(prev) = symbols[top.pos].prev {
                self.queue_merge(&symbols, prev, top.pos, &mut queue);
            }
        }
        symbols.iter().filter(|s| s.alive).map(|s| s.id).collect()
    }

    fn queue_merge(&self, symbols: &[RankSymbol], left: usize, right: usize, queue: &mut BinaryHeap<RankedMerge>) {
        if let Some(&(rank, new_id)) = self.merges.get(&(symbols[left].id, symbols[right].id)) {
            queue.push(RankedMerge {
                rank,
                pos: left,
                new_id,
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RankSymbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

/// A queued merge; the heap pops the lowest rank, then the leftmost position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RankedMerge {
    rank: u32,
    pos: usize,
    new_id: u32,
}

impl Ord for RankedMerge {
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for RankedMerge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Tokenizer for HfBpeTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.words(text).iter().flat_map(|w| self.bpe_word(w)).collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.table.decode(ids)
    }

    fn vocab_size(&self) -> usize {
        self.table.len()
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.table.token_bytes(id)
    }
}

/// Refuses BPE options this reader does not implement.
fn check_model_options(json: &Json, model: &Value) -> Result<()> {
    let kind = json.get(model, "type").and_then(Value::as_str).unwrap_or("BPE");
    if kind != "BPE" {
        return Err(json.error("model.type", format!("{kind:?} models are not supported, only BPE")));
    }
    if let Some(dropout) = json.get(model, "dropout").and_then(Value::as_f64).filter(|&d| d > 0.0) {
        return Err(json.error("model.dropout", format!("BPE dropout {dropout} is not supported")));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if json
            .get(model, key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(json.error(&format!("model.{key}"), "is not supported"));
        }
    }
    Ok(())
}

/// The dense piece table (model vocabulary plus added tokens) and the model vocabulary.
fn vocabulary(json: &Json, root: &Value, model: &Value, chain: &DecoderChain) -> Result<(PieceTable, Vocab)> {
    let (texts, vocab) = dense_tokens(json, root, model)?;
    let unk = json.string(model, "unk_token", "model")?;
    let unk_id = *vocab
        .get(unk)
        .ok_or_else(|| json.error("model.unk_token", format!("{unk:?} is not in the vocabulary")))?;
    let mut pieces = Vec::with_capacity(texts.len());
    for (id, (text, special)) in texts.into_iter().enumerate() {
        let kind = match byte_piece_value(&text) {
            _ if id as u32 == unk_id => PieceKind::Unknown,
            _ if special => PieceKind::Control,
            Some(byte) if chain.byte_fallback => PieceKind::Byte(byte),
            _ => PieceKind::Normal,
        };
        pieces.push(Piece { text, score: 0.0, kind });
    }
    let rule = DecodeRule {
        meta_to_space: chain.meta_to_space,
        leading: chain.leading,
        unk_surface: DEFAULT_UNK_SURFACE.to_string(),
    };
    Ok((PieceTable::new(pieces, rule, json.origin)?, vocab))
}

/// Every token by id as (text, is a special added token), with no gaps, and the model vocabulary.
fn dense_tokens(json: &Json, root: &Value, model: &Value) -> Result<(Vec<(String, bool)>, Vocab)> {
    let entries = json
        .get(model, "vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| json.error("model.vocab", "must be an object of token → id"))?;
    let added = match json.get(root, "added_tokens") {
        None => &[][..],
        Some(v) => v
            .as_array()
            .ok_or_else(|| json.error("added_tokens", "must be an array"))?,
    };
    let capacity = entries.len() + added.len();
    let mut texts: Vec<Option<(String, bool)>> = Vec::new();
    let mut place = |id: usize, text: &str, special: bool, at: &str| -> Result<()> {
        if id >= capacity {
            return Err(json.error(at, format!("id {id} is beyond the {capacity} tokens the file lists")));
        }
        if texts.len() <= id {
            texts.resize(id + 1, None);
        }
        match &texts[id] {
            Some((existing, _)) if existing != text => {
                Err(json.error(at, format!("id {id} is both {existing:?} and {text:?}")))
            }
            _ => {
                texts[id] = Some((text.to_string(), special));
                Ok(())
            }
        }
    };
    let mut vocab = HashMap::with_capacity(entries.len());
    for (text, id) in entries {
        let at = format!("model.vocab[{text:?}]");
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| json.error(&at, "id must be a non-negative 32-bit integer"))?;
        place(id as usize, text, false, &at)?;
        vocab.insert(text.clone(), id);
    }
    for (i, token) in added.iter().enumerate() {
        let at = format!("added_tokens[{i}]");
        let id = json.count(token, "id", &at)?;
        let content = json.string(token, "content", &at)?;
        if !json.bool_or(token, "special", false, &at)? {
            return Err(json.error(&at, format!("non-special added token {content:?} is not supported")));
        }
        place(id, content, true, &at)?;
    }
    let texts = texts
        .into_iter()
        .enumerate()
        .map(|(id, entry)| entry.ok_or_else(|| json.error("model.vocab", format!("no token has id {id}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((texts, vocab))
}

/// The merge table: rank = position in `model.merges`; a later duplicate pair replaces an earlier one.
fn merges(json: &Json, model: &Value, vocab: &Vocab) -> Result<Merges> {
    let list = match json.get(model, "merges") {
        None => &[][..],
        Some(v) => v
            .as_array()
            .ok_or_else(|| json.error("model.merges", "must be an array"))?,
    };
    let mut table = HashMap::with_capacity(list.len());
    for (rank, merge) in list.iter().enumerate() {
        let at = format!("model.merges[{rank}]");
        let (left, right) = match merge {
            Value::String(s) => match s.split(' ').collect::<Vec<_>>()[..] {
                [left, right] => (left, right),
                _ => return Err(json.error(&at, format!("{s:?} is not two tokens separated by one space"))),
            },
            Value::Array(pair) => match &pair[..] {
                [Value::String(left), Value::String(right)] => (left.as_str(), right.as_str()),
                _ => return Err(json.error(&at, "must be a pair of strings")),
            },
            _ => return Err(json.error(&at, "must be a string or a pair of strings")),
        };
        let id = |text: &str| {
            vocab
                .get(text)
                .copied()
                .ok_or_else(|| json.error(&at, format!("{text:?} is not in the vocabulary")))
        };
        let merged = id(&format!("{left}{right}"))?;
        let rank = u32::try_from(rank).map_err(|_| json.error(&at, "too many merges"))?;
        table.insert((id(left)?, id(right)?), (rank, merged));
    }
    Ok(table)
}

fn normalizer_steps(json: &Json, value: Option<&Value>) -> Result<Vec<NormalizerStep>> {
    let mut items = Vec::new();
    if let Some(value) = value {
        json.flatten(value, "normalizers", "normalizer", &mut items)?;
    }
    items
        .into_iter()
        .map(|item| match json.get(item, "type").and_then(Value::as_str) {
            Some("Prepend") => Ok(NormalizerStep::Prepend(
                json.string(item, "prepend", "normalizer Prepend")?.to_string(),
            )),
            Some("Replace") => {
                let (from, to) = string_replace(json, item, "normalizer Replace")?;
                Ok(NormalizerStep::Replace { from, to })
            }
            other => Err(json.error(
                "normalizer",
                format!("{} is not supported", other.unwrap_or("an untyped entry")),
            )),
        })
        .collect()
}

/// A `Replace` with a plain-string pattern (regex patterns are refused).
fn string_replace(json: &Json, item: &Value, at: &str) -> Result<(String, String)> {
    let from = json
        .get(item, "pattern")
        .and_then(|p| json.get(p, "String"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| json.error(at, "only a non-empty {\"String\": …} pattern is supported (not Regex)"))?;
    Ok((from.to_string(), json.string(item, "content", at)?.to_string()))
}

/// `prepend_scheme` ("always"/"first" prepend, "never" does not), or the older `add_prefix_space`.
fn metaspace_prepends(json: &Json, item: &Value, at: &str) -> Result<bool> {
    let replacement = json.string(item, "replacement", at)?;
    if replacement != "\u{2581}" {
        return Err(json.error(
            at,
            format!("replacement {replacement:?} is not supported, only \"\u{2581}\""),
        ));
    }
    match json.get(item, "prepend_scheme").and_then(Value::as_str) {
        Some("always" | "first") => Ok(true),
        Some("never") => Ok(false),
        Some(other) => Err(json.error(at, format!("prepend_scheme {other:?} is not supported"))),
        None => json.bool_or(item, "add_prefix_space", true, at),
    }
}

fn pre_tokenizer(json: &Json, value: Option<&Value>) -> Result<Option<Metaspace>> {
    let mut items = Vec::new();
    if let Some(value) = value {
        json.flatten(value, "pretokenizers", "pre_tokenizer", &mut items)?;
    }
    match items[..] {
        [] => Ok(None),
        [item] if json.get(item, "type").and_then(Value::as_str) == Some("Metaspace") => Ok(Some(Metaspace {
            prepend: metaspace_prepends(json, item, "pre_tokenizer Metaspace")?,
            split: json.bool_or(item, "split", true, "pre_tokenizer Metaspace")?,
        })),
        _ => Err(json.error("pre_tokenizer", "only a single Metaspace pre-tokenizer is supported")),
    }
}

fn decoder_chain(json: &Json, value: Option<&Value>) -> Result<DecoderChain> {
    let value = value.ok_or_else(|| json.error("decoder", "missing; not a SentencePiece-style tokenizer"))?;
    let mut items = Vec::new();
    json.flatten(value, "decoders", "decoder", &mut items)?;
    let mut chain = DecoderChain {
        meta_to_space: false,
        byte_fallback: false,
        leading: LeadingSpace::Keep,
    };
    let mut fused = false;
    for item in items {
        match json.get(item, "type").and_then(Value::as_str) {
            Some("Replace") => match string_replace(json, item, "decoder Replace")? {
                (from, to) if from == "\u{2581}" && to == " " => chain.meta_to_space = true,
                (from, to) => return Err(json.error("decoder Replace", format!("{from:?} → {to:?} is not supported"))),
            },
            Some("ByteFallback") => chain.byte_fallback = true,
            Some("Fuse") => fused = true,
            Some("Strip") => {
                if json.string(item, "content", "decoder Strip")? != " " || !fused {
                    return Err(json.error("decoder Strip", "only stripping spaces after Fuse is supported"));
                }
                chain.leading = LeadingSpace::Strip {
                    start: json.count(item, "start", "decoder Strip")?,
                    stop: json.count(item, "stop", "decoder Strip")?,
                };
            }
            Some("Metaspace") => {
                chain.meta_to_space = true;
                if metaspace_prepends(json, item, "decoder Metaspace")? {
                    chain.leading = LeadingSpace::FirstPiece { all: false };
                }
            }
            other => {
                return Err(json.error(
                    "decoder",
                    format!("{} is not supported", other.unwrap_or("an untyped entry")),
                ))
            }
        }
    }
    Ok(chain)
}
