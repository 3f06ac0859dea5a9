//! Common-subexpression elimination: merges nodes that compute the same thing.
//!
//! What it does: two nodes merge when their ops are equal (same variant, same attributes; float
//! attributes compared bit for bit) and their operands are the same values — for commutative binary
//! ops (`BinaryOp::is_commutative`) in either order. Constants merge when bitwise identical (dtype,
//! shape and the bits of every element, so `0.0` and `-0.0` stay apart). The first node is kept and
//! later uses are redirected to it; a multi-output node merges all its values at once. Since operands
//! are remapped before lookup, chains of duplicates merge in one sweep.
//! What it does NOT do: inputs never merge (two inputs with equal types are different values); it
//! does not reason about algebra beyond commutativity (`a - b` and `-(b - a)` stay apart); it leaves
//! no dead nodes behind because a merged node is simply not copied.

use crate::error::Result;
use crate::graph::{Graph, Node, ValueId};
use crate::op::Op;
use crate::passes::rebuild::Rebuilder;
use crate::passes::PassContext;
use crate::tensor::{Tensor, TensorData};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Constant elements that go into a constant's hash (equality still compares all of them).
const HASHED_CONST_ELEMENTS: usize = 256;

/// Returns `g` with duplicate computations merged.
pub fn cse(g: &Graph, _ctx: &PassContext) -> Result<Graph> {
    let mut out = Rebuilder::new("cse", g);
    // fingerprint -> (node index in the new graph, canonical operands)
    let mut seen: HashMap<u64, Vec<(usize, Vec<ValueId>)>> = HashMap::new();
    for node in g.nodes() {
        if matches!(node.op, Op::Input { .. }) {
            out.copy(node)?;
            continue;
        }
        let inputs = canonical_operands(&node.op, out.mapped_inputs(node)?);
        let key = fingerprint(&node.op, &inputs);
        let bucket = seen.entry(key).or_default();
        let earlier = bucket.iter().find_map(|(index, operands)| {
            let candidate = &out.graph().nodes()[*index];
            (*operands == inputs && same_op(&candidate.op, &node.op)).then(|| candidate.outputs.clone())
        });
        match earlier {
            Some(values) => bind_all(&mut out, node, &values)?,
            None => {
                out.copy(node)?;
                bucket.push((out.graph().nodes().len() - 1, inputs));
            }
        }
    }
    out.finish()
}

fn bind_all(out: &mut Rebuilder<'_>, node: &Node, values: &[ValueId]) -> Result<()> {
    for (&old, &new) in node.outputs.iter().zip(values) {
        out.bind(old, new)?;
    }
    Ok(())
}

/// Operands in a canonical order: sorted for commutative binary ops, as given otherwise.
fn canonical_operands(op: &Op, mut inputs: Vec<ValueId>) -> Vec<ValueId> {
    if let Op::Binary(kind) = op {
        if kind.is_commutative() {
            inputs.sort();
        }
    }
    inputs
}

/// True when two ops compute the same function of their operands.
pub fn same_op(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::Input { .. }, _) => false,
        (Op::Const { value: x }, Op::Const { value: y }) => bitwise_identical(x, y),
        (Op::Const { .. }, _) => false,
        (
            Op::Pad { before, after, value },
            Op::Pad {
                before: other_before,
                after: other_after,
                value: other_value,
            },
        ) => before == other_before && after == other_after && value.to_bits() == other_value.to_bits(),
        (Op::Pad { .. }, _) => false,
        (
            Op::MatMul { .. }
            | Op::Conv1x1
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Gather
            | Op::ScatterAddRows { .. }
            | Op::Broadcast { .. }
            | Op::Cast { .. }
            | Op::Select
            | Op::Identity,
            _,
        ) => a == b,
    }
}

/// Same dtype, same shape and the same bits in every element.
pub fn bitwise_identical(x: &Tensor, y: &Tensor) -> bool {
    if x.dtype() != y.dtype() || x.shape() != y.shape() {
        return false;
    }
    match (x.data(), y.data()) {
        (TensorData::Float(a), TensorData::Float(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (TensorData::I32(a), TensorData::I32(b)) => a == b,
        (TensorData::Bool(a), TensorData::Bool(b)) => a == b,
        (TensorData::Float(_) | TensorData::I32(_) | TensorData::Bool(_), _) => false,
    }
}

/// A hash consistent with [`same_op`] plus operand equality.
fn fingerprint(op: &Op, inputs: &[ValueId]) -> u64 {
    let mut h = DefaultHasher::new();
    op.name().hash(&mut h);
    inputs.hash(&mut h);
    match op {
        Op::Input { name, .. } => name.hash(&mut h),
        Op::Const { value } => {
            value.dtype().hash(&mut h);
            value.shape().hash(&mut h);
            hash_elements(value, &mut h);
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => (transpose_a, transpose_b).hash(&mut h),
        Op::Softmax { axis } | Op::Concat { axis } => axis.hash(&mut h),
        Op::Reduce { axes, keep_dims, .. } => (axes, keep_dims).hash(&mut h),
        Op::Reshape { shape } | Op::Broadcast { shape } => shape.hash(&mut h),
        Op::Transpose { perm } => perm.hash(&mut h),
        Op::Slice { begin, end } => (begin, end).hash(&mut h),
        Op::Split { axis, sizes } => (axis, sizes).hash(&mut h),
        Op::Pad { before, after, value } => (before, after, value.to_bits()).hash(&mut h),
        Op::ScatterAddRows { rows } => rows.hash(&mut h),
        Op::Cast { to } => to.hash(&mut h),
        // The name already distinguishes these (and the unary/binary/compare/reduce kinds).
        Op::Conv1x1 | Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Gather | Op::Select | Op::Identity => {}
    }
    h.finish()
}

fn hash_elements(value: &Tensor, h: &mut DefaultHasher) {
    match value.data() {
        TensorData::Float(v) => v.iter().take(HASHED_CONST_ELEMENTS).for_each(|x| x.to_bits().hash(h)),
        TensorData::I32(v) => v.iter().take(HASHED_CONST_ELEMENTS).for_each(|x| x.hash(h)),
        TensorData::Bool(v) => v.iter().take(HASHED_CONST_ELEMENTS).for_each(|x| x.hash(h)),
    }
}
