//! Elementwise kernels of the interpreter: unary math, binary arithmetic and comparisons with numpy
//! broadcasting, select, and dtype casts; plus the interpreter's erf.
//!
//! Invariants: operands have already passed shape inference (the caller guarantees dtypes and
//! broadcastable shapes); each result has the inferred type `out`. Float math is f32 except erf,
//! which is evaluated in f64 and rounded once. NaN conventions are listed in the parent module.

use super::index::broadcast_map;
use super::{exec_error, float_data, make_tensor};
use crate::error::Result;
use crate::op::{BinaryOp, CompareOp, UnaryOp};
use crate::tensor::{Tensor, TensorData};
use crate::types::{DType, TensorType};

/// `op` applied to every element of a float tensor.
pub(super) fn unary(op: UnaryOp, x: &Tensor, out: &TensorType) -> Result<Tensor> {
    let values = float_data(x, op.name())?;
    let f = unary_fn(op);
    make_tensor(out, TensorData::Float(values.iter().map(|&v| f(v)).collect()))
}

fn unary_fn(op: UnaryOp) -> fn(f32) -> f32 {
    match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Rsqrt => |x| 1.0 / x.sqrt(),
        UnaryOp::Reciprocal => |x| 1.0 / x,
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Relu => |x| if x < 0.0 { 0.0 } else { x },
        UnaryOp::Erf => erf,
        UnaryOp::Sin => f32::sin,
        UnaryOp::Cos => f32::cos,
    }
}

/// The error function, accurate to the rounding of its f32 result.
///
/// Evaluated in f64 with the everywhere-convergent series
/// `erf(z) = 2/sqrt(pi) * exp(-z^2) * sum_n (2 z^2)^n z / (1*3*...*(2n+1))`, whose terms are all
/// positive (no cancellation). For |x| >= 6, erf(x) differs from ±1 by less than 1e-17, so ±1 is
/// returned. NaN gives NaN; the sign of zero is kept.
pub fn erf(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let z = f64::from(x).abs();
    let magnitude = if z >= 6.0 {
        1.0
    } else {
        let two_z2 = 2.0 * z * z;
        let mut term = z;
        let mut sum = z;
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= two_z2 / (2.0 * n + 1.0);
            sum += term;
        }
        (2.0 / std::f64::consts::PI.sqrt() * (-z * z).exp() * sum).min(1.0)
    };
    magnitude.copysign(f64::from(x)) as f32
}

/// `op(a, b)` elementwise with numpy broadcasting; floats or i32 (wrapping).
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &TensorType) -> Result<Tensor> {
    let a_map = broadcast_map(a.shape().dims(), out.shape.dims());
    let b_map = broadcast_map(b.shape().dims(), out.shape.dims());
    let data = match (a.data(), b.data()) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            let f = float_binary_fn(op);
            TensorData::Float(a_map.iter().zip(&b_map).map(|(&i, &j)| f(x[i], y[j])).collect())
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            let f =
                int_binary_fn(op).ok_or_else(|| exec_error(op.name(), "is not defined on i32 operands".to_string()))?;
            TensorData::I32(a_map.iter().zip(&b_map).map(|(&i, &j)| f(x[i], y[j])).collect())
        }
        _ => {
            return Err(exec_error(
                op.name(),
                format!("operands {} and {} are not both float or both i32", a.ty(), b.ty()),
            ))
        }
    };
    make_tensor(out, data)
}

fn float_binary_fn(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        BinaryOp::Maximum => max_nan,
        BinaryOp::Minimum => min_nan,
        BinaryOp::Pow => f32::powf,
    }
}

/// The i32 version of `op`, or `None` where shape inference forbids i32 (div, pow).
fn int_binary_fn(op: BinaryOp) -> Option<fn(i32, i32) -> i32> {
    match op {
        BinaryOp::Add => Some(i32::wrapping_add),
        BinaryOp::Sub => Some(i32::wrapping_sub),
        BinaryOp::Mul => Some(i32::wrapping_mul),
        BinaryOp::Maximum => Some(|x, y| x.max(y)),
        BinaryOp::Minimum => Some(|x, y| x.min(y)),
        BinaryOp::Div | BinaryOp::Pow => None,
    }
}

/// The larger of two floats; NaN if either is NaN.
pub(super) fn max_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// The smaller of two floats; NaN if either is NaN.
fn min_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.min(y)
    }
}

