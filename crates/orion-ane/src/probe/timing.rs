//! The timing machinery of the cost fit: the timed program (a chain of R×R matmuls or 1×1 convs on a
//! slice of a carrier input), its FLOPs and bytes as the cost model counts them, and a measurement that
//! makes sure compute, not bandwidth, dominates what the device's clock reports.
//!
//! The model the measurements feed (the profile's, ane.md §8): `t = floor + max(F_eff / (P·e_shape·
//! e_sram), B / BW)`, with F the FLOPs of `orion_core::flops`, B the request's surface bytes plus the
//! program's constant bytes, `e_shape` over the largest I/O tensor `[1, C, 1, S]` — here the carrier —
//! and F_eff the FLOPs as the device spends them (the C41 and C22 factors, [`effective`]).
//!
//! Invariants: the carrier is the largest I/O tensor of every timed program, so `(S, C)` is exactly the
//! carrier's; a [`Point`] is returned only when its compute part exceeds its bandwidth part by
//! [`COMPUTE_BOUND`]; the chain length is sized from a stated bound of the device's rate, and grown
//! (at most twice, ×4 each) when the bound was too low.

use super::programs::{conv_consts, Builder, ProbeProgram, CONV_ARGS};
use super::session::{Session, Step};
use crate::device::ProgramId;

/// Side of the square matrices of the compute chain.
pub(super) const CORE: usize = 128;
/// Smallest carrier last axis (256 bytes of fp16: aligned for every alignment up to 256 B).
pub(super) const S0: usize = 128;
/// Carrier channels of the base point.
pub(super) const C0: usize = 2;
/// Compute part over bandwidth part that the chain length aims at.
const MARGIN: f64 = 1.25;
/// Least compute part over bandwidth part for a point to count.
pub(super) const COMPUTE_BOUND: f64 = 1.1;

/// Six significant digits.
pub(super) fn round6(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 5 - x.abs().log10().floor() as i32;
    if digits >= 0 {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    } else {
        let f = 10f64.powi(-digits);
        (x / f).round() * f
    }
}

/// Least-squares line through `(x, y)` points: `(intercept, slope)`.
pub(super) fn line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len().max(1) as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|&(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

/// Total bytes of request sizes (declaration order per side).
pub(super) fn sum(sizes: &(Vec<usize>, Vec<usize>)) -> f64 {
    sizes.0.iter().chain(&sizes.1).sum::<usize>() as f64
}

/// The fixed costs: dispatch floor (ms) and ms per byte (1 / bandwidth).
#[derive(Debug, Clone, Copy)]
pub(super) struct Fixed {
    pub floor: f64,
    pub slope: f64,
}

/// What the compute chain is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chain {
    /// 1×1 convs with a baked `[R, R, 1, 1]` weight.
    Conv,
    /// Matmuls with a baked `[1, 1, R, R]` weight operand (C41's slow form).
    BakedMatmul,
}

/// One timed program: carrier `[1, channels, 1, spatial]`, `links` chain operations, and optionally an
/// extra input of `extra` fp16 elements (the C22 probe).
#[derive(Debug, Clone, Copy)]
pub(super) struct Core {
    pub spatial: usize,
    pub channels: usize,
    pub chain: Chain,
    pub links: usize,
    pub extra: Option<usize>,
}

impl Core {
    /// The base point: `(S0, C0)`, one link, no extra input.
    pub fn base(chain: Chain) -> Core {
        Core {
            spatial: S0,
            channels: C0,
            chain,
            links: 1,
            extra: None,
        }
    }
}

/// The measured numbers of one evaluation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Point {
    /// FLOPs as `orion_core::flops` counts them, and the part in the chain.
    pub flops: f64,
    pub chain_flops: f64,
    /// Time minus floor, ms.
    pub compute_ms: f64,
    /// Request plus constant bytes.
    pub bytes: f64,
}

/// FLOPs as the device spends them: `factors = (C41 factor on baked-matmul chains, C22 factor of an
/// unaligned input)`.
pub(super) fn effective(point: &Point, chain: Chain, factors: (f64, f64)) -> f64 {
    let (baked, unaligned) = factors;
    let chain_extra = if chain == Chain::BakedMatmul {
        (baked - 1.0) * point.chain_flops
    } else {
        0.0
    };
    (point.flops + chain_extra) * unaligned
}

/// Appends the chain after `h0 [1,1,R,R]`; returns its last variable and the axes that reduce it to one
/// element.
fn chain(b: &mut Builder, c: &Core) -> (String, [i64; 2]) {
    let r = CORE;
    let mut last = "h0".to_string();
    match c.chain {
        Chain::BakedMatmul => {
            b.boolean("tf", false).weight("w", &[1, 1, r, r], &vec![0.0; r * r]);
            for i in 1..=c.links {
                let name = format!("h{i}");
                let args = [
                    ("transpose_x", "tf"),
                    ("transpose_y", "tf"),
                    ("x", last.as_str()),
                    ("y", "w"),
                ];
                b.op(&name, &[1, 1, r, r], "matmul", &args);
                last = name;
            }
            (last, [2, 3])
        }
        Chain::Conv => {
            conv_consts(b);
            b.ints("as_conv", &[1, r as i64, 1, r as i64])
                .weight("w", &[r, r, 1, 1], &vec![0.0; r * r])
                .op("g0", &[1, r, 1, r], "reshape", &[("shape", "as_conv"), ("x", "h0")]);
            last = "g0".to_string();
            for i in 1..=c.links {
                let name = format!("g{i}");
                let mut args = CONV_ARGS.to_vec();
                args.extend([("weight", "w"), ("x", last.as_str())]);
                b.op(&name, &[1, r, 1, r], "conv", &args);
                last = name;
            }
            (last, [1, 3])
        }
    }
}

