//! The training suite: optimiser steps of a [`Trainer`] on random tokens, with the per-phase breakdown
//! the step itself measures ([`StepTimings`]: embedding, layer forward, head, layer backward, weight
//! gradients, data, optimiser, update strategy) — never a fixed ratio.
//!
//! The programs are built as `orion train` builds them (layer programs on the device with weights as
//! inputs, fp16 on `ane-sim`; the rest on the CPU in f32; every CPU product and the classifier's in
//! the run's `--products` precision). `recompile` re-bakes every layer's programs after each update,
//! timed as the update phase. The first step is a warm-up; the figures are medians over the next
//! `iterations` steps, and "other" is the step's wall time not inside any phase.
//! On `ane-sim` the layer programs' cost-model estimates are summed per step, and an estimated step
//! replaces the simulator's measured layer phases by them.

use crate::error::Result;
use crate::measure::{cpu_backend, layer_backend, median, ms_since, Instrumented};
use crate::options::Plan;
use crate::result::{BenchRun, Better, Device, Row, Strategy, WeightsChoice};
use orion_ane::lower::WeightMode as AneWeightMode;
use orion_models::config::ModelConfig;
use orion_models::data::dataset::{Batcher, BatcherConfig, TokenStream};
use orion_models::optim::{AdamWConfig, LossScalerConfig, Schedule};
use orion_models::train::{
    StepPrograms, StepRunner, StepTimings, Strategy as UpdateStrategy, TrainOptions, Trainer, WeightUpdater,
};
use orion_models::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// One measured step.
#[derive(Clone, Copy, Debug)]
struct StepSample {
    wall_ms: f64,
    timings: StepTimings,
    /// Cost-model estimate of the step's device programs, ms (0 off the ANE).
    estimated_device_ms: f64,
    loss: f32,
}

/// A batcher over seeded random ids with enough windows for `steps` batches.
fn random_batcher(cfg: &ModelConfig, batch: usize, seq_len: usize, steps: usize) -> Result<Batcher> {
    let windows = batch * steps + 1;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let vocab = cfg.vocab_size as u32;
    let ids = (0..windows * (seq_len + 1)).map(|_| rng.gen_range(0..vocab)).collect();
    Ok(Batcher::new(
        TokenStream::from_ids("random tokens", ids),
        BatcherConfig {
            batch_size: batch,
            seq_len,
            shuffle: false,
            seed: 1,
            val_fraction: 0.0,
            vocab_size: cfg.vocab_size,
        },
    )?)
}

/// The library's strategy for the benchmark's.
fn update_strategy(strategy: Option<Strategy>) -> UpdateStrategy {
    match strategy {
        None | Some(Strategy::Dynamic) => UpdateStrategy::Dynamic,
        Some(Strategy::Recompile) => UpdateStrategy::Recompile,
        Some(Strategy::Patch) => UpdateStrategy::Patch,
    }
}

/// Runs `steps` optimiser steps, applying the update strategy after each (timed as its phase).
/// Returns the samples and, when `patch` fell back to `recompile`, why.
fn run_steps(
    plan: &Plan,
    trainer: &mut Trainer,
    device: &Instrumented,
    steps: usize,
) -> Result<(Vec<StepSample>, Option<String>)> {
    let cfg = plan.model_config.clone();
    let strategy = update_strategy(plan.config.strategy);
    let (mut updater, _) = WeightUpdater::start(strategy, &mut trainer.runner.programs, &cfg, &trainer.params, device)?;
    let mut samples = Vec::with_capacity(steps);
    for _ in 0..steps {
        let estimated_before = device.estimated_ms();
        let start = Instant::now();
        let mut report = trainer.train_step()?;
        let estimated_device_ms = device.estimated_ms() - estimated_before;
        if !report.skipped {
            let clock = Instant::now();
            updater.after_update(&mut trainer.runner.programs, &cfg, &trainer.params, device)?;
            report.timings.update_ms += ms_since(clock);
        }
        samples.push(StepSample {
            wall_ms: ms_since(start),
            timings: report.timings,
            estimated_device_ms,
            loss: report.loss,
        });
        device.release_unused();
    }
    Ok((samples, updater.fallback_reason.clone()))
}

