//! Typed convenience constructors on `Graph`: one method per op, each inferring shapes.
//!
//! Axis arguments are `isize` and may be negative (counted from the last axis); they are
//! normalised here so that the IR only ever stores non-negative axes.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
use crate::tensor::Tensor;
use crate::types::{DType, TensorType};
use std::sync::Arc;

impl Graph {
    fn single(&mut self, op: Op, inputs: Vec<ValueId>) -> Result<ValueId> {
        Ok(self.add_node(op, inputs)?[0])
    }

    /// Normalises a possibly negative axis of value `v`.
    pub fn axis(&self, v: ValueId, axis: isize) -> Result<usize> {
        let rank = self.try_ty(v)?.shape.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(self.error(format!("axis {axis} out of range for {v} of rank {rank}")));
        }
        Ok(a as usize)
    }

    pub fn rank(&self, v: ValueId) -> usize {
        self.ty(v).shape.rank()
    }

    pub fn dims(&self, v: ValueId) -> Vec<usize> {
        self.ty(v).shape.0.clone()
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.ty(v).dtype
    }

    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> Result<ValueId> {
        self.single(Op::Input { name: name.into(), ty }, vec![])
    }

    pub fn constant(&mut self, value: Tensor) -> Result<ValueId> {
        self.single(Op::Const { value: Arc::new(value) }, vec![])
    }

    /// A rank-0 constant of the given float dtype.
    pub fn scalar(&mut self, value: f32, dtype: DType) -> Result<ValueId> {
        let ty = TensorType::new(dtype, []);
        self.constant(Tensor::full(&ty, value))
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId, transpose_a: bool, transpose_b: bool) -> Result<ValueId> {
        self.single(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            vec![a, b],
        )
    }

    pub fn conv1x1(&mut self, x: ValueId, weight: ValueId) -> Result<ValueId> {
        self.single(Op::Conv1x1, vec![x, weight])
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId> {
        self.single(Op::Unary(op), vec![x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.single(Op::Binary(op), vec![a, b])
    }

    pub fn compare(&mut self, op: CompareOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.single(Op::Compare(op), vec![a, b])
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `x * c` for a scalar constant `c` of `x`'s dtype.
    pub fn mul_scalar(&mut self, x: ValueId, c: f32) -> Result<ValueId> {
        let s = self.scalar(c, self.try_ty(x)?.dtype)?;
        self.mul(x, s)
    }

    /// `x + c` for a scalar constant `c` of `x`'s dtype.
    pub fn add_scalar(&mut self, x: ValueId, c: f32) -> Result<ValueId> {
        let s = self.scalar(c, self.try_ty(x)?.dtype)?;
        self.add(x, s)
    }

    pub fn softmax(&mut self, x: ValueId, axis: isize) -> Result<ValueId> {
        let axis = self.axis(x, axis)?;
        self.single(Op::Softmax { axis }, vec![x])
    }

    /// Reduction over `axes` (any order, negative allowed).
    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: &[isize], keep_dims: bool) -> Result<ValueId> {
        let mut norm = axes.iter().map(|&a| self.axis(x, a)).collect::<Result<Vec<_>>>()?;
        norm.sort_unstable();
        norm.dedup();
        self.single(
            Op::Reduce {
                op,
                axes: norm,
                keep_dims,
            },
            vec![x],
        )
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        self.single(Op::Reshape { shape: shape.to_vec() }, vec![x])
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Result<ValueId> {
        self.single(Op::Transpose { perm: perm.to_vec() }, vec![x])
    }

    pub fn slice(&mut self, x: ValueId, begin: &[usize], end: &[usize]) -> Result<ValueId> {
        self.single(
            Op::Slice {
                begin: begin.to_vec(),
                end: end.to_vec(),
            },
            vec![x],
        )
    }

    /// Slice of `start..end` along one axis, everything on the others.
    pub fn slice_axis(&mut self, x: ValueId, axis: isize, start: usize, end: usize) -> Result<ValueId> {
        let axis = self.axis(x, axis)?;
        let mut begin = vec![0; self.rank(x)];
        let mut stop = self.dims(x);
        begin[axis] = start;
        stop[axis] = end;
        self.slice(x, &begin, &stop)
    }

    pub fn concat(&mut self, values: &[ValueId], axis: isize) -> Result<ValueId> {
        let first = *values
            .first()
            .ok_or_else(|| self.error("concat of nothing".to_string()))?;
        let axis = self.axis(first, axis)?;
        self.single(Op::Concat { axis }, values.to_vec())
    }

    pub fn split(&mut self, x: ValueId, axis: isize, sizes: &[usize]) -> Result<Vec<ValueId>> {
        let axis = self.axis(x, axis)?;
        self.add_node(
            Op::Split {
                axis,
                sizes: sizes.to_vec(),
            },
            vec![x],
        )
    }

    pub fn pad(&mut self, x: ValueId, before: &[usize], after: &[usize], value: f32) -> Result<ValueId> {
        self.single(
            Op::Pad {
                before: before.to_vec(),
                after: after.to_vec(),
                value,
            },
            vec![x],
        )
    }

    pub fn gather(&mut self, table: ValueId, indices: ValueId) -> Result<ValueId> {
        self.single(Op::Gather, vec![table, indices])
    }

    pub fn scatter_add_rows(&mut self, indices: ValueId, updates: ValueId, rows: usize) -> Result<ValueId> {
        self.single(Op::ScatterAddRows { rows }, vec![indices, updates])
    }

    pub fn broadcast(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        self.single(Op::Broadcast { shape: shape.to_vec() }, vec![x])
    }

    pub fn cast(&mut self, x: ValueId, to: DType) -> Result<ValueId> {
        self.single(Op::Cast { to }, vec![x])
    }

    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.single(Op::Select, vec![cond, a, b])
    }

    pub fn identity(&mut self, x: ValueId) -> Result<ValueId> {
        self.single(Op::Identity, vec![x])
    }

    /// Adds a copy of `node`'s op applied to new operands (used by passes that rebuild graphs).
    pub fn add_like(&mut self, op: &Op, inputs: Vec<ValueId>) -> Result<Vec<ValueId>> {
        self.add_node(op.clone(), inputs)
    }
}

/// Error helper for composites: a shape requirement that the primitives cannot express.
pub(crate) fn composite_error(name: &str, message: String) -> CoreError {
    CoreError::Shape {
        op: name.to_string(),
        message,
        operands: "see message".to_string(),
    }
}