/// `out = c + Σ chain(slice(c))` (plus `Σ u` with the extra input): every element of the chain feeds
/// the one output, which has the carrier's shape.
pub(super) fn core_program(c: &Core) -> Result<ProbeProgram, String> {
    let r = CORE;
    let mut b = Builder::new();
    b.input("a00_c", &[1, c.channels, 1, c.spatial]);
    if let Some(n) = c.extra {
        b.input("a01_u", &[1, 1, 1, n]);
    }
    let slice = [("begin", "x_begin"), ("size", "x_size"), ("x", "a00_c")];
    b.ints("x_begin", &[0, 0, 0, 0])
        .ints("x_size", &[1, 1, 1, r as i64])
        .weight("zeros", &[1, 1, r, 1], &vec![0.0; r])
        .op("x", &[1, 1, 1, r], "slice_by_size", &slice)
        .op("h0", &[1, 1, r, r], "add", &[("x", "x"), ("y", "zeros")])
        .boolean("keep", true);
    let (last, axes) = chain(&mut b, c);
    b.ints("axes", &axes).op(
        "y",
        &[1, 1, 1, 1],
        "reduce_sum",
        &[("axes", "axes"), ("keep_dims", "keep"), ("x", &last)],
    );
    let total = if c.extra.is_some() {
        b.ints("u_axes", &[3])
            .op(
                "uy",
                &[1, 1, 1, 1],
                "reduce_sum",
                &[("axes", "u_axes"), ("keep_dims", "keep"), ("x", "a01_u")],
            )
            .op("y2", &[1, 1, 1, 1], "add", &[("x", "y"), ("y", "uy")]);
        "y2"
    } else {
        "y"
    };
    let carrier = [1, c.channels, 1, c.spatial];
    b.op("z00_out", &carrier, "add", &[("x", "a00_c"), ("y", total)])
        .output("z00_out")
        .build(&format!(
            "{:?} chain x{} at S={} C={}",
            c.chain, c.links, c.spatial, c.channels
        ))
}

/// Equal request sizes that make the program's working set (surfaces plus constants) about `target`
/// bytes, never below the plan's sizes.
pub(super) fn sizes_for(s: &Session<'_>, program: &ProbeProgram, target: f64) -> Option<(Vec<usize>, Vec<usize>)> {
    let constants = program.cost().ok()?.constant_bytes as f64;
    let count = (program.inputs.len() + program.outputs.len()) as f64;
    let align = s.plan.alignment.max(1);
    let each = (((target - constants) / count).max(0.0) as usize) / align * align;
    let each = each.max(s.plan.sizes(&program.inputs).into_iter().max().unwrap_or(0));
    Some((vec![each; program.inputs.len()], vec![each; program.outputs.len()]))
}

/// A timed, still loaded program and its point.
pub(super) type Measured = (Point, ProgramId, ProbeProgram);

/// Compiles and times `core` with a chain long enough that compute should exceed bandwidth when the
/// device does at most `rate` effective FLOPs per ms (`factors` as in [`effective`]); grows the chain
/// twice if it does not. `sizes`: explicit surfaces (else the plan's). The caller releases the program.
pub(super) fn measure(
    s: &mut Session<'_>,
    fixed: Fixed,
    core: Core,
    rate: f64,
    factors: (f64, f64),
    sizes: Option<(Vec<usize>, Vec<usize>)>,
) -> Step<Result<Measured, String>> {
    let sized = core_program(&Core { links: 1, ..core }).and_then(|p| {
        let constants = p.cost()?.constant_bytes as f64;
        let sizes = sizes.unwrap_or_else(|| (s.plan.sizes(&p.inputs), s.plan.sizes(&p.outputs)));
        Ok((sum(&sizes) + constants, sizes))
    });
    let (bytes, sizes) = match sized {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    let baked = if core.chain == Chain::BakedMatmul {
        factors.0
    } else {
        1.0
    };
    let per_link = 2.0 * (CORE * CORE * CORE) as f64 * baked * factors.1;
    let mut links = (MARGIN * bytes * fixed.slope * rate / per_link).ceil().max(1.0) as usize;
    for _ in 0..3 {
        let program = match core_program(&Core { links, ..core }) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let cost = match program.cost() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let id = match s.compile(&program)? {
            Ok(id) => id,
            Err(refusal) => return Ok(Err(format!("{}: {}", program.label, refusal.describe()))),
        };
        let timed = s.time(id, &program, &sizes, false).map(|t| Point {
            flops: cost.flops,
            chain_flops: cost.matmul_flops,
            compute_ms: t - fixed.floor,
            bytes,
        });
        match timed {
            Ok(point) if point.compute_ms >= COMPUTE_BOUND * bytes * fixed.slope => {
                return Ok(Ok((point, id, program)))
            }
            Ok(_) => links *= 4,
            Err(e) => {
                s.release(id);
                return Ok(Err(e));
            }
        }
        s.release(id);
    }
    Ok(Err(format!(
        "{:?} chain at S={} C={}: bandwidth-bound even with a chain 16x longer than estimated",
        core.chain, core.spatial, core.channels
    )))
}
