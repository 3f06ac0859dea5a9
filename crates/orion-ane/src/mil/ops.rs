//! The MIL operation table of MIL → IR: one converter per MIL operation name, appending IR nodes.
//!
//! Parameter names, defaults and meanings follow coremltools' op definitions (iOS15–iOS18):
//! - elementwise: `add sub mul real_div maximum minimum pow` (x, y) → `Binary`; `equal less less_equal
//!   greater greater_equal` → `Compare`; `not_equal` → `select(equal, false, true)`;
//! - unary: `exp sqrt tanh sigmoid relu erf` → `Unary`; `log` (epsilon, default 1e-45), `rsqrt`
//!   (epsilon, default 1e-12) and `inverse` (epsilon, default 1e-4) compute `f(x + epsilon)`, the add
//!   omitted when epsilon is 0 in x's element type; `square` = x·x; `clip` = min(max(x, alpha), beta);
//! - composites expanded into primitives: `silu`, `gelu` (mode EXACT = default, TANH_APPROXIMATION,
//!   SIGMOID_APPROXIMATION = x·sigmoid(1.702x)), `layer_norm` (axes default all, gamma/beta
//!   optional, epsilon default 1e-5), `linear` (x·Wᵀ + bias);
//! - `softmax` (axis default −1), `reduce_sum/mean/max` (axes default all, keep_dims default false),
//!   `matmul` (transpose_x/y default false), `conv` (1×1 kernel, groups 1, stride and dilation 1, no
//!   padding; optional bias added as `[1, C, 1, 1]`), `cast` (dtype fp16/fp32/int32/bool), `select`,
//!   `identity`; shape operations live in `shape_ops`.
//!
//! Anything else is an error naming the operation; an unsupported setting of a supported operation is
//! an error naming the setting. Converters never panic on a malformed operation.

use super::ast::Operation;
use super::error::MilError;
use super::shape_ops;
use super::to_graph::{graph_error, op_error, Converter};
use orion_core::composite;
use orion_core::{BinaryOp, CompareOp, DType, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};

/// Appends the IR nodes of `op` and returns the values of its results in order.
pub(super) fn convert(cx: &mut Converter<'_>, op: &Operation) -> Result<Vec<ValueId>, MilError> {
    let one = |r: Result<ValueId, MilError>| r.map(|v| vec![v]);
    match op.op.as_str() {
        "add" => one(binary(cx, op, BinaryOp::Add)),
        "sub" => one(binary(cx, op, BinaryOp::Sub)),
        "mul" => one(binary(cx, op, BinaryOp::Mul)),
        "real_div" => one(binary(cx, op, BinaryOp::Div)),
        "maximum" => one(binary(cx, op, BinaryOp::Maximum)),
        "minimum" => one(binary(cx, op, BinaryOp::Minimum)),
        "pow" => one(binary(cx, op, BinaryOp::Pow)),
        "equal" => one(compare(cx, op, CompareOp::Equal)),
        "less" => one(compare(cx, op, CompareOp::Less)),
        "less_equal" => one(compare(cx, op, CompareOp::LessEqual)),
        "greater" => one(compare(cx, op, CompareOp::Greater)),
        "greater_equal" => one(compare(cx, op, CompareOp::GreaterEqual)),
        "not_equal" => one(not_equal(cx, op)),
        "exp" => one(unary(cx, op, UnaryOp::Exp)),
        "sqrt" => one(unary(cx, op, UnaryOp::Sqrt)),
        "tanh" => one(unary(cx, op, UnaryOp::Tanh)),
        "sigmoid" => one(unary(cx, op, UnaryOp::Sigmoid)),
        "relu" => one(unary(cx, op, UnaryOp::Relu)),
        "erf" => one(unary(cx, op, UnaryOp::Erf)),
        "sin" => one(unary(cx, op, UnaryOp::Sin)),
        "cos" => one(unary(cx, op, UnaryOp::Cos)),
        "log" => one(unary_with_epsilon(cx, op, UnaryOp::Log, 1e-45)),
        "rsqrt" => one(unary_with_epsilon(cx, op, UnaryOp::Rsqrt, 1e-12)),
        "inverse" => one(unary_with_epsilon(cx, op, UnaryOp::Reciprocal, 1e-4)),
        "square" => one(square(cx, op)),
        "clip" => one(clip(cx, op)),
        "silu" => one(silu(cx, op)),
        "gelu" => one(gelu(cx, op)),
        "softmax" => one(softmax(cx, op)),
        "reduce_sum" => one(reduce(cx, op, ReduceOp::Sum)),
        "reduce_mean" => one(reduce(cx, op, ReduceOp::Mean)),
        "reduce_max" => one(reduce(cx, op, ReduceOp::Max)),
        "matmul" => one(matmul(cx, op)),
        "linear" => one(linear(cx, op)),
        "conv" => one(conv(cx, op)),
        "layer_norm" => one(layer_norm(cx, op)),
        "cast" => one(cast(cx, op)),
        "select" => one(select(cx, op)),
        "identity" => one(identity(cx, op)),
        "reshape" => one(shape_ops::reshape(cx, op)),
        "transpose" => one(shape_ops::transpose(cx, op)),
        "slice_by_index" => one(shape_ops::slice_by_index(cx, op)),
        "slice_by_size" => one(shape_ops::slice_by_size(cx, op)),
        "concat" => one(shape_ops::concat(cx, op)),
        "split" => shape_ops::split(cx, op),
        "pad" => one(shape_ops::pad(cx, op)),
        "gather" => one(shape_ops::gather(cx, op)),
        other => Err(op_error(op, &format!("unsupported operation '{other}'"))),
    }
}

