//! Tests of the CPU backend against the reference interpreter (`Precision::F32`, compared within
//! `Tolerance::F32`): every op kind and dtype, matmul layouts and both weight formats, the GEMV and
//! fused paths (asserted through the plan summary), data movement, runtime errors, random graphs
//! and the reference transformer blocks.

use orion_core::backend::{Backend, Executable};
use orion_core::composite::{gelu_tanh, layer_norm, linear_bias};
use orion_core::cpu::{CpuBackend, CpuExecutable, CpuOptions, PlanSummary, WeightFormat};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::tensor::round_to_f16;
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::testing::{random_graph, random_inputs, RandomGraphOptions};
use orion_core::{BinaryOp, CompareOp, CoreError, DType, Graph, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};
use proptest::prelude::*;

/// Deterministic pseudo-random values in [-2, 2) (a small LCG, independent of the crate).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn options(threads: Option<usize>, weights: WeightFormat) -> CpuOptions {
    CpuOptions { threads, weights }
}

fn compile(g: &Graph, opts: CpuOptions) -> CpuExecutable {
    match CpuBackend::new(opts).compile_cpu(g) {
        Ok(exe) => exe,
        Err(e) => panic!("compiling {} failed: {e}", g.name()),
    }
}

/// Runs `g` on the CPU (with `opts`) and on the interpreter (on `reference`, the same graph or one
/// with half-rounded weights); asserts every output matches; returns the plan summary.
fn check_against(g: &Graph, reference: &Graph, inputs: &[Tensor], opts: CpuOptions) -> PlanSummary {
    let exe = compile(g, opts);
    let actual = exe
        .run(inputs)
        .unwrap_or_else(|e| panic!("cpu run of {} failed: {e}", g.name()));
    let expected = interpret(reference, inputs, Precision::F32).unwrap_or_else(|e| panic!("interpreter failed: {e}"));
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        if let Err(message) = compare(a, e, Tolerance::F32) {
            panic!(
                "{}: output {i} differs: {message}\nplan: {}",
                g.name(),
                exe.plan_summary()
            );
        }
    }
    exe.plan_summary().clone()
}

fn check(g: &Graph, inputs: &[Tensor]) -> PlanSummary {
    check_against(g, g, inputs, CpuOptions::default())
}

/// A graph with float inputs of the given shapes and one output built by `body`.
fn graph_of(
    name: &str,
    dtype: DType,
    shapes: &[&[usize]],
    body: impl FnOnce(&mut Graph, &[ValueId]) -> orion_core::Result<ValueId>,
) -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new(name);
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    for (i, dims) in shapes.iter().enumerate() {
        ids.push(g.input(format!("x{i}"), TensorType::new(dtype, dims.to_vec())).unwrap());
        let n = dims.iter().product();
        inputs.push(match dtype {
            DType::F16 => Tensor::f16(dims.to_vec(), values(n, 10 + i as u64)),
            DType::I32 => Tensor::i32(
                dims.to_vec(),
                values(n, 10 + i as u64).iter().map(|v| (v * 3.0) as i32).collect(),
            ),
            _ => Tensor::f32(dims.to_vec(), values(n, 10 + i as u64)),
        });
    }
    let y = body(&mut g, &ids).unwrap();
    g.set_output("y", y).unwrap();
    (g, inputs)
}

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

/// `softmax(x0 · 0.125 + x1, axis)` with the masked scores also a graph output when `expose`.
fn scaled_masked_softmax(
    name: &str,
    scores: &[usize],
    mask: &[usize],
    axis: isize,
    expose: bool,
) -> (Graph, Vec<Tensor>) {
    let (mut g, inputs) = graph_of(name, DType::F32, &[scores, mask], |g, x| {
        let scaled = g.mul_scalar(x[0], 0.125)?;
        let masked = g.add(scaled, x[1])?;
        g.softmax(masked, axis)
    });
    if expose {
        expose_operand_of_y(&mut g);
    }
    (g, inputs)
}

