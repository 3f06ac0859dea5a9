//! Searches for sizes and extents: which allocation sizes evaluate (surface alignment and minimum,
//! ane.md §2, C21), the matmul contraction multiple (C23), the extent caps (C26), and — last — how many
//! compiles the device accepts (C06).
//!
//! Searches over powers of two test the reference profile's answer first (the boundary and the step past
//! it: two compiles when the reference is right) and otherwise bisect the bounded range; every tested
//! point is a compile or an evaluation of the device, never a copy of the reference. Invariant: a search
//! assumes a monotone answer (works up to a boundary, fails past it) and says so in its experiment.

use std::collections::BTreeMap;

use super::programs::{doubling, ramp, Builder, ProbeProgram};
use super::session::{agree, Halt, Session, Step, Trial, GENEROUS_SURFACE};
use super::ExperimentStatus::{Inconclusive, Measured, Skipped};
use crate::device::ProgramId;

/// Largest `e` in `lo..=hi` with `pred(e)` true, for a predicate true up to a boundary and false after;
/// `None` when it is false at `lo`. Tests `hint` and `hint + 1` first, remembers every answer.
pub(super) fn largest_true(
    s: &mut Session<'_>,
    (lo, hi): (u32, u32),
    hint: Option<u32>,
    pred: &mut dyn FnMut(&mut Session<'_>, u32) -> Step<bool>,
) -> Step<Option<u32>> {
    let mut known: BTreeMap<u32, bool> = BTreeMap::new();
    let mut ask = |s: &mut Session<'_>, e: u32, known: &mut BTreeMap<u32, bool>| -> Step<bool> {
        if let Some(&answer) = known.get(&e) {
            return Ok(answer);
        }
        let answer = pred(s, e)?;
        known.insert(e, answer);
        Ok(answer)
    };
    if let Some(h) = hint.filter(|h| (lo..=hi).contains(h)) {
        if ask(s, h, &mut known)? && h < hi {
            ask(s, h + 1, &mut known)?;
        }
    }
    // Bisect between the highest known true and the lowest known false (virtual ends outside).
    loop {
        let good = known.iter().filter(|(_, &v)| v).map(|(&e, _)| i64::from(e)).max();
        let bad = known.iter().filter(|(_, &v)| !v).map(|(&e, _)| i64::from(e)).min();
        let l = good.unwrap_or(i64::from(lo) - 1);
        let r = bad.unwrap_or(i64::from(hi) + 1);
        if r - l <= 1 {
            return Ok(u32::try_from(l).ok().filter(|&e| e >= lo));
        }
        let mid = u32::try_from((l + r) / 2).unwrap_or(lo);
        ask(s, mid, &mut known)?;
    }
}

/// Smallest power of two in the reference for `value` (its exponent), when `value` is one.
fn exponent(value: usize) -> Option<u32> {
    value.is_power_of_two().then(|| value.trailing_zeros())
}

// ---- ane.md §2, C21: allocation sizes ---------------------------------------------------------------

/// Evaluates the basic `x + x` program with both surfaces of `size` bytes; true when it computes right.
fn evaluates_at(s: &Session<'_>, id: ProgramId, program: &ProbeProgram, size: usize) -> bool {
    let x = vec![ramp(64, 0.5)];
    let sizes = (vec![size], vec![size]);
    s.eval_sized(id, program, &x, &sizes, false)
        .and_then(|(outputs, _)| agree(program, &x, &outputs))
        .is_ok()
}

/// Surface alignment (sizes just past a generous one) and minimum size (bisection over sizes that
/// are multiples of the observed alignment), with the basic program; no compiles.
pub(super) fn surfaces(s: &mut Session<'_>) {
    let Some((id, program)) = s.basic.clone() else {
        return;
    };
    let trial = Trial::new(
        "§2",
        "surface alignment",
        format!("x + x with both surfaces of {GENEROUS_SURFACE} + 2^k bytes, k = 1..9"),
        "sizes that are not a multiple of the alignment fail",
    );
    // The smallest 2^k such that GENEROUS + 2^k evaluates (all larger ones then do too).
    let mut tested = Vec::new();
    let mut fails = |s: &mut Session<'_>, k: u32| -> Step<bool> {
        let ok = evaluates_at(s, id, &program, GENEROUS_SURFACE + (1 << k));
        tested.push(format!("+{}: {}", 1usize << k, if ok { "ok" } else { "fails" }));
        Ok(!ok)
    };
    let observed = match largest_true(s, (1, 9), None, &mut fails) {
        Ok(None) => Some(2),
        Ok(Some(k)) if k < 9 => Some(1usize << (k + 1)),
        _ => None,
    };
    let tested = tested.join(", ");
    let Some(a) = observed else {
        s.record(&trial, tested, "no step up to 512 B evaluates", Inconclusive);
        return;
    };
    let reference = s.reference.limits.surface_alignment_bytes;
    let alignment = a.max(reference);
    s.profile.limits.surface_alignment_bytes = alignment;
    s.plan.alignment = alignment;
    let how = format!(
        "surface sizes {GENEROUS_SURFACE} + 2..512 B: the smallest step that evaluates is {a} B; the profile \
         keeps the larger of that and the reference's {reference} B (rounding sizes further is harmless)"
    );
    s.probed("limits.surface_alignment_bytes", how);
    let conclusion = format!("observed {a} B; limits.surface_alignment_bytes = {alignment}");
    s.record(&trial, tested, conclusion, Measured);
    minimum(s, id, &program, a);
}