/// Normalises a possibly negative axis against `rank`.
pub(super) fn axis(op: &Operation, axis: i64, rank: usize) -> Result<usize, MilError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(op_error(op, &format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// The extents of value `v`.
pub(super) fn dims(cx: &Converter<'_>, v: ValueId) -> Vec<usize> {
    cx.graph.dims(v)
}

fn binary(cx: &mut Converter<'_>, op: &Operation, b: BinaryOp) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "y"])?;
    let x = cx.tensor(op, "x")?;
    let y = cx.tensor(op, "y")?;
    cx.graph.binary(b, x, y).map_err(graph_error(op))
}

fn compare(cx: &mut Converter<'_>, op: &Operation, c: CompareOp) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "y"])?;
    let x = cx.tensor(op, "x")?;
    let y = cx.tensor(op, "y")?;
    cx.graph.compare(c, x, y).map_err(graph_error(op))
}

fn not_equal(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    let equal = compare(cx, op, CompareOp::Equal)?;
    let g = &mut cx.graph;
    let no = g.constant(Tensor::bool([], vec![false])).map_err(graph_error(op))?;
    let yes = g.constant(Tensor::bool([], vec![true])).map_err(graph_error(op))?;
    g.select(equal, no, yes).map_err(graph_error(op))
}

fn unary(cx: &mut Converter<'_>, op: &Operation, u: UnaryOp) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x"])?;
    let x = cx.tensor(op, "x")?;
    cx.graph.unary(u, x).map_err(graph_error(op))
}

/// `u(x + epsilon)` with MIL's default epsilon when the parameter is absent.
fn unary_with_epsilon(cx: &mut Converter<'_>, op: &Operation, u: UnaryOp, default: f32) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "epsilon"])?;
    let x = cx.tensor(op, "x")?;
    let epsilon = cx.float(op, "epsilon")?.unwrap_or(default);
    let shifted = add_epsilon(cx, op, x, epsilon)?;
    cx.graph.unary(u, shifted).map_err(graph_error(op))
}

/// `x + epsilon` in x's element type, or `x` itself when epsilon rounds to zero there.
fn add_epsilon(cx: &mut Converter<'_>, op: &Operation, x: ValueId, epsilon: f32) -> Result<ValueId, MilError> {
    let dtype = cx.graph.dtype(x);
    let constant = Tensor::full(&TensorType::new(dtype, []), epsilon);
    if constant.to_f32_vec().iter().all(|&e| e == 0.0) {
        return Ok(x);
    }
    let e = cx.graph.constant(constant).map_err(graph_error(op))?;
    cx.graph.add(x, e).map_err(graph_error(op))
}

fn square(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x"])?;
    let x = cx.tensor(op, "x")?;
    cx.graph.mul(x, x).map_err(graph_error(op))
}

fn clip(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "alpha", "beta"])?;
    let x = cx.tensor(op, "x")?;
    let alpha = cx.tensor(op, "alpha")?;
    let beta = cx.tensor(op, "beta")?;
    let low = cx.graph.binary(BinaryOp::Maximum, x, alpha).map_err(graph_error(op))?;
    cx.graph.binary(BinaryOp::Minimum, low, beta).map_err(graph_error(op))
}

