//! The reference interpreter: the executable definition of every op, written for clarity, not speed.
//!
//! `eval_op` evaluates one op on concrete operands; `interpret_all` is a loop over the graph's nodes
//! calling it; `interpret` returns the graph's named outputs. Every other executor (CPU backend,
//! simulated device, constant folding) is checked against this module.
//!
//! Invariants and semantics:
//! - `eval_op` first runs shape inference on the operands' actual types, so a malformed call is a
//!   `CoreError::Execute` (never a panic) and every result has exactly the inferred type.
//! - Results of dtype F16 are always rounded to half (ties to even), in both precisions.
//! - `Precision::F32`: float arithmetic in f32, as written in each kernel.
//! - `Precision::F16Rounding` mimics a device computing in fp16: every float operand is rounded to
//!   half before the op and every float result is rounded to half after it, whatever its declared
//!   dtype (an F32 value then holds a half-representable number). Graph inputs and constants are
//!   rounded when they are defined. Accumulations inside one op (matmul and conv1x1 sums,
//!   reductions, the softmax denominator, scatter-add sums) are carried out in f32 and rounded once.
//! - Math: erf is accurate to f32 rounding (see [`erf`]); rsqrt = 1/sqrt; sigmoid = 1/(1+exp(-x));
//!   relu keeps NaN; softmax subtracts the maximum first; reduce_mean = sum / count; pow = powf;
//!   maximum/minimum (and reduce_max) propagate NaN; i32 add/sub/mul and sums wrap on overflow;
//!   comparisons follow IEEE (anything compared with NaN is false).
//! - Cast: float -> i32 truncates toward zero and saturates (NaN -> 0); float/i32 -> bool is
//!   `x != 0` (NaN -> true); bool -> number is 0/1; i32 -> float rounds to nearest.
//! - Gather and scatter_add_rows with an index outside the table are `CoreError::Execute`.

mod elementwise;
pub mod index;
mod kernels;
mod shape_ops;
pub mod tolerance;

pub use elementwise::erf;

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node};
use crate::infer::infer_types;
use crate::op::Op;
use crate::tensor::{round_to_f16, Tensor, TensorData};
use crate::types::{DType, TensorType};
use std::borrow::Cow;

/// How float arithmetic is rounded; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Plain f32 arithmetic (F16-typed results are still rounded to half).
    F32,
    /// Every float operand and result rounded to half; accumulations inside an op in f32.
    F16Rounding,
}

/// Runs `g` on `inputs` (in the order of `g.inputs()`) and returns its outputs in the order of
/// `g.outputs()`.
pub fn interpret(g: &Graph, inputs: &[Tensor], precision: Precision) -> Result<Vec<Tensor>> {
    let values = interpret_all(g, inputs, precision)?;
    let mut outputs = Vec::with_capacity(g.outputs().len());
    for output in g.outputs() {
        let value = values.get(output.value.index()).ok_or_else(|| {
            exec_error(
                "output",
                format!("output {:?} names unknown value {}", output.name, output.value),
            )
        })?;
        outputs.push(value.clone());
    }
    Ok(outputs)
}

/// Runs `g` on `inputs` and returns every value of the graph, indexed by `ValueId`.
pub fn interpret_all(g: &Graph, inputs: &[Tensor], precision: Precision) -> Result<Vec<Tensor>> {
    check_inputs(g, inputs)?;
    let mut values: Vec<Option<Tensor>> = vec![None; g.values().len()];
    let mut next_input = inputs.iter();
    for node in g.nodes() {
        let results = match &node.op {
            Op::Input { name, .. } => {
                let given = next_input
                    .next()
                    .ok_or_else(|| exec_error("input", format!("no tensor given for input {name:?}")))?;
                vec![apply_precision(given.clone(), precision)?]
            }
            _ => {
                let operands = node_operands(node, &values)?;
                eval_op(&node.op, &operands, precision).map_err(|e| at_node(e, node))?
            }
        };
        store_results(node, results, &mut values)?;
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| exec_error("graph", format!("value %{i} is defined by no node"))))
        .collect()
}

