//! The fit of the cost model's fields (ane.md §8) from timings by the device's clock
//! (`EvalReport::estimated_ms`: the simulator's estimate, the real device's wall time), with the
//! conv-versus-matmul switch (C41) that the same timings decide. Steps, each from measurements only:
//!
//! 1. floor and bandwidth: the `x + x` program at three surface sizes is bandwidth-bound, a line in the
//!    request bytes; the isolated latency (C40): the same program on an idle engine;
//! 2. throughput and shape (`timing`'s chain on a carrier `[1, C, 1, S]`): a conv chain at `(S0, C0)`
//!    gives `m₁ = P·e_shape(S0, C0)`; a baked-weight matmul chain at the same shape gives the C41 factor;
//!    matmul chains at `(4·S0, C0)` and `(S0, 4·C0)` give the exponents, at `(S_big, C0)` and
//!    `(S0, C_big)` the extents where the factors saturate, and P follows;
//! 3. C22 and C39 (`penalties`): the last-axis alignment and the SRAM knee;
//! 4. C42: the compile times of every program the run compiled, fitted as a power of the op count.
//!
//! Invariants: every fitted value is rounded to six significant digits; the bounded assumptions (the
//! SRAM knee above the shape points' working sets of ~0.1–0.5 MB, `S_ref` in (4·S0, S_big], `C_ref` in
//! (4·C0, C_big], exponents at most 1) are stated in the experiments that rely on them; a field whose
//! effect cannot be seen (the saturation extent of an exponent of 0) keeps the reference value with
//! that reason.

use super::penalties;
use super::programs::ProbeProgram;
use super::session::{Session, Step, Trial};
use super::timing::{effective, line, measure, round6, Chain, Core, Fixed, C0, CORE, S0};
use super::ExperimentStatus::{Inconclusive, Measured};
use crate::device::ProgramId;

/// Largest carrier extents tried (capped by the probed limits).
const S_BIG: usize = 16_384;
const C_BIG: usize = 1_024;
/// FLOPs per byte assumed at most before anything is measured (sizes the first compute-bound point).
const FIRST_FLOPS_PER_BYTE: f64 = 500.0;
/// A rate below this fraction of another counts as slower (a penalty, a spill).
pub(super) const SLOWER: f64 = 0.9;
/// Operations of a training-sized kernel, the size `compile_ms_per_kernel` refers to (C42).
const KERNEL_OPS: f64 = 64.0;
/// Fields the shape fit sets.
const SHAPE_FIELDS: [&str; 5] = [
    "cost.effective_tflops",
    "cost.spatial_exponent",
    "cost.channel_exponent",
    "cost.shape_ref_spatial",
    "cost.shape_ref_channels",
];

/// What the throughput fit found, for the steps after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Throughput {
    /// Effective FLOPs per ms at `(S0, C0)` (the conv chain).
    pub m1: f64,
    /// C41: what a baked-weight matmul FLOP costs in conv FLOPs.
    pub baked_matmul_factor: f64,
}

/// Runs steps 1–4 of the module header.
pub(super) fn run(s: &mut Session<'_>) -> Step<()> {
    match fixed_costs(s) {
        Some(fixed) => {
            if let Some(throughput) = throughput(s, fixed)? {
                penalties::run(s, fixed, throughput)?;
            }
        }
        None => {
            for field in ["cost.dispatch_floor_ms", "cost.bandwidth_gb_s", "cost.isolated_eval_ms"] {
                s.not_probed(field, "the fixed-cost timings failed".into());
            }
        }
    }
    compile_time(s);
    Ok(())
}

// ---- 1. floor, bandwidth, isolated latency -------------------------------------------------------------