/// C21: the smallest size (a multiple of `step`, at least the data's) at which both surfaces evaluate.
fn minimum(s: &mut Session<'_>, id: ProgramId, program: &ProbeProgram, step: usize) {
    let trial = Trial::new(
        "C21",
        "minimum surface",
        format!("x + x with both surfaces of n bytes: bisection over multiples of {step} B up to {GENEROUS_SURFACE}"),
        "sizes below the minimum fail with status 0x1d",
    );
    let dense = program.inputs[0].dense_bytes();
    let (mut lo, mut hi) = (dense.div_ceil(step), GENEROUS_SURFACE / step);
    let mut evaluations = 0;
    // Invariant: hi·step evaluates; (lo − 1)·step is below the data or known to fail.
    while lo < hi {
        let mid = (lo + hi) / 2;
        evaluations += 1;
        if evaluates_at(s, id, program, mid * step) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let found = hi * step;
    let alignment = s.profile.limits.surface_alignment_bytes;
    let min = found.div_ceil(alignment) * alignment;
    let below = if found <= dense {
        format!("no minimum above the data's {dense} B")
    } else {
        format!("{} B fails", found - step)
    };
    s.profile.limits.min_surface_bytes = min;
    s.plan.min_bytes = min;
    let observed = format!("smallest size that evaluates: {found} B ({below}; {evaluations} evaluations)");
    let how = format!("C21 minimum surface: {observed}, rounded up to {alignment} B");
    s.probed("limits.min_surface_bytes", how);
    s.record(&trial, observed, format!("limits.min_surface_bytes = {min}"), Measured);
}

// ---- C23: matmul contraction multiple --------------------------------------------------------------------

fn matmul_program(k: usize, m: usize, n: usize) -> Result<ProbeProgram, String> {
    let args = [
        ("transpose_x", "tf"),
        ("transpose_y", "tf"),
        ("x", "a00_x"),
        ("y", "a01_y"),
    ];
    Builder::new()
        .input("a00_x", &[1, 1, m, k])
        .input("a01_y", &[1, 1, k, n])
        .boolean("tf", false)
        .op("z00_z", &[1, 1, m, n], "matmul", &args)
        .output("z00_z")
        .build(&format!("matmul K = {k}"))
}

/// Whether a runtime matmul with contraction `k` compiles and computes right, and what happened.
fn matmul_works(s: &mut Session<'_>, k: usize) -> Step<(bool, String)> {
    let program = match matmul_program(k, 32, 32) {
        Ok(p) => p,
        Err(e) => return Ok((false, e)),
    };
    Ok(match s.compile(&program)? {
        Err(refusal) => (false, refusal.describe()),
        Ok(id) => {
            let inputs = vec![ramp(32 * k, 0.125), ramp(32 * k + 7, 0.25)[7..].to_vec()];
            let outcome = s.eval_checked(id, &program, &inputs);
            s.release(id);
            match outcome {
                Ok(()) => (true, "right".to_string()),
                Err(e) => (false, e),
            }
        }
    })
}

/// The smallest power-of-two contraction K (1..64) at which a runtime matmul computes right.
pub(super) fn inner_multiple(s: &mut Session<'_>) -> Step<()> {
    let trial = Trial::new(
        "C23",
        "matmul contraction multiple",
        "runtime matmul [1,1,32,K] x [1,1,K,32] for powers of two K in 1..64",
        "right numbers when K is a multiple of the chip's contraction multiple",
    );
    let mut tested = Vec::new();
    let mut wrong = |s: &mut Session<'_>, e: u32| -> Step<bool> {
        let (ok, text) = matmul_works(s, 1 << e)?;
        tested.push(format!("K={}: {text}", 1usize << e));
        Ok(!ok)
    };
    let hint = exponent(s.reference.limits.ops.matmul_inner_multiple).and_then(|e| e.checked_sub(1));
    let multiple = match largest_true(s, (0, 6), hint, &mut wrong)? {
        None => Some(1),
        Some(e) if e < 6 => Some(1usize << (e + 1)),
        Some(_) => None,
    };
    let observed = tested.join("; ");
    match multiple {
        Some(m) => {
            s.profile.limits.ops.matmul_inner_multiple = m;
            s.probed(
                "limits.ops.matmul_inner_multiple",
                format!("C23 matmul contraction: {observed}"),
            );
            s.record(
                &trial,
                observed,
                format!("limits.ops.matmul_inner_multiple = {m}"),
                Measured,
            );
        }
        None => s.record(&trial, observed, "no K up to 64 works", Inconclusive),
    }
    Ok(())
}

