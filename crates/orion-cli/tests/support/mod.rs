//! Helpers shared by the CLI test binaries that drive `orion` through its real executable: run it,
//! read its output, and assert success or failure with both streams shown when the assertion fails.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `orion` binary built for this test run with `args`.
pub fn orion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(args)
        .output()
        .expect("the orion binary runs")
}

/// Bytes of a stream as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a zero exit; returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts a non-zero exit; returns stderr.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, stdout:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A temporary path as an argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