fn fixed_costs(s: &mut Session<'_>) -> Option<Fixed> {
    let (id, program) = s.basic.clone()?;
    let trial = Trial::new(
        "§8",
        "floor and bandwidth",
        "x + x ([1,1,1,64]) with both surfaces of the minimum, 1 MiB and 4 MiB",
        "t = floor + B / BW: a line in the request bytes B",
    );
    let mut points = Vec::new();
    for size in [s.plan.min_bytes, 1 << 20, 4 << 20] {
        match s.time(id, &program, &(vec![size], vec![size]), false) {
            Ok(t) => points.push((2.0 * size as f64, t)),
            Err(e) => {
                s.record(&trial, e, "not measured", Inconclusive);
                return None;
            }
        }
    }
    let (floor, slope) = line(&points);
    let listed = points
        .iter()
        .map(|(b, t)| format!("B = {b} B: {t:.6} ms"))
        .collect::<Vec<_>>()
        .join(", ");
    if slope <= 0.0 || floor < 0.0 {
        let observed = format!("{listed}: floor {floor} ms, slope {slope} ms/B");
        s.record(&trial, observed, "no usable line", Inconclusive);
        return None;
    }
    let residual = points
        .iter()
        .map(|&(b, t)| ((floor + slope * b - t) / t).abs())
        .fold(0.0, f64::max);
    let (floor_ms, bandwidth) = (round6(floor), round6(1e-6 / slope));
    s.profile.cost.dispatch_floor_ms = floor_ms;
    s.profile.cost.bandwidth_gb_s = bandwidth;
    let observed = format!("{listed}; largest relative residual {residual:.1e}");
    s.probed(
        "cost.dispatch_floor_ms",
        format!("§8 fixed costs: line through {observed}"),
    );
    s.probed(
        "cost.bandwidth_gb_s",
        format!("§8 fixed costs: line through {observed}"),
    );
    let conclusion = format!("cost.dispatch_floor_ms = {floor_ms}, cost.bandwidth_gb_s = {bandwidth}");
    s.record(&trial, observed, conclusion, Measured);
    let fixed = Fixed { floor, slope };
    isolated(s, id, &program, fixed);
    Some(fixed)
}

/// C40: one evaluation on an idle engine at the minimum size; its latency is the time minus B / BW.
fn isolated(s: &mut Session<'_>, id: ProgramId, program: &ProbeProgram, fixed: Fixed) {
    let size = s.plan.min_bytes;
    let trial = Trial::new(
        "C40",
        "isolated latency",
        format!("x + x with both surfaces of {size} B, evaluated on an idle engine"),
        "t = isolated latency + B / BW",
    );
    match s.time(id, program, &(vec![size], vec![size]), true) {
        Ok(t) => {
            let latency = round6(t - 2.0 * size as f64 * fixed.slope);
            s.profile.cost.isolated_eval_ms = latency;
            let observed = format!("{t:.6} ms");
            s.probed(
                "cost.isolated_eval_ms",
                format!("C40 isolated evaluation: {observed} minus B / BW"),
            );
            let conclusion = format!("cost.isolated_eval_ms = {latency}");
            s.record(&trial, observed, conclusion, Measured);
        }
        Err(e) => s.record(&trial, e, "not measured", Inconclusive),
    }
}

// ---- 2. throughput, C41, shape factor --------------------------------------------------------------------

/// The conv chain at `(S0, C0)`, sized for at most [`FIRST_FLOPS_PER_BYTE`]; then C41 and the shape fit.
fn throughput(s: &mut Session<'_>, fixed: Fixed) -> Step<Option<Throughput>> {
    let first = measure(
        s,
        fixed,
        Core::base(Chain::Conv),
        FIRST_FLOPS_PER_BYTE / fixed.slope,
        (1.0, 1.0),
        None,
    )?;
    let (c1, id, _) = match first {
        Ok(x) => x,
        Err(e) => {
            for field in SHAPE_FIELDS {
                s.not_probed(field, format!("the first compute-bound timing failed: {e}"));
            }
            let ran = format!("a {CORE}x{CORE} conv chain at (S, C) = ({S0}, {C0})");
            let trial = Trial::new("§8", "throughput and shape", ran, "a compute-bound time");
            s.record(&trial, e, "not measured", Inconclusive);
            return Ok(None);
        }
    };
    s.release(id);
    let m1 = c1.flops / c1.compute_ms;
    let Some(factor) = baked_matmul(s, fixed, m1)? else {
        return Ok(None);
    };
    let t = Throughput {
        m1,
        baked_matmul_factor: factor,
    };
    shape(s, fixed, t)?;
    Ok(Some(t))
}

