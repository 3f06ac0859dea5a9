//! Vector-Jacobian products: for one node and the cotangents of its results, the cotangents of its
//! operands, appended to the graph as primitive ops.
//!
//! Invariants: every returned cotangent has exactly the type of its operand (the caller checks);
//! cotangents are computed in the operand's dtype (constants take that dtype too); `None` means no
//! gradient flows to that operand. Non-differentiable cases say so in their arm: comparisons (bool
//! result), indices of Gather and ScatterAddRows, the condition of Select, casts to or from a
//! non-float dtype, and the leaves Input and Const (which have no operands).
//!
//! Conventions at non-smooth points (documented choices, all valid subgradients):
//! - Relu: the derivative at 0 is 0 (`select(x > 0, dy, 0)`);
//! - Maximum / Minimum: on a tie the first operand gets the whole cotangent;
//! - reduce_max: the cotangent is split evenly among the elements equal to the maximum.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::op::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};

type Cotangents = Result<Vec<Option<ValueId>>>;

/// Operand cotangents of `node` given the cotangents of its results (`None` = zero). A node from a
/// graph built with `add_node`, so operand counts match the op's arity.
pub(crate) fn vjp(g: &mut Graph, node: &Node, out_cotangents: &[Option<ValueId>]) -> Result<Vec<Option<ValueId>>> {
    let n = node.inputs.len();
    if out_cotangents.iter().all(Option::is_none) {
        return Ok(vec![None; n]);
    }
    let x = |i: usize| node.inputs[i];
    let y = node.outputs[0];
    let dy = out_cotangents[0];
    match &node.op {
        // Leaves: no operands, nothing to propagate.
        Op::Input { .. } | Op::Const { .. } => Ok(Vec::new()),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul_vjp(g, x(0), x(1), *transpose_a, *transpose_b, need(dy)?),
        Op::Conv1x1 => conv1x1_vjp(g, x(0), x(1), need(dy)?),
        Op::Unary(op) => Ok(vec![Some(unary_vjp(g, *op, x(0), y, need(dy)?)?)]),
        Op::Binary(op) => binary_vjp(g, *op, x(0), x(1), y, need(dy)?),
        // Not differentiable: the result is bool.
        Op::Compare(_) => Ok(vec![None, None]),
        Op::Softmax { axis } => {
            let dy = need(dy)?;
            let dy_y = g.mul(dy, y)?;
            let s = g.reduce(ReduceOp::Sum, dy_y, &[*axis as isize], true)?;
            let centred = g.sub(dy, s)?;
            Ok(vec![Some(g.mul(y, centred)?)])
        }
        Op::Reduce { op, axes, keep_dims } => Ok(vec![Some(reduce_vjp(g, *op, axes, *keep_dims, x(0), y, need(dy)?)?)]),
        Op::Reshape { .. } => {
            let dims = g.dims(x(0));
            Ok(vec![Some(g.reshape(need(dy)?, &dims)?)])
        }
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            Ok(vec![Some(g.transpose(need(dy)?, &inverse)?)])
        }
        Op::Slice { begin, end } => {
            let after: Vec<usize> = g.dims(x(0)).iter().zip(end).map(|(d, e)| d - e).collect();
            Ok(vec![Some(g.pad(need(dy)?, begin, &after, 0.0)?)])
        }
        Op::Pad { before, .. } => {
            let end: Vec<usize> = g.dims(x(0)).iter().zip(before).map(|(d, b)| d + b).collect();
            Ok(vec![Some(g.slice(need(dy)?, before, &end)?)])
        }
        Op::Concat { axis } => concat_vjp(g, &node.inputs, *axis, need(dy)?),
        Op::Split { axis, .. } => split_vjp(g, &node.outputs, *axis, out_cotangents),
        // Gather w.r.t. indices: not differentiable (integer operand).
        Op::Gather => {
            let rows = g.dims(x(0))[0];
            Ok(vec![Some(g.scatter_add_rows(x(1), need(dy)?, rows)?), None])
        }
        // ScatterAddRows w.r.t. indices: not differentiable (integer operand).
        Op::ScatterAddRows { .. } => Ok(vec![None, Some(g.gather(need(dy)?, x(0))?)]),
        Op::Broadcast { .. } => {
            let dims = g.dims(x(0));
            Ok(vec![Some(unbroadcast(g, need(dy)?, &dims)?)])
        }
        Op::Cast { to } => {
            let from = g.dtype(x(0));
            if from.is_float() && to.is_float() {
                Ok(vec![Some(g.cast(need(dy)?, from)?)])
            } else {
                // Not differentiable: a cast to or from i32/bool is piecewise constant.
                Ok(vec![None])
            }
        }
        Op::Select => select_vjp(g, x(0), x(1), x(2), need(dy)?),
        Op::Identity => Ok(vec![Some(need(dy)?)]),
    }
}

