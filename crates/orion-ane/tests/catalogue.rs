//! The constraint catalogue: ids C01..C43 unique and sequential, every rule sourced, tags as in ane.md §5,
//! and `docs/CONSTRAINTS.md` up to date with `render_markdown()` (run with ORION_BLESS=1 to rewrite it).

use orion_ane::catalogue::{catalogue, render_markdown, rule, Confidence, CONSTRAINTS_DOC_PATH};

#[test]
fn ids_are_unique_and_sequential() {
    let ids: Vec<&str> = catalogue().iter().map(|r| r.id).collect();
    let expected: Vec<String> = (1..=43).map(|n| format!("C{n:02}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(rule("C06").map(|r| r.id), Some("C06"));
    assert!(rule("C44").is_none());
}

#[test]
fn every_rule_is_complete() {
    for r in catalogue() {
        assert!(
            !r.sources.is_empty() && r.sources.iter().all(|s| !s.trim().is_empty()),
            "{}: no source",
            r.id
        );
        assert!(!r.chips.is_empty(), "{}: no chip", r.id);
        assert!(!r.symptoms.is_empty(), "{}: no symptom", r.id);
        for (what, text) in [("title", r.title), ("statement", r.statement), ("auto", r.auto)] {
            assert!(!text.trim().is_empty(), "{}: empty {what}", r.id);
        }
        assert!(!r.title.contains('\n'), "{}: multi-line title", r.id);
        let mut chips = r.chips.to_vec();
        chips.sort();
        chips.dedup();
        assert_eq!(chips.len(), r.chips.len(), "{}: repeated chip", r.id);
    }
}

#[test]
fn confidence_and_symptoms_match_the_reference_table() {
    // Transcribed from the Conf. and Sym. columns of ane.md §5, C01..C43.
    let confidence = "VVVVSVCSCCVVSSCSCCCSCVSSCVSSVSSSSSSSSVVVSSV";
    let symptoms = [
        "CR", "CR,CF", "SW", "CF", "leak", "CF", "SW", "SW", "CF", "CF", "SW", "CF", "CF", "CF", "CF", "CF", "CF",
        "EF", "SW", "SW", "EF", "P,EF", "SW", "CF", "EF", "CF", "CF", "CF,EF", "CF", "CF", "CF", "CF", "CF", "SW",
        "SW", "SW", "SW", "SW", "P", "P", "P", "P", "CF",
    ];
    assert_eq!(confidence.len(), 43);
    assert_eq!(symptoms.len(), 43);
    for ((r, want_conf), want_symptoms) in catalogue().iter().zip(confidence.chars()).zip(symptoms) {
        let conf = match r.confidence {
            Confidence::Verified => 'V',
            Confidence::Single => 'S',
            Confidence::Contradicted => 'C',
        };
        assert_eq!(conf, want_conf, "{} confidence", r.id);
        let labels: Vec<String> = r
            .symptoms
            .iter()
            .map(|s| s.label().split(' ').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(labels.join(","), want_symptoms, "{} symptoms", r.id);
    }
}

#[test]
fn markdown_has_a_row_and_a_section_per_rule() {
    let text = render_markdown();
    assert!(text.starts_with("# ANE constraint catalogue\n"));
    assert!(text.contains("GENERATED FILE") && text.contains("ORION_BLESS=1"));
    for r in catalogue() {
        let row = format!("| [{}](#{}) |", r.id, r.id.to_lowercase());
        assert_eq!(text.matches(&row).count(), 1, "{}: table row", r.id);
        let heading = format!("\n## {} — {}\n", r.id, r.title);
        assert_eq!(text.matches(&heading).count(), 1, "{}: section", r.id);
    }
    // A `|` inside a cell must not split the table row (C35's auto text contains |outputs|).
    let c35_row = text.lines().find(|l| l.starts_with("| [C35]")).unwrap_or_default();
    assert!(c35_row.contains("\\|outputs\\|"), "{c35_row}");
    assert_eq!(c35_row.matches(" | ").count(), 5, "{c35_row}");
}

#[test]
fn constraints_doc_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(CONSTRAINTS_DOC_PATH);
    let rendered = render_markdown();
    if std::env::var("ORION_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &rendered).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "{} is stale; regenerate with `ORION_BLESS=1 cargo test -p orion-ane --test catalogue`",
        path.display()
    );
}