/// C41: a baked-weight matmul chain at the conv chain's shape; the factor is what a matmul FLOP costs
/// in conv FLOPs.
fn baked_matmul(s: &mut Session<'_>, fixed: Fixed, m1: f64) -> Step<Option<f64>> {
    let trial = Trial::new(
        "C41",
        "conv vs baked matmul",
        format!("{CORE}x{CORE} chain of matmuls with a baked weight vs the same chain as 1x1 convs"),
        "the same time per FLOP unless one form is slower",
    );
    match measure(s, fixed, Core::base(Chain::BakedMatmul), m1, (1.0, 1.0), None)? {
        Ok((p, id, _)) => {
            s.release(id);
            let factor = round6(1.0 + (p.compute_ms * m1 - p.flops) / p.chain_flops);
            let conv = factor > 1.0 / SLOWER;
            s.profile.limits.ops.baked_linear_as_conv = conv;
            let observed = format!("a baked-weight matmul FLOP costs {factor} conv FLOPs");
            s.probed(
                "limits.ops.baked_linear_as_conv",
                format!("C41 conv vs matmul: {observed}"),
            );
            let conclusion = format!("limits.ops.baked_linear_as_conv = {conv}");
            s.record(&trial, observed, conclusion, Measured);
            Ok(Some(factor))
        }
        Err(e) => {
            s.record(&trial, e, "not measured", Inconclusive);
            Ok(None)
        }
    }
}

/// `base·ratio^(1/exponent)`, the extent at which the factor saturates, when the point at `big` is
/// saturated; `None` when the exponent is 0 (no effect to see) or `big` is not yet saturated.
fn saturation(base: usize, big: usize, exponent: f64, ratio: f64) -> Option<usize> {
    if exponent <= 0.0 || big <= base {
        return None;
    }
    let unsaturated = (big as f64 / base as f64).powf(exponent);
    if ratio >= unsaturated * (1.0 - 1e-6) {
        return None;
    }
    Some((base as f64 * ratio.powf(1.0 / exponent)).round() as usize)
}

/// An exponent measured as `ln(ratio) / ln(4)`, six digits, exactly 0 when it rounds to nothing.
fn exponent_of(ratio: f64) -> f64 {
    let e = round6(ratio.ln() / 4f64.ln());
    if e.abs() < 1e-6 {
        0.0
    } else {
        e
    }
}

/// Effective FLOPs per ms of a baked-matmul chain at `(spatial, channels)`, sized for at most `bound`.
fn rate_at(
    s: &mut Session<'_>,
    fixed: Fixed,
    t: Throughput,
    extents: (usize, usize),
    bound: f64,
) -> Step<Result<f64, String>> {
    let core = Core {
        spatial: extents.0,
        channels: extents.1,
        ..Core::base(Chain::BakedMatmul)
    };
    let factors = (t.baked_matmul_factor, 1.0);
    Ok(measure(s, fixed, core, bound, factors, None)?.map(|(p, id, _)| {
        s.release(id);
        effective(&p, Chain::BakedMatmul, factors) / p.compute_ms
    }))
}

/// The four shape points and the fit of the five shape fields.
fn shape(s: &mut Session<'_>, fixed: Fixed, t: Throughput) -> Step<()> {
    let s_big = S_BIG.min(s.profile.limits.max_spatial);
    let c_big = C_BIG.min(s.profile.limits.max_channels);
    let ran = format!(
        "{CORE}x{CORE} baked-matmul chains on carriers [1,C,1,S]: (S,C) = ({},{C0}), ({S0},{}), ({s_big},{C0}), \
         ({S0},{c_big}), against the conv chain at ({S0},{C0})",
        4 * S0,
        4 * C0
    );
    let expected = "compute-bound times F / (P · min(1,S/S_ref)^a · min(1,C/C_ref)^b)";
    let trial = Trial::new("§8", "throughput and shape", ran, expected);
    let m1 = t.m1;
    // Rates grow at most linearly in each extent (exponents ≤ 1), then exactly as fitted.
    let mut ratios = Vec::new();
    for extents in [(4 * S0, C0), (S0, 4 * C0)] {
        match rate_at(s, fixed, t, extents, 4.0 * m1)? {
            Ok(rate) => ratios.push(rate / m1),
            Err(e) => {
                shape_failed(s, &trial, e);
                return Ok(());
            }
        }
    }
    let (a, b) = (exponent_of(ratios[0]), exponent_of(ratios[1]));
    let spatial_bound = m1 * (s_big as f64 / S0 as f64).powf(a);
    let channel_bound = m1 * (c_big as f64 / C0 as f64).powf(b);
    for (extents, bound) in [((s_big, C0), spatial_bound), ((S0, c_big), channel_bound)] {
        match rate_at(s, fixed, t, extents, bound)? {
            Ok(rate) => ratios.push(rate / m1),
            Err(e) => {
                shape_failed(s, &trial, e);
                return Ok(());
            }
        }
    }
    let s_ref = saturation(S0, s_big, a, ratios[2]);
    let c_ref = saturation(C0, c_big, b, ratios[3]);
    let observed = format!(
        "{m1:.6e} FLOPs/ms at ({S0},{C0}); x{:.6}, x{:.6}, x{:.6}, x{:.6} at the other points",
        ratios[0], ratios[1], ratios[2], ratios[3]
    );
    set_shape(s, (a, b), (s_ref, c_ref), m1, &observed);
    let c = &s.profile.cost;
    let conclusion = format!(
        "P = {} TFLOPS, exponents {} / {}, saturation S {} / C {}",
        c.effective_tflops, c.spatial_exponent, c.channel_exponent, c.shape_ref_spatial, c.shape_ref_channels
    );
    s.record(&trial, observed, conclusion, Measured);
    Ok(())
}

