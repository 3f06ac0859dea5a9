//! The training loop: gradient accumulation, loss scaling, clipping, schedule, AdamW, validation
//! loss and checkpoints.
//!
//! One optimiser step = `accum` micro-batches from the [`Batcher`]; their gradients (already
//! unscaled by the step) are averaged, checked for overflow by the [`LossScaler`] (a non-finite
//! gradient skips the update and lowers the scale — nothing is clamped), clipped to a global norm,
//! and applied by AdamW with the scheduled learning rate.
//!
//! Invariants: the whole mutable state (parameters, optimiser, loss scaler, batcher position, step
//! and RNG) goes into a [`Checkpoint`], with the runner's product precision, so `from_checkpoint`
//! continues bit-identically (it refuses a runner computing in another precision); parameters are
//! f32 under canonical names.

use super::step::{ms_since, Batch, Params, StepRunner, StepTimings};
use crate::checkpoint::{Checkpoint, RngState};
use crate::config::ModelConfig;
use crate::data::dataset::{Batch as DataBatch, Batcher};
use crate::error::{ModelError, Result};
use crate::model::{weight_specs, Model};
use crate::optim::clip::{clip_factor, global_norm_f64};
use crate::optim::{learning_rate, AdamW, AdamWConfig, LossScaler, LossScalerConfig, Schedule};
use orion_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;

/// Hyper-parameters of the loop.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Micro-batches per optimiser step.
    pub accum: usize,
    pub adamw: AdamWConfig,
    pub schedule: Schedule,
    /// Global-norm clipping threshold (`None`: no clipping).
    pub clip: Option<f32>,
    pub loss_scaler: LossScalerConfig,
    /// Seed of the run's RNG (kept in checkpoints).
    pub seed: u64,
}

/// What one optimiser step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step number after this step (updates attempted so far).
    pub step: u64,
    /// Mean training loss over the micro-batches.
    pub loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping (NaN when the step overflowed).
    pub grad_norm: f32,
    /// The loss scale the step ran with.
    pub loss_scale: f32,
    /// The gradients were not finite: no update was made.
    pub skipped: bool,
    /// Measured time of each phase (the caller adds `update_ms` when it applies a strategy).
    pub timings: StepTimings,
}

/// A training run in progress.
#[derive(Debug)]
pub struct Trainer {
    pub runner: StepRunner,
    pub params: Params,
    pub optimizer: AdamW,
    pub scaler: LossScaler,
    pub batcher: Batcher,
    pub options: TrainOptions,
    pub step: u64,
    pub rng: ChaCha8Rng,
}

impl Trainer {
    /// Starts a run from `model`'s weights.
    pub fn new(runner: StepRunner, model: &Model, batcher: Batcher, options: TrainOptions) -> Result<Trainer> {
        if options.accum == 0 {
            return Err(ModelError::Usage(
                "gradient accumulation needs at least one micro-batch".into(),
            ));
        }
        let shapes: BTreeMap<String, Vec<usize>> = weight_specs(model.config())
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        let params = model.weights().into_iter().map(|(n, t)| (n, t.to_f32_vec())).collect();
        Ok(Trainer {
            runner,
            params,
            optimizer: AdamW::with_shapes(options.adamw, &shapes),
            scaler: LossScaler::new(options.loss_scaler)?,
            batcher,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            options,
            step: 0,
        })
    }

    /// Continues the run saved in `ckpt` (same configuration, batcher over the same data).
    pub fn from_checkpoint(
        runner: StepRunner,
        ckpt: Checkpoint,
        mut batcher: Batcher,
        options: TrainOptions,
    ) -> Result<Trainer> {
        if ckpt.config != runner.cfg {
            return Err(ModelError::Usage(
                "the checkpoint's model configuration differs from this run's".into(),
            ));
        }
        if ckpt.products != runner.products() {
            return Err(ModelError::Usage(format!(
                "the checkpointed run computed its matrix products in {}, this run in {}: an exact resume \
                 needs the same arithmetic",
                ckpt.products.name(),
                runner.products().name()
            )));
        }
        let state = serde_json::from_value(ckpt.data)
            .map_err(|e| ModelError::Usage(format!("checkpoint data position: {e}")))?;
        batcher.restore(state)?;
        let params = ckpt.weights.into_iter().map(|(n, t)| (n, t.to_f32_vec())).collect();
        Ok(Trainer {
            runner,
            params,
            optimizer: AdamW::from_state(options.adamw, ckpt.optimizer)?,
            scaler: LossScaler::from_state(ckpt.loss_scaler)?,
            batcher,
            rng: ckpt.rng.restore(),
            options,
            step: ckpt.step,
        })
    }