/// Makes the operand of the op that defines output `y` a graph output too, so it is materialised.
fn expose_operand_of_y(g: &mut Graph) {
    let y = g.output_value("y").unwrap();
    let operand = g.producer(y).inputs[0];
    g.set_output("operand", operand).unwrap();
}

#[test]
fn last_axis_softmax_takes_its_scale_and_mask_prologue_in_one_pass() {
    let cases: [(&[usize], &[usize], usize); 4] = [
        (&[2, 3, 5, 7], &[5, 7], 1),
        // Rows of 257 (not a divisor of the block) on two threads.
        (&[4, 33, 257], &[33, 257], 2),
        // Rows longer than one block.
        (&[3, 9000], &[9000], 2),
        // Attention's shape: 2 sequences × 4 heads of 64 × 64 scores and a causal-like mask.
        (&[2, 4, 64, 64], &[64, 64], 2),
    ];
    for (scores, mask, threads) in cases {
        let opts = options(Some(threads), WeightFormat::F32);
        let (g, inputs) = scaled_masked_softmax("fused_softmax", scores, mask, -1, false);
        let summary = check_against(&g, &g, &inputs, opts);
        assert_eq!(summary.count("fused_softmax"), 1, "{summary}");
        assert_eq!(summary.count("fused") + summary.count("softmax"), 0, "{summary}");
        // The same softmax with its input materialised (also an output): the same bits.
        let (exposed, _) = scaled_masked_softmax("softmax_after_fused", scores, mask, -1, true);
        let exposed_exe = compile(&exposed, opts);
        assert_eq!(exposed_exe.plan_summary().count("softmax"), 1);
        let fused = compile(&g, opts).run(&inputs).unwrap();
        let unfused = exposed_exe.run(&inputs).unwrap();
        let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused[0]), bits(&unfused[0]), "{scores:?}");
    }
    // Not over the last axis: the prologue stays its own fused step.
    let (g, inputs) = scaled_masked_softmax("softmax_axis_0", &[6, 5], &[6, 5], 0, false);
    let summary = check(&g, &inputs);
    assert_eq!((summary.count("fused"), summary.count("softmax")), (1, 1), "{summary}");
}

/// Attention's probabilities as the models build them, on inputs `q [b, kv, group·t, d]` and
/// `k [b, kv, t, d]` (the query rows of `group` heads per key head folded into the product's rows):
/// `softmax(q·kᵀ/√d + mask)` with a constant causal mask `[t, t]` (or none). Returns the scores
/// product and the probabilities `[b, kv, group·t, t]`.
fn probabilities(
    g: &mut Graph,
    (q, k): (ValueId, ValueId),
    (batch, kv, group, t, d): (usize, usize, usize, usize, usize),
    masked: bool,
) -> (ValueId, ValueId) {
    let scores = g.matmul(q, k, false, true).unwrap();
    let reshaped = g.reshape(scores, &[batch, kv, group, t, t]).unwrap();
    let mut x = g.mul_scalar(reshaped, 1.0 / (d as f32).sqrt()).unwrap();
    if masked {
        let mask = orion_core::composite::causal_mask(g, t, DType::F32).unwrap();
        x = g.add(x, mask).unwrap();
    }
    let probs = g.softmax(x, -1).unwrap();
    (scores, g.reshape(probs, &[batch, kv, group * t, t]).unwrap())
}

/// A graph with f32 inputs `names` of `dims`, and their values from `values` scaled by `scale`.
fn inputs_of(g: &mut Graph, named: &[(&str, &[usize])], scale: f32) -> (Vec<ValueId>, Vec<Tensor>) {
    let mut ids = Vec::new();
    let mut tensors = Vec::new();
    for (i, (name, dims)) in named.iter().enumerate() {
        ids.push(g.input(*name, TensorType::new(DType::F32, dims.to_vec())).unwrap());
        let n = dims.iter().product();
        let scaled = values(n, 3 + i as u64).iter().map(|v| v * scale).collect();
        tensors.push(Tensor::f32(dims.to_vec(), scaled));
    }
    (ids, tensors)
}

