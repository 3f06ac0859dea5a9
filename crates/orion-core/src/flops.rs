//! Work and traffic of a graph: floating-point operations counted node by node, and the bytes at its
//! boundary (its inputs, outputs and constants).
//!
//! The one definition of "FLOPs" in the project (the simulator's cost model and `orion bench` both
//! use it): `2·numel(out)·K` per matmul and 1×1 convolution (K the contraction extent), one per
//! output element of elementwise ops (unary, binary, compare, select, cast) and softmax, one per
//! input element of reductions; data movement (reshape, transpose, slice, concat, split, pad,
//! gather, scatter, broadcast, identity) and leaves cost nothing.
//!
//! Invariants: counts are finite and non-negative; a value whose type cannot be read (a graph that
//! fails verification) counts as empty instead of panicking.

use crate::graph::{Graph, Node, ValueId};
use crate::op::Op;

/// Elements of `v`, 0 when `v` is not a value of `graph`.
fn numel(graph: &Graph, v: ValueId) -> f64 {
    graph.try_ty(v).map(|t| t.shape.numel() as f64).unwrap_or(0.0)
}

/// Extent of axis `axis_from_end` (1 = last) of `v`, 0 when unknown.
fn dim_from_end(graph: &Graph, v: ValueId, axis_from_end: usize) -> f64 {
    graph
        .try_ty(v)
        .ok()
        .and_then(|t| {
            let dims = t.shape.dims();
            dims.len().checked_sub(axis_from_end).map(|i| dims[i] as f64)
        })
        .unwrap_or(0.0)
}

/// Floating-point operations of one node of `graph` (see the module header).
pub fn node_flops(graph: &Graph, node: &Node) -> f64 {
    let out = node.outputs.first().map_or(0.0, |&v| numel(graph, v));
    let operand = |i: usize| node.inputs.get(i).copied();
    match &node.op {
        Op::MatMul { transpose_a, .. } => {
            let k = match operand(0) {
                Some(a) if *transpose_a => dim_from_end(graph, a, 2),
                Some(a) => dim_from_end(graph, a, 1),
                None => 0.0,
            };
            2.0 * out * k
        }
        // The weight is [Co, Ci, 1, 1]: Ci is its second axis from the front, third from the end.
        Op::Conv1x1 => 2.0 * out * operand(1).map_or(0.0, |w| dim_from_end(graph, w, 3)),
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast { .. } | Op::Softmax { .. } => out,
        Op::Reduce { .. } => operand(0).map_or(0.0, |x| numel(graph, x)),
        Op::Input { .. }
        | Op::Const { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Pad { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Broadcast { .. }
        | Op::Identity => 0.0,
    }
}

/// What running a graph once costs at least: its FLOPs and the bytes at its boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphCost {
    /// Every node's [`node_flops`].
    pub flops: f64,
    /// The part of `flops` done by matmuls and 1×1 convolutions.
    pub matmul_flops: f64,
    /// Bytes of the graph's inputs.
    pub input_bytes: u64,
    /// Bytes of the graph's outputs.
    pub output_bytes: u64,
    /// Bytes of the graph's constants (weights baked into the program).
    pub constant_bytes: u64,
}

impl GraphCost {
    /// Counts `graph`.
    pub fn of(graph: &Graph) -> GraphCost {
        let mut cost = GraphCost::default();
        for node in graph.nodes() {
            let f = node_flops(graph, node);
            cost.flops += f;
            if matches!(node.op, Op::MatMul { .. } | Op::Conv1x1) {
                cost.matmul_flops += f;
            }
            if let Op::Const { value } = &node.op {
                cost.constant_bytes += value.ty().size_bytes() as u64;
            }
        }
        cost.input_bytes = graph.inputs().map(|(_, _, ty)| ty.size_bytes() as u64).sum();
        cost.output_bytes = graph
            .outputs()
            .iter()
            .map(|o| graph.try_ty(o.value).map_or(0, |t| t.size_bytes() as u64))
            .sum();
        cost
    }

    /// Inputs, outputs and constants, each byte once: what one run reads and writes at least, except
    /// that a gather reads only the rows it picks from a table (so for embeddings this overstates).
    pub fn bytes_moved(&self) -> u64 {
        self.input_bytes + self.output_bytes + self.constant_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::ReduceOp;
    use crate::types::{DType, TensorType};

    #[test]
    fn matmul_counts_two_m_n_k_and_elementwise_one_per_element() {
        let mut g = Graph::new("t");
        let a = g.input("a", TensorType::new(DType::F32, [3, 5])).unwrap();
        let b = g.input("b", TensorType::new(DType::F32, [5, 7])).unwrap();
        let c = g.matmul(a, b, false, false).unwrap();
        let d = g.add(c, c).unwrap();
        let s = g.reduce(ReduceOp::Sum, d, &[1], false).unwrap();
        g.set_output("s", s).unwrap();
        let cost = GraphCost::of(&g);
        // 2·3·7·5 for the product, 3·7 for the add, 3·7 input elements for the reduction.
        assert_eq!(cost.matmul_flops, 210.0);
        assert_eq!(cost.flops, 210.0 + 21.0 + 21.0);
        assert_eq!(cost.input_bytes, (15 + 35) * 4);
        assert_eq!(cost.output_bytes, 3 * 4);
        assert_eq!(cost.bytes_moved(), (15 + 35 + 3) * 4);
    }

    #[test]
    fn transposed_operand_uses_its_leading_axis_as_contraction() {
        let mut g = Graph::new("t");
        let a = g.input("a", TensorType::new(DType::F16, [4, 2])).unwrap();
        let b = g.input("b", TensorType::new(DType::F16, [4, 6])).unwrap();
        let c = g.matmul(a, b, true, false).unwrap();
        g.set_output("c", c).unwrap();
        assert_eq!(GraphCost::of(&g).flops, 2.0 * 2.0 * 6.0 * 4.0);
        assert_eq!(GraphCost::of(&g).input_bytes, (8 + 24) * 2);
    }

    #[test]
    fn conv_counts_input_channels_and_constants_count_as_bytes() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::new(DType::F32, [1, 6, 1, 10])).unwrap();
        let w = g.constant(crate::Tensor::f32([4, 6, 1, 1], vec![0.5; 24])).unwrap();
        let y = g.conv1x1(x, w).unwrap();
        g.set_output("y", y).unwrap();
        let cost = GraphCost::of(&g);
        // Output [1, 4, 1, 10]: 40 elements, each a 6-term dot product.
        assert_eq!(cost.flops, 2.0 * 40.0 * 6.0);
        assert_eq!(cost.constant_bytes, 24 * 4);
        assert_eq!(cost.bytes_moved(), (60 + 40 + 24) * 4);
    }
}
