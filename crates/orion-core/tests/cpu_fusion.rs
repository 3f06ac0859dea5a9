//! Tests of the CPU backend's fusions across op boundaries: softmax and reduction prologues,
//! attention's scores inside their softmax and its backward in one step, RoPE's rotation read in
//! place, elementwise groups as epilogues of packed products and of decode's matrix-vector products. Each compares the fused plan with the interpreter and, bit for bit, with the same graph
//! whose intermediate is also an output (so it is materialised and the fusion does not apply).

#[path = "common/cpu.rs"]
mod cpu;

use cpu::{check, check_against, compile, graph_of, options, values};
use orion_core::backend::Executable;
use orion_core::cpu::{PlanSummary, WeightFormat};
use orion_core::{DType, Graph, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};

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
    probabilities_masked_by(
        g,
        (q, k),
        (batch, kv, group, t, d),
        masked.then(|| causal_mask_values(t)),
    )
}

/// The additive causal mask `[t, t]`, as `composite::causal_mask` makes it.
fn causal_mask_values(t: usize) -> Vec<f32> {
    let hidden = |i: usize| i % t > i / t;
    (0..t * t)
        .map(|i| {
            if hidden(i) {
                orion_core::composite::MASK_VALUE
            } else {
                0.0
            }
        })
        .collect()
}

/// As [`probabilities`], with the additive mask `[t, t]` given by its values.
fn probabilities_masked_by(
    g: &mut Graph,
    (q, k): (ValueId, ValueId),
    (batch, kv, group, t, d): (usize, usize, usize, usize, usize),
    mask: Option<Vec<f32>>,
) -> (ValueId, ValueId) {
    let scores = g.matmul(q, k, false, true).unwrap();
    let reshaped = g.reshape(scores, &[batch, kv, group, t, t]).unwrap();
    let mut x = g.mul_scalar(reshaped, 1.0 / (d as f32).sqrt()).unwrap();
    if let Some(values) = mask {
        let mask = g.constant(Tensor::f32([t, t], values)).unwrap();
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

/// The gradient graph of `softmax(q·kᵀ/√d + mask)·v` (the models' batched attention, grouped heads
/// folded into the rows; `mask` the additive `[t, t]` values) with respect to `q`, `k` and `v`; with
/// `expose`, `dP = dO·Vᵀ` is also a graph output, so the backward runs as its unfused steps. Inputs
/// scaled by `scale`.
fn attention_gradients_masked_by(
    shape: (usize, usize, usize, usize, usize),
    expose: bool,
    scale: f32,
    mask: Vec<f32>,
) -> (Graph, Vec<Tensor>) {
    let (batch, kv, group, t, d) = shape;
    let mut g = Graph::new("attention");
    let (q_dims, kv_dims) = ([batch, kv, group * t, d], [batch, kv, t, d]);
    let named: [(&str, &[usize]); 3] = [("q", &q_dims), ("k", &kv_dims), ("v", &kv_dims)];
    let (ids, mut inputs) = inputs_of(&mut g, &named, scale);
    let (_, probs) = probabilities_masked_by(&mut g, (ids[0], ids[1]), shape, Some(mask));
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

/// Runs the attention gradients of `shape` under the additive `mask` fused and unfused, on one and
/// two threads, and checks that the gradients of q, k and v have the same bits up to the sign of
/// zero; returns the fused run's outputs (y, then the three gradients).
fn assert_backward_has_the_unfused_bits(
    shape: (usize, usize, usize, usize, usize),
    scale: f32,
    mask: Vec<f32>,
) -> Vec<Tensor> {
    let bits = |t: &Tensor| {
        t.as_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() & 0x7fff_ffff)
            .collect::<Vec<_>>()
    };
    let (g, inputs) = attention_gradients_masked_by(shape, false, scale, mask.clone());
    let (exposed, _) = attention_gradients_masked_by(shape, true, scale, mask);
    assert_eq!(g.input_value("grad_y").map(|v| g.ty(v).shape.dims().len()), Some(4));
    let mut last = Vec::new();
    for threads in [1, 2] {
        let (_, fused, unfused) =
            fused_and_unfused((&g, &exposed), &inputs, "attention_backward", scale == 1.0, threads);
        for i in 1..4 {
            assert_eq!(
                bits(&fused[i]),
                bits(&unfused[i]),
                "{shape:?}, output {i}, {threads} threads"
            );
        }
        last = fused;
    }
    last
}

#[test]
fn attention_backward_runs_as_one_step_with_the_unfused_bits() {
    // (batch, kv heads, group, t, d), input scale: blocks of 32 rows with tiles and edges; six
    // such blocks with a head dimension of 40 (a partial strip); grouped heads with blocks of 20;
    // inputs so large that rows sum to non-finite values somewhere.
    let cases = [
        ((2, 2, 1, 64, 16), 1.0),
        ((1, 2, 1, 192, 40), 1.0),
        ((1, 2, 2, 40, 8), 1.0),
        ((1, 1, 1, 48, 24), 1.0e19),
    ];
    for (shape, scale) in cases {
        let fused = assert_backward_has_the_unfused_bits(shape, scale, causal_mask_values(shape.3));
        if scale != 1.0 {
            assert!(fused[1].as_f32().unwrap().iter().any(|v| !v.is_finite()));
        }
    }
}

#[test]
fn attention_backward_keeps_the_unfused_bits_when_a_middle_block_of_rows_sees_fewer_keys() {
    // Blocks of 32 query rows: the first sees keys 0..64, the second key 0 alone, the third all
    // of them; so keys 32.. take their gradients from the first and third blocks, not the second.
    let (t, rows) = (96, 32);
    let reach = |query: usize| match query / rows {
        0 => 64,
        1 => 1,
        _ => t,
    };
    let hidden = |i: usize| i % t >= reach(i / t);
    let mask = (0..t * t)
        .map(|i| {
            if hidden(i) {
                orion_core::composite::MASK_VALUE
            } else {
                0.0
            }
        })
        .collect();
    assert_backward_has_the_unfused_bits((1, 2, 1, t, 16), 1.0, mask);
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
    // The scores product (16 rows): `gemm`, or the multi-row matrix-vector kernel if it takes them.
    assert_eq!(
        (
            summary.count("gemm") + summary.count("gemv_rows"),
            summary.count("fused_softmax")
        ),
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

/// `gelu(x · Wᵀ + b) + r` with constant `W [n, k]` and `b [n]` (prefill's MLP up-projection and a
/// residual), `x [batch.., m, k]`; the product also a graph output when `expose`.
fn linear_gelu_residual(batch: &[usize], (m, k, n): (usize, usize, usize), expose: bool) -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new(if expose {
        "product_then_group"
    } else {
        "product_epilogue"
    });
    let dims = |last: [usize; 2]| batch.iter().copied().chain(last).collect::<Vec<_>>();
    let x = g.input("x", TensorType::new(DType::F32, dims([m, k]))).unwrap();
    let r = g.input("r", TensorType::new(DType::F32, dims([m, n]))).unwrap();
    let scale = 1.0 / (k as f32).sqrt();
    let w = Tensor::f32([n, k], values(n * k, 41).iter().map(|v| v * scale).collect());
    let w = g.constant(w).unwrap();
    let b = g.constant(Tensor::f32([n], values(n, 42))).unwrap();
    let product = g.matmul(x, w, false, true).unwrap();
    let biased = g.add(product, b).unwrap();
    let activated = orion_core::composite::gelu_tanh(&mut g, biased).unwrap();
    let y = g.add(activated, r).unwrap();
    g.set_output("y", y).unwrap();
    if expose {
        g.set_output("product", product).unwrap();
    }
    let rows: usize = batch.iter().product::<usize>() * m;
    let inputs = vec![
        Tensor::f32(dims([m, k]), values(rows * k, 43)),
        Tensor::f32(dims([m, n]), values(rows * n, 44)),
    ];
    (g, inputs)
}

#[test]
fn a_group_reading_a_packed_product_runs_as_its_epilogue_with_the_same_bits() {
    type Case<'a> = (&'a [usize], (usize, usize, usize), usize);
    let cases: [Case; 4] = [
        // 19 rows: more than the multi-row matrix-vector kernel (no epilogue) takes.
        (&[], (19, 300, 70), 1),
        (&[], (19, 300, 70), 2),
        // Two products of a batch, each with its epilogue at its own offsets.
        (&[2], (37, 64, 96), 2),
        // Prefill's shape: 128 rows split by columns between the tasks.
        (&[], (128, 256, 768), 2),
    ];
    for (batch, dims, threads) in cases {
        let (g, inputs) = linear_gelu_residual(batch, dims, false);
        if !orion_core::cpu::kernels::avx512_gemm_available() {
            // No packed weights, so no epilogues: the plain steps, checked against the interpreter.
            check_against(&g, &g, &inputs, options(Some(threads), WeightFormat::F32));
            continue;
        }
        let (exposed, _) = linear_gelu_residual(batch, dims, true);
        let (summary, fused, unfused) =
            fused_and_unfused((&g, &exposed), &inputs, "gemm_packed_epilogue", true, threads);
        assert_eq!(summary.kernels, vec!["gemm_packed_epilogue"], "{summary}");
        let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused[0]), bits(&unfused[0]), "{batch:?} {dims:?} on {threads}");
    }
}

