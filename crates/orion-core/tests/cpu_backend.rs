//! Tests of the CPU backend against the reference interpreter (`Precision::F32`, compared within
//! `Tolerance::F32`): every op kind and dtype, matmul layouts and both weight formats, the GEMV and
//! elementwise-fused paths (asserted through the plan summary), data movement, runtime errors, random
//! graphs and the reference transformer blocks. Fusions across op boundaries: `cpu_fusion.rs`.

#[path = "common/cpu.rs"]
mod cpu;

use cpu::{check, check_against, compile, graph_of, options, values};
use orion_core::backend::{Backend, Executable};
use orion_core::composite::{gelu_tanh, layer_norm, linear_bias};
use orion_core::cpu::{CpuBackend, CpuOptions, WeightFormat};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::tensor::round_to_f16;
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::testing::{random_graph, random_inputs, RandomGraphOptions};
use orion_core::{BinaryOp, CompareOp, CoreError, DType, Graph, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};
use proptest::prelude::*;

#[test]
fn every_unary_op_matches_in_f32_and_f16() {
    for dtype in [DType::F32, DType::F16] {
        for op in UnaryOp::ALL {
            let (g, inputs) = graph_of(op.name(), dtype, &[&[3, 5]], |g, x| g.unary(op, x[0]));
            let summary = check(&g, &inputs);
            assert_eq!(summary.kernels, vec!["fused"], "{}", op.name());
        }
    }
}

const BROADCAST_PAIRS: [(&[usize], &[usize]); 6] = [
    (&[3, 4], &[3, 4]),
    (&[3, 4], &[]),
    (&[3, 4], &[4]),
    (&[3, 1], &[3, 4]),
    (&[2, 1, 4], &[3, 1]),
    (&[1], &[2, 3]),
];

#[test]
fn every_binary_op_matches_with_broadcasting() {
    for dtype in [DType::F32, DType::F16, DType::I32] {
        for op in BinaryOp::ALL {
            if dtype == DType::I32 && matches!(op, BinaryOp::Div | BinaryOp::Pow) {
                continue; // not defined on i32
            }
            for (a, b) in BROADCAST_PAIRS {
                let (g, inputs) = graph_of(op.name(), dtype, &[a, b], |g, x| g.binary(op, x[0], x[1]));
                check(&g, &inputs);
            }
        }
    }
}

#[test]
fn every_compare_op_matches_on_floats_and_integers() {
    for dtype in [DType::F32, DType::I32] {
        for op in CompareOp::ALL {
            for (a, b) in BROADCAST_PAIRS {
                let (g, mut inputs) = graph_of(op.name(), dtype, &[a, b], |g, x| g.compare(op, x[0], x[1]));
                // Make equal elements likely: round floats to halves of integers.
                if dtype == DType::F32 {
                    for t in inputs.iter_mut() {
                        let v: Vec<f32> = t.to_f32_vec().iter().map(|x| (x * 2.0).round() / 2.0).collect();
                        *t = Tensor::f32(t.shape().clone(), v);
                    }
                }
                check(&g, &inputs);
            }
        }
    }
}

#[test]
fn every_reduction_matches_on_every_axis_set() {
    let axis_sets: [&[isize]; 6] = [&[0], &[1], &[2], &[0, 1], &[1, 2], &[0, 2]];
    for dtype in [DType::F32, DType::F16, DType::I32] {
        for op in ReduceOp::ALL {
            if dtype == DType::I32 && op == ReduceOp::Mean {
                continue;
            }
            for axes in axis_sets {
                for keep in [false, true] {
                    let (g, inputs) = graph_of(op.name(), dtype, &[&[3, 4, 5]], |g, x| g.reduce(op, x[0], axes, keep));
                    let summary = check(&g, &inputs);
                    assert_eq!(summary.kernels, vec!["reduce"]);
                }
            }
        }
    }
}

#[test]
fn softmax_matches_on_every_axis_including_large_rows() {
    for axis in 0..3 {
        let (g, inputs) = graph_of("softmax", DType::F32, &[&[3, 4, 5]], |g, x| g.softmax(x[0], axis));
        check(&g, &inputs);
    }
    // Large enough to run the rows in parallel.
    let (g, inputs) = graph_of("softmax_big", DType::F32, &[&[64, 1024]], |g, x| g.softmax(x[0], -1));
    check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
    let (g, inputs) = graph_of("softmax_f16", DType::F16, &[&[4, 6]], |g, x| g.softmax(x[0], 0));
    check(&g, &inputs);
}

