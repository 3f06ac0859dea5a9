//! Identity elimination: removes ops that return their operand unchanged and merges chains of
//! reshapes and of transposes, driven by the named rule table [`RULES`].
//!
//! What it does: for every node, the first matching rule either forwards the node's values to
//! existing values (the node disappears) or replaces the node by a simpler one, which is offered to
//! the rules again (so `reshape(reshape(x))` back to `x`'s shape disappears in one sweep). Rules look
//! at the already-rewritten graph, so chains collapse in a single pass.
//! What it does NOT do: it never removes the nodes a rewrite leaves unused (the `1` of `x*1`, the
//! inner reshape of a merged pair): `dce` does that. It never changes a value's type: a rule only
//! fires when the replacement has exactly the type of the node it replaces (so `x*1` that broadcasts
//! `x` to a bigger shape stays). The neutral-element rules ignore the sign of zero: `x + 0` is
//! forwarded to `x` although `-0 + 0` is `+0`. Cast round trips are `cast-fusion`'s job.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::infer::infer_types;
use crate::op::{BinaryOp, Op};
use crate::passes::rebuild::Rebuilder;
use crate::passes::PassContext;
use crate::tensor::TensorData;
use crate::types::TensorType;

/// What a rule does with a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewrite {
    /// The node's values are these existing values (one per value the node defines).
    Forward(Vec<ValueId>),
    /// The node becomes this op applied to these operands (which may match another rule).
    Replace(Op, Vec<ValueId>),
}

/// A rule's matcher: the graph built so far, the op, its operands (values of that graph) and the
/// op's result types. Returns `None` when the rule does not apply.
pub type RuleFn = fn(&Graph, &Op, &[ValueId], &[TensorType]) -> Option<Rewrite>;

/// A named rewrite rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub apply: RuleFn,
}

/// Every rule of the pass, tried in this order; the first that applies wins.
pub const RULES: &[Rule] = &[
    // `identity(x)` → `x`.
    Rule {
        name: "identity-op",
        apply: identity_op,
    },
    // `cast(x: T, to=T)` → `x`.
    Rule {
        name: "cast-same-dtype",
        apply: cast_same_dtype,
    },
    // `reshape(x: S, shape=S)` → `x`.
    Rule {
        name: "reshape-same-shape",
        apply: reshape_same_shape,
    },
    // `transpose(x, perm=[0,1,..])` → `x`.
    Rule {
        name: "transpose-identity-perm",
        apply: transpose_identity_perm,
    },
    // `broadcast(x: S, shape=S)` → `x`.
    Rule {
        name: "broadcast-same-shape",
        apply: broadcast_same_shape,
    },
    // `slice(x, begin=0.., end=dims)` → `x`.
    Rule {
        name: "slice-whole",
        apply: slice_whole,
    },
    // `pad(x, before=0.., after=0..)` → `x` (whatever the pad value).
    Rule {
        name: "pad-zero-widths",
        apply: pad_zero_widths,
    },
    // `concat(x)` → `x`.
    Rule {
        name: "concat-single",
        apply: concat_single,
    },
    // `split(x, sizes=[n])` → `x`.
    Rule {
        name: "split-one-piece",
        apply: split_one_piece,
    },
    // `x * 1`, `1 * x` → `x` when the result has `x`'s type.
    Rule {
        name: "mul-by-one",
        apply: mul_by_one,
    },
    // `x + 0`, `0 + x` → `x` when the result has `x`'s type.
    Rule {
        name: "add-zero",
        apply: add_zero,
    },
    // `x - 0` → `x` when the result has `x`'s type.
    Rule {
        name: "sub-zero",
        apply: sub_zero,
    },
    // `x / 1` → `x` when the result has `x`'s type.
    Rule {
        name: "div-by-one",
        apply: div_by_one,
    },
    // `reshape(reshape(x, a), b)` → `reshape(x, b)`.
    Rule {
        name: "reshape-of-reshape",
        apply: reshape_of_reshape,
    },
    // `transpose(transpose(x, p), q)` → `transpose(x, r)` with `r[i] = p[q[i]]`.
    Rule {
        name: "transpose-of-transpose",
        apply: transpose_of_transpose,
    },
];

/// Replacements offered again to the rules per node; every rule shortens a chain, so a few suffice.
const MAX_REWRITES_PER_NODE: usize = 16;

/// Returns `g` with the identities of [`RULES`] removed.
pub fn identity(g: &Graph, _ctx: &PassContext) -> Result<Graph> {
    let mut out = Rebuilder::new("identity", g);
    for node in g.nodes() {
        if matches!(node.op, Op::Input { .. } | Op::Const { .. }) {
            out.copy(node)?;
        } else {
            rewrite_node(&mut out, node)?;
        }
    }
    out.finish()
}

