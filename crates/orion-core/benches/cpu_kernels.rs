//! CPU backend kernel benchmarks (`cargo bench -p orion-core --bench cpu_kernels`):
//! - `m1`: single-row products (one-token decode, `x [1, K] · Wᵀ` with `W [N, K]`) through `gemm`
//!   versus the hand-written GEMV, f32 and f16 weights, one thread and rayon's pool;
//! - `linear_m1`: one compiled linear layer end to end (plan overhead included);
//! - `prefill_gemm`: a 128-row `x · Wᵀ` as given and transposed (`(W · xᵀ)ᵀ`, what the plan picks
//!   below 256 rows);
//! - `cross_entropy`: the fused softmax cross-entropy over vocabulary-wide rows;
//! - `transcendental`: a fused `exp`/`tanh` program against the C library's functions;
//! - `layer_steps`: the non-GEMM steps of a GPT-2 layer (bias + GELU, layer norm, attention softmax).
//!
//! Report results as ratios between kernels measured in the same run, never as absolute numbers.

mod common;

use common::values;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use half::f16;
use orion_core::backend::Executable;
use orion_core::cpu::kernels::{gemm_f32, gemm_f32_strided, gemv, softmax_cross_entropy, MatRef, MatrixRows};
use orion_core::cpu::{CpuBackend, CpuOptions, WeightFormat};
use orion_core::{DType, Graph, Tensor, TensorType, UnaryOp};
use std::hint::black_box;
use std::time::Duration;

const SHAPES: [(usize, usize); 2] = [(768, 768), (768, 3072)];

fn single_row_products(c: &mut Criterion) {
    let all = rayon::current_num_threads();
    let mut group = c.benchmark_group("m1");
    for (k, n) in SHAPES {
        let w = values(n * k, 1);
        let w_half: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let x = values(k, 2);
        let mut y = vec![0.0f32; n];
        for threads in [1, all] {
            let label = format!("k{k}_n{n}_t{threads}");
            group.bench_function(BenchmarkId::new("gemm_f32", &label), |b| {
                b.iter(|| {
                    let a = MatRef { data: &x, rs: k, cs: 1 };
                    let wt = MatRef { data: &w, rs: 1, cs: k }; // W [N, K] read as [K, N]
                    gemm_f32(&mut y, n, a, wt, (1, n, k), false, threads).expect("valid shapes");
                    black_box(&y);
                })
            });
            group.bench_function(BenchmarkId::new("gemv_f32", &label), |b| {
                b.iter(|| {
                    gemv(MatrixRows::F32(&w), k, &x, &mut y, threads).expect("valid shapes");
                    black_box(&y);
                })
            });
            group.bench_function(BenchmarkId::new("gemv_f16", &label), |b| {
                b.iter(|| {
                    gemv(MatrixRows::F16(&w_half), k, &x, &mut y, threads).expect("valid shapes");
                    black_box(&y);
                })
            });
        }
    }
    group.finish();
}

/// A compiled `x [1, K] · Wᵀ` with W a constant: plan overhead included.
fn compiled_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_m1");
    for (k, n) in SHAPES {
        let mut g = Graph::new("linear");
        let x = g.input("x", TensorType::new(DType::F32, [1, k])).expect("input");
        let w = g.constant(Tensor::f32([n, k], values(n * k, 3))).expect("weight");
        let y = g.matmul(x, w, false, true).expect("matmul");
        g.set_output("y", y).expect("output");
        let input = [Tensor::f32([1, k], values(k, 4))];
        for weights in [WeightFormat::F32, WeightFormat::F16] {
            for threads in [1, rayon::current_num_threads()] {
                let backend = CpuBackend::new(CpuOptions {
                    threads: Some(threads),
                    weights,
                    ..CpuOptions::default()
                });
                let exe = backend.compile_cpu(&g).expect("compiles");
                let id = BenchmarkId::new(format!("{weights:?}"), format!("k{k}_n{n}_t{threads}"));
                group.bench_function(id, |b| b.iter(|| black_box(exe.run(&input).expect("runs"))));
            }
        }
    }
    group.finish();
}