/// Evaluates one op on concrete operands; returns one tensor per value the op defines.
pub fn eval_op(op: &Op, operands: &[&Tensor], precision: Precision) -> Result<Vec<Tensor>> {
    let operand_types: Vec<TensorType> = operands.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = operand_types.iter().collect();
    let expected = infer_types(op, &type_refs).map_err(|message| {
        let described: Vec<String> = operand_types.iter().map(|t| t.to_string()).collect();
        exec_error(op.name(), format!("{message}; operands: [{}]", described.join(", ")))
    })?;
    let rounded: Vec<Cow<'_, Tensor>> = operands
        .iter()
        .map(|t| round_operand(t, precision))
        .collect::<Result<_>>()?;
    let operands: Vec<&Tensor> = rounded.iter().map(|t| t.as_ref()).collect();
    let results = dispatch(op, &operands, &expected)?;
    let mut finished = Vec::with_capacity(results.len());
    for (result, ty) in results.into_iter().zip(&expected) {
        if result.ty() != *ty {
            return Err(exec_error(
                op.name(),
                format!("interpreter produced {} where {ty} was inferred", result.ty()),
            ));
        }
        finished.push(apply_precision(result, precision)?);
    }
    Ok(finished)
}

/// The kernel of each op; `out` holds the inferred result types.
fn dispatch(op: &Op, x: &[&Tensor], out: &[TensorType]) -> Result<Vec<Tensor>> {
    let one = |result: Result<Tensor>| result.map(|t| vec![t]);
    match op {
        Op::Input { name, .. } => Err(exec_error(
            "input",
            format!("input {name:?} has no value outside `interpret`"),
        )),
        Op::Const { value } => Ok(vec![value.as_ref().clone()]),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => one(kernels::matmul(x[0], x[1], *transpose_a, *transpose_b, &out[0])),
        Op::Conv1x1 => one(kernels::conv1x1(x[0], x[1], &out[0])),
        Op::Unary(u) => one(elementwise::unary(*u, x[0], &out[0])),
        Op::Binary(b) => one(elementwise::binary(*b, x[0], x[1], &out[0])),
        Op::Compare(c) => one(elementwise::compare(*c, x[0], x[1], &out[0])),
        Op::Softmax { axis } => one(kernels::softmax(x[0], *axis, &out[0])),
        Op::Reduce { op, axes, .. } => one(kernels::reduce(*op, x[0], axes, &out[0])),
        Op::Reshape { .. } => one(shape_ops::reshape(x[0], &out[0])),
        Op::Transpose { perm } => one(shape_ops::transpose(x[0], perm, &out[0])),
        Op::Slice { begin, .. } => one(shape_ops::slice(x[0], begin, &out[0])),
        Op::Concat { axis } => one(shape_ops::concat(x, *axis, &out[0])),
        Op::Split { axis, .. } => shape_ops::split(x[0], *axis, out),
        Op::Pad { before, value, .. } => one(shape_ops::pad(x[0], before, *value, &out[0])),
        Op::Gather => one(shape_ops::gather(x[0], x[1], &out[0])),
        Op::ScatterAddRows { .. } => one(kernels::scatter_add_rows(x[0], x[1], &out[0])),
        Op::Broadcast { .. } => one(shape_ops::broadcast(x[0], &out[0])),
        Op::Cast { to } => one(elementwise::cast(x[0], *to, &out[0])),
        Op::Select => one(elementwise::select(x[0], x[1], x[2], &out[0])),
        Op::Identity => Ok(vec![x[0].clone()]),
    }
}

