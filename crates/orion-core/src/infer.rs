//! Shape and dtype inference: the static rule of every op.
//!
//! `infer_types` is total over `Op` (no catch-all arm). It returns the types of the op's results
//! or a message saying which rule the operands break; `Graph::add_node` adds the op name and the
//! operands' types to make the final error.

use crate::op::{BinaryOp, Op, ReduceOp};
use crate::types::{DType, Shape, TensorType};

type Inferred = Result<Vec<TensorType>, String>;

/// Result types of `op` applied to operands of the given types.
pub fn infer_types(op: &Op, operands: &[&TensorType]) -> Inferred {
    if let Some(n) = op.arity() {
        if operands.len() != n {
            return Err(format!("expects {n} operand(s), got {}", operands.len()));
        }
    }
    let one = |ty: TensorType| Ok(vec![ty]);
    match op {
        Op::Input { ty, .. } => one(ty.clone()),
        Op::Const { value } => one(value.ty()),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => one(matmul_type(operands[0], operands[1], *transpose_a, *transpose_b)?),
        Op::Conv1x1 => one(conv1x1_type(operands[0], operands[1])?),
        Op::Unary(_) => {
            require_float(operands[0], "operand")?;
            one(operands[0].clone())
        }
        Op::Binary(b) => {
            let (x, y) = (operands[0], operands[1]);
            require_same_dtype(x, y)?;
            match b {
                BinaryOp::Pow | BinaryOp::Div => require_float(x, "operands")?,
                _ => require_not_bool(x)?,
            }
            one(TensorType::new(x.dtype, broadcast_shapes(&[&x.shape, &y.shape])?))
        }
        Op::Compare(_) => {
            let (x, y) = (operands[0], operands[1]);
            require_same_dtype(x, y)?;
            require_not_bool(x)?;
            one(TensorType::new(DType::Bool, broadcast_shapes(&[&x.shape, &y.shape])?))
        }
        Op::Softmax { axis } => {
            require_float(operands[0], "operand")?;
            require_axis(*axis, operands[0].shape.rank())?;
            one(operands[0].clone())
        }
        Op::Reduce { op, axes, keep_dims } => one(reduce_type(operands[0], *op, axes, *keep_dims)?),
        Op::Reshape { shape } => {
            let x = operands[0];
            let target = Shape::new(shape.clone());
            let (from, to) = (x.shape.checked_numel(), target.checked_numel());
            if from.is_none() || from != to {
                return Err(format!(
                    "cannot reshape {} to {target}: element counts differ or overflow",
                    x.shape
                ));
            }
            one(TensorType::new(x.dtype, target))
        }
        Op::Transpose { perm } => {
            let x = operands[0];
            require_permutation(perm, x.shape.rank())?;
            let dims = perm.iter().map(|&p| x.shape.0[p]).collect::<Vec<_>>();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Slice { begin, end } => one(slice_type(operands[0], begin, end)?),
        Op::Concat { axis } => one(concat_type(operands, *axis)?),
        Op::Split { axis, sizes } => split_types(operands[0], *axis, sizes),
        Op::Pad { before, after, .. } => {
            let x = operands[0];
            require_not_bool(x)?;
            let rank = x.shape.rank();
            if before.len() != rank || after.len() != rank {
                return Err(format!(
                    "pad widths need {rank} entries each, got {} and {}",
                    before.len(),
                    after.len()
                ));
            }
            let dims = (0..rank)
                .map(|i| x.shape.0[i] + before[i] + after[i])
                .collect::<Vec<_>>();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Gather => {
            let (table, indices) = (operands[0], operands[1]);
            if table.shape.rank() != 2 {
                return Err(format!("table must be rank 2 [rows, width], got {}", table.shape));
            }
            require_dtype(indices, DType::I32, "indices")?;
            let mut dims = indices.shape.0.clone();
            dims.push(table.shape.0[1]);
            one(TensorType::new(table.dtype, dims))
        }
        Op::ScatterAddRows { rows } => {
            let (indices, updates) = (operands[0], operands[1]);
            require_dtype(indices, DType::I32, "indices")?;
            require_float(updates, "updates")?;
            let idx = indices.shape.dims();
            let upd = updates.shape.dims();
            if upd.len() != idx.len() + 1 || upd[..idx.len()] != *idx {
                return Err(format!(
                    "updates must have shape indices + [width], got {} for indices {}",
                    updates.shape, indices.shape
                ));
            }
            one(TensorType::new(updates.dtype, vec![*rows, upd[idx.len()]]))
        }
        Op::Broadcast { shape } => {
            let x = operands[0];
            let target = Shape::new(shape.clone());
            if broadcast_shapes(&[&x.shape, &target])? != target {
                return Err(format!("{} does not broadcast to {target}", x.shape));
            }
            one(TensorType::new(x.dtype, target))
        }
        Op::Cast { to } => one(TensorType::new(*to, operands[0].shape.clone())),
        Op::Select => {
            let (cond, a, b) = (operands[0], operands[1], operands[2]);
            require_dtype(cond, DType::Bool, "condition")?;
            require_same_dtype(a, b)?;
            one(TensorType::new(
                a.dtype,
                broadcast_shapes(&[&cond.shape, &a.shape, &b.shape])?,
            ))
        }
        Op::Identity => one(operands[0].clone()),
    }
}

/// Numpy broadcasting of several shapes (aligned at the last axis).
pub fn broadcast_shapes(shapes: &[&Shape]) -> Result<Shape, String> {
    let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
    let mut dims = vec![1usize; rank];
    for s in shapes {
        let offset = rank - s.rank();
        for (i, &d) in s.dims().iter().enumerate() {
            let slot = &mut dims[offset + i];
            if *slot == 1 {
                *slot = d;
            } else if d != 1 && d != *slot {
                let all = shapes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" and ");
                return Err(format!("shapes {all} do not broadcast"));
            }
        }
    }
    Ok(Shape(dims))
}

fn matmul_type(a: &TensorType, b: &TensorType, ta: bool, tb: bool) -> Result<TensorType, String> {
    require_same_dtype(a, b)?;
    require_float(a, "operands")?;
    let (ra, rb) = (a.shape.rank(), b.shape.rank());
    if ra < 2 || rb < 2 {
        return Err(format!("operands must have rank >= 2, got {} and {}", a.shape, b.shape));
    }
    let (am, ak) = last_two(&a.shape, ta);
    let (bk, bn) = last_two(&b.shape, tb);
    if ak != bk {
        return Err(format!("contraction extents differ ({ak} vs {bk})"));
    }
    let batch_a = Shape::from(&a.shape.0[..ra - 2]);
    let batch_b = Shape::from(&b.shape.0[..rb - 2]);
    let mut dims = broadcast_shapes(&[&batch_a, &batch_b])?.0;
    dims.extend([am, bn]);
    Ok(TensorType::new(a.dtype, dims))
}

/// (rows, cols) of the last two axes, swapped when `transposed`.
pub fn last_two(shape: &Shape, transposed: bool) -> (usize, usize) {
    let r = shape.rank();
    let (m, n) = (shape.0[r - 2], shape.0[r - 1]);
    if transposed {
        (n, m)
    } else {
        (m, n)
    }
}

fn conv1x1_type(x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
    require_same_dtype(x, w)?;
    require_float(x, "operands")?;
    let xd = x.shape.dims();
    let wd = w.shape.dims();
    if xd.len() != 4 || xd[0] != 1 || xd[2] != 1 {
        return Err(format!("input must be [1, C, 1, S], got {}", x.shape));
    }
    if wd.len() != 4 || wd[2] != 1 || wd[3] != 1 || wd[1] != xd[1] {
        return Err(format!("weight must be [Cout, {}, 1, 1], got {}", xd[1], w.shape));
    }
    Ok(TensorType::new(x.dtype, vec![1, wd[0], 1, xd[3]]))
}

fn reduce_type(x: &TensorType, op: ReduceOp, axes: &[usize], keep_dims: bool) -> Result<TensorType, String> {
    match op {
        ReduceOp::Mean => require_float(x, "operand")?,
        ReduceOp::Sum | ReduceOp::Max => require_not_bool(x)?,
    }
    let rank = x.shape.rank();
    if axes.is_empty() {
        return Err("reduction needs at least one axis".to_string());
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("axes {axes:?} must be sorted and unique"));
    }
    for &a in axes {
        require_axis(a, rank)?;
    }
    let mut dims = Vec::with_capacity(rank);
    for (i, &d) in x.shape.dims().iter().enumerate() {
        if axes.contains(&i) {
            if keep_dims {
                dims.push(1);
            }
        } else {
            dims.push(d);
        }
    }
    Ok(TensorType::new(x.dtype, dims))
}

