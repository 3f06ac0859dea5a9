//! Setup shared by the test binaries that train a tiny Llama on a device: a trainer over a synthetic
//! periodic token stream, with the loss scaler that matches the compute dtype.

use orion_core::backend::Backend;
use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::config::ModelConfig;
use orion_models::data::dataset::{Batcher, BatcherConfig, TokenStream};
use orion_models::optim::{AdamWConfig, LossScalerConfig, Schedule};
use orion_models::train::{StepPrograms, StepRunner, TrainOptions, Trainer};
use orion_models::Model;

/// What differs between the tests' training runs.
pub struct SyntheticRun {
    pub cfg: ModelConfig,
    /// Length of the token stream `(i * mul + i / div) % vocab_size`.
    pub tokens: u32,
    pub mul: u32,
    pub div: u32,
    pub lr: f32,
    pub batcher_seed: u64,
    pub model_seed: u64,
    pub train_seed: u64,
}

/// A trainer for `run` (batch 2 × 32, clipping at 1, constant learning rate) whose layer programs run on
/// `device` in `dtype`; the embedding and head run on the CPU.
pub fn synthetic_trainer(run: &SyntheticRun, device: &dyn Backend, dtype: DType) -> Trainer {
    let cfg = run.cfg.clone();
    let vocab = cfg.vocab_size as u32;
    let ids: Vec<u32> = (0..run.tokens).map(|i| (i * run.mul + i / run.div) % vocab).collect();
    let batcher_cfg = BatcherConfig {
        batch_size: 2,
        seq_len: 32,
        shuffle: true,
        seed: run.batcher_seed,
        val_fraction: 0.1,
        vocab_size: cfg.vocab_size,
    };
    let batcher = Batcher::new(TokenStream::from_ids("synthetic", ids), batcher_cfg).unwrap();
    let cpu = CpuBackend::default();
    let programs = StepPrograms::new(&cfg, 32, 2, device, dtype, &cpu).unwrap();
    let runner = StepRunner::new(cfg.clone(), 32, 2, programs);
    let options = TrainOptions {
        accum: 1,
        adamw: AdamWConfig {
            lr: run.lr,
            ..AdamWConfig::default()
        },
        schedule: Schedule::Constant,
        clip: Some(1.0),
        loss_scaler: if dtype == DType::F16 {
            LossScalerConfig::fp16()
        } else {
            LossScalerConfig::f32()
        },
        seed: run.train_seed,
    };
    Trainer::new(runner, &Model::random(cfg, run.model_seed).unwrap(), batcher, options).unwrap()
}
