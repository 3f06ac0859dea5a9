//! Tokenizers against the reference libraries: ids recorded by tools/make_tokenizer_fixtures.py from
//! tiktoken (GPT-2), sentencepiece (tokenizer.model; llama2.c's tokenizer.bin is the same model) and
//! Hugging Face `tokenizers` (tokenizer.json), for strings chosen to hit whitespace, unicode, bytes,
//! digits, code and characters the tiny vocabularies lack; plus round trips, streaming bytes, error
//! reporting on malformed files, and property tests that random or damaged files never panic.

use std::path::{Path, PathBuf};

use orion_models::tokenizer::{
    gpt2, load_tokenizer, load_tokenizer_bytes, HfBpeTokenizer, SentencePieceTokenizer, Tokenizer,
};
use orion_models::ModelError;
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Fixture {
    models: Models,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Models {
    llama: ModelInfo,
    plain: ModelInfo,
    gpt2: ModelInfo,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    vocab_size: usize,
    #[serde(default)]
    bos: Option<i64>,
    eos: i64,
}

#[derive(Debug, Deserialize)]
struct Case {
    text: String,
    gpt2: Vec<u32>,
    llama_spm: Vec<u32>,
    llama_decoded: String,
    llama_hf: Vec<u32>,
    llama_hf_metaspace: Vec<u32>,
    llama_hf_metaspace_split: Vec<u32>,
    plain_spm: Vec<u32>,
    plain_decoded: String,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture file is committed")
}

fn fixture() -> Fixture {
    serde_json::from_slice(&fixture_bytes("cases.json")).expect("cases.json parses")
}

fn load(name: &str) -> Box<dyn Tokenizer> {
    load_tokenizer(&fixture_path(name)).expect("fixture loads")
}

/// sentencepiece's id for "no such token" is -1.
fn optional_id(id: Option<i64>) -> Option<u32> {
    id.and_then(|i| u32::try_from(i).ok())
}

/// The texts `tokenizers` splits at special-token text, which the SentencePiece loaders treat as text.
fn spells_special_token(text: &str) -> bool {
    ["<s>", "</s>", "<unk>"].iter().any(|s| text.contains(s))
}

/// Checks ids and decoded text of every case against the recorded reference.
fn assert_cases(tokenizer: &dyn Tokenizer, label: &str, expected: impl Fn(&Case) -> (&[u32], &str)) {
    for case in fixture().cases {
        let (ids, decoded) = expected(&case);
        assert_eq!(tokenizer.encode(&case.text), ids, "{label}: ids of {:?}", case.text);
        let bytes = tokenizer.decode(ids).expect("reference ids decode");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            decoded,
            "{label}: decode of {:?}",
            case.text
        );
    }
}

#[test]
fn gpt2_ids_and_bytes_match_tiktoken_r50k_base() {
    let tokenizer = gpt2().expect("r50k_base builds");
    let info = fixture().models.gpt2;
    assert_eq!(tokenizer.vocab_size(), info.vocab_size);
    assert_eq!(tokenizer.eos_id(), optional_id(Some(info.eos)));
    assert_eq!(tokenizer.bos_id(), None);
    for case in fixture().cases {
        assert_eq!(tokenizer.encode(&case.text), case.gpt2, "ids of {:?}", case.text);
        assert_eq!(tokenizer.decode(&case.gpt2).expect("decodes"), case.text.as_bytes());
    }
}

#[test]
fn sentencepiece_model_matches_sentencepiece() {
    let tokenizer = load("llama_bpe.model");
    let info = fixture().models.llama;
    assert_eq!(tokenizer.vocab_size(), info.vocab_size);
    assert_eq!(tokenizer.bos_id(), optional_id(info.bos));
    assert_eq!(tokenizer.eos_id(), optional_id(Some(info.eos)));
    assert_cases(tokenizer.as_ref(), "llama_bpe.model", |c| {
        (&c.llama_spm, &c.llama_decoded)
    });
}

#[test]
fn llama2c_bin_matches_sentencepiece_on_the_same_model() {
    let tokenizer = load("llama_bpe.bin");
    let info = fixture().models.llama;
    assert_eq!(tokenizer.vocab_size(), info.vocab_size);
    assert_eq!(tokenizer.bos_id(), optional_id(info.bos));
    assert_eq!(tokenizer.eos_id(), optional_id(Some(info.eos)));
    assert_cases(tokenizer.as_ref(), "llama_bpe.bin", |c| {
        (&c.llama_spm, &c.llama_decoded)
    });
}

