//! MIL → IR: builds an Orion `Graph` from one MIL function, so that the reference interpreter can run
//! exactly the program text the device would receive.
//!
//! Mapping: function parameters become `Input` nodes with the same names and types (fp16 → F16,
//! fp32 → F32, int32 → I32, bool → Bool); returned variables become graph outputs with the same names;
//! each operation becomes one or more IR nodes (see `ops` and `shape_ops`). Constants are bound lazily:
//! a const used as a tensor operand becomes one `Const` node (created on first use), a const used as a
//! parameter (axes, perm, shapes, flags, strings) is read as a value and never becomes a node, and an
//! unused const produces nothing. BLOBFILE constants are fetched through a [`WeightResolver`].
//!
//! Invariants: every declared MIL type is checked against the type the IR infers for the value it names
//! (a mismatch is an error naming the variable), so every bound value has at most `MAX_ELEMENTS`
//! elements and later shape arithmetic cannot overflow; variables are defined once and used after their
//! definition; negative axes are normalised before they reach the IR; every error carries the line of
//! the offending statement and never panics on a malformed program.

use super::ast::{Argument, Function, Literal, MilDType, MilType, Operation, Program, Value};
use super::error::MilError;
use super::ops;
use super::resolver::WeightResolver;
use orion_core::{CoreError, DType, Graph, Tensor, TensorData, TensorType, ValueId};
use std::borrow::Cow;
use std::collections::HashMap;

/// Converts the function called `function` of `program` into an IR graph named after it.
pub fn to_graph(program: &Program, function: &str, weights: &dyn WeightResolver) -> Result<Graph, MilError> {
    let f = program.function(function).ok_or_else(|| {
        let names: Vec<&str> = program.functions.iter().map(|f| f.name.as_str()).collect();
        MilError::new(format!("program has no function '{function}' (functions: {names:?})"))
    })?;
    let mut cx = Converter {
        graph: Graph::new(f.name.clone()),
        env: HashMap::new(),
        consts: Vec::new(),
        weights,
    };
    cx.params(f)?;
    for op in &f.operations {
        if op.op == "const" {
            cx.constant(op)?;
        } else {
            let values = ops::convert(&mut cx, op)?;
            cx.bind(op, &values)?;
        }
    }
    cx.outputs(f)?;
    Ok(cx.graph)
}

/// The value a MIL const holds, decoded from its literal.
#[derive(Clone, Debug)]
pub(super) enum ConstData {
    /// Numbers and flags. Integer MIL types other than int32 are held as I32 when they fit.
    Tensor(Tensor),
    /// A string scalar (`pad_type`, `mode`, `dtype`, …).
    Text(String),
}

#[derive(Debug)]
struct ConstEntry {
    ty: MilType,
    data: ConstData,
    /// The `Const` node, once the const has been used as a tensor operand.
    node: Option<ValueId>,
}

#[derive(Clone, Copy, Debug)]
enum Binding {
    Value(ValueId),
    Const(usize),
}

/// Conversion state of one function: the graph so far and what every MIL variable is bound to.
pub(super) struct Converter<'a> {
    pub graph: Graph,
    env: HashMap<String, Binding>,
    consts: Vec<ConstEntry>,
    weights: &'a dyn WeightResolver,
}

