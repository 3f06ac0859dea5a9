//! BPE training: vocabulary layout and size, round trips, saving/loading, determinism, compression,
//! and the learned merges against a naive re-implementation that recounts every pair.

use std::collections::HashMap;

use orion_models::data::generate_corpus;
use orion_models::tokenizer::train_bpe::{train_bpe, TrainedBpe, MIN_VOCAB_SIZE};
use orion_models::tokenizer::{load_tokenizer, Tokenizer};

fn corpus() -> String {
    generate_corpus(21, 120_000)
}

#[test]
fn the_vocabulary_has_exactly_the_requested_size_and_layout() {
    let text = corpus();
    for size in [MIN_VOCAB_SIZE, 300, 512] {
        let bpe = train_bpe(&text, size).unwrap();
        let pieces = bpe.pieces();
        assert_eq!(pieces.len(), size);
        assert_eq!(bpe.vocab_size(), size);
        assert_eq!(pieces[0].0, "<unk>");
        assert_eq!(pieces[1].0, "<s>");
        assert_eq!(pieces[2].0, "</s>");
        for b in 0..256 {
            assert_eq!(pieces[3 + b].0, format!("<0x{b:02X}>"));
        }
        assert_eq!(bpe.bos_id(), Some(1));
        assert_eq!(bpe.eos_id(), Some(2));
        let mut texts: Vec<&str> = pieces.iter().map(|p| p.0.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), size, "duplicate pieces");
    }
}

#[test]
fn too_small_a_vocabulary_or_text_is_an_error() {
    assert!(train_bpe("hello", MIN_VOCAB_SIZE - 1).is_err());
    let err = train_bpe("ab ab", 400).unwrap_err().to_string();
    assert!(err.contains("too small"), "{err}");
}

#[test]
fn encoding_round_trips_on_corpus_text() {
    let text = corpus();
    let bpe = train_bpe(&text, 400).unwrap();
    let held_out = generate_corpus(99, 20_000);
    let (mut total, mut bytes) = (0, 0);
    for story in held_out.split("\n\n").take(30) {
        let ids = bpe.encode(story);
        assert_eq!(bpe.decode(&ids).unwrap(), story.as_bytes());
        total += ids.len();
        bytes += ids.iter().filter(|&&id| (3..259).contains(&id)).count();
    }
    // Only the rarest characters (beyond 99.95 % coverage) fall back to byte pieces.
    assert!(bytes * 1000 < total, "{bytes} byte pieces among {total} ids");
}

#[test]
fn unseen_unicode_round_trips_through_byte_pieces() {
    let bpe = train_bpe(&corpus(), 350).unwrap();
    for text in [
        "Grüße, 世界! 🦀 naïve café",
        "tab\tand\r\nnewline",
        "  two leading spaces",
        "x",
    ] {
        let ids = bpe.encode(text);
        assert_eq!(String::from_utf8(bpe.decode(&ids).unwrap()).unwrap(), text);
    }
    let ids = bpe.encode("世");
    // '▁' is a piece; the three UTF-8 bytes of '世' are byte pieces 3 + byte.
    let bytes: Vec<u32> = "世".bytes().map(|b| 3 + u32::from(b)).collect();
    assert!(ids.ends_with(&bytes), "{ids:?}");
}

#[test]
fn saving_and_loading_gives_identical_ids() {
    let bpe = train_bpe(&corpus(), 420).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sample = format!("{}\nÜnïcödé 😀 and \"quotes\".", generate_corpus(5, 3_000));
    for name in ["tokenizer.bin", "tokenizer.model"] {
        let path = dir.path().join(name);
        bpe.save(&path).unwrap();
        let loaded = load_tokenizer(&path).unwrap();
        assert_eq!(loaded.vocab_size(), bpe.vocab_size(), "{name}");
        assert_eq!(loaded.encode(&sample), bpe.encode(&sample), "{name}");
        assert_eq!(loaded.bos_id(), bpe.bos_id());
        assert_eq!(loaded.eos_id(), bpe.eos_id());
        for id in 0..bpe.vocab_size() as u32 {
            assert_eq!(loaded.token_bytes(id), bpe.token_bytes(id), "{name} id {id}");
        }
    }
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 2, "temporary files left behind: {files:?}");
    assert!(bpe.save(&dir.path().join("tokenizer.txt")).is_err());
}

#[test]
fn training_is_deterministic() {
    let text = corpus();
    let a = train_bpe(&text, 450).unwrap();
    let b = train_bpe(&text, 450).unwrap();
    assert_eq!(a.pieces(), b.pieces());
    assert_eq!(a.to_llama2c_bytes(), b.to_llama2c_bytes());
}

#[test]
fn compression_improves_with_vocabulary_size() {
    let text = corpus();
    let held_out = generate_corpus(1234, 30_000);
    let mut previous = f64::INFINITY;
    for size in [MIN_VOCAB_SIZE + 80, 400, 600, 900] {
        let bpe = train_bpe(&text, size).unwrap();
        let per_byte = bpe.encode(&held_out).len() as f64 / held_out.len() as f64;
        assert!(
            per_byte < previous,
            "vocab {size}: {per_byte:.3} tokens/byte, not below {previous:.3}"
        );
        previous = per_byte;
    }
    assert!(
        previous < 0.4,
        "vocab 900 should need well under one token per 2.5 bytes: {previous:.3}"
    );
}