#[test]
fn matmul_matches_in_every_transpose_combination_with_batch_broadcast() {
    let (m, k, n) = (3, 4, 5);
    for ta in [false, true] {
        for tb in [false, true] {
            let a_last = if ta { [k, m] } else { [m, k] };
            let b_last = if tb { [n, k] } else { [k, n] };
            let batches: [(&[usize], &[usize]); 4] = [(&[], &[]), (&[2], &[2]), (&[2, 1], &[3]), (&[1], &[2, 3])];
            for (ba, bb) in batches {
                let a_dims = [ba, &a_last[..]].concat();
                let b_dims = [bb, &b_last[..]].concat();
                let (g, inputs) = graph_of("matmul", DType::F32, &[&a_dims, &b_dims], |g, x| {
                    g.matmul(x[0], x[1], ta, tb)
                });
                check(&g, &inputs);
            }
        }
    }
}

#[test]
fn matmul_with_f16_values_rounds_results() {
    for tb in [false, true] {
        let b: &[usize] = if tb { &[6, 8] } else { &[8, 6] };
        let (g, inputs) = graph_of("matmul_f16", DType::F16, &[&[2, 3, 8], b], |g, x| {
            g.matmul(x[0], x[1], false, tb)
        });
        // Results rounded to half are summed in the interpreter's order: bit-identical.
        let exe = compile(&g, CpuOptions::default());
        assert_eq!(exe.plan_summary().kernels, vec!["matmul_ordered"]);
        let expected = interpret(&g, &inputs, Precision::F32).unwrap();
        assert!(exe.run(&inputs).unwrap()[0].bitwise_eq(&expected[0]));
    }
}

/// `x [m, k] · Wᵀ` with `W [n, k]` a constant (values from `seed`, optionally half-rounded).
fn linear_graph(m: usize, k: usize, n: usize, round_weights: bool) -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new("linear");
    let x = g.input("x", TensorType::new(DType::F32, [m, k])).unwrap();
    // Weights of order 1/sqrt(k), as initialised models have: sums stay of order one.
    let scale = 1.0 / (k as f32).sqrt();
    let mut w: Vec<f32> = values(n * k, 99).iter().map(|v| v * scale).collect();
    if round_weights {
        w.iter_mut().for_each(|v| *v = round_to_f16(*v));
    }
    let w = g.constant(Tensor::f32([n, k], w)).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    g.set_output("y", y).unwrap();
    (g, vec![Tensor::f32([m, k], values(m * k, 7))])
}

#[test]
fn single_row_linear_takes_the_gemv_path_in_both_weight_formats() {
    for (k, n, threads) in [
        (40, 24, None),
        (13, 5, Some(2)),
        (768, 768, Some(2)),
        (768, 3072, Some(2)),
    ] {
        let (g, inputs) = linear_graph(1, k, n, false);
        let summary = check_against(&g, &g, &inputs, options(threads, WeightFormat::F32));
        assert_eq!(summary.kernels, vec!["gemv"], "k={k} n={n}");
        assert_eq!(summary.half_weights, 0);
        // f16 weights: compared with the interpreter run on the same weights rounded to half.
        let (rounded, _) = linear_graph(1, k, n, true);
        let summary = check_against(&g, &rounded, &inputs, options(threads, WeightFormat::F16));
        assert_eq!(summary.kernels, vec!["gemv"]);
        assert_eq!(summary.half_weights, 1);
    }
}

