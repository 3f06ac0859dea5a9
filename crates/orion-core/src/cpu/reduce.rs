//! Softmax and reductions of the CPU backend: row loops over a (outer, axis, inner) view of the
//! operand, parallel over independent outer blocks. Reductions along contiguous rows run eight rows
//! side by side (independent accumulators, so their dependency chains overlap). Softmax rows and
//! column reductions (`inner > 1`, vectorised across columns) run inside
//! [`vmath::with_wide_vectors`].
//!
//! Invariants: every reduction output accumulates its inputs in increasing flat index order, exactly
//! as the interpreter does, so results are bit-identical to it (sum in f32 in order, max with NaN
//! propagation, mean = sum / count). Softmax is `exp(x - max) / sum` with the vectorised `exp` of
//! [`super::vmath`] and, along a contiguous row, the sum in `vmath`'s fixed lane order (within
//! `Tolerance::F32` of the interpreter). When the reduced axes are not one run of axes (ignoring
//! extent-1 axes) a general odometer walks the input in flat order.

use super::elementwise::max_nan;
use super::vmath;
use crate::interp::index::strides;
use crate::op::ReduceOp;
use rayon::prelude::*;

/// Elements from which a softmax or reduction is split across threads.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// Softmax along the middle axis of an `[outer, len, inner]` view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SoftmaxPlan {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
}

impl SoftmaxPlan {
    pub(crate) fn new(dims: &[usize], axis: usize) -> SoftmaxPlan {
        SoftmaxPlan {
            outer: dims[..axis].iter().product(),
            len: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }

    pub(crate) fn run(&self, x: &[f32], y: &mut [f32], threads: usize) {
        let block = self.len * self.inner;
        if block == 0 {
            return;
        }
        // Each task runs whole blocks inside one wide-vector call; tasks of about SOFTMAX_TASK elements.
        let one = |(xs, ys): (&[f32], &mut [f32])| {
            vmath::with_wide_vectors(
                #[inline(always)]
                || {
                    for (xb, yb) in xs.chunks(block).zip(ys.chunks_mut(block)) {
                        if self.inner == 1 {
                            softmax_row(xb, yb);
                        } else {
                            softmax_columns(xb, yb, self.inner);
                        }
                    }
                },
            )
        };
        let task = block * (SOFTMAX_TASK / block).max(1);
        if threads > 1 && y.len() >= PAR_MIN_ELEMENTS && self.outer > 1 {
            x.par_chunks(task).zip(y.par_chunks_mut(task)).for_each(one);
        } else {
            x.chunks(task).zip(y.chunks_mut(task)).for_each(one);
        }
    }
}

/// Elements per softmax task (whole blocks; one block when a block is larger).
const SOFTMAX_TASK: usize = 1 << 12;

#[inline(always)]
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let sum = vmath::exp_shifted_sum_plain(x, vmath::max_plain(x), y);
    for o in y.iter_mut() {
        *o /= sum;
    }
}

/// Softmax of each `row`-element row of `values`, in place, by the same operations in the same
/// order as [`SoftmaxPlan::run`] on last-axis rows (so the same bits). No run-time dispatch: call it
/// inside [`vmath::with_wide_vectors`].
#[inline(always)]
pub(crate) fn softmax_rows_in_place(values: &mut [f32], row: usize) {
    for r in values.chunks_mut(row.max(1)) {
        let sum = vmath::exp_shifted_sum_in_place_plain(r, vmath::max_plain(r));
        for o in r.iter_mut() {
            *o /= sum;
        }
    }
}

/// [`softmax_rows_in_place`] on rows of `row` values whose columns from `live` (≥ 1) on are
/// `-inf`: the columns up to `live` rounded up to whole groups of `vmath::LANES` are softmaxed, the
/// rest set to 0. The same bits as the whole rows: a `-inf` column's value is exactly 0 either way,
/// and the lanes' maxima and sums see only `-inf` and exact zeros from the columns left out
/// (`max_plain` and `sum_plain` assign column `j` to lane `j mod LANES`; a partial last group is
/// summed apart and added last, and a group of zeros adds 0 to a non-negative sum).
#[inline(always)]
pub(crate) fn softmax_live_rows_in_place(values: &mut [f32], row: usize, live: usize) {
    let computed = live.max(1).next_multiple_of(vmath::LANES).min(row);
    for r in values.chunks_mut(row.max(1)) {
        let (computed, hidden) = r.split_at_mut(computed);
        softmax_rows_in_place(computed, computed.len());
        hidden.fill(0.0);
    }
}

