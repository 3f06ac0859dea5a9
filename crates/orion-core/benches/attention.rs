//! Attention's fused steps at the training shapes (`cargo bench -p orion-core --bench attention`):
//! the forward (`softmax(q·kᵀ/√d + causal mask) · v`, whose scores product runs inside the softmax
//! step, `cpu/attention.rs`) and the forward and backward graph reverse-mode autodiff makes of it
//! (its backward one fused step, `cpu/attention_backward.rs`), each against the same graph with an
//! intermediate also an output (the scores, or `dP`), which keeps those steps unfused. Shapes: Stories15M (8 sequences ×
//! 6 heads of 256 × 48) and Stories110M (8 × 12 heads of 256 × 64), both threads.
//!
//! Report results as ratios between the fused and unfused plans measured in the same run, never
//! as absolute numbers.

mod common;

use common::values;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use orion_core::autodiff::{grad, Seed};
use orion_core::backend::Executable;
use orion_core::cpu::{CpuBackend, CpuOptions};
use orion_core::{composite, DType, Graph, Op, Tensor, TensorType};
use std::hint::black_box;
use std::time::Duration;

/// (label, sequences, heads, tokens, head dimension).
const SHAPES: [(&str, usize, usize, usize, usize); 2] =
    [("stories15M", 8, 6, 256, 48), ("stories110M", 8, 12, 256, 64)];

/// Causal attention over `q, k, v [b, h, t, d]` as the models build it; with `expose`, the scores
/// product is also an output.
fn attention(dims: [usize; 4], expose: bool) -> Graph {
    let mut g = Graph::new("attention");
    let ty = TensorType::new(DType::F32, dims.to_vec());
    let [q, k, v] = ["q", "k", "v"].map(|name| g.input(name, ty.clone()).expect("input"));
    let scores = g.matmul(q, k, false, true).expect("scores");
    let scaled = g.mul_scalar(scores, 1.0 / (dims[3] as f32).sqrt()).expect("scale");
    let mask = composite::causal_mask(&mut g, dims[2], DType::F32).expect("mask");
    let masked = g.add(scaled, mask).expect("mask add");
    let probs = g.softmax(masked, -1).expect("softmax");
    let out = g.matmul(probs, v, false, false).expect("values");
    g.set_output("y", out).expect("output");
    if expose {
        g.set_output("scores", scores).expect("output");
    }
    g
}

/// The backward of [`attention`] (gradients of q, k and v from a cotangent of `y`); with `expose`,
/// `dP = dO·Vᵀ` is also an output.
fn attention_backward(dims: [usize; 4], expose: bool) -> Graph {
    let g = attention(dims, false);
    let mut grads = grad(&g, &["q", "k", "v"], Seed::Cotangents).expect("differentiates");
    if expose {
        let v = grads.input_value("v").expect("v");
        let dp = grads
            .nodes()
            .iter()
            .find(|n| matches!(n.op, Op::MatMul { transpose_b: true, .. }) && n.inputs[1] == v)
            .map(|n| n.outputs[0])
            .expect("dP");
        grads.set_output("dp", dp).expect("output");
    }
    grads
}

fn attention_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    let backend = CpuBackend::new(CpuOptions::default());
    for (label, b, h, t, d) in SHAPES {
        let dims = [b, h, t, d];
        let n = dims.iter().product();
        let mut inputs: Vec<Tensor> = (0..3).map(|i| Tensor::f32(dims.to_vec(), values(n, i + 1))).collect();
        for (plan, expose) in [("fused", false), ("unfused", true)] {
            let exe = backend.compile_cpu(&attention(dims, expose)).expect("compiles");
            assert_eq!(exe.plan_summary().count("scores_softmax"), usize::from(!expose));
            group.bench_function(BenchmarkId::new(format!("forward_{plan}"), label), |bench| {
                bench.iter(|| black_box(exe.run(&inputs).expect("runs")))
            });
        }
        inputs.push(Tensor::f32(dims.to_vec(), values(n, 9)));
        for (plan, expose) in [("fused", false), ("unfused", true)] {
            let exe = backend
                .compile_cpu(&attention_backward(dims, expose))
                .expect("compiles");
            assert_eq!(exe.plan_summary().count("attention_backward"), usize::from(!expose));
            group.bench_function(BenchmarkId::new(format!("backward_{plan}"), label), |bench| {
                bench.iter(|| black_box(exe.run(&inputs).expect("runs")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, attention_steps);
criterion_main!(benches);
