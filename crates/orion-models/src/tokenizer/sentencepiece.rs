//! SentencePiece BPE: the encoding algorithm of the sentencepiece library's BPE model over a vocabulary
//! of scored, typed pieces, and the decoding shared by every SentencePiece-family tokenizer.
//!
//! Encode, as sentencepiece does it:
//! 1. normalise: identity character mapping (precompiled maps are rejected by the loaders), optional
//!    removal of leading/trailing/repeated spaces, a dummy-prefix space, spaces escaped as `▁`;
//! 2. split into characters, except user-defined pieces, which are matched longest-first and never merge;
//! 3. repeatedly merge the adjacent pair whose concatenation is a mergeable piece (normal, user-defined or
//!    unused) with the highest score, the leftmost pair on ties;
//! 4. split unused pieces back into the pair they were made from;
//! 5. pieces outside the vocabulary become `<0xXX>` byte pieces (byte fallback) or one unknown id per
//!    run of unknown pieces.
//!
//! Decode: control pieces vanish, the unknown piece becomes the model's unknown surface (` ⁇ `), byte
//! pieces become their byte, `▁` becomes a space, and the leading space the dummy prefix added is
//! removed from the first visible piece.
//!
//! Invariants: a constructed tokenizer has exactly one unknown piece, no empty or duplicate pieces, no
//! NaN score, and — with byte fallback — all 256 byte pieces; so encoding cannot fail or panic.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use super::Tokenizer;
use crate::error::{ModelError, Result};

/// The character SentencePiece writes for a space (U+2581 LOWER ONE EIGHTH BLOCK).
pub(crate) const SPACE_SYMBOL: char = '\u{2581}';
/// What sentencepiece prints for the unknown piece unless the model says otherwise.
pub(crate) const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";
/// sentencepiece refuses pieces this long.
const MAX_PIECE_BYTES: usize = 8000;

/// The role of a piece, as SentencePiece's `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    /// `<0xXX>`: stands for one raw byte.
    Byte(u8),
}

impl PieceKind {
    /// Pieces BPE may merge into (sentencepiece's `pieces_` map); the others are reserved.
    fn is_mergeable(self) -> bool {
        matches!(self, PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused)
    }
}

/// One vocabulary entry; its id is its index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// The byte value of a `<0xXX>` piece (two upper-case hex digits, as sentencepiece writes them).
pub(crate) fn byte_piece_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// What decoding does with the space the encoder's dummy prefix put at the start of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeadingSpace {
    /// Nothing.
    Keep,
    /// sentencepiece: while nothing visible has been produced, the next piece loses one leading `▁`;
    /// without `all`, only the first piece that had one.
    FirstPiece { all: bool },
    /// Hugging Face `Fuse` then `Strip`: up to `start` leading and `stop` trailing spaces of the text.
    Strip { start: usize, stop: usize },
}

/// How a [`PieceTable`] turns pieces back into bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodeRule {
    /// `▁` becomes a space.
    pub meta_to_space: bool,
    pub leading: LeadingSpace,
    /// The bytes an unknown piece decodes to.
    pub unk_surface: String,
}

/// The vocabulary side of every SentencePiece-family tokenizer: pieces by id, and decoding.
#[derive(Debug, Clone)]
pub(crate) struct PieceTable {
    pieces: Vec<Piece>,
    unk_id: u32,
    rule: DecodeRule,
}

impl PieceTable {
    /// Checks what sentencepiece checks of every piece: non-empty, no NUL, shorter than 8000 bytes, a
    /// score that is a number; and that exactly one piece is the unknown piece.
    pub(crate) fn new(pieces: Vec<Piece>, rule: DecodeRule, origin: &Path) -> Result<Self> {
        if u32::try_from(pieces.len()).is_err() {
            return Err(ModelError::format(
                origin,
                format!("{} pieces do not fit u32 ids", pieces.len()),
            ));
        }
        let mut unk_id = None;
        for (id, piece) in pieces.iter().enumerate() {
            let fault = if piece.text.is_empty() {
                Some("is empty")
            } else if piece.text.contains('\0') {
                Some("contains a NUL character")
            } else if piece.text.len() >= MAX_PIECE_BYTES {
                Some("is 8000 bytes or longer")
            } else if piece.score.is_nan() {
                Some("has a NaN score")
            } else if piece.kind == PieceKind::Unknown && unk_id.is_some() {
                Some("is a second unknown piece")
            } else {
                None
            };
            if let Some(fault) = fault {
                return Err(ModelError::format(
                    origin,
                    format!("piece {id} ({:?}) {fault}", piece.text),
                ));
            }
            if piece.kind == PieceKind::Unknown {
                unk_id = Some(id as u32);
            }
        }
        let unk_id = unk_id.ok_or_else(|| ModelError::format(origin, "the vocabulary has no unknown piece"))?;
        Ok(PieceTable { pieces, unk_id, rule })
    }

    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    pub(crate) fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub(crate) fn piece(&self, id: u32) -> Option<&Piece> {
        self.pieces.get(id as usize)
    }

