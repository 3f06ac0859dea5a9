//! `orion train`: train a GPT-2 or Llama model on the built-in story corpus, a text file or uint16
//! token shards, and export it.
//!
//! `train [--model NAME|CONFIG] [--data FILE] [--tokenizer FILE] [--init FILE] [--device
//! auto|cpu|ane-sim|ane] [--strategy dynamic|recompile|patch] [--steps N] [--batch-size B]
//! [--seq-len T] [--grad-accum K] [--lr LR] [--schedule cosine|constant] [--warmup W] [--min-lr-ratio R] [--weight-decay WD]
//! [--clip C] [--eval-every N] [--checkpoint-every N] [--out DIR] [--resume DIR] [--seed S]
//! [--no-shuffle] [--sample-tokens N] [--temperature T] [--compile-budget N] [--products f32|bf16]
//! [--quiet]`.
//!
//! Defaults: a small Llama (dim 64, 4 layers, 4 heads, 2 key/value heads, context 64) with a
//! 512-piece BPE trained on the built-in corpus. Per step: metrics line in `OUT/metrics.jsonl`, a
//! progress bar on stderr, validation loss every `--eval-every` steps, a checkpoint every
//! `--checkpoint-every` steps; at the end `OUT/model.safetensors`, `config.json`,
//! the tokenizer (`tokenizer.model` when trained here, else a copy of `--tokenizer`), `loss.png` and a
//! sample on stdout (greedy, or `--temperature`).
//! Devices: `cpu` runs everything in f32 (`--products bf16`: the large matrix products of every CPU
//! program and of the head's classifier round their operands to bfloat16 and sum in f32, where the
//! CPU has AVX512_BF16; the checkpoint records it and `--resume` refuses another); `ane-sim` and
//! `ane` compile the layer programs for the (simulated) ANE (fp16, dynamic loss scaling) and keep
//! embedding, head and optimiser on the CPU;
//! `auto` takes the real ANE where one is usable, else the CPU. Strategies
//! (`orion_models::train::strategy`): `dynamic` passes weights as program inputs; `recompile` bakes
//! each layer's weights into its own programs and recompiles them after every update — before the
//! per-process compile budget (`--compile-budget`) runs out it writes a checkpoint and `exec()`s
//! itself with `--resume`; `patch` reloads the baked programs' weight files, checks one program
//! against the CPU reference after every update and falls back to `recompile` (saying why) when the
//! check fails. Each metrics line records the strategy in use and the update time.

use super::device::ane_device;
use super::generate::DeviceChoice;
use super::products::ProductsArg;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use orion_ane::backend::AneBackend;
use orion_ane::lower::{LowerOptions, WeightMode};
use orion_core::backend::Backend;
use orion_core::DType;
use orion_models::checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
use orion_models::config::{Family, ModelConfig};
use orion_models::data::corpus::{generate_corpus, DEFAULT_CORPUS_BYTES, DEFAULT_CORPUS_SEED};
use orion_models::data::dataset::{Batcher, BatcherConfig, TokenStream};
use orion_models::data::shards::shard_paths;
use orion_models::generate::{GenerateOptions, Generator, SamplingOptions};
use orion_models::metrics::{plot_losses, MetricsWriter, StepMetrics, LOSS_PLOT_FILE, METRICS_FILE};
use orion_models::optim::{AdamWConfig, LossScalerConfig, Schedule};
use orion_models::tokenizer::train_bpe::train_bpe;
use orion_models::tokenizer::{load_tokenizer, Tokenizer};
use orion_models::train::{StepPrograms, StepRunner, Strategy, TrainOptions, Trainer, UpdateEvent, WeightUpdater};
use orion_models::weights::export::{export_safetensors, write_atomically};
use orion_models::Model;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyChoice {
    /// Weights as program inputs, compiled once.
    Dynamic,
    /// Weights baked, recompiled after each update.
    Recompile,
    /// Baked weights reloaded in place, checked after each update (experimental).
    Patch,
}

