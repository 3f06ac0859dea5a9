//! MIL → IR converters of the operations that move data without arithmetic: `reshape`, `transpose`,
//! `slice_by_index`, `slice_by_size`, `concat`, `split`, `pad`, `gather`.
//!
//! Semantics follow coremltools' op definitions: `reshape` shapes may hold one −1 (inferred) and 0
//! (copy the input extent, same rank only); `slice_by_index` takes begin/end with numpy-style negative
//! indices clamped to the extent, `begin_mask`/`end_mask` (use 0 / the extent), `squeeze_mask` (take
//! index `begin` and drop the axis), stride 1 only; `slice_by_size` takes begin and size (−1 = to the
//! end); `concat` needs `interleave` false; `split` takes `split_sizes`, or `num_splits` equal pieces
//! (when neither is given, one piece per declared result); `pad` pads the last N axes from a `[2N]`
//! list, constant mode only; `gather` is the row gather of a rank-2 table (axis 0, batch_dims 0).
//!
//! Invariants: every extent taken from the program is checked to be non-negative and at most
//! [`MAX_EXTENT`] before it reaches the IR, so no shape arithmetic can overflow.

use super::ast::Operation;
use super::error::MilError;
use super::ops::{axis, dims};
use super::to_graph::{element_count, graph_error, op_error, Converter};
use orion_core::ValueId;

/// Largest extent, padding or size accepted from a program.
pub(super) const MAX_EXTENT: i64 = i32::MAX as i64;

/// A non-negative extent from the program, at most [`MAX_EXTENT`].
fn extent(op: &Operation, value: i64, what: &str) -> Result<usize, MilError> {
    if !(0..=MAX_EXTENT).contains(&value) {
        return Err(op_error(op, &format!("{what} {value} is out of range")));
    }
    Ok(value as usize)
}

fn required_ints(cx: &Converter<'_>, op: &Operation, name: &str) -> Result<Vec<i64>, MilError> {
    cx.ints(op, name)?
        .ok_or_else(|| op_error(op, &format!("missing parameter '{name}'")))
}

/// Fails unless `list` has one entry per axis.
fn per_axis<T>(op: &Operation, name: &str, list: &[T], rank: usize) -> Result<(), MilError> {
    if list.len() != rank {
        return Err(op_error(
            op,
            &format!("'{name}' has {} entries, the input has rank {rank}", list.len()),
        ));
    }
    Ok(())
}

pub(super) fn reshape(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "shape"])?;
    let x = cx.tensor(op, "x")?;
    let spec = required_ints(cx, op, "shape")?;
    let from = dims(cx, x);
    let mut out = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if inferred.is_none() => {
                inferred = Some(i);
                out.push(1);
            }
            0 if spec.len() == from.len() => out.push(from[i]),
            s => out.push(extent(op, s, "shape extent")?),
        }
    }
    if let Some(i) = inferred {
        let known = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(0);
        let total = from.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(0);
        if known == 0 || total % known != 0 {
            return Err(op_error(
                op,
                &format!("cannot infer the -1 extent of {spec:?} for {from:?}"),
            ));
        }
        out[i] = total / known;
    }
    element_count(&out).map_err(|m| op_error(op, &format!("shape {spec:?}: {m}")))?;
    cx.graph.reshape(x, &out).map_err(graph_error(op))
}

pub(super) fn transpose(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "perm"])?;
    let x = cx.tensor(op, "x")?;
    let rank = cx.graph.rank(x);
    let perm = required_ints(cx, op, "perm")?
        .into_iter()
        .map(|p| axis(op, p, rank))
        .collect::<Result<Vec<_>, _>>()?;
    cx.graph.transpose(x, &perm).map_err(graph_error(op))
}

/// A numpy-style index (negative counts from the end) clamped to `0..=extent`.
fn clamp_index(index: i64, extent: usize) -> usize {
    let e = extent as i64;
    let i = if index < 0 { index + e } else { index };
    i.clamp(0, e) as usize
}

pub(super) fn slice_by_index(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    let accepted = ["x", "begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask"];
    cx.check_params(op, &accepted)?;
    let x = cx.tensor(op, "x")?;
    let shape = dims(cx, x);
    let rank = shape.len();
    let begin = required_ints(cx, op, "begin")?;
    let end = required_ints(cx, op, "end")?;
    per_axis(op, "begin", &begin, rank)?;
    per_axis(op, "end", &end, rank)?;
    if let Some(stride) = cx.ints(op, "stride")? {
        per_axis(op, "stride", &stride, rank)?;
        if stride.iter().any(|&s| s != 1) {
            return Err(op_error(op, &format!("stride = {stride:?} is not supported (only 1)")));
        }
    }
    let mask = |name: &str| -> Result<Vec<bool>, MilError> {
        let m = cx.bools(op, name)?.unwrap_or_else(|| vec![false; rank]);
        per_axis(op, name, &m, rank)?;
        Ok(m)
    };
    let (begin_mask, end_mask, squeeze_mask) = (mask("begin_mask")?, mask("end_mask")?, mask("squeeze_mask")?);
    let mut lo = Vec::with_capacity(rank);
    let mut hi = Vec::with_capacity(rank);
    let mut kept = Vec::with_capacity(rank);
    for i in 0..rank {
        let b = if begin_mask[i] {
            0
        } else {
            clamp_index(begin[i], shape[i])
        };
        let e = if squeeze_mask[i] {
            b + 1
        } else if end_mask[i] {
            shape[i]
        } else {
            clamp_index(end[i], shape[i])
        };
        if e < b || e > shape[i] {
            return Err(op_error(
                op,
                &format!("axis {i}: range {b}..{e} is empty or outside 0..{}", shape[i]),
            ));
        }
        lo.push(b);
        hi.push(e);
        if !squeeze_mask[i] {
            kept.push(e - b);
        }
    }
    let sliced = cx.graph.slice(x, &lo, &hi).map_err(graph_error(op))?;
    if kept.len() == rank {
        return Ok(sliced);
    }
    cx.graph.reshape(sliced, &kept).map_err(graph_error(op))
}

