//! Trains a small SentencePiece-style BPE vocabulary on text, as llama2.c does for its custom
//! vocabularies with sentencepiece (`model_type=bpe`, `byte_fallback=true`, identity normaliser), and
//! saves it as llama2.c `tokenizer.bin` or SentencePiece `tokenizer.model`.
//!
//! Vocabulary layout (ids in this order):
//! - 0 `<unk>` (unknown), 1 `<s>` (BOS, control), 2 `</s>` (EOS, control), 3..=258 `<0x00>`..`<0xFF>`
//!   (byte fallback); all with score 0;
//! - the merged pieces in the order they were learned, merge `r` (from 0) with score `-r`;
//! - the single characters kept (most frequent first, up to 99.95 % character coverage), with scores
//!   below every merge, as sentencepiece orders them.
//!
//! Training: the text is normalised as the encoder does (dummy-prefix `▁`, spaces as `▁`), cut into
//! words — a word starts at each `▁` and wherever the character class changes (letters, digits,
//! newlines, other whitespace, punctuation; a leading `▁` joins the word after it) — and the words are
//! counted. Then, repeatedly, the most frequent adjacent pair of symbols (ties: the smaller pair of
//! symbol ids, so training is deterministic) becomes a new symbol; pair counts are updated
//! incrementally from the words that contain the merged pair. Since every piece lies inside one word,
//! the SentencePiece BPE encoder (highest score first) replays the training merges.
//!
//! Invariants: the vocabulary has exactly the requested size, no duplicate piece, no piece longer than
//! [`MAX_PIECE_CHARS`] characters, and no normal piece that reads like a reserved one; characters that
//! are not kept are encoded as byte pieces, so every text round-trips.

use crate::weights::export::write_atomically;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use prost::Message;

use super::sentencepiece::{
    NormalizerSpec, Piece, PieceKind, SentencePieceTokenizer, SpmConfig, DEFAULT_UNK_SURFACE, SPACE_SYMBOL,
};
use super::Tokenizer;
use crate::error::{ModelError, Result};

/// `<unk>`, `<s>`, `</s>` and the 256 byte pieces: the smallest possible vocabulary.
pub const MIN_VOCAB_SIZE: usize = 3 + 256;
/// The longest piece training makes, in characters (sentencepiece's `max_sentencepiece_length`).
pub const MAX_PIECE_CHARS: usize = 16;
/// Share of the character occurrences that the kept characters must cover (sentencepiece's default).
const CHARACTER_COVERAGE: f64 = 0.9995;
const UNK_PIECE: &str = "<unk>";
const BOS_PIECE: &str = "<s>";
const EOS_PIECE: &str = "</s>";

/// A trained vocabulary: its pieces (for saving) and the tokenizer built from them.
#[derive(Debug, Clone)]
pub struct TrainedBpe {
    pieces: Vec<Piece>,
    tokenizer: SentencePieceTokenizer,
}

/// Trains a BPE vocabulary of exactly `vocab_size` pieces on `text`; see the module header. Fails if
/// `vocab_size` is below [`MIN_VOCAB_SIZE`] or the text has too few distinct pairs to fill it.
pub fn train_bpe(text: &str, vocab_size: usize) -> Result<TrainedBpe> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(ModelError::Usage(format!(
            "BPE vocabulary size {vocab_size} is below the minimum {MIN_VOCAB_SIZE} (<unk>, <s>, </s> and 256 byte pieces)"
        )));
    }
    if u32::try_from(vocab_size).is_err() {
        return Err(ModelError::Usage(format!(
            "BPE vocabulary size {vocab_size} does not fit u32 ids"
        )));
    }
    let words = count_words(text);
    let chars = kept_characters(&words, vocab_size - MIN_VOCAB_SIZE);
    let mut trainer = Trainer::new(&words, &chars);
    let merges = trainer.learn(vocab_size - MIN_VOCAB_SIZE - chars.len())?;
    TrainedBpe::from_parts(&merges, &chars)
}

impl TrainedBpe {
    /// Assembles the vocabulary in the documented layout and builds its tokenizer.
    fn from_parts(merges: &[String], chars: &[char]) -> Result<Self> {
        let mut pieces = vec![
            reserved(UNK_PIECE, PieceKind::Unknown),
            reserved(BOS_PIECE, PieceKind::Control),
            reserved(EOS_PIECE, PieceKind::Control),
        ];
        pieces.extend((0..=255u8).map(|b| reserved(&format!("<0x{b:02X}>"), PieceKind::Byte(b))));
        let normal = merges.iter().cloned().chain(chars.iter().map(char::to_string));
        pieces.extend(normal.enumerate().map(|(rank, text)| Piece {
            text,
            score: -(rank as f32),
            kind: PieceKind::Normal,
        }));
        let tokenizer = SentencePieceTokenizer::new(pieces.clone(), spm_config(), Path::new("<trained BPE>"))?;
        Ok(TrainedBpe { pieces, tokenizer })
    }

