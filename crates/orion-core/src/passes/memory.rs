//! Memory analysis: how many bytes of intermediate values are live while each node executes.
//!
//! Model: nodes execute in graph order; a value is live from the node that defines it through the
//! last node that uses it; graph inputs are live from the start (node 0), graph outputs to the end
//! (the last node); a value nobody uses is live only at its own node. Constants are not counted as
//! live values: they are resident for the whole run and reported once as `const_bytes`. Sizes are
//! dense (`TensorType::size_bytes`).
//! The report is over budget when `peak_bytes + const_bytes > budget_bytes`. This analysis annotates
//! and reports; it does not split programs or reorder nodes.

use crate::graph::{Graph, NodeId};
use crate::op::Op;
use std::fmt;

/// Live-bytes profile of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    /// Largest number of live (non-constant) bytes at any node.
    pub peak_bytes: u64,
    /// First node where the peak is reached (`None` for a graph without nodes).
    pub peak_at_node: Option<NodeId>,
    /// Bytes of all constants, resident for the whole run.
    pub const_bytes: u64,
    pub budget_bytes: u64,
    /// `peak_bytes + const_bytes > budget_bytes`.
    pub over_budget: bool,
    /// Live bytes while node `i` executes (the node's own results included).
    pub per_node_live: Vec<u64>,
}

/// Computes the live-bytes profile of `g` against `budget_bytes`.
pub fn memory_report(g: &Graph, budget_bytes: u64) -> MemoryReport {
    let node_count = g.nodes().len();
    let mut const_bytes = 0u64;
    // live_from[v], live_to[v]: inclusive node range; None for constants.
    let mut ranges: Vec<Option<(usize, usize)>> = vec![None; g.values().len()];
    for (index, node) in g.nodes().iter().enumerate() {
        let is_const = matches!(node.op, Op::Const { .. });
        let starts_at = if matches!(node.op, Op::Input { .. }) { 0 } else { index };
        for &v in &node.outputs {
            let Ok(ty) = g.try_ty(v) else { continue };
            if is_const {
                const_bytes += ty.size_bytes() as u64;
            } else if let Some(slot) = ranges.get_mut(v.index()) {
                *slot = Some((starts_at, index));
            }
        }
        for &v in &node.inputs {
            extend_to(&mut ranges, v.index(), index);
        }
    }
    for o in g.outputs() {
        extend_to(&mut ranges, o.value.index(), node_count.saturating_sub(1));
    }
    let per_node_live = live_profile(g, &ranges, node_count);
    let (peak_at_node, peak_bytes) = per_node_live
        .iter()
        .enumerate()
        .fold((None, 0u64), |(at, best), (i, &bytes)| {
            if at.is_none() || bytes > best {
                (Some(NodeId(i as u32)), bytes)
            } else {
                (at, best)
            }
        });
    MemoryReport {
        peak_bytes,
        peak_at_node,
        const_bytes,
        budget_bytes,
        over_budget: peak_bytes.saturating_add(const_bytes) > budget_bytes,
        per_node_live,
    }
}

fn extend_to(ranges: &mut [Option<(usize, usize)>], value: usize, node: usize) {
    if let Some(Some((_, end))) = ranges.get_mut(value) {
        *end = (*end).max(node);
    }
}

/// Sum of live bytes per node from the live ranges (a difference array over node indices).
fn live_profile(g: &Graph, ranges: &[Option<(usize, usize)>], node_count: usize) -> Vec<u64> {
    let mut delta = vec![0i128; node_count + 1];
    for (info, range) in g.values().iter().zip(ranges) {
        if let Some((start, end)) = range {
            let bytes = info.ty.size_bytes() as i128;
            delta[*start] += bytes;
            delta[*end + 1] -= bytes;
        }
    }
    let mut live = 0i128;
    delta[..node_count]
        .iter()
        .map(|d| {
            live += d;
            live.max(0) as u64
        })
        .collect()
}