/// `op(a, b)` elementwise with broadcasting, giving bool; IEEE semantics for NaN.
pub(super) fn compare(op: CompareOp, a: &Tensor, b: &Tensor, out: &TensorType) -> Result<Tensor> {
    let a_map = broadcast_map(a.shape().dims(), out.shape.dims());
    let b_map = broadcast_map(b.shape().dims(), out.shape.dims());
    let pairs = a_map.iter().zip(&b_map);
    let data: Vec<bool> = match (a.data(), b.data()) {
        (TensorData::Float(x), TensorData::Float(y)) => pairs.map(|(&i, &j)| holds(op, x[i], y[j])).collect(),
        (TensorData::I32(x), TensorData::I32(y)) => pairs.map(|(&i, &j)| holds(op, x[i], y[j])).collect(),
        _ => {
            return Err(exec_error(
                op.name(),
                format!("operands {} and {} are not both float or both i32", a.ty(), b.ty()),
            ))
        }
    };
    make_tensor(out, TensorData::Bool(data))
}

fn holds<T: PartialOrd>(op: CompareOp, x: T, y: T) -> bool {
    match op {
        CompareOp::Equal => x == y,
        CompareOp::Less => x < y,
        CompareOp::LessEqual => x <= y,
        CompareOp::Greater => x > y,
        CompareOp::GreaterEqual => x >= y,
    }
}

/// `cond ? a : b` elementwise with broadcasting of all three operands.
pub(super) fn select(cond: &Tensor, a: &Tensor, b: &Tensor, out: &TensorType) -> Result<Tensor> {
    let flags = cond
        .as_bool()
        .ok_or_else(|| exec_error("select", format!("condition must be bool, got {}", cond.ty())))?;
    let dims = out.shape.dims();
    let c_map = broadcast_map(cond.shape().dims(), dims);
    let a_map = broadcast_map(a.shape().dims(), dims);
    let b_map = broadcast_map(b.shape().dims(), dims);
    let pick = |k: usize| {
        if flags[c_map[k]] {
            (true, a_map[k])
        } else {
            (false, b_map[k])
        }
    };
    let data = match (a.data(), b.data()) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            TensorData::Float((0..c_map.len()).map(|k| choose(pick(k), x, y)).collect())
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            TensorData::I32((0..c_map.len()).map(|k| choose(pick(k), x, y)).collect())
        }
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            TensorData::Bool((0..c_map.len()).map(|k| choose(pick(k), x, y)).collect())
        }
        _ => {
            return Err(exec_error(
                "select",
                format!("branches {} and {} differ in element type", a.ty(), b.ty()),
            ))
        }
    };
    make_tensor(out, data)
}

fn choose<T: Copy>((from_a, at): (bool, usize), a: &[T], b: &[T]) -> T {
    if from_a {
        a[at]
    } else {
        b[at]
    }
}

/// Element type conversion; see the parent module for the rules.
pub(super) fn cast(x: &Tensor, to: DType, out: &TensorType) -> Result<Tensor> {
    let data = match (x.data(), to) {
        (TensorData::Float(v), DType::F32 | DType::F16) => TensorData::Float(v.clone()),
        // `as` truncates toward zero, saturates at the i32 range and maps NaN to 0.
        (TensorData::Float(v), DType::I32) => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
        (TensorData::Float(v), DType::Bool) => TensorData::Bool(v.iter().map(|&e| e != 0.0).collect()),
        (TensorData::I32(v), DType::F32 | DType::F16) => TensorData::Float(v.iter().map(|&e| e as f32).collect()),
        (TensorData::I32(v), DType::I32) => TensorData::I32(v.clone()),
        (TensorData::I32(v), DType::Bool) => TensorData::Bool(v.iter().map(|&e| e != 0).collect()),
        (TensorData::Bool(v), DType::F32 | DType::F16) => {
            TensorData::Float(v.iter().map(|&e| if e { 1.0 } else { 0.0 }).collect())
        }
        (TensorData::Bool(v), DType::I32) => TensorData::I32(v.iter().map(|&e| i32::from(e)).collect()),
        (TensorData::Bool(v), DType::Bool) => TensorData::Bool(v.clone()),
    };
    make_tensor(out, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_tabulated_values() {
        // Values from Abramowitz & Stegun table 7.1 (10 digits).
        let table = [
            (0.1, 0.112_462_916_0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (3.0, 0.999_977_909_5),
        ];
        for (x, expected) in table {
            assert!((erf(x) as f64 - expected).abs() < 1e-7, "erf({x})");
            assert!((erf(-x) as f64 + expected).abs() < 1e-7, "erf(-{x})");
        }
        assert_eq!(erf(10.0), 1.0);
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    }
}
