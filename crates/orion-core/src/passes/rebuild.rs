//! Shared machinery for passes: copying a graph node by node into a new graph with value remapping.
//!
//! A pass walks the old graph's nodes in order and, for each node, either copies it (operands
//! remapped), emits something else, or binds the node's values to values already in the new graph.
//! Invariants kept here so that no pass has to: every old value used later is bound before use (an
//! unbound use is a `CoreError::Pass`, never a panic); a value is only ever bound to a new value of
//! the same type; the graph keeps its name, its inputs (the caller copies every `Input` node) and
//! its output names and order.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, GraphOutput, Node, ValueId};
use crate::op::Op;

/// A new graph under construction plus the map from old value ids to new ones.
#[derive(Debug)]
pub(crate) struct Rebuilder<'a> {
    pass: &'static str,
    old: &'a Graph,
    new: Graph,
    map: Vec<Option<ValueId>>,
}

impl<'a> Rebuilder<'a> {
    /// Starts an empty graph with `old`'s name; `pass` names the pass in error messages.
    pub(crate) fn new(pass: &'static str, old: &'a Graph) -> Rebuilder<'a> {
        Rebuilder {
            pass,
            old,
            new: Graph::new(old.name()),
            map: vec![None; old.values().len()],
        }
    }

    /// The graph built so far (for rules that look at producers of already-mapped operands).
    pub(crate) fn graph(&self) -> &Graph {
        &self.new
    }

    /// The graph being rewritten.
    pub(crate) fn old_graph(&self) -> &'a Graph {
        self.old
    }

    /// The new value standing for old value `v`.
    pub(crate) fn mapped(&self, v: ValueId) -> Result<ValueId> {
        self.map
            .get(v.index())
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("value {v} is used before it is defined")))
    }

    /// The new values standing for a node's operands.
    pub(crate) fn mapped_inputs(&self, node: &Node) -> Result<Vec<ValueId>> {
        node.inputs.iter().map(|&v| self.mapped(v)).collect()
    }

    /// Makes old value `old` stand for new value `new`; their types must be equal.
    pub(crate) fn bind(&mut self, old: ValueId, new: ValueId) -> Result<()> {
        let old_ty = self.old.try_ty(old)?;
        let new_ty = self.new.try_ty(new)?;
        if old_ty != new_ty {
            return Err(self.error(format!("would replace {old}: {old_ty} by a value of type {new_ty}")));
        }
        match self.map.get_mut(old.index()) {
            Some(slot) => {
                *slot = Some(new);
                Ok(())
            }
            None => Err(self.error(format!("unknown value {old}"))),
        }
    }

    /// Appends `op` applied to new values `inputs`; returns the new values it defines.
    pub(crate) fn emit(&mut self, op: Op, inputs: Vec<ValueId>) -> Result<Vec<ValueId>> {
        self.new.add_node(op, inputs)
    }

    /// Emits `op` on `inputs` (new values) in place of old `node`, binding its values in order.
    pub(crate) fn emit_for(&mut self, node: &Node, op: Op, inputs: Vec<ValueId>) -> Result<()> {
        let values = self.emit(op, inputs)?;
        if values.len() != node.outputs.len() {
            return Err(self.error(format!(
                "replacement of a {} node defines {} values instead of {}",
                node.op.name(),
                values.len(),
                node.outputs.len()
            )));
        }
        for (&old, new) in node.outputs.iter().zip(values) {
            self.bind(old, new)?;
        }
        Ok(())
    }

    /// Copies `node` unchanged except for operand remapping.
    pub(crate) fn copy(&mut self, node: &Node) -> Result<()> {
        let inputs = self.mapped_inputs(node)?;
        self.emit_for(node, node.op.clone(), inputs)
    }

    /// Finishes the graph: the old outputs, same names and order, pointing at the mapped values.
    pub(crate) fn finish(mut self) -> Result<Graph> {
        let outputs = self
            .old
            .outputs()
            .iter()
            .map(|o| {
                Ok(GraphOutput {
                    name: o.name.clone(),
                    value: self.mapped(o.value)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.new.replace_outputs(outputs)?;
        Ok(self.new)
    }

    fn error(&self, message: String) -> CoreError {
        CoreError::Pass {
            pass: self.pass.to_string(),
            message,
        }
    }
}