impl Converter<'_> {
    // ---- function structure --------------------------------------------------------------------

    fn params(&mut self, f: &Function) -> Result<(), MilError> {
        for param in &f.params {
            let at = |m: String| MilError::at(f.line, 0, format!("parameter '{}': {m}", param.name));
            let ty = ir_type(&param.ty).map_err(at)?;
            let value = self
                .graph
                .input(param.name.clone(), ty)
                .map_err(|e| at(e.to_string()))?;
            self.define(&param.name, Binding::Value(value), f.line)?;
        }
        Ok(())
    }

    fn outputs(&mut self, f: &Function) -> Result<(), MilError> {
        for name in &f.outputs {
            let at = |m: String| MilError::at(f.line, 0, format!("returned variable '{name}': {m}"));
            let value = match self.env.get(name) {
                Some(&Binding::Value(v)) => v,
                Some(&Binding::Const(index)) => self.const_node(index).map_err(at)?,
                None => {
                    return Err(MilError::at(
                        f.line,
                        0,
                        format!("returned variable '{name}' is not defined"),
                    ))
                }
            };
            self.graph
                .set_output(name.clone(), value)
                .map_err(|e| at(e.to_string()))?;
        }
        Ok(())
    }

    fn define(&mut self, name: &str, binding: Binding, line: usize) -> Result<(), MilError> {
        if self.env.insert(name.to_string(), binding).is_some() {
            return Err(MilError::at(line, 0, format!("variable '{name}' is defined twice")));
        }
        Ok(())
    }

    /// `T name = const()[…, val = LITERAL];`
    fn constant(&mut self, op: &Operation) -> Result<(), MilError> {
        let [(name, declared)] = op.results.as_slice() else {
            return Err(op_error(op, "a const defines exactly one variable"));
        };
        if let Some((arg, _)) = op.args.first() {
            return Err(op_error(op, &format!("a const takes no arguments, found '{arg}'")));
        }
        let literal = op
            .attribute("val")
            .ok_or_else(|| op_error(op, "const has no 'val' attribute"))?;
        if literal.ty != *declared {
            return Err(op_error(
                op,
                &format!(
                    "variable '{name}' is declared {declared} but its value is {}",
                    literal.ty
                ),
            ));
        }
        let data = self.decode(literal).map_err(|m| op_error(op, &m))?;
        self.consts.push(ConstEntry {
            ty: declared.clone(),
            data,
            node: None,
        });
        self.define(name, Binding::Const(self.consts.len() - 1), op.line)
    }

    /// Checks the values an operation produced against its declared results and binds the names.
    fn bind(&mut self, op: &Operation, values: &[ValueId]) -> Result<(), MilError> {
        if values.len() != op.results.len() {
            return Err(op_error(
                op,
                &format!("declares {} result(s) but produces {}", op.results.len(), values.len()),
            ));
        }
        for ((name, declared), &value) in op.results.iter().zip(values) {
            let declared_ir = ir_type(declared).map_err(|m| op_error(op, &format!("variable '{name}': {m}")))?;
            let actual = self.graph.ty(value);
            if declared_ir != *actual {
                return Err(op_error(
                    op,
                    &format!("variable '{name}' is declared {declared_ir} but the operation produces {actual}"),
                ));
            }
            self.define(name, Binding::Value(value), op.line)?;
        }
        Ok(())
    }

    // ---- operands and parameters (used by the op converters) -----------------------------------

    /// Fails when `op` has an argument not in `allowed`.
    pub(super) fn check_params(&self, op: &Operation, allowed: &[&str]) -> Result<(), MilError> {
        match op.args.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((name, _)) => Err(op_error(
                op,
                &format!("unexpected parameter '{name}' (accepted: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The tensor operand `name` (required).
    pub(super) fn tensor(&mut self, op: &Operation, name: &str) -> Result<ValueId, MilError> {
        self.opt_tensor(op, name)?
            .ok_or_else(|| op_error(op, &format!("missing parameter '{name}'")))
    }

    /// The tensor operand `name`, if given.
    pub(super) fn opt_tensor(&mut self, op: &Operation, name: &str) -> Result<Option<ValueId>, MilError> {
        let Some(arg) = op.arg(name) else {
            return Ok(None);
        };
        let at = |m: String| op_error(op, &format!("parameter '{name}': {m}"));
        let value = match arg {
            Argument::Var(var) => self.var_value(var).map_err(at)?,
            Argument::Literal(lit) => {
                let data = self.decode(lit).map_err(at)?;
                self.make_const_node(&lit.ty, &data).map_err(at)?
            }
            Argument::Tuple(_) => return Err(at("expected one variable, found a tuple".to_string())),
        };
        Ok(Some(value))
    }

    /// The tuple operand `name` (concat's `values`).
    pub(super) fn tuple(&mut self, op: &Operation, name: &str) -> Result<Vec<ValueId>, MilError> {
        let at = |m: String| op_error(op, &format!("parameter '{name}': {m}"));
        match op.arg(name) {
            Some(Argument::Tuple(vars)) => {
                let mut values = Vec::with_capacity(vars.len());
                for var in vars {
                    values.push(self.var_value(var).map_err(at)?);
                }
                Ok(values)
            }
            Some(_) => Err(at("expected a tuple of variables".to_string())),
            None => Err(at("missing".to_string())),
        }
    }

    /// The value of a const parameter, `None` when absent; an error when it is not a const.
    pub(super) fn const_param(&self, op: &Operation, name: &str) -> Result<Option<Cow<'_, ConstData>>, MilError> {
        let at = |m: String| op_error(op, &format!("parameter '{name}': {m}"));
        match op.arg(name) {
            None => Ok(None),
            Some(Argument::Var(var)) => match self.env.get(var) {
                Some(&Binding::Const(index)) => Ok(Some(Cow::Borrowed(&self.consts[index].data))),
                Some(Binding::Value(_)) => Err(at(format!("'{var}' must be a const"))),
                None => Err(at(format!("'{var}' is not defined"))),
            },
            Some(Argument::Literal(lit)) => Ok(Some(Cow::Owned(self.decode(lit).map_err(at)?))),
            Some(Argument::Tuple(_)) => Err(at("expected a const, found a tuple".to_string())),
        }
    }

    /// Integer list parameter (a scalar counts as a list of one).
    pub(super) fn ints(&self, op: &Operation, name: &str) -> Result<Option<Vec<i64>>, MilError> {
        match self.const_param(op, name)?.as_deref() {
            None => Ok(None),
            Some(ConstData::Tensor(t)) => match t.as_i32() {
                Some(v) => Ok(Some(v.iter().map(|&x| i64::from(x)).collect())),
                None => Err(op_error(
                    op,
                    &format!("parameter '{name}' must hold integers, got {}", t.ty()),
                )),
            },
            Some(ConstData::Text(_)) => Err(op_error(op, &format!("parameter '{name}' must hold integers"))),
        }
    }

    /// Integer scalar parameter.
    pub(super) fn int(&self, op: &Operation, name: &str) -> Result<Option<i64>, MilError> {
        match self.ints(op, name)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(op_error(
                op,
                &format!("parameter '{name}' must be one integer, got {v:?}"),
            )),
        }
    }

    /// Bool list parameter (a scalar counts as a list of one).
    pub(super) fn bools(&self, op: &Operation, name: &str) -> Result<Option<Vec<bool>>, MilError> {
        match self.const_param(op, name)?.as_deref() {
            None => Ok(None),
            Some(ConstData::Tensor(t)) => match t.as_bool() {
                Some(v) => Ok(Some(v.to_vec())),
                None => Err(op_error(
                    op,
                    &format!("parameter '{name}' must hold bools, got {}", t.ty()),
                )),
            },
            Some(ConstData::Text(_)) => Err(op_error(op, &format!("parameter '{name}' must hold bools"))),
        }
    }

    /// Bool scalar parameter.
    pub(super) fn flag(&self, op: &Operation, name: &str) -> Result<Option<bool>, MilError> {
        match self.bools(op, name)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(op_error(op, &format!("parameter '{name}' must be one bool, got {v:?}"))),
        }
    }

    /// Float scalar parameter.
    pub(super) fn float(&self, op: &Operation, name: &str) -> Result<Option<f32>, MilError> {
        match self.const_param(op, name)?.as_deref() {
            None => Ok(None),
            Some(ConstData::Tensor(t)) if t.numel() == 1 && t.dtype() != DType::Bool => Ok(Some(t.to_f32_vec()[0])),
            Some(_) => Err(op_error(op, &format!("parameter '{name}' must be one number"))),
        }
    }

    /// String scalar parameter.
    pub(super) fn text(&self, op: &Operation, name: &str) -> Result<Option<String>, MilError> {
        match self.const_param(op, name)?.as_deref() {
            None => Ok(None),
            Some(ConstData::Text(s)) => Ok(Some(s.clone())),
            Some(ConstData::Tensor(_)) => Err(op_error(op, &format!("parameter '{name}' must be a string"))),
        }
    }

    // ---- constants -----------------------------------------------------------------------------

    /// The graph value a variable names, creating the `Const` node of a const on first use.
    fn var_value(&mut self, var: &str) -> Result<ValueId, String> {
        match self.env.get(var) {
            Some(&Binding::Value(v)) => Ok(v),
            Some(&Binding::Const(index)) => self.const_node(index),
            None => Err(format!("'{var}' is not defined")),
        }
    }

    fn const_node(&mut self, index: usize) -> Result<ValueId, String> {
        if let Some(node) = self.consts[index].node {
            return Ok(node);
        }
        let entry = &self.consts[index];
        let (ty, data) = (entry.ty.clone(), entry.data.clone());
        let node = self.make_const_node(&ty, &data)?;
        self.consts[index].node = Some(node);
        Ok(node)
    }

    fn make_const_node(&mut self, ty: &MilType, data: &ConstData) -> Result<ValueId, String> {
        ir_type(ty)?;
        match data {
            ConstData::Tensor(t) => self.graph.constant(t.clone()).map_err(|e| e.to_string()),
            ConstData::Text(_) => Err("a string cannot be a tensor operand".to_string()),
        }
    }

    /// Decodes a literal into const data, resolving BLOBFILE references.
    fn decode(&self, lit: &Literal) -> Result<ConstData, String> {
        let (dtype, dims) = lit
            .ty
            .known_tensor()
            .ok_or_else(|| format!("constants of type {} are not supported", lit.ty))?;
        if let Value::Blob { path, offset } = &lit.value {
            let tensor = self.weights.resolve(path, *offset, &lit.ty)?;
            let expected = ir_type(&lit.ty)?;
            if tensor.ty() != expected {
                return Err(format!(
                    "weight resolver returned {} for a {expected} constant",
                    tensor.ty()
                ));
            }
            return Ok(ConstData::Tensor(tensor));
        }
        if dtype == MilDType::String {
            return match (&lit.value, dims.is_empty()) {
                (Value::Str(s), true) => Ok(ConstData::Text(s.clone())),
                _ => Err("only scalar strings are supported".to_string()),
            };
        }
        let leaves = flatten(&lit.value)?;
        let count = element_count(&dims)?;
        if leaves.len() != count {
            return Err(format!("{} values given for {count} elements", leaves.len()));
        }
        let (ir, data) = leaf_data(dtype, &leaves)?;
        Tensor::new(ir, dims, data)
            .map(ConstData::Tensor)
            .map_err(|e| e.to_string())
    }
}

