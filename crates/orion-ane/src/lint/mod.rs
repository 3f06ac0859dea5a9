//! Lint: checks a MIL program and its weight dictionary against a chip profile and reports every
//! violation with its catalogue id (ane.md §5), without stopping at the first.
//!
//! The checks themselves live in `checks`; this module holds the result types and the entry point.
//! Invariants: [`lint`] never panics on any program (parsed from untrusted text or built in memory);
//! findings come in a deterministic order (check order, then statement order); a finding of severity
//! [`Severity::Error`] means the device is expected to reject the program or compute wrong data, a
//! [`Severity::Warning`] means a performance or binding-order risk.

mod checks;

use std::collections::BTreeMap;
use std::fmt;

use crate::mil::Program;
use crate::profile::ChipProfile;

/// How bad a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The device rejects the program or silently computes wrong data.
    Error,
    /// Slower than necessary, or a risk the program shape cannot rule out.
    Warning,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Catalogue id, "C01".."C43".
    pub rule: &'static str,
    pub severity: Severity,
    /// Where: `main: z00_y = conv(…)`, `main(a01_w)`, `@model_path/weights/w.bin`, …
    pub location: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}] {}: {}", self.rule, self.location, self.message)
    }
}

/// Every violation of `program` (with its weight dictionary: MIL path → whole blob file) on `profile`.
pub fn lint(program: &Program, weights: &BTreeMap<String, Vec<u8>>, profile: &ChipProfile) -> Vec<Violation> {
    checks::run(program, weights, profile)
}

/// True when `violations` holds at least one [`Severity::Error`].
pub fn has_errors(violations: &[Violation]) -> bool {
    violations.iter().any(|v| v.severity == Severity::Error)
}
