//! The backward of attention's probabilities in one step: from `dO`, `V`, the saved
//! probabilities `P`, `K` and `Q` to `dQ`, `dK` and `dV`, a block of query rows at a time, skipping
//! the keys whose probabilities are exactly zero (those a causal mask hid).
//!
//! Pattern (found at plan time by [`plan_attention_backward`], the graph reverse-mode autodiff makes
//! of `softmax(q·kᵀ·c + mask)·v`): `dP = dO·Vᵀ`; `r = Σ_last(dP ⊙ P)` (a fused reduction);
//! `dS = (P ⊙ (dP − r)) · c` (a fused group, `c` a scalar constant); `dQ = dS·K`, `dK = dSᵀ·Q`,
//! `dV = Pᵀ·dO`; `dP`, `r` and `dS` read by nothing else. Unfused, the Stories110M training layer
//! spent about 21 ms per layer on these six steps, writing and reading `dP` and `dS` (25 MB each)
//! and multiplying the zero half of `P` and `dS`.
//!
//! Skipping: in a block of query rows, the columns from which every `P` entry is exactly 0 are left
//! out of every product. Unfused they contribute `0·x`, which is ±0 — when `x` is finite. So a block
//! skips only when `dO`, `V`, `K`, `Q` and its row sums `r` are all finite; otherwise it runs whole.
//!
//! Invariant: the results have the bits of the unfused steps, up to the sign of a zero sum: every
//! product is one fused multiply-add chain per element in the `gemm` crate's order (`tile_product`;
//! `dV` and `dK` continue their chains block after block, rows in order), `r` is summed by the
//! reduction's own routine, and `dS` rounds as the fused group does (tests in
//! `tests/cpu_fusion.rs` compare the bits with the unfused steps).

use super::attention::scalar_constant;
use super::elementwise::Instr;
use super::fusion::{FusedGroup, Fusion};
use super::lower::{lower, Kernel};
use super::matmul::{span, Layout, MatMulPlan, Method};
use super::reduce::sum_rows_f32;
use super::tile_product::{multiply, Factors};
use super::vmath;
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::interp::exec_error;
use crate::op::{BinaryOp, Op, ReduceOp};
use crate::types::DType;
use rayon::prelude::*;

/// Query rows per block, at most.
const MAX_BLOCK_ROWS: usize = 32;

/// A planned attention backward step (see the module header).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttentionBackwardPlan {
    /// `dP = dO · Vᵀ`: `m` query rows, `n` keys, head dimension `k`.
    pub scores: MatMulPlan,
    /// `dQ = dS · K`.
    pub queries: MatMulPlan,
    /// `dK = dSᵀ · Q`.
    pub keys: MatMulPlan,
    /// `dV = Pᵀ · dO` (its left operand gives `P`'s offsets).
    pub values: MatMulPlan,
    pub scale: f32,
    pub block_rows: usize,
}

/// What [`plan_attention_backward`] found: at the first absorbed node of each match, the step's
/// plan, operands `[dO, V, P, K, Q]` and results `[dQ, dK, dV]`; and every node the steps absorb.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackwardFusion {
    pub steps: Vec<Option<PlannedStep>>,
    pub absorbed: Vec<bool>,
}

/// An expression of a fused group over its leaves.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Leaf(ValueId),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Other,
}

impl Expr {
    /// The group's result as an expression (instructions that round to half are `Other`).
    fn of(group: &FusedGroup) -> Expr {
        let leaf = |(&v, rotation): (&ValueId, &Option<_>)| match rotation {
            None => Expr::Leaf(v),
            Some(_) => Expr::Other,
        };
        let mut registers: Vec<Expr> = group.leaves.iter().zip(&group.rotations).map(leaf).collect();
        for instr in &group.instrs {
            let value = match *instr {
                Instr::Binary { op, a, b, round: false } => match (registers.get(a), registers.get(b)) {
                    (Some(x), Some(y)) => Expr::Binary(op, Box::new(x.clone()), Box::new(y.clone())),
                    _ => Expr::Other,
                },
                _ => Expr::Other,
            };
            registers.push(value);
        }
        registers.pop().unwrap_or(Expr::Other)
    }

    fn leaf(&self) -> Option<ValueId> {
        match self {
            Expr::Leaf(v) => Some(*v),
            _ => None,
        }
    }

