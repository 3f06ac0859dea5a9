//! Token streams and the batcher: shard files, text tokenisation, window order with and without
//! shuffling, the validation split, vocabulary checks and bit-identical resume.

use std::collections::BTreeSet;
use std::path::PathBuf;

use orion_models::data::shards::{parse_shard, read_shard, shard_paths, write_shard};
use orion_models::data::{generate_corpus, Batch, Batcher, BatcherConfig, BatcherState, TokenStream};
use orion_models::tokenizer::train_bpe::train_bpe;
use orion_models::tokenizer::Tokenizer;

fn config(batch_size: usize, seq_len: usize, shuffle: bool, val_fraction: f64) -> BatcherConfig {
    BatcherConfig {
        batch_size,
        seq_len,
        shuffle,
        seed: 1234,
        val_fraction,
        vocab_size: 100_000,
    }
}

/// A stream whose id at position i is i, so a window is identified by its first id.
fn counting(n: u32) -> TokenStream {
    TokenStream::from_ids("<counting>", (0..n).collect())
}

/// Rows of a batch as (inputs, targets) vectors.
fn rows(batch: &Batch) -> Vec<(Vec<i32>, Vec<i32>)> {
    let dims = batch.inputs.shape().0.clone();
    assert_eq!(batch.targets.shape().0, dims);
    let t = dims[1];
    let inputs = batch.inputs.as_i32().unwrap();
    let targets = batch.targets.as_i32().unwrap();
    (0..dims[0])
        .map(|r| {
            (
                inputs[r * t..(r + 1) * t].to_vec(),
                targets[r * t..(r + 1) * t].to_vec(),
            )
        })
        .collect()
}

/// The window index of each row of a batch from a counting stream with sequence length `t`.
fn windows(batch: &Batch, t: usize) -> Vec<usize> {
    rows(batch)
        .iter()
        .map(|(inputs, _)| inputs[0] as usize / (t + 1))
        .collect()
}

#[test]
fn shards_round_trip_and_concatenate_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<u32> = vec![0, 1, 65535, 300];
    let b: Vec<u32> = vec![7, 8];
    write_shard(&dir.path().join("data01.bin"), &a).unwrap();
    write_shard(&dir.path().join("data00.bin"), &b).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a shard").unwrap();
    let raw = std::fs::read(dir.path().join("data01.bin")).unwrap();
    assert_eq!(raw, [0, 0, 1, 0, 255, 255, 44, 1]);
    assert_eq!(read_shard(&dir.path().join("data01.bin")).unwrap(), [0, 1, 65535, 300]);
    let paths = shard_paths(dir.path()).unwrap();
    let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["data00.bin", "data01.bin"]);
    let stream = TokenStream::from_shards(&paths).unwrap();
    assert_eq!(stream.tokens(), [7, 8, 0, 1, 65535, 300]);
    assert!(write_shard(&dir.path().join("big.bin"), &[65536]).is_err());
    assert!(shard_paths(tempfile::tempdir().unwrap().path()).is_err());
}

#[test]
fn a_shard_of_odd_length_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.bin");
    std::fs::write(&path, [1, 0, 2]).unwrap();
    let err = TokenStream::from_shards(&[path]).unwrap_err().to_string();
    assert!(err.contains("broken.bin") && err.contains("even"), "{err}");
    assert!(parse_shard(&[1], &PathBuf::from("x.bin")).is_err());
}

#[test]
fn an_id_outside_the_vocabulary_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.bin");
    let second = dir.path().join("second.bin");
    write_shard(&first, &[1, 2, 3]).unwrap();
    write_shard(&second, &[4, 5, 600, 6]).unwrap();
    let stream = TokenStream::from_shards(&[first, second]).unwrap();
    let mut cfg = config(1, 2, false, 0.0);
    cfg.vocab_size = 512;
    let err = Batcher::new(stream.clone(), cfg).unwrap_err().to_string();
    assert!(err.contains("second.bin"), "{err}");
    assert!(
        err.contains("600") && err.contains("position 2") && err.contains("byte offset 4"),
        "{err}"
    );
    assert!(stream.check_vocab(601).is_ok());
}