fn shape_failed(s: &mut Session<'_>, trial: &Trial, e: String) {
    for field in SHAPE_FIELDS {
        s.not_probed(field, format!("a shape point failed: {e}"));
    }
    s.record(trial, e, "not measured", Inconclusive);
}

/// Sets the shape fields and P from the fitted exponents and saturation extents.
fn set_shape(
    s: &mut Session<'_>,
    (a, b): (f64, f64),
    (s_ref, c_ref): (Option<usize>, Option<usize>),
    m1: f64,
    how: &str,
) {
    let how = format!("§8 shape fit: {how}");
    let mut factor = 1.0;
    for (exponent, extent, axis, base) in [(a, s_ref, "spatial", S0), (b, c_ref, "channel", C0)] {
        let (exp_field, ref_field) = if axis == "spatial" {
            s.profile.cost.spatial_exponent = exponent;
            ("cost.spatial_exponent", "cost.shape_ref_spatial")
        } else {
            s.profile.cost.channel_exponent = exponent;
            ("cost.channel_exponent", "cost.shape_ref_channels")
        };
        s.probed(exp_field, how.clone());
        match extent {
            Some(r) => {
                factor *= (base as f64 / r as f64).min(1.0).powf(exponent);
                if axis == "spatial" {
                    s.profile.cost.shape_ref_spatial = r;
                } else {
                    s.profile.cost.shape_ref_channels = r;
                }
                s.probed(ref_field, how.clone());
            }
            None if exponent == 0.0 => s.not_probed(
                ref_field,
                format!("the {axis} exponent is 0, so its saturation extent has no effect to measure"),
            ),
            None => {
                s.not_probed(
                    ref_field,
                    format!("the {axis} factor did not saturate within the extents tried"),
                );
                s.not_probed(
                    "cost.effective_tflops",
                    format!("the {axis} saturation was not reached"),
                );
                return;
            }
        }
    }
    s.profile.cost.effective_tflops = round6(m1 * 1e3 / 1e12 / factor);
    s.probed("cost.effective_tflops", how);
}

// ---- 4. C42 compile time ---------------------------------------------------------------------------------

/// Fits `ms = k · (ops / 64)^γ` through every compile time the device reported.
fn compile_time(s: &mut Session<'_>) {
    const FIELD: &str = "cost.compile_ms_per_kernel";
    let points: Vec<(f64, f64)> = s
        .compile_times
        .iter()
        .filter(|&&(ops, ms)| ops > 0 && ms > 0.0)
        .map(|&(ops, ms)| ((ops as f64 / KERNEL_OPS).ln(), ms.ln()))
        .collect();
    let ran = format!(
        "every program compiled by the probe ({} with a reported time)",
        points.len()
    );
    let trial = Trial::new(
        "C42",
        "compile time",
        ran,
        "compile time grows as a power of the operation count (C42)",
    );
    let distinct = points.iter().any(|p| (p.0 - points[0].0).abs() > 1e-9);
    if points.len() < 2 || !distinct {
        s.not_probed(
            FIELD,
            "the device reported no compile times for programs of different sizes".into(),
        );
        s.record(&trial, "no times", "not measured", Inconclusive);
        return;
    }
    let (intercept, slope) = line(&points);
    let per_kernel = round6(intercept.exp());
    let worst = points
        .iter()
        .map(|&(x, y)| ((intercept + slope * x).exp() / y.exp() - 1.0).abs())
        .fold(0.0, f64::max);
    s.profile.cost.compile_ms_per_kernel = per_kernel;
    let observed = format!(
        "{} compiles: ms = {per_kernel} · (ops / 64)^{slope:.4}, largest relative residual {worst:.1e}",
        points.len()
    );
    s.probed(FIELD, format!("C42 compile times: {observed}"));
    s.record(&trial, observed, format!("{FIELD} = {per_kernel}"), Measured);
}