/// Softmax over the rows of a `[len, inner]` block, independently for each column.
#[inline(always)]
fn softmax_columns(x: &[f32], y: &mut [f32], inner: usize) {
    let mut max = vec![f32::NEG_INFINITY; inner];
    for row in x.chunks(inner) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = max_nan(*m, v);
        }
    }
    let mut sum = vec![0.0f32; inner];
    for (xr, yr) in x.chunks(inner).zip(y.chunks_mut(inner)) {
        for ((o, &v), &m) in yr.iter_mut().zip(xr).zip(&max) {
            *o = vmath::exp(v - m);
        }
        for (s, &e) in sum.iter_mut().zip(yr.iter()) {
            *s += e;
        }
    }
    for yr in y.chunks_mut(inner) {
        for (o, &s) in yr.iter_mut().zip(&sum) {
            *o /= s;
        }
    }
}

/// The combining rule of a reduction over elements of type `T`.
pub(crate) trait Accumulate: Copy + Send + Sync {
    fn init(op: ReduceOp) -> Self;
    fn combine(op: ReduceOp, acc: Self, x: Self) -> Self;
    /// Applies the mean's division (floats only; shape inference forbids an i32 mean).
    fn finish(op: ReduceOp, acc: Self, count: usize) -> Self;
}

impl Accumulate for f32 {
    fn init(op: ReduceOp) -> f32 {
        match op {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
        }
    }
    #[inline(always)]
    fn combine(op: ReduceOp, acc: f32, x: f32) -> f32 {
        match op {
            ReduceOp::Sum | ReduceOp::Mean => acc + x,
            ReduceOp::Max => max_nan(acc, x),
        }
    }
    fn finish(op: ReduceOp, acc: f32, count: usize) -> f32 {
        match op {
            ReduceOp::Mean => acc / count as f32,
            ReduceOp::Sum | ReduceOp::Max => acc,
        }
    }
}

impl Accumulate for i32 {
    fn init(op: ReduceOp) -> i32 {
        match op {
            ReduceOp::Sum | ReduceOp::Mean => 0,
            ReduceOp::Max => i32::MIN,
        }
    }
    #[inline(always)]
    fn combine(op: ReduceOp, acc: i32, x: i32) -> i32 {
        match op {
            ReduceOp::Sum | ReduceOp::Mean => acc.wrapping_add(x),
            ReduceOp::Max => acc.max(x),
        }
    }
    fn finish(_op: ReduceOp, acc: i32, _count: usize) -> i32 {
        acc
    }
}

/// How a reduction walks its operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReduceShape {
    /// The reduced axes are one run: `[outer, red, inner]` -> `[outer, inner]`.
    Blocked { outer: usize, red: usize, inner: usize },
    /// Anything else: for every input axis, the stride of its output position (0 when reduced).
    General { dims: Vec<usize>, out_strides: Vec<usize> },
}

/// A planned reduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReducePlan {
    pub op: ReduceOp,
    pub shape: ReduceShape,
    /// Number of elements reduced into each output (the mean's divisor).
    pub count: usize,
}

impl ReducePlan {
    pub(crate) fn new(op: ReduceOp, dims: &[usize], axes: &[usize]) -> ReducePlan {
        let count = axes.iter().map(|&a| dims[a]).product();
        // Classify axes of extent > 1 as reduced or kept; blocked when the reduced ones are a run.
        let flags: Vec<(usize, bool)> = (0..dims.len())
            .filter(|&a| dims[a] != 1)
            .map(|a| (a, axes.contains(&a)))
            .collect();
        let first = flags.iter().position(|f| f.1);
        let last = flags.iter().rposition(|f| f.1);
        let shape = match (first, last) {
            (Some(f), Some(l)) if flags[f..=l].iter().all(|x| x.1) => ReduceShape::Blocked {
                outer: flags[..f].iter().map(|x| dims[x.0]).product(),
                red: flags[f..=l].iter().map(|x| dims[x.0]).product(),
                inner: flags[l + 1..].iter().map(|x| dims[x.0]).product(),
            },
            (Some(_), Some(_)) => {
                let kept: Vec<usize> = (0..dims.len())
                    .map(|a| if axes.contains(&a) { 1 } else { dims[a] })
                    .collect();
                let kept_strides = strides(&kept);
                let out_strides = (0..dims.len())
                    .map(|a| if axes.contains(&a) { 0 } else { kept_strides[a] })
                    .collect();
                ReduceShape::General {
                    dims: dims.to_vec(),
                    out_strides,
                }
            }
            _ => ReduceShape::Blocked {
                // Every reduced axis has extent 1: each output is its single input.
                outer: dims.iter().product(),
                red: 1,
                inner: 1,
            },
        };
        ReducePlan { op, shape, count }
    }