#[test]
fn text_is_cut_into_documents_each_preceded_by_bos() {
    let tokenizer = train_bpe(&generate_corpus(3, 30_000), 300).unwrap();
    let text = "The cat sat.\nIt was happy.\n\n\n  \nThe dog ran.\n";
    let stream = TokenStream::from_text("<text>", text, &tokenizer);
    let mut expected = vec![1];
    expected.extend(tokenizer.encode("The cat sat.\nIt was happy."));
    expected.push(1);
    expected.extend(tokenizer.encode("The dog ran."));
    assert_eq!(stream.tokens(), expected);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stories.txt");
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        TokenStream::from_text_file(&path, &tokenizer).unwrap().tokens(),
        expected
    );
    std::fs::write(&path, [b'a', 0xff, b'b']).unwrap();
    let err = TokenStream::from_text_file(&path, &tokenizer).unwrap_err().to_string();
    assert!(err.contains("stories.txt") && err.contains("UTF-8"), "{err}");
}

#[test]
fn without_shuffle_windows_are_consecutive_and_non_overlapping() {
    let t = 4;
    let mut batcher = Batcher::new(counting(53), config(3, t, false, 0.0)).unwrap();
    // 53 tokens make 10 whole windows of 5; the 3 tokens left are dropped.
    assert_eq!(batcher.train_windows(), 10);
    let first = batcher.next_batch();
    assert_eq!(first.inputs.shape().0, vec![3, t]);
    let expected: Vec<(Vec<i32>, Vec<i32>)> = (0..3)
        .map(|w| {
            let start = (w * (t + 1)) as i32;
            (
                (start..start + t as i32).collect(),
                (start + 1..start + 1 + t as i32).collect(),
            )
        })
        .collect();
    assert_eq!(rows(&first), expected);
    let mut order = windows(&first, t);
    for _ in 0..5 {
        order.extend(windows(&batcher.next_batch(), t));
    }
    // Epoch 0 is windows 0..10 in order, then epoch 1 starts again from window 0.
    let expected: Vec<usize> = (0..10).chain(0..8).collect();
    assert_eq!(order, expected);
    assert_eq!(batcher.state().epoch, 1);
    assert_eq!(batcher.state().cursor, 8);
}

#[test]
fn with_shuffle_each_epoch_is_a_seeded_permutation() {
    let t = 3;
    let epoch_orders = |seed: u64| {
        let mut cfg = config(5, t, true, 0.0);
        cfg.seed = seed;
        let mut batcher = Batcher::new(counting(80), cfg).unwrap();
        assert_eq!(batcher.train_windows(), 20);
        let mut all = Vec::new();
        for _ in 0..12 {
            all.extend(windows(&batcher.next_batch(), t));
        }
        all.chunks(20).map(<[usize]>::to_vec).collect::<Vec<_>>()
    };
    let epochs = epoch_orders(1);
    for epoch in &epochs {
        let set: BTreeSet<usize> = epoch.iter().copied().collect();
        assert_eq!(set, (0..20).collect(), "an epoch serves every window once");
        assert_ne!(*epoch, (0..20).collect::<Vec<_>>(), "shuffled");
    }
    assert_ne!(epochs[0], epochs[1], "a new permutation each epoch");
    assert_eq!(epoch_orders(1), epochs, "deterministic per seed");
    assert_ne!(epoch_orders(2), epochs, "depends on the seed");
}

#[test]
fn validation_windows_are_the_last_ones_and_never_trained_on() {
    let t = 2;
    for shuffle in [false, true] {
        let mut batcher = Batcher::new(counting(300), config(4, t, shuffle, 0.1)).unwrap();
        // 100 windows: the last 10 are for validation.
        assert_eq!((batcher.train_windows(), batcher.val_windows()), (90, 10));
        let val: Vec<usize> = batcher
            .validation_batches()
            .iter()
            .flat_map(|b| windows(b, t))
            .collect();
        assert_eq!(val, (90..100).collect::<Vec<_>>());
        let sizes: Vec<usize> = batcher
            .validation_batches()
            .iter()
            .map(|b| b.inputs.shape().0[0])
            .collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            seen.extend(windows(&batcher.next_batch(), t));
        }
        assert_eq!(seen, (0..90).collect(), "shuffle {shuffle}");
    }
    let batcher = Batcher::new(counting(300), config(4, t, false, 0.0)).unwrap();
    assert!(batcher.validation_batches().is_empty());
    assert_eq!(
        Batcher::new(counting(300), config(4, t, false, 0.001))
            .unwrap()
            .val_windows(),
        1
    );
}

#[test]
fn resuming_from_a_saved_state_gives_the_same_next_batches() {
    for shuffle in [false, true] {
        let stream = counting(500);
        let cfg = config(3, 6, shuffle, 0.05);
        let mut original = Batcher::new(stream.clone(), cfg.clone()).unwrap();
        // 71 windows, 4 for validation, 67 for training: 30 batches cross two epoch boundaries.
        for _ in 0..25 {
            original.next_batch();
        }
        let saved = serde_json::to_string(&original.state()).unwrap();
        let expected: Vec<Batch> = (0..20).map(|_| original.next_batch()).collect();

        let mut resumed = Batcher::new(stream, cfg).unwrap();
        let state: BatcherState = serde_json::from_str(&saved).unwrap();
        resumed.restore(state).unwrap();
        let got: Vec<Batch> = (0..20).map(|_| resumed.next_batch()).collect();
        assert_eq!(got, expected, "shuffle {shuffle}");
        assert_eq!(resumed.state(), original.state());
    }
}

