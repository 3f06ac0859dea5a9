//! The end of a probe run: the profile's `sources` (one per field: how it was probed, or why not and
//! which reference value it kept), validation, the readable table, and the atomic JSON write.
//!
//! Invariants: the finished profile has a source for every field path of [`ChipProfile::field_paths`]
//! and passes [`ChipProfile::validate`] — a probed value that breaks an invariant (say a minimum size
//! that is not a multiple of the alignment) is replaced by the reference value and its source says so;
//! [`write_profile`] never leaves a partly written file at the destination (temp file + rename).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::session::Session;
use super::{ProbeError, ProbeReport};
use crate::profile::{ChipProfile, ProfileError};

/// Assembles the report from a finished session.
pub(super) fn finish(s: Session<'_>) -> ProbeReport {
    let (probed, not_probed) = s.findings();
    let halted = s.budget_refused_at.is_some();
    let reference = &s.reference;
    let mut profile = s.profile.clone();
    let mut sources = BTreeMap::new();
    for field in profile.field_paths() {
        let text = match probed.get(&field) {
            Some(text) => text.clone(),
            None => {
                let why = not_probed.get(&field).cloned().unwrap_or_else(|| {
                    if halted {
                        "the device refused compiles (its budget, C06) before this field's experiment ran".to_string()
                    } else {
                        "no experiment of this run set it".to_string()
                    }
                });
                kept(reference, &field, &why)
            }
        };
        sources.insert(field, text);
    }
    profile.sources = sources;
    repair(&mut profile, reference);
    ProbeReport {
        device: s.device.name().to_string(),
        experiments: s.experiments.clone(),
        profile,
        compiles: s.compiles,
    }
}

/// The source of a field that keeps the reference value.
fn kept(reference: &ChipProfile, field: &str, why: &str) -> String {
    let origin = reference
        .sources
        .get(field)
        .map(|text| format!(" ({text})"))
        .unwrap_or_default();
    format!("not probed: {why}; kept the reference {} value{origin}", reference.id)
}

/// Replaces probed values that break the profile's invariants by the reference's, one field at a time.
fn repair(profile: &mut ChipProfile, reference: &ChipProfile) {
    for _ in 0..profile.field_paths().len() {
        let (field, message) = match profile.validate() {
            Ok(()) => return,
            Err(ProfileError::Invalid { field, message, .. }) => (field, message),
            Err(ProfileError::Json { .. }) => return,
        };
        let pointer = format!("/{}", field.replace('.', "/"));
        let (Ok(mut value), Ok(original)) = (serde_json::to_value(&*profile), serde_json::to_value(reference)) else {
            return;
        };
        let (Some(slot), Some(replacement)) = (value.pointer_mut(&pointer), original.pointer(&pointer)) else {
            return;
        };
        *slot = replacement.clone();
        let Ok(mut repaired) = serde_json::from_value::<ChipProfile>(value) else {
            return;
        };
        let why = format!("the probed value broke the profile's rules ({message})");
        repaired.sources.insert(field.clone(), kept(reference, &field, &why));
        *profile = repaired;
    }
}

/// The table `orion probe` prints: one block per experiment, then the fields and where they came from.
pub(super) fn table(report: &ProbeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "probe of {}: {} experiments, {} compiles",
        report.device,
        report.experiments.len(),
        report.compiles
    );
    let _ = writeln!(out, "{:<5} {:<28} {:<13} conclusion", "rule", "experiment", "status");
    for e in &report.experiments {
        let _ = writeln!(
            out,
            "{:<5} {:<28} {:<13} {}",
            e.rule,
            e.name,
            e.status.label(),
            e.conclusion
        );
        let _ = writeln!(out, "{:<48}ran: {}", "", e.ran);
        if !e.expected.is_empty() {
            let _ = writeln!(out, "{:<48}expected: {}", "", e.expected);
        }
        let _ = writeln!(out, "{:<48}observed: {}", "", e.observed);
    }
    let probed = report.probed_fields();
    let total = report.profile.sources.len();
    let _ = writeln!(out, "{} of {total} profile fields probed", probed.len());
    for (field, text) in &report.profile.sources {
        if !text.starts_with("probed:") {
            let _ = writeln!(out, "  {field}: {text}");
        }
    }
    out
}

/// Writes `profile` as JSON to `path` atomically: a temporary file beside it, then a rename.
pub fn write_profile(profile: &ChipProfile, path: &Path) -> Result<(), ProbeError> {
    let fail = |message: String| ProbeError::Write {
        path: path.display().to_string(),
        message,
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("the path names no file".to_string()))?
        .to_string_lossy()
        .to_string();
    let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut text = profile.to_json();
    text.push('\n');
    std::fs::write(&temp, text).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        fail(e.to_string())
    })
}