    /// The tokenizer of this vocabulary.
    pub fn tokenizer(&self) -> &SentencePieceTokenizer {
        &self.tokenizer
    }

    /// The tokenizer, dropping the piece list.
    pub fn into_tokenizer(self) -> SentencePieceTokenizer {
        self.tokenizer
    }

    /// The pieces (`▁` for a space) and their scores, by id.
    pub fn pieces(&self) -> Vec<(String, f32)> {
        self.pieces.iter().map(|p| (p.text.clone(), p.score)).collect()
    }

    /// The vocabulary as llama2.c's `tokenizer.bin` (as its tokenizer.py `export()` writes it).
    pub fn to_llama2c_bytes(&self) -> Vec<u8> {
        let texts: Vec<String> = self
            .pieces
            .iter()
            .map(|p| match (p.kind, p.text.as_str()) {
                (PieceKind::Control, BOS_PIECE) => "\n<s>\n".to_string(),
                (PieceKind::Control, EOS_PIECE) => "\n</s>\n".to_string(),
                _ => p.text.replace(SPACE_SYMBOL, " "),
            })
            .collect();
        let max_len = texts.iter().map(String::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(4 + texts.iter().map(|t| 8 + t.len()).sum::<usize>());
        out.extend_from_slice(&(max_len as u32).to_le_bytes());
        for (piece, text) in self.pieces.iter().zip(&texts) {
            out.extend_from_slice(&piece.score.to_le_bytes());
            out.extend_from_slice(&(text.len() as i32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    /// The vocabulary as a SentencePiece `tokenizer.model` protobuf (BPE, byte fallback, identity
    /// normaliser with dummy prefix, spaces kept).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let proto = ModelProtoOut {
            pieces: self
                .pieces
                .iter()
                .map(|p| PieceProtoOut {
                    piece: Some(p.text.clone()),
                    score: Some(p.score),
                    kind: Some(piece_type(p.kind)),
                })
                .collect(),
            trainer_spec: Some(TrainerSpecOut {
                model_type: Some(2),
                vocab_size: i32::try_from(self.pieces.len()).ok(),
                byte_fallback: Some(true),
            }),
            normalizer_spec: Some(NormalizerSpecOut {
                name: Some("identity".to_string()),
                add_dummy_prefix: Some(true),
                remove_extra_whitespaces: Some(false),
                escape_whitespaces: Some(true),
            }),
        };
        proto.encode_to_vec()
    }

    /// Writes the vocabulary atomically (temporary file in the same directory, fsync, rename): a `.bin`
    /// path gets llama2.c's format, a `.model` path SentencePiece's; any other extension is an error.
    pub fn save(&self, path: &Path) -> Result<()> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let bytes = match extension.as_deref() {
            Some("bin") => self.to_llama2c_bytes(),
            Some("model") => self.to_model_bytes(),
            _ => {
                return Err(ModelError::Usage(format!(
                    "{}: a trained tokenizer is saved as .bin (llama2.c) or .model (SentencePiece)",
                    path.display()
                )))
            }
        };
        write_atomically(path, &bytes)
    }
}

impl Tokenizer for TrainedBpe {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.tokenizer.decode(ids)
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    fn bos_id(&self) -> Option<u32> {
        self.tokenizer.bos_id()
    }

    fn eos_id(&self) -> Option<u32> {
        self.tokenizer.eos_id()
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.tokenizer.token_bytes(id)
    }
}

fn reserved(text: &str, kind: PieceKind) -> Piece {
    Piece {
        text: text.to_string(),
        score: 0.0,
        kind,
    }
}

/// Llama's settings, which the saved files also state.
fn spm_config() -> SpmConfig {
    SpmConfig {
        normalizer: NormalizerSpec::LLAMA,
        byte_fallback: true,
        unk_surface: DEFAULT_UNK_SURFACE.to_string(),
        bos_piece: BOS_PIECE.to_string(),
        eos_piece: EOS_PIECE.to_string(),
    }
}

/// `ModelProto.SentencePiece.Type` numbers.
fn piece_type(kind: PieceKind) -> i32 {
    match kind {
        PieceKind::Normal => 1,
        PieceKind::Unknown => 2,
        PieceKind::Control => 3,
        PieceKind::UserDefined => 4,
        PieceKind::Unused => 5,
        PieceKind::Byte(_) => 6,
    }
}

/// The classes between which a word is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Space,
    Letter,
    Digit,
    Newline,
    OtherWhitespace,
    Punctuation,
}

fn char_class(c: char) -> CharClass {
    if c == SPACE_SYMBOL {
        CharClass::Space
    } else if c.is_alphabetic() {
        CharClass::Letter
    } else if c.is_numeric() {
        CharClass::Digit
    } else if c == '\n' || c == '\r' {
        CharClass::Newline
    } else if c.is_whitespace() {
        CharClass::OtherWhitespace
    } else {
        CharClass::Punctuation
    }
}

/// Whether a word boundary lies between `prev` and `next`.
fn is_boundary(prev: CharClass, next: CharClass) -> bool {
    match (prev, next) {
        (_, CharClass::Space) => true,
        (CharClass::Space, CharClass::Newline) => true,
        (CharClass::Space, _) => false,
        (a, b) => a != b,
    }
}

/// The words of the normalised `text` and how often each occurs.
fn count_words(text: &str) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut word = String::new();
    let mut prev = None;
    let normalized = std::iter::once(SPACE_SYMBOL).chain(text.chars().map(|c| if c == ' ' { SPACE_SYMBOL } else { c }));
    for c in normalized {
        let class = char_class(c);
        if prev.is_some_and(|p| is_boundary(p, class)) {
            bump(&mut counts, &word);
            word.clear();
        }
        word.push(c);
        prev = Some(class);
    }
    if !word.is_empty() {
        bump(&mut counts, &word);
    }
    counts
}