impl StrategyChoice {
    fn strategy(self) -> Strategy {
        match self {
            StrategyChoice::Dynamic => Strategy::Dynamic,
            StrategyChoice::Recompile => Strategy::Recompile,
            StrategyChoice::Patch => Strategy::Patch,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleChoice {
    Cosine,
    Constant,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A built-in model name, a config file (`config.json`), or `default` (a small Llama).
    #[arg(long, default_value = "default")]
    model: String,
    /// Training data: a `.txt` file (tokenised on the fly) or uint16 `.bin` shard(s) (a file or a
    /// directory); default: the built-in story corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer for `--data FILE.txt` (default: a BPE trained on the text).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Start from pretrained weights (safetensors or llama2.c `.bin`): fine-tuning.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[arg(long, value_enum, default_value_t = StrategyChoice::Dynamic)]
    strategy: StrategyChoice,
    /// Optimiser steps.
    #[arg(long, default_value_t = 600)]
    steps: u64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Micro-batches accumulated per optimiser step.
    #[arg(long = "grad-accum", alias = "accum", default_value_t = 1)]
    accum: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Learning-rate schedule: linear warm-up then cosine decay to `--min-lr-ratio`, or constant.
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Cosine)]
    schedule: ScheduleChoice,
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    min_lr_ratio: f32,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// Global-norm clipping threshold (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Validation loss every N steps (0 = only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Checkpoint into --out every N steps (0 = never).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Output directory (metrics, checkpoints, exported model).
    #[arg(long, default_value = "orion-train-out")]
    out: PathBuf,
    /// Continue the run checkpointed in this directory (same flags).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve training windows in file order instead of a seeded shuffle.
    #[arg(long)]
    no_shuffle: bool,
    /// Tokens of the sample printed at the end (0 = none).
    #[arg(long, default_value_t = 80)]
    sample_tokens: usize,
    /// Sampling temperature of the final sample (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// `recompile`: compiles allowed per process before checkpoint + restart (ane.md C06: ~119 on
    /// the device; 100 leaves a margin).
    #[arg(long, default_value_t = 100)]
    compile_budget: usize,
    /// Arithmetic of the CPU's large matrix products (layer programs on `cpu`, host programs, the
    /// classifier): f32, or bf16 operands summed in f32 (AVX512_BF16; elsewhere as f32). A resumed
    /// run must use its checkpoint's.
    #[arg(long, value_enum, default_value_t = ProductsArg::F32)]
    products: ProductsArg,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The built-in training default: a small Llama for the 512-piece story tokenizer.
fn default_config() -> ModelConfig {
    ModelConfig {
        family: Family::Llama,
        dim: 64,
        n_layers: 4,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 512,
        hidden_dim: 176,
        max_seq_len: 64,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        tied_embeddings: true,
        biases: false,
    }
}

/// The backend of the layer programs, their dtype and the loss scaling that fits it.
/// Baked strategies lower their constants into weight files (what `recompile` recompiles and `patch`
/// reloads); `dynamic` passes any constant tensor as an input too.
/// On the CPU, its products are in `products`.
fn layer_device(
    device: DeviceChoice,
    strategy: StrategyChoice,
    products: ProductsArg,
) -> Result<(Box<dyn Backend>, DType, LossScalerConfig)> {
    match ane_device(device)? {
        None => Ok((Box::new(products.cpu_backend()), DType::F32, LossScalerConfig::f32())),
        Some(ane) => {
            let weights = match strategy {
                StrategyChoice::Dynamic => WeightMode::Inputs,
                StrategyChoice::Recompile | StrategyChoice::Patch => WeightMode::Baked,
            };
            let options = LowerOptions {
                weights,
                ..LowerOptions::default()
            };
            Ok((
                Box::new(AneBackend::new(ane, options)),
                DType::F16,
                LossScalerConfig::fp16(),
            ))
        }
    }
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    let (device, layer_dtype, scaler) = layer_device(args.device, args.strategy, args.products)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (mut cfg, init) = model_config(&args)?;
    let (stream, tokenizer) = data_stream(&args, &mut cfg)?;
    let batcher = Batcher::new(
        stream,
        BatcherConfig {
            batch_size: args.batch_size,
            seq_len: args.seq_len,
            shuffle: !args.no_shuffle,
            seed: args.seed,
            val_fraction: 0.05,
            vocab_size: cfg.vocab_size,
        },
    )?;
    let cpu = args.products.cpu_backend();
    let programs = StepPrograms::new(&cfg, args.seq_len, args.batch_size, device.as_ref(), layer_dtype, &cpu)?;
    let runner =
        StepRunner::new(cfg.clone(), args.seq_len, args.batch_size, programs).with_products(args.products.precision());
    let options = train_options(&args, scaler);
    let mut trainer = match &args.resume {
        Some(dir) => Trainer::from_checkpoint(runner, resumable_checkpoint(&args, dir)?, batcher, options)?,
        None => {
            let model = match init {
                Some(m) => m,
                None => Model::random(cfg.clone(), args.seed)?,
            };
            Trainer::new(runner, &model, batcher, options)?
        }
    };
    run_loop(&args, &mut trainer, device.as_ref())?;
    finish(&args, &trainer, tokenizer.as_deref())
}

/// The checkpoint in `dir`, if it was written by a run computing in this run's `--products` (an
/// exact resume needs the same arithmetic; checkpoints from before the flag are f32).
fn resumable_checkpoint(args: &TrainArgs, dir: &Path) -> Result<Checkpoint> {
    let ckpt = load_checkpoint(dir)?;
    if ckpt.products != args.products.precision() {
        bail!(
            "--products {} differs from the checkpointed run's {} in {}: resume with --products {}",
            args.products.precision().name(),
            ckpt.products.name(),
            dir.display(),
            ckpt.products.name()
        );
    }
    Ok(ckpt)
}

/// The model configuration, and the pretrained model when `--init` is given.
fn model_config(args: &TrainArgs) -> Result<(ModelConfig, Option<Model>)> {
    if let Some(path) = &args.init {
        let model = Model::load(path, None).with_context(|| format!("loading --init {}", path.display()))?;
        return Ok((model.config().clone(), Some(model)));
    }
    let mut cfg = match args.model.as_str() {
        "default" => default_config(),
        name if Path::new(name).is_file() => ModelConfig::from_file(Path::new(name))?,
        name => ModelConfig::builtin(name)?,
    };
    if cfg.max_seq_len < args.seq_len {
        cfg.max_seq_len = args.seq_len;
    }
    Ok((cfg, None))
}

/// The token stream and the tokenizer that made it (none for pretokenised shards).
fn data_stream(args: &TrainArgs, cfg: &mut ModelConfig) -> Result<(TokenStream, Option<Box<dyn Tokenizer>>)> {
    let text = match &args.data {
        Some(path) if path.extension().is_some_and(|e| e == "txt") => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        Some(path) => return Ok((TokenStream::from_shards(&shard_paths(path)?)?, None)),
        None => generate_corpus(DEFAULT_CORPUS_SEED, DEFAULT_CORPUS_BYTES),
    };
    let tokenizer: Box<dyn Tokenizer> = match &args.tokenizer {
        Some(path) => {
            let name = path.file_name().context("--tokenizer names no file")?;
            let target = args.out.join(name);
            // Copying a file onto itself would truncate it (a resumed run may point here).
            if std::fs::canonicalize(path).ok() != std::fs::canonicalize(&target).ok() {
                std::fs::copy(path, &target).with_context(|| format!("copying {}", path.display()))?;
            }
            load_tokenizer(path)?
        }
        None => {
            let trained = train_bpe(&text, cfg.vocab_size)?;
            trained.save(&args.out.join("tokenizer.model"))?;
            Box::new(trained.into_tokenizer())
        }
    };
    if tokenizer.vocab_size() > cfg.vocab_size {
        bail!(
            "the tokenizer has {} pieces, more than the model's vocabulary of {}",
            tokenizer.vocab_size(),
            cfg.vocab_size
        );
    }
    let stream = TokenStream::from_text("data", &text, tokenizer.as_ref());
    Ok((stream, Some(tokenizer)))
}

fn train_options(args: &TrainArgs, loss_scaler: LossScalerConfig) -> TrainOptions {
    TrainOptions {
        accum: args.accum,
        adamw: AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: match args.schedule {
            ScheduleChoice::Cosine => Schedule::Cosine {
                warmup: args.warmup,
                total: args.steps as usize,
                min_lr_ratio: args.min_lr_ratio,
            },
            ScheduleChoice::Constant => Schedule::Constant,
        },
        clip: (args.clip > 0.0).then_some(args.clip),
        loss_scaler,
        seed: args.seed,
    }
}

/// Compiles made in this process against `--compile-budget` (ane.md C06).
struct CompileBudget {
    used: usize,
    budget: usize,
}

impl CompileBudget {
    /// After start-up (`used` compiles), a budget must leave room for at least one update, or the
    /// restarted process could never make progress.
    fn new(args: &TrainArgs, used: usize, per_update: usize, layers: usize) -> Result<CompileBudget> {
        if per_update > 0 && args.compile_budget < used + per_update {
            bail!(
                "--compile-budget {} is too small for one step of {layers} layers ({used} compiles to start, \
                 {per_update} per update)",
                args.compile_budget
            );
        }
        Ok(CompileBudget {
            used,
            budget: args.compile_budget,
        })
    }

    /// True when an update needing `per_update` compiles would exceed the budget.
    fn exhausted_by(&self, per_update: usize) -> bool {
        per_update > 0 && self.used + per_update > self.budget
    }
}

/// Re-executes this program with `--resume OUT` (after a checkpoint), replacing the process.
fn restart(args: &TrainArgs) -> Result<()> {
    let mut argv: Vec<String> = Vec::new();
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
        } else if a == "--resume" {
            skip = true;
        } else if !a.starts_with("--resume=") {
            argv.push(a);
        }
    }
    argv.push("--resume".into());
    argv.push(args.out.display().to_string());
    eprintln!(
        "compile budget reached: checkpointed, restarting with --resume {}",
        args.out.display()
    );
    exec_self(&argv)
}

