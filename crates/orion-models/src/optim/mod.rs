//! Optimisation for training, all on the CPU in f32: the AdamW update, learning-rate schedules,
//! global-norm gradient clipping and dynamic loss scaling for fp16 devices.
//!
//! Parameters, gradients and optimiser moments are flat `Vec<f32>` keyed by the canonical parameter
//! name (`BTreeMap`, so iteration order, and with it every floating-point sum, is deterministic).
//!
//! - `adamw`: [`AdamW`] (decoupled weight decay; norms and biases excluded) and its serialisable state.
//! - `schedule`: [`Schedule`] (constant, linear warmup + cosine decay) and [`learning_rate`].
//! - `clip`: [`clip_global_norm`] (norm accumulated in f64).
//! - `kernels` (private): the vectorised, thread-split per-element passes the others use.
//! - `loss_scale`: [`LossScaler`] (overflow detection, skip + back-off, growth; counters).

pub mod adamw;
pub mod clip;
mod kernels;
pub mod loss_scale;
pub mod schedule;

pub use adamw::{default_decay, AdamW, AdamWConfig, AdamWState};
pub use clip::{clip_global_norm, global_norm};
pub use loss_scale::{all_finite, LossScaler, LossScalerConfig, LossScalerState};
pub use schedule::{learning_rate, Schedule};