fn bump(counts: &mut HashMap<String, u64>, word: &str) {
    match counts.get_mut(word) {
        Some(count) => *count += 1,
        None => {
            counts.insert(word.to_string(), 1);
        }
    }
}

/// The characters that get a piece: most frequent first (ties by code point) until they cover
/// [`CHARACTER_COVERAGE`] of all occurrences, at most `slots` of them.
fn kept_characters(words: &HashMap<String, u64>, slots: usize) -> Vec<char> {
    let mut counts: HashMap<char, u64> = HashMap::new();
    for (word, &n) in words {
        for c in word.chars() {
            *counts.entry(c).or_insert(0) += n;
        }
    }
    let total: u64 = counts.values().sum();
    let mut by_frequency: Vec<(char, u64)> = counts.into_iter().collect();
    by_frequency.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = Vec::new();
    let mut covered = 0u64;
    // NUL cannot be a piece (sentencepiece refuses it); it is encoded as a byte piece.
    for (c, n) in by_frequency.into_iter().filter(|&(c, _)| c != '\0') {
        if kept.len() == slots || (covered as f64) >= CHARACTER_COVERAGE * total as f64 {
            break;
        }
        kept.push(c);
        covered += n;
    }
    kept
}

type Pair = (u32, u32);

/// The state of BPE training: symbols, the words as symbol sequences, and pair statistics.
struct Trainer {
    /// Symbol id → text; the first ones are the kept characters.
    texts: Vec<String>,
    ids: HashMap<String, u32>,
    /// Distinct words (as symbol ids) with at least two symbols, and their counts.
    words: Vec<(Vec<u32>, u64)>,
    pair_counts: HashMap<Pair, u64>,
    /// Words that contain (or once contained) each pair.
    pair_words: HashMap<Pair, Vec<u32>>,
    /// (count, pair) candidates; an entry whose count is no longer current is skipped.
    queue: BinaryHeap<(u64, Reverse<Pair>)>,
}

impl Trainer {
    /// Symbols for the kept characters; each word is cut at characters not kept (they become bytes).
    fn new(words: &HashMap<String, u64>, chars: &[char]) -> Self {
        let texts: Vec<String> = chars.iter().map(char::to_string).collect();
        let ids: HashMap<String, u32> = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let char_ids: HashMap<char, u32> = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        let mut sorted: Vec<(&String, &u64)> = words.iter().collect();
        sorted.sort_unstable();
        let mut symbol_words = Vec::new();
        for (word, &n) in sorted {
            let mut current = Vec::new();
            for c in word.chars().map(Some).chain(std::iter::once(None)) {
                match c.and_then(|c| char_ids.get(&c)) {
                    Some(&id) => current.push(id),
                    None => {
                        if current.len() >= 2 {
                            symbol_words.push((std::mem::take(&mut current), n));
                        }
                        current.clear();
                    }
                }
            }
        }
        let mut trainer = Trainer {
            texts,
            ids,
            words: symbol_words,
            pair_counts: HashMap::new(),
            pair_words: HashMap::new(),
            queue: BinaryHeap::new(),
        };
        for index in 0..trainer.words.len() {
            trainer.add_pairs(index as u32, 1);
        }
        let queue: BinaryHeap<_> = trainer.pair_counts.iter().map(|(&p, &n)| (n, Reverse(p))).collect();
        trainer.queue = queue;
        trainer
    }

