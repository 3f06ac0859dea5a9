//! Constant folding: replaces a node whose operands are all constants by the constants it computes.
//!
//! What it does: evaluates such a node with the reference interpreter (`interp::eval_op`, f32
//! precision, so the folded values are exactly what interpreting the graph in f32 mode would give)
//! and emits one `Const` per value it defines. Folded results feed later folds in the same sweep.
//! What it does NOT do: it never folds `Input` or `Const` nodes; it leaves a node alone when any of
//! its results has more than `PassContext::fold_limit` elements (folding would bloat the constant
//! pool: a broadcast of a scalar to a big shape stays a broadcast), and when evaluating it fails at
//! compile time (for example a gather with an out-of-range constant index) — the error then
//! surfaces, with its context, when the graph runs. It does not remove the operand constants a fold
//! leaves unused (`dce` does).

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node};
use crate::interp::{eval_op, Precision};
use crate::op::Op;
use crate::passes::rebuild::Rebuilder;
use crate::passes::PassContext;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Default largest number of elements a folded result may have.
pub const FOLD_LIMIT: usize = 4096;

/// Returns `g` with every small all-constant computation replaced by its value.
pub fn fold(g: &Graph, ctx: &PassContext) -> Result<Graph> {
    let mut out = Rebuilder::new("fold", g);
    for node in g.nodes() {
        match foldable_operands(&out, node, ctx)? {
            Some(operands) => fold_node(&mut out, node, &operands)?,
            None => out.copy(node)?,
        }
    }
    out.finish()
}

/// The constant operands of `node` (already mapped into the new graph) when the node may fold.
fn foldable_operands(out: &Rebuilder<'_>, node: &Node, ctx: &PassContext) -> Result<Option<Vec<Arc<Tensor>>>> {
    if matches!(node.op, Op::Input { .. } | Op::Const { .. }) {
        return Ok(None);
    }
    let old = out.old_graph();
    for &v in &node.outputs {
        if old.try_ty(v)?.shape.numel() > ctx.fold_limit {
            return Ok(None);
        }
    }
    let mut operands = Vec::with_capacity(node.inputs.len());
    for &v in &node.inputs {
        let mapped = out.mapped(v)?;
        let Op::Const { value } = &out.graph().producer(mapped).op else {
            return Ok(None);
        };
        operands.push(Arc::clone(value));
    }
    Ok(Some(operands))
}

fn fold_node(out: &mut Rebuilder<'_>, node: &Node, operands: &[Arc<Tensor>]) -> Result<()> {
    let refs: Vec<&Tensor> = operands.iter().map(|t| t.as_ref()).collect();
    let Ok(results) = eval_op(&node.op, &refs, Precision::F32) else {
        return out.copy(node);
    };
    if results.len() != node.outputs.len() {
        return Err(CoreError::Pass {
            pass: "fold".to_string(),
            message: format!(
                "evaluating {} gave {} values instead of {}",
                node.op.name(),
                results.len(),
                node.outputs.len()
            ),
        });
    }
    for (&old, value) in node.outputs.iter().zip(results) {
        let new = out.emit(Op::Const { value: Arc::new(value) }, Vec::new())?;
        for v in new {
            out.bind(old, v)?;
        }
    }
    Ok(())
}