/// Runs `g`, whose plan must have one `kernel` step, and `exposed`, the same graph with an
/// intermediate also an output (so it has none), on `threads`; checks `g` against the interpreter
/// when `check`. Returns `g`'s plan summary and both runs' outputs.
fn fused_and_unfused(
    (g, exposed): (&Graph, &Graph),
    inputs: &[Tensor],
    kernel: &str,
    check: bool,
    threads: usize,
) -> (PlanSummary, Vec<Tensor>, Vec<Tensor>) {
    let opts = options(Some(threads), WeightFormat::F32);
    let summary = if check {
        check_against(g, g, inputs, opts)
    } else {
        compile(g, opts).plan_summary().clone()
    };
    assert_eq!(summary.count(kernel), 1, "{}: {summary}", g.name());
    let unfused = compile(exposed, opts);
    assert_eq!(unfused.plan_summary().count(kernel), 0, "{}", unfused.plan_summary());
    let fused_outputs = compile(g, opts).run(inputs).unwrap();
    (summary, fused_outputs, unfused.run(inputs).unwrap())
}

/// [`probabilities`] as a graph output, with the scores also an output when `expose` (so the
/// product is its own step and the softmax reads it back); `q` and `k` scaled by `scale`.
fn attention_probabilities(
    shape: (usize, usize, usize, usize, usize),
    masked: bool,
    expose: bool,
    scale: f32,
) -> (Graph, Vec<Tensor>) {
    let (batch, kv, group, t, d) = shape;
    let mut g = Graph::new("attention_probabilities");
    let (ids, inputs) = inputs_of(
        &mut g,
        &[("q", &[batch, kv, group * t, d]), ("k", &[batch, kv, t, d])],
        scale,
    );
    let (scores, probs) = probabilities(&mut g, (ids[0], ids[1]), shape, masked);
    g.set_output("y", probs).unwrap();
    if expose {
        g.set_output("scores", scores).unwrap();
    }
    (g, inputs)
}

#[test]
fn attention_scores_are_computed_inside_their_softmax_with_the_unfused_bits() {
    let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let cases = [
        // (batch, kv heads, group, t, d), masked, scale of q
        ((2, 3, 1, 64, 16), true, 1.0),
        // Rows that no block size of 32 divides (blocks of 20), grouped query heads.
        ((1, 2, 2, 40, 8), true, 1.0),
        // Without a mask: nothing to skip.
        ((2, 2, 1, 33, 12), false, 1.0),
        // Scores so large the bound cannot prove the hidden ones flush: every block computed whole.
        ((1, 2, 1, 64, 16), true, 3.0e3),
    ];
    for ((batch, kv, group, t, d), masked, q_scale) in cases {
        let shape = (batch, kv, group, t, d);
        let (g, inputs) = attention_probabilities(shape, masked, false, q_scale);
        let (exposed, _) = attention_probabilities(shape, masked, true, q_scale);
        for threads in [1, 2] {
            let (summary, fused, unfused) =
                fused_and_unfused((&g, &exposed), &inputs, "scores_softmax", q_scale == 1.0, threads);
            assert_eq!(summary.count("gemm") + summary.count("fused_softmax"), 0, "{summary}");
            assert_eq!(
                bits(&fused[0]),
                bits(&unfused[0]),
                "{shape:?}, masked {masked}, {threads} threads"
            );
        }
    }
}

