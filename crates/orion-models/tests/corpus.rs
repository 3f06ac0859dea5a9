//! The built-in story corpus: determinism, size, variety and character set.

use std::collections::HashSet;

use orion_models::data::{generate_corpus, DEFAULT_CORPUS_BYTES, DEFAULT_CORPUS_SEED, STORY_SEPARATOR};

const SMALL: usize = 200_000;

#[test]
fn the_same_seed_gives_the_same_corpus() {
    assert_eq!(generate_corpus(7, 50_000), generate_corpus(7, 50_000));
}

#[test]
fn different_seeds_give_different_corpora() {
    let a = generate_corpus(1, 20_000);
    let b = generate_corpus(2, 20_000);
    assert_ne!(a, b);
    // Not just a different ending: the first stories differ.
    assert_ne!(a.split(STORY_SEPARATOR).next(), b.split(STORY_SEPARATOR).next());
}

#[test]
fn a_smaller_corpus_is_a_prefix_of_a_larger_one() {
    let small = generate_corpus(3, 10_000);
    let large = generate_corpus(3, 40_000);
    assert!(large.starts_with(&small));
}

#[test]
fn the_target_size_is_reached_with_whole_stories() {
    for target in [1, 999, 30_000] {
        let text = generate_corpus(11, target);
        assert!(text.len() >= target, "{} < {target}", text.len());
        let last = text.rsplit(STORY_SEPARATOR).next().unwrap_or_default();
        assert!(
            text.len() - last.len() < target.max(1),
            "more than one story past the target"
        );
        assert!(!text.starts_with('\n') && !text.ends_with('\n'));
        assert!(text.split(STORY_SEPARATOR).all(|story| !story.trim().is_empty()));
    }
    assert!(generate_corpus(11, 0).is_empty());
}

#[test]
fn the_default_corpus_is_several_megabytes() {
    const { assert!(DEFAULT_CORPUS_BYTES >= 2 << 20) };
    let text = generate_corpus(DEFAULT_CORPUS_SEED, DEFAULT_CORPUS_BYTES);
    assert!(text.len() >= DEFAULT_CORPUS_BYTES);
    assert!(text.len() < DEFAULT_CORPUS_BYTES + 10_000);
}

#[test]
fn only_printable_ascii_and_newlines() {
    let text = generate_corpus(5, SMALL);
    let bad: Vec<(usize, u8)> = text
        .bytes()
        .enumerate()
        .filter(|&(_, b)| !(b == b'\n' || (0x20..=0x7e).contains(&b)))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "bytes outside printable ASCII: {bad:?}");
    assert!(!text.contains("\n\n\n"), "a separator is exactly one blank line");
    assert!(!text.contains("  "), "no double spaces");
}

#[test]
fn the_vocabulary_is_varied() {
    let text = generate_corpus(9, SMALL);
    let words: HashSet<&str> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    assert!(words.len() >= 500, "only {} distinct words", words.len());
    // Names, animals, places and feelings all appear.
    for word in [
        "Lily", "Tom", "bunny", "forest", "beach", "happy", "scared", "moral", "asked",
    ] {
        assert!(words.contains(word), "{word:?} never appears");
    }
}

#[test]
fn sentences_and_stories_are_mostly_distinct() {
    let text = generate_corpus(13, SMALL);
    let sentences: Vec<&str> = text
        .split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| s.len() > 2)
        .collect();
    let distinct: HashSet<&&str> = sentences.iter().collect();
    let ratio = distinct.len() as f64 / sentences.len() as f64;
    assert!(ratio > 0.3, "distinct sentence ratio {ratio:.3}");
    let stories: Vec<&str> = text.split(STORY_SEPARATOR).collect();
    let distinct_stories: HashSet<&&str> = stories.iter().collect();
    assert_eq!(distinct_stories.len(), stories.len(), "a story repeats");
    assert!(stories.len() > 100);
}

#[test]
fn stories_have_dialogue_structure_and_endings() {
    let text = generate_corpus(17, SMALL);
    let stories: Vec<&str> = text.split(STORY_SEPARATOR).collect();
    let mut with_dialogue = 0;
    let mut with_moral = 0;
    for story in &stories {
        let quotes = story.matches('"').count();
        assert_eq!(quotes % 2, 0, "unbalanced quotes in {story:?}");
        if quotes > 0 {
            with_dialogue += 1;
        }
        if story.contains("learned that") || story.contains("moral of the story") || story.contains("Remember:") {
            with_moral += 1;
        }
        assert!(story.lines().count() >= 2, "a story has several paragraphs: {story:?}");
        let first = story.as_bytes()[0];
        assert!(first.is_ascii_uppercase(), "a story starts a sentence: {story:?}");
    }
    let n = stories.len() as f64;
    assert!(with_dialogue as f64 / n > 0.95);
    let moral_share = with_moral as f64 / n;
    assert!((0.2..0.8).contains(&moral_share), "moral share {moral_share:.2}");
}