    pub(crate) fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The bytes of `ids`; see the module header for the rules.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        let mut at_start = true;
        let mut leading_space_taken = false;
        for &id in ids {
            let piece = self.piece(id).ok_or_else(|| {
                ModelError::Tokenizer(format!(
                    "token id {id} is outside the vocabulary ({} pieces)",
                    self.len()
                ))
            })?;
            if let PieceKind::Byte(byte) = piece.kind {
                out.push(byte);
                continue;
            }
            if leading_space_taken || !out.is_empty() {
                at_start = false;
            }
            leading_space_taken = self.append_piece(piece, at_start, &mut out);
        }
        if let LeadingSpace::Strip { start, stop } = self.rule.leading {
            let front = out.iter().take(start).take_while(|&&b| b == b' ').count();
            out.drain(..front);
            let back = out.iter().rev().take(stop).take_while(|&&b| b == b' ').count();
            out.truncate(out.len() - back);
        }
        Ok(out)
    }

    /// Appends one non-byte piece; returns whether it consumed the dummy-prefix space.
    fn append_piece(&self, piece: &Piece, at_start: bool, out: &mut Vec<u8>) -> bool {
        match piece.kind {
            PieceKind::Control => false,
            PieceKind::Unknown => {
                out.extend_from_slice(self.rule.unk_surface.as_bytes());
                false
            }
            PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused | PieceKind::Byte(_) => {
                let mut text = piece.text.as_str();
                let mut taken = false;
                if let (true, LeadingSpace::FirstPiece { all }) = (at_start, self.rule.leading) {
                    if let Some(rest) = text.strip_prefix(SPACE_SYMBOL) {
                        text = rest;
                        taken = !all;
                    }
                }
                self.push_text(text, out);
                taken
            }
        }
    }

    fn push_text(&self, text: &str, out: &mut Vec<u8>) {
        if self.rule.meta_to_space {
            out.extend_from_slice(text.replace(SPACE_SYMBOL, " ").as_bytes());
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }

    /// The bytes `id` contributes in the middle of a text.
    pub(crate) fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.piece(id)?;
        let mut out = Vec::new();
        match piece.kind {
            PieceKind::Byte(byte) => out.push(byte),
            _ => {
                self.append_piece(piece, false, &mut out);
            }
        }
        Some(out)
    }
}

/// SentencePiece's normaliser settings (`NormalizerSpec`), for an identity character mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NormalizerSpec {
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl NormalizerSpec {
    /// Llama's settings (and what llama2.c's tokenizer.bin implies).
    pub(crate) const LLAMA: NormalizerSpec = NormalizerSpec {
        add_dummy_prefix: true,
        remove_extra_whitespaces: false,
        escape_whitespaces: true,
    };
}

/// Everything besides the pieces that a SentencePiece BPE model needs.
#[derive(Debug, Clone)]
pub(crate) struct SpmConfig {
    pub normalizer: NormalizerSpec,
    pub byte_fallback: bool,
    pub unk_surface: String,
    pub bos_piece: String,
    pub eos_piece: String,
}

impl SpmConfig {
    /// sentencepiece's decoding: `▁` → space, and the dummy-prefix space dropped when the normaliser
    /// adds one or removes extra whitespace.
    fn decode_rule(&self) -> DecodeRule {
        let spec = self.normalizer;
        DecodeRule {
            meta_to_space: true,
            leading: if spec.add_dummy_prefix || spec.remove_extra_whitespaces {
                LeadingSpace::FirstPiece {
                    all: spec.remove_extra_whitespaces,
                }
            } else {
                LeadingSpace::Keep
            },
            unk_surface: self.unk_surface.clone(),
        }
    }
}

