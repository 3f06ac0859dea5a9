//! `orion bench`: run a benchmark suite, print its table, write JSON, and gate on a saved baseline.
//!
//! `bench kernels|inference|training|compile [--device cpu|ane-sim] [--chip m4] [--model NAME|FILE]
//! [--weights f32|f16] [--batch-size B] [--seq-len T] [--iterations N] [--strategy dynamic|recompile|patch]
//! [--huge-pages] [--products f32|bf16] [--quick] [--json FILE] [--save-baseline FILE] [--baseline FILE]
//! [--threshold PCT]`.
//!
//! Order of effects: run the suite, print the table (stdout), write `--json` and `--save-baseline`
//! (atomically; both hold the same run), then compare with `--baseline` (printed to stdout) and exit
//! non-zero naming every figure slower than the threshold (or missing). Suites, defaults and what each
//! figure means are in the `orion_bench` crate and docs/BENCHMARKS.md.
//!
//! The hidden `--inject-delay-ms N` sleeps N ms inside every timed region (every program run, every
//! lowering): it exists to prove the regression gate fails when a figure is made slower on purpose.

use super::products::ProductsArg;
use crate::allocator::Tuning;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use orion_bench::table::{render_comparison, render_run};
use orion_bench::{compare, BenchOptions, BenchRun, Device, ProductsChoice, Strategy, Suite, WeightsChoice};
use std::path::PathBuf;
use std::time::Duration;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteChoice {
    /// Each program type: time per evaluation, GFLOP/s, bytes moved.
    Kernels,
    /// Prefill at several lengths, time to first token, decode tokens/s.
    Inference,
    /// Training steps with their measured per-phase breakdown.
    Training,
    /// Lowering and emitting every ANE program of a training step.
    Compile,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchDevice {
    Cpu,
    AneSim,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsArg {
    F32,
    F16,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyArg {
    Dynamic,
    Recompile,
    Patch,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum)]
    suite: SuiteChoice,
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    device: BenchDevice,
    /// Chip profile of `ane-sim` and `compile` (m1..m5).
    #[arg(long, default_value = "m4")]
    chip: String,
    /// Built-in model (gpt2, stories260K, stories15M, stories42M, stories110M), a config.json, or a
    /// weight file (inference and kernels); default: the suite's.
    #[arg(long)]
    model: Option<String>,
    /// Storage of baked matmul weights on the CPU (inference, decode/prefill kernels).
    #[arg(long, value_enum, default_value_t = WeightsArg::F32)]
    weights: WeightsArg,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sequence length (training, kernels) or KV-cache capacity (inference).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Timed repetitions per figure (the median is reported).
    #[arg(long)]
    iterations: Option<usize>,
    /// Training: how layer programs get their weights.
    #[arg(long, value_enum, default_value_t = StrategyArg::Dynamic)]
    strategy: StrategyArg,
    /// Fewer iterations and tokens: a smoke run, comparable only with other --quick runs.
    #[arg(long)]
    quick: bool,
    /// CPU (Linux): put the weights decode streams on transparent huge pages; faster decode, about
    /// a second more to create the first decode programs (inference, kernels).
    #[arg(long)]
    huge_pages: bool,
    /// Arithmetic of the CPU's large matrix products (every CPU program and the training head's
    /// classifier): f32, or bf16 operands summed in f32. Baselines compare only within one.
    #[arg(long, value_enum, default_value_t = ProductsArg::F32)]
    products: ProductsArg,
    /// Write the run as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the run as a baseline for later `--baseline` comparisons.
    #[arg(long)]
    save_baseline: Option<PathBuf>,
    /// Compare with a saved run; exit non-zero when a figure is slower than the threshold.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Slowdown allowed by the gate, percent.
    #[arg(long, default_value_t = 10.0)]
    threshold: f64,
    /// Testing the gate: sleep this many ms inside every timed region.
    #[arg(long, hide = true, default_value_t = 0)]
    inject_delay_ms: u64,
}

fn options(args: &BenchArgs) -> BenchOptions {
    BenchOptions {
        suite: match args.suite {
            SuiteChoice::Kernels => Suite::Kernels,
            SuiteChoice::Inference => Suite::Inference,
            SuiteChoice::Training => Suite::Training,
            SuiteChoice::Compile => Suite::Compile,
        },
        device: match args.device {
            BenchDevice::Cpu => Device::Cpu,
            BenchDevice::AneSim => Device::AneSim,
        },
        chip: args.chip.clone(),
        model: args.model.clone(),
        weights: match args.weights {
            WeightsArg::F32 => WeightsChoice::F32,
            WeightsArg::F16 => WeightsChoice::F16,
        },
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        iterations: args.iterations,
        quick: args.quick,
        huge_pages: args.huge_pages,
        products: match args.products {
            ProductsArg::F32 => ProductsChoice::F32,
            ProductsArg::Bf16 => ProductsChoice::Bf16,
        },
        strategy: match args.strategy {
            StrategyArg::Dynamic => Strategy::Dynamic,
            StrategyArg::Recompile => Strategy::Recompile,
            StrategyArg::Patch => Strategy::Patch,
        },
        inject_delay: Duration::from_millis(args.inject_delay_ms),
    }
}

pub fn run_bench(args: BenchArgs, allocator: &Tuning) -> Result<()> {
    if !args.threshold.is_finite() || args.threshold < 0.0 {
        bail!("--threshold must be a non-negative percentage, not {}", args.threshold);
    }
    // Read the baseline first: a missing or malformed file should fail before minutes of measuring.
    let baseline = match &args.baseline {
        Some(path) => Some(BenchRun::load(path)?),
        None => None,
    };
    let mut run = orion_bench::run(&options(&args))?;
    run.notes.push(allocator.describe());
    print!("{}", render_run(&run));
    for path in [&args.json, &args.save_baseline].into_iter().flatten() {
        run.save(path).with_context(|| format!("writing {}", path.display()))?;
    }
    let Some(baseline) = baseline else {
        return Ok(());
    };
    let comparison = compare(&baseline, &run, args.threshold)?;
    print!("{}", render_comparison(&comparison));
    let regressions = comparison.regressions();
    if regressions.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = regressions.iter().map(|c| format!("  {}", c.describe())).collect();
    bail!(
        "{} figure(s) slower than the baseline by more than {}% (or missing):\n{}",
        regressions.len(),
        args.threshold,
        list.join("\n")
    )
}