/// Checks the count, dtype and shape of the given inputs against the graph's declared inputs.
fn check_inputs(g: &Graph, inputs: &[Tensor]) -> Result<()> {
    let declared: Vec<(&str, &TensorType)> = g.inputs().map(|(name, _, ty)| (name, ty)).collect();
    if declared.len() != inputs.len() {
        let names: Vec<&str> = declared.iter().map(|(n, _)| *n).collect();
        return Err(exec_error(
            "input",
            format!(
                "graph {} takes {} input(s) {names:?}, got {}",
                g.name(),
                declared.len(),
                inputs.len()
            ),
        ));
    }
    for ((name, ty), given) in declared.into_iter().zip(inputs) {
        if given.ty() != *ty {
            return Err(exec_error(
                "input",
                format!("input {name:?} is declared {ty}, got {}", given.ty()),
            ));
        }
    }
    Ok(())
}

/// The operand tensors of `node`, all defined by earlier nodes.
fn node_operands<'a>(node: &Node, values: &'a [Option<Tensor>]) -> Result<Vec<&'a Tensor>> {
    node.inputs
        .iter()
        .map(|v| {
            values
                .get(v.index())
                .and_then(Option::as_ref)
                .ok_or_else(|| exec_error(node.op.name(), format!("operand {v} is not defined before its use")))
        })
        .collect()
}

/// Stores `results` in the slots of `node`'s output values.
fn store_results(node: &Node, results: Vec<Tensor>, values: &mut [Option<Tensor>]) -> Result<()> {
    if results.len() != node.outputs.len() {
        return Err(exec_error(
            node.op.name(),
            format!(
                "node defines {} value(s) but the op produced {}",
                node.outputs.len(),
                results.len()
            ),
        ));
    }
    for (v, t) in node.outputs.iter().zip(results) {
        let slot = values
            .get_mut(v.index())
            .ok_or_else(|| exec_error(node.op.name(), format!("node defines unknown value {v}")))?;
        *slot = Some(t);
    }
    Ok(())
}

/// Adds the node's first value to an execution error, so the user can find the node.
fn at_node(error: CoreError, node: &Node) -> CoreError {
    match (error, node.outputs.first()) {
        (CoreError::Execute { op, message }, Some(v)) => CoreError::Execute {
            op,
            message: format!("at {v}: {message}"),
        },
        (other, _) => other,
    }
}

/// An operand as the op sees it: rounded to half in `F16Rounding` mode when it is an f32 tensor.
fn round_operand(t: &Tensor, precision: Precision) -> Result<Cow<'_, Tensor>> {
    if precision == Precision::F16Rounding && t.dtype() == DType::F32 {
        Ok(Cow::Owned(round_f32_tensor(t)?))
    } else {
        Ok(Cow::Borrowed(t))
    }
}

/// A result as the op delivers it: rounded to half in `F16Rounding` mode when it is an f32 tensor.
fn apply_precision(t: Tensor, precision: Precision) -> Result<Tensor> {
    if precision == Precision::F16Rounding && t.dtype() == DType::F32 {
        round_f32_tensor(&t)
    } else {
        Ok(t)
    }
}

/// The same f32 tensor with every element rounded to the nearest half value.
fn round_f32_tensor(t: &Tensor) -> Result<Tensor> {
    let data = match t.data() {
        TensorData::Float(v) => TensorData::Float(v.iter().map(|&x| round_to_f16(x)).collect()),
        other => other.clone(),
    };
    Ok(Tensor::new(t.dtype(), t.shape().clone(), data)?)
}

/// An execution error of op `op`.
pub(crate) fn exec_error(op: &str, message: String) -> CoreError {
    CoreError::Execute {
        op: op.to_string(),
        message,
    }
}

/// Float elements of an operand, or an error naming the op.
pub(crate) fn float_data<'a>(t: &'a Tensor, op: &str) -> Result<&'a [f32]> {
    t.as_f32()
        .ok_or_else(|| exec_error(op, format!("expects a float operand, got {}", t.ty())))
}

/// Builds a result tensor of type `ty` from `data`.
pub(crate) fn make_tensor(ty: &TensorType, data: TensorData) -> Result<Tensor> {
    Ok(Tensor::new(ty.dtype, ty.shape.clone(), data)?)
}
