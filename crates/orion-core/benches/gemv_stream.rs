//! Streaming GEMV benchmark (`cargo bench -p orion-core --bench gemv_stream`): the matrix-vector
//! products of one decode token of a 12-layer, 768-wide Llama (fused QKV, output, fused gate/up and
//! down projections per layer, then a 32,000-row classifier), f32 and f16 rows, on the process-wide
//! pool. The 438 MB of f32 weights (219 MB of halves) exceed the caches, so the figure is the rate at
//! which the kernel streams weights from memory: compare it with the machine's read bandwidth
//! (criterion reports bytes per second), and report results as ratios measured in the same run.

mod common;

use common::values;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use orion_core::cpu::install;
use orion_core::cpu::kernels::{gemv, MatrixRows};
use std::hint::black_box;
use std::time::Duration;

/// `(rows, k)` of the products of one layer, in order.
const LAYER: [(usize, usize); 4] = [(2304, 768), (768, 768), (4096, 768), (768, 2048)];
const LAYERS: usize = 12;
const CLASSIFIER: (usize, usize) = (32000, 768);

fn shapes() -> Vec<(usize, usize)> {
    let mut all: Vec<(usize, usize)> = (0..LAYERS).flat_map(|_| LAYER).collect();
    all.push(CLASSIFIER);
    all
}

fn decode_sequence(c: &mut Criterion) {
    let shapes = shapes();
    let f32_mats: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, &(r, k))| values(r * k, i)).collect();
    let f16_mats: Vec<Vec<f16>> = f32_mats
        .iter()
        .map(|m| m.iter().map(|&v| f16::from_f32(v)).collect())
        .collect();
    let elements: usize = shapes.iter().map(|&(r, k)| r * k).sum();
    let x = values(4096, 99);
    let mut y = vec![0.0f32; CLASSIFIER.0];
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("gemv_stream");
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes((elements * 4) as u64));
    group.bench_function("f32_decode_token", |b| {
        b.iter(|| {
            install(|| {
                for (m, &(r, k)) in f32_mats.iter().zip(&shapes) {
                    gemv(MatrixRows::F32(m), k, &x[..k], &mut y[..r], threads).expect("valid shapes");
                }
            });
            black_box(&y);
        })
    });
    group.throughput(Throughput::Bytes((elements * 2) as u64));
    group.bench_function("f16_decode_token", |b| {
        b.iter(|| {
            install(|| {
                for (m, &(r, k)) in f16_mats.iter().zip(&shapes) {
                    gemv(MatrixRows::F16(m), k, &x[..k], &mut y[..r], threads).expect("valid shapes");
                }
            });
            black_box(&y);
        })
    });
    group.finish();
}

criterion_group!(benches, decode_sequence);
criterion_main!(benches);