/// The cotangent of a single-result op, which the caller guarantees is present.
fn need(dy: Option<ValueId>) -> Result<ValueId> {
    dy.ok_or_else(|| CoreError::Autodiff {
        message: "internal: VJP called without an output cotangent".to_string(),
    })
}

/// Sums `dy` over the axes along which an operand of shape `target` was broadcast, then reshapes
/// it to `target`.
fn unbroadcast(g: &mut Graph, dy: ValueId, target: &[usize]) -> Result<ValueId> {
    let have = g.dims(dy);
    if have == target {
        return Ok(dy);
    }
    let lead = have
        .len()
        .checked_sub(target.len())
        .ok_or_else(|| CoreError::Autodiff {
            message: format!("internal: cannot unbroadcast {have:?} to {target:?}"),
        })?;
    let axes: Vec<isize> = (0..have.len())
        .filter(|&i| i < lead || (target[i - lead] == 1 && have[i] != 1))
        .map(|i| i as isize)
        .collect();
    let summed = if axes.is_empty() {
        dy
    } else {
        g.reduce(ReduceOp::Sum, dy, &axes, true)?
    };
    if g.dims(summed) == target {
        Ok(summed)
    } else {
        g.reshape(summed, target)
    }
}

fn unary_vjp(g: &mut Graph, op: UnaryOp, x: ValueId, y: ValueId, dy: ValueId) -> Result<ValueId> {
    let dt = g.dtype(x);
    match op {
        UnaryOp::Neg => g.unary(UnaryOp::Neg, dy),
        // d exp(x) = exp(x) = y
        UnaryOp::Exp => g.mul(dy, y),
        UnaryOp::Log => g.div(dy, x),
        // d √x = 1 / (2 √x) = 0.5 / y
        UnaryOp::Sqrt => {
            let half = g.mul_scalar(dy, 0.5)?;
            g.div(half, y)
        }
        // d x^(-1/2) = -0.5 x^(-3/2) = -0.5 y³
        UnaryOp::Rsqrt => {
            let y2 = g.mul(y, y)?;
            let y3 = g.mul(y2, y)?;
            let scaled = g.mul_scalar(dy, -0.5)?;
            g.mul(scaled, y3)
        }
        // d (1/x) = -1/x² = -y²
        UnaryOp::Reciprocal => {
            let y2 = g.mul(y, y)?;
            let neg = g.unary(UnaryOp::Neg, dy)?;
            g.mul(neg, y2)
        }
        // d tanh = 1 - y²
        UnaryOp::Tanh => {
            let y2 = g.mul(y, y)?;
            let one = g.scalar(1.0, dt)?;
            let d = g.sub(one, y2)?;
            g.mul(dy, d)
        }
        // d σ = y (1 - y)
        UnaryOp::Sigmoid => {
            let one = g.scalar(1.0, dt)?;
            let one_minus = g.sub(one, y)?;
            let d = g.mul(y, one_minus)?;
            g.mul(dy, d)
        }
        // derivative 0 at x = 0
        UnaryOp::Relu => {
            let zero = g.scalar(0.0, dt)?;
            let positive = g.compare(CompareOp::Greater, x, zero)?;
            g.select(positive, dy, zero)
        }
        // d erf = 2/√π · exp(-x²)
        UnaryOp::Erf => {
            let x2 = g.mul(x, x)?;
            let neg = g.unary(UnaryOp::Neg, x2)?;
            let e = g.unary(UnaryOp::Exp, neg)?;
            let scaled = g.mul_scalar(dy, std::f32::consts::FRAC_2_SQRT_PI)?;
            g.mul(scaled, e)
        }
        // d sin = cos x
        UnaryOp::Sin => {
            let c = g.unary(UnaryOp::Cos, x)?;
            g.mul(dy, c)
        }
        // d cos = -sin x
        UnaryOp::Cos => {
            let s = g.unary(UnaryOp::Sin, x)?;
            let neg = g.unary(UnaryOp::Neg, dy)?;
            g.mul(neg, s)
        }
    }
}