#[test]
fn a_state_from_other_data_is_refused() {
    let mut batcher = Batcher::new(counting(100), config(2, 4, false, 0.0)).unwrap();
    let other = Batcher::new(counting(200), config(2, 4, false, 0.0)).unwrap();
    assert!(batcher.restore(other.state()).is_err());
    let mut state = batcher.state();
    state.cursor = 1_000;
    assert!(batcher.restore(state).is_err());
}

#[test]
fn bad_configurations_are_errors() {
    assert!(Batcher::new(counting(100), config(0, 4, false, 0.0)).is_err());
    assert!(Batcher::new(counting(100), config(2, 0, false, 0.0)).is_err());
    assert!(Batcher::new(counting(100), config(2, 4, false, 1.0)).is_err());
    // 9 tokens: one window of 5, which validation takes.
    let err = Batcher::new(counting(9), config(1, 4, false, 0.5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("too few"), "{err}");
    assert!(Batcher::new(counting(4), config(1, 4, false, 0.0)).is_err());
}

#[test]
fn the_built_in_corpus_makes_a_working_stream() {
    let text = generate_corpus(8, 60_000);
    let tokenizer = train_bpe(&text, 320).unwrap();
    let stream = TokenStream::from_text("<built-in corpus>", &text, &tokenizer);
    let stories = text.split("\n\n").count();
    assert_eq!(stream.tokens().iter().filter(|&&id| id == 1).count(), stories);
    let mut batcher = Batcher::new(
        stream,
        BatcherConfig {
            vocab_size: tokenizer.vocab_size(),
            ..config(2, 32, true, 0.1)
        },
    )
    .unwrap();
    let batch = batcher.next_batch();
    for (inputs, targets) in rows(&batch) {
        assert_eq!(inputs[1..], targets[..31]);
        assert!(inputs.iter().chain(&targets).all(|&id| (id as usize) < 320));
    }
}

#[test]
fn many_documents_are_encoded_in_order() {
    let text = generate_corpus(12, 40_000);
    let tokenizer = train_bpe(&text, 300).unwrap();
    let mut expected = Vec::new();
    for story in text.split("\n\n") {
        expected.push(1);
        expected.extend(tokenizer.encode(story));
    }
    assert_eq!(TokenStream::from_text("<corpus>", &text, &tokenizer).tokens(), expected);
    assert_eq!(TokenStream::from_corpus(12, 40_000, &tokenizer).tokens(), expected);
}

#[test]
fn a_tokenizer_without_bos_ends_documents_with_eos() {
    let gpt2 = orion_models::tokenizer::gpt2().unwrap();
    assert_eq!(gpt2.bos_id(), None);
    let eos = gpt2.eos_id().unwrap();
    let stream = TokenStream::from_text("<text>", "Hello there.\n\nBye.", gpt2.as_ref());
    let mut expected = gpt2.encode("Hello there.");
    expected.push(eos);
    expected.extend(gpt2.encode("Bye."));
    expected.push(eos);
    assert_eq!(stream.tokens(), expected);
}

#[test]
fn a_data_path_is_text_or_shards_by_its_name() {
    let tokenizer = train_bpe(&generate_corpus(4, 30_000), 300).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text_path = dir.path().join("story.txt");
    std::fs::write(&text_path, "Lily ran.").unwrap();
    let from_text = TokenStream::from_data_path(&text_path, &tokenizer).unwrap();
    let mut expected = vec![1];
    expected.extend(tokenizer.encode("Lily ran."));
    assert_eq!(from_text.tokens(), expected);

    let shard_dir = dir.path().join("shards");
    std::fs::create_dir(&shard_dir).unwrap();
    write_shard(&shard_dir.join("a.bin"), &[5, 6]).unwrap();
    write_shard(&shard_dir.join("b.bin"), &[7]).unwrap();
    assert_eq!(
        TokenStream::from_data_path(&shard_dir, &tokenizer).unwrap().tokens(),
        [5, 6, 7]
    );
    assert_eq!(
        TokenStream::from_data_path(&shard_dir.join("b.bin"), &tokenizer)
            .unwrap()
            .tokens(),
        [7]
    );
}
