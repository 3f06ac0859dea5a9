//! Reverse-mode automatic differentiation as a graph transform.
//!
//! [`grad`] takes a forward graph and returns a new graph that computes the forward outputs and the
//! gradients of a seeded quantity with respect to chosen inputs:
//!
//! 1. the forward graph is copied node by node (same value ids, same outputs in the same order);
//! 2. the seed becomes cotangents of outputs: `Seed::Loss` gives a constant 1 for one scalar output,
//!    `Seed::Cotangents` adds one input `grad_<output>` per output (of the output's type), appended
//!    after the forward inputs in output order;
//! 3. the *active* values are those on a path from a `wrt` input to a seeded output (float values
//!    only: an integer or bool value breaks the path); only nodes defining an active value get a
//!    vector-Jacobian product (see `vjp`), visited in reverse topological order, and the cotangents
//!    of a value used several times are summed with `add`;
//! 4. one output `grad_<name>` per `wrt` input is appended; an input that does not influence the
//!    seeded outputs gets a zero gradient (a broadcast constant);
//! 5. backward nodes that feed no output (cotangents of operands nobody asked for, such as the
//!    weight gradient when only the activation gradient is wanted) are pruned. Forward nodes and
//!    inputs are always kept, so the forward part stays identical to the source graph.
//!
//! Invariants: every cotangent has exactly the type (dtype and shape) of its primal value, checked
//! as it is accumulated; the backward part runs in the dtype of the forward values (an f16 forward
//! gets an f16 backward, constants included); the result is a well-formed graph (node operands
//! defined earlier, types equal to inference) because it is built only through `add_node`.

mod vjp;

use crate::error::{CoreError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::Tensor;
use crate::types::TensorType;

/// What is differentiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// Differentiate the scalar (numel 1, float) output with this name; its cotangent is 1.
    Loss(String),
    /// One extra input per graph output, named "grad_<output name>", of the output's type.
    Cotangents,
}

/// Returns `g` extended with the gradients of the seeded outputs with respect to the inputs named
/// in `wrt` (outputs `grad_<name>`, after `g`'s own outputs).
pub fn grad(g: &Graph, wrt: &[&str], seed: Seed) -> Result<Graph> {
    let wrt_values = resolve_wrt(g, wrt)?;
    let mut out = copy_forward(g)?;
    let forward_nodes = out.nodes().len();
    let seeds = seed_cotangents(&mut out, &seed)?;
    let kept_prefix = out.nodes().len();
    let active = active_values(&out, forward_nodes, &wrt_values, &seeds);
    let cotangents = backward(&mut out, forward_nodes, &active, &seeds)?;
    for (name, v) in wrt.iter().zip(&wrt_values) {
        let gradient = match cotangents[v.index()] {
            Some(c) => c,
            None => zeros_like(&mut out, *v)?,
        };
        out.set_output(format!("grad_{name}"), gradient)?;
    }
    prune_backward(&out, kept_prefix)
}

fn autodiff_error(message: String) -> CoreError {
    CoreError::Autodiff { message }
}

/// The input values named by `wrt`; each must be a float input, named once.
fn resolve_wrt(g: &Graph, wrt: &[&str]) -> Result<Vec<ValueId>> {
    let mut values = Vec::with_capacity(wrt.len());
    for (i, name) in wrt.iter().enumerate() {
        if wrt[..i].contains(name) {
            return Err(autodiff_error(format!("input {name:?} is named twice in wrt")));
        }
        let (_, v, ty) = g.inputs().find(|(n, _, _)| n == name).ok_or_else(|| {
            autodiff_error(format!(
                "wrt names {name:?}, which is not an input of graph {}",
                g.name()
            ))
        })?;
        if !ty.dtype.is_float() {
            return Err(autodiff_error(format!(
                "cannot differentiate with respect to input {name:?} of type {ty}: \
                 only f32 and f16 inputs are differentiable"
            )));
        }
        values.push(v);
    }
    Ok(values)
}

/// A copy of `g` built with `add_node`, which re-checks every node; value ids are preserved.
fn copy_forward(g: &Graph) -> Result<Graph> {
    let mut out = Graph::new(format!("{}_grad", g.name()));
    for node in g.nodes() {
        let outputs = out.add_node(node.op.clone(), node.inputs.clone())?;
        if outputs != node.outputs {
            return Err(autodiff_error(format!(
                "graph {} is malformed: node {} defines {:?}, expected {:?} (run verify)",
                g.name(),
                node.op.name(),
                node.outputs,
                outputs
            )));
        }
    }
    for o in g.outputs() {
        out.set_output(o.name.clone(), o.value)?;
    }
    Ok(out)
}

/// Adds the seed to `g` and returns (seeded value, its cotangent) pairs; non-float outputs of
/// `Seed::Cotangents` get their input but no seed.
fn seed_cotangents(g: &mut Graph, seed: &Seed) -> Result<Vec<(ValueId, ValueId)>> {
    match seed {
        Seed::Loss(name) => {
            let v = g
                .output_value(name)
                .ok_or_else(|| autodiff_error(format!("seed names {name:?}, which is not an output")))?;
            let ty = g.ty(v).clone();
            if !ty.dtype.is_float() || ty.shape.numel() != 1 {
                return Err(autodiff_error(format!(
                    "loss output {name:?} has type {ty}; a loss must be a float with exactly one element"
                )));
            }
            let one = g.constant(Tensor::full(&ty, 1.0))?;
            Ok(vec![(v, one)])
        }
        Seed::Cotangents => {
            let outputs = g.outputs().to_vec();
            let mut seeds = Vec::with_capacity(outputs.len());
            for o in outputs {
                let ty = g.ty(o.value).clone();
                let float = ty.dtype.is_float();
                let cotangent = g.input(format!("grad_{}", o.name), ty)?;
                if float {
                    seeds.push((o.value, cotangent));
                }
            }
            Ok(seeds)
        }
    }
}