#[test]
fn hf_json_matches_tokenizers_and_sentencepiece() {
    let tokenizer = load("llama_bpe.json");
    let info = fixture().models.llama;
    assert_eq!(tokenizer.vocab_size(), info.vocab_size);
    assert_eq!(tokenizer.bos_id(), optional_id(info.bos));
    assert_eq!(tokenizer.eos_id(), optional_id(Some(info.eos)));
    assert_cases(tokenizer.as_ref(), "llama_bpe.json", |c| {
        (&c.llama_spm, &c.llama_decoded)
    });
    for case in fixture().cases.iter().filter(|c| !spells_special_token(&c.text)) {
        assert_eq!(
            tokenizer.encode(&case.text),
            case.llama_hf,
            "tokenizers ids of {:?}",
            case.text
        );
    }
}

/// llama_bpe.json with the normalizer removed and a Metaspace pre-tokenizer, as the script edits it.
fn metaspace_json(split: bool) -> Vec<u8> {
    let mut json: serde_json::Value = serde_json::from_slice(&fixture_bytes("llama_bpe.json")).expect("json");
    json["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": []});
    json["pre_tokenizer"] =
        serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": split});
    serde_json::to_vec(&json).expect("serialises")
}

#[test]
fn hf_json_metaspace_pre_tokenizer_matches_tokenizers() {
    for split in [false, true] {
        let tokenizer = HfBpeTokenizer::from_json_bytes(&metaspace_json(split), Path::new("meta.json")).expect("loads");
        for case in fixture().cases.iter().filter(|c| !spells_special_token(&c.text)) {
            let expected = if split {
                &case.llama_hf_metaspace_split
            } else {
                &case.llama_hf_metaspace
            };
            assert_eq!(
                &tokenizer.encode(&case.text),
                expected,
                "split={split}: ids of {:?}",
                case.text
            );
        }
    }
}

#[test]
fn plain_model_matches_sentencepiece_unknowns_user_symbols_unused_and_whitespace_removal() {
    let tokenizer = load("plain_bpe.model");
    let info = fixture().models.plain;
    assert_eq!(tokenizer.vocab_size(), info.vocab_size);
    assert_eq!(tokenizer.bos_id(), optional_id(info.bos));
    assert_eq!(tokenizer.eos_id(), optional_id(Some(info.eos)));
    assert_cases(tokenizer.as_ref(), "plain_bpe.model", |c| {
        (&c.plain_spm, &c.plain_decoded)
    });
}

#[test]
fn llama_loaders_round_trip_every_case() {
    for name in ["llama_bpe.model", "llama_bpe.bin", "llama_bpe.json"] {
        let tokenizer = load(name);
        for case in fixture().cases {
            let ids = tokenizer.encode(&case.text);
            // sentencepiece's one documented normalisation here: a literal ▁ reads back as a space.
            let expected = case.text.replace('\u{2581}', " ");
            assert_eq!(
                tokenizer.decode(&ids).expect("decodes"),
                expected.as_bytes(),
                "{name}: {:?}",
                case.text
            );
        }
    }
}

#[test]
fn token_bytes_concatenate_to_the_text_for_streaming() {
    let llama = load("llama_bpe.model");
    let gpt2 = gpt2().expect("r50k_base builds");
    for case in fixture().cases.iter().filter(|c| !c.text.is_empty()) {
        let streamed = |t: &dyn Tokenizer| -> Vec<u8> {
            t.encode(&case.text)
                .iter()
                .flat_map(|&id| t.token_bytes(id).expect("id in vocabulary"))
                .collect()
        };
        // Mid-text bytes keep the dummy-prefix space that decode() strips at the start.
        let expected = format!(" {}", case.text.replace('\u{2581}', " "));
        assert_eq!(streamed(llama.as_ref()), expected.as_bytes(), "llama: {:?}", case.text);
        assert_eq!(streamed(gpt2.as_ref()), case.text.as_bytes(), "gpt2: {:?}", case.text);
    }
}

#[test]
fn byte_pieces_decode_to_raw_bytes_that_may_split_a_character() {
    let tokenizer = load("llama_bpe.model");
    // "한" is not in the tiny vocabulary: three byte pieces <0xED> <0x95> <0x9C>.
    let ids = tokenizer.encode("한");
    let tail: Vec<Vec<u8>> = ids[1..]
        .iter()
        .map(|&id| tokenizer.token_bytes(id).expect("known id"))
        .collect();
    assert_eq!(tail, vec![vec![0xED], vec![0x95], vec![0x9C]]);
    assert_eq!(tokenizer.decode(&ids[..2]).expect("decodes"), vec![0xED]);
    assert_eq!(tokenizer.decode_lossy(&ids[..2]), "\u{FFFD}");
    assert_eq!(tokenizer.decode_lossy(&ids), "한");
}