fn slice_type(x: &TensorType, begin: &[usize], end: &[usize]) -> Result<TensorType, String> {
    let rank = x.shape.rank();
    if begin.len() != rank || end.len() != rank {
        return Err(format!(
            "begin and end need {rank} entries each, got {} and {}",
            begin.len(),
            end.len()
        ));
    }
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        if begin[i] > end[i] || end[i] > x.shape.0[i] {
            return Err(format!(
                "axis {i}: range {}..{} is outside 0..{}",
                begin[i], end[i], x.shape.0[i]
            ));
        }
        dims.push(end[i] - begin[i]);
    }
    Ok(TensorType::new(x.dtype, dims))
}

fn concat_type(operands: &[&TensorType], axis: usize) -> Result<TensorType, String> {
    let first = operands.first().ok_or("concat needs at least one operand")?;
    let rank = first.shape.rank();
    require_axis(axis, rank)?;
    let mut dims = first.shape.0.clone();
    dims[axis] = 0;
    for t in operands {
        require_same_dtype(first, t)?;
        if t.shape.rank() != rank || (0..rank).any(|i| i != axis && t.shape.0[i] != first.shape.0[i]) {
            return Err(format!("{} and {} differ outside axis {axis}", first.shape, t.shape));
        }
        dims[axis] = dims[axis]
            .checked_add(t.shape.0[axis])
            .ok_or_else(|| "concatenated extent overflows".to_string())?;
    }
    Ok(TensorType::new(first.dtype, dims))
}