#[test]
fn single_row_products_with_strided_vectors_and_non_contiguous_matrices_match() {
    // [1, k] · [k, n] with the right operand stored [k, n] (columns not contiguous): split gemm;
    // the vector read with a stride (a stored [k, 1] read transposed); batched key-cache products.
    let (g, inputs) = graph_of("row_times_matrix", DType::F32, &[&[1, 300], &[300, 400]], |g, x| {
        g.matmul(x[0], x[1], false, false)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["gemm_split"]);
    // Attention probabilities times a value cache: small, rows combined in one loop.
    let (g, inputs) = graph_of("probs_values", DType::F32, &[&[12, 1, 33], &[12, 33, 64]], |g, x| {
        g.matmul(x[0], x[1], false, false)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["row_combination"]);
    let (g, inputs) = graph_of("strided_rows", DType::F32, &[&[9, 1], &[9, 5]], |g, x| {
        g.matmul(x[0], x[1], true, false)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["row_combination"]);
    let (g, inputs) = graph_of("strided_vector", DType::F32, &[&[70, 1], &[90, 70]], |g, x| {
        g.matmul(x[0], x[1], true, true)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["gemv"]);
    let (g, inputs) = graph_of("cache_scores", DType::F32, &[&[12, 1, 64], &[12, 33, 64]], |g, x| {
        g.matmul(x[0], x[1], false, true)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["gemv"]);
    let (g, inputs) = graph_of("matrix_vector", DType::F32, &[&[301, 77], &[77, 1]], |g, x| {
        g.matmul(x[0], x[1], false, false)
    });
    assert_eq!(check(&g, &inputs).kernels, vec!["gemv"]);
}

#[test]
fn few_row_products_with_transposed_weights_match_in_both_orientations() {
    // Up to 8 rows the stored weight rows are read in place (where that kernel runs).
    for (m, k, n) in [(2, 3, 5), (8, 70, 33), (9, 70, 33), (128, 300, 200), (300, 64, 96)] {
        let (g, inputs) = linear_graph(m, k, n, false);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        let expected = if m <= 8 {
            few_rows_or(packed_or_gemm())
        } else {
            packed_or_gemm()
        };
        assert_eq!(summary.kernels, vec![expected], "m={m}");
    }
}

/// The kernel of a product of 2–8 rows whose operands both have rows over k: the multi-row
/// matrix-vector kernel where the CPU has it, else `otherwise`.
fn few_rows_or(otherwise: &'static str) -> &'static str {
    if orion_core::cpu::kernels::many_rows_kernel_available() {
        "gemv_rows"
    } else {
        otherwise
    }
}

/// The kernel of a multi-row product with a constant f32 weight read transposed: packed where the
/// CPU runs the AVX-512 kernel.
fn packed_or_gemm() -> &'static str {
    if orion_core::cpu::kernels::avx512_gemm_available() {
        "gemm_packed"
    } else {
        "gemm"
    }
}

#[test]
fn weights_read_only_as_transposed_right_operands_of_multi_row_products_are_stored_transposed() {
    for (m, k, n) in [(17, 3, 5), (37, 70, 33), (128, 300, 200)] {
        let (g, inputs) = linear_graph(m, k, n, false);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        assert_eq!(
            (
                summary.kernels.clone(),
                summary.transposed_weights,
                summary.packed_weights
            ),
            (vec![packed_or_gemm()], 1, packed_count()),
            "m={m}"
        );
        // Half weights are stored transposed too (and still match the rounded reference).
        let (g, inputs) = linear_graph(m, k, n, true);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F16));
        assert_eq!(
            (summary.transposed_weights, summary.half_weights, summary.packed_weights),
            (1, 1, 0),
            "m={m}"
        );
    }
    // Single-row products (the matrix-vector kernel) keep the stored layout, and so do products of
    // up to 8 rows where the multi-row kernel runs (f32 and half weights: no derived copy).
    let (g, inputs) = linear_graph(1, 64, 48, false);
    assert_eq!(check(&g, &inputs).transposed_weights, 0);
    for (m, weights) in [(2, WeightFormat::F32), (8, WeightFormat::F32), (8, WeightFormat::F16)] {
        let (g, inputs) = linear_graph(m, 70, 33, false);
        let (rounded, _) = linear_graph(m, 70, 33, weights == WeightFormat::F16);
        let summary = check_against(&g, &rounded, &inputs, options(Some(2), weights));
        let in_place = usize::from(!orion_core::cpu::kernels::many_rows_kernel_available());
        assert_eq!(
            (summary.transposed_weights, summary.packed_weights.min(1)),
            (in_place, in_place.min(packed_count())),
            "m={m} {weights:?}: {summary}"
        );
    }
    // A weight also read untransposed (or as a graph output) stays as stored.
    let mut g = Graph::new("two_uses");
    let x = g.input("x", TensorType::new(DType::F32, [6, 8])).unwrap();
    let w = g.constant(Tensor::f32([8, 8], values(64, 5))).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    let z = g.matmul(y, w, false, false).unwrap();
    g.set_output("z", z).unwrap();
    let inputs = vec![Tensor::f32([6, 8], values(48, 6))];
    assert_eq!(check(&g, &inputs).transposed_weights, 0);
    // A constant nothing reads (left behind when a model graph stacks projection weights) gets no
    // transposed or packed copy; the one the product reads still does.
    let (mut g, inputs) = linear_graph(37, 70, 33, false);
    g.constant(Tensor::f32([33, 70], values(33 * 70, 8))).unwrap();
    let summary = check(&g, &inputs);
    assert_eq!(
        (summary.transposed_weights, summary.packed_weights),
        (1, packed_count())
    );
}

/// Weights the multi-row kernel stores packed: one where the AVX-512 kernel runs, else none.
fn packed_count() -> usize {
    usize::from(orion_core::cpu::kernels::avx512_gemm_available())
}

#[test]
fn packed_weights_serve_batched_and_transposed_left_operands_and_are_shared_between_plans() {
    let scale = 1.0 / 300f32.sqrt();
    let w = Tensor::f32([70, 300], values(70 * 300, 31).iter().map(|v| v * scale).collect());
    let build = |batch: usize, transpose_a: bool| {
        let mut g = Graph::new("batched_linear");
        // 21 rows: above what the multi-row matrix-vector kernel takes.
        let x_dims = if transpose_a {
            [batch, 300, 21]
        } else {
            [batch, 21, 300]
        };
        let x = g.input("x", TensorType::new(DType::F32, x_dims)).unwrap();
        let w = g.constant(w.clone()).unwrap();
        let y = g.matmul(x, w, transpose_a, true).unwrap();
        g.set_output("y", y).unwrap();
        (g, vec![Tensor::f32(x_dims, values(batch * 21 * 300, 32))])
    };
    for (batch, transpose_a) in [(1, false), (3, false), (2, true)] {
        let (g, inputs) = build(batch, transpose_a);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        assert_eq!(
            summary.kernels,
            vec![packed_or_gemm()],
            "batch {batch}, transpose_a {transpose_a}"
        );
    }
    // Two plans of one weight share its packing (as a generator's prefill programs of two lengths
    // do): the first product of the batch of three is the single product's.
    let (g1, in1) = build(1, false);
    let (g3, in3) = build(3, false);
    let (e1, e3) = (compile(&g1, CpuOptions::default()), compile(&g3, CpuOptions::default()));
    let y1 = e1.run(&in1).unwrap();
    let y3 = e3.run(&in3).unwrap();
    assert_eq!(y1[0].as_f32().unwrap(), &y3[0].as_f32().unwrap()[..21 * 70]);
}

#[test]
fn a_weight_also_used_as_a_table_keeps_f32_for_the_gather_and_half_for_the_product() {
    // A tied embedding: gather rows of `w [n, k]`, then multiply by `wᵀ`.
    let (n, k) = (50, 24);
    let build = |round: bool, count: usize| {
        let mut g = Graph::new("tied");
        let tokens = g.input("tokens", TensorType::new(DType::I32, [count])).unwrap();
        let w = values(n * k, 21);
        let w = g.constant(Tensor::f32([n, k], w.clone())).unwrap();
        let x = g.gather(w, tokens).unwrap();
        let head = if round {
            let rounded: Vec<f32> = values(n * k, 21).iter().map(|&v| round_to_f16(v)).collect();
            g.constant(Tensor::f32([n, k], rounded)).unwrap()
        } else {
            w
        };
        let y = g.matmul(x, head, false, true).unwrap();
        g.set_output("y", y).unwrap();
        g
    };
    // Three rows (gemm on the converted half copy) and one row (gemv on the half copy).
    for tokens in [vec![4, 0, 49], vec![17]] {
        let count = tokens.len();
        let inputs = [Tensor::i32([count], tokens)];
        let summary = check_against(
            &build(false, count),
            &build(true, count),
            &inputs,
            options(None, WeightFormat::F16),
        );
        assert_eq!(summary.half_weights, 1);
    }
}

#[test]
fn multi_row_matmul_with_half_weights_matches_rounded_weights() {
    // (1, 300, 400): one row, split across tasks, with every half-weight layout.
    for (m, k, n) in [(5, 40, 24), (16, 300, 400), (1, 300, 400)] {
        let (g, inputs) = linear_graph(m, k, n, false);
        let (rounded, _) = linear_graph(m, k, n, true);
        let summary = check_against(&g, &rounded, &inputs, options(Some(2), WeightFormat::F16));
        let few_rows = if m <= 8 { few_rows_or("gemm") } else { "gemm" };
        assert_eq!(summary.kernels, vec![if m == 1 { "gemv" } else { few_rows }]);
        assert_eq!(summary.half_weights, 1);
        // The weight as a non-transposed right operand (stored [k, n]) and as the left operand.
        for left in [false, true] {
            let build = |round: bool| {
                let mut g = Graph::new("weight_layouts");
                let mut w = values(k * n, 5);
                if round {
                    w.iter_mut().for_each(|v| *v = round_to_f16(*v));
                }
                let y = if left {
                    let x = g.input("x", TensorType::new(DType::F32, [k, m])).unwrap();
                    let w = g.constant(Tensor::f32([k, n], w)).unwrap();
                    g.matmul(w, x, true, false).unwrap() // w [k, n] read transposed: [n, k] · x [k, m]
                } else {
                    let x = g.input("x", TensorType::new(DType::F32, [m, k])).unwrap();
                    let w = g.constant(Tensor::f32([k, n], w)).unwrap();
                    g.matmul(x, w, false, false).unwrap()
                };
                g.set_output("y", y).unwrap();
                g
            };
            let x = Tensor::f32(if left { [k, m] } else { [m, k] }, values(m * k, 8));
            let summary = check_against(&build(false), &build(true), &[x], options(Some(2), WeightFormat::F16));
            assert_eq!(summary.half_weights, 1);
        }
    }
}

#[test]
fn conv1x1_matches_with_gemm_and_split_in_both_weight_formats() {
    // S = 1 is a matrix-vector product (rows split across tasks when large enough).
    for (cin, cout, s, kernel) in [(6, 5, 7, "gemm"), (64, 48, 1, "gemv"), (512, 300, 1, "gemv")] {
        let build = |round: bool| {
            let mut g = Graph::new("conv");
            let x = g.input("x", TensorType::new(DType::F32, [1, cin, 1, s])).unwrap();
            let mut w = values(cout * cin, 3);
            if round {
                w.iter_mut().for_each(|v| *v = round_to_f16(*v));
            }
            let w = g.constant(Tensor::f32([cout, cin, 1, 1], w)).unwrap();
            let y = g.conv1x1(x, w).unwrap();
            g.set_output("y", y).unwrap();
            g
        };
        let inputs = [Tensor::f32([1, cin, 1, s], values(cin * s, 4))];
        let summary = check_against(&build(false), &build(false), &inputs, CpuOptions::default());
        assert_eq!(summary.kernels, vec![kernel]);
        let summary = check_against(&build(false), &build(true), &inputs, options(None, WeightFormat::F16));
        assert_eq!((summary.kernels[0], summary.half_weights), (kernel, 1));
    }
    // Weight as an input (not a constant): stays f32 whatever the format.
    let (g, inputs) = graph_of("conv_inputs", DType::F32, &[&[1, 6, 1, 9], &[4, 6, 1, 1]], |g, x| {
        g.conv1x1(x[0], x[1])
    });
    let summary = check_against(&g, &g, &inputs, options(None, WeightFormat::F16));
    assert_eq!(summary.half_weights, 0);
}

/// `gelu(x · Wᵀ + b)` followed by a residual add: the bias, GELU and residual fuse into one loop.
fn mlp_graph(t: usize, d: usize, dtype: DType) -> (Graph, Vec<Tensor>) {
    graph_of("mlp", dtype, &[&[t, d], &[d, d], &[d]], |g, x| {
        let h = linear_bias(g, x[0], x[1], x[2])?;
        let a = gelu_tanh(g, h)?;
        g.add(a, x[0])
    })
}

#[test]
fn elementwise_chains_are_fused_and_match() {
    let (g, inputs) = mlp_graph(4, 16, DType::F32);
    let summary = check(&g, &inputs);
    // linear (4 rows: the multi-row kernel, or gemm), then one fused step: bias add, 9 GELU ops
    // (which read their input 4 times) and the residual add.
    assert_eq!(summary.kernels, vec![few_rows_or("gemm"), "fused"], "{summary}");
    assert_eq!(summary.fused_groups, 1);
    assert_eq!(summary.largest_fused_group, 11, "{summary}");
    // F16 values round after every fused op as the interpreter does.
    let (g, inputs) = mlp_graph(4, 16, DType::F16);
    let summary = check(&g, &inputs);
    assert_eq!(summary.fused_groups, 1);
    // Large enough to split the fused loop across threads.
    let (g, inputs) = graph_of("big_chain", DType::F32, &[&[256, 300], &[300]], |g, x| {
        let s = g.mul(x[0], x[1])?;
        let e = g.unary(UnaryOp::Tanh, s)?;
        g.add_scalar(e, 1.0)
    });
    let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
    assert_eq!((summary.fused_groups, summary.fused_ops), (1, 3));
}

#[test]
fn layer_norm_fuses_around_its_reductions() {
    let (g, inputs) = graph_of("layer_norm", DType::F32, &[&[5, 12], &[12], &[12]], |g, x| {
        layer_norm(g, x[0], x[1], x[2], 1e-5)
    });
    let summary = check(&g, &inputs);
    // The mean reads x itself; the variance's mean takes its squared deviations as a prologue.
    assert_eq!(
        (summary.count("reduce"), summary.count("fused_reduce")),
        (1, 1),
        "{summary}"
    );
    assert!(summary.fused_groups >= 1, "{summary}");
    // A value used twice or used as an output is not absorbed.
    let (g, inputs) = graph_of("shared", DType::F32, &[&[3, 4]], |g, x| {
        let e = g.unary(UnaryOp::Exp, x[0])?;
        let a = g.add(e, e)?;
        g.set_output("e", e)?;
        g.unary(UnaryOp::Neg, a)
    });
    let summary = check(&g, &inputs);
    assert_eq!(summary.kernels, vec!["fused", "fused"]);
    assert_eq!(summary.largest_fused_group, 2);
}

#[test]
fn every_shape_op_matches() {
    type Body = fn(&mut Graph, &[ValueId]) -> orion_core::Result<ValueId>;
    let cases: [(&str, Body); 9] = [
        ("transpose", |g, x| g.transpose(x[0], &[2, 0, 1])),
        ("transpose_last", |g, x| g.transpose(x[0], &[0, 2, 1])),
        ("slice", |g, x| g.slice(x[0], &[1, 0, 2], &[3, 2, 5])),
        ("concat", |g, x| {
            let t = g.slice(x[0], &[0, 0, 0], &[3, 1, 5])?;
            g.concat(&[x[0], t, x[0]], 1)
        }),
        ("split", |g, x| {
            let parts = g.split(x[0], 2, &[1, 3, 1])?;
            g.set_output("first", parts[0])?;
            g.set_output("last", parts[2])?;
            Ok(parts[1])
        }),
        ("pad", |g, x| g.pad(x[0], &[1, 0, 2], &[0, 2, 1], -0.5)),
        ("broadcast", |g, x| {
            let r = g.reduce(ReduceOp::Sum, x[0], &[1], true)?;
            g.broadcast(r, &[2, 3, 4, 5])
        }),
        ("reshape_identity", |g, x| {
            let r = g.reshape(x[0], &[5, 12])?;
            let i = g.identity(r)?;
            g.transpose(i, &[1, 0])
        }),
        ("reshape_output", |g, x| g.reshape(x[0], &[60])),
    ];
    for dtype in [DType::F32, DType::F16, DType::I32] {
        for (name, body) in cases {
            let (g, inputs) = graph_of(name, dtype, &[&[3, 4, 5]], body);
            check(&g, &inputs);
        }
    }
    let (g, _) = graph_of("aliases", DType::F32, &[&[3, 4, 5]], cases[7].1);
    assert_eq!(compile(&g, CpuOptions::default()).plan_summary().aliases, 2);
}

#[test]
fn every_cast_and_select_matches() {
    let source = [
        -2.5f32,
        -1.0,
        -0.0,
        0.0,
        0.4,
        1.5,
        2049.0,
        f32::NAN,
        3.0e9,
        -3.0e9,
        7.0,
        0.5,
    ];
    for from in DType::ALL {
        for to in DType::ALL {
            let mut g = Graph::new("cast");
            let x = g.input("x", TensorType::new(from, [3, 4])).unwrap();
            let y = g.cast(x, to).unwrap();
            g.set_output("y", y).unwrap();
            let input = match from {
                DType::F32 => Tensor::f32([3, 4], source.to_vec()),
                DType::F16 => Tensor::f16([3, 4], source.to_vec()),
                DType::I32 => Tensor::i32([3, 4], vec![-3, -1, 0, 0, 1, 2, 2049, 4097, i32::MAX, i32::MIN, 7, 5]),
                DType::Bool => Tensor::bool([3, 4], (0..12).map(|i| i % 3 == 0).collect()),
            };
            check(&g, &[input]);
        }
    }
    for dtype in [DType::F32, DType::I32, DType::Bool] {
        let mut g = Graph::new("select");
        let c = g.input("c", TensorType::new(DType::Bool, [3, 1])).unwrap();
        let a = g.input("a", TensorType::new(dtype, [3, 4])).unwrap();
        let b = g.input("b", TensorType::new(dtype, [4])).unwrap();
        let y = g.select(c, a, b).unwrap();
        g.set_output("y", y).unwrap();
        let inputs = random_inputs(&g, 3);
        assert_eq!(check(&g, &inputs).kernels, vec!["select"]);
    }
}

/// Gather from a [5, 3] table and scatter-add back, indices given as input `idx`.
fn gather_graph() -> Graph {
    let mut g = Graph::new("gather");
    let table = g.input("table", TensorType::new(DType::F32, [5, 3])).unwrap();
    let idx = g.input("idx", TensorType::new(DType::I32, [2, 3])).unwrap();
    let rows = g.gather(table, idx).unwrap();
    let back = g.scatter_add_rows(idx, rows, 5).unwrap();
    g.set_output("rows", rows).unwrap();
    g.set_output("back", back).unwrap();
    g
}

#[test]
fn gather_and_scatter_match_and_report_bad_indices() {
    let g = gather_graph();
    let table = Tensor::f32([5, 3], values(15, 1));
    let good = Tensor::i32([2, 3], vec![0, 4, 4, 2, 1, 0]);
    let summary = check(&g, &[table.clone(), good]);
    assert_eq!(summary.kernels, vec!["gather", "scatter_add_rows"]);
    let exe = compile(&g, CpuOptions::default());
    for bad in [5, -1] {
        let idx = Tensor::i32([2, 3], vec![0, 1, 2, 3, bad, 0]);
        match exe.run(&[table.clone(), idx]) {
            Err(CoreError::Execute { op, message }) => {
                assert_eq!(op, "gather");
                assert!(
                    message.contains(&format!("index {bad} at position [1, 1]")),
                    "{message}"
                );
                assert!(message.contains("outside 0..5"), "{message}");
            }
            other => panic!("expected a gather error, got {other:?}"),
        }
    }
}

#[test]
fn empty_tensors_match() {
    type Body = fn(&mut Graph, &[ValueId]) -> orion_core::Result<ValueId>;
    let cases: [(&[usize], &[usize], Body); 4] = [
        (&[0, 3], &[3], |g, x| {
            let e = g.add(x[0], x[1])?;
            g.reduce(ReduceOp::Sum, e, &[0], false)
        }),
        (&[2, 0], &[0, 3], |g, x| g.matmul(x[0], x[1], false, false)),
        (&[0, 3], &[3], |g, x| g.softmax(x[0], 0)),
        (&[0, 3], &[3], |g, x| {
            let t = g.transpose(x[0], &[1, 0])?;
            g.pad(t, &[1, 0], &[0, 2], 1.0)
        }),
    ];
    for (a, b, body) in cases {
        let (g, inputs) = graph_of("empty", DType::F32, &[a, b], body);
        check(&g, &inputs);
    }
}

#[test]
fn wrong_inputs_are_reported_with_name_and_both_types() {
    let (g, inputs) = graph_of("inputs", DType::F32, &[&[2, 3], &[3]], |g, x| g.add(x[0], x[1]));
    let exe = CpuBackend::default().compile(&g).unwrap();
    match exe.run(&inputs[..1]) {
        Err(CoreError::Execute { op, message }) => {
            assert_eq!(op, "input");
            assert!(
                message.contains("takes 2 input(s)") && message.contains("got 1"),
                "{message}"
            );
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    let wrong = [inputs[0].clone(), Tensor::f32([4], vec![0.0; 4])];
    match exe.run(&wrong) {
        Err(CoreError::Execute { message, .. }) => {
            assert!(
                message.contains("\"x1\"") && message.contains("f32[3]") && message.contains("f32[4]"),
                "{message}"
            );
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    let wrong_dtype = [inputs[0].clone(), Tensor::f16([3], vec![0.0; 3])];
    assert!(matches!(exe.run(&wrong_dtype), Err(CoreError::Execute { .. })));
}

#[test]
fn an_executable_runs_repeatedly_and_concurrently_with_the_same_results() {
    let (g, inputs) = mlp_graph(8, 32, DType::F32);
    let exe = compile(&g, options(Some(2), WeightFormat::F32));
    let first = exe.run(&inputs).unwrap();
    let again = exe.run(&inputs).unwrap();
    assert!(first[0].bitwise_eq(&again[0]));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| exe.run(&inputs))).collect();
        for h in handles {
            let out = h.join().unwrap().unwrap();
            assert!(out[0].bitwise_eq(&first[0]));
        }
    });
}

/// Random block inputs with matrix weights scaled by 1/sqrt(fan_in), as initialised models have.
/// (With weights in [-2, 2) activations reach the hundreds and outputs near zero come from
/// cancellation, where any reordering of a matmul sum exceeds a tolerance relative to the result.)
fn block_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let names: Vec<String> = g.inputs().map(|(name, _, _)| name.to_string()).collect();
    random_inputs(g, seed)
        .into_iter()
        .zip(names)
        .map(|(t, name)| {
            let dims = t.shape().dims().to_vec();
            if name.starts_with('w') && dims.len() == 2 {
                let scale = 1.0 / (dims[1] as f32).sqrt();
                let v = t.to_f32_vec().iter().map(|x| x * scale).collect();
                Tensor::new(t.dtype(), dims, orion_core::TensorData::Float(v)).unwrap()
            } else {
                t
            }
        })
        .collect()
}

#[test]
fn transformer_blocks_match() {
    let configs = [
        BlockConfig::tiny(),
        BlockConfig {
            seq_len: 6,
            dim: 32,
            heads: 4,
            kv_heads: 2,
            hidden: 64,
            dtype: DType::F32,
        },
        BlockConfig {
            dtype: DType::F16,
            ..BlockConfig::tiny()
        },
    ];
    for cfg in configs {
        for g in [gpt2_block(&cfg).unwrap(), llama_block(&cfg).unwrap()] {
            let inputs = block_inputs(&g, 11);
            let summary = check(&g, &inputs);
            assert!(summary.fused_groups >= 2, "{}: {summary}", g.name());
            check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_match_the_interpreter(seed in 0u64..1_000_000) {
        let g = random_graph(seed, &RandomGraphOptions::default());
        let inputs = random_inputs(&g, seed ^ 0x5eed);
        let expected = interpret(&g, &inputs, Precision::F32);
        let actual = CpuBackend::default().compile(&g).and_then(|exe| exe.run(&inputs));
        match (actual, expected) {
            (Ok(a), Ok(e)) => {
                for (i, (x, y)) in a.iter().zip(&e).enumerate() {
                    if let Err(message) = compare(x, y, Tolerance::F32) {
                        prop_assert!(false, "seed {}: output {} differs: {}", seed, i, message);
                    }
                }
            }
            (Err(a), Err(e)) => prop_assert_eq!(a.to_string(), e.to_string()),
            (a, e) => prop_assert!(false, "seed {}: cpu {:?} vs interpreter {:?}", seed, a.err(), e.err()),
        }
    }
}

/// Checks the outputs of the `outputs` graph of `outputs_handed_over_..._later_runs` on `x`.
fn check_outputs(run: &[Tensor], x: &[f32]) {
    let square: Vec<f32> = x.iter().map(|v| v * v).collect();
    assert_eq!(run[1].as_f32().unwrap(), &square[..]);
    assert_eq!(run[2].as_f32().unwrap(), &square[..]);
    assert_eq!(run[3].as_f32().unwrap(), x);
    for (&t, &v) in run[0].as_f32().unwrap().iter().zip(x) {
        assert!((t as f64 - (v as f64).tanh()).abs() < 1e-6, "{t} vs tanh({v})");
    }
}

#[test]
fn outputs_handed_over_without_copies_survive_later_runs() {
    // One output alone in its slot (handed over), one value returned under two names (copied),
    // and an input returned as it is (shared); large enough for the spare pool.
    let dims = [300usize, 301];
    let mut g = Graph::new("outputs");
    let x = g.input("x", TensorType::new(DType::F32, dims.to_vec())).unwrap();
    let alone = g.unary(UnaryOp::Tanh, x).unwrap();
    let twice = g.mul(x, x).unwrap();
    g.set_output("alone", alone).unwrap();
    g.set_output("twice_a", twice).unwrap();
    g.set_output("twice_b", twice).unwrap();
    g.set_output("same", x).unwrap();
    let exe = compile(&g, CpuOptions::default());
    let input = |seed: u64| vec![Tensor::f32(dims, values(dims[0] * dims[1], seed))];
    let (kept_inputs, recycled_inputs, last_inputs) = (input(1), input(2), input(3));
    let kept = exe.run(&kept_inputs).unwrap();
    assert!(kept[3].shares_storage_with(&kept_inputs[0]));
    // Outputs given back to the spare pool become the buffers of later runs.
    let recycled = exe.run(&recycled_inputs).unwrap();
    check_outputs(&recycled, recycled_inputs[0].as_f32().unwrap());
    recycled.into_iter().for_each(orion_core::cpu::recycle);
    let last = exe.run(&last_inputs).unwrap();
    check_outputs(&last, last_inputs[0].as_f32().unwrap());
    check_outputs(&kept, kept_inputs[0].as_f32().unwrap());
}