/// One phase of a step: row name, where it runs, its time in a [`StepTimings`].
type Phase = (&'static str, String, fn(&StepTimings) -> f64);

/// The phases of a step.
fn phases(device: &str) -> [Phase; 8] {
    [
        ("embedding", "cpu".into(), |t| t.embed_ms),
        ("layer forward", device.into(), |t| t.forward_ms),
        ("head (norm, classifier, loss)", "cpu".into(), |t| t.head_ms),
        ("layer backward", device.into(), |t| t.backward_ms),
        ("weight gradients", "cpu".into(), |t| t.weight_grad_ms),
        ("data", "host".into(), |t| t.data_ms),
        ("optimiser", "cpu".into(), |t| t.optimizer_ms),
        ("update (strategy)", device.into(), |t| t.update_ms),
    ]
}

/// Rows: the step, each phase and the untimed rest; on the ANE the estimates.
fn rows(plan: &Plan, device: &Instrumented, samples: &[StepSample], compile_ms: f64) -> Vec<Row> {
    let tokens = (plan.config.batch_size * plan.config.seq_len) as f64;
    let step_ms = median(&samples.iter().map(|s| s.wall_ms).collect::<Vec<_>>());
    let mut rows = vec![Row::new("step", "host")
        .with("ms", step_ms, "ms", Better::Lower)
        .with("tok/s", tokens / step_ms * 1e3, "tok/s", Better::Info)
        .with(
            "loss",
            median(&samples.iter().map(|s| s.loss as f64).collect::<Vec<_>>()),
            "",
            Better::Info,
        )];
    for (name, runs_on, get) in phases(&device.label) {
        let ms = median(&samples.iter().map(|s| get(&s.timings)).collect::<Vec<_>>());
        rows.push(Row::new(name, runs_on).with("ms", ms, "ms", Better::Lower).with(
            "share %",
            100.0 * ms / step_ms,
            "%",
            Better::Info,
        ));
    }
    let other = median(
        &samples
            .iter()
            .map(|s| (s.wall_ms - s.timings.total_ms()).max(0.0))
            .collect::<Vec<_>>(),
    );
    rows.push(
        Row::new("other (outside the phases)", "host")
            .with("ms", other, "ms", Better::Lower)
            .with("share %", 100.0 * other / step_ms, "%", Better::Info),
    );
    rows.push(Row::new("compile step programs", "host").with("ms", compile_ms, "ms", Better::Info));
    if plan.config.device == Device::AneSim {
        let estimated = median(&samples.iter().map(|s| s.estimated_device_ms).collect::<Vec<_>>());
        let simulated = median(
            &samples
                .iter()
                .map(|s| s.timings.forward_ms + s.timings.backward_ms)
                .collect::<Vec<_>>(),
        );
        let est_step = step_ms - simulated + estimated;
        rows.push(Row::new("layer programs, cost model", &device.label).with("est ms", estimated, "ms", Better::Info));
        rows.push(
            Row::new("step with layer programs at the estimate", "host")
                .with("est ms", est_step, "ms", Better::Info)
                .with("est tok/s", tokens / est_step * 1e3, "tok/s", Better::Info),
        );
    }
    rows
}

/// Runs the training suite.
pub fn run_training(plan: &Plan) -> Result<BenchRun> {
    let cfg = plan.model_config.clone();
    let (t, b) = (plan.config.seq_len, plan.config.batch_size);
    let products = plan.config.products;
    let cpu = cpu_backend(WeightsChoice::F32, false, products, plan.delay);
    let lowering = match plan.config.strategy {
        Some(Strategy::Recompile | Strategy::Patch) => AneWeightMode::Baked,
        Some(Strategy::Dynamic) | None => AneWeightMode::Inputs,
    };
    let (device, dtype) = layer_backend(plan.config.device, plan.chip(), lowering, products, plan.delay)?;
    let compile_start = Instant::now();
    let programs = StepPrograms::new(&cfg, t, b, &device, dtype, &cpu)?;
    let compile_ms = ms_since(compile_start);
    let model = Model::random(cfg.clone(), 1)?;
    let steps = plan.config.iterations + 1;
    let options = TrainOptions {
        accum: 1,
        adamw: AdamWConfig::default(),
        schedule: Schedule::Constant,
        clip: Some(1.0),
        loss_scaler: match plan.config.device {
            Device::Cpu => LossScalerConfig::f32(),
            Device::AneSim => LossScalerConfig::fp16(),
        },
        seed: 1,
    };
    let runner = StepRunner::new(cfg.clone(), t, b, programs).with_products(products.precision());
    let mut trainer = Trainer::new(runner, &model, random_batcher(&cfg, b, t, steps)?, options)?;
    let (samples, fallback) = run_steps(plan, &mut trainer, &device, steps)?;
    let rows = rows(plan, &device, &samples[1..], compile_ms);

    let mut notes = vec![
        format!(
            "one optimiser step = batch {b} × {t} tokens, AdamW, clipping at 1.0; median of {} steps after 1 \
             warm-up step; phases are measured inside the step (StepTimings), other = wall − Σ phases",
            plan.config.iterations
        ),
        format!(
            "layer backward excludes the weight-gradient GEMMs, which run on the CPU ({} products, f32 sums) and \
             are their own phase",
            plan.config.products.name()
        ),
    ];
    match plan.config.strategy {
        Some(Strategy::Recompile) => {
            notes.push("update (strategy): re-baking and recompiling every layer's forward and backward program".into())
        }
        Some(Strategy::Patch) => notes.push(
            "update (strategy): overwriting every baked program's weight files, reloading, and checking one \
             program against the CPU reference"
                .into(),
        ),
        Some(Strategy::Dynamic) | None => {}
    }
    if let Some(reason) = fallback {
        notes.push(format!("patch fell back to recompile: {reason}"));
    }
    if plan.config.device == Device::AneSim {
        let profile = device
            .profile()
            .map_or_else(String::new, |p| format!("{} ({})", p.id, p.name));
        notes.push(format!(
            "ane-sim: layer phases are the simulator's wall time (it interprets the MIL in fp16); the estimate \
             sums the cost model of {profile} over the step's layer program evaluations"
        ));
    }
    Ok(BenchRun::new(plan.config.clone(), plan.model_summary(), rows, notes))
}