#[test]
fn ids_outside_the_vocabulary_are_decode_errors_and_skipped_by_decode_lossy() {
    for tokenizer in [load("llama_bpe.model"), load("llama_bpe.json"), gpt2().expect("builds")] {
        let outside = tokenizer.vocab_size() as u32;
        let hello = tokenizer.encode("hello");
        assert!(matches!(tokenizer.decode(&[outside]), Err(ModelError::Tokenizer(_))));
        assert_eq!(tokenizer.token_bytes(outside), None);
        let mut with_bad = hello.clone();
        with_bad.insert(1, outside);
        assert_eq!(tokenizer.decode_lossy(&with_bad), tokenizer.decode_lossy(&hello));
        assert_eq!(tokenizer.decode_lossy(&hello), "hello");
    }
}

#[test]
fn control_pieces_decode_to_nothing() {
    for name in ["llama_bpe.model", "llama_bpe.bin", "llama_bpe.json"] {
        let tokenizer = load(name);
        let bos = tokenizer.bos_id().expect("has BOS");
        let eos = tokenizer.eos_id().expect("has EOS");
        let mut ids = vec![bos];
        ids.extend(tokenizer.encode("the fox"));
        ids.push(eos);
        assert_eq!(tokenizer.decode(&ids).expect("decodes"), b"the fox", "{name}");
    }
}

#[test]
fn formats_are_found_by_content_and_in_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = load("llama_bpe.model").encode("The quick brown fox, 2024 🙂");
    for name in ["llama_bpe.model", "llama_bpe.json", "llama_bpe.bin"] {
        let odd = dir.path().join(format!("{name}.data"));
        std::fs::write(&odd, fixture_bytes(name)).expect("writes");
        let tokenizer = load_tokenizer(&odd).unwrap_or_else(|e| panic!("{name} by content: {e}"));
        assert_eq!(
            tokenizer.encode("The quick brown fox, 2024 🙂"),
            reference,
            "{name} by content"
        );
    }
    std::fs::write(dir.path().join("tokenizer.model"), fixture_bytes("llama_bpe.model")).expect("writes");
    let from_dir = load_tokenizer(dir.path()).expect("directory with tokenizer.model");
    assert_eq!(from_dir.encode("The quick brown fox, 2024 🙂"), reference);
    let empty = tempfile::tempdir().expect("temp dir");
    assert!(matches!(load_tokenizer(empty.path()), Err(ModelError::Format { .. })));
    assert!(matches!(
        load_tokenizer(&empty.path().join("missing.model")),
        Err(ModelError::Io { .. })
    ));
}

/// The error of loading `bytes` as `name`, which must be a format error naming the file.
fn format_error(bytes: &[u8], name: &str) -> String {
    match load_tokenizer_bytes(bytes, Path::new(name)) {
        Err(error @ ModelError::Format { .. }) => {
            let message = error.to_string();
            assert!(message.contains(name), "{message:?} names {name}");
            message
        }
        Err(other) => panic!("{name}: expected a format error, got {other}"),
        Ok(tokenizer) => panic!("{name}: expected an error, loaded {tokenizer:?}"),
    }
}

#[test]
fn malformed_sentencepiece_models_are_refused_with_the_reason() {
    // trainer_spec { model_type: UNIGRAM }
    assert!(format_error(&[0x12, 0x02, 0x18, 0x01], "uni.model").contains("Unigram"));
    // trainer_spec { model_type: BPE }, normalizer_spec { precompiled_charsmap: "x" }
    let nfkc = [0x12, 0x02, 0x18, 0x02, 0x1a, 0x03, 0x12, 0x01, b'x'];
    assert!(format_error(&nfkc, "nfkc.model").contains("precompiled"));
    // A BPE model without pieces has no unknown piece.
    assert!(format_error(&[0x12, 0x02, 0x18, 0x02], "empty.model").contains("unknown piece"));
    assert!(format_error(&[0x0a, 0xff], "cut.model").contains("protobuf"));
    let mut bytes = fixture_bytes("llama_bpe.model");
    bytes.truncate(bytes.len() / 2);
    format_error(&bytes, "half.model");
}