/// `{}` writes the one-line summary; `{:#}` adds one line per node with its live bytes.
impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.over_budget {
            "OVER BUDGET"
        } else {
            "within budget"
        };
        match self.peak_at_node {
            Some(node) => write!(f, "memory: peak {} bytes at node {}", self.peak_bytes, node.0)?,
            None => write!(f, "memory: peak {} bytes (no nodes)", self.peak_bytes)?,
        }
        writeln!(
            f,
            ", constants {} bytes, budget {} bytes: {verdict}",
            self.const_bytes, self.budget_bytes
        )?;
        if !f.alternate() {
            return Ok(());
        }
        for (i, bytes) in self.per_node_live.iter().enumerate() {
            let mark = if self.peak_at_node == Some(NodeId(i as u32)) {
                "  <- peak"
            } else {
                ""
            };
            writeln!(f, "  node {i}: {bytes} live bytes{mark}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UnaryOp;
    use crate::tensor::Tensor;
    use crate::testing::blocks::{gpt2_block, BlockConfig};
    use crate::types::{DType, TensorType};

    /// Live bytes at node `i` by the definition, value by value (no difference arrays).
    fn naive_profile(g: &Graph) -> Vec<u64> {
        let n = g.nodes().len();
        (0..n)
            .map(|i| {
                let mut live = 0u64;
                for (index, node) in g.nodes().iter().enumerate() {
                    if matches!(node.op, Op::Const { .. }) {
                        continue;
                    }
                    let start = if matches!(node.op, Op::Input { .. }) { 0 } else { index };
                    for &v in &node.outputs {
                        let mut end = index;
                        for (user, other) in g.nodes().iter().enumerate() {
                            if other.inputs.contains(&v) {
                                end = end.max(user);
                            }
                        }
                        if g.outputs().iter().any(|o| o.value == v) {
                            end = n - 1;
                        }
                        if start <= i && i <= end {
                            live += g.ty(v).size_bytes() as u64;
                        }
                    }
                }
                live
            })
            .collect()
    }

    #[test]
    fn small_chain_by_hand() {
        // %0 x f32[4] (16 B), %1 const f32[4] (16 B, resident), %2 = x + c, %3 = exp(%2) -> output.
        let mut g = Graph::new("m");
        let x = g.input("x", TensorType::new(DType::F32, [4])).unwrap();
        let c = g.constant(Tensor::f32([4], vec![1.0; 4])).unwrap();
        let a = g.add(x, c).unwrap();
        let b = g.unary(UnaryOp::Exp, a).unwrap();
        g.set_output("y", b).unwrap();
        let r = memory_report(&g, 48);
        // node 0: x; node 1: x (still needed); node 2: x, a; node 3: a, b.
        assert_eq!(r.per_node_live, vec![16, 16, 32, 32]);
        assert_eq!((r.peak_bytes, r.peak_at_node), (32, Some(NodeId(2))));
        assert_eq!(r.const_bytes, 16);
        assert!(!r.over_budget, "32 + 16 fits 48");
        assert!(memory_report(&g, 47).over_budget);
        assert_eq!(r.to_string().lines().count(), 1, "plain format is the summary");
        assert_eq!(
            format!("{r:#}").lines().count(),
            5,
            "alternate format adds a line per node"
        );
    }

    #[test]
    fn matches_the_definition_on_a_block() {
        let g = gpt2_block(&BlockConfig::tiny()).unwrap();
        let r = memory_report(&g, u64::MAX);
        let naive = naive_profile(&g);
        assert_eq!(r.per_node_live, naive);
        assert_eq!(r.peak_bytes, naive.iter().copied().max().unwrap());
    }

    #[test]
    fn empty_graph_has_no_peak_node() {
        let r = memory_report(&Graph::new("empty"), 0);
        assert_eq!((r.peak_bytes, r.peak_at_node, r.over_budget), (0, None, false));
    }
}
