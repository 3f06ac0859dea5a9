//! Small-row GEMM benchmark (`cargo bench -p orion-core --bench small_row_gemm`): the four weight
//! products of one GPT-2 layer (`[k, n]` weights: QKV 768→2304, output 768→768, up 768→3072, down
//! 3072→768) for prompts of 16, 32, 64 and 128 tokens, through `gemm_f32` (the AVX-512 small-row
//! kernel below 128 rows) and through `gemm_f32_crate` (always the `gemm` crate), in the same run.
//! Twelve copies of the layer's weights (85 MB) are cycled so that, as in a real prefill, weights
//! come from memory rather than cache. Criterion reports FLOP-based throughput (elements = 2·m·n·k
//! multiply-adds counted as two); compare the two functions as a ratio.

mod common;

use common::values;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orion_core::cpu::install;
use orion_core::cpu::kernels::{gemm_f32, gemm_f32_crate, MatRef};
use std::hint::black_box;
use std::time::Duration;

/// `(k, n)` of one layer's weight products.
const LAYER: [(usize, usize); 4] = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];
const COPIES: usize = 12;
const ROWS: [usize; 4] = [16, 32, 64, 128];

type Product =
    fn(&mut [f32], usize, MatRef<'_>, MatRef<'_>, (usize, usize, usize), bool, usize) -> orion_core::Result<()>;

fn small_rows(c: &mut Criterion) {
    let weights: Vec<Vec<Vec<f32>>> = (0..COPIES)
        .map(|copy| {
            LAYER
                .iter()
                .enumerate()
                .map(|(i, &(k, n))| values(k * n, copy * 4 + i))
                .collect()
        })
        .collect();
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("small_row_gemm");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    for m in ROWS {
        let x = values(m * 3072, 7);
        let mut out = vec![0.0f32; m * 3072];
        let flops: usize = LAYER.iter().map(|&(k, n)| 2 * m * k * n).sum();
        group.throughput(Throughput::Elements((flops * COPIES) as u64));
        let products: [(&str, Product); 2] = [("gemm_f32", gemm_f32), ("gemm_crate", gemm_f32_crate)];
        for (name, product) in products {
            group.bench_function(BenchmarkId::new(name, m), |b| {
                b.iter(|| {
                    install(|| {
                        for layer in &weights {
                            for (w, &(k, n)) in layer.iter().zip(&LAYER) {
                                let a = MatRef {
                                    data: &x[..m * k],
                                    rs: k,
                                    cs: 1,
                                };
                                let b = MatRef { data: w, rs: n, cs: 1 };
                                product(&mut out[..m * n], n, a, b, (m, n, k), false, threads).expect("valid shapes");
                            }
                        }
                    });
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, small_rows);
criterion_main!(benches);