/// An error about `op`, located at its line and naming the operation and its first result.
pub(super) fn op_error(op: &Operation, message: &str) -> MilError {
    let result = op.results.first().map(|(n, _)| n.as_str()).unwrap_or("?");
    MilError::at(op.line, 0, format!("{} '{result}': {message}", op.op))
}

/// Turns a graph-building error into an error about `op`.
pub(super) fn graph_error(op: &Operation) -> impl Fn(CoreError) -> MilError + '_ {
    move |e| op_error(op, &e.to_string())
}

/// Most elements a tensor type may declare (keeps all shape arithmetic far from overflow).
const MAX_ELEMENTS: usize = 1 << 40;

/// Element count of `dims`, or an error when it exceeds [`MAX_ELEMENTS`].
pub(super) fn element_count(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("extents {dims:?} exceed {MAX_ELEMENTS} elements"))
}

/// The IR type of a MIL tensor type with an IR element type and known extents.
pub(super) fn ir_type(ty: &MilType) -> Result<TensorType, String> {
    let (dtype, dims) = ty
        .known_tensor()
        .ok_or_else(|| format!("{ty} is not a tensor type with known extents"))?;
    let dtype = ir_dtype(dtype).ok_or_else(|| format!("element type {dtype} has no IR equivalent"))?;
    element_count(&dims)?;
    Ok(TensorType::new(dtype, dims))
}

