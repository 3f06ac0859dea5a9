//! The kernels suite: every program type of a model, timed one evaluation at a time.
//!
//! Programs: the training step's programs exactly as `orion train` compiles them (layer forward and
//! backward on the training device; weight-gradient GEMMs, embedding and final norm on the CPU —
//! built by [`StepPrograms::new`] through an [`Instrumented`] backend that keeps each graph), the
//! step's fused classifier + cross-entropy kernel (not a program: its FLOPs and bytes are counted on
//! the graph that defines it), plus the inference programs (KV-cache decode step of capacity `seq_len`, prefill of `seq_len` tokens, weights
//! baked as constants in `--weights` storage). Each is run once untimed, then `iterations` times.
//!
//! Figures per program: median ms (gated), GFLOP/s from the counted FLOPs (`orion_core::flops`), the
//! bytes of one evaluation's inputs, outputs and constants (each once) and the rate that implies; on
//! `ane-sim`, the chip cost model's estimate per evaluation.
//!
//! Inputs: weights are the model's (layer 0's for layer programs, by canonical name), token ids are
//! seeded random ids below the vocabulary, every other float input is seeded uniform in [-1, 1].

use crate::error::{BenchError, Result};
use crate::measure::{cpu_backend, layer_backend, median, time_iterations, CompiledProgram, Instrumented};
use crate::options::Plan;
use crate::result::{BenchRun, Better, Device, Row, WeightsChoice};
use orion_ane::lower::WeightMode as AneWeightMode;
use orion_core::autodiff::{grad, Seed};
use orion_core::composite::{cross_entropy, linear};
use orion_core::flops::GraphCost;
use orion_core::{DType, Graph, Op, Tensor, TensorType};
use orion_models::config::ModelConfig;
use orion_models::model::decode_mask;
use orion_models::train::programs::head_name;
use orion_models::train::step::fused_classifier_with;
use orion_models::train::{StepPrograms, CLASSIFIER_BLOCK};
use orion_models::{Model, WeightMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::time::Duration;

/// What a program's graph name says it is (falls back to the name itself).
pub fn program_kind(name: &str) -> String {
    let grad = name.ends_with("_grad");
    let label = if name.ends_with("_grad_dw") {
        "weight-gradient GEMMs"
    } else if name.contains("_layer_") {
        if grad {
            "layer backward"
        } else {
            "layer forward"
        }
    } else if name.contains("_embed_") {
        if grad {
            "embedding backward"
        } else {
            "embedding forward"
        }
    } else if name.contains("_head_") {
        if grad {
            "head forward+backward"
        } else {
            "head forward"
        }
    } else if name.contains("_final_norm_") {
        if grad {
            "final norm backward"
        } else {
            "final norm forward"
        }
    } else if name.contains("_decode_") {
        "decode step"
    } else if name.contains("_prefill_") {
        "prefill"
    } else {
        return name.to_string();
    };
    label.to_string()
}

/// Bytes of a graph's constant matmul/conv weights (each constant counted once).
pub fn matmul_weight_bytes(graph: &Graph) -> f64 {
    let mut seen = BTreeSet::new();
    let mut bytes = 0.0;
    for node in graph.nodes() {
        if !matches!(node.op, Op::MatMul { .. } | Op::Conv1x1) {
            continue;
        }
        for &v in &node.inputs {
            if let Op::Const { value } = &graph.producer(v).op {
                if seen.insert(v) {
                    bytes += value.ty().size_bytes() as f64;
                }
            }
        }
    }
    bytes
}

/// Matmul weight bytes one evaluation streams under `weights` (`WeightFormat::F16` reads every
/// constant matmul/conv weight from a half-precision copy, a tied embedding table included).
pub fn streamed_weight_bytes(graph: &Graph, weights: WeightsChoice) -> f64 {
    let all = matmul_weight_bytes(graph);
    match weights {
        WeightsChoice::F32 => all,
        WeightsChoice::F16 => all / 2.0,
    }
}

/// Bytes of one evaluation's inputs, outputs and constants (as stored under `weights`), each once.
pub fn bytes_moved(graph: &Graph, weights: WeightsChoice) -> f64 {
    let all = GraphCost::of(graph).bytes_moved() as f64;
    all - (matmul_weight_bytes(graph) - streamed_weight_bytes(graph, weights))
}

/// A seeded input tensor of type `ty`: the model's weight `name` when it has one of that shape,
/// else token ids below `vocab` (i32) or uniform values in [-1, 1].
fn input_tensor(name: &str, ty: &TensorType, model: &Model, rng: &mut ChaCha8Rng) -> Tensor {
    let dims = ty.shape.dims().to_vec();
    let as_dtype = |values: Vec<f32>| match ty.dtype {
        DType::F16 => Tensor::f16(dims.clone(), values),
        _ => Tensor::f32(dims.clone(), values),
    };
    match ty.dtype {
        DType::I32 => {
            let vocab = model.config().vocab_size.max(1) as i32;
            Tensor::i32(
                dims.clone(),
                (0..ty.shape.numel()).map(|_| rng.gen_range(0..vocab)).collect(),
            )
        }
        DType::Bool => Tensor::zeros(ty),
        DType::F32 | DType::F16 => match model.weight(name) {
            Some(w) if w.shape() == &ty.shape => as_dtype(w.to_f32_vec()),
            _ => as_dtype((0..ty.shape.numel()).map(|_| rng.gen_range(-1.0f32..1.0)).collect()),
        },
    }
}

/// Inputs of `graph` in declaration order; `fixed` names inputs given explicitly.
pub fn program_inputs(graph: &Graph, model: &Model, fixed: &[(&str, Tensor)], seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    graph
        .inputs()
        .map(|(name, _, ty)| match fixed.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => t.clone(),
            None => input_tensor(name, ty, model, &mut rng),
        })
        .collect()
}

