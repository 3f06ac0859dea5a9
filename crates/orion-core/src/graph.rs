//! The graph: a topologically ordered list of nodes, each defining one or more values.
//!
//! Invariants (checked by `verify`, maintained by the builder methods):
//! - value ids are dense and numbered in definition order (node order, then output port);
//! - a node's operands are defined by earlier nodes;
//! - every value's recorded type equals what shape inference gives for its node;
//! - input names are unique, output names are unique, outputs name existing values.
//!
//! Graphs are values: passes build a new graph rather than mutating in place, so callers holding
//! a graph never see stale ids.

use crate::error::{CoreError, Result};
use crate::infer::infer_types;
use crate::op::Op;
use crate::types::TensorType;
use std::fmt;

/// A value defined by a node; printed `%7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Position of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One operation applied to operands, defining `outputs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// Type and origin of a value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub ty: TensorType,
    pub node: NodeId,
    pub port: usize,
}

/// A named graph result.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub value: ValueId,
}

/// A dataflow graph of [`Op`]s.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    name: String,
    nodes: Vec<Node>,
    values: Vec<ValueInfo>,
    outputs: Vec<GraphOutput>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Assembles a graph from parts without checking anything; `verify` says what is wrong with it.
    /// For the parser's error paths and for tests of the verifier.
    pub fn from_parts_unchecked(
        name: String,
        nodes: Vec<Node>,
        values: Vec<ValueInfo>,
        outputs: Vec<GraphOutput>,
    ) -> Graph {
        Graph {
            name,
            nodes,
            values,
            outputs,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn values(&self) -> &[ValueInfo] {
        &self.values
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    /// Type of a value; panics on an id from another graph (a programming error).
    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.values[v.index()].ty
    }

    /// Type of a value, or an error naming the unknown id.
    pub fn try_ty(&self, v: ValueId) -> Result<&TensorType> {
        self.values
            .get(v.index())
            .map(|info| &info.ty)
            .ok_or_else(|| self.error(format!("unknown value {v}")))
    }

    /// The node that defines `v`.
    pub fn producer(&self, v: ValueId) -> &Node {
        &self.nodes[self.values[v.index()].node.index()]
    }

    /// The graph's inputs in declaration order: (name, value, type).
    pub fn inputs(&self) -> impl Iterator<Item = (&str, ValueId, &TensorType)> {
        self.nodes.iter().filter_map(|n| match &n.op {
            Op::Input { name, ty } => Some((name.as_str(), n.outputs[0], ty)),
            _ => None,
        })
    }

    /// The value of the input called `name`.
    pub fn input_value(&self, name: &str) -> Option<ValueId> {
        self.inputs().find(|(n, _, _)| *n == name).map(|(_, v, _)| v)
    }

    /// The value of the output called `name`.
    pub fn output_value(&self, name: &str) -> Option<ValueId> {
        self.outputs.iter().find(|o| o.name == name).map(|o| o.value)
    }

    /// Appends a node after checking operands and inferring result types; returns its values.
    pub fn add_node(&mut self, op: Op, inputs: Vec<ValueId>) -> Result<Vec<ValueId>> {
        let mut operand_types = Vec::with_capacity(inputs.len());
        for &v in &inputs {
            operand_types.push(self.try_ty(v)?);
        }
        if let Op::Input { name, .. } = &op {
            if self.input_value(name).is_some() {
                return Err(self.error(format!("duplicate input name {name:?}")));
            }
        }
        let types = infer_types(&op, &operand_types).map_err(|message| CoreError::Shape {
            op: op.name().to_string(),
            message,
            operands: describe_operands(&inputs, &operand_types),
        })?;
        Ok(self.push_node_typed(op, inputs, types))
    }

    /// Appends a node with already-known result types (callers guarantee they equal inference).
    pub(crate) fn push_node_typed(&mut self, op: Op, inputs: Vec<ValueId>, types: Vec<TensorType>) -> Vec<ValueId> {
        let node = NodeId(self.nodes.len() as u32);
        let outputs: Vec<ValueId> = types
            .into_iter()
            .enumerate()
            .map(|(port, ty)| {
                let id = ValueId(self.values.len() as u32);
                self.values.push(ValueInfo { ty, node, port });
                id
            })
            .collect();
        self.nodes.push(Node {
            op,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    /// Declares `value` as the graph output called `name` (names are unique).
    pub fn set_output(&mut self, name: impl Into<String>, value: ValueId) -> Result<()> {
        let name = name.into();
        self.try_ty(value)?;
        if self.output_value(&name).is_some() {
            return Err(self.error(format!("duplicate output name {name:?}")));
        }
        self.outputs.push(GraphOutput { name, value });
        Ok(())
    }

    /// Replaces the output list (passes use this after remapping values).
    pub fn replace_outputs(&mut self, outputs: Vec<GraphOutput>) -> Result<()> {
        self.outputs.clear();
        for o in outputs {
            self.set_output(o.name, o.value)?;
        }
        Ok(())
    }

    /// How many times each value is used as an operand or output.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.values.len()];
        for node in &self.nodes {
            for v in &node.inputs {
                counts[v.index()] += 1;
            }
        }
        for o in &self.outputs {
            counts[o.value.index()] += 1;
        }
        counts
    }

    pub(crate) fn error(&self, message: String) -> CoreError {
        CoreError::Graph {
            graph: self.name.clone(),
            message,
        }
    }
}

/// `%1: f32[2,3], %2: f32[3]` — for error messages.
pub(crate) fn describe_operands(inputs: &[ValueId], types: &[&TensorType]) -> String {
    if inputs.is_empty() {
        return "none".to_string();
    }
    inputs
        .iter()
        .zip(types)
        .map(|(v, t)| format!("{v}: {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}
