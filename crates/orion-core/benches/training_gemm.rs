//! The training step's product shapes in f32 and in bfloat16 (`ProductPrecision::Bf16`), same run
//! (`cargo bench -p orion-core --bench training_gemm`): Stories110M's layer products for a batch of
//! 8 × 256 rows (`x · Wᵀ`, `dy · W`, `dyᵀ · x`) and Stories15M's classifier (`x · Wᵀ` over a
//! 32,000-token vocabulary, `dz · W`, `xᵀ · dz`), both threads; also a Stories110M MLP product and
//! GPT-2's `c_fc` at 128 prefill tokens, the shapes `tools/peers/torch_bench.py gemm` times PyTorch and
//! numpy at.
//!
//! Report results as ratios between the two precisions measured in the same run, never as
//! absolute numbers.

mod common;

use common::values;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orion_core::cpu::kernels::{gemm_with, MatRef};
use orion_core::cpu::ProductPrecision;
use std::hint::black_box;
use std::time::Duration;

/// (label, m, n, k, left read transposed, right read transposed).
const SHAPES: [(&str, usize, usize, usize, bool, bool); 8] = [
    ("layer_x_wt", 2048, 768, 768, false, true),
    // The shapes `tools/peers/torch_bench.py gemm` measures PyTorch and numpy at.
    ("mlp_x_wt", 2048, 2048, 768, false, true),
    ("prefill_fc_x_wt", 128, 3072, 768, false, true),
    ("layer_dy_w", 2048, 768, 768, false, false),
    ("layer_dyt_x", 768, 768, 2048, true, false),
    ("head_x_wt", 2048, 32000, 288, false, true),
    ("head_dz_w", 2048, 288, 32000, false, false),
    ("head_xt_dz", 288, 32000, 2048, true, false),
];

fn training_products(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut group = c.benchmark_group("training_gemm");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for (label, m, n, k, left_t, right_t) in SHAPES {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let a = if left_t {
            MatRef { data: &a, rs: 1, cs: m }
        } else {
            MatRef { data: &a, rs: k, cs: 1 }
        };
        let b = if right_t {
            MatRef { data: &b, rs: 1, cs: k }
        } else {
            MatRef { data: &b, rs: n, cs: 1 }
        };
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for precision in [ProductPrecision::F32, ProductPrecision::Bf16] {
            group.bench_function(BenchmarkId::new(format!("{precision:?}"), label), |bench| {
                bench.iter(|| {
                    orion_core::cpu::install(|| gemm_with(precision, &mut out, n, a, b, (m, n, k), (false, threads)))
                        .expect("valid shapes");
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, training_products);
criterion_main!(benches);
