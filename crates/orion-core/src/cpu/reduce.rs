//! Softmax and reductions of the CPU backend: row loops over a (outer, axis, inner) view of the
//! operand, parallel over independent outer blocks.
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
        let one = |(xs, ys): (&[f32], &mut [f32])| {
            if self.inner == 1 {
                softmax_row(xs, ys);
            } else {
                softmax_columns(xs, ys, self.inner);
            }
        };
        if threads > 1 && y.len() >= PAR_MIN_ELEMENTS && self.outer > 1 {
            x.par_chunks(block).zip(y.par_chunks_mut(block)).for_each(one);
        } else {
            x.chunks(block).zip(y.chunks_mut(block)).for_each(one);
        }
    }
}

fn softmax_row(x: &[f32], y: &mut [f32]) {
    let sum = vmath::exp_shifted_sum(x, vmath::max(x), y);
    for o in y.iter_mut() {
        *o /= sum;
    }
}

/// Softmax over the rows of a `[len, inner]` block, independently for each column.
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
                os[0] = xs.iter().fold(T::init(op), |acc, &v| T::combine(op, acc, v));
            } else {
                os.fill(T::init(op));
                for row in xs.chunks(inner) {
                    for (o, &v) in os.iter_mut().zip(row) {
                        *o = T::combine(op, *o, v);
                    }
                }
            }
        };
        if threads > 1 && x.len() >= PAR_MIN_ELEMENTS && outer > 1 {
            x.par_chunks(block).zip(out.par_chunks_mut(inner)).for_each(one);
        } else {
            x.chunks(block).zip(out.chunks_mut(inner)).for_each(one);
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
