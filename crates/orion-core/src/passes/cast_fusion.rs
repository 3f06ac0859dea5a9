//! Cast fusion: removes cast round trips and shortens cast chains, only where the result is exact.
//!
//! What it does: `cast(cast(x: A, to=B), to=C)` becomes `cast(x, to=C)` — or just `x` when `C == A` —
//! provided the inner cast `A → B` is *value preserving*: every value of `A` is represented exactly
//! in `B` (see [`preserves_values`]). Casts are defined on values (float→int truncates the value,
//! float→bool tests the value, rounding to half rounds the value), so when the inner cast changes no
//! value the outer cast sees exactly what `cast(x, to=C)` would see.
//! What it does NOT do: it keeps every chain whose inner cast can lose information, e.g.
//! `f32 → f16 → f32` (rounds to half), `i32 → f32 → i32` (integers above 2^24), `f16 → i32 → f16`
//! (truncation). It does not remove single casts to the same dtype (`identity` does) nor the inner
//! cast left unused by a rewrite (`dce` does).

use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::op::Op;
use crate::passes::rebuild::Rebuilder;
use crate::passes::PassContext;
use crate::types::DType;

/// True when casting from `from` to `to` represents every value of `from` exactly.
pub fn preserves_values(from: DType, to: DType) -> bool {
    match (from, to) {
        // Same type: nothing changes.
        (DType::F32, DType::F32) | (DType::F16, DType::F16) | (DType::I32, DType::I32) | (DType::Bool, DType::Bool) => {
            true
        }
        // Every half value is an f32 value.
        (DType::F16, DType::F32) => true,
        // false/true become 0/1 in every numeric type, and casting 0/1 back to bool gives false/true.
        (DType::Bool, DType::F32) | (DType::Bool, DType::F16) | (DType::Bool, DType::I32) => true,
        // Rounding to half, truncating to an integer, or testing against zero loses information.
        (DType::F32, DType::F16) | (DType::F32, DType::I32) | (DType::F32, DType::Bool) => false,
        (DType::F16, DType::I32) | (DType::F16, DType::Bool) => false,
        // f32 and f16 hold integers exactly only up to 2^24 and 2^11.
        (DType::I32, DType::F32) | (DType::I32, DType::F16) | (DType::I32, DType::Bool) => false,
    }
}

/// Returns `g` with exact cast chains shortened and exact round trips removed.
pub fn cast_fusion(g: &Graph, _ctx: &PassContext) -> Result<Graph> {
    let mut out = Rebuilder::new("cast-fusion", g);
    for node in g.nodes() {
        fuse_node(&mut out, node)?;
    }
    out.finish()
}

fn fuse_node(out: &mut Rebuilder<'_>, node: &Node) -> Result<()> {
    let (Op::Cast { to: outer_to }, [operand], [result]) = (&node.op, node.inputs.as_slice(), node.outputs.as_slice())
    else {
        return out.copy(node);
    };
    let mid = out.mapped(*operand)?;
    let inner = out.graph().producer(mid);
    let (Op::Cast { to: inner_to }, [source]) = (&inner.op, inner.inputs.as_slice()) else {
        return out.copy(node);
    };
    let source = *source;
    let source_dtype = out.graph().try_ty(source)?.dtype;
    if !preserves_values(source_dtype, *inner_to) {
        return out.copy(node);
    }
    if source_dtype == *outer_to {
        return out.bind(*result, source);
    }
    out.emit_for(node, Op::Cast { to: *outer_to }, vec![source])
}
