//! Golden tests of every pass and analysis: input IR in, expected text out.
//!
//! Layout: `tests/golden/<name>/<case>.ir`, where `<name>` is a pass name (`dce`, `identity`,
//! `cast-fusion`, `cse`, `fold`) or an analysis (`memory`, `io-plan`). A case file holds, in order:
//! comment lines (`# ...`) saying what the case checks, the input graph in the text form, a line
//! that is exactly `# expect:`, and the expected text — the printed graph after the pass, or the
//! analysis report's `Display` output (default options; `memory` is printed with `{:#}`, which
//! lists every node, against a 1024-byte budget so that both verdicts occur). Cases named `keep_*`
//! assert in addition that the pass changed nothing: their expected text must equal the printed
//! input. Every pass and analysis needs at least two cases, every pass at least one `keep_` case.
//!
//! With `ORION_BLESS=1` the test rewrites every expectation from the actual output instead of
//! comparing (read every blessed file before keeping it). Every pass output is also verified.

use orion_core::passes::{io_plan, memory_report, pass_names, run_pass, IoPlanOptions, PassContext};
use orion_core::text::{parse, print};
use orion_core::verify::verify;
use std::fs;
use std::path::{Path, PathBuf};

const EXPECT_MARKER: &str = "# expect:";
const ANALYSES: [&str; 2] = ["memory", "io-plan"];
const MEMORY_BUDGET: u64 = 1024;

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

/// A case file split at the `# expect:` line.
struct Case {
    input: String,
    expected: String,
}

fn read_case(path: &Path) -> Result<Case, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut input = String::new();
    let mut expected: Option<String> = None;
    for line in text.lines() {
        match &mut expected {
            Some(exp) => {
                exp.push_str(line);
                exp.push('\n');
            }
            None if line.trim_end() == EXPECT_MARKER => expected = Some(String::new()),
            None => {
                input.push_str(line);
                input.push('\n');
            }
        }
    }
    let expected = expected.ok_or_else(|| format!("{}: no `{EXPECT_MARKER}` line", path.display()))?;
    Ok(Case { input, expected })
}

/// The text the case's pass or analysis produces from its input.
fn run_case(name: &str, input: &str) -> Result<String, String> {
    let g = parse(input).map_err(|e| format!("input does not parse: {e}"))?;
    verify(&g).map_err(|e| format!("input does not verify: {e}"))?;
    match name {
        "memory" => Ok(format!("{:#}", memory_report(&g, MEMORY_BUDGET))),
        "io-plan" => io_plan(&g, &IoPlanOptions::default())
            .map(|p| p.to_string())
            .map_err(|e| e.to_string()),
        pass => {
            let out = run_pass(pass, &g, &PassContext::default()).map_err(|e| e.to_string())?;
            verify(&out).map_err(|e| format!("pass output does not verify: {e}"))?;
            Ok(print(&out))
        }
    }
}

fn normalise(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

/// Checks (or blesses) one case; returns a description of the failure.
fn check_case(name: &str, path: &Path, bless: bool) -> Result<(), String> {
    let case = read_case(path)?;
    let actual = run_case(name, &case.input).map_err(|e| format!("{}: {e}", path.display()))?;
    if bless {
        let text = format!("{}{EXPECT_MARKER}\n{}\n", case.input, actual.trim_end());
        return fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()));
    }
    if normalise(&actual) != normalise(&case.expected) {
        return Err(format!(
            "{}: output differs\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            case.expected.trim_end(),
            actual.trim_end()
        ));
    }
    let is_keep = path
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.starts_with("keep_"));
    if is_keep && !ANALYSES.contains(&name) {
        let input = parse(&case.input).map_err(|e| e.to_string())?;
        if normalise(&print(&input)) != normalise(&actual) {
            return Err(format!("{}: a keep_ case was changed by the pass", path.display()));
        }
    }
    Ok(())
}

fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "ir"));
    files.sort();
    files
}

#[test]
fn golden_cases_match() {
    let bless = std::env::var("ORION_BLESS").is_ok_and(|v| v == "1");
    let mut names: Vec<&str> = pass_names();
    names.extend(ANALYSES);
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in names {
        let files = case_files(&golden_root().join(name));
        let keeps = files
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("keep_"))
            })
            .count();
        if files.len() < 2 || (keeps == 0 && !ANALYSES.contains(&name)) {
            failures.push(format!(
                "{name}: needs at least two cases including a keep_ case, has {} ({keeps} keep_)",
                files.len()
            ));
        }
        for path in files {
            checked += 1;
            if let Err(e) = check_case(name, &path, bless) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} golden cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn unknown_pass_names_are_reported_with_the_valid_ones() {
    let g = parse("graph g {\n  %0 = input \"x\" : f32[2]\n  output \"y\" = %0\n}\n").expect("sample parses");
    let err = run_pass("no-such-pass", &g, &PassContext::default())
        .expect_err("unknown pass")
        .to_string();
    for name in pass_names() {
        assert!(err.contains(name), "{err} should list {name}");
    }
}