#[cfg(unix)]
fn exec_self(argv: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let err = std::process::Command::new(exe).args(argv).exec();
    Err(err).context("re-executing orion")
}

#[cfg(not(unix))]
fn exec_self(_argv: &[String]) -> Result<()> {
    bail!("restarting the process is only implemented on Unix")
}

fn run_loop(args: &TrainArgs, trainer: &mut Trainer, device: &dyn Backend) -> Result<()> {
    let cfg = trainer.runner.cfg.clone();
    let programs = &mut trainer.runner.programs;
    let (mut updater, compiles) =
        WeightUpdater::start(args.strategy.strategy(), programs, &cfg, &trainer.params, device)?;
    // The step programs made 2 compiles (layer forward and backward).
    let per_update = updater.compiles_per_update(&cfg);
    let mut budget = CompileBudget::new(args, 2 + compiles, per_update, cfg.n_layers)?;
    let mut metrics = match args.resume {
        Some(_) => MetricsWriter::resume(&args.out, trainer.step)?,
        None => MetricsWriter::create(&args.out)?,
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps)
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {msg} [{elapsed}<{eta}]",
    )?);
    bar.set_position(trainer.step);
    let tokens_per_step = (args.batch_size * args.seq_len * args.accum) as f64;
    while trainer.step < args.steps {
        if budget.exhausted_by(updater.compiles_per_update(&cfg)) {
            save_checkpoint(&args.out, &trainer.checkpoint(serde_json::Value::Null)?)?;
            bar.abandon();
            restart(args)?;
        }
        let start = Instant::now();
        let mut report = trainer.train_step()?;
        let clock = Instant::now();
        let event = match report.skipped {
            true => UpdateEvent::None,
            false => updater.after_update(&mut trainer.runner.programs, &cfg, &trainer.params, device)?,
        };
        report.timings.update_ms = clock.elapsed().as_secs_f64() * 1e3;
        match &event {
            UpdateEvent::Recompiled(n) => budget.used += n,
            UpdateEvent::FellBack { reason, compiles } => {
                budget.used += compiles;
                bar.suspend(|| {
                    eprintln!(
                        "patch strategy: falling back to recompile at step {}: {reason}",
                        report.step
                    )
                });
            }
            UpdateEvent::None | UpdateEvent::Patched(_) => {}
        }
        let mut record = StepMetrics::new(
            report.step,
            report.loss,
            report.lr,
            tokens_per_step / start.elapsed().as_secs_f64(),
        );
        record
            .extra
            .insert("grad_norm".into(), serde_json::json!(report.grad_norm));
        record.extra.insert("skipped".into(), serde_json::json!(report.skipped));
        record
            .extra
            .insert("strategy".into(), serde_json::json!(updater.active().name()));
        record
            .extra
            .insert("update_ms".into(), serde_json::json!(report.timings.update_ms));
        record
            .extra
            .insert("loss_scale".into(), serde_json::json!(report.loss_scale));
        let scaler = trainer.scaler.state();
        record
            .extra
            .insert("overflow_events".into(), serde_json::json!(scaler.overflow_events));
        let last = report.step == args.steps;
        if (args.eval_every > 0 && report.step % args.eval_every == 0) || last {
            record.val_loss = trainer.validation_loss(8)?;
        }
        metrics.write(&record)?;
        bar.set_message(format!("loss {:.3}", report.loss));
        bar.set_position(report.step);
        if args.checkpoint_every > 0 && report.step % args.checkpoint_every == 0 {
            save_checkpoint(&args.out, &trainer.checkpoint(serde_json::Value::Null)?)?;
        }
    }
    bar.finish();
    Ok(())
}