/// Cotangents of `z = op(a, b)` before unbroadcasting, then reduced to each operand's shape.
fn binary_vjp(g: &mut Graph, op: BinaryOp, a: ValueId, b: ValueId, z: ValueId, dz: ValueId) -> Cotangents {
    let (da, db) = match op {
        BinaryOp::Add => (dz, dz),
        BinaryOp::Sub => (dz, g.unary(UnaryOp::Neg, dz)?),
        BinaryOp::Mul => (g.mul(dz, b)?, g.mul(dz, a)?),
        // d(a/b)/db = -a/b² = -z/b
        BinaryOp::Div => {
            let da = g.div(dz, b)?;
            let dz_z = g.mul(dz, z)?;
            let q = g.div(dz_z, b)?;
            (da, g.unary(UnaryOp::Neg, q)?)
        }
        // ties: the first operand takes the cotangent
        BinaryOp::Maximum => routed(g, CompareOp::GreaterEqual, a, b, dz)?,
        BinaryOp::Minimum => routed(g, CompareOp::LessEqual, a, b, dz)?,
        // d a^b / da = b a^(b-1); d a^b / db = a^b ln a (NaN for a < 0, as the function itself)
        BinaryOp::Pow => {
            let one = g.scalar(1.0, g.dtype(a))?;
            let b_minus_one = g.sub(b, one)?;
            let p = g.binary(BinaryOp::Pow, a, b_minus_one)?;
            let slope = g.mul(b, p)?;
            let da = g.mul(dz, slope)?;
            let ln_a = g.unary(UnaryOp::Log, a)?;
            let z_ln_a = g.mul(z, ln_a)?;
            (da, g.mul(dz, z_ln_a)?)
        }
    };
    let (a_dims, b_dims) = (g.dims(a), g.dims(b));
    Ok(vec![
        Some(unbroadcast(g, da, &a_dims)?),
        Some(unbroadcast(g, db, &b_dims)?),
    ])
}

/// `(select(a cmp b, dz, 0), select(a cmp b, 0, dz))` for Maximum / Minimum.
fn routed(g: &mut Graph, cmp: CompareOp, a: ValueId, b: ValueId, dz: ValueId) -> Result<(ValueId, ValueId)> {
    let first = g.compare(cmp, a, b)?;
    let zero = g.scalar(0.0, g.dtype(dz))?;
    Ok((g.select(first, dz, zero)?, g.select(first, zero, dz)?))
}

/// `C = op(A)·op(B)`: `dA' = dC·B'ᵀ`, `dB' = A'ᵀ·dC`, folded into matmul transpose flags, then
/// summed over broadcast batch axes.
fn matmul_vjp(g: &mut Graph, a: ValueId, b: ValueId, ta: bool, tb: bool, dc: ValueId) -> Cotangents {
    let da = if ta {
        // dA = (dC·B'ᵀ)ᵀ = B'·dCᵀ
        g.matmul(b, dc, tb, true)?
    } else {
        g.matmul(dc, b, false, !tb)?
    };
    let db = if tb {
        // dB = (A'ᵀ·dC)ᵀ = dCᵀ·A'
        g.matmul(dc, a, true, ta)?
    } else {
        g.matmul(a, dc, !ta, false)?
    };
    let (a_dims, b_dims) = (g.dims(a), g.dims(b));
    Ok(vec![
        Some(unbroadcast(g, da, &a_dims)?),
        Some(unbroadcast(g, db, &b_dims)?),
    ])
}

/// `y[o,s] = Σ_i w[o,i]·x[i,s]`: `dx = Wᵀ·dy` (a conv with the transposed weight) and
/// `dW[o,i] = Σ_s dy[o,s]·x[i,s]`, i.e. `dy·xᵀ` of shape `[Cout, Cin, 1, 1]`.
fn conv1x1_vjp(g: &mut Graph, x: ValueId, w: ValueId, dy: ValueId) -> Cotangents {
    let (cin, s) = (g.dims(x)[1], g.dims(x)[3]);
    let cout = g.dims(w)[0];
    let w_t = g.transpose(w, &[1, 0, 2, 3])?;
    let dx = g.conv1x1(dy, w_t)?;
    let dy2 = g.reshape(dy, &[cout, s])?;
    let x2 = g.reshape(x, &[cin, s])?;
    let dw2 = g.matmul(dy2, x2, false, true)?;
    let dw = g.reshape(dw2, &[cout, cin, 1, 1])?;
    Ok(vec![Some(dx), Some(dw)])
}