/// A SentencePiece BPE tokenizer (Llama's), from a `tokenizer.model` or llama2.c's `tokenizer.bin`.
#[derive(Clone)]
pub struct SentencePieceTokenizer {
    table: PieceTable,
    /// Normal, user-defined and unused pieces: what BPE may merge into.
    mergeable: HashMap<String, u32>,
    /// Unknown, control and byte pieces.
    reserved: HashMap<String, u32>,
    user_defined: HashSet<String>,
    /// Distinct byte lengths of the user-defined pieces, longest first.
    user_defined_lengths: Vec<usize>,
    /// Byte value → id of its `<0xXX>` piece, when byte fallback is on.
    byte_ids: Option<Vec<u32>>,
    normalizer: NormalizerSpec,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for SentencePieceTokenizer {
    /// A summary: the vocabulary itself is too long to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePieceTokenizer")
            .field("pieces", &self.table.len())
            .field("user_defined", &self.user_defined.len())
            .field("byte_fallback", &self.byte_ids.is_some())
            .field("normalizer", &self.normalizer)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

/// A symbol of the text being merged: a byte range of the normalised text in a linked list.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    end: usize,
    prev: Option<usize>,
    next: Option<usize>,
    frozen: bool,
}

/// A possible merge of two adjacent symbols, ordered as sentencepiece's agenda: higher score first,
/// then the leftmost.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores are never NaN (checked at load); -0.0 and 0.0 tie, as with C++'s `<`.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Unused pieces made during merging → the two pieces they were made from.
type RevMerge<'a> = HashMap<&'a str, (&'a str, &'a str)>;

impl SentencePieceTokenizer {
    /// Checks the vocabulary as sentencepiece's `InitializePieces` does (no duplicate piece among the
    /// mergeable or among the reserved pieces, byte pieces only with byte fallback, then all 256).
    pub(crate) fn new(pieces: Vec<Piece>, config: SpmConfig, origin: &Path) -> Result<Self> {
        let table = PieceTable::new(pieces, config.decode_rule(), origin)?;
        let mut mergeable = HashMap::new();
        let mut reserved = HashMap::new();
        let mut user_defined = HashSet::new();
        let mut byte_ids = vec![None; 256];
        for (id, piece) in table.pieces().iter().enumerate() {
            let map = if piece.kind.is_mergeable() {
                &mut mergeable
            } else {
                &mut reserved
            };
            if map.insert(piece.text.clone(), id as u32).is_some() {
                return Err(ModelError::format(
                    origin,
                    format!("piece {id} ({:?}) is already defined", piece.text),
                ));
            }
            match piece.kind {
                PieceKind::UserDefined => {
                    user_defined.insert(piece.text.clone());
                }
                PieceKind::Byte(byte) => {
                    if !config.byte_fallback {
                        return Err(ModelError::format(
                            origin,
                            format!("byte piece {id} ({:?}) although byte_fallback is off", piece.text),
                        ));
                    }
                    byte_ids[byte as usize] = Some(id as u32);
                }
                PieceKind::Normal | PieceKind::Unknown | PieceKind::Control | PieceKind::Unused => {}
            }
        }
        let byte_ids = if config.byte_fallback {
            let all: Option<Vec<u32>> = byte_ids.into_iter().collect();
            Some(all.ok_or_else(|| {
                ModelError::format(
                    origin,
                    "byte_fallback is on but the 256 byte pieces <0x00>..<0xFF> are not all there",
                )
            })?)
        } else {
            None
        };
        let mut user_defined_lengths: Vec<usize> = user_defined.iter().map(String::len).collect();
        user_defined_lengths.sort_unstable_by(|a, b| b.cmp(a));
        user_defined_lengths.dedup();
        let mut tokenizer = SentencePieceTokenizer {
            table,
            mergeable,
            reserved,
            user_defined,
            user_defined_lengths,
            byte_ids,
            normalizer: config.normalizer,
            bos_id: None,
            eos_id: None,
        };
        tokenizer.bos_id = tokenizer.control_id(&config.bos_piece);
        tokenizer.eos_id = tokenizer.control_id(&config.eos_piece);
        Ok(tokenizer)
    }

    /// sentencepiece's `PieceToId`: reserved pieces first, then mergeable ones, else the unknown id.
    fn piece_to_id(&self, text: &str) -> u32 {
        self.reserved
            .get(text)
            .or_else(|| self.mergeable.get(text))
            .copied()
            .unwrap_or(self.table.unk_id())
    }

    /// The id of `text` if it is a control piece (how sentencepiece finds BOS and EOS).
    fn control_id(&self, text: &str) -> Option<u32> {
        let id = self.piece_to_id(text);
        (self.kind(id) == PieceKind::Control).then_some(id)
    }

    fn kind(&self, id: u32) -> PieceKind {
        self.table.piece(id).map_or(PieceKind::Unknown, |p| p.kind)
    }

    /// Byte length of the longest user-defined piece `text` starts with.
    fn user_defined_prefix(&self, text: &str) -> Option<usize> {
        self.user_defined_lengths
            .iter()
            .copied()
            .find(|&len| text.get(..len).is_some_and(|head| self.user_defined.contains(head)))
    }

