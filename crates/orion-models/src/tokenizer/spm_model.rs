//! Reads a SentencePiece `tokenizer.model`: the `ModelProto` protobuf, decoded with prost from the subset
//! of sentencepiece_model.proto (proto2) written out by hand below — field numbers are the public ones.
//!
//! Accepted: BPE models whose normaliser is an identity mapping (no precompiled character map, no
//! denormaliser), dummy prefix on the left. Everything else — Unigram/word/char models, `nmt_nfkc`
//! and other precompiled rules, `treat_whitespace_as_suffix` — is refused with a message naming the
//! setting, rather than tokenized differently from sentencepiece. Proto2 defaults apply to absent
//! fields (model type UNIGRAM, piece type NORMAL, whitespace flags true).

use std::path::Path;

use prost::Message;

use super::sentencepiece::{
    byte_piece_value, NormalizerSpec, Piece, PieceKind, SentencePieceTokenizer, SpmConfig, DEFAULT_UNK_SURFACE,
};
use crate::error::{ModelError, Result};

/// `sentencepiece.ModelProto` (fields 1, 2, 3, 5).
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<SentencePieceProto>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpecProto>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpecProto>,
    #[prost(message, optional, tag = "5")]
    denormalizer_spec: Option<NormalizerSpecProto>,
}

/// `sentencepiece.ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, Message)]
struct SentencePieceProto {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    /// `Type`: NORMAL 1 (default), UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

/// The fields of `sentencepiece.TrainerSpec` that change encoding or decoding.
#[derive(Clone, PartialEq, Message)]
struct TrainerSpecProto {
    /// UNIGRAM 1 (default), BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(bool, optional, tag = "24")]
    treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
    #[prost(string, optional, tag = "44")]
    unk_surface: Option<String>,
    #[prost(string, optional, tag = "46")]
    bos_piece: Option<String>,
    #[prost(string, optional, tag = "47")]
    eos_piece: Option<String>,
}

/// `sentencepiece.NormalizerSpec`.
#[derive(Clone, PartialEq, Message)]
struct NormalizerSpecProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    escape_whitespaces: Option<bool>,
}

const MODEL_TYPE_BPE: i32 = 2;
const MODEL_TYPE_NAMES: [&str; 5] = ["?", "Unigram", "BPE", "word", "char"];

impl SentencePieceTokenizer {
    /// Reads a SentencePiece `tokenizer.model` file.
    pub fn load_model(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_model_bytes(&bytes, path)
    }

    /// Parses the bytes of a SentencePiece `tokenizer.model`; `origin` names the file in errors.
    pub fn from_model_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let proto = ModelProto::decode(bytes)
            .map_err(|e| ModelError::format(origin, format!("not a SentencePiece model protobuf: {e}")))?;
        let trainer = proto.trainer_spec.unwrap_or_default();
        let model_type = trainer.model_type.unwrap_or(1);
        if model_type != MODEL_TYPE_BPE {
            let name = usize::try_from(model_type)
                .ok()
                .and_then(|i| MODEL_TYPE_NAMES.get(i))
                .unwrap_or(&"unknown");
            return Err(ModelError::format(
                origin,
                format!("SentencePiece model type {model_type} ({name}) is not supported; only BPE models are"),
            ));
        }
        if trainer.treat_whitespace_as_suffix == Some(true) {
            return Err(ModelError::format(
                origin,
                "treat_whitespace_as_suffix is not supported",
            ));
        }
        let normalizer = normalizer_spec(proto.normalizer_spec, proto.denormalizer_spec, origin)?;
        let pieces = proto
            .pieces
            .into_iter()
            .enumerate()
            .map(|(id, p)| piece(id, p, origin))
            .collect::<Result<Vec<_>>>()?;
        let config = SpmConfig {
            normalizer,
            byte_fallback: trainer.byte_fallback.unwrap_or(false),
            unk_surface: trainer.unk_surface.unwrap_or_else(|| DEFAULT_UNK_SURFACE.to_string()),
            bos_piece: non_empty_or(trainer.bos_piece, "<s>"),
            eos_piece: non_empty_or(trainer.eos_piece, "</s>"),
        };
        SentencePieceTokenizer::new(pieces, config, origin)
    }
}

/// sentencepiece falls back to the default piece name when the field is empty.
fn non_empty_or(value: Option<String>, default: &str) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn normalizer_spec(
    spec: Option<NormalizerSpecProto>,
    denormalizer: Option<NormalizerSpecProto>,
    origin: &Path,
) -> Result<NormalizerSpec> {
    let spec = spec.unwrap_or_default();
    if spec.precompiled_charsmap.as_ref().is_some_and(|map| !map.is_empty()) {
        let name = spec.name.as_deref().unwrap_or("unnamed");
        return Err(ModelError::format(
            origin,
            format!(
                "normalizer {name:?} uses a precompiled character map; only the identity normalizer is \
                 supported (train with normalization_rule_name=identity, as Llama's tokenizer is)"
            ),
        ));
    }
    if denormalizer.is_some_and(|d| d.precompiled_charsmap.is_some_and(|map| !map.is_empty())) {
        return Err(ModelError::format(origin, "a denormalizer rule is not supported"));
    }
    Ok(NormalizerSpec {
        add_dummy_prefix: spec.add_dummy_prefix.unwrap_or(true),
        remove_extra_whitespaces: spec.remove_extra_whitespaces.unwrap_or(true),
        escape_whitespaces: spec.escape_whitespaces.unwrap_or(true),
    })
}

fn piece(id: usize, proto: SentencePieceProto, origin: &Path) -> Result<Piece> {
    let text = proto.piece.unwrap_or_default();
    let kind = match proto.kind.unwrap_or(1) {
        1 => PieceKind::Normal,
        2 => PieceKind::Unknown,
        3 => PieceKind::Control,
        4 => PieceKind::UserDefined,
        5 => PieceKind::Unused,
        6 => PieceKind::Byte(byte_piece_value(&text).ok_or_else(|| {
            ModelError::format(origin, format!("piece {id} is a byte piece but {text:?} is not <0xXX>"))
        })?),
        other => {
            return Err(ModelError::format(
                origin,
                format!("piece {id} ({text:?}) has unknown type {other}"),
            ))
        }
    };
    Ok(Piece {
        text,
        score: proto.score.unwrap_or(0.0),
        kind,
    })
}