/// `x [128, K] · Wᵀ` for GPT-2's prefill shapes, as given and as `(W · xᵀ)ᵀ`.
fn prefill_gemm(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("prefill_gemm");
    group.sample_size(20);
    let m = 128;
    for (k, n) in [(768, 768), (768, 3072), (3072, 768)] {
        let x = values(m * k, 5);
        let w = values(n * k, 6);
        let mut out = vec![0.0f32; m * n];
        let label = format!("k{k}_n{n}");
        group.bench_function(BenchmarkId::new("as_given", &label), |b| {
            b.iter(|| {
                let (a, wt) = (MatRef { data: &x, rs: k, cs: 1 }, MatRef { data: &w, rs: 1, cs: k });
                gemm_f32(&mut out, n, a, wt, (m, n, k), false, threads).expect("valid shapes");
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("transposed", &label), |b| {
            b.iter(|| {
                let (wm, xt) = (MatRef { data: &w, rs: k, cs: 1 }, MatRef { data: &x, rs: 1, cs: k });
                gemm_f32_strided(&mut out, (1, n), wm, xt, (n, m, k), false, threads).expect("valid shapes");
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// The fused softmax cross-entropy over 256 rows of a 32000-word vocabulary.
fn cross_entropy(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let (rows, classes) = (256, 32000);
    let logits: Vec<f32> = values(rows * classes, 7).iter().map(|v| v * 8.0).collect();
    let labels: Vec<i32> = (0..rows as i32).map(|r| r * 97 % classes as i32).collect();
    let mut work = logits.clone();
    let mut group = c.benchmark_group("cross_entropy");
    group.sample_size(20);
    group.bench_function("rows256_v32000", |b| {
        b.iter(|| {
            work.copy_from_slice(&logits);
            black_box(softmax_cross_entropy(&mut work, classes, &labels, 1.0, threads).expect("valid labels"));
        })
    });
    group.finish();
}

/// `exp` and `tanh` of 1M elements: the compiled program (vectorised functions) against the C
/// library called per element.
fn transcendental(c: &mut Criterion) {
    let n = 1 << 20;
    let x = values(n, 8);
    let mut group = c.benchmark_group("transcendental");
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    for op in [UnaryOp::Exp, UnaryOp::Tanh] {
        let mut g = Graph::new("unary");
        let input = g.input("x", TensorType::new(DType::F32, [n])).expect("input");
        let y = g.unary(op, input).expect("unary");
        g.set_output("y", y).expect("output");
        let exe = CpuBackend::new(CpuOptions {
            threads: Some(1),
            weights: WeightFormat::F32,
            ..CpuOptions::default()
        })
        .compile_cpu(&g)
        .expect("compiles");
        let inputs = [Tensor::f32([n], x.clone())];
        group.bench_function(BenchmarkId::new("program", format!("{op:?}")), |b| {
            b.iter(|| black_box(exe.run(&inputs).expect("runs")))
        });
        let f: fn(f32) -> f32 = if op == UnaryOp::Exp { f32::exp } else { f32::tanh };
        let mut out = vec![0.0f32; n];
        group.bench_function(BenchmarkId::new("libm", format!("{op:?}")), |b| {
            b.iter(|| {
                for (o, &v) in out.iter_mut().zip(&x) {
                    *o = f(v);
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// The non-GEMM steps of a GPT-2 layer at 128 tokens, compiled: the bias add + tanh-GELU on
/// `[128, 3072]`, a layer norm on `[128, 768]`, and the scaled, masked attention softmax on
/// `[12, 128, 128]`. Each graph ends in a keep-dims max, so the measured steps write arena slots
/// (as inside the model), not a fresh output.
fn layer_steps(c: &mut Criterion) {
    use orion_core::{composite, ReduceOp};
    let t = 128;
    let mut group = c.benchmark_group("layer_steps");
    group.sample_size(30).measurement_time(Duration::from_secs(3));
    let cases: [(&str, Vec<usize>); 3] = [
        ("gelu_bias", vec![t, 3072]),
        ("layer_norm", vec![t, 768]),
        ("softmax", vec![12, t, t]),
    ];
    for (name, dims) in cases {
        let mut g = Graph::new(name);
        let x = g.input("x", TensorType::new(DType::F32, dims.clone())).expect("input");
        let width = dims[dims.len() - 1];
        let row = |g: &mut Graph, seed| g.constant(Tensor::f32([width], values(width, seed))).expect("constant");
        let y = match name {
            "gelu_bias" => {
                let bias = row(&mut g, 2);
                let biased = g.add(x, bias).expect("add");
                composite::gelu_tanh(&mut g, biased).expect("gelu")
            }
            "layer_norm" => {
                let (gamma, beta) = (row(&mut g, 3), row(&mut g, 4));
                composite::layer_norm(&mut g, x, gamma, beta, 1e-5).expect("layer norm")
            }
            _ => {
                let scaled = g.mul_scalar(x, 0.125).expect("scale");
                let mask = composite::causal_mask(&mut g, t, DType::F32).expect("mask");
                let masked = g.add(scaled, mask).expect("mask add");
                g.softmax(masked, -1).expect("softmax")
            }
        };
        let y = g.reduce(ReduceOp::Max, y, &[-1], true).expect("reduce");
        g.set_output("y", y).expect("output");
        let exe = CpuBackend::new(CpuOptions::default())
            .compile_cpu(&g)
            .expect("compiles");
        let n = dims.iter().product();
        let inputs = [Tensor::f32(dims.clone(), values(n, 1))];
        group.bench_function(name, |b| b.iter(|| black_box(exe.run(&inputs).expect("runs"))));
    }
    group.finish();
}

criterion_group!(
    benches,
    single_row_products,
    compiled_linear,
    prefill_gemm,
    cross_entropy,
    transcendental,
    layer_steps
);
criterion_main!(benches);
