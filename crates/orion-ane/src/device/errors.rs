//! Known causes of device failures: maps what a failed call reports (stage, status code, message, how
//! many compiles the process has done, the request's surface sizes) to the constraint-catalogue rule that
//! explains it (ane.md §5). Platform-independent and tested on Linux; the macOS device uses it to name
//! the cause in every [`DeviceError`](super::DeviceError) it builds.
//!
//! Invariants: a cause is reported only when the evidence points at it (a surface below the minimum
//! for C21, unequal sizes on one side for C18, a compile failure after the suspicious compile count for
//! C06, an op named in a compiler message for its rule); otherwise `None` — never a guess.

use crate::profile::Limits;

/// Which device call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Compile,
    Load,
    Evaluate,
    Unload,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Compile => "compile",
            Stage::Load => "load",
            Stage::Evaluate => "evaluate",
            Stage::Unload => "unload",
        }
    }
}

/// A catalogue rule and the sentence that ties it to the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCause {
    pub rule: &'static str,
    pub explanation: &'static str,
}

/// Compile count from which an unexplained compile failure is blamed on the per-process limit (C06:
/// ~119 compiles; failures were reported from about 100 on, so the budget is 100).
pub const C06_SUSPECT_COMPILES: u32 = 100;

/// Words of compiler messages that point at one rule.
const COMPILE_MESSAGE_RULES: [(&str, KnownCause); 6] = [
    (
        "concat",
        KnownCause {
            rule: "C09",
            explanation: "concat is rejected on some chips; lower without it",
        },
    ),
    (
        "gelu",
        KnownCause {
            rule: "C10",
            explanation: "gelu is rejected on some chips; use the tanh form",
        },
    ),
    (
        "layer_norm",
        KnownCause {
            rule: "C28",
            explanation: "layer_norm fails value-dependently; decompose it",
        },
    ),
    (
        "bias",
        KnownCause {
            rule: "C13",
            explanation: "conv does not accept bias=; add the bias separately",
        },
    ),
    (
        "cast",
        KnownCause {
            rule: "C16",
            explanation: "cast to/from fp32 fails on M1/M2; use fp16 I/O",
        },
    ),
    (
        "InvalidMILProgram",
        KnownCause {
            rule: "C14",
            explanation: "return names must be live variables",
        },
    ),
];

/// The cause of a failed compile. `compiles_before` counts the compiles the process attempted before
/// this one.
pub fn compile_failure_cause(message: &str, compiles_before: u32) -> Option<KnownCause> {
    if let Some((_, cause)) = COMPILE_MESSAGE_RULES
        .iter()
        .find(|(word, _)| contains_word(message, word))
    {
        return Some(*cause);
    }
    if compiles_before >= C06_SUSPECT_COMPILES {
        return Some(KnownCause {
            rule: "C06",
            explanation: "the process is past ~100 compiles, after which compiles fail; restart the process",
        });
    }
    None
}

/// The cause of a failed evaluation (status 0x1d, [`super::STATUS_PROGRAM_INFERENCE_ERROR`], in every report) from
/// the request's allocation sizes: a surface below
/// the chip's minimum (C21), then unequal sizes on one side where the chip wants them uniform (C18).
pub fn evaluate_failure_cause(input_sizes: &[usize], output_sizes: &[usize], limits: &Limits) -> Option<KnownCause> {
    let all = input_sizes.iter().chain(output_sizes);
    if all.clone().any(|&s| s < limits.min_surface_bytes) {
        return Some(KnownCause {
            rule: "C21",
            explanation: "a surface is below the minimum allocation size (~49,152 bytes reported)",
        });
    }
    let unequal = |sizes: &[usize]| sizes.windows(2).any(|w| w[0] != w[1]);
    if unequal(input_sizes) || unequal(output_sizes) {
        return Some(KnownCause {
            rule: "C18",
            explanation: "surfaces of one side must share one allocation size",
        });
    }
    // Status 0x1d with well-sized surfaces has no single known cause: report none rather than guess.
    None
}

/// True when `word` occurs in `text` as a whole word (not inside `broadcast` for `cast`).
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + word.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

/// Extracts the status of `... status=0x1d ...` from a framework message, if it carries one.
pub fn status_in_message(message: &str) -> Option<u32> {
    let at = message.find("status=0x")? + "status=0x".len();
    let digits: String = message[at..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u32::from_str_radix(&digits, 16).ok()
}

/// `message` followed by the cause's rule and explanation, when there is one.
pub fn describe(stage: Stage, program: &str, message: &str, cause: Option<KnownCause>) -> String {
    match cause {
        Some(c) => format!(
            "{} of {program}: {message} — known cause {}: {}",
            stage.as_str(),
            c.rule,
            c.explanation
        ),
        None => format!("{} of {program}: {message}", stage.as_str()),
    }
}
