//! Attention scores and their softmax in one step, skipping the keys a causal mask hides.
//!
//! Pattern (found at plan time by [`plan_scores_softmax`]): `P = softmax(S·c + M)` over the last
//! axis, where `S = q · kᵀ` is an f32 matmul read by nothing else (through reshapes only), `c` an
//! optional scalar constant and `M` an optional constant mask `[.., T_q, T]` (leading axes 1),
//! broadcast over the scores. Both attention builders of the models emit it. The step computes,
//! per block of query rows, the rows of `S` into the output, adds scale and mask, and softmaxes
//! them while they are in cache: `S` is never written out and read back. Why: the Stories110M
//! training layer spent 7 ms on the scores product and 8 ms on the softmax per layer (docs/
//! BENCHMARKS.md), mostly moving 25 MB of scores through memory twice.
//!
//! Skipping: where every mask value of a block's rows from some column on is at most
//! `MASKED_AT_MOST` (a causal mask's `-10000` above the diagonal), those columns of `S` are not
//! computed. The unfused softmax gives them exactly 0 whenever `x − max < EXP_MIN` (`vmath::exp`
//! flushes there), and so does this step, which puts `-inf` in their place and leaves whole lane
//! groups of them out of the softmax (their probabilities are exactly 0 either way; the lanes'
//! sums gain only zeros, `reduce::softmax_live_rows_in_place`); it skips only
//! when that is proven for the block at run time: `|S_ij·c| ≤ |c|·‖q_i‖·max_j ‖k_j‖` (Cauchy–
//! Schwarz, with a margin for rounding) bounds every skipped value below the row's computed
//! maximum by more than the flush threshold. When the bound fails (huge or non-finite scores),
//! the block's remaining columns are computed and the row is softmaxed whole, as unfused.
//!
//! Invariant: the result has the bits of the unfused steps (matmul, then the fused softmax): the
//! same products (`tile_product`: each score one chain of fused multiply-adds over the head
//! dimension, in the `gemm` crate's order), the same
//! `s·c`, then `+ m` roundings, and the same row softmax over the whole row, whose skipped entries
//! are exact zeros in both (tests in `tests/cpu_fusion.rs` compare the bits).

use super::elementwise::Instr;
use super::fusion::Fusion;
use super::lower::{lower, Kernel};
use super::matmul::{span, Layout, MatMulPlan, Method};
use super::reduce::{softmax_live_rows_in_place, softmax_rows_in_place};
use super::tile_product::{multiply, Factors};
use super::vmath;
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::interp::exec_error;
use crate::op::{BinaryOp, Op};
use crate::types::DType;
use rayon::prelude::*;
use std::sync::Arc;

/// Mask values at most this hide their key (a causal mask uses `-10000`, see `composite`).
const MASKED_AT_MOST: f32 = -1000.0;
/// Below this, `vmath::exp` returns exactly 0 (its `EXP_MIN`, less a margin of 1 for rounding).
const FLUSHES_BELOW: f64 = -87.336_55 - 1.0;
/// Query rows per task, at most (a block's scores stay in the core's cache while softmaxed).
const MAX_BLOCK_ROWS: usize = 32;

/// The constant mask of a scores softmax, analysed per block of query rows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MaskPlan {
    /// `[rows, len]` values; score row `r` reads mask row `r % rows`.
    pub values: Arc<[f32]>,
    pub rows: usize,
    /// Per block of `block_rows` mask rows: the columns from which every value of the block is at
    /// most `MASKED_AT_MOST` (the row length when there are none), and the largest of those values.
    pub live: Vec<usize>,
    pub hidden_max: Vec<f32>,
}

/// A step computing `softmax(q·kᵀ·c + M)` (see the module header).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScoresSoftmaxPlan {
    /// The scores product (`n` is the softmax's row length).
    pub product: MatMulPlan,
    pub scale: Option<f32>,
    pub mask: Option<MaskPlan>,
    /// Query rows per task (divides the product's rows and the mask's).
    pub block_rows: usize,
}

/// What [`plan_scores_softmax`] found: per node, the plan of a softmax step that takes over its
/// scores product, and the products it absorbs.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScoresFusion {
    pub plans: Vec<Option<(ScoresSoftmaxPlan, [ValueId; 2])>>,
    pub absorbed: Vec<bool>,
}