    /// Adds (`sign` 1) or removes (`sign` -1) the pairs of word `index` to the counts.
    fn add_pairs(&mut self, index: u32, sign: i64) -> Vec<Pair> {
        let (symbols, n) = &self.words[index as usize];
        let pairs: Vec<Pair> = symbols.windows(2).map(|w| (w[0], w[1])).collect();
        for &pair in &pairs {
            let count = self.pair_counts.entry(pair).or_insert(0);
            if sign > 0 {
                *count += n;
                self.pair_words.entry(pair).or_default().push(index);
            } else {
                *count = count.saturating_sub(*n);
            }
        }
        pairs
    }

    /// Learns merges until `wanted` new pieces exist; returns their texts in the order learned.
    fn learn(&mut self, wanted: usize) -> Result<Vec<String>> {
        let mut merges = Vec::with_capacity(wanted);
        while merges.len() < wanted {
            let Some((count, Reverse(pair))) = self.queue.pop() else {
                return Err(ModelError::Usage(format!(
                    "the training text is too small for this vocabulary: only {} merges were possible, {wanted} \
                     were needed (use a smaller vocabulary or more text)",
                    merges.len()
                )));
            };
            if count == 0 || self.pair_counts.get(&pair) != Some(&count) {
                continue;
            }
            let text = format!("{}{}", self.texts[pair.0 as usize], self.texts[pair.1 as usize]);
            if text.chars().count() > MAX_PIECE_CHARS || looks_reserved(&text) {
                self.pair_counts.insert(pair, 0);
                continue;
            }
            let id = match self.ids.get(&text) {
                Some(&id) => id,
                None => {
                    let id = self.texts.len() as u32;
                    self.texts.push(text.clone());
                    self.ids.insert(text.clone(), id);
                    merges.push(text);
                    id
                }
            };
            self.merge(pair, id);
        }
        Ok(merges)
    }

    /// Replaces every occurrence of `pair` by `id` in the words containing it, updating the counts.
    fn merge(&mut self, pair: Pair, id: u32) {
        let mut indices = self.pair_words.remove(&pair).unwrap_or_default();
        indices.sort_unstable();
        indices.dedup();
        let mut touched = Vec::new();
        for index in indices {
            let symbols = &self.words[index as usize].0;
            if !symbols.windows(2).any(|w| (w[0], w[1]) == pair) {
                continue;
            }
            touched.extend(self.add_pairs(index, -1));
            let symbols = &mut self.words[index as usize].0;
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && (symbols[i], symbols[i + 1]) == pair {
                    merged.push(id);
                    i += 2;
                } else {
                    merged.push(symbols[i]);
                    i += 1;
                }
            }
            *symbols = merged;
            touched.extend(self.add_pairs(index, 1));
        }
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            if let Some(&n) = self.pair_counts.get(&p) {
                if n > 0 {
                    self.queue.push((n, Reverse(p)));
                }
            }
        }
    }
}

/// Texts the llama2.c format would read back as a special piece.
fn looks_reserved(text: &str) -> bool {
    let trimmed = text.trim_matches('\n');
    trimmed == UNK_PIECE
        || trimmed == BOS_PIECE
        || trimmed == EOS_PIECE
        || super::sentencepiece::byte_piece_value(text).is_some()
}

/// `sentencepiece.ModelProto`, the fields written.
#[derive(Clone, PartialEq, Message)]
struct ModelProtoOut {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<PieceProtoOut>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpecOut>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpecOut>,
}

/// `sentencepiece.ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, Message)]
struct PieceProtoOut {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

/// `sentencepiece.TrainerSpec`, the fields written.
#[derive(Clone, PartialEq, Message)]
struct TrainerSpecOut {
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
}

/// `sentencepiece.NormalizerSpec`, the fields written.
#[derive(Clone, PartialEq, Message)]
struct NormalizerSpecOut {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    escape_whitespaces: Option<bool>,
}