/// Sum: broadcast back; mean: broadcast back divided by the count; max: routed to the elements
/// equal to the maximum, split evenly among ties.
fn reduce_vjp(
    g: &mut Graph,
    op: ReduceOp,
    axes: &[usize],
    keep_dims: bool,
    x: ValueId,
    y: ValueId,
    dy: ValueId,
) -> Result<ValueId> {
    let x_dims = g.dims(x);
    let kept: Vec<usize> = x_dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let dy_k = if keep_dims { dy } else { g.reshape(dy, &kept)? };
    match op {
        ReduceOp::Sum => g.broadcast(dy_k, &x_dims),
        ReduceOp::Mean => {
            let count: usize = axes.iter().map(|&a| x_dims[a]).product();
            let scaled = g.mul_scalar(dy_k, 1.0 / count.max(1) as f32)?;
            g.broadcast(scaled, &x_dims)
        }
        ReduceOp::Max => {
            let y_k = if keep_dims { y } else { g.reshape(y, &kept)? };
            let is_max = g.compare(CompareOp::Equal, x, y_k)?;
            let mask = g.cast(is_max, g.dtype(x))?;
            let axes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            let ties = g.reduce(ReduceOp::Sum, mask, &axes, true)?;
            let share = g.div(dy_k, ties)?;
            g.mul(mask, share)
        }
    }
}

/// Each operand gets its slice of `dy` along `axis`.
fn concat_vjp(g: &mut Graph, operands: &[ValueId], axis: usize, dy: ValueId) -> Cotangents {
    let mut start = 0;
    let mut out = Vec::with_capacity(operands.len());
    for &v in operands {
        let extent = g.dims(v)[axis];
        out.push(Some(g.slice_axis(dy, axis as isize, start, start + extent)?));
        start += extent;
    }
    Ok(out)
}

/// The piece cotangents concatenated back, a zero tensor standing for each missing one.
fn split_vjp(g: &mut Graph, pieces: &[ValueId], axis: usize, out_cotangents: &[Option<ValueId>]) -> Cotangents {
    let mut parts = Vec::with_capacity(pieces.len());
    for (&piece, c) in pieces.iter().zip(out_cotangents) {
        parts.push(match c {
            Some(c) => *c,
            None => super::zeros_like(g, piece)?,
        });
    }
    Ok(vec![Some(g.concat(&parts, axis as isize)?)])
}

/// The condition is not differentiable; each branch gets `dy` where it was chosen, reduced to its
/// own shape.
fn select_vjp(g: &mut Graph, cond: ValueId, a: ValueId, b: ValueId, dy: ValueId) -> Cotangents {
    let zero = g.scalar(0.0, g.dtype(dy))?;
    let da = g.select(cond, dy, zero)?;
    let db = g.select(cond, zero, dy)?;
    let (a_dims, b_dims) = (g.dims(a), g.dims(b));
    Ok(vec![
        None,
        Some(unbroadcast(g, da, &a_dims)?),
        Some(unbroadcast(g, db, &b_dims)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DType, TensorType};

    #[test]
    fn unbroadcast_sums_leading_and_unit_axes() {
        let mut g = Graph::new("t");
        let dy = g.input("dy", TensorType::new(DType::F32, [4, 2, 3])).unwrap();
        let r = unbroadcast(&mut g, dy, &[2, 1]).unwrap();
        assert_eq!(g.dims(r), vec![2, 1]);
        let reduce = g.nodes().iter().find(|n| matches!(n.op, Op::Reduce { .. })).unwrap();
        assert_eq!(
            reduce.op,
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![0, 2],
                keep_dims: true
            }
        );
    }

    #[test]
    fn missing_cotangents_give_no_operand_cotangents() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::new(DType::F32, [2])).unwrap();
        let y = g.unary(UnaryOp::Exp, x).unwrap();
        let node = g.producer(y).clone();
        let before = g.nodes().len();
        assert_eq!(vjp(&mut g, &node, &[None]).unwrap(), vec![None]);
        assert_eq!(g.nodes().len(), before);
    }
}