/// Finds every last-axis softmax whose fused prologue is `S·c + M`, `S·c` or `S + M` over a
/// scores product `q · kᵀ` read only through reshapes by that prologue (see the module header).
pub(crate) fn plan_scores_softmax(g: &Graph, fusion: &Fusion) -> ScoresFusion {
    let nodes = g.nodes();
    let uses = g.use_counts();
    let mut found = ScoresFusion {
        plans: vec![None; nodes.len()],
        absorbed: vec![false; nodes.len()],
    };
    for (index, node) in nodes.iter().enumerate() {
        let (Op::Softmax { .. }, Some(group)) = (&node.op, fusion.roots[index].as_ref()) else {
            continue;
        };
        if group.rotations.iter().any(Option::is_some) {
            continue;
        }
        let Some(prologue) = Prologue::of(g, &group.leaves, &group.instrs) else {
            continue;
        };
        let Some(product_node) = single_use_product(g, &uses, prologue.scores) else {
            continue;
        };
        let product = &nodes[product_node];
        let row = *g.ty(node.outputs[0]).shape.dims().last().unwrap_or(&0);
        let Ok(Kernel::MatMul(plan)) = lower(g, product, None) else {
            continue;
        };
        let operands_computed = product.inputs.iter().all(|&v| !is_constant(g, v));
        if plan.method != Method::Gemm || plan.n != row || plan.m == 0 || row == 0 || !operands_computed {
            continue;
        }
        let mask = match prologue.mask {
            Some(mask) => match mask_values(g, mask, row) {
                Some(values) if plan.m % (values.len() / row) == 0 => Some(values),
                _ => continue,
            },
            None => None,
        };
        let period = mask.as_ref().map_or(plan.m, |values| values.len() / row);
        let block_rows = (1..=MAX_BLOCK_ROWS).rev().find(|b| period % b == 0).unwrap_or(1);
        found.plans[index] = Some((
            ScoresSoftmaxPlan {
                mask: mask.map(|values| MaskPlan::new(values, row, block_rows)),
                scale: prologue.scale,
                product: plan,
                block_rows,
            },
            [product.inputs[0], product.inputs[1]],
        ));
        found.absorbed[product_node] = true;
    }
    found
}

/// The recognised forms of a softmax prologue: which leaf holds the scores, the scale, the mask.
struct Prologue {
    scores: ValueId,
    scale: Option<f32>,
    mask: Option<ValueId>,
}

impl Prologue {
    fn of(g: &Graph, leaves: &[ValueId], instrs: &[Instr]) -> Option<Prologue> {
        let leaf = |r: usize| leaves.get(r).copied();
        let binary = |instr: &Instr, want: BinaryOp| match *instr {
            Instr::Binary { op, a, b, round: false } if op == want => Some((a, b)),
            _ => None,
        };
        // The operand pair as (register read by the next step or a scores leaf, the other leaf).
        let scalar = |v: ValueId| scalar_constant(g, v);
        let scaled = |instr: &Instr| -> Option<(usize, f32)> {
            let (a, b) = binary(instr, BinaryOp::Mul)?;
            [(a, b), (b, a)]
                .into_iter()
                .find_map(|(s, c)| Some((s, scalar(leaf(c)?)?)).filter(|_| s < leaves.len()))
        };
        let masked = |instr: &Instr, operand: usize| -> Option<ValueId> {
            let (a, b) = binary(instr, BinaryOp::Add)?;
            let other = if a == operand {
                b
            } else if b == operand {
                a
            } else {
                return None;
            };
            let mask = leaf(other)?;
            constant_f32(g, mask).map(|_| mask)
        };
        let n = leaves.len();
        match instrs {
            [mul, add] => {
                let (s, c) = scaled(mul)?;
                let mask = masked(add, n)?;
                Some(Prologue {
                    scores: leaf(s)?,
                    scale: Some(c),
                    mask: Some(mask),
                })
            }
            [only] => match scaled(only) {
                Some((s, c)) => Some(Prologue {
                    scores: leaf(s)?,
                    scale: Some(c),
                    mask: None,
                }),
                None => {
                    let (a, b) = binary(only, BinaryOp::Add)?;
                    [(a, b), (b, a)].into_iter().find_map(|(s, m)| {
                        let mask = masked(only, s)?;
                        (leaf(m)? == mask).then_some(Prologue {
                            scores: leaf(s)?,
                            scale: None,
                            mask: Some(mask),
                        })
                    })
                }
            },
            _ => None,
        }
    }
}

