//! Learning-rate schedules: a pure function of the step, so a resumed run needs no schedule state.
//!
//! Steps count from 0 (the first update is step 0). `Cosine { warmup, total, min_lr_ratio }`:
//! - warmup, `step < warmup`: linear, `base · (step + 1) / warmup` (the first update already moves,
//!   step `warmup − 1` reaches `base`);
//! - decay, `warmup ≤ step < total`: `min + (base − min) · ½ (1 + cos(π · (step − warmup) / (total − warmup)))`
//!   with `min = base · min_lr_ratio`, so step `warmup` is exactly `base`;
//! - after, `step ≥ total`: `min`.
//!
//! Computed in f64 and rounded once to f32.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The base learning rate at every step.
    Constant,
    /// Linear warmup over `warmup` steps, then cosine decay to `base · min_lr_ratio` at step `total`.
    Cosine {
        warmup: usize,
        total: usize,
        min_lr_ratio: f32,
    },
}

/// The learning rate of update `step` (from 0) for base rate `base_lr`.
pub fn learning_rate(schedule: &Schedule, base_lr: f32, step: usize) -> f32 {
    match *schedule {
        Schedule::Constant => base_lr,
        Schedule::Cosine {
            warmup,
            total,
            min_lr_ratio,
        } => {
            let base = base_lr as f64;
            let min = base * min_lr_ratio as f64;
            if step < warmup {
                return (base * (step + 1) as f64 / warmup as f64) as f32;
            }
            if step >= total {
                return min as f32;
            }
            let progress = (step - warmup) as f64 / (total - warmup) as f64;
            let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            (min + (base - min) * coeff) as f32
        }
    }
}
