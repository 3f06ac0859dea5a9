//! Global-norm gradient clipping (as `torch.nn.utils.clip_grad_norm_` with the 2-norm).
//!
//! The norm is `sqrt(Σ g²)` over every element of every gradient, accumulated in f64 in the
//! deterministic name order of the map (per tensor in fixed chunks, see `kernels::sum_of_squares`).
//! Gradients are scaled by `max_norm / norm` only when the norm is finite and strictly above
//! `max_norm` (no ε fudge: a norm at or below the limit is untouched).
//! A non-finite norm is returned unchanged and nothing is scaled: non-finite gradients are the loss
//! scaler's business, and hiding them here would hide a bug.

use super::kernels::{scale_in_place, sum_of_squares};
use std::collections::BTreeMap;

/// The global 2-norm of all gradients (f64 accumulation, returned as f32).
pub fn global_norm(grads: &BTreeMap<String, Vec<f32>>) -> f32 {
    global_norm_f64(grads) as f32
}

/// The global 2-norm in f64. It is finite exactly when every element is: a square of a finite f32 is
/// below 2^256, so no sum of them overflows f64, while an infinite or NaN element makes it so.
pub(crate) fn global_norm_f64(grads: &BTreeMap<String, Vec<f32>>) -> f64 {
    let sum: f64 = grads.values().map(|g| sum_of_squares(g)).sum();
    sum.sqrt()
}

/// The factor `max_norm / norm` that clipping multiplies every gradient by, or `None` when the
/// gradients are left alone (clipping disabled by `max_norm ≤ 0` or non-finite, a non-finite norm,
/// or a norm at or below the limit).
pub(crate) fn clip_factor(norm: f64, max_norm: f32) -> Option<f32> {
    let limit = max_norm as f64;
    (limit.is_finite() && limit > 0.0 && norm.is_finite() && norm > limit).then(|| (limit / norm) as f32)
}

/// Scales `grads` so that their global norm is at most `max_norm`; returns the norm before clipping.
/// `max_norm ≤ 0` (or non-finite) disables clipping: the norm is still measured and returned.
pub fn clip_global_norm(grads: &mut BTreeMap<String, Vec<f32>>, max_norm: f32) -> f32 {
    let norm = global_norm_f64(grads);
    if let Some(scale) = clip_factor(norm, max_norm) {
        for g in grads.values_mut() {
            scale_in_place(g, scale);
        }
    }
    norm as f32
}
