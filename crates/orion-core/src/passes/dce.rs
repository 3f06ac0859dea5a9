//! Dead-code elimination: removes every node none of whose values reaches a graph output.
//!
//! What it does: walks the graph backwards from the outputs, marks the operands of every live node
//! live, and copies the live nodes (in their original order) into a new graph.
//! What it does NOT do: it never removes an `Input` node (the graph's input list is part of its
//! interface, even when an input is unused), never removes part of a multi-output node (a `Split` with
//! one live piece is kept whole), and never rewrites an op.

use crate::error::Result;
use crate::graph::Graph;
use crate::op::Op;
use crate::passes::rebuild::Rebuilder;
use crate::passes::PassContext;

/// Returns `g` without the nodes whose values are never needed for an output.
pub fn dce(g: &Graph, _ctx: &PassContext) -> Result<Graph> {
    let live_nodes = live_nodes(g);
    let mut out = Rebuilder::new("dce", g);
    for (node, live) in g.nodes().iter().zip(live_nodes) {
        if live {
            out.copy(node)?;
        }
    }
    out.finish()
}

/// For each node: does it define a value an output depends on, or is it an input?
fn live_nodes(g: &Graph) -> Vec<bool> {
    let mut live_values = vec![false; g.values().len()];
    for o in g.outputs() {
        if let Some(slot) = live_values.get_mut(o.value.index()) {
            *slot = true;
        }
    }
    let mut live_nodes = vec![false; g.nodes().len()];
    for (index, node) in g.nodes().iter().enumerate().rev() {
        let is_input = matches!(node.op, Op::Input { .. });
        let needed = node
            .outputs
            .iter()
            .any(|v| live_values.get(v.index()).copied().unwrap_or(false));
        if is_input || needed {
            live_nodes[index] = true;
            for v in &node.inputs {
                if let Some(slot) = live_values.get_mut(v.index()) {
                    *slot = true;
                }
            }
        }
    }
    live_nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DType, TensorType};

    #[test]
    fn keeps_unused_inputs_and_drops_dead_chains() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::new(DType::F32, [2])).unwrap();
        let _unused = g.input("unused", TensorType::new(DType::F32, [3])).unwrap();
        let dead = g.unary(crate::op::UnaryOp::Exp, x).unwrap();
        let _dead2 = g.unary(crate::op::UnaryOp::Neg, dead).unwrap();
        let y = g.unary(crate::op::UnaryOp::Tanh, x).unwrap();
        g.set_output("y", y).unwrap();
        let out = dce(&g, &PassContext::default()).unwrap();
        let ops: Vec<&str> = out.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, vec!["input", "input", "tanh"]);
        assert_eq!(out.outputs()[0].name, "y");
    }
}
