//! The verifier: checks every structural invariant of a graph and lists every failure.
//!
//! Checks: value ids dense and in definition order; each value defined once; operands defined by
//! earlier nodes (topological order); operand counts (`Op::arity`); result counts
//! (`Op::output_count`); recorded types equal `infer_types`; `ValueInfo.node/port` consistent with
//! the defining node (no dangling values); an `Input` node's declared type equals its value's type;
//! input names unique; output names unique and naming defined values.
//! Invariants: never panics on a graph assembled with `Graph::from_parts_unchecked` (sizes beyond
//! [`MAX_EXTENT`] / [`MAX_ELEMENTS`] that could overflow shape inference are reported instead of
//! inferred); reports every problem, not only the first; each node problem names the node index
//! and its printed line. Also home of those size limits, which the parser enforces too.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::infer::infer_types;
use crate::op::Op;
use crate::text::node_line;
use crate::types::TensorType;
use std::collections::HashMap;

/// `Ok(())` when `g` satisfies every invariant, else `CoreError::Verify` listing every problem.
pub fn verify(g: &Graph) -> Result<()> {
    let problems = problems(g);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Verify {
            graph: g.name().to_string(),
            problems,
        })
    }
}

/// Every problem of `g`, one message each, in node order then graph-level checks.
pub fn problems(g: &Graph) -> Vec<String> {
    let mut report = Report {
        g,
        problems: Vec::new(),
    };
    // Value -> index of the node that defines it (first definition wins).
    let mut defined: HashMap<ValueId, usize> = HashMap::new();
    let mut input_names: HashMap<&str, usize> = HashMap::new();
    let mut next_id: u64 = 0;
    for (index, node) in g.nodes().iter().enumerate() {
        let operand_count_ok = check_counts(&mut report, index, node);
        for &operand in &node.inputs {
            if !defined.contains_key(&operand) {
                report.node(index, format!("operand {operand} is not defined by an earlier node"));
            }
        }
        for (port, &v) in node.outputs.iter().enumerate() {
            if u64::from(v.0) != next_id {
                report.node(
                    index,
                    format!("result {port} is {v}, expected %{next_id} (ids must be dense in definition order)"),
                );
            }
            next_id += 1;
            check_value_info(&mut report, index, port, v);
            if let Some(&first) = defined.get(&v) {
                report.node(index, format!("value {v} is already defined by node {first}"));
            } else {
                defined.insert(v, index);
            }
        }
        if let Op::Input { name, ty } = &node.op {
            check_input(&mut report, index, node, ty);
            if let Some(&first) = input_names.get(name.as_str()) {
                report.node(index, format!("input name {name:?} is already used by node {first}"));
            } else {
                input_names.insert(name, index);
            }
        }
        if operand_count_ok {
            check_types(&mut report, index, node);
        }
    }
    check_dangling_values(&mut report);
    check_outputs(&mut report, &defined);
    report.problems
}

/// Collects problem messages about one graph.
struct Report<'a> {
    g: &'a Graph,
    problems: Vec<String>,
}

impl Report<'_> {
    fn node(&mut self, index: usize, message: String) {
        let line = match self.g.nodes().get(index) {
            Some(node) => format!(" `{}`", node_line(self.g, node)),
            None => String::new(),
        };
        self.problems.push(format!("node {index}{line}: {message}"));
    }

    fn graph(&mut self, message: String) {
        self.problems.push(message);
    }
}

/// Operand and result counts against the op's arity and output count; true when the operand
/// count is right (so that shape inference is worth running).
fn check_counts(report: &mut Report, index: usize, node: &Node) -> bool {
    let name = node.op.name();
    let operand_count_ok = match node.op.arity() {
        Some(n) if node.inputs.len() != n => {
            report.node(
                index,
                format!("{name} takes {n} operand(s), but the node has {}", node.inputs.len()),
            );
            false
        }
        None if node.inputs.is_empty() => {
            report.node(index, format!("{name} needs at least one operand"));
            false
        }
        _ => true,
    };
    let expected = node.op.output_count();
    if node.outputs.len() != expected {
        report.node(
            index,
            format!(
                "{name} defines {expected} value(s), but the node lists {}",
                node.outputs.len()
            ),
        );
    }
    operand_count_ok
}

/// The value table entry of result `port` of node `index` must point back at that node and port.
fn check_value_info(report: &mut Report, index: usize, port: usize, v: ValueId) {
    match report.g.values().get(v.index()) {
        None => report.node(index, format!("result {v} has no entry in the value table")),
        Some(info) if info.node.index() != index || info.port != port => report.node(
            index,
            format!(
                "value {v} records node {} port {}, but it is result {port} of node {index}",
                info.node.index(),
                info.port
            ),
        ),
        Some(_) => {}
    }
}

/// An input's declared type must be its value's recorded type.
fn check_input(report: &mut Report, index: usize, node: &Node, declared: &TensorType) {
    let Some(&v) = node.outputs.first() else {
        return;
    };
    if let Some(info) = report.g.values().get(v.index()) {
        if info.ty != *declared {
            report.node(
                index,
                format!(
                    "input declares type {declared} but its value {v} is recorded as {}",
                    info.ty
                ),
            );
        }
    }
}

