//! CPU backend kernel benchmarks: single-row matrix products (one-token decode, `x [1, K] · Wᵀ`
//! with `W [N, K]`) through `gemm` versus the hand-written GEMV (f32 and f16 weights), on one
//! thread and on rayon's pool, plus one compiled linear layer end to end.
//!
//! Report results as ratios between kernels measured in the same run, never as absolute numbers.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use half::f16;
use half::slice::HalfFloatSliceExt;
use orion_core::backend::Executable;
use orion_core::cpu::kernels::{gemm_f32, gemv, MatRef, MatrixRows};
use orion_core::cpu::{CpuBackend, CpuOptions, WeightFormat};
use orion_core::{DType, Graph, Tensor, TensorType};
use std::hint::black_box;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

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
                    gemv(MatrixRows::F32(&w), &x, &mut y, threads);
                    black_box(&y);
                })
            });
            group.bench_function(BenchmarkId::new("gemm_f16", &label), |b| {
                // The backend's gemm route for half weights: convert row chunks, gemm each chunk.
                let rows_per_chunk = (1 << 16) / k;
                let mut scratch = vec![0.0f32; rows_per_chunk * k];
                b.iter(|| {
                    for j0 in (0..n).step_by(rows_per_chunk) {
                        let j1 = (j0 + rows_per_chunk).min(n);
                        let chunk = &mut scratch[..(j1 - j0) * k];
                        w_half[j0 * k..j1 * k].convert_to_f32_slice(chunk);
                        let a = MatRef { data: &x, rs: k, cs: 1 };
                        let wt = MatRef {
                            data: chunk,
                            rs: 1,
                            cs: k,
                        };
                        gemm_f32(&mut y[j0..], n, a, wt, (1, j1 - j0, k), false, threads).expect("valid shapes");
                    }
                    black_box(&y);
                })
            });
            group.bench_function(BenchmarkId::new("gemv_f16", &label), |b| {
                b.iter(|| {
                    gemv(MatrixRows::F16(&w_half), &x, &mut y, threads);
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
                });
                let exe = backend.compile_cpu(&g).expect("compiles");
                let id = BenchmarkId::new(format!("{weights:?}"), format!("k{k}_n{n}_t{threads}"));
                group.bench_function(id, |b| b.iter(|| black_box(exe.run(&input).expect("runs"))));
            }
        }
    }
    group.finish();
}

criterion_group!(benches, single_row_products, compiled_linear);
criterion_main!(benches);
