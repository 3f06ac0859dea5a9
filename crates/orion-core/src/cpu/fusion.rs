//! Elementwise fusion for the CPU plan: groups trees of float elementwise nodes into one
//! [`FusedProgram`](super::elementwise::FusedProgram) each.
//!
//! Rule: nodes are visited from last to first; a fusible node not yet taken becomes the root of a
//! group, and an operand's producer joins the group when it is fusible, every use of its value is
//! by a group member (so a value read several times inside the group, like GELU's input, still
//! joins; a graph output never does), and its shape equals the root's output shape (so the group
//! is one loop over the root's elements). Every other operand is a leaf, read with numpy
//! broadcasting (scalars, per-channel vectors, keep-dims reductions). Fusible: float unary and
//! binary ops and f32 → f16 casts. A group whose value only a last-axis f32 softmax or an f32
//! reduction over the trailing axes reads becomes that step's prologue (evaluated inside it, a
//! block of rows at a time, never materialised). A leaf that is RoPE's `rotate_half` of some `x`
//! (`concat` of `split`/`slice` halves, one negated) is read from `x` with its halves swapped
//! ([`HalfRotation`]): the copies are never made (Stories110M training: about 5 ms per layer,
//! forward and backward, 403–426 → 431–442 tok/s in interleaved runs).
//!
//! Invariants: a node belongs to at most one group; absorbed nodes define values nobody outside
//! the group reads, so they are never materialised; members are evaluated in graph order; a group
//! runs at its root's position, after every leaf is defined (a leaf computed from a member's value
//! would be a use outside the group, so leaves never depend on members).

use super::elementwise::{HalfRotation, Instr};
use super::reduce::{ReducePlan, ReduceShape};
use crate::graph::{Graph, Node, ValueId};
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::types::DType;

/// Largest number of instructions in one group (bounds the register file of a block).
const MAX_INSTRS: usize = 64;

/// One fused group, rooted at the node that defines its result.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FusedGroup {
    /// Leaf operands, in register order (register `i` holds leaf `i`).
    pub leaves: Vec<ValueId>,
    /// Per leaf: read half-rotated along its last axis (see [`absorb_half_rotations`]).
    pub rotations: Vec<Option<HalfRotation>>,
    /// Instruction `j` writes register `leaves.len() + j`; the last one defines the root's value.
    pub instrs: Vec<Instr>,
}

/// The grouping of a graph: per node, the group it roots (if any) and whether it was absorbed. A
/// softmax or reduction node's group is its prologue: the expression it softmaxes or reduces.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fusion {
    pub roots: Vec<Option<FusedGroup>>,
    pub absorbed: Vec<bool>,
}

/// What a fusible node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FusedOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// An f32 -> f16 cast.
    RoundHalf,
}