pub(super) fn slice_by_size(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "begin", "size"])?;
    let x = cx.tensor(op, "x")?;
    let shape = dims(cx, x);
    let begin = required_ints(cx, op, "begin")?;
    let size = required_ints(cx, op, "size")?;
    per_axis(op, "begin", &begin, shape.len())?;
    per_axis(op, "size", &size, shape.len())?;
    let mut lo = Vec::with_capacity(shape.len());
    let mut hi = Vec::with_capacity(shape.len());
    for i in 0..shape.len() {
        let b = if begin[i] < 0 {
            clamp_index(begin[i], shape[i])
        } else {
            extent(op, begin[i], "begin")?
        };
        let e = if size[i] == -1 {
            shape[i]
        } else {
            b + extent(op, size[i], "size")?
        };
        if b > shape[i] || e > shape[i] {
            return Err(op_error(
                op,
                &format!("axis {i}: range {b}..{e} is outside 0..{}", shape[i]),
            ));
        }
        lo.push(b);
        hi.push(e);
    }
    cx.graph.slice(x, &lo, &hi).map_err(graph_error(op))
}

pub(super) fn concat(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["values", "axis", "interleave"])?;
    let values = cx.tuple(op, "values")?;
    if cx.flag(op, "interleave")?.unwrap_or(false) {
        return Err(op_error(op, "interleave = true is not supported"));
    }
    let first = *values
        .first()
        .ok_or_else(|| op_error(op, "'values' must name at least one variable"))?;
    let a = cx
        .int(op, "axis")?
        .ok_or_else(|| op_error(op, "missing parameter 'axis'"))?;
    let a = axis(op, a, cx.graph.rank(first))?;
    cx.graph.concat(&values, a as isize).map_err(graph_error(op))
}

pub(super) fn split(cx: &mut Converter<'_>, op: &Operation) -> Result<Vec<ValueId>, MilError> {
    cx.check_params(op, &["x", "axis", "num_splits", "split_sizes"])?;
    let x = cx.tensor(op, "x")?;
    let shape = dims(cx, x);
    let a = cx
        .int(op, "axis")?
        .ok_or_else(|| op_error(op, "missing parameter 'axis'"))?;
    let a = axis(op, a, shape.len())?;
    let sizes = match cx.ints(op, "split_sizes")? {
        Some(sizes) => sizes
            .into_iter()
            .map(|s| extent(op, s, "split size"))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let pieces = match cx.int(op, "num_splits")? {
                Some(n) => extent(op, n, "num_splits")?,
                None => op.results.len(),
            };
            if pieces == 0 || pieces > shape[a].max(1) || !shape[a].is_multiple_of(pieces) {
                return Err(op_error(
                    op,
                    &format!(
                        "axis {a} of extent {} does not split into {pieces} equal pieces",
                        shape[a]
                    ),
                ));
            }
            vec![shape[a] / pieces; pieces]
        }
    };
    cx.graph.split(x, a as isize, &sizes).map_err(graph_error(op))
}

pub(super) fn pad(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "pad", "mode", "constant_val"])?;
    let x = cx.tensor(op, "x")?;
    let rank = cx.graph.rank(x);
    let widths = required_ints(cx, op, "pad")?;
    if widths.len() % 2 != 0 || widths.len() > 2 * rank {
        return Err(op_error(
            op,
            &format!("'pad' needs 2 entries per padded axis (at most {rank} axes), got {widths:?}"),
        ));
    }
    let mode = cx.text(op, "mode")?.unwrap_or_else(|| "constant".to_string());
    if mode != "constant" {
        return Err(op_error(
            op,
            &format!("mode = '{mode}' is not supported (only constant)"),
        ));
    }
    let value = cx.float(op, "constant_val")?.unwrap_or(0.0);
    let first = rank - widths.len() / 2;
    let mut before = vec![0; rank];
    let mut after = vec![0; rank];
    for (k, pair) in widths.chunks_exact(2).enumerate() {
        before[first + k] = extent(op, pair[0], "padding")?;
        after[first + k] = extent(op, pair[1], "padding")?;
    }
    cx.graph.pad(x, &before, &after, value).map_err(graph_error(op))
}

pub(super) fn gather(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "indices", "axis", "batch_dims", "validate_indices"])?;
    let x = cx.tensor(op, "x")?;
    let indices = cx.tensor(op, "indices")?;
    let a = axis(op, cx.int(op, "axis")?.unwrap_or(0), cx.graph.rank(x))?;
    if a != 0 {
        return Err(op_error(op, &format!("axis = {a} is not supported (only 0)")));
    }
    let batch_dims = cx.int(op, "batch_dims")?.unwrap_or(0);
    if batch_dims != 0 {
        return Err(op_error(
            op,
            &format!("batch_dims = {batch_dims} is not supported (only 0)"),
        ));
    }
    cx.flag(op, "validate_indices")?;
    cx.graph.gather(x, indices).map_err(graph_error(op))
}
