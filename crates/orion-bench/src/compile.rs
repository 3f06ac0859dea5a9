//! The compile suite: building, optimising, lowering and emitting (MIL text and weight files) every
//! ANE program of a training step, for a chip profile, per weight-update strategy:
//!
//! - `dynamic`: the layer forward and the (weight-gradient-split) layer backward graph with weights as
//!   program inputs — two programs serve every layer and step; timed from building the graphs
//!   (`build_layer`, autodiff, split) to the emitted programs;
//! - `recompile`: what every update costs — each layer's forward and backward graph with its weights
//!   baked in as constants (weight files), from baking to the emitted programs, `2 · n_layers` programs.
//!
//! Lowering is `orion_ane::lower::lower` (MIL text, weight blobs, I/O description, lint), after the
//! core pass pipeline, as `AneBackend::compile_program` does before handing the bytes to a device.
//! Nothing is written to disk (that is the program cache's job); sizes are those of the emitted bytes.

use crate::error::{BenchError, Result};
use crate::measure::{median, ms_since};
use crate::options::Plan;
use crate::result::{BenchRun, Better, Row};
use orion_ane::lint::Severity;
use orion_ane::lower::{lower, LowerOptions, WeightMode};
use orion_ane::profile::ChipProfile;
use orion_core::autodiff::{grad, Seed};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::{DType, Graph};
use orion_models::config::ModelConfig;
use orion_models::model::{build_layer, layer_prefix};
use orion_models::train::programs::split_weight_gemms;
use orion_models::train::strategy::baked_layer_graphs;
use orion_models::train::Params;
use orion_models::Model;
use std::time::{Duration, Instant};

/// One pass over a strategy's programs.
#[derive(Clone, Copy, Debug, Default)]
struct CompileSample {
    graphs_ms: f64,
    optimise_ms: f64,
    lower_ms: f64,
    programs: usize,
    mil_bytes: usize,
    weight_bytes: usize,
    lint_errors: usize,
}

impl CompileSample {
    fn total_ms(&self) -> f64 {
        self.graphs_ms + self.optimise_ms + self.lower_ms
    }
}

/// The layer forward graph (fp16, weights as inputs) and its split backward graph.
fn layer_graphs(cfg: &ModelConfig, seq_len: usize) -> Result<(Graph, Graph)> {
    let forward = build_layer(cfg, 0, seq_len, DType::F16)?;
    let names: Vec<String> = forward.inputs().map(|(n, _, _)| n.to_string()).collect();
    let wrt: Vec<&str> = names.iter().map(String::as_str).collect();
    let (backward, _) = split_weight_gemms(&grad(&forward, &wrt, Seed::Cotangents)?)?;
    Ok((forward, backward))
}

/// Optimises and lowers each graph, adding to `sample`; `delay` is slept inside the lowering time.
fn emit(
    graphs: &[Graph],
    profile: &ChipProfile,
    weights: WeightMode,
    delay: Duration,
    sample: &mut CompileSample,
) -> Result<()> {
    let options = LowerOptions {
        weights,
        ..LowerOptions::default()
    };
    for g in graphs {
        let clock = Instant::now();
        let optimised = optimise(g, &PipelineOptions::default())?.graph;
        sample.optimise_ms += ms_since(clock);
        let clock = Instant::now();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let emitted = lower(&optimised, profile, &options)?;
        sample.lower_ms += ms_since(clock);
        sample.programs += 1;
        sample.mil_bytes += emitted.mil_text.len();
        sample.weight_bytes += emitted.weights.values().map(Vec::len).sum::<usize>();
        sample.lint_errors += emitted.lint.iter().filter(|v| v.severity == Severity::Error).count();
    }
    Ok(())
}

/// Every layer's forward and backward graph with that layer's weights from `params` baked in.
fn baked_layers(cfg: &ModelConfig, graphs: &(Graph, Graph), params: &Params) -> Result<Vec<Graph>> {
    let mut out = Vec::with_capacity(2 * cfg.n_layers);
    for layer in 0..cfg.n_layers {
        let (forward, backward) = baked_layer_graphs(cfg, (&graphs.0, &graphs.1), params, layer)?;
        out.push(forward);
        out.push(backward);
    }
    Ok(out)
}

fn row(name: String, samples: &[CompileSample]) -> Row {
    let med = |f: fn(&CompileSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    let last = samples.last().copied().unwrap_or_default();
    Row::new(name, "host")
        .with("ms", med(CompileSample::total_ms), "ms", Better::Lower)
        .with("lower+emit ms", med(|s| s.lower_ms), "ms", Better::Lower)
        .with("optimise ms", med(|s| s.optimise_ms), "ms", Better::Lower)
        .with("graphs ms", med(|s| s.graphs_ms), "ms", Better::Lower)
        .with("programs", last.programs as f64, "", Better::Info)
        .with("MIL KB", last.mil_bytes as f64 / 1e3, "KB", Better::Info)
        .with("weights MB", last.weight_bytes as f64 / 1e6, "MB", Better::Info)
}

/// Runs the compile suite.
pub fn run_compile(plan: &Plan) -> Result<BenchRun> {
    let cfg = &plan.model_config;
    let t = plan.config.seq_len;
    let chip = plan.chip();
    let profile =
        ChipProfile::builtin(chip).ok_or_else(|| BenchError::Usage(format!("no built-in chip profile {chip:?}")))?;
    let rounds = plan.config.iterations + 1;

    let mut dynamic = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut s = CompileSample::default();
        let clock = Instant::now();
        let (forward, backward) = layer_graphs(cfg, t)?;
        s.graphs_ms = ms_since(clock);
        emit(&[forward, backward], &profile, WeightMode::Inputs, plan.delay, &mut s)?;
        dynamic.push(s);
    }
    let params: Params = Model::random(cfg.clone(), 1)?
        .weights()
        .into_iter()
        .filter(|(name, _)| (0..cfg.n_layers).any(|l| name.starts_with(&layer_prefix(cfg, l))))
        .map(|(name, t)| (name, t.to_f32_vec()))
        .collect();
    let graphs = layer_graphs(cfg, t)?;
    let mut recompile = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut s = CompileSample::default();
        let clock = Instant::now();
        let baked = baked_layers(cfg, &graphs, &params)?;
        s.graphs_ms = ms_since(clock);
        emit(&baked, &profile, WeightMode::Baked, plan.delay, &mut s)?;
        recompile.push(s);
    }
    let rows = vec![
        row("dynamic (weights as inputs)".to_string(), &dynamic[1..]),
        row(
            format!("recompile, per update ({} layers baked)", cfg.n_layers),
            &recompile[1..],
        ),
    ];
    let lint_errors = dynamic[0].lint_errors + recompile[0].lint_errors;
    let mut notes = vec![
        format!(
            "programs of one training step at {t} tokens per sequence for {} ({}); median of {} after 1 warm-up; \
             ms = graphs (build + autodiff + split, or baking) + optimise (core passes) + lower+emit (MIL text, \
             weight blobs, I/O description, lint)",
            profile.id, profile.name, plan.config.iterations
        ),
        "issue 7 target: lowering and emitting every program of Stories110M training ≤ 100 ms".to_string(),
    ];
    if lint_errors > 0 {
        notes.push(format!(
            "{lint_errors} lint error(s) in the emitted programs: the device would refuse them"
        ));
    }
    Ok(BenchRun::new(plan.config.clone(), plan.model_summary(), rows, notes))
}