/// The fused form of `node`, or `None` when a fused program cannot evaluate it.
pub(crate) fn fusible(g: &Graph, node: &Node) -> Option<FusedOp> {
    match &node.op {
        Op::Unary(u) => Some(FusedOp::Unary(*u)), // shape inference admits only float operands
        Op::Binary(b) => g.ty(node.outputs[0]).dtype.is_float().then_some(FusedOp::Binary(*b)),
        Op::Cast { to } => {
            (*to == DType::F16 && g.ty(node.inputs[0]).dtype == DType::F32).then_some(FusedOp::RoundHalf)
        }
        Op::Input { .. }
        | Op::Const { .. }
        | Op::MatMul { .. }
        | Op::Conv1x1
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Pad { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Broadcast { .. }
        | Op::Select
        | Op::Identity => None,
    }
}

/// Groups the fusible nodes of `g`.
pub(crate) fn plan_fusion(g: &Graph) -> Fusion {
    let nodes = g.nodes();
    // Graph outputs count as uses, so a value that is also an output is never absorbed.
    let uses = g.use_counts();
    let mut fusion = Fusion {
        roots: vec![None; nodes.len()],
        absorbed: vec![false; nodes.len()],
    };
    for index in (0..nodes.len()).rev() {
        if fusion.absorbed[index] || fusible(g, &nodes[index]).is_none() {
            continue;
        }
        let members = grow_group(g, &uses, index);
        for &m in &members {
            if m != index {
                fusion.absorbed[m] = true;
            }
        }
        fusion.roots[index] = Some(emit(g, &members));
    }
    attach_row_prologues(g, &uses, &mut fusion);
    absorb_half_rotations(g, &uses, &mut fusion);
    fusion
}

/// Reads a leaf `concat(±x[.., h..2h], ±x[.., 0..h])` along the last axis (RoPE's `rotate_half`, or
/// its backward's transpose), whose pieces come from `split` or `slice` of one `x` (negated by a
/// group of one `neg`), straight from `x` with a [`HalfRotation`]: the split or slices, the negation
/// and the concat are absorbed, never materialised. Only when every value on the way is read by
/// this pattern alone (and the concat by this group alone).
fn absorb_half_rotations(g: &Graph, uses: &[usize], fusion: &mut Fusion) {
    for root in 0..g.nodes().len() {
        let Some(group) = fusion.roots[root].as_ref() else {
            continue;
        };
        let found: Vec<(usize, ValueId, HalfRotation, Vec<usize>)> = group
            .leaves
            .iter()
            .enumerate()
            .filter_map(|(i, &leaf)| {
                let reads = group
                    .instrs
                    .iter()
                    .flat_map(|x| x.sources())
                    .flatten()
                    .filter(|&r| r == i)
                    .count();
                (uses[leaf.index()] == reads)
                    .then(|| half_rotation(g, uses, fusion, leaf))
                    .flatten()
                    .map(|(x, rotation, nodes)| (i, x, rotation, nodes))
            })
            .collect();
        for (i, x, rotation, nodes) in found {
            if nodes.iter().any(|&n| fusion.absorbed[n]) {
                continue;
            }
            for &n in &nodes {
                fusion.absorbed[n] = true;
                fusion.roots[n] = None;
            }
            if let Some(group) = fusion.roots[root].as_mut() {
                group.leaves[i] = x;
                group.rotations[i] = Some(rotation);
            }
        }
    }
}

/// When `leaf` is a half rotation of some `x` (see [`absorb_half_rotations`]): `x`, the rotation,
/// and the nodes it absorbs.
fn half_rotation(
    g: &Graph,
    uses: &[usize],
    fusion: &Fusion,
    leaf: ValueId,
) -> Option<(ValueId, HalfRotation, Vec<usize>)> {
    let concat = g.values()[leaf.index()].node.index();
    let node = &g.nodes()[concat];
    let dims = g.ty(leaf).shape.dims();
    let last = dims.len().checked_sub(1)?;
    let (Op::Concat { axis }, [first, second]) = (&node.op, node.inputs.as_slice()) else {
        return None;
    };
    let width = dims[last];
    if *axis != last || !width.is_multiple_of(2) || width == 0 || g.ty(leaf).dtype != DType::F32 {
        return None;
    }
    let half = width / 2;
    let mut nodes = vec![concat];
    let mut piece = |v: ValueId, start: usize| -> Option<(ValueId, bool)> {
        if uses[v.index()] != 1 {
            return None;
        }
        let producer = g.values()[v.index()].node.index();
        let (view, negated) = match &fusion.roots[producer] {
            Some(neg) => match (neg.instrs.as_slice(), neg.leaves.as_slice()) {
                (
                    [Instr::Unary {
                        op: UnaryOp::Neg,
                        src: 0,
                        round: false,
                    }],
                    [inner],
                ) if neg.rotations[0].is_none() => {
                    nodes.push(producer);
                    (*inner, true)
                }
                _ => return None,
            },
            None => (v, false),
        };
        if negated && uses[view.index()] != 1 {
            return None;
        }
        let view_node = g.values()[view.index()].node.index();
        let op = &g.nodes()[view_node].op;
        let source = g.nodes()[view_node].inputs[0];
        let source_dims = g.ty(source).shape.dims();
        let from = match op {
            Op::Split { axis, sizes } if *axis == last && sizes.as_slice() == [half, half] => {
                let position = g.nodes()[view_node].outputs.iter().position(|&o| o == view)?;
                position * half
            }
            Op::Slice { begin, end }
                if begin[..last].iter().all(|&b| b == 0)
                    && end[..last] == source_dims[..last]
                    && end[last] == begin[last] + half =>
            {
                begin[last]
            }
            _ => return None,
        };
        (from == start && source_dims == dims).then_some(())?;
        nodes.push(view_node);
        Some((source, negated))
    };
    let (x, negate_first) = piece(*first, half)?;
    let (x2, negate_second) = piece(*second, 0)?;
    if x != x2 {
        return None;
    }
    // A split is absorbed only when both of its pieces are this pattern's.
    nodes.sort_unstable();
    nodes.dedup();
    let split_ok = nodes.iter().all(|&n| match &g.nodes()[n].op {
        Op::Split { .. } => g.nodes()[n].outputs.iter().all(|&o| uses[o.index()] == 1),
        _ => true,
    });
    split_ok.then_some((
        x,
        HalfRotation {
            half,
            negate_first,
            negate_second,
        },
        nodes,
    ))
}

/// Moves a group whose value only a row-wise consumer reads into that consumer (its prologue): a
/// last-axis f32 softmax, or an f32 reduction over the trailing axes. The consumer's step then
/// evaluates the group a block of rows at a time and softmaxes or reduces each block while it is in
/// cache (`Kernel::FusedSoftmax`, `Kernel::FusedReduce`), so the group's value is never written out
/// and read back: attention's scale-and-mask pass and its softmax, the softmax backward's `dP ⊙ P`
/// and its row sums, RMSNorm's squares and their mean.
fn attach_row_prologues(g: &Graph, uses: &[usize], fusion: &mut Fusion) {
    for (index, node) in g.nodes().iter().enumerate() {
        let Some(input) = node.inputs.first().copied() else {
            continue;
        };
        let in_dims = g.ty(input).shape.dims();
        let row_wise = match &node.op {
            Op::Softmax { axis } => axis + 1 == in_dims.len(),
            Op::Reduce { op, axes, .. } => matches!(
                ReducePlan::new(*op, in_dims, axes).shape,
                ReduceShape::Blocked { inner: 1, red, .. } if red > 1
            ),
            _ => false,
        };
        let f32_only = g.ty(node.outputs[0]).dtype == DType::F32 && g.ty(input).dtype == DType::F32;
        if !row_wise || !f32_only || uses[input.index()] != 1 {
            continue;
        }
        let producer = g.values()[input.index()].node.index();
        if let Some(group) = fusion.roots[producer].take() {
            fusion.roots[index] = Some(group);
            fusion.absorbed[producer] = true;
        }
    }
}

/// The node indices of the group rooted at `root`, in graph (evaluation) order.
///
/// A producer joins when it is fusible, defines a value of the root's shape, and every use of that
/// value is by a member; joining can complete another producer's uses, so this runs to a fixed
/// point.
fn grow_group(g: &Graph, uses: &[usize], root: usize) -> Vec<usize> {
    let nodes = g.nodes();
    let shape = &g.ty(nodes[root].outputs[0]).shape;
    let mut members = vec![root];
    loop {
        let joining = members.iter().flat_map(|&m| nodes[m].inputs.iter()).find_map(|&v| {
            let producer = g.values()[v.index()].node.index();
            let uses_inside: usize = members
                .iter()
                .map(|&m| nodes[m].inputs.iter().filter(|&&u| u == v).count())
                .sum();
            let joins = !members.contains(&producer)
                && uses_inside == uses[v.index()]
                && &g.ty(v).shape == shape
                && fusible(g, &nodes[producer]).is_some();
            joins.then_some(producer)
        });
        match joining {
            Some(producer) if members.len() < MAX_INSTRS => members.push(producer),
            Some(_) | None => break,
        }
    }
    members.sort_unstable();
    members
}

/// Builds the registers and instructions of a group whose members are in evaluation order.
fn emit(g: &Graph, members: &[usize]) -> FusedGroup {
    let nodes = g.nodes();
    let mut leaves: Vec<ValueId> = Vec::new();
    // Operands as (is_member, index): member position or leaf number; registers are numbered last.
    let mut operands: Vec<Vec<(bool, usize)>> = Vec::with_capacity(members.len());
    for &m in members {
        let refs = nodes[m]
            .inputs
            .iter()
            .map(|&v| {
                let producer = g.values()[v.index()].node.index();
                match members.iter().position(|&x| x == producer) {
                    Some(position) => (true, position),
                    None => match leaves.iter().position(|&l| l == v) {
                        Some(i) => (false, i),
                        None => {
                            leaves.push(v);
                            (false, leaves.len() - 1)
                        }
                    },
                }
            })
            .collect();
        operands.push(refs);
    }
    let base = leaves.len();
    let instrs = members
        .iter()
        .zip(&operands)
        .map(|(&m, refs)| {
            let round = g.ty(nodes[m].outputs[0]).dtype == DType::F16;
            // Operand counts were checked by the verifier (unary and cast 1, binary 2).
            let operand = |i: usize| {
                refs.get(i)
                    .map_or(0, |&(member, at)| if member { base + at } else { at })
            };
            match fusible(g, &nodes[m]) {
                Some(FusedOp::Unary(op)) => Instr::Unary {
                    op,
                    src: operand(0),
                    round,
                },
                Some(FusedOp::Binary(op)) => Instr::Binary {
                    op,
                    a: operand(0),
                    b: operand(1),
                    round,
                },
                Some(FusedOp::RoundHalf) | None => Instr::RoundHalf { src: operand(0) },
            }
        })
        .collect();
    FusedGroup {
        rotations: vec![None; leaves.len()],
        leaves,
        instrs,
    }
}