/// The f32 values of a constant value.
fn constant_f32(g: &Graph, v: ValueId) -> Option<&[f32]> {
    match &g.producer(v).op {
        Op::Const { value } if value.dtype() == DType::F32 => value.as_f32(),
        _ => None,
    }
}

/// The value of a one-element f32 constant.
pub(crate) fn scalar_constant(g: &Graph, v: ValueId) -> Option<f32> {
    constant_f32(g, v).filter(|c| c.len() == 1).map(|c| c[0])
}

/// True when `v` is (a reshape of) a constant or an input-free constant chain.
fn is_constant(g: &Graph, v: ValueId) -> bool {
    let mut v = v;
    loop {
        match &g.producer(v).op {
            Op::Const { .. } => return true,
            Op::Reshape { .. } | Op::Identity => v = g.producer(v).inputs[0],
            _ => return false,
        }
    }
}

/// The node of the f32 `q · kᵀ` product whose value reaches `v` through reshapes only, every
/// value on the way read once (so absorbing the product hides nothing another step reads).
fn single_use_product(g: &Graph, uses: &[usize], v: ValueId) -> Option<usize> {
    let mut v = v;
    loop {
        if uses[v.index()] != 1 {
            return None;
        }
        let node = g.producer(v);
        match node.op {
            Op::Reshape { .. } | Op::Identity => v = node.inputs[0],
            Op::MatMul {
                transpose_a: false,
                transpose_b: true,
            } if g.ty(v).dtype == DType::F32 && node.inputs.iter().all(|&i| g.ty(i).dtype == DType::F32) => {
                return Some(g.values()[v.index()].node.index());
            }
            _ => return None,
        }
    }
}

/// The mask's values as `[rows, row]` when its dims are `[1, .., 1, rows, row]`.
fn mask_values(g: &Graph, mask: ValueId, row: usize) -> Option<Arc<[f32]>> {
    let dims = g.ty(mask).shape.dims();
    let leading_ones = dims.len() >= 2 && dims[..dims.len() - 2].iter().all(|&d| d == 1);
    (leading_ones && dims[dims.len() - 1] == row && dims[dims.len() - 2] > 0)
        .then(|| constant_f32(g, mask).map(Arc::from))
        .flatten()
}

impl MaskPlan {
    fn new(values: Arc<[f32]>, row: usize, block_rows: usize) -> MaskPlan {
        let rows = values.len() / row;
        let (mut live, mut hidden_max) = (Vec::new(), Vec::new());
        for block in values.chunks(block_rows * row) {
            // The first column from which every row of the block is hidden.
            let first_hidden = block
                .chunks(row)
                .map(|r| {
                    r.iter()
                        .rposition(|&m| m > MASKED_AT_MOST || m.is_nan())
                        .map_or(0, |j| j + 1)
                })
                .max()
                .unwrap_or(row);
            let largest = block
                .chunks(row)
                .flat_map(|r| &r[first_hidden..])
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            live.push(first_hidden);
            hidden_max.push(largest);
        }
        MaskPlan {
            values,
            rows,
            live,
            hidden_max,
        }
    }
}