/// Recorded result types against shape inference (skipped when an operand or result is unknown,
/// which other checks report; inputs are checked by `check_input`).
fn check_types(report: &mut Report, index: usize, node: &Node) {
    if matches!(node.op, Op::Input { .. }) {
        return;
    }
    let values = report.g.values();
    let operand_types: Option<Vec<&TensorType>> = node
        .inputs
        .iter()
        .map(|v| values.get(v.index()).map(|info| &info.ty))
        .collect();
    let Some(operand_types) = operand_types else {
        return;
    };
    if let Err(message) = check_inference_sizes(&node.op, &operand_types) {
        report.node(index, format!("shape inference skipped: {message}"));
        return;
    }
    let inferred = match infer_types(&node.op, &operand_types) {
        Ok(types) => types,
        Err(message) => {
            report.node(index, format!("shape inference fails: {message}"));
            return;
        }
    };
    for (&v, inferred) in node.outputs.iter().zip(&inferred) {
        if let Some(info) = values.get(v.index()) {
            if info.ty != *inferred {
                report.node(
                    index,
                    format!("value {v} is recorded as {} but infers to {inferred}", info.ty),
                );
            }
        }
    }
}

/// Every value table entry must be a result of the node and port it names.
fn check_dangling_values(report: &mut Report) {
    let g = report.g;
    for (i, info) in g.values().iter().enumerate() {
        let listed = g
            .nodes()
            .get(info.node.index())
            .and_then(|n| n.outputs.get(info.port))
            .is_some_and(|v| v.index() == i);
        if !listed {
            report.graph(format!(
                "value %{i} ({}) claims node {} port {}, which does not define it (dangling value)",
                info.ty,
                info.node.index(),
                info.port
            ));
        }
    }
}

/// Output names unique; each output names a value some node defines.
fn check_outputs(report: &mut Report, defined: &HashMap<ValueId, usize>) {
    let g = report.g;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, o) in g.outputs().iter().enumerate() {
        if seen.insert(o.name.as_str(), i).is_some() {
            report.graph(format!("output {:?} is declared more than once", o.name));
        }
        if !defined.contains_key(&o.value) || g.values().get(o.value.index()).is_none() {
            report.graph(format!("output {:?} refers to undefined value {}", o.name, o.value));
        }
    }
}

/// Largest extent (and integer attribute) the parser accepts, and that `verify` lets shape
/// inference see; keeps every size computation far from overflow.
pub const MAX_EXTENT: usize = i32::MAX as usize;
/// Largest element count of any type the parser accepts.
pub const MAX_ELEMENTS: u64 = 1 << 48;

/// Element count of `dims`, or `None` on overflow.
pub(crate) fn checked_numel(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Rejects types with an extent above [`MAX_EXTENT`] or more than [`MAX_ELEMENTS`] elements.
pub(crate) fn check_type_size(ty: &TensorType) -> Result<(), String> {
    let too_large = ty.shape.dims().iter().any(|&d| d > MAX_EXTENT)
        || checked_numel(ty.shape.dims()).is_none_or(|n| n > MAX_ELEMENTS);
    if too_large {
        return Err(format!(
            "type {ty} is too large (extents up to {MAX_EXTENT}, at most {MAX_ELEMENTS} elements)"
        ));
    }
    Ok(())
}

/// Checks, before `infer_types` runs, that its operand types are within the size limits and that
/// the sums and products it computes from attributes cannot overflow. Checks nothing else.
pub(crate) fn check_inference_sizes(op: &Op, operands: &[&TensorType]) -> Result<(), String> {
    for t in operands {
        check_type_size(t)?;
    }
    let too_large = || Err(format!("{}: sizes are too large", op.name()));
    match op {
        Op::Input { ty, .. } => check_type_size(ty)?,
        Op::Reshape { shape } | Op::Broadcast { shape } => {
            if checked_numel(shape).is_none_or(|n| n > MAX_ELEMENTS) {
                return too_large();
            }
        }
        Op::Split { sizes, .. } => {
            if sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s)).is_none() {
                return too_large();
            }
        }
        Op::Concat { axis } => {
            let sum = operands
                .iter()
                .try_fold(0usize, |acc, t| match t.shape.dims().get(*axis) {
                    Some(&d) => acc.checked_add(d),
                    None => Some(acc),
                });
            if sum.is_none() {
                return too_large();
            }
        }
        Op::Pad { before, after, .. } => {
            let dims = operands.first().map_or(&[][..], |t| t.shape.dims());
            for (i, &d) in dims.iter().enumerate() {
                let (b, a) = (before.get(i).copied().unwrap_or(0), after.get(i).copied().unwrap_or(0));
                if d.checked_add(b).and_then(|x| x.checked_add(a)).is_none() {
                    return too_large();
                }
            }
        }
        Op::Const { .. }
        | Op::MatMul { .. }
        | Op::Conv1x1
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Cast { .. }
        | Op::Select
        | Op::Identity => {}
    }
    Ok(())
}