/// The gradient graph of `softmax(q·kᵀ/√d + causal mask)·v` (the models' batched attention, grouped
/// heads folded into the rows) with respect to `q`, `k` and `v`; with `expose`, `dP = dO·Vᵀ` is also
/// a graph output, so the backward runs as its unfused steps. Inputs scaled by `scale`.
fn attention_gradients(shape: (usize, usize, usize, usize, usize), expose: bool, scale: f32) -> (Graph, Vec<Tensor>) {
    let (batch, kv, group, t, d) = shape;
    let mut g = Graph::new("attention");
    let (q_dims, kv_dims) = ([batch, kv, group * t, d], [batch, kv, t, d]);
    let named: [(&str, &[usize]); 3] = [("q", &q_dims), ("k", &kv_dims), ("v", &kv_dims)];
    let (ids, mut inputs) = inputs_of(&mut g, &named, scale);
    let (_, probs) = probabilities(&mut g, (ids[0], ids[1]), shape, true);
    let out = g.matmul(probs, ids[2], false, false).unwrap();
    g.set_output("y", out).unwrap();
    let mut grads = orion_core::autodiff::grad(&g, &["q", "k", "v"], orion_core::autodiff::Seed::Cotangents).unwrap();
    if expose {
        let v_in = grads.input_value("v").unwrap();
        let dp = grads
            .nodes()
            .iter()
            .find(|n| matches!(n.op, orion_core::Op::MatMul { transpose_b: true, .. }) && n.inputs[1] == v_in)
            .map(|n| n.outputs[0])
            .unwrap();
        grads.set_output("dp", dp).unwrap();
    }
    let cotangent = values(q_dims.iter().product(), 8).iter().map(|v| v * scale).collect();
    inputs.push(Tensor::f32(q_dims.to_vec(), cotangent));
    (grads, inputs)
}

#[test]
fn attention_backward_runs_as_one_step_with_the_unfused_bits() {
    let bits = |t: &Tensor| {
        t.as_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() & 0x7fff_ffff)
            .collect::<Vec<_>>()
    };
    // (batch, kv heads, group, t, d), input scale: blocks of 32 rows with tiles and edges; grouped
    // heads with blocks of 20; inputs so large that rows sum to non-finite values somewhere.
    let cases = [
        ((2, 2, 1, 64, 16), 1.0),
        ((1, 2, 2, 40, 8), 1.0),
        ((1, 1, 1, 48, 24), 1.0e19),
    ];
    for (shape, scale) in cases {
        let (g, inputs) = attention_gradients(shape, false, scale);
        let (exposed, _) = attention_gradients(shape, true, scale);
        assert_eq!(g.input_value("grad_y").map(|v| g.ty(v).shape.dims().len()), Some(4));
        for threads in [1, 2] {
            let (_, fused, unfused) =
                fused_and_unfused((&g, &exposed), &inputs, "attention_backward", scale == 1.0, threads);
            // Outputs: y, then the gradients of q, k, v. Compared up to the sign of zero.
            for i in 1..4 {
                assert_eq!(
                    bits(&fused[i]),
                    bits(&unfused[i]),
                    "{shape:?}, output {i}, {threads} threads"
                );
            }
            if scale != 1.0 {
                assert!(fused[1].as_f32().unwrap().iter().any(|v| !v.is_finite()));
            }
        }
    }
}

#[test]
fn attention_scores_stay_their_own_step_when_the_mask_is_not_a_constant() {
    let (g, inputs) = graph_of(
        "input_mask",
        DType::F32,
        &[&[2, 16, 8], &[2, 16, 8], &[16, 16]],
        |g, x| {
            let scores = g.matmul(x[0], x[1], false, true)?;
            let scaled = g.mul_scalar(scores, 0.25)?;
            let masked = g.add(scaled, x[2])?;
            g.softmax(masked, -1)
        },
    );
    let summary = check(&g, &inputs);
    assert_eq!(summary.count("scores_softmax"), 0, "{summary}");
    assert_eq!(
        (summary.count("gemm"), summary.count("fused_softmax")),
        (1, 1),
        "{summary}"
    );
}