// ---- C26: extent caps ------------------------------------------------------------------------------------

/// The program of extent cap `field` at extent `e`: a relu for the spatial and channel caps, a matmul
/// for the contraction cap.
fn extent_program(field: &str, e: usize) -> Result<ProbeProgram, String> {
    let relu = |dims: &[usize]| {
        Builder::new()
            .input("a00_x", dims)
            .op("z00_y", dims, "relu", &[("x", "a00_x")])
            .output("z00_y")
            .build(&format!("{field} {e}"))
    };
    match field {
        "limits.max_spatial" => relu(&[1, 1, 1, e]),
        "limits.max_channels" => relu(&[1, e, 1, 32]),
        _ => matmul_program(e, 32, 32),
    }
}

/// The three extent caps: the largest power of two (2^10..2^20) that compiles.
pub(super) fn extents(s: &mut Session<'_>) -> Step<()> {
    let l = s.reference.limits.clone();
    let caps = [
        ("limits.max_spatial", "relu of [1,1,1,S]", l.max_spatial),
        ("limits.max_channels", "relu of [1,C,1,32]", l.max_channels),
        (
            "limits.max_contraction",
            "matmul [1,1,32,K] x [1,1,K,32]",
            l.max_contraction,
        ),
    ];
    for (field, ran, reference) in caps {
        let name = field.trim_start_matches("limits.");
        let trial = Trial::new(
            "C26",
            name,
            format!("{ran} for powers of two 2^10..2^20 (compile only)"),
            "compiles up to the cap, refused past it (C26)",
        );
        let mut tested = Vec::new();
        let mut compiles = |s: &mut Session<'_>, e: u32| -> Step<bool> {
            let extent = 1usize << e;
            let ok = match extent_program(field, extent) {
                Err(_) => false,
                Ok(program) => s.compile(&program)?.map(|id| s.release(id)).is_ok(),
            };
            tested.push(format!("{extent}: {}", if ok { "compiles" } else { "refused" }));
            Ok(ok)
        };
        let cap = largest_true(s, (10, 20), exponent(reference), &mut compiles)?;
        let observed = tested.join(", ");
        match cap {
            Some(e) if e < 20 => {
                let value = 1usize << e;
                let limits = &mut s.profile.limits;
                match field {
                    "limits.max_spatial" => limits.max_spatial = value,
                    "limits.max_channels" => limits.max_channels = value,
                    _ => limits.max_contraction = value,
                }
                s.probed(field, format!("C26 {name}: {observed}"));
                s.record(&trial, observed, format!("{field} = {value}"), Measured);
            }
            _ => s.record(&trial, observed, "no boundary in 2^10..2^20", Inconclusive),
        }
    }
    Ok(())
}

// ---- C06: compile budget (last) ---------------------------------------------------------------------------

/// Compiles `x + x` until the device refuses; the budget is the device's compile count before the
/// refusal. Runs last: on a real device it leaves the process unable to compile.
pub(super) fn budget(s: &mut Session<'_>) {
    const FIELD: &str = "limits.compile_budget";
    let trial = Trial::new(
        "C06",
        "compile budget",
        "x + x compiled again and again until the device refuses (on a real device this uses up the \
         process's compile budget; run the probe in a fresh process)",
        "a refusal after the per-process budget (C06, ~119 reported)",
    );
    if s.options.quick && s.budget_refused_at.is_none() {
        let why = "skipped (quick): counting compiles until refused uses up the budget";
        s.not_probed(FIELD, why.into());
        s.record(&trial, "not run", "skipped (quick)", Skipped);
        return;
    }
    let cap = s.options.max_budget_compiles;
    let mut refused_at = s.budget_refused_at;
    if let (None, Ok(program)) = (refused_at, doubling(64)) {
        while s.compiles < cap && refused_at.is_none() {
            let before = s.device.compile_count();
            match s.compile(&program) {
                Err(Halt::Budget) => refused_at = s.budget_refused_at,
                Ok(Err(_)) => refused_at = Some(before),
                Ok(Ok(id)) => s.release(id),
            }
        }
    }
    match refused_at {
        Some(n) => {
            s.profile.limits.compile_budget = n;
            let observed = format!("compile {} refused after {n} accepted compiles", n + 1);
            s.probed(FIELD, format!("C06 compile budget: {observed}"));
            s.record(&trial, observed, format!("{FIELD} = {n}"), Measured);
        }
        None => {
            let observed = format!("no refusal in {cap} compiles");
            s.not_probed(FIELD, observed.clone());
            s.record(&trial, observed, "no budget reached", Inconclusive);
        }
    }
}