/// Exports the model, plots the losses and prints a sample.
fn finish(args: &TrainArgs, trainer: &Trainer, tokenizer: Option<&dyn Tokenizer>) -> Result<()> {
    let model = trainer.model()?;
    export_safetensors(&model, &args.out.join("model.safetensors"))?;
    let config = serde_json::to_vec_pretty(model.config())?;
    write_atomically(&args.out.join("config.json"), &config)?;
    plot_losses(&args.out.join(METRICS_FILE), &args.out.join(LOSS_PLOT_FILE))?;
    if let Some(val) = trainer.validation_loss(8)? {
        eprintln!(
            "final validation loss {val:.4} (uniform: {:.4})",
            (model.config().vocab_size as f32).ln()
        );
    }
    let (Some(tok), true) = (tokenizer, args.sample_tokens > 0) else {
        return Ok(());
    };
    let cpu = args.products.cpu_backend();
    let mut generator = Generator::new(&model, &cpu)?;
    let prompt = tok.encode("Once upon a time");
    let options = GenerateOptions {
        max_new_tokens: args
            .sample_tokens
            .min(model.config().max_seq_len.saturating_sub(prompt.len())),
        sampling: SamplingOptions {
            temperature: args.temperature,
            ..SamplingOptions::greedy()
        },
        seed: args.seed,
        stop_tokens: vec![],
    };
    let generation = generator.generate(&prompt, &options, &mut |_| true)?;
    let mut all = prompt;
    all.extend(&generation.tokens);
    println!("{}", tok.decode_lossy(&all));
    Ok(())
}