/// RoPE's rotation as the models write it: `x·cos + rotate_half(x)·sin` with `rotate_half(x) =
/// concat(−x₂, x₁)` from a split (`backward`: `concat(x₂, −x₁)` from two slices, as autodiff writes
/// its transpose); with `expose`, the concatenated value is also a graph output.
fn rotary(dims: &[usize], backward: bool, expose: bool) -> (Graph, Vec<Tensor>) {
    let last = dims.len() - 1;
    let half = dims[last] / 2;
    let table = &dims[dims.len() - 2..];
    let (mut g, inputs) = graph_of("rotary", DType::F32, &[dims, table, table], |g, x| {
        let rotated = if backward {
            let mut end = dims.to_vec();
            end[last] = half;
            let first = g.slice(x[0], &vec![0; dims.len()], &end)?;
            let mut begin = vec![0; dims.len()];
            begin[last] = half;
            let second = g.slice(x[0], &begin, dims)?;
            let negated = g.unary(UnaryOp::Neg, first)?;
            g.concat(&[second, negated], last as isize)?
        } else {
            let pieces = g.split(x[0], last as isize, &[half, half])?;
            let negated = g.unary(UnaryOp::Neg, pieces[1])?;
            g.concat(&[negated, pieces[0]], last as isize)?
        };
        let cos = g.mul(x[0], x[1])?;
        let sin = g.mul(rotated, x[2])?;
        g.add(cos, sin)
    });
    if expose {
        let y = g.output_value("y").unwrap();
        let sin = g.producer(y).inputs[1];
        let rotated = g.producer(sin).inputs[0];
        g.set_output("rotated", rotated).unwrap();
    }
    (g, inputs)
}

#[test]
fn rotary_halves_are_read_in_place_by_the_fused_group() {
    let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for backward in [false, true] {
        for (dims, threads) in [(vec![2, 3, 8, 16], 1), (vec![4, 300, 64], 2)] {
            let opts = options(Some(threads), WeightFormat::F32);
            let (g, inputs) = rotary(&dims, backward, false);
            let summary = check_against(&g, &g, &inputs, opts);
            let copies = summary.count("split") + summary.count("copy") + summary.count("concat");
            assert_eq!(
                (copies, summary.steps),
                (0, 1),
                "{dims:?}, backward {backward}: {summary}"
            );
            let (exposed, _) = rotary(&dims, backward, true);
            let unfused = compile(&exposed, opts);
            assert_eq!(unfused.plan_summary().count("concat"), 1);
            let fused = compile(&g, opts).run(&inputs).unwrap();
            assert_eq!(bits(&fused[0]), bits(&unfused.run(&inputs).unwrap()[0]), "{dims:?}");
        }
    }
}

/// `reduce(x0 · x1, axes)` with the product also a graph output when `expose`.
fn reduced_product(
    op: ReduceOp,
    shape: &[usize],
    axes: &[isize],
    keep_dims: bool,
    expose: bool,
) -> (Graph, Vec<Tensor>) {
    let (mut g, inputs) = graph_of("fused_reduce", DType::F32, &[shape, shape], |g, x| {
        let product = g.mul(x[0], x[1])?;
        g.reduce(op, product, axes, keep_dims)
    });
    if expose {
        expose_operand_of_y(&mut g);
    }
    (g, inputs)
}