fn split_types(x: &TensorType, axis: usize, sizes: &[usize]) -> Inferred {
    require_axis(axis, x.shape.rank())?;
    if sizes.is_empty() {
        return Err("split needs at least one piece".to_string());
    }
    let total = sizes
        .iter()
        .try_fold(0usize, |acc, &s| acc.checked_add(s))
        .ok_or_else(|| "split sizes overflow".to_string())?;
    if total != x.shape.0[axis] {
        return Err(format!(
            "sizes {sizes:?} sum to {total}, axis {axis} has {}",
            x.shape.0[axis]
        ));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut dims = x.shape.0.clone();
            dims[axis] = s;
            TensorType::new(x.dtype, dims)
        })
        .collect())
}

fn require_axis(axis: usize, rank: usize) -> Result<(), String> {
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(())
}

fn require_permutation(perm: &[usize], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(format!("perm {perm:?} must have {rank} entries"));
    }
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
        }
        seen[p] = true;
    }
    Ok(())
}

fn require_same_dtype(a: &TensorType, b: &TensorType) -> Result<(), String> {
    if a.dtype != b.dtype {
        return Err(format!("element types differ ({} vs {})", a.dtype, b.dtype));
    }
    Ok(())
}

fn require_float(t: &TensorType, what: &str) -> Result<(), String> {
    if !t.dtype.is_float() {
        return Err(format!("{what} must be f32 or f16, got {}", t.dtype));
    }
    Ok(())
}

fn require_not_bool(t: &TensorType) -> Result<(), String> {
    if t.dtype == DType::Bool {
        return Err("operand must be numeric, got bool".to_string());
    }
    Ok(())
}

fn require_dtype(t: &TensorType, dtype: DType, what: &str) -> Result<(), String> {
    if t.dtype != dtype {
        return Err(format!("{what} must be {dtype}, got {}", t.dtype));
    }
    Ok(())
}