    /// The operands of `self` when it is `op`, in both orders for a commutative product.
    fn operands(&self, op: BinaryOp) -> Vec<(&Expr, &Expr)> {
        match self {
            Expr::Binary(o, a, b) if *o == op && op == BinaryOp::Mul => vec![(a, b), (b, a)],
            Expr::Binary(o, a, b) if *o == op => vec![(a, b)],
            _ => Vec::new(),
        }
    }
}

/// The value `v` is an alias of (through reshapes and identities).
fn root(g: &Graph, mut v: ValueId) -> ValueId {
    while let Op::Reshape { .. } | Op::Identity = g.producer(v).op {
        v = g.producer(v).inputs[0];
    }
    v
}

/// The node defining `v`.
fn node_of(g: &Graph, v: ValueId) -> usize {
    g.values()[v.index()].node.index()
}

/// True when the aliases from `from` down to `to` (`to` reached from `from` through reshapes) are
/// each read once.
fn read_once_down_to(g: &Graph, uses: &[usize], mut to: ValueId, from: ValueId) -> bool {
    while to != from {
        match g.producer(to).op {
            Op::Reshape { .. } | Op::Identity => {
                to = g.producer(to).inputs[0];
                if uses[to.index()] != 1 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// The f32 matmul plan of node `index` with the given transposes, computed by `gemm`.
fn product_plan(g: &Graph, index: usize, transposes: (bool, bool)) -> Option<MatMulPlan> {
    let node = &g.nodes()[index];
    let Op::MatMul {
        transpose_a,
        transpose_b,
    } = node.op
    else {
        return None;
    };
    let all_f32 = node
        .inputs
        .iter()
        .chain(&node.outputs)
        .all(|&v| g.ty(v).dtype == DType::F32);
    match lower(g, node, None) {
        Ok(Kernel::MatMul(plan))
            if (transpose_a, transpose_b) == transposes && all_f32 && plan.method == Method::Gemm =>
        {
            Some(plan)
        }
        _ => None,
    }
}

/// Finds every attention backward (see the module header) in `g`.
pub(crate) fn plan_attention_backward(g: &Graph, fusion: &Fusion) -> BackwardFusion {
    let nodes = g.nodes();
    let mut found = BackwardFusion {
        steps: vec![None; nodes.len()],
        absorbed: vec![false; nodes.len()],
    };
    let uses = g.use_counts();
    for index in 0..nodes.len() {
        if let Some((placement, step, absorbed)) = match_at(g, fusion, &uses, index) {
            if absorbed.iter().any(|&a| found.absorbed[a]) {
                continue;
            }
            absorbed.iter().for_each(|&a| found.absorbed[a] = true);
            found.steps[placement] = Some(step);
        }
    }
    found
}

/// A planned step with its operands and results.
type PlannedStep = (AttentionBackwardPlan, Vec<ValueId>, Vec<ValueId>);

/// The step rooted at the `dS` group of node `index`, if it is one: its position, the step, and
/// the nodes it absorbs.
fn match_at(g: &Graph, fusion: &Fusion, uses: &[usize], index: usize) -> Option<(usize, PlannedStep, Vec<usize>)> {
    let nodes = g.nodes();
    let node = &nodes[index];
    if !matches!(node.op, Op::Binary(_)) {
        return None;
    }
    // dS = (P ⊙ (dP − r)) · c
    let ds_expr = Expr::of(fusion.roots[index].as_ref()?);
    let (scale, weighted) = ds_expr
        .operands(BinaryOp::Mul)
        .into_iter()
        .find_map(|(x, c)| Some((scalar_constant(g, c.leaf()?)?, x)))?;
    let (p, dp, r) = weighted.operands(BinaryOp::Mul).into_iter().find_map(|(p, diff)| {
        let (dp, r) = diff.operands(BinaryOp::Sub).first().copied()?;
        Some((p.leaf()?, dp.leaf()?, r.leaf()?))
    })?;
    // r = Σ_last(dP ⊙ P), read only by the dS group.
    let reduce = node_of(g, r);
    let Op::Reduce { op: ReduceOp::Sum, .. } = nodes[reduce].op else {
        return None;
    };
    let reduce_expr = Expr::of(fusion.roots[reduce].as_ref()?);
    let product = Expr::Binary(BinaryOp::Mul, Box::new(Expr::Leaf(dp)), Box::new(Expr::Leaf(p)));
    let swapped = Expr::Binary(BinaryOp::Mul, Box::new(Expr::Leaf(p)), Box::new(Expr::Leaf(dp)));
    let row_sum = match lower(g, &nodes[reduce], fusion.roots[reduce].as_ref()) {
        Ok(Kernel::FusedReduce(_, plan)) if reduce_expr == product || reduce_expr == swapped => plan,
        _ => return None,
    };
    // dP = dO · Vᵀ, read (through reshapes) only by the two groups, once each.
    let scores_node = node_of(g, root(g, dp));
    let scores = product_plan(g, scores_node, (false, true))?;
    let dp_out = nodes[scores_node].outputs[0];
    if uses[dp.index()] != 2 || uses[r.index()] != 1 || !read_once_down_to(g, uses, dp, dp_out) {
        return None;
    }
    let (d_o, v) = (nodes[scores_node].inputs[0], nodes[scores_node].inputs[1]);
    // dS (through reshapes) read exactly by dQ = dS·K and dK = dSᵀ·Q.
    let mut ds = node.outputs[0];
    loop {
        let readers: Vec<usize> = (index + 1..nodes.len())
            .filter(|&i| nodes[i].inputs.contains(&ds))
            .collect();
        match readers.as_slice() {
            [only] if uses[ds.index()] == 1 && matches!(nodes[*only].op, Op::Reshape { .. } | Op::Identity) => {
                ds = nodes[*only].outputs[0];
            }
            _ => break,
        }
    }
    let readers: Vec<usize> = (index + 1..nodes.len())
        .filter(|&i| nodes[i].inputs.first() == Some(&ds))
        .collect();
    if uses[ds.index()] != 2 || readers.len() != 2 {
        return None;
    }
    let by_transpose = |ta: bool| {
        readers
            .iter()
            .copied()
            .find(|&i| product_plan(g, i, (ta, false)).is_some())
    };
    let (dq_node, dk_node) = (by_transpose(false)?, by_transpose(true)?);
    let (queries, keys) = (
        product_plan(g, dq_node, (false, false))?,
        product_plan(g, dk_node, (true, false))?,
    );
    // dV = Pᵀ · dO.
    let dv_node = (0..nodes.len()).find(|&i| {
        nodes[i].inputs.len() == 2
            && root(g, nodes[i].inputs[0]) == root(g, p)
            && nodes[i].inputs[1] == d_o
            && product_plan(g, i, (true, false)).is_some()
    })?;
    let values = product_plan(g, dv_node, (true, false))?;
    let (m, n, batches) = (scores.m, scores.n, scores.batches.len());
    let dense = |plan: &MatMulPlan, layout: Layout| {
        plan.batches.len() == batches
            && plan.a == layout
            && plan.batches.iter().enumerate().all(|(b, o)| o.0 == b * m * n)
    };
    let shapes = (queries.m, queries.k, keys.m, keys.k, values.m, values.k) == (m, n, n, m, n, m)
        && dense(&queries, Layout { rs: n, cs: 1 })
        && dense(&keys, Layout { rs: 1, cs: n })
        && dense(&values, Layout { rs: 1, cs: n })
        && g.ty(p).shape.numel() == batches * m * n
        && row_sum.count == n
        && scale.is_finite();
    if !shapes || m == 0 || n == 0 {
        return None;
    }
    let (k, q) = (nodes[dq_node].inputs[1], nodes[dk_node].inputs[1]);
    let reads = vec![d_o, v, nodes[dv_node].inputs[0], k, q];
    let placement = scores_node.min(dv_node);
    if reads.iter().any(|&x| node_of(g, x) >= placement) {
        return None;
    }
    let defines = vec![
        nodes[dq_node].outputs[0],
        nodes[dk_node].outputs[0],
        nodes[dv_node].outputs[0],
    ];
    let block_rows = (1..=MAX_BLOCK_ROWS).rev().find(|b| m % b == 0).unwrap_or(1);
    let plan = AttentionBackwardPlan {
        scores,
        queries,
        keys,
        values,
        scale,
        block_rows,
    };
    let absorbed = vec![scores_node, dv_node, reduce, index, dq_node, dk_node];
    Some((placement, (plan, reads, defines), absorbed))
}

/// The operands of one run: `[dO, V, P, K, Q]`.
pub(crate) struct BackwardInputs<'a> {
    pub d_o: &'a [f32],
    pub v: &'a [f32],
    pub p: &'a [f32],
    pub k: &'a [f32],
    pub q: &'a [f32],
}

/// Runs the step into `dq [batches, m, ·]`, `dk [batches, n, ·]`, `dv [batches, n, ·]`, one rayon
/// task per batch.
pub(crate) fn run_attention_backward(
    plan: &AttentionBackwardPlan,
    x: &BackwardInputs<'_>,
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    threads: usize,
) -> Result<()> {
    let (s, jq, jk, jv) = (&plan.scores, &plan.queries, &plan.keys, &plan.values);
    let (m, n, batches) = (s.m, s.n, s.batches.len());
    let (d, dq_cols, dk_cols, dv_cols) = (s.k, jq.n, jk.n, jv.n);
    let fits = |x: &[f32], offset: usize, layout: Layout, dims: (usize, usize)| {
        offset + span(dims.0, dims.1, layout) <= x.len()
    };
    let in_bounds = (0..batches).all(|b| {
        fits(x.d_o, s.batches[b].0, s.a, (m, d))
            && fits(x.v, s.batches[b].1, s.b, (d, n))
            && fits(x.k, jq.batches[b].1, jq.b, (n, dq_cols))
            && fits(x.q, jk.batches[b].1, jk.b, (m, dk_cols))
            && fits(x.d_o, jv.batches[b].1, jv.b, (m, dv_cols))
            && jv.batches[b].0 + m * n <= x.p.len()
    }) && (dq.len(), dk.len(), dv.len())
        == (batches * m * dq_cols, batches * n * dk_cols, batches * n * dv_cols);
    if !in_bounds {
        return Err(exec_error(
            "matmul",
            "cpu backend: attention backward operands out of bounds".into(),
        ));
    }
    if batches == 0 || dq_cols == 0 || dk_cols == 0 || dv_cols == 0 {
        return Ok(());
    }
    let task = |scratch: &mut Scratch, (b, ((dq, dk), dv)): (usize, BatchOutputs<'_>)| {
        vmath::with_wide_vectors(
            #[inline(always)]
            || one_batch(plan, x, b, (dq, dk, dv), scratch),
        )
    };
    let (dq, dk, dv) = (
        dq.chunks_mut(m * dq_cols),
        dk.chunks_mut(n * dk_cols),
        dv.chunks_mut(n * dv_cols),
    );
    if threads > 1 {
        let parts: Vec<_> = dq.zip(dk).zip(dv).collect();
        parts.into_par_iter().enumerate().for_each_init(Scratch::default, task);
    } else {
        let mut scratch = Scratch::default();
        dq.zip(dk).zip(dv).enumerate().for_each(|part| task(&mut scratch, part));
    }
    Ok(())
}

/// One batch's `((dQ, dK), dV)`.
type BatchOutputs<'a> = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]);

/// Buffers of one task, reused from batch to batch.
#[derive(Default)]
struct Scratch {
    values_t: Vec<f32>,
    gathered: [Vec<f32>; 4],
    dp: Vec<f32>,
    ds: Vec<f32>,
    r: Vec<f32>,
}

/// The `rows × cols` matrix in `layout` from `offset`, row-major: borrowed when it is stored so,
/// else gathered into `buffer`.
#[inline(always)]
fn rows_of<'a>(
    x: &'a [f32],
    offset: usize,
    layout: Layout,
    (rows, cols): (usize, usize),
    buffer: &'a mut Vec<f32>,
) -> &'a [f32] {
    if layout.cs == 1 && (layout.rs == cols || rows <= 1) {
        return &x[offset..offset + rows * cols];
    }
    buffer.clear();
    for i in 0..rows {
        buffer.extend((0..cols).map(|c| x[offset + i * layout.rs + c * layout.cs]));
    }
    buffer
}

/// True when every value is finite (a lane-wise product with 0, so the loop vectorises).
#[inline(always)]
fn all_finite(values: &[f32]) -> bool {
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail_finite = chunks.remainder().iter().all(|v| v.is_finite());
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v * 0.0;
        }
    }
    tail_finite && lanes.iter().all(|&l| l == 0.0)
}