/// Runs the step: `out [batches, m, n]` = the row softmax of `q·kᵀ·c + M`, one rayon task per
/// batch (its keys transposed once, then its query rows a block at a time).
pub(crate) fn run_scores_softmax(
    plan: &ScoresSoftmaxPlan,
    q: &[f32],
    k: &[f32],
    out: &mut [f32],
    threads: usize,
) -> Result<()> {
    let p = &plan.product;
    let (m, n, d) = (p.m, p.n, p.k);
    if out.len() != p.batches.len() * m * n {
        return Err(exec_error(
            "softmax",
            "cpu backend: scores output size differs from the plan".into(),
        ));
    }
    let (a_span, b_span) = (span(m, d, p.a), span(d, n, p.b));
    let in_bounds = p
        .batches
        .iter()
        .all(|&(ao, bo)| ao + a_span <= q.len() && bo + b_span <= k.len());
    if !in_bounds || m == 0 || n == 0 {
        return if in_bounds {
            Ok(())
        } else {
            Err(exec_error(
                "softmax",
                "cpu backend: scores operands out of bounds".into(),
            ))
        };
    }
    let task = |(batch, scores): (usize, &mut [f32])| {
        let (ao, bo) = p.batches[batch];
        // Keys as `[d, n]` rows, so a block's scores are one multiply-add per key column and step.
        let mut keys = vec![0.0f32; d * n];
        transpose_keys(k, bo, p.b, (d, n), &mut keys);
        let key_norm = largest_key_norm(&keys, d, n);
        vmath::with_wide_vectors(
            #[inline(always)]
            || {
                for (b, block) in scores.chunks_mut(plan.block_rows * n).enumerate() {
                    let first_row = b * plan.block_rows;
                    // The block's queries where they lie (the product packs them anyway).
                    let queries = Queries {
                        data: &q[ao + first_row * p.a.rs..],
                        rs: p.a.rs,
                        cs: p.a.cs,
                    };
                    scores_block(plan, queries, &keys, key_norm, first_row, block);
                }
            },
        )
    };
    if threads > 1 {
        out.par_chunks_mut(m * n).enumerate().for_each(task);
    } else {
        out.chunks_mut(m * n).enumerate().for_each(task);
    }
    Ok(())
}

/// A block's query rows: element (i, t) at `data[i·rs + t·cs]`.
#[derive(Clone, Copy)]
struct Queries<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl Queries<'_> {
    /// Euclidean norm of row `i` over `d` elements (NaN if any element is NaN, `inf` when the
    /// squares overflow). Summed in f32: its relative error (`d · 2⁻²⁴`) is far inside the
    /// bound's margin.
    #[inline(always)]
    fn norm(&self, i: usize, d: usize) -> f64 {
        let squares = (0..d).map(|t| self.data[i * self.rs + t * self.cs]).map(|v| v * v);
        f64::from(squares.sum::<f32>().sqrt())
    }
}

/// The softmaxed scores of one block of query rows (`queries [rows, d]`, `keys [d, n]`) from
/// product row `first_row`, skipping the hidden keys when the bound allows (module header).
#[inline(always)]
fn scores_block(
    plan: &ScoresSoftmaxPlan,
    queries: Queries<'_>,
    keys: &[f32],
    key_norm: f64,
    first_row: usize,
    block: &mut [f32],
) {
    let n = plan.product.n;
    let mask_block = plan
        .mask
        .as_ref()
        .map(|mask| (mask, (first_row % mask.rows) / plan.block_rows));
    let live = mask_block.map_or(n, |(mask, b)| mask.live[b]);
    let d = plan.product.k;
    let factors = Factors {
        a: queries.data,
        a_row: queries.rs,
        a_step: queries.cs,
        b: keys,
        b_row: n,
        depth: d,
    };
    let rows = block.len() / n;
    multiply(factors, block, n, rows, (0, live), false);
    add_scale_and_mask(plan, block, first_row, 0, live);
    if live < n {
        let hidden_max = mask_block.map_or(f32::NEG_INFINITY, |(mask, b)| mask.hidden_max[b]);
        let scale = f64::from(plan.scale.unwrap_or(1.0)).abs();
        let flushes = block.chunks(n).enumerate().all(|(i, row)| {
            let bound = scale * queries.norm(i, d) * key_norm * 1.001 + 1.0;
            bound + f64::from(hidden_max) - f64::from(vmath::max_plain(&row[..live])) < FLUSHES_BELOW
        });
        if flushes {
            block.chunks_mut(n).for_each(|row| row[live..].fill(f32::NEG_INFINITY));
            if live > 0 {
                // Every hidden score's probability is exactly 0: the softmax leaves them out.
                softmax_live_rows_in_place(block, n, live);
                return;
            }
        } else {
            multiply(factors, block, n, rows, (live, n), false);
            add_scale_and_mask(plan, block, first_row, live, n);
        }
    }
    softmax_rows_in_place(block, n);
}

/// `x = s·c + m` (the unfused prologue's two roundings, in its order) on columns `from..to` of a
/// block of score rows starting at product row `first_row`.
#[inline(always)]
fn add_scale_and_mask(plan: &ScoresSoftmaxPlan, block: &mut [f32], first_row: usize, from: usize, to: usize) {
    let n = plan.product.n;
    for (i, r) in block.chunks_mut(n).enumerate() {
        let r = &mut r[from..to];
        if let Some(c) = plan.scale {
            r.iter_mut().for_each(|s| *s *= c);
        }
        if let Some(mask) = &plan.mask {
            let mask_row = (first_row + i) % mask.rows;
            let m = &mask.values[mask_row * n + from..mask_row * n + to];
            r.iter_mut().zip(m).for_each(|(s, &m)| *s += m);
        }
    }
}

