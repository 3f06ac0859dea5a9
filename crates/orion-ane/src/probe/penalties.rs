//! Penalties the device shows only in time: the last-axis alignment (C22: an I/O tensor whose last axis
//! is not a multiple of the alignment slows compute) and the SRAM knee (C39: beyond a working set K,
//! compute slows by `(K / W)^x`), which also bounds `limits.sram_budget_bytes`.
//!
//! Both time `timing`'s baked-matmul chain at the base shape `(S0, C0)`, whose rate without penalty is
//! known from the throughput fit, so that a slowdown is a ratio of two measured rates. Invariants: the
//! alignment is searched over powers of two (2..256 B, the reference's answer tried first); the knee is
//! fitted from two working sets that both show a slowdown of more than 2 %, the first pair of sizes
//! being 4 and 5 MiB and each next pair twice as large, up to 80 MiB.

use super::cost_fit::{Throughput, SLOWER};
use super::limits::largest_true;
use super::session::{Session, Step, Trial};
use super::timing::{
    core_program, effective, measure, round6, sizes_for, sum, Chain, Core, Fixed, Point, COMPUTE_BOUND,
};
use super::ExperimentStatus::{Inconclusive, Measured, Skipped};

/// Runs C22 then C39; the spill sweep reuses C22's unaligned input (a further factor of compute per
/// FLOP, which keeps the simulator's work small).
pub(super) fn run(s: &mut Session<'_>, fixed: Fixed, t: Throughput) -> Step<()> {
    let (extra, factor) = alignment(s, fixed, t)?.unwrap_or((None, 1.0));
    spill(s, fixed, t, extra, factor)
}

// ---- C22 ---------------------------------------------------------------------------------------------------

/// How much slower per FLOP the base chain runs with an extra input of `n` fp16 elements.
fn slowdown(s: &mut Session<'_>, fixed: Fixed, t: Throughput, n: usize) -> Step<Result<f64, String>> {
    let core = Core {
        extra: Some(n),
        ..Core::base(Chain::BakedMatmul)
    };
    let factors = (t.baked_matmul_factor, 1.0);
    Ok(measure(s, fixed, core, t.m1, factors, None)?.map(|(p, id, _)| {
        s.release(id);
        t.m1 / (effective(&p, Chain::BakedMatmul, factors) / p.compute_ms)
    }))
}

/// The smallest last-axis byte length without a slowdown; returns the unaligned extra input (one
/// element) and its slowdown for the spill sweep, `(None, 1)` when nothing is slower.
fn alignment(s: &mut Session<'_>, fixed: Fixed, t: Throughput) -> Step<Option<(Option<usize>, f64)>> {
    let mut tested = Vec::new();
    let mut factor = 1.0;
    let mut failure = None;
    let mut slower = |s: &mut Session<'_>, k: u32| -> Step<bool> {
        let n = 1usize << k;
        match slowdown(s, fixed, t, n)? {
            Ok(ratio) => {
                tested.push(format!("{} B: x{ratio:.4}", 2 * n));
                let slow = ratio > 1.0 / SLOWER;
                if slow {
                    factor = ratio;
                }
                Ok(slow)
            }
            Err(e) => {
                failure = Some(e);
                Ok(false)
            }
        }
    };
    // Slower for n < A/2, so the boundary exponent is log2(A/4); the reference's A is tried first.
    let reference = s.reference.limits.last_axis_alignment_bytes;
    let hint = reference
        .is_power_of_two()
        .then(|| reference.trailing_zeros())
        .and_then(|e| e.checked_sub(2));
    let boundary = largest_true(s, (0, 6), hint, &mut slower)?;
    let trial = Trial::new(
        "C22",
        "last-axis alignment",
        "the base chain plus an input [1,1,1,n] (n = 2^k fp16, k = 0..6): compute time per FLOP",
        "slower when 2·n bytes is not a multiple of the chip's alignment (H3: x0.63)",
    );
    let observed = tested.join(", ");
    if let Some(e) = failure {
        s.record(&trial, e, "not measured", Inconclusive);
        return Ok(None);
    }
    let alignment = match boundary {
        None => 2,
        Some(k) if k < 6 => 1usize << (k + 2),
        Some(_) => {
            let why = "slower at every n up to 128 B".to_string();
            s.record(&trial, observed, why, Inconclusive);
            return Ok(None);
        }
    };
    s.profile.limits.last_axis_alignment_bytes = alignment;
    s.probed(
        "limits.last_axis_alignment_bytes",
        format!("C22 last-axis alignment: {observed}"),
    );
    let conclusion = format!("limits.last_axis_alignment_bytes = {alignment}");
    s.record(&trial, observed, conclusion, Measured);
    Ok(Some(if alignment > 2 { (Some(1), factor) } else { (None, 1.0) }))
}

// ---- C39 ---------------------------------------------------------------------------------------------------

const SPILL_FIELDS: [&str; 3] = [
    "cost.sram_knee_bytes",
    "cost.spill_exponent",
    "limits.sram_budget_bytes",
];