/// One past the last column holding a nonzero value in any row of `rows` (rows of `n`).
#[inline(always)]
fn last_nonzero_end(rows: &[f32], n: usize) -> usize {
    let mut end = 0;
    for row in rows.chunks(n) {
        let mut j = n;
        while j > end {
            let start = j.saturating_sub(16).max(end);
            let nonzero = row[start..j].iter().fold(false, |any, &x| any | (x != 0.0));
            if nonzero {
                end = start + row[start..j].iter().rposition(|&x| x != 0.0).map_or(0, |p| p + 1);
                break;
            }
            j = start;
        }
    }
    end
}

/// One batch: its blocks of query rows in order.
#[inline(always)]
fn one_batch(
    plan: &AttentionBackwardPlan,
    x: &BackwardInputs<'_>,
    b: usize,
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    scratch: &mut Scratch,
) {
    let (s, jq, jk, jv) = (&plan.scores, &plan.queries, &plan.keys, &plan.values);
    let (m, n, d, rows) = (s.m, s.n, s.k, plan.block_rows);
    let (dq_cols, dk_cols, dv_cols) = (jq.n, jk.n, jv.n);
    let (so, vo) = s.batches[b];
    // Vᵀ as [d, n] rows; K as [n, dq_cols], dO (as both products read it) and Q, row-major.
    scratch.values_t.resize(d * n, 0.0);
    super::attention::transpose_keys(x.v, vo, s.b, (d, n), &mut scratch.values_t);
    let vt = &scratch.values_t;
    let [g0, g1, g2, g3] = &mut scratch.gathered;
    let keys = rows_of(x.k, jq.batches[b].1, jq.b, (n, dq_cols), g0);
    let d_o = rows_of(x.d_o, so, s.a, (m, d), g1);
    let d_o_values = rows_of(x.d_o, jv.batches[b].1, jv.b, (m, dv_cols), g2);
    let queries = rows_of(x.q, jk.batches[b].1, jk.b, (m, dk_cols), g3);
    let p = &x.p[jv.batches[b].0..jv.batches[b].0 + m * n];
    let finite = [vt.as_slice(), keys, d_o, d_o_values, queries]
        .iter()
        .all(|v| all_finite(v));
    dk.fill(0.0);
    dv.fill(0.0);
    scratch.dp.resize(rows * n, 0.0);
    scratch.ds.resize(rows * n, 0.0);
    scratch.r.resize(rows, 0.0);
    let (dp, ds, r) = (&mut scratch.dp, &mut scratch.ds, &mut scratch.r);
    for i0 in (0..m).step_by(rows) {
        let p_rows = &p[i0 * n..(i0 + rows) * n];
        let mut live = if finite { last_nonzero_end(p_rows, n) } else { n };
        let d_o_rows = Factors {
            a: &d_o[i0 * d..],
            a_row: d,
            a_step: 1,
            b: vt,
            b_row: n,
            depth: d,
        };
        multiply(d_o_rows, dp, n, rows, (0, live), false);
        dp.chunks_mut(n).for_each(|row| row[live..].fill(0.0));
        row_sums(dp, p_rows, (n, live), ds, r);
        if live < n && !r.iter().all(|v| v.is_finite()) {
            multiply(d_o_rows, dp, n, rows, (live, n), false);
            live = n;
            row_sums(dp, p_rows, (n, live), ds, r);
        }
        for ((ds_row, dp_row), (p_row, &sum)) in ds.chunks_mut(n).zip(dp.chunks(n)).zip(p_rows.chunks(n).zip(r.iter()))
        {
            for ((o, &g), &pv) in ds_row[..live].iter_mut().zip(dp_row).zip(p_row) {
                *o = (pv * (g - sum)) * plan.scale;
            }
        }
        let ds_rows = Factors {
            a: ds,
            a_row: n,
            a_step: 1,
            b: keys,
            b_row: dq_cols,
            depth: live,
        };
        multiply(ds_rows, &mut dq[i0 * dq_cols..], dq_cols, rows, (0, dq_cols), false);
        // dV[j] += Σ_i P[i, j]·dO[i] and dK[j] += Σ_i dS[i, j]·Q[i] over the block's rows, for j < live.
        for (weights, rows_of_block, out, cols) in [
            (p_rows, d_o_values, &mut *dv, dv_cols),
            (&ds[..], queries, &mut *dk, dk_cols),
        ] {
            let columns = Factors {
                a: weights,
                a_row: 1,
                a_step: n,
                b: &rows_of_block[i0 * cols..],
                b_row: cols,
                depth: rows,
            };
            multiply(columns, out, cols, live, (0, cols), true);
        }
    }
}

/// `r` = the row sums of `dP ⊙ P` over the first `live` columns (rows of `n`; the products go to
/// `scratch`), by the reduction's own routine: one sequential sum per row, to which the columns
/// left out would add only zeros.
#[inline(always)]
fn row_sums(dp: &[f32], p: &[f32], (n, live): (usize, usize), scratch: &mut [f32], r: &mut [f32]) {
    let products = scratch.chunks_mut(live.max(1)).zip(dp.chunks(n).zip(p.chunks(n)));
    for (o, (g, pv)) in products.take(r.len()) {
        o.iter_mut()
            .zip(g.iter().zip(pv))
            .for_each(|(o, (&g, &pv))| *o = g * pv);
    }
    sum_rows_f32(&scratch[..r.len() * live], live, r);
}