#[test]
fn frequent_words_become_single_pieces() {
    let bpe = train_bpe(&corpus(), 512).unwrap();
    let ids: HashMap<String, u32> = bpe
        .pieces()
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p.0, i as u32))
        .collect();
    for word in ["the", "and", "was"] {
        let id = ids[&format!("\u{2581}{word}")];
        assert_eq!(bpe.encode(word), vec![id], "{word}");
    }
}

#[test]
fn merges_match_a_naive_trainer() {
    let text = generate_corpus(77, 15_000);
    let size = 420;
    let bpe = train_bpe(&text, size).unwrap();
    let expected = naive_merges(&text, size);
    let pieces = bpe.pieces();
    let learned: Vec<&str> = pieces[259..259 + expected.len()].iter().map(|p| p.0.as_str()).collect();
    assert_eq!(learned, expected.iter().map(String::as_str).collect::<Vec<_>>());
    for (rank, piece) in pieces[259..259 + expected.len()].iter().enumerate() {
        assert_eq!(piece.1, -(rank as f32));
    }
}

/// The words of `text` by the trainer's rules: `▁` for spaces plus a dummy prefix, a cut before each
/// `▁` and wherever the character class changes (a `▁` joins what follows, unless a newline).
fn naive_words(text: &str) -> Vec<Vec<String>> {
    let class = |c: char| {
        if c == '\u{2581}' {
            0
        } else if c.is_alphabetic() {
            1
        } else if c.is_numeric() {
            2
        } else if c == '\n' {
            3
        } else {
            5
        }
    };
    let normalized: Vec<char> = std::iter::once('\u{2581}')
        .chain(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }))
        .collect();
    let mut words: Vec<Vec<String>> = Vec::new();
    for (i, &c) in normalized.iter().enumerate() {
        let boundary = i == 0 || {
            let (p, n) = (class(normalized[i - 1]), class(c));
            n == 0 || (p == 0 && n == 3) || (p != 0 && p != n)
        };
        if boundary {
            words.push(Vec::new());
        }
        words.last_mut().unwrap().push(c.to_string());
    }
    words
}

/// BPE written the slow, obvious way: the same word rules, every pair recounted after each merge.
fn naive_merges(text: &str, vocab_size: usize) -> Vec<String> {
    let mut words = naive_words(text);
    // Symbol ids: characters by falling frequency (ties by character), then merges in order.
    let mut char_counts: HashMap<String, usize> = HashMap::new();
    for symbol in words.iter().flatten() {
        *char_counts.entry(symbol.clone()).or_default() += 1;
    }
    let mut chars: Vec<(String, usize)> = char_counts.into_iter().collect();
    chars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // Keep the most frequent characters up to 99.95 % coverage; words are cut at the others.
    let total: usize = chars.iter().map(|c| c.1).sum();
    let mut covered = 0;
    chars.retain(|c| {
        let keep = (covered as f64) < 0.9995 * total as f64;
        covered += c.1;
        keep
    });
    let mut ids: HashMap<String, usize> = chars.iter().enumerate().map(|(i, c)| (c.0.clone(), i)).collect();
    words = words
        .into_iter()
        .flat_map(|word| {
            word.split(|s| !ids.contains_key(s))
                .map(<[String]>::to_vec)
                .collect::<Vec<_>>()
        })
        .filter(|w| w.len() >= 2)
        .collect();
    let wanted = vocab_size - 259 - chars.len();
    let mut merges = Vec::new();
    while merges.len() < wanted {
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        for word in &words {
            for pair in word.windows(2) {
                *counts.entry((pair[0].clone(), pair[1].clone())).or_default() += 1;
            }
        }
        let best = counts
            .into_iter()
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then((ids[&b.0 .0], ids[&b.0 .1]).cmp(&(ids[&a.0 .0], ids[&a.0 .1])))
            })
            .unwrap();
        let ((left, right), _) = best;
        let joined = format!("{left}{right}");
        if !ids.contains_key(&joined) {
            ids.insert(joined.clone(), ids.len());
            merges.push(joined.clone());
        }
        for word in &mut words {
            *word = replace_pair(word, &left, &right, &joined);
        }
    }
    merges
}

/// `word` with every non-overlapping (left, right), from the left, replaced by `joined`.
fn replace_pair(word: &[String], left: &str, right: &str, joined: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && word[i] == left && word[i + 1] == right {
            out.push(joined.to_string());
            i += 2;
        } else {
            out.push(word[i].clone());
            i += 1;
        }
    }
    out
}

#[test]
fn the_trained_tokenizer_is_a_sentencepiece_tokenizer() {
    let bpe: TrainedBpe = train_bpe(&corpus(), 300).unwrap();
    let text = "Lily and Tom went to the park.";
    let tokenizer = bpe.clone().into_tokenizer();
    assert_eq!(tokenizer.encode(text), bpe.encode(text));
    assert_eq!(bpe.tokenizer().vocab_size(), 300);
}
