//! Kernels of the interpreter that accumulate: matmul, conv1x1, softmax, reductions and
//! scatter_add_rows.
//!
//! Invariants: operands have passed shape inference and each result has the inferred type `out`.
//! Every accumulation is a plain f32 sum in index order (i32 sums wrap), rounded once when the
//! result is stored, so `Precision::F16Rounding` rounds only the op's operands and result.

use super::elementwise::max_nan;
use super::index::{broadcast_map, ravel, unravel};
use super::{exec_error, float_data, make_tensor};
use crate::error::Result;
use crate::infer::last_two;
use crate::op::ReduceOp;
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;

/// Batched matrix product with optional transposes of the last two axes and broadcast batch axes.
pub(super) fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool, out: &TensorType) -> Result<Tensor> {
    let (av, bv) = (float_data(a, "matmul")?, float_data(b, "matmul")?);
    let (ad, bd, od) = (a.shape().dims(), b.shape().dims(), out.shape.dims());
    let (m, k) = last_two(a.shape(), ta);
    let (_, n) = last_two(b.shape(), tb);
    let batch_out = &od[..od.len() - 2];
    let a_batches = broadcast_map(&ad[..ad.len() - 2], batch_out);
    let b_batches = broadcast_map(&bd[..bd.len() - 2], batch_out);
    // Element (row, col) of the logical (possibly transposed) matrix of batch `batch`.
    let a_at = |batch: usize, row: usize, col: usize| {
        let base = batch * m * k;
        if ta {
            av[base + col * m + row]
        } else {
            av[base + row * k + col]
        }
    };
    let b_at = |batch: usize, row: usize, col: usize| {
        let base = batch * k * n;
        if tb {
            bv[base + col * k + row]
        } else {
            bv[base + row * n + col]
        }
    };
    let mut result = Vec::with_capacity(out.shape.numel());
    for (&ba, &bb) in a_batches.iter().zip(&b_batches) {
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0f32;
                for p in 0..k {
                    sum += a_at(ba, i, p) * b_at(bb, p, j);
                }
                result.push(sum);
            }
        }
    }
    make_tensor(out, TensorData::Float(result))
}

/// 1x1 convolution: x `[1, Cin, 1, S]`, w `[Cout, Cin, 1, 1]`, y[o, s] = sum_i w[o, i] * x[i, s].
pub(super) fn conv1x1(x: &Tensor, w: &Tensor, out: &TensorType) -> Result<Tensor> {
    let (xv, wv) = (float_data(x, "conv1x1")?, float_data(w, "conv1x1")?);
    let (cin, s) = (x.shape().dims()[1], x.shape().dims()[3]);
    let cout = w.shape().dims()[0];
    let mut result = Vec::with_capacity(cout * s);
    for o in 0..cout {
        for j in 0..s {
            let mut sum = 0.0f32;
            for i in 0..cin {
                sum += wv[o * cin + i] * xv[i * s + j];
            }
            result.push(sum);
        }
    }
    make_tensor(out, TensorData::Float(result))
}

/// Softmax along `axis`: exp(x - max) / sum exp(x - max).
pub(super) fn softmax(x: &Tensor, axis: usize, out: &TensorType) -> Result<Tensor> {
    let xv = float_data(x, "softmax")?;
    let dims = x.shape().dims();
    let len = dims[axis];
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut result = vec![0.0f32; xv.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |p: usize| (o * len + p) * inner + i;
            let max = (0..len).map(|p| xv[at(p)]).fold(f32::NEG_INFINITY, max_nan);
            let mut sum = 0.0f32;
            for p in 0..len {
                let e = (xv[at(p)] - max).exp();
                result[at(p)] = e;
                sum += e;
            }
            for p in 0..len {
                result[at(p)] /= sum;
            }
        }
    }
    make_tensor(out, TensorData::Float(result))
}

/// Reduction over `axes` (sorted, unique); the result shape (with or without kept axes) is `out`.
pub(super) fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], out: &TensorType) -> Result<Tensor> {
    let dims = x.shape().dims();
    let kept: Vec<usize> = (0..dims.len())
        .map(|a| if axes.contains(&a) { 1 } else { dims[a] })
        .collect();
    // Flat output position of input element `flat` (same under keep_dims, whose extra axes are 1).
    let slot = |flat: usize| {
        let mut index = unravel(flat, dims);
        for &a in axes {
            index[a] = 0;
        }
        ravel(&index, &kept)
    };
    let slots = out.shape.numel();
    let data = match x.data() {
        TensorData::Float(v) => {
            let (init, combine): (f32, fn(f32, f32) -> f32) = match op {
                ReduceOp::Sum | ReduceOp::Mean => (0.0, |acc, e| acc + e),
                ReduceOp::Max => (f32::NEG_INFINITY, max_nan),
            };
            let mut acc = vec![init; slots];
            for (flat, &e) in v.iter().enumerate() {
                let s = slot(flat);
                acc[s] = combine(acc[s], e);
            }
            if op == ReduceOp::Mean {
                let count: usize = axes.iter().map(|&a| dims[a]).product();
                acc.iter_mut().for_each(|s| *s /= count as f32);
            }
            TensorData::Float(acc)
        }
        TensorData::I32(v) => {
            let (init, combine): (i32, fn(i32, i32) -> i32) = match op {
                ReduceOp::Sum => (0, i32::wrapping_add),
                ReduceOp::Max => (i32::MIN, |acc, e| acc.max(e)),
                ReduceOp::Mean => return Err(exec_error(op.name(), "is not defined on i32".to_string())),
            };
            let mut acc = vec![init; slots];
            for (flat, &e) in v.iter().enumerate() {
                let s = slot(flat);
                acc[s] = combine(acc[s], e);
            }
            TensorData::I32(acc)
        }
        TensorData::Bool(_) => return Err(exec_error(op.name(), "is not defined on bool".to_string())),
    };
    make_tensor(out, data)
}

/// Adjoint of gather: indices i32 `[..]`, updates `[.., D]` -> `[rows, D]`, summing repeated rows.
pub(super) fn scatter_add_rows(indices: &Tensor, updates: &Tensor, out: &TensorType) -> Result<Tensor> {
    let name = "scatter_add_rows";
    let idx = indices
        .as_i32()
        .ok_or_else(|| exec_error(name, format!("indices must be i32, got {}", indices.ty())))?;
    let upd = float_data(updates, name)?;
    let (rows, width) = (out.shape.dims()[0], out.shape.dims()[1]);
    let mut result = vec![0.0f32; rows * width];
    for (position, &row) in idx.iter().enumerate() {
        let r = checked_row(row, rows, position, indices, name)?;
        for d in 0..width {
            result[r * width + d] += upd[position * width + d];
        }
    }
    make_tensor(out, TensorData::Float(result))
}

/// `row` as a table row index, or an execution error naming its position among the indices.
pub(super) fn checked_row(row: i32, rows: usize, position: usize, indices: &Tensor, op: &str) -> Result<usize> {
    match usize::try_from(row) {
        Ok(r) if r < rows => Ok(r),
        _ => Err(exec_error(
            op,
            format!(
                "index {row} at position {:?} of the indices is outside 0..{rows}",
                unravel(position, indices.shape().dims())
            ),
        )),
    }
}