    pub(crate) fn run<T: Accumulate>(&self, x: &[T], out: &mut [T], threads: usize) {
        match &self.shape {
            ReduceShape::Blocked { outer, red, inner } => self.blocked(x, out, (*outer, *red, *inner), threads),
            ReduceShape::General { dims, out_strides } => self.general(x, out, dims, out_strides),
        }
        if self.op == ReduceOp::Mean {
            out.iter_mut().for_each(|o| *o = T::finish(self.op, *o, self.count));
        }
    }

    fn blocked<T: Accumulate>(
        &self,
        x: &[T],
        out: &mut [T],
        (outer, red, inner): (usize, usize, usize),
        threads: usize,
    ) {
        let op = self.op;
        let block = red * inner;
        if outer == 0 || inner == 0 {
            return;
        }
        if block == 0 {
            out.fill(T::init(op));
            return;
        }
        let one = |(xs, os): (&[T], &mut [T])| {
            if inner == 1 {
                reduce_rows(op, xs, red, os);
            } else {
                for (xb, ob) in xs.chunks(block).zip(os.chunks_mut(inner)) {
                    reduce_columns(op, xb, inner, ob);
                }
            }
        };
        // Tasks of a multiple of ROW_GROUP outer blocks (the rows `reduce_rows` interleaves), about
        // REDUCE_TASK elements when blocks are small.
        let blocks = ROW_GROUP * (REDUCE_TASK / (block * ROW_GROUP)).max(1);
        let (x_task, out_task) = (block * blocks, inner * blocks);
        if threads > 1 && x.len() >= PAR_MIN_ELEMENTS && outer > 1 {
            x.par_chunks(x_task).zip(out.par_chunks_mut(out_task)).for_each(one);
        } else {
            x.chunks(x_task).zip(out.chunks_mut(out_task)).for_each(one);
        }
    }

    /// Reduces each row of `count` elements of `values` into one element of `out` (one per row) as
    /// [`ReducePlan::run`] does for a reduction over the trailing axes: the same order, and the
    /// mean's division, so the same bits.
    #[inline(always)]
    pub(crate) fn reduce_rows_f32(&self, values: &[f32], out: &mut [f32]) {
        reduce_rows(self.op, values, self.count, out);
        if self.op == ReduceOp::Mean {
            out.iter_mut().for_each(|o| *o = f32::finish(self.op, *o, self.count));
        }
    }

    /// Walks the input in flat order with an odometer that tracks the output position.
    fn general<T: Accumulate>(&self, x: &[T], out: &mut [T], dims: &[usize], out_strides: &[usize]) {
        out.fill(T::init(self.op));
        let mut index = vec![0usize; dims.len()];
        let mut slot = 0usize;
        for &v in x {
            out[slot] = T::combine(self.op, out[slot], v);
            for axis in (0..dims.len()).rev() {
                index[axis] += 1;
                slot += out_strides[axis];
                if index[axis] < dims[axis] {
                    break;
                }
                slot -= out_strides[axis] * dims[axis];
                index[axis] = 0;
            }
        }
    }
}

/// `out[j]` = the reduction over the rows of `x` (rows of `inner`) of column `j`, rows in order
/// (vectorised across columns; each column accumulates in the interpreter's order).
fn reduce_columns<T: Accumulate>(op: ReduceOp, x: &[T], inner: usize, out: &mut [T]) {
    let init = T::init(op);
    vmath::with_wide_vectors(
        #[inline(always)]
        || match op {
            ReduceOp::Sum | ReduceOp::Mean => columns_with(x, inner, out, init, |a, v| T::combine(ReduceOp::Sum, a, v)),
            ReduceOp::Max => columns_with(x, inner, out, init, |a, v| T::combine(ReduceOp::Max, a, v)),
        },
    )
}

#[inline(always)]
fn columns_with<T: Copy>(x: &[T], inner: usize, out: &mut [T], init: T, f: impl Fn(T, T) -> T) {
    out.fill(init);
    for row in x.chunks(inner) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = f(*o, v);
        }
    }
}

/// Input elements per reduction task, about (whole outer blocks).
const REDUCE_TASK: usize = 1 << 14;

/// Rows reduced side by side by [`reduce_rows`].
const ROW_GROUP: usize = 8;

/// The sums of the rows of `len` elements of `x` into `out`, as [`ReducePlan::reduce_rows_f32`] sums
/// them for `ReduceOp::Sum`.
#[inline(always)]
pub(crate) fn sum_rows_f32(x: &[f32], len: usize, out: &mut [f32]) {
    reduce_rows(ReduceOp::Sum, x, len, out);
}

/// Reduces each row of `len` elements of `x` into one element of `out`, `ROW_GROUP` rows at a time
/// with one accumulator each, so the rows' dependency chains overlap; each row still accumulates
/// its elements in increasing order (the interpreter's order).
#[inline(always)]
fn reduce_rows<T: Accumulate>(op: ReduceOp, x: &[T], len: usize, out: &mut [T]) {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => rows_with(x, len, out, T::init(op), |a, v| T::combine(ReduceOp::Sum, a, v)),
        ReduceOp::Max => rows_with(x, len, out, T::init(op), |a, v| T::combine(ReduceOp::Max, a, v)),
    }
}