#[test]
fn a_group_reading_a_decode_projection_runs_as_its_epilogue_with_the_same_bits() {
    // One row times a constant weight (a decode step's projection, computed as a matrix-vector
    // product): each task runs the group on its part of the result. ((k, n), weights, threads);
    // 3072 outputs on two threads are split between two tasks.
    let cases = [
        ((70, 300), WeightFormat::F32, 1),
        ((768, 3072), WeightFormat::F32, 2),
        ((768, 3072), WeightFormat::F16, 2),
    ];
    let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for ((k, n), weights, threads) in cases {
        let (g, inputs) = linear_gelu_residual(&[], (1, k, n), false);
        let (exposed, _) = linear_gelu_residual(&[], (1, k, n), true);
        let opts = options(Some(threads), weights);
        // With half weights the interpreter's f32 result differs by the weights' rounding; the
        // unfused plan (same half weights) is the reference then.
        let summary = match weights {
            WeightFormat::F32 => check_against(&g, &g, &inputs, opts),
            _ => compile(&g, opts).plan_summary().clone(),
        };
        assert_eq!(summary.kernels, vec!["gemv_epilogue"], "{summary}");
        let unfused = compile(&exposed, opts);
        assert_eq!(
            unfused.plan_summary().count("gemv_epilogue"),
            0,
            "{}",
            unfused.plan_summary()
        );
        let fused = compile(&g, opts).run(&inputs).unwrap();
        let unfused = unfused.run(&inputs).unwrap();
        assert_eq!(bits(&fused[0]), bits(&unfused[0]), "{k}×{n} {weights:?} on {threads}");
    }
}
