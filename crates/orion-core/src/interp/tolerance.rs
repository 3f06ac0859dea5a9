//! The one place where tolerances for comparing executors live, and the comparison itself.
//!
//! A float element passes when `|actual - expected| <= abs + rel * |expected|`; NaN matches only
//! NaN and an infinity only the same infinity. i32 and bool tensors must match exactly (no
//! executor is allowed to round integers). Dtype and shape must be equal.
//!
//! `Tolerance::for_precision(p)` is the tolerance for a result computed in precision `p` compared
//! with the reference interpreter run in the same precision on values of order one, through a
//! chain of at most ~20 rounded ops. Compare fp16 results against an f32 reference, or longer
//! chains, with an explicitly wider tolerance and say why at the call site.

use super::index::unravel;
use super::Precision;
use crate::tensor::{Tensor, TensorData};

/// Absolute and relative bounds of an elementwise comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// f32 executors: the unit roundoff is 2^-24 ≈ 6e-8. Sums of K terms in a different order
    /// (blocked GEMM, SIMD reductions) differ by up to ~K·u relative to the sum of magnitudes, and
    /// library transcendentals by a few ulp, so rel 1e-4 (≈ 1700 u) covers K up to ~1000 with
    /// margin. abs 1e-5 covers results near zero produced by cancellation of order-one terms.
    pub const F32: Tolerance = Tolerance { abs: 1e-5, rel: 1e-4 };

    /// fp16 executors: half has an 11-bit significand, unit roundoff u = 2^-11 ≈ 4.9e-4, and a chain
    /// of k rounded ops accumulates ~k·u relative error; rel 1e-2 ≈ 20 u allows a chain of ~20
    /// ops (or rounding-order differences of a softmax or a norm). abs 1e-3 ≈ 2 u covers results
    /// near zero from cancelling order-one values, each carrying up to u of absolute error.
    pub const F16: Tolerance = Tolerance { abs: 1e-3, rel: 1e-2 };

    /// The tolerance for results computed in precision `p`.
    pub fn for_precision(p: Precision) -> Tolerance {
        match p {
            Precision::F32 => Tolerance::F32,
            Precision::F16Rounding => Tolerance::F16,
        }
    }

    /// True when `actual` is within tolerance of `expected` (NaN only matches NaN).
    pub fn accepts(self, actual: f32, expected: f32) -> bool {
        if actual.is_nan() || expected.is_nan() {
            return actual.is_nan() && expected.is_nan();
        }
        if actual.is_infinite() || expected.is_infinite() {
            return actual == expected; // an infinity only matches itself, whatever the tolerance
        }
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }
}

/// Compares two tensors elementwise; the error message names the first failing index, both values
/// there, the largest absolute error and how many elements fail.
pub fn compare(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), String> {
    if actual.ty() != expected.ty() {
        return Err(format!("type {} differs from expected {}", actual.ty(), expected.ty()));
    }
    let failing: Vec<(usize, f32, f32)> = match (actual.data(), expected.data()) {
        (TensorData::Float(a), TensorData::Float(e)) => a
            .iter()
            .zip(e)
            .enumerate()
            .filter(|(_, (&x, &y))| !tol.accepts(x, y))
            .map(|(i, (&x, &y))| (i, x, y))
            .collect(),
        (TensorData::I32(a), TensorData::I32(e)) => exact_mismatches(a, e, |&x| x as f32),
        (TensorData::Bool(a), TensorData::Bool(e)) => exact_mismatches(a, e, |&x| f32::from(u8::from(x))),
        _ => return Err("storage kinds differ".to_string()),
    };
    let Some(&(first, a, e)) = failing.first() else {
        return Ok(());
    };
    let max_error = failing
        .iter()
        .map(|&(_, x, y)| {
            if x.is_nan() || y.is_nan() {
                f32::NAN
            } else {
                (x - y).abs()
            }
        })
        .fold(
            0.0f32,
            |m, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) },
        );
    Err(format!(
        "{} of {} elements differ beyond {tol:?}; first at index {:?}: actual {a}, expected {e}; \
         max abs error {max_error}",
        failing.len(),
        actual.numel(),
        unravel(first, actual.shape().dims()),
    ))
}

/// Positions where `a` and `e` differ, with both values shown as f32.
fn exact_mismatches<T: PartialEq>(a: &[T], e: &[T], show: impl Fn(&T) -> f32) -> Vec<(usize, f32, f32)> {
    a.iter()
        .zip(e)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, show(x), show(y)))
        .collect()
}

/// Panics with [`compare`]'s message when the tensors differ; for tests.
#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, tol: Tolerance) {
    if let Err(message) = compare(actual, expected, tol) {
        panic!("tensors differ: {message}");
    }
}