/// The first rule of [`RULES`] that applies to `op` on `inputs`, with its name.
pub fn first_match(g: &Graph, op: &Op, inputs: &[ValueId]) -> Result<Option<(&'static str, Rewrite)>> {
    let operand_types = inputs.iter().map(|&v| g.try_ty(v)).collect::<Result<Vec<_>>>()?;
    let result_types = infer_types(op, &operand_types).map_err(|message| CoreError::Pass {
        pass: "identity".to_string(),
        message: format!("{}: {message}", op.name()),
    })?;
    Ok(RULES
        .iter()
        .find_map(|rule| (rule.apply)(g, op, inputs, &result_types).map(|r| (rule.name, r))))
}

fn rewrite_node(out: &mut Rebuilder<'_>, node: &Node) -> Result<()> {
    let mut op = node.op.clone();
    let mut inputs = out.mapped_inputs(node)?;
    for _ in 0..MAX_REWRITES_PER_NODE {
        match first_match(out.graph(), &op, &inputs)? {
            None => break,
            Some((_, Rewrite::Forward(values))) => {
                for (&old, new) in node.outputs.iter().zip(values) {
                    out.bind(old, new)?;
                }
                return Ok(());
            }
            Some((_, Rewrite::Replace(new_op, new_inputs))) => {
                op = new_op;
                inputs = new_inputs;
            }
        }
    }
    out.emit_for(node, op, inputs)
}

fn single(inputs: &[ValueId]) -> Option<ValueId> {
    match inputs {
        [x] => Some(*x),
        _ => None,
    }
}

fn forward(x: ValueId) -> Option<Rewrite> {
    Some(Rewrite::Forward(vec![x]))
}

fn identity_op(_g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Identity = op else { return None };
    forward(single(inputs)?)
}

fn cast_same_dtype(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Cast { to } = op else { return None };
    let x = single(inputs)?;
    (g.try_ty(x).ok()?.dtype == *to).then_some(Rewrite::Forward(vec![x]))
}

fn reshape_same_shape(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Reshape { shape } = op else { return None };
    let x = single(inputs)?;
    (g.try_ty(x).ok()?.shape.dims() == shape.as_slice()).then_some(Rewrite::Forward(vec![x]))
}

fn transpose_identity_perm(_g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Transpose { perm } = op else { return None };
    let x = single(inputs)?;
    perm.iter()
        .enumerate()
        .all(|(i, &p)| i == p)
        .then_some(Rewrite::Forward(vec![x]))
}

fn broadcast_same_shape(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Broadcast { shape } = op else { return None };
    let x = single(inputs)?;
    (g.try_ty(x).ok()?.shape.dims() == shape.as_slice()).then_some(Rewrite::Forward(vec![x]))
}

fn slice_whole(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Slice { begin, end } = op else { return None };
    let x = single(inputs)?;
    let whole = begin.iter().all(|&b| b == 0) && g.try_ty(x).ok()?.shape.dims() == end.as_slice();
    whole.then_some(Rewrite::Forward(vec![x]))
}

fn pad_zero_widths(_g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Pad { before, after, .. } = op else { return None };
    let x = single(inputs)?;
    before
        .iter()
        .chain(after)
        .all(|&w| w == 0)
        .then_some(Rewrite::Forward(vec![x]))
}

fn concat_single(_g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Concat { .. } = op else { return None };
    forward(single(inputs)?)
}

fn split_one_piece(_g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let Op::Split { sizes, .. } = op else { return None };
    let x = single(inputs)?;
    (sizes.len() == 1).then_some(Rewrite::Forward(vec![x]))
}

/// True when `v` is a constant whose every element equals `target` (false for bool constants).
fn is_const_all(g: &Graph, v: ValueId, target: f32) -> bool {
    if g.try_ty(v).is_err() {
        return false;
    }
    let Op::Const { value } = &g.producer(v).op else {
        return false;
    };
    match value.data() {
        TensorData::Float(data) => data.iter().all(|&e| e == target),
        TensorData::I32(data) => data.iter().all(|&e| e as f32 == target),
        TensorData::Bool(_) => false,
    }
}