/// Working sets `w` and `1.25·w` with one program sized for the larger: `(W, slowdown)` of each, the
/// slowdown being the rate over the unpenalised rate (1 below the knee).
fn spill_pair(
    s: &mut Session<'_>,
    fixed: Fixed,
    t: Throughput,
    (core, factors): (Core, (f64, f64)),
    w: f64,
) -> Step<Result<Vec<(f64, f64)>, String>> {
    let Some(big) = core_program(&core).ok().and_then(|p| sizes_for(s, &p, 1.25 * w)) else {
        return Ok(Err("cannot size the program".to_string()));
    };
    let (point, id, program) = match measure(s, fixed, core, t.m1, factors, Some(big.clone()))? {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    // The smaller working set with the same program: only the surface bytes change.
    let constants = point.bytes - sum(&big);
    let mut points = vec![point];
    if let Some(small) = sizes_for(s, &program, w) {
        match s.time(id, &program, &small, false) {
            Ok(time) => points.insert(
                0,
                Point {
                    compute_ms: time - fixed.floor,
                    bytes: sum(&small) + constants,
                    ..point
                },
            ),
            Err(e) => {
                s.release(id);
                return Ok(Err(e));
            }
        }
    }
    s.release(id);
    Ok(points
        .iter()
        .map(|p| {
            if p.compute_ms < COMPUTE_BOUND * p.bytes * fixed.slope {
                return Err(format!("bandwidth-bound at W = {} B", p.bytes));
            }
            let rate = effective(p, Chain::BakedMatmul, factors) / p.compute_ms;
            Ok((p.bytes, rate / t.m1))
        })
        .collect())
}

/// The knee and exponent from the first two working sets that show a slowdown.
fn spill(s: &mut Session<'_>, fixed: Fixed, t: Throughput, extra: Option<usize>, unaligned: f64) -> Step<()> {
    let trial = Trial::new(
        "C39",
        "SRAM knee",
        "the base matmul chain with surfaces grown to working sets of 4, 5, 8, 10, 16, 20, … MiB",
        "beyond the knee K compute slows by (K / W)^x",
    );
    if s.options.quick {
        for field in SPILL_FIELDS {
            s.not_probed(field, "skipped (quick): the SRAM spill sweep".into());
        }
        s.record(&trial, "not run", "skipped (quick)", Skipped);
        return Ok(());
    }
    let core = Core {
        extra,
        ..Core::base(Chain::BakedMatmul)
    };
    let mut tested = Vec::new();
    let mut beyond = Vec::new();
    let mut problem = None;
    for j in 0..5 {
        let w = f64::from(4u32 << 20) * f64::from(1u32 << j);
        match spill_pair(s, fixed, t, (core, (t.baked_matmul_factor, unaligned)), w)? {
            Ok(points) => {
                for (bytes, e) in points {
                    tested.push(format!("W = {bytes:.0} B: x{e:.4}"));
                    if e < 0.98 {
                        beyond.push((bytes, e));
                    }
                }
            }
            Err(e) => problem = Some(e),
        }
        if beyond.len() >= 2 || problem.is_some() {
            break;
        }
    }
    let observed = tested.join(", ");
    match beyond.as_slice() {
        [(wa, ea), (wb, eb), ..] => set_knee(s, &trial, ((*wa, *ea), (*wb, *eb)), observed),
        _ => {
            let why = problem.unwrap_or_else(|| "no slowdown up to 80 MiB".to_string());
            for field in SPILL_FIELDS {
                s.not_probed(field, format!("C39 spill sweep: {why}"));
            }
            let observed = format!("{observed}; {why}");
            s.record(&trial, observed, "not measured", Inconclusive);
        }
    }
    Ok(())
}

/// `x = ln(e_a / e_b) / ln(W_b / W_a)`, `K = W_a · e_a^(1/x)`; the budget is the smaller of K and the
/// reference's budget (a program should stay under the knee).
fn set_knee(s: &mut Session<'_>, trial: &Trial, ((wa, ea), (wb, eb)): ((f64, f64), (f64, f64)), observed: String) {
    let exponent = round6((ea / eb).ln() / (wb / wa).ln());
    let knee = (wa * ea.powf(1.0 / exponent)).round() as u64;
    let reference = s.reference.limits.sram_budget_bytes;
    let budget = reference.min(knee);
    s.profile.cost.sram_knee_bytes = knee;
    s.profile.cost.spill_exponent = exponent;
    s.profile.limits.sram_budget_bytes = budget;
    let how = format!("C39 spill sweep: {observed}");
    s.probed("cost.sram_knee_bytes", how.clone());
    s.probed("cost.spill_exponent", how.clone());
    let budget_how = format!("{how}; budget = the smaller of the knee and the reference's {reference} B");
    s.probed("limits.sram_budget_bytes", budget_how);
    let conclusion =
        format!("cost.sram_knee_bytes = {knee}, cost.spill_exponent = {exponent}, limits.sram_budget_bytes = {budget}");
    s.record(trial, observed, conclusion, Measured);
}