/// One table row: the program's median time, rates and, on the simulated ANE, the estimate.
fn kernel_row(name: String, runs_on: &str, program: &CompiledProgram, ms: f64, weights: WeightsChoice) -> Row {
    let cost = GraphCost::of(&program.graph);
    let bytes = bytes_moved(&program.graph, weights);
    let mut row = Row::new(name, runs_on)
        .with("ms", ms, "ms", Better::Lower)
        .with("GFLOP/s", cost.flops / (ms * 1e6), "GFLOP/s", Better::Info)
        .with("GB/s", bytes / (ms * 1e6), "GB/s", Better::Info)
        .with("MFLOP", cost.flops / 1e6, "MFLOP", Better::Info)
        .with("MB", bytes / 1e6, "MB", Better::Info);
    if let Some(report) = program.stats().last_report {
        row = row.with("est ms", report.estimated_ms, "ms", Better::Info).with(
            "est GFLOP/s",
            report.flops / (report.estimated_ms * 1e6),
            "GFLOP/s",
            Better::Info,
        );
    }
    row
}

/// Times every program compiled through `backend`; appends one row each (names made unique).
fn time_programs(
    backend: &Instrumented,
    model: &Model,
    plan: &Plan,
    fixed: &[(&str, Tensor)],
    rows: &mut Vec<Row>,
) -> Result<()> {
    for (i, program) in backend.programs().iter().enumerate() {
        let inputs = program_inputs(&program.graph, model, fixed, 7 + i as u64);
        let samples = time_iterations(1, plan.config.iterations, Duration::ZERO, || {
            program.run(&inputs)?;
            Ok(())
        })?;
        let mut name = program_kind(program.name());
        if rows.iter().any(|r| r.name == name) {
            name = format!("{name} ({})", program.name());
        }
        rows.push(kernel_row(
            name,
            &backend.label,
            program,
            median(&samples),
            plan.config.weights,
        ));
    }
    Ok(())
}