    /// One optimiser step over `accum` micro-batches.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let scale = self.scaler.scale();
        let accum = self.options.accum;
        let mut grads = Params::new();
        let mut loss = 0.0f32;
        let mut timings = StepTimings::default();
        for _ in 0..accum {
            let clock = Instant::now();
            let batch = to_step_batch(&self.batcher.next_batch())?;
            timings.data_ms += ms_since(clock);
            let out = self.runner.loss_and_grads_in_place(&mut self.params, &batch, scale)?;
            timings.add(&out.timings);
            let clock = Instant::now();
            loss += out.loss / accum as f32;
            let share = accum as f32;
            for (name, mut g) in out.grads {
                match grads.entry(name) {
                    // The first micro-batch's gradient becomes the sum in place, without a fresh
                    // buffer: `0 + v / accum` is what adding it to zeros gives, bit for bit (with one
                    // micro-batch only the sign of a zero may differ, which no later step can see).
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        if accum > 1 {
                            g.iter_mut().for_each(|v| *v = 0.0 + *v / share);
                        }
                        slot.insert(g);
                    }
                    std::collections::btree_map::Entry::Occupied(mut slot) => {
                        slot.get_mut().iter_mut().zip(&g).for_each(|(a, v)| *a += v / share);
                        orion_core::cpu::recycle_vec(g);
                    }
                }
            }
            timings.optimizer_ms += ms_since(clock);
        }
        let clock = Instant::now();
        let lr = learning_rate(&self.options.schedule, self.options.adamw.lr, self.step as usize);
        self.step += 1;
        // One pass for the overflow check and the norm: the f64 norm is finite exactly when every
        // gradient element is (see `global_norm_f64`), i.e. when `LossScaler::check` holds.
        let norm = global_norm_f64(&grads);
        let finite = norm.is_finite();
        self.scaler.update(!finite)?;
        if !finite {
            recycle_grads(grads);
            return Ok(StepReport {
                step: self.step,
                loss,
                lr,
                grad_norm: f32::NAN,
                loss_scale: scale,
                skipped: true,
                timings,
            });
        }
        // Clipping is folded into the update (`step_scaled`: the same products as scaling first).
        let clip = self.options.clip.and_then(|max| clip_factor(norm, max));
        let grad_norm = norm as f32;
        self.optimizer
            .step_scaled(&mut self.params, &grads, lr, clip.unwrap_or(1.0))?;
        recycle_grads(grads);
        timings.optimizer_ms += ms_since(clock);
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm,
            loss_scale: scale,
            skipped: false,
            timings,
        })
    }

    /// Mean loss over the validation batches that have the full batch size (`None` without any).
    pub fn validation_loss(&self, max_batches: usize) -> Result<Option<f32>> {
        let rows = self.runner.batch * self.runner.seq_len;
        let mut losses = Vec::new();
        for b in self.batcher.validation_batches().iter().take(max_batches) {
            let batch = to_step_batch(b)?;
            if batch.inputs.len() == rows {
                losses.push(self.runner.loss_and_grads(&self.params, &batch, 1.0)?.loss);
            }
        }
        Ok((!losses.is_empty()).then(|| losses.iter().sum::<f32>() / losses.len() as f32))
    }

    /// The current weights as a `Model`.
    pub fn model(&self) -> Result<Model> {
        Model::new(self.runner.cfg.clone(), self.weight_tensors()?)
    }

    /// The parameters as f32 tensors of their spec shapes (an error names a wrong-sized one).
    fn weight_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let cfg: &ModelConfig = &self.runner.cfg;
        weight_specs(cfg)
            .into_iter()
            .filter_map(|s| {
                self.params.get(&s.name).map(|v| {
                    let data = orion_core::TensorData::Float(v.clone());
                    match Tensor::new(orion_core::DType::F32, s.shape.clone(), data) {
                        Ok(t) => Ok((s.name, t)),
                        Err(_) => Err(ModelError::TensorShape {
                            name: s.name,
                            expected: s.shape,
                            found: vec![v.len()],
                        }),
                    }
                })
            })
            .collect()
    }

    /// The complete state of the run; `extra` is stored as given.
    pub fn checkpoint(&self, extra: serde_json::Value) -> Result<Checkpoint> {
        let data =
            serde_json::to_value(self.batcher.state()).map_err(|e| ModelError::Usage(format!("data position: {e}")))?;
        Ok(Checkpoint {
            step: self.step,
            config: self.runner.cfg.clone(),
            weights: self.weight_tensors()?,
            optimizer: self.optimizer.state(),
            loss_scaler: self.scaler.state(),
            rng: RngState::capture(&self.rng),
            products: self.runner.products(),
            data,
            extra,
        })
    }
}

/// Gives the gradient buffers to the CPU backend's spare pool: the next step's gradient outputs
/// reuse them instead of faulting in fresh pages.
fn recycle_grads(grads: Params) {
    grads.into_values().for_each(orion_core::cpu::recycle_vec);
}

/// A data batch (`[B, T]` i32 tensors) as the step's flat vectors.
fn to_step_batch(b: &DataBatch) -> Result<Batch> {
    match (b.inputs.as_i32(), b.targets.as_i32()) {
        (Some(i), Some(t)) => Ok(Batch {
            inputs: i.to_vec(),
            targets: t.to_vec(),
        }),
        _ => Err(ModelError::Usage("data batches must hold i32 token ids".into())),
    }
}