fn silu(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x"])?;
    let x = cx.tensor(op, "x")?;
    composite::silu(&mut cx.graph, x).map_err(graph_error(op))
}

fn gelu(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "mode"])?;
    let x = cx.tensor(op, "x")?;
    let mode = cx.text(op, "mode")?.unwrap_or_else(|| "EXACT".to_string());
    let g = &mut cx.graph;
    match mode.as_str() {
        "EXACT" => composite::gelu_exact(g, x).map_err(graph_error(op)),
        "TANH_APPROXIMATION" => composite::gelu_tanh(g, x).map_err(graph_error(op)),
        "SIGMOID_APPROXIMATION" => {
            let scaled = g.mul_scalar(x, 1.702).map_err(graph_error(op))?;
            let s = g.unary(UnaryOp::Sigmoid, scaled).map_err(graph_error(op))?;
            g.mul(x, s).map_err(graph_error(op))
        }
        other => Err(op_error(op, &format!("unsupported gelu mode '{other}'"))),
    }
}

fn softmax(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "axis"])?;
    let x = cx.tensor(op, "x")?;
    let a = axis(op, cx.int(op, "axis")?.unwrap_or(-1), cx.graph.rank(x))?;
    cx.graph.softmax(x, a as isize).map_err(graph_error(op))
}

/// Normalised, sorted, unique axes of parameter `name`, or every axis when it is absent.
fn axes_param(cx: &Converter<'_>, op: &Operation, name: &str, rank: usize) -> Result<Vec<isize>, MilError> {
    let mut axes = match cx.ints(op, name)? {
        Some(list) => list
            .into_iter()
            .map(|a| axis(op, a, rank).map(|a| a as isize))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank as isize).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

fn reduce(cx: &mut Converter<'_>, op: &Operation, r: ReduceOp) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "axes", "keep_dims"])?;
    let x = cx.tensor(op, "x")?;
    let axes = axes_param(cx, op, "axes", cx.graph.rank(x))?;
    let keep_dims = cx.flag(op, "keep_dims")?.unwrap_or(false);
    cx.graph.reduce(r, x, &axes, keep_dims).map_err(graph_error(op))
}

fn matmul(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "y", "transpose_x", "transpose_y"])?;
    let x = cx.tensor(op, "x")?;
    let y = cx.tensor(op, "y")?;
    let tx = cx.flag(op, "transpose_x")?.unwrap_or(false);
    let ty = cx.flag(op, "transpose_y")?.unwrap_or(false);
    cx.graph.matmul(x, y, tx, ty).map_err(graph_error(op))
}

/// `x · weightᵀ + bias` for weight `[out, in]`.
fn linear(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "weight", "bias"])?;
    let x = cx.tensor(op, "x")?;
    let weight = cx.tensor(op, "weight")?;
    let bias = cx.opt_tensor(op, "bias")?;
    let y = cx.graph.matmul(x, weight, false, true).map_err(graph_error(op))?;
    match bias {
        Some(b) => cx.graph.add(y, b).map_err(graph_error(op)),
        None => Ok(y),
    }
}