/// The classifier and mean cross-entropy with their gradients, as the graph that defines them
/// (`x_norm [N, D]`, the classifier `[V, D]`, labels → loss; gradients of `x_norm` and the classifier).
fn classifier_graph(cfg: &ModelConfig, rows: usize) -> Result<Graph> {
    let mut g = Graph::new(format!("{}_classifier_{rows}", cfg.family.name()));
    let x = g.input("x_norm", TensorType::new(DType::F32, [rows, cfg.dim]))?;
    let w = g.input("w", TensorType::new(DType::F32, [cfg.vocab_size, cfg.dim]))?;
    let labels = g.input("labels", TensorType::new(DType::I32, [rows]))?;
    let logits = linear(&mut g, x, w)?;
    let loss = cross_entropy(&mut g, logits, labels)?;
    g.set_output("loss", loss)?;
    Ok(grad(&g, &["x_norm", "w"], Seed::Loss("loss".into()))?)
}

/// The training step's fused classifier + cross-entropy (a CPU kernel, not a program) on all `B·T`
/// rows; FLOPs and bytes are those of [`classifier_graph`].
fn classifier_row(plan: &Plan, model: &Model) -> Result<Row> {
    let cfg = &plan.model_config;
    let rows = plan.config.batch_size * plan.config.seq_len;
    let w = model
        .weight(head_name(cfg))
        .map(|t| t.to_f32_vec())
        .ok_or_else(|| BenchError::Usage(format!("the model has no classifier {}", head_name(cfg))))?;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x_norm: Vec<f32> = (0..rows * cfg.dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let vocab = cfg.vocab_size.max(1) as i32;
    let targets: Vec<i32> = (0..rows).map(|_| rng.gen_range(0..vocab)).collect();
    // The rows per block the training step's fused classifier uses.
    let block = (CLASSIFIER_BLOCK / cfg.vocab_size.max(1)).clamp(1, rows);
    let products = plan.config.products.precision();
    let samples = time_iterations(1, plan.config.iterations, plan.delay, || {
        fused_classifier_with(products, &w, cfg.dim, &x_norm, &targets, block)?;
        Ok(())
    })?;
    let ms = median(&samples);
    let graph = classifier_graph(cfg, rows)?;
    let cost = GraphCost::of(&graph);
    let bytes = cost.bytes_moved() as f64;
    Ok(Row::new("classifier + cross-entropy, fwd+bwd (fused)", "cpu")
        .with("ms", ms, "ms", Better::Lower)
        .with("GFLOP/s", cost.flops / (ms * 1e6), "GFLOP/s", Better::Info)
        .with("GB/s", bytes / (ms * 1e6), "GB/s", Better::Info)
        .with("MFLOP", cost.flops / 1e6, "MFLOP", Better::Info)
        .with("MB", bytes / 1e6, "MB", Better::Info))
}

/// Runs the kernels suite.
pub fn run_kernels(plan: &Plan) -> Result<BenchRun> {
    let cfg = &plan.model_config;
    let (t, b) = (plan.config.seq_len, plan.config.batch_size);
    let model = plan.model()?;
    let products = plan.config.products;
    let train_cpu = cpu_backend(WeightsChoice::F32, false, products, plan.delay);
    let lowering = AneWeightMode::Inputs;
    let (device, dtype) = layer_backend(plan.config.device, plan.chip(), lowering, products, plan.delay)?;
    let _step_programs = StepPrograms::new(cfg, t, b, &device, dtype, &train_cpu)?;
    let inference = cpu_backend(plan.config.weights, plan.config.huge_pages, products, plan.delay);
    inference.compile_program(&model.decode_graph(t, DType::F32, WeightMode::Constants)?)?;
    inference.compile_program(&model.prefill_graph(t, DType::F32, WeightMode::Constants)?)?;

    let mut rows = Vec::new();
    time_programs(&device, &model, plan, &[], &mut rows)?;
    time_programs(&train_cpu, &model, plan, &[], &mut rows)?;
    rows.push(classifier_row(plan, &model)?);
    let position = t / 2;
    let fixed = [
        ("position", Tensor::i32([1], vec![position as i32])),
        ("mask", decode_mask(t, position, DType::F32)?),
    ];
    time_programs(&inference, &model, plan, &fixed, &mut rows)?;

    let mut notes = vec![
        format!(
            "ms: median wall time of one evaluation ({} timed after 1 warm-up), inputs already bound; \
             training programs for batch {b} × {t} tokens as the step runs them (layer programs on the whole \
             batch on the CPU, one sequence per call on other devices; final norm and classifier on all {} rows)",
            plan.config.iterations,
            b * t
        ),
        "GFLOP/s: FLOPs counted on the program's graph (2·M·N·K per matmul, 1 per element otherwise) / ms; \
         MB: inputs + outputs + constants of one evaluation, each once (a gather reads only its rows, so the \
         embedding's MB overstate), GB/s = MB / ms"
            .to_string(),
        format!(
            "decode step: KV cache of {t} positions at position {position}; prefill: {t} tokens; both with \
             weights baked as {} constants, on the CPU",
            plan.config.weights.name()
        ),
    ];
    if plan.config.device == Device::AneSim {
        let profile = device
            .profile()
            .map_or_else(String::new, |p| format!("{} ({})", p.id, p.name));
        notes.push(format!(
            "ane-sim rows: ms is the simulator's wall time (it interprets the MIL in fp16 on the host), \
             not a device prediction; est ms is the cost model of {profile} per evaluation"
        ));
    }
    Ok(BenchRun::new(plan.config.clone(), plan.model_summary(), rows, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_kinds_follow_the_graph_names() {
        assert_eq!(program_kind("llama_layer_32"), "layer forward");
        assert_eq!(program_kind("llama_layer_32_grad"), "layer backward");
        assert_eq!(program_kind("gpt2_layer_32_grad_dw"), "weight-gradient GEMMs");
        assert_eq!(program_kind("gpt2_embed_32_grad"), "embedding backward");
        assert_eq!(program_kind("llama_head_64_grad"), "head forward+backward");
        assert_eq!(program_kind("llama_decode_256"), "decode step");
        assert_eq!(program_kind("something_else"), "something_else");
    }

    #[test]
    fn matmul_weights_are_counted_once_and_halved_under_f16() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::new(DType::F32, [2, 4])).unwrap();
        let ids = g.input("ids", TensorType::new(DType::I32, [2])).unwrap();
        let w = g.constant(Tensor::f32([4, 3], vec![0.1; 12])).unwrap();
        let table = g.constant(Tensor::f32([5, 4], vec![0.2; 20])).unwrap();
        let y = g.matmul(x, w, false, false).unwrap();
        let y2 = g.matmul(x, w, false, false).unwrap();
        // The table is gathered from and multiplied with (a tied head).
        let rows = g.gather(table, ids).unwrap();
        let logits = g.matmul(rows, table, false, true).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("y2", y2).unwrap();
        g.set_output("logits", logits).unwrap();
        assert_eq!(matmul_weight_bytes(&g), (12.0 + 20.0) * 4.0);
        assert_eq!(streamed_weight_bytes(&g, WeightsChoice::F16), (12.0 + 20.0) * 2.0);
        // Inputs 8 + 2 elements, outputs 6 + 6 + 10, constants 32: f16 halves the 32.
        assert_eq!(bytes_moved(&g, WeightsChoice::F32), (8.0 + 2.0 + 22.0 + 32.0) * 4.0);
        assert_eq!(
            bytes_moved(&g, WeightsChoice::F16),
            (8.0 + 2.0 + 22.0) * 4.0 + 32.0 * 2.0
        );
    }
}
