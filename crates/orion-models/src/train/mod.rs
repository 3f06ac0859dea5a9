//! Training: per-layer forward/backward programs, the CPU parts, and one step over a batch.
//!
//! - `programs`: the graphs of a step (layer forward/backward on the training device with weights
//!   as inputs; embedding, final norm, classifier and cross-entropy on the CPU in f32) and their
//!   compilation — see its header for where each gradient is computed and why;
//! - `step`: one forward/backward over a batch (activation checkpointing per layer, loss scaling);
//! - `classifier`: the head's classifier and cross-entropy as fused CPU kernels (`fused_classifier`);
//! - `strategy`: how layer programs get their weights (`dynamic` inputs, `recompile` baked constants,
//!   `patch` reloaded weight files) and the `WeightUpdater` applying one after each step;
//! - `patch`: the `patch` strategy's reload and its check against the reference interpreter;
//! - `trainer`: the loop (accumulation, overflow skip, clipping, schedule, AdamW, validation, checkpoints).
//!
//! Invariant: with weights as inputs (`dynamic`), one compiled layer program pair serves every layer
//! and every step; `recompile` replaces it by per-layer baked programs computing the same values.

mod classifier;
pub mod patch;
pub mod programs;
pub mod step;
pub mod strategy;
pub mod trainer;

pub use classifier::CLASSIFIER_BLOCK;
pub use programs::StepPrograms;
pub use step::{Batch, Params, StepOutput, StepRunner, StepTimings};
pub use strategy::{Strategy, UpdateEvent, WeightUpdater};
pub use trainer::{StepReport, TrainOptions, Trainer};