/// 1×1 convolution: the only form the IR has (ane.md §2); every other setting is refused by name.
fn conv(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    let accepted = [
        "x",
        "weight",
        "bias",
        "strides",
        "pad_type",
        "pad",
        "dilations",
        "groups",
    ];
    cx.check_params(op, &accepted)?;
    let x = cx.tensor(op, "x")?;
    let weight = cx.tensor(op, "weight")?;
    let w = dims(cx, weight);
    if w.len() != 4 || w[2] != 1 || w[3] != 1 {
        return Err(op_error(
            op,
            &format!("weight {w:?}: only [Cout, Cin, 1, 1] (1x1) kernels are supported"),
        ));
    }
    let groups = cx.int(op, "groups")?.unwrap_or(1);
    if groups != 1 {
        return Err(op_error(op, &format!("groups = {groups} is not supported (only 1)")));
    }
    for name in ["strides", "dilations"] {
        if let Some(v) = cx.ints(op, name)?.filter(|v| v.iter().any(|&s| s != 1)) {
            return Err(op_error(op, &format!("{name} = {v:?} is not supported (only 1)")));
        }
    }
    let pad_type = cx.text(op, "pad_type")?.unwrap_or_else(|| "valid".to_string());
    let pad = cx.ints(op, "pad")?.unwrap_or_default();
    match pad_type.as_str() {
        // With a 1x1 kernel and stride 1, "same" needs no padding and equals "valid".
        "valid" | "same" | "same_lower" => {}
        "custom" if pad.iter().all(|&p| p == 0) => {}
        "custom" => return Err(op_error(op, &format!("pad = {pad:?} is not supported (no padding)"))),
        other => return Err(op_error(op, &format!("pad_type = '{other}' is not supported"))),
    }
    let bias = cx.opt_tensor(op, "bias")?;
    let g = &mut cx.graph;
    let y = g.conv1x1(x, weight).map_err(graph_error(op))?;
    match bias {
        Some(b) => {
            let channels = g.dims(b).iter().product::<usize>();
            let b4 = g.reshape(b, &[1, channels, 1, 1]).map_err(graph_error(op))?;
            g.add(y, b4).map_err(graph_error(op))
        }
        None => Ok(y),
    }
}

/// `(x − mean) / √(var + ε) · γ + β` over `axes`; γ and β (shaped like x's normalised axes) are
/// reshaped to broadcast against x.
fn layer_norm(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "axes", "gamma", "beta", "epsilon"])?;
    let x = cx.tensor(op, "x")?;
    let rank = cx.graph.rank(x);
    let axes = axes_param(cx, op, "axes", rank)?;
    let epsilon = cx.float(op, "epsilon")?.unwrap_or(1e-5);
    let gamma = cx.opt_tensor(op, "gamma")?;
    let beta = cx.opt_tensor(op, "beta")?;
    let x_dims = dims(cx, x);
    let affine_dims: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&(i as isize)) { x_dims[i] } else { 1 })
        .collect();
    let g = &mut cx.graph;
    let e = graph_error(op);
    let mean = g.reduce(ReduceOp::Mean, x, &axes, true).map_err(&e)?;
    let centred = g.sub(x, mean).map_err(&e)?;
    let squared = g.mul(centred, centred).map_err(&e)?;
    let var = g.reduce(ReduceOp::Mean, squared, &axes, true).map_err(&e)?;
    let var_eps = add_epsilon(cx, op, var, epsilon)?;
    let g = &mut cx.graph;
    let inv_std = g.unary(UnaryOp::Rsqrt, var_eps).map_err(&e)?;
    let mut y = g.mul(centred, inv_std).map_err(&e)?;
    if let Some(gamma) = gamma {
        let gamma = g.reshape(gamma, &affine_dims).map_err(&e)?;
        y = g.mul(y, gamma).map_err(&e)?;
    }
    if let Some(beta) = beta {
        let beta = g.reshape(beta, &affine_dims).map_err(&e)?;
        y = g.add(y, beta).map_err(&e)?;
    }
    Ok(y)
}

fn cast(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x", "dtype"])?;
    let x = cx.tensor(op, "x")?;
    let name = cx
        .text(op, "dtype")?
        .ok_or_else(|| op_error(op, "missing parameter 'dtype'"))?;
    let to = match name.as_str() {
        "fp16" => DType::F16,
        "fp32" => DType::F32,
        "int32" => DType::I32,
        "bool" => DType::Bool,
        other => return Err(op_error(op, &format!("cast to '{other}' is not supported"))),
    };
    cx.graph.cast(x, to).map_err(graph_error(op))
}

fn select(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["cond", "a", "b"])?;
    let cond = cx.tensor(op, "cond")?;
    let a = cx.tensor(op, "a")?;
    let b = cx.tensor(op, "b")?;
    cx.graph.select(cond, a, b).map_err(graph_error(op))
}

fn identity(cx: &mut Converter<'_>, op: &Operation) -> Result<ValueId, MilError> {
    cx.check_params(op, &["x"])?;
    let x = cx.tensor(op, "x")?;
    cx.graph.identity(x).map_err(graph_error(op))
}