/// `x op c` → `x` (and `c op x` when `commutes`) for a constant `c` all equal to `neutral`, provided
/// the result has exactly `x`'s type.
fn neutral_operand(
    g: &Graph,
    op: &Op,
    inputs: &[ValueId],
    out: &[TensorType],
    wanted: BinaryOp,
    neutral: f32,
    commutes: bool,
) -> Option<Rewrite> {
    let (Op::Binary(kind), [a, b]) = (op, inputs) else {
        return None;
    };
    let (a, b) = (*a, *b);
    if *kind != wanted {
        return None;
    }
    let result = out.first()?;
    if is_const_all(g, b, neutral) && g.try_ty(a).ok()? == result {
        return forward(a);
    }
    if commutes && is_const_all(g, a, neutral) && g.try_ty(b).ok()? == result {
        return forward(b);
    }
    None
}

fn mul_by_one(g: &Graph, op: &Op, inputs: &[ValueId], out: &[TensorType]) -> Option<Rewrite> {
    neutral_operand(g, op, inputs, out, BinaryOp::Mul, 1.0, true)
}

fn add_zero(g: &Graph, op: &Op, inputs: &[ValueId], out: &[TensorType]) -> Option<Rewrite> {
    neutral_operand(g, op, inputs, out, BinaryOp::Add, 0.0, true)
}

fn sub_zero(g: &Graph, op: &Op, inputs: &[ValueId], out: &[TensorType]) -> Option<Rewrite> {
    neutral_operand(g, op, inputs, out, BinaryOp::Sub, 0.0, false)
}

fn div_by_one(g: &Graph, op: &Op, inputs: &[ValueId], out: &[TensorType]) -> Option<Rewrite> {
    neutral_operand(g, op, inputs, out, BinaryOp::Div, 1.0, false)
}

fn reshape_of_reshape(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let x = single(inputs)?;
    g.try_ty(x).ok()?;
    let inner = g.producer(x);
    let (Op::Reshape { shape }, Op::Reshape { .. }, [source]) = (op, &inner.op, inner.inputs.as_slice()) else {
        return None;
    };
    Some(Rewrite::Replace(Op::Reshape { shape: shape.clone() }, vec![*source]))
}

fn transpose_of_transpose(g: &Graph, op: &Op, inputs: &[ValueId], _out: &[TensorType]) -> Option<Rewrite> {
    let x = single(inputs)?;
    g.try_ty(x).ok()?;
    let inner = g.producer(x);
    let (Op::Transpose { perm: outer }, Op::Transpose { perm: first }, [source]) =
        (op, &inner.op, inner.inputs.as_slice())
    else {
        return None;
    };
    // Output axis i of the outer transpose is its operand's axis outer[i], which is the source's
    // axis first[outer[i]].
    let composed = outer
        .iter()
        .map(|&o| first.get(o).copied())
        .collect::<Option<Vec<_>>>()?;
    Some(Rewrite::Replace(Op::Transpose { perm: composed }, vec![*source]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DType;

    /// The name of the rule that fires for `op` on `inputs`, if any.
    fn rule_for(g: &Graph, op: Op, inputs: &[ValueId]) -> Option<&'static str> {
        first_match(g, &op, inputs).unwrap().map(|(name, _)| name)
    }

    #[test]
    fn rule_names_are_unique() {
        let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }

    #[test]
    fn each_rule_fires_on_its_pattern_only() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::new(DType::F32, [2, 3])).unwrap();
        let one = g.scalar(1.0, DType::F32).unwrap();
        let two = g.scalar(2.0, DType::F32).unwrap();
        let zero = g.scalar(0.0, DType::F32).unwrap();
        let r = g.reshape(x, &[3, 2]).unwrap();
        let t = g.transpose(x, &[1, 0]).unwrap();
        let mul = Op::Binary(BinaryOp::Mul);
        assert_eq!(rule_for(&g, mul.clone(), &[one, x]), Some("mul-by-one"));
        assert_eq!(rule_for(&g, mul, &[x, two]), None);
        assert_eq!(rule_for(&g, Op::Binary(BinaryOp::Sub), &[zero, x]), None);
        assert_eq!(rule_for(&g, Op::Binary(BinaryOp::Sub), &[x, zero]), Some("sub-zero"));
        let reshape = |shape: &[usize]| Op::Reshape { shape: shape.to_vec() };
        assert_eq!(rule_for(&g, reshape(&[6]), &[r]), Some("reshape-of-reshape"));
        assert_eq!(rule_for(&g, reshape(&[6]), &[x]), None);
        let transpose = Op::Transpose { perm: vec![1, 0] };
        assert_eq!(rule_for(&g, transpose, &[t]), Some("transpose-of-transpose"));
        let pad = Op::Pad {
            before: vec![0, 0],
            after: vec![0, 1],
            value: 0.0,
        };
        assert_eq!(rule_for(&g, pad, &[x]), None);
    }
}