/// Key `j`, element `t` (at `bo + j·cs + t·rs` of `k`) into `keys[t·n + j]`, in 16 × 16 tiles.
pub(crate) fn transpose_keys(k: &[f32], bo: usize, layout: Layout, (d, n): (usize, usize), keys: &mut [f32]) {
    const TILE: usize = 16;
    for j0 in (0..n).step_by(TILE) {
        for t0 in (0..d).step_by(TILE) {
            for j in j0..(j0 + TILE).min(n) {
                for t in t0..(t0 + TILE).min(d) {
                    keys[t * n + j] = k[bo + j * layout.cs + t * layout.rs];
                }
            }
        }
    }
}

/// The largest norm of the key columns of `keys [d, n]`, NaN if any element is NaN.
fn largest_key_norm(keys: &[f32], d: usize, n: usize) -> f64 {
    let mut squares = vec![0.0f32; n];
    for row in keys.chunks(n).take(d) {
        squares.iter_mut().zip(row).for_each(|(s, &v)| *s += v * v);
    }
    f64::from(
        squares
            .iter()
            .fold(0.0f32, |a, &b| if b.is_nan() || b > a { b } else { a })
            .sqrt(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::matmul::Layout;

    /// A causal scores softmax over one batch of `t × t` scores with head dimension `d`.
    fn causal_plan(t: usize, d: usize, block_rows: usize) -> ScoresSoftmaxPlan {
        let mut mask = vec![0.0f32; t * t];
        for i in 0..t {
            mask[i * t + i + 1..(i + 1) * t].fill(-1.0e4);
        }
        ScoresSoftmaxPlan {
            product: MatMulPlan {
                m: t,
                n: t,
                k: d,
                a: Layout { rs: d, cs: 1 },
                b: Layout { rs: 1, cs: d },
                batches: vec![(0, 0)],
                method: Method::Gemm,
                packed: None,
            },
            scale: Some(0.5),
            mask: Some(MaskPlan::new(Arc::from(mask), t, block_rows)),
            block_rows,
        }
    }

    #[test]
    fn a_mask_block_is_live_up_to_its_last_row_and_hides_the_rest() {
        let plan = causal_plan(8, 2, 4);
        let mask = plan.mask.unwrap();
        assert_eq!(mask.live, vec![4, 8]);
        assert_eq!(mask.hidden_max, vec![-1.0e4, f32::NEG_INFINITY]);
    }

    /// The first block (rows 0..4) of an 8 × 8 causal softmax whose hidden key columns 4..8 hold
    /// NaN, with the given bound on key norms: NaN in the output shows they were computed.
    fn first_block_with_nan_hidden_keys(key_norm: f64) -> Vec<f32> {
        let (t, d) = (8, 2);
        let plan = causal_plan(t, d, 4);
        let values: Vec<f32> = (0..4 * d).map(|i| i as f32 * 0.1).collect();
        let queries = Queries {
            data: &values,
            rs: d,
            cs: 1,
        };
        let mut keys: Vec<f32> = (0..d * t).map(|i| 0.05 * i as f32).collect();
        for row in keys.chunks_mut(t) {
            row[4..].fill(f32::NAN);
        }
        let mut block = vec![0.0f32; 4 * t];
        scores_block(&plan, queries, &keys, key_norm, 0, &mut block);
        block
    }

    #[test]
    fn hidden_keys_are_skipped_when_the_bound_proves_they_flush_to_zero() {
        let block = first_block_with_nan_hidden_keys(1.0);
        for row in block.chunks(8) {
            assert!(row[4..].iter().all(|&p| p == 0.0), "{row:?}");
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{row:?}");
        }
    }

    #[test]
    fn hidden_keys_are_computed_when_the_bound_fails() {
        let block = first_block_with_nan_hidden_keys(1.0e5);
        assert!(block.iter().all(|p| p.is_nan()), "{block:?}");
        let block = first_block_with_nan_hidden_keys(f64::NAN);
        assert!(block.iter().all(|p| p.is_nan()), "{block:?}");
    }
}