#[test]
fn malformed_llama2c_files_are_refused_with_the_reason() {
    let bytes = fixture_bytes("llama_bpe.bin");
    assert!(format_error(&bytes[..bytes.len() - 3], "cut.bin").contains("truncated"));
    assert!(format_error(&bytes[..4], "header.bin").contains("no tokens"));
    let mut small_max = bytes.clone();
    small_max[..4].copy_from_slice(&1u32.to_le_bytes());
    assert!(format_error(&small_max, "max.bin").contains("max_token_length"));
    // Record 0 is <unk>: score (4 bytes), length 5, then the text; renaming it leaves no unknown piece.
    let mut no_unk = bytes.clone();
    no_unk[12..17].copy_from_slice(b"<unq>");
    assert!(format_error(&no_unk, "nounk.bin").contains("<unk>"));
}

#[test]
fn unsupported_tokenizer_json_settings_are_refused_with_their_path() {
    let base: serde_json::Value = serde_json::from_slice(&fixture_bytes("llama_bpe.json")).expect("json");
    let edits: [(&str, serde_json::Value, &str); 5] = [
        (
            "/pre_tokenizer",
            serde_json::json!({"type": "ByteLevel", "add_prefix_space": false}),
            "pre_tokenizer",
        ),
        ("/model/type", serde_json::json!("Unigram"), "model.type"),
        ("/model/dropout", serde_json::json!(0.1), "dropout"),
        ("/normalizer", serde_json::json!({"type": "NFKC"}), "normalizer"),
        ("/decoder", serde_json::Value::Null, "decoder"),
    ];
    for (pointer, value, expected) in edits {
        let mut json = base.clone();
        *json.pointer_mut(pointer).expect("path exists") = value;
        let message = format_error(&serde_json::to_vec(&json).expect("serialises"), "edited.json");
        assert!(message.contains(expected), "{pointer}: {message}");
    }
    let mut added = base.clone();
    added["added_tokens"][0]["special"] = serde_json::json!(false);
    assert!(format_error(&serde_json::to_vec(&added).expect("json"), "added.json").contains("non-special"));
    let mut merge = base;
    merge["model"]["merges"][0] = serde_json::json!(["\u{2581}", "nope"]);
    assert!(format_error(&serde_json::to_vec(&merge).expect("json"), "merge.json").contains("merges[0]"));
    assert!(format_error(b"{ not json", "bad.json").contains("not JSON"));
}

#[test]
fn sentencepiece_loaders_agree_with_each_other_on_the_model_file() {
    let model = SentencePieceTokenizer::load_model(&fixture_path("llama_bpe.model")).expect("loads");
    let bin = SentencePieceTokenizer::load_llama2c(&fixture_path("llama_bpe.bin")).expect("loads");
    let json = HfBpeTokenizer::load(&fixture_path("llama_bpe.json")).expect("loads");
    assert_eq!(model.vocab_size(), bin.vocab_size());
    assert_eq!(model.vocab_size(), json.vocab_size());
    for id in 0..model.vocab_size() as u32 {
        assert_eq!(model.token_bytes(id), bin.token_bytes(id), "token {id}");
        assert_eq!(model.token_bytes(id), json.token_bytes(id), "token {id}");
    }
}

/// Text drawn from characters the tiny vocabulary has, lacks, and treats specially.
fn tricky_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(vec![
                'a', 'e', 't', 'h', 'o', 'n', 's', 'r', ' ', ' ', '\t', '\n', '0', '7', '.', '(', '\u{2581}',
                'é', '日', '🙂', 'Ω', '한', '\u{0}',
            ]),
            1 => any::<char>(),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn llama_round_trip_and_loader_agreement(text in tricky_text()) {
        let model = load("llama_bpe.model");
        let ids = model.encode(&text);
        prop_assert_eq!(model.decode(&ids).expect("decodes"), text.replace('\u{2581}', " ").into_bytes());
        prop_assert_eq!(&load("llama_bpe.bin").encode(&text), &ids);
        prop_assert_eq!(&load("llama_bpe.json").encode(&text), &ids);
    }

    #[test]
    fn random_bytes_never_panic_any_loader(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for name in ["x.model", "x.json", "x.bin", "x.data"] {
            if let Ok(tokenizer) = load_tokenizer_bytes(&bytes, Path::new(name)) {
                let ids = tokenizer.encode("probe text ü 🙂");
                let _ = tokenizer.decode(&ids);
            }
        }
    }

    #[test]
    fn damaged_fixtures_never_panic(
        which in 0usize..4,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let name = ["llama_bpe.model", "llama_bpe.json", "llama_bpe.bin", "plain_bpe.model"][which];
        let mut bytes = fixture_bytes(name);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        if which % 2 == 0 {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(tokenizer) = load_tokenizer_bytes(&bytes, Path::new(name)) {
            let ids = tokenizer.encode("probe  text\tü 🙂 12");
            let _ = tokenizer.decode(&ids);
            let _ = tokenizer.decode_lossy(&ids);
        }
    }
}