/// fp16 → F16, fp32 → F32, int32 → I32, bool → Bool; nothing else.
pub(super) fn ir_dtype(dtype: MilDType) -> Option<DType> {
    match dtype {
        MilDType::Fp16 => Some(DType::F16),
        MilDType::Fp32 => Some(DType::F32),
        MilDType::Int32 => Some(DType::I32),
        MilDType::Bool => Some(DType::Bool),
        _ => None,
    }
}

/// The scalar leaves of a (possibly nested) list value, in row-major order; iterative.
fn flatten(value: &Value) -> Result<Vec<&Value>, String> {
    let mut leaves = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::List(items) => stack.extend(items.iter().rev()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => leaves.push(v),
            Value::Str(_) | Value::Tuple(_) | Value::Dict(_) | Value::Blob { .. } => {
                return Err(format!("unexpected {v:?} in a tensor constant"))
            }
        }
    }
    Ok(leaves)
}

/// Element data of a numeric or bool constant. Float types other than fp16 are held as F32, integer
/// types as I32 (values must fit).
fn leaf_data(dtype: MilDType, leaves: &[&Value]) -> Result<(DType, TensorData), String> {
    if dtype.is_float() {
        let values = leaves
            .iter()
            .map(|v| match v {
                Value::Float(f) => Ok(*f as f32),
                Value::Int(i) => Ok(*i as f32),
                other => Err(format!("{other:?} is not a number")),
            })
            .collect::<Result<Vec<f32>, String>>()?;
        let ir = if dtype == MilDType::Fp16 {
            DType::F16
        } else {
            DType::F32
        };
        return Ok((ir, TensorData::Float(values)));
    }
    if dtype == MilDType::Bool {
        let values = leaves
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                other => Err(format!("{other:?} is not a bool")),
            })
            .collect::<Result<Vec<bool>, String>>()?;
        return Ok((DType::Bool, TensorData::Bool(values)));
    }
    let values = leaves
        .iter()
        .map(|v| match v {
            Value::Int(i) => i32::try_from(*i).map_err(|_| format!("{i} does not fit int32")),
            other => Err(format!("{other:?} is not an integer")),
        })
        .collect::<Result<Vec<i32>, String>>()?;
    Ok((DType::I32, TensorData::I32(values)))
}
