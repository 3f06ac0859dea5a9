//! Data-movement kernels of the interpreter: reshape, transpose, slice, concat, split, pad, gather
//! and broadcast, for every dtype.
//!
//! Each kernel computes a *source map*: for every flat position of the result, the flat position of
//! the element it copies from a source buffer; `take` then copies. Concat and pad build their
//! source buffer by joining operands (and, for pad, one fill element at the end).
//!
//! Invariants: operands have passed shape inference, so every map entry is inside its buffer; the
//! one runtime check is gather's row indices, which are data (an error, never a panic).

use super::index::{broadcast_map, ravel, unravel};
use super::kernels::checked_row;
use super::{exec_error, make_tensor};
use crate::error::Result;
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;

/// The elements of `data` at the positions of `map`, in order.
fn take(data: &TensorData, map: &[usize]) -> TensorData {
    match data {
        TensorData::Float(v) => TensorData::Float(map.iter().map(|&i| v[i]).collect()),
        TensorData::I32(v) => TensorData::I32(map.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(map.iter().map(|&i| v[i]).collect()),
    }
}

/// The buffers of `parts` one after another; all parts must have the same storage kind.
fn join(parts: &[&TensorData], op: &str) -> Result<TensorData> {
    let mismatch = || exec_error(op, "operands differ in element type".to_string());
    match parts.first() {
        Some(TensorData::Float(_)) | None => {
            let mut all = Vec::new();
            for p in parts {
                all.extend_from_slice(match p {
                    TensorData::Float(v) => v,
                    TensorData::I32(_) | TensorData::Bool(_) => return Err(mismatch()),
                });
            }
            Ok(TensorData::Float(all))
        }
        Some(TensorData::I32(_)) => {
            let mut all = Vec::new();
            for p in parts {
                all.extend_from_slice(match p {
                    TensorData::I32(v) => v,
                    TensorData::Float(_) | TensorData::Bool(_) => return Err(mismatch()),
                });
            }
            Ok(TensorData::I32(all))
        }
        Some(TensorData::Bool(_)) => {
            let mut all = Vec::new();
            for p in parts {
                all.extend_from_slice(match p {
                    TensorData::Bool(v) => v,
                    TensorData::Float(_) | TensorData::I32(_) => return Err(mismatch()),
                });
            }
            Ok(TensorData::Bool(all))
        }
    }
}

/// Same elements, new shape.
pub(super) fn reshape(x: &Tensor, out: &TensorType) -> Result<Tensor> {
    make_tensor(out, x.data().clone())
}

/// Output axis i is input axis `perm[i]`.
pub(super) fn transpose(x: &Tensor, perm: &[usize], out: &TensorType) -> Result<Tensor> {
    let in_dims = x.shape().dims();
    let map: Vec<usize> = (0..out.shape.numel())
        .map(|flat| {
            let out_index = unravel(flat, out.shape.dims());
            let mut in_index = vec![0; in_dims.len()];
            for (i, &p) in perm.iter().enumerate() {
                in_index[p] = out_index[i];
            }
            ravel(&in_index, in_dims)
        })
        .collect();
    make_tensor(out, take(x.data(), &map))
}

/// Source map of the block of extents `out_dims` starting at `begin` in a tensor of `in_dims`.
fn block_map(in_dims: &[usize], begin: &[usize], out_dims: &[usize]) -> Vec<usize> {
    let count: usize = out_dims.iter().product();
    (0..count)
        .map(|flat| {
            let index: Vec<usize> = unravel(flat, out_dims).iter().zip(begin).map(|(i, b)| i + b).collect();
            ravel(&index, in_dims)
        })
        .collect()
}

/// The block `begin..begin+out_extent` on every axis.
pub(super) fn slice(x: &Tensor, begin: &[usize], out: &TensorType) -> Result<Tensor> {
    let map = block_map(x.shape().dims(), begin, out.shape.dims());
    make_tensor(out, take(x.data(), &map))
}

/// Pieces of the inferred extents along `axis`, one result per piece.
pub(super) fn split(x: &Tensor, axis: usize, out: &[TensorType]) -> Result<Vec<Tensor>> {
    let in_dims = x.shape().dims();
    let mut begin = vec![0; in_dims.len()];
    let mut pieces = Vec::with_capacity(out.len());
    for ty in out {
        let map = block_map(in_dims, &begin, ty.shape.dims());
        pieces.push(make_tensor(ty, take(x.data(), &map))?);
        begin[axis] += ty.shape.dims()[axis];
    }
    Ok(pieces)
}

/// The operands one after another along `axis`.
pub(super) fn concat(parts: &[&Tensor], axis: usize, out: &TensorType) -> Result<Tensor> {
    let buffer = join(&parts.iter().map(|t| t.data()).collect::<Vec<_>>(), "concat")?;
    // For each operand: its first position along `axis` in the output and its offset in `buffer`.
    let mut starts = Vec::with_capacity(parts.len());
    let (mut along, mut offset) = (0, 0);
    for t in parts {
        starts.push((along, offset));
        along += t.shape().dims()[axis];
        offset += t.numel();
    }
    let mut map = Vec::with_capacity(out.shape.numel());
    for flat in 0..out.shape.numel() {
        let mut index = unravel(flat, out.shape.dims());
        let at = index[axis];
        let owner = (0..parts.len())
            .find(|&p| starts[p].0 <= at && at < starts[p].0 + parts[p].shape().dims()[axis])
            .ok_or_else(|| exec_error("concat", format!("no operand covers position {at} of axis {axis}")))?;
        index[axis] -= starts[owner].0;
        map.push(starts[owner].1 + ravel(&index, parts[owner].shape().dims()));
    }
    make_tensor(out, take(&buffer, &map))
}

/// Constant padding: `before[i]` elements of `value` ahead of axis i (the rest after it).
pub(super) fn pad(x: &Tensor, before: &[usize], value: f32, out: &TensorType) -> Result<Tensor> {
    let fill = match x.data() {
        TensorData::Float(_) => TensorData::Float(vec![value]),
        TensorData::I32(_) => TensorData::I32(vec![value as i32]),
        TensorData::Bool(_) => TensorData::Bool(vec![value != 0.0]),
    };
    let buffer = join(&[x.data(), &fill], "pad")?;
    let fill_at = x.numel();
    let in_dims = x.shape().dims();
    let map: Vec<usize> = (0..out.shape.numel())
        .map(|flat| {
            let out_index = unravel(flat, out.shape.dims());
            let inside = out_index
                .iter()
                .zip(before)
                .zip(in_dims)
                .all(|((&i, &b), &d)| i >= b && i - b < d);
            if inside {
                let in_index: Vec<usize> = out_index.iter().zip(before).map(|(i, b)| i - b).collect();
                ravel(&in_index, in_dims)
            } else {
                fill_at
            }
        })
        .collect();
    make_tensor(out, take(&buffer, &map))
}

/// Row gather: table `[V, D]`, i32 indices `[..]` -> `[.., D]`; an index outside 0..V is an error.
pub(super) fn gather(table: &Tensor, indices: &Tensor, out: &TensorType) -> Result<Tensor> {
    let idx = indices
        .as_i32()
        .ok_or_else(|| exec_error("gather", format!("indices must be i32, got {}", indices.ty())))?;
    let (rows, width) = (table.shape().dims()[0], table.shape().dims()[1]);
    let mut map = Vec::with_capacity(idx.len() * width);
    for (position, &row) in idx.iter().enumerate() {
        let r = checked_row(row, rows, position, indices, "gather")?;
        map.extend((0..width).map(|d| r * width + d));
    }
    make_tensor(out, take(table.data(), &map))
}

/// numpy `broadcast_to`.
pub(super) fn broadcast(x: &Tensor, out: &TensorType) -> Result<Tensor> {
    let map = broadcast_map(x.shape().dims(), out.shape.dims());
    make_tensor(out, take(x.data(), &map))
}