#[test]
fn reductions_over_trailing_axes_take_their_elementwise_prologue_in_one_pass() {
    let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    // (op, operand shape, reduced axes, keep dims, threads)
    type Case = (ReduceOp, &'static [usize], &'static [isize], bool, usize);
    let cases: [Case; 6] = [
        (ReduceOp::Sum, &[3, 5, 7], &[-1], true, 1),
        (ReduceOp::Mean, &[3, 5, 7], &[2], false, 1),
        (ReduceOp::Max, &[3, 5, 7], &[-1], true, 1),
        // Two trailing axes, a size-1 axis among them, rows of 6,000 (longer than a block).
        (ReduceOp::Sum, &[4, 1, 60, 100], &[2, 3], true, 2),
        // The softmax backward's row sums: many short rows on two threads.
        (ReduceOp::Sum, &[2, 4, 64, 64], &[-1], true, 2),
        // RMSNorm's mean of squares: rows of 257 (not a divisor of the block).
        (ReduceOp::Mean, &[300, 257], &[-1], true, 2),
    ];
    for (op, shape, axes, keep_dims, threads) in cases {
        let opts = options(Some(threads), WeightFormat::F32);
        let (g, inputs) = reduced_product(op, shape, axes, keep_dims, false);
        let summary = check_against(&g, &g, &inputs, opts);
        assert_eq!(summary.count("fused_reduce"), 1, "{op:?} {shape:?}: {summary}");
        assert_eq!(summary.count("fused") + summary.count("reduce"), 0, "{summary}");
        let (exposed, _) = reduced_product(op, shape, axes, keep_dims, true);
        let exposed_exe = compile(&exposed, opts);
        assert_eq!(exposed_exe.plan_summary().count("reduce"), 1);
        let fused = compile(&g, opts).run(&inputs).unwrap();
        let unfused = exposed_exe.run(&inputs).unwrap();
        assert_eq!(bits(&fused[0]), bits(&unfused[0]), "{op:?} {shape:?}");
    }
    // Reducing a leading axis (columns): the prologue stays its own fused step.
    let (g, inputs) = reduced_product(ReduceOp::Sum, &[6, 5], &[0], true, false);
    let summary = check(&g, &inputs);
    assert_eq!((summary.count("fused"), summary.count("reduce")), (1, 1), "{summary}");
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
    // Below the swap threshold `x · Wᵀ` runs as `(W · xᵀ)ᵀ`; above it as given.
    for (m, k, n) in [(2, 3, 5), (128, 300, 200), (300, 64, 96)] {
        let (g, inputs) = linear_graph(m, k, n, false);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        assert_eq!(summary.kernels, vec!["gemm"], "m={m}");
    }
}

#[test]
fn weights_read_only_as_transposed_right_operands_of_multi_row_products_are_stored_transposed() {
    for (m, k, n) in [(2, 3, 5), (37, 70, 33), (128, 300, 200)] {
        let (g, inputs) = linear_graph(m, k, n, false);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F32));
        assert_eq!(
            (summary.kernels.clone(), summary.transposed_weights),
            (vec!["gemm"], 1),
            "m={m}"
        );
        // Half weights are stored transposed too (and still match the rounded reference).
        let (g, inputs) = linear_graph(m, k, n, true);
        let summary = check_against(&g, &g, &inputs, options(Some(2), WeightFormat::F16));
        assert_eq!((summary.transposed_weights, summary.half_weights), (1, 1), "m={m}");
    }
    // Single-row products (the matrix-vector kernel) keep the stored layout.
    let (g, inputs) = linear_graph(1, 64, 48, false);
    assert_eq!(check(&g, &inputs).transposed_weights, 0);
    // A weight also read untransposed (or as a graph output) stays as stored.
    let mut g = Graph::new("two_uses");
    let x = g.input("x", TensorType::new(DType::F32, [6, 8])).unwrap();
    let w = g.constant(Tensor::f32([8, 8], values(64, 5))).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    let z = g.matmul(y, w, false, false).unwrap();
    g.set_output("z", z).unwrap();
    let inputs = vec![Tensor::f32([6, 8], values(48, 6))];
    assert_eq!(check(&g, &inputs).transposed_weights, 0);
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
        assert_eq!(summary.kernels, vec![if m == 1 { "gemv" } else { "gemm" }]);
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
    // linear (gemm), then one fused step: bias add, 9 GELU ops (which read their input 4 times)
    // and the residual add.
    assert_eq!(summary.kernels, vec!["gemm", "fused"], "{summary}");
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