/// `active[v]`: v is a float value on a path from a wrt input to a seeded output.
fn active_values(g: &Graph, forward_nodes: usize, wrt: &[ValueId], seeds: &[(ValueId, ValueId)]) -> Vec<bool> {
    let n = g.values().len();
    let is_float = |v: ValueId| g.ty(v).dtype.is_float();
    let mut from_wrt = vec![false; n];
    for v in wrt {
        from_wrt[v.index()] = true;
    }
    for node in &g.nodes()[..forward_nodes] {
        if node.inputs.iter().any(|v| from_wrt[v.index()]) {
            for &v in &node.outputs {
                from_wrt[v.index()] = is_float(v);
            }
        }
    }
    let mut to_seed = vec![false; n];
    for (v, _) in seeds {
        to_seed[v.index()] = true;
    }
    for node in g.nodes()[..forward_nodes].iter().rev() {
        if node.outputs.iter().any(|v| to_seed[v.index()]) {
            for v in &node.inputs {
                to_seed[v.index()] = true;
            }
        }
    }
    (0..n).map(|i| from_wrt[i] && to_seed[i]).collect()
}

/// Walks the forward nodes in reverse, applying the VJP of every node that defines an active
/// value; returns the accumulated cotangent of every value (indexed by value id).
fn backward(
    g: &mut Graph,
    forward_nodes: usize,
    active: &[bool],
    seeds: &[(ValueId, ValueId)],
) -> Result<Vec<Option<ValueId>>> {
    let mut cotangents: Vec<Option<ValueId>> = vec![None; g.values().len()];
    for &(v, c) in seeds {
        if active[v.index()] {
            accumulate(g, &mut cotangents, v, c, "seed")?;
        }
    }
    for index in (0..forward_nodes).rev() {
        let node = g.nodes()[index].clone();
        if !node.outputs.iter().any(|v| active[v.index()]) {
            continue;
        }
        let outs: Vec<Option<ValueId>> = node.outputs.iter().map(|v| cotangents[v.index()]).collect();
        if outs.iter().all(Option::is_none) {
            continue;
        }
        let operand_cotangents = vjp::vjp(g, &node, &outs)?;
        for (&operand, c) in node.inputs.iter().zip(operand_cotangents) {
            if let Some(c) = c {
                if active[operand.index()] {
                    accumulate(g, &mut cotangents, operand, c, node.op.name())?;
                }
            }
        }
    }
    Ok(cotangents)
}

/// Adds `c` to the cotangent of `v`, checking that it has `v`'s type.
fn accumulate(g: &mut Graph, cotangents: &mut [Option<ValueId>], v: ValueId, c: ValueId, origin: &str) -> Result<()> {
    if g.ty(c) != g.ty(v) {
        return Err(autodiff_error(format!(
            "internal: the VJP of {origin} gave a cotangent of type {} for {v} of type {}",
            g.ty(c),
            g.ty(v)
        )));
    }
    let sum = match cotangents[v.index()] {
        Some(previous) => g.add(previous, c)?,
        None => c,
    };
    cotangents[v.index()] = Some(sum);
    Ok(())
}

/// A zero tensor of `v`'s type: a scalar constant broadcast to the shape.
fn zeros_like(g: &mut Graph, v: ValueId) -> Result<ValueId> {
    let TensorType { dtype, shape } = g.ty(v).clone();
    let zero = g.scalar(0.0, dtype)?;
    g.broadcast(zero, shape.dims())
}

/// Rebuilds `g` keeping its first `kept_prefix` nodes and, after them, only the nodes that
/// contribute to an output. Value ids of the kept prefix are unchanged.
fn prune_backward(g: &Graph, kept_prefix: usize) -> Result<Graph> {
    let nodes = g.nodes();
    let mut live = vec![false; g.values().len()];
    for o in g.outputs() {
        live[o.value.index()] = true;
    }
    let mut keep = vec![true; nodes.len()];
    for (index, node) in nodes.iter().enumerate().rev() {
        if index >= kept_prefix && !node.outputs.iter().any(|v| live[v.index()]) {
            keep[index] = false;
            continue;
        }
        for v in &node.inputs {
            live[v.index()] = true;
        }
    }
    let mut pruned = Graph::new(g.name());
    let mut map: Vec<Option<ValueId>> = vec![None; g.values().len()];
    for (node, _) in nodes.iter().zip(&keep).filter(|(_, k)| **k) {
        let inputs = node
            .inputs
            .iter()
            .map(|v| map[v.index()].ok_or_else(|| autodiff_error(format!("internal: pruned operand {v}"))))
            .collect::<Result<Vec<_>>>()?;
        let outputs = pruned.add_node(node.op.clone(), inputs)?;
        for (old, new) in node.outputs.iter().zip(outputs) {
            map[old.index()] = Some(new);
        }
    }
    for o in g.outputs() {
        let v = map[o.value.index()].ok_or_else(|| autodiff_error(format!("internal: pruned output {}", o.name)))?;
        pruned.set_output(o.name.clone(), v)?;
    }
    Ok(pruned)
}