#[inline(always)]
fn rows_with<T: Copy>(x: &[T], len: usize, out: &mut [T], init: T, f: impl Fn(T, T) -> T) {
    for (xs, os) in x.chunks(len * ROW_GROUP).zip(out.chunks_mut(ROW_GROUP)) {
        if os.len() == ROW_GROUP && xs.len() == len * ROW_GROUP {
            let rows: [&[T]; ROW_GROUP] = std::array::from_fn(|r| &xs[r * len..(r + 1) * len]);
            let mut acc = [init; ROW_GROUP];
            for j in 0..len {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a = f(*a, row[j]);
                }
            }
            os.copy_from_slice(&acc);
        } else {
            for (row, o) in xs.chunks(len).zip(os.iter_mut()) {
                *o = row.iter().fold(init, |a, &v| f(a, v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_shapes_are_classified() {
        let plan = ReducePlan::new(ReduceOp::Sum, &[2, 3, 4], &[1, 2]);
        assert_eq!(
            plan.shape,
            ReduceShape::Blocked {
                outer: 2,
                red: 12,
                inner: 1
            }
        );
        // Axes 0 and 2 with a size-1 axis between them are still one run.
        let plan = ReducePlan::new(ReduceOp::Sum, &[2, 1, 4, 3], &[0, 2]);
        assert_eq!(
            plan.shape,
            ReduceShape::Blocked {
                outer: 1,
                red: 8,
                inner: 3
            }
        );
        assert!(matches!(
            ReducePlan::new(ReduceOp::Max, &[2, 3, 4], &[0, 2]).shape,
            ReduceShape::General { .. }
        ));
    }

    /// The interpreter's fold of `values` (in order) for `op`.
    fn fold(op: ReduceOp, values: impl Iterator<Item = f32>, count: usize) -> f32 {
        let mut acc = if op == ReduceOp::Max { f32::NEG_INFINITY } else { 0.0 };
        for v in values {
            acc = match op {
                ReduceOp::Max if acc.is_nan() || v.is_nan() => f32::NAN,
                ReduceOp::Max => acc.max(v),
                ReduceOp::Sum | ReduceOp::Mean => acc + v,
            };
        }
        if op == ReduceOp::Mean {
            acc /= count as f32;
        }
        acc
    }

    #[test]
    fn row_and_column_reductions_accumulate_in_flat_order() {
        for (rows, len) in [(1, 5), (7, 300), (8, 1), (9, 33), (17, 64), (40, 1000), (150, 300)] {
            // Magnitudes far apart, so a different summation order would change the bits.
            let mut x: Vec<f32> = (0..rows * len)
                .map(|i| ((i * 7919) % 1009) as f32 * 1e-3 + [1e4, -3.0, 0.5][i % 3])
                .collect();
            x[(rows / 2) * len + len / 2] = f32::NAN;
            for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
                for threads in [1, 2] {
                    let mut out = vec![0.0f32; rows];
                    ReducePlan::new(op, &[rows, len], &[1]).run(&x, &mut out, threads);
                    for (r, &got) in out.iter().enumerate() {
                        let expected = fold(op, x[r * len..(r + 1) * len].iter().copied(), len);
                        assert_eq!(got.to_bits(), expected.to_bits(), "{op:?} [{rows}, {len}] row {r}");
                    }
                    let mut out = vec![0.0f32; len];
                    ReducePlan::new(op, &[rows, len], &[0]).run(&x, &mut out, threads);
                    for (c, &got) in out.iter().enumerate() {
                        let expected = fold(op, (0..rows).map(|r| x[r * len + c]), rows);
                        assert_eq!(got.to_bits(), expected.to_bits(), "{op:?} [{rows}, {len}] column {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn general_reduction_sums_the_right_elements() {
        // x[i, j, k] = 100 i + 10 j + k over [2, 3, 2]; sum over axes 0 and 2 gives, for each j,
        // the sum over i, k of that value.
        let dims = [2, 3, 2];
        let x: Vec<i32> = (0..12).map(|f| 100 * (f / 6) + 10 * ((f / 2) % 3) + f % 2).collect();
        let plan = ReducePlan::new(ReduceOp::Sum, &dims, &[0, 2]);
        let mut out = vec![0; 3];
        plan.run(&x, &mut out, 1);
        for j in 0..3i32 {
            let mut expected = 0;
            for i in 0..2i32 {
                for k in 0..2i32 {
                    expected += 100 * i + 10 * j + k;
                }
            }
            assert_eq!(out[j as usize], expected);
        }
    }
}