    /// The normalised text sentencepiece's `Normalizer::Normalize` produces for an identity rule.
    pub(crate) fn normalize(&self, text: &str) -> String {
        let spec = self.normalizer;
        let mut input = text;
        if spec.remove_extra_whitespaces {
            while input.starts_with(' ') && self.user_defined_prefix(input).is_none() {
                input = &input[1..];
            }
        }
        if input.is_empty() {
            return String::new();
        }
        let space = if spec.escape_whitespaces { "\u{2581}" } else { " " };
        let mut out = String::with_capacity(input.len() * 3 + space.len());
        if spec.add_dummy_prefix {
            out.push_str(space);
        }
        let mut is_prev_space = spec.remove_extra_whitespaces;
        while let Some(first) = input.chars().next() {
            let len = self.user_defined_prefix(input).unwrap_or(first.len_utf8());
            let mut unit = &input[..len];
            if is_prev_space {
                unit = unit.trim_start_matches(' ');
            }
            if !unit.is_empty() {
                if spec.escape_whitespaces {
                    out.push_str(&unit.replace(' ', space));
                } else {
                    out.push_str(unit);
                }
                is_prev_space = unit.ends_with(' ');
            }
            input = &input[len..];
            if !spec.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }

    /// Characters, except that user-defined pieces are single frozen symbols.
    fn split_into_symbols(&self, normalized: &str) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(normalized.len());
        let mut start = 0;
        while let Some(first) = normalized[start..].chars().next() {
            let user = self.user_defined_prefix(&normalized[start..]);
            let end = start + user.unwrap_or(first.len_utf8());
            let index = symbols.len();
            symbols.push(Symbol {
                start,
                end,
                prev: index.checked_sub(1),
                next: (end < normalized.len()).then_some(index + 1),
                frozen: user.is_some(),
            });
            start = end;
        }
        symbols
    }

    /// Queues the merge of `left` and `right` if their concatenation is a mergeable piece.
    fn push_pair<'a>(
        &self,
        normalized: &'a str,
        symbols: &[Symbol],
        (left, right): (usize, usize),
        agenda: &mut BinaryHeap<Candidate>,
        rev_merge: &mut RevMerge<'a>,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        if l.frozen || r.frozen {
            return;
        }
        let text = &normalized[l.start..r.end];
        let Some(piece) = self.mergeable.get(text).and_then(|&id| self.table.piece(id)) else {
            return;
        };
        agenda.push(Candidate {
            score: piece.score,
            left,
            right,
            len: text.len(),
        });
        if piece.kind == PieceKind::Unused {
            rev_merge.insert(text, (&normalized[l.start..l.end], &normalized[r.start..r.end]));
        }
    }

    /// BPE over the normalised text: the final pieces with their ids (unknown id if not in the vocabulary).
    fn bpe<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        let mut symbols = self.split_into_symbols(normalized);
        if symbols.is_empty() {
            return Vec::new();
        }
        let mut agenda = BinaryHeap::new();
        let mut rev_merge = RevMerge::new();
        for right in 1..symbols.len() {
            self.push_pair(normalized, &symbols, (right - 1, right), &mut agenda, &mut rev_merge);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (symbols[top.left], symbols[top.right]);
            // A stale entry: one side was merged away or has grown since it was queued.
            if l.start == l.end || r.start == r.end || (l.end - l.start) + (r.end - r.start) != top.len {
                continue;
            }
            symbols[top.left].end = r.end;
            symbols[top.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(top.left);
            }
            symbols[top.right].end = symbols[top.right].start;
            if let Some(prev) = l.prev {
                self.push_pair(normalized, &symbols, (prev, top.left), &mut agenda, &mut rev_merge);
            }
            if let Some(next) = r.next {
                self.push_pair(normalized, &symbols, (top.left, next), &mut agenda, &mut rev_merge);
            }
        }
        let mut out = Vec::with_capacity(symbols.len());
        let mut index = Some(0);
        while let Some(i) = index {
            self.resegment(&normalized[symbols[i].start..symbols[i].end], &rev_merge, &mut out);
            index = symbols[i].next;
        }
        out
    }

    /// Emits `piece`, or — if it is an unused piece made by merging — the pieces it was made from.
    fn resegment<'a>(&self, piece: &'a str, rev_merge: &RevMerge<'a>, out: &mut Vec<(&'a str, u32)>) {
        let mut stack = vec![piece];
        while let Some(text) = stack.pop() {
            let id = self.piece_to_id(text);
            if self.kind(id) == PieceKind::Unused {
                if let Some(&(left, right)) = rev_merge.get(text) {
                    stack.push(right);
                    stack.push(left);
                    continue;
                }
            }
            out.push((text, id));
        }
    }
}

impl Tokenizer for SentencePieceTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let mut ids = Vec::with_capacity(normalized.len() / 2);
        let mut prev_unknown = false;
        for (piece, id) in self.bpe(&normalized) {
            let unknown = self.kind(id) == PieceKind::Unknown;
            match (&self.byte_ids, unknown) {
                (Some(byte_ids), true) => ids.extend(piece.bytes().map(|b| byte_ids[b as usize])),
                // A run of unknown pieces is one unknown id.
                (None, true) if prev_unknown => {}
                _ => ids.push(id),
            }
            prev_unknown = unknown;
        }
        ids
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
