//! Autodiff against finite differences: one test per differentiable op and operand, the
//! non-differentiable cases, the seeds, the structure of the gradient graph, and the composites.
//! The harness and its choice of step and tolerance are in `common/fd.rs`.

#[path = "common/fd.rs"]
mod fd;

use fd::{away_from_zero, check_grad, distinct, uniform, FdConfig};
use orion_core::autodiff::{grad, Seed};
use orion_core::interp::tolerance::Tolerance;
use orion_core::interp::{interpret, Precision};
use orion_core::{BinaryOp, CompareOp, CoreError, DType, Graph, Op, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};

fn f32_input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    g.input(name, TensorType::new(DType::F32, dims.to_vec())).unwrap()
}

/// `y = op(x)` on a [2,3] input.
fn check_unary(op: UnaryOp, x: Tensor) {
    let mut g = Graph::new(op.name());
    let xv = f32_input(&mut g, "x", &[2, 3]);
    let y = g.unary(op, xv).unwrap();
    g.set_output("y", y).unwrap();
    check_grad(&g, &["x"], &[x], FdConfig::DEFAULT);
}

#[test]
fn unary_neg() {
    check_unary(UnaryOp::Neg, uniform(&[2, 3], -1.0, 1.0, 1));
}

#[test]
fn unary_exp() {
    check_unary(UnaryOp::Exp, uniform(&[2, 3], -1.0, 1.0, 2));
}

#[test]
fn unary_log() {
    check_unary(UnaryOp::Log, uniform(&[2, 3], 0.5, 2.0, 3));
}

#[test]
fn unary_sqrt() {
    check_unary(UnaryOp::Sqrt, uniform(&[2, 3], 0.5, 2.0, 4));
}

#[test]
fn unary_rsqrt() {
    check_unary(UnaryOp::Rsqrt, uniform(&[2, 3], 0.5, 2.0, 5));
}

#[test]
fn unary_reciprocal() {
    check_unary(UnaryOp::Reciprocal, uniform(&[2, 3], 0.5, 2.0, 6));
}

#[test]
fn unary_sin() {
    check_unary(UnaryOp::Sin, uniform(&[2, 3], -3.0, 3.0, 13));
}

#[test]
fn unary_cos() {
    check_unary(UnaryOp::Cos, uniform(&[2, 3], -3.0, 3.0, 14));
}

#[test]
fn unary_tanh() {
    check_unary(UnaryOp::Tanh, uniform(&[2, 3], -1.5, 1.5, 7));
}

#[test]
fn unary_sigmoid() {
    check_unary(UnaryOp::Sigmoid, uniform(&[2, 3], -2.0, 2.0, 8));
}

#[test]
fn unary_relu() {
    check_unary(UnaryOp::Relu, away_from_zero(&[2, 3], 9));
}

#[test]
fn unary_erf() {
    check_unary(UnaryOp::Erf, uniform(&[2, 3], -1.5, 1.5, 10));
}

/// `z = op(a, b)` with a [2,1,4] and b [3,1]: both operands are broadcast (to [2,3,4]).
fn check_binary(op: BinaryOp, a: Tensor, b: Tensor) {
    let mut g = Graph::new(op.name());
    let av = f32_input(&mut g, "a", &[2, 1, 4]);
    let bv = f32_input(&mut g, "b", &[3, 1]);
    let z = g.binary(op, av, bv).unwrap();
    assert_eq!(g.dims(z), vec![2, 3, 4]);
    g.set_output("z", z).unwrap();
    check_grad(&g, &["a", "b"], &[a, b], FdConfig::DEFAULT);
}

#[test]
fn binary_add_broadcast() {
    check_binary(
        BinaryOp::Add,
        uniform(&[2, 1, 4], -1.0, 1.0, 11),
        uniform(&[3, 1], -1.0, 1.0, 12),
    );
}

#[test]
fn binary_sub_broadcast() {
    check_binary(
        BinaryOp::Sub,
        uniform(&[2, 1, 4], -1.0, 1.0, 13),
        uniform(&[3, 1], -1.0, 1.0, 14),
    );
}

#[test]
fn binary_mul_broadcast() {
    check_binary(
        BinaryOp::Mul,
        uniform(&[2, 1, 4], -1.0, 1.0, 15),
        uniform(&[3, 1], -1.0, 1.0, 16),
    );
}

#[test]
fn binary_div_broadcast() {
    check_binary(
        BinaryOp::Div,
        uniform(&[2, 1, 4], -1.0, 1.0, 17),
        uniform(&[3, 1], 0.5, 1.5, 18),
    );
}

#[test]
fn binary_maximum_broadcast() {
    // a on the grid 0.05 + 0.1k, b on 0.1k: every pair differs by at least 0.05 > h.
    check_binary(
        BinaryOp::Maximum,
        distinct(&[2, 1, 4], 0.05, 19),
        distinct(&[3, 1], 0.0, 20),
    );
}

#[test]
fn binary_minimum_broadcast() {
    check_binary(
        BinaryOp::Minimum,
        distinct(&[2, 1, 4], 0.05, 21),
        distinct(&[3, 1], 0.0, 22),
    );
}

// a >= 0.7 bounds the third derivative b(b-1)(b-2)·a^(b-3) by ~65 where the gradient itself is ~4, so
// the truncation error h²/6·|∂³| ≈ 1e-3 stays inside the 1 % relative tolerance.
#[test]
fn binary_pow_broadcast() {
    check_binary(
        BinaryOp::Pow,
        uniform(&[2, 1, 4], 0.7, 2.0, 23),
        uniform(&[3, 1], -1.5, 1.5, 24),
    );
}

/// `[2,1,M,K]·[3,K,N]` (operands stored transposed when asked): batch axes broadcast to [2,3].
fn check_matmul(transpose_a: bool, transpose_b: bool) {
    let (m, k, n) = (2, 3, 4);
    let a_dims = if transpose_a { [2, 1, k, m] } else { [2, 1, m, k] };
    let b_dims = if transpose_b { [3, n, k] } else { [3, k, n] };
    let mut g = Graph::new("matmul");
    let a = f32_input(&mut g, "a", &a_dims);
    let b = f32_input(&mut g, "b", &b_dims);
    let c = g.matmul(a, b, transpose_a, transpose_b).unwrap();
    assert_eq!(g.dims(c), vec![2, 3, m, n]);
    g.set_output("c", c).unwrap();
    let inputs = [uniform(&a_dims, -1.0, 1.0, 31), uniform(&b_dims, -1.0, 1.0, 32)];
    check_grad(&g, &["a", "b"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn matmul_plain_batch_broadcast() {
    check_matmul(false, false);
}

#[test]
fn matmul_transpose_a_batch_broadcast() {
    check_matmul(true, false);
}

#[test]
fn matmul_transpose_b_batch_broadcast() {
    check_matmul(false, true);
}

#[test]
fn matmul_transpose_both_batch_broadcast() {
    check_matmul(true, true);
}

#[test]
fn conv1x1_non_square_weight() {
    // Cout = 2 != Cin = 3, so a weight gradient laid out as dy·xᵀ transposed cannot pass.
    let mut g = Graph::new("conv");
    let x = f32_input(&mut g, "x", &[1, 3, 1, 5]);
    let w = f32_input(&mut g, "w", &[2, 3, 1, 1]);
    let y = g.conv1x1(x, w).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [
        uniform(&[1, 3, 1, 5], -1.0, 1.0, 41),
        uniform(&[2, 3, 1, 1], -1.0, 1.0, 42),
    ];
    check_grad(&g, &["x", "w"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn softmax_last_and_middle_axis() {
    for axis in [-1isize, 1] {
        let mut g = Graph::new("softmax");
        let x = f32_input(&mut g, "x", &[2, 3, 4]);
        let y = g.softmax(x, axis).unwrap();
        g.set_output("y", y).unwrap();
        check_grad(&g, &["x"], &[uniform(&[2, 3, 4], -2.0, 2.0, 51)], FdConfig::DEFAULT);
    }
}

/// `reduce(op, x [2,3,4], axes [0,2])` with and without keep_dims.
fn check_reduce(op: ReduceOp, x: Tensor) {
    for keep_dims in [false, true] {
        let mut g = Graph::new(op.name());
        let xv = f32_input(&mut g, "x", &[2, 3, 4]);
        let y = g.reduce(op, xv, &[0, 2], keep_dims).unwrap();
        g.set_output("y", y).unwrap();
        check_grad(&g, &["x"], std::slice::from_ref(&x), FdConfig::DEFAULT);
    }
}

#[test]
fn reduce_sum_keep_and_drop_dims() {
    check_reduce(ReduceOp::Sum, uniform(&[2, 3, 4], -1.0, 1.0, 61));
}

#[test]
fn reduce_mean_keep_and_drop_dims() {
    check_reduce(ReduceOp::Mean, uniform(&[2, 3, 4], -1.0, 1.0, 62));
}

#[test]
fn reduce_max_keep_and_drop_dims() {
    // distinct values 0.1 apart: the maximum of each group is unique and stays so under ±h.
    check_reduce(ReduceOp::Max, distinct(&[2, 3, 4], 0.0, 63));
}

/// `y = shape_op(x)` for an x of the given dims.
fn check_shape_op(dims: &[usize], build: impl FnOnce(&mut Graph, ValueId) -> ValueId) {
    let mut g = Graph::new("shape_op");
    let x = f32_input(&mut g, "x", dims);
    let y = build(&mut g, x);
    g.set_output("y", y).unwrap();
    check_grad(&g, &["x"], &[uniform(dims, -1.0, 1.0, 71)], FdConfig::DEFAULT);
}

#[test]
fn reshape() {
    check_shape_op(&[2, 3, 4], |g, x| g.reshape(x, &[4, 6]).unwrap());
}

#[test]
fn transpose() {
    check_shape_op(&[2, 3, 4], |g, x| g.transpose(x, &[2, 0, 1]).unwrap());
}

#[test]
fn slice() {
    check_shape_op(&[3, 5], |g, x| g.slice(x, &[1, 1], &[3, 4]).unwrap());
}

#[test]
fn pad() {
    check_shape_op(&[2, 3], |g, x| g.pad(x, &[1, 0], &[0, 2], 0.5).unwrap());
}

#[test]
fn broadcast() {
    check_shape_op(&[3, 1], |g, x| g.broadcast(x, &[2, 3, 4]).unwrap());
}

#[test]
fn identity() {
    check_shape_op(&[2, 3], |g, x| g.identity(x).unwrap());
}

#[test]
fn concat_three_operands() {
    let mut g = Graph::new("concat");
    let a = f32_input(&mut g, "a", &[2, 1]);
    let b = f32_input(&mut g, "b", &[2, 3]);
    let c = f32_input(&mut g, "c", &[2, 2]);
    let y = g.concat(&[a, b, c], 1).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [
        uniform(&[2, 1], -1.0, 1.0, 81),
        uniform(&[2, 3], -1.0, 1.0, 82),
        uniform(&[2, 2], -1.0, 1.0, 83),
    ];
    check_grad(&g, &["a", "b", "c"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn split_with_an_unused_piece() {
    // The middle piece is not an output: its cotangent is missing and must count as zero.
    let mut g = Graph::new("split");
    let x = f32_input(&mut g, "x", &[2, 6]);
    let pieces = g.split(x, 1, &[1, 2, 3]).unwrap();
    g.set_output("first", pieces[0]).unwrap();
    g.set_output("last", pieces[2]).unwrap();
    check_grad(&g, &["x"], &[uniform(&[2, 6], -1.0, 1.0, 91)], FdConfig::DEFAULT);
}

#[test]
fn gather_table_with_repeated_index() {
    let mut g = Graph::new("gather");
    let table = f32_input(&mut g, "table", &[5, 3]);
    let idx = g.input("idx", TensorType::new(DType::I32, [2, 3])).unwrap();
    let y = g.gather(table, idx).unwrap();
    g.set_output("y", y).unwrap();
    let indices = Tensor::i32([2, 3], vec![4, 1, 4, 0, 4, 2]);
    check_grad(
        &g,
        &["table"],
        &[uniform(&[5, 3], -1.0, 1.0, 101), indices],
        FdConfig::DEFAULT,
    );
}

#[test]
fn scatter_add_rows_updates() {
    let mut g = Graph::new("scatter");
    let idx = g.input("idx", TensorType::new(DType::I32, [4])).unwrap();
    let updates = f32_input(&mut g, "updates", &[4, 3]);
    let y = g.scatter_add_rows(idx, updates, 5).unwrap();
    g.set_output("y", y).unwrap();
    let indices = Tensor::i32([4], vec![2, 0, 2, 4]);
    check_grad(
        &g,
        &["updates"],
        &[indices, uniform(&[4, 3], -1.0, 1.0, 111)],
        FdConfig::DEFAULT,
    );
}

#[test]
fn cast_f32_to_f16_and_back() {
    let mut g = Graph::new("cast");
    let x = f32_input(&mut g, "x", &[2, 3]);
    let h = g.cast(x, DType::F16).unwrap();
    let h2 = g.mul(h, h).unwrap();
    let y = g.cast(h2, DType::F32).unwrap();
    g.set_output("y", y).unwrap();
    // The forward rounds to half (unit roundoff 2^-11 ≈ 4.9e-4): each difference quotient carries
    // a rounding error up to ~|y|·2^-11 / h, so use a larger step (0.1: truncation is exactly 0
    // for the quadratic) and a 2 % relative tolerance; the f16 backward adds a few half ulp.
    let cfg = FdConfig {
        h: 0.1,
        tol: Tolerance { abs: 1e-2, rel: 2e-2 },
    };
    check_grad(&g, &["x"], &[uniform(&[2, 3], -1.0, 1.0, 121)], cfg);
}

#[test]
fn select_both_branches_with_broadcast() {
    let mut g = Graph::new("select");
    let cond = g.input("cond", TensorType::new(DType::Bool, [2, 3, 1])).unwrap();
    let a = f32_input(&mut g, "a", &[2, 3, 4]);
    let b = f32_input(&mut g, "b", &[4]);
    let y = g.select(cond, a, b).unwrap();
    g.set_output("y", y).unwrap();
    let c = Tensor::bool([2, 3, 1], vec![true, false, true, true, false, false]);
    let inputs = [c, uniform(&[2, 3, 4], -1.0, 1.0, 131), uniform(&[4], -1.0, 1.0, 132)];
    check_grad(&g, &["a", "b"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn value_used_several_times_accumulates() {
    // y = x·x + exp(x): x feeds three operands.
    let mut g = Graph::new("reuse");
    let x = f32_input(&mut g, "x", &[3]);
    let sq = g.mul(x, x).unwrap();
    let e = g.unary(UnaryOp::Exp, x).unwrap();
    let y = g.add(sq, e).unwrap();
    g.set_output("y", y).unwrap();
    check_grad(&g, &["x"], &[uniform(&[3], -1.0, 1.0, 141)], FdConfig::DEFAULT);
}

#[test]
fn several_outputs_and_an_output_used_inside() {
    // y1 = tanh(x) is an output and also feeds y2 = y1·w, so its cotangent is seed + use.
    let mut g = Graph::new("two_outputs");
    let x = f32_input(&mut g, "x", &[2, 3]);
    let w = f32_input(&mut g, "w", &[3]);
    let y1 = g.unary(UnaryOp::Tanh, x).unwrap();
    let y2 = g.mul(y1, w).unwrap();
    g.set_output("y1", y1).unwrap();
    g.set_output("y2", y2).unwrap();
    let inputs = [uniform(&[2, 3], -1.0, 1.0, 151), uniform(&[3], -1.0, 1.0, 152)];
    check_grad(&g, &["x", "w"], &inputs, FdConfig::DEFAULT);
}

// ---- non-differentiable cases and errors ----

fn interpret_f32(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    interpret(g, inputs, Precision::F32).unwrap()
}

/// The gradient w.r.t. "x" of output "y" (cotangent all ones) is exactly zero.
fn assert_zero_gradient(g: &Graph, x: Tensor) {
    let gg = grad(g, &["x"], Seed::Cotangents).unwrap();
    orion_core::verify::verify(&gg).unwrap();
    let y_ty = g.ty(g.outputs()[0].value).clone();
    let outs = interpret_f32(&gg, &[x, Tensor::full(&y_ty, 1.0)]);
    assert!(outs[1].to_f32_vec().iter().all(|&v| v == 0.0), "{:?}", outs[1]);
}

#[test]
fn compare_gives_no_gradient() {
    let mut g = Graph::new("compare");
    let x = f32_input(&mut g, "x", &[4]);
    let zero = g.scalar(0.0, DType::F32).unwrap();
    let c = g.compare(CompareOp::Greater, x, zero).unwrap();
    let y = g.cast(c, DType::F32).unwrap();
    g.set_output("y", y).unwrap();
    assert_zero_gradient(&g, away_from_zero(&[4], 161));
}

#[test]
fn cast_through_i32_gives_no_gradient() {
    let mut g = Graph::new("cast_i32");
    let x = f32_input(&mut g, "x", &[4]);
    let i = g.cast(x, DType::I32).unwrap();
    let y = g.cast(i, DType::F32).unwrap();
    g.set_output("y", y).unwrap();
    assert_zero_gradient(&g, uniform(&[4], 0.2, 0.8, 171));
}

#[test]
fn select_condition_gives_no_gradient() {
    let mut g = Graph::new("select_cond");
    let x = f32_input(&mut g, "x", &[4]);
    let zero = g.scalar(0.0, DType::F32).unwrap();
    let one = g.scalar(1.0, DType::F32).unwrap();
    let c = g.compare(CompareOp::Greater, x, zero).unwrap();
    let y = g.select(c, one, zero).unwrap();
    g.set_output("y", y).unwrap();
    assert_zero_gradient(&g, away_from_zero(&[4], 181));
}

#[test]
fn unused_wrt_input_gets_zero_gradient_of_its_type() {
    let mut g = Graph::new("unused");
    let x = f32_input(&mut g, "x", &[2, 3]);
    let _z = f32_input(&mut g, "z", &[4]);
    let y = g.unary(UnaryOp::Exp, x).unwrap();
    g.set_output("y", y).unwrap();
    let gg = grad(&g, &["z"], Seed::Cotangents).unwrap();
    orion_core::verify::verify(&gg).unwrap();
    let grad_z = gg.output_value("grad_z").unwrap();
    assert_eq!(gg.ty(grad_z), &TensorType::new(DType::F32, [4]));
    let outs = interpret_f32(
        &gg,
        &[
            uniform(&[2, 3], -1.0, 1.0, 191),
            uniform(&[4], -1.0, 1.0, 192),
            uniform(&[2, 3], -1.0, 1.0, 193),
        ],
    );
    assert_eq!(outs[1].to_f32_vec(), vec![0.0; 4]);
    // no VJP was emitted: the backward part is the zero constant and its broadcast only
    let backward_ops: Vec<&str> = gg.nodes()[g.nodes().len()..].iter().map(|n| n.op.name()).collect();
    assert_eq!(backward_ops, ["input", "const", "broadcast"]);
}

#[test]
fn wrt_integer_input_is_an_error_naming_it() {
    let mut g = Graph::new("gather");
    let table = f32_input(&mut g, "table", &[5, 3]);
    let idx = g.input("idx", TensorType::new(DType::I32, [2])).unwrap();
    let y = g.gather(table, idx).unwrap();
    g.set_output("y", y).unwrap();
    match grad(&g, &["idx"], Seed::Cotangents) {
        Err(CoreError::Autodiff { message }) => assert!(message.contains("\"idx\""), "{message}"),
        other => panic!("expected an autodiff error, got {other:?}"),
    }
}

#[test]
fn wrt_unknown_or_repeated_name_is_an_error() {
    let mut g = Graph::new("g");
    let x = f32_input(&mut g, "x", &[2]);
    g.set_output("y", x).unwrap();
    assert!(matches!(
        grad(&g, &["nope"], Seed::Cotangents),
        Err(CoreError::Autodiff { .. })
    ));
    assert!(matches!(
        grad(&g, &["x", "x"], Seed::Cotangents),
        Err(CoreError::Autodiff { .. })
    ));
}

#[test]
fn loss_seed_on_non_scalar_or_missing_output_is_an_error() {
    let mut g = Graph::new("g");
    let x = f32_input(&mut g, "x", &[2]);
    let y = g.unary(UnaryOp::Exp, x).unwrap();
    g.set_output("y", y).unwrap();
    match grad(&g, &["x"], Seed::Loss("y".into())) {
        Err(CoreError::Autodiff { message }) => assert!(message.contains("\"y\""), "{message}"),
        other => panic!("expected an autodiff error, got {other:?}"),
    }
    assert!(matches!(
        grad(&g, &["x"], Seed::Loss("missing".into())),
        Err(CoreError::Autodiff { .. })
    ));
}

#[test]
fn loss_seed_differentiates_a_scalar() {
    // loss = Σ x³ (kept as [1,1]) so d loss / dx = 3x².
    let mut g = Graph::new("loss");
    let x = f32_input(&mut g, "x", &[2, 3]);
    let x2 = g.mul(x, x).unwrap();
    let x3 = g.mul(x2, x).unwrap();
    let loss = g.reduce(ReduceOp::Sum, x3, &[0, 1], true).unwrap();
    g.set_output("loss", loss).unwrap();
    let gg = grad(&g, &["x"], Seed::Loss("loss".into())).unwrap();
    orion_core::verify::verify(&gg).unwrap();
    assert_eq!(gg.inputs().count(), 1, "Seed::Loss adds no input");
    let xs = uniform(&[2, 3], -1.0, 1.0, 201);
    let outs = interpret_f32(&gg, std::slice::from_ref(&xs));
    let expected: Vec<f32> = xs.to_f32_vec().iter().map(|v| 3.0 * v * v).collect();
    let expected = Tensor::f32([2, 3], expected);
    orion_core::interp::tolerance::assert_close(&outs[1], &expected, Tolerance::F32);
}

#[test]
fn gradient_graph_layout_and_names() {
    let mut g = Graph::new("layout");
    let a = f32_input(&mut g, "a", &[2]);
    let b = f32_input(&mut g, "b", &[2]);
    let s = g.add(a, b).unwrap();
    let p = g.mul(a, b).unwrap();
    g.set_output("sum", s).unwrap();
    g.set_output("prod", p).unwrap();
    let gg = grad(&g, &["b", "a"], Seed::Cotangents).unwrap();
    let inputs: Vec<&str> = gg.inputs().map(|(n, _, _)| n).collect();
    assert_eq!(inputs, ["a", "b", "grad_sum", "grad_prod"]);
    let outputs: Vec<&str> = gg.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["sum", "prod", "grad_b", "grad_a"]);
    assert_eq!(
        &gg.nodes()[..g.nodes().len()],
        g.nodes(),
        "forward part copied node by node"
    );
    assert_eq!(gg.output_value("sum"), Some(s));
    assert_eq!(gg.output_value("prod"), Some(p));
}

#[test]
fn only_requested_gradients_are_computed() {
    // y = x·W with only x wanted: the backward part has one matmul (dx), none for dW.
    let mut g = Graph::new("prune");
    let x = f32_input(&mut g, "x", &[2, 3]);
    let w = f32_input(&mut g, "w", &[3, 4]);
    let y = g.matmul(x, w, false, false).unwrap();
    g.set_output("y", y).unwrap();
    let gg = grad(&g, &["x"], Seed::Cotangents).unwrap();
    let matmuls = gg.nodes().iter().filter(|n| matches!(n.op, Op::MatMul { .. })).count();
    assert_eq!(matmuls, 2);
}

#[test]
fn f16_forward_gets_an_f16_backward() {
    let mut g = Graph::new("half");
    let x = g.input("x", TensorType::new(DType::F16, [2, 3])).unwrap();
    let w = g.input("w", TensorType::new(DType::F16, [3])).unwrap();
    let t = g.unary(UnaryOp::Tanh, x).unwrap();
    let y = g.mul(t, w).unwrap();
    g.set_output("y", y).unwrap();
    let gg = grad(&g, &["x", "w"], Seed::Cotangents).unwrap();
    orion_core::verify::verify(&gg).unwrap();
    assert!(gg
        .values()
        .iter()
        .all(|v| v.ty.dtype == DType::F16 || v.ty.dtype == DType::Bool));
    // half precision: rounding of order 2^-11 relative per op, divided by 2h = 0.2 in the quotient
    let cfg = FdConfig {
        h: 0.1,
        tol: Tolerance { abs: 2e-2, rel: 5e-2 },
    };
    let to_f16 = |t: Tensor| Tensor::f16(t.shape().clone(), t.to_f32_vec());
    let inputs = [
        to_f16(uniform(&[2, 3], -1.0, 1.0, 211)),
        to_f16(uniform(&[3], -1.0, 1.0, 212)),
    ];
    check_grad(&g, &["x", "w"], &inputs, cfg);
}

// ---- composites ----

use orion_core::composite;

/// `y = act(x)` for a composite activation on [2,5].
fn check_activation(act: fn(&mut Graph, ValueId) -> orion_core::Result<ValueId>, seed: u64) {
    let mut g = Graph::new("activation");
    let x = f32_input(&mut g, "x", &[2, 5]);
    let y = act(&mut g, x).unwrap();
    g.set_output("y", y).unwrap();
    check_grad(&g, &["x"], &[uniform(&[2, 5], -2.0, 2.0, seed)], FdConfig::DEFAULT);
}

#[test]
fn composite_gelu_tanh() {
    check_activation(composite::gelu_tanh, 301);
}

#[test]
fn composite_gelu_exact() {
    check_activation(composite::gelu_exact, 302);
}

#[test]
fn composite_silu() {
    check_activation(composite::silu, 303);
}

#[test]
fn composite_layer_norm() {
    let mut g = Graph::new("layer_norm");
    let x = f32_input(&mut g, "x", &[3, 6]);
    let gamma = f32_input(&mut g, "gamma", &[6]);
    let beta = f32_input(&mut g, "beta", &[6]);
    let y = composite::layer_norm(&mut g, x, gamma, beta, 1e-5).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [
        uniform(&[3, 6], -1.0, 1.0, 311),
        uniform(&[6], 0.5, 1.5, 312),
        uniform(&[6], -0.5, 0.5, 313),
    ];
    check_grad(&g, &["x", "gamma", "beta"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn composite_rms_norm() {
    let mut g = Graph::new("rms_norm");
    let x = f32_input(&mut g, "x", &[3, 6]);
    let w = f32_input(&mut g, "w", &[6]);
    let y = composite::rms_norm(&mut g, x, w, 1e-5).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [uniform(&[3, 6], -1.0, 1.0, 321), uniform(&[6], 0.5, 1.5, 322)];
    check_grad(&g, &["x", "w"], &inputs, FdConfig::DEFAULT);
}

/// Attention with `heads` query heads and `kv_heads` key/value heads, T = 4, d = 3.
fn check_attention(heads: usize, kv_heads: usize) {
    let (t, d) = (4, 3);
    let mut g = Graph::new("attention");
    let q = f32_input(&mut g, "q", &[heads, t, d]);
    let k = f32_input(&mut g, "k", &[kv_heads, t, d]);
    let v = f32_input(&mut g, "v", &[kv_heads, t, d]);
    let y = composite::causal_attention(&mut g, q, k, v).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [
        uniform(&[heads, t, d], -1.0, 1.0, 331),
        uniform(&[kv_heads, t, d], -1.0, 1.0, 332),
        uniform(&[kv_heads, t, d], -1.0, 1.0, 333),
    ];
    check_grad(&g, &["q", "k", "v"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn composite_causal_attention() {
    check_attention(2, 2);
}

#[test]
fn composite_causal_attention_grouped_query() {
    check_attention(4, 2);
}

#[test]
fn composite_rope() {
    let (heads, t, d) = (2, 4, 6);
    let mut g = Graph::new("rope");
    let x = f32_input(&mut g, "x", &[heads, t, d]);
    let (cos, sin) = composite::rope_tables(10000.0, 0..t, d);
    let cos = g.constant(cos).unwrap();
    let sin = g.constant(sin).unwrap();
    let y = composite::rope(&mut g, x, cos, sin).unwrap();
    g.set_output("y", y).unwrap();
    check_grad(
        &g,
        &["x"],
        &[uniform(&[heads, t, d], -1.0, 1.0, 341)],
        FdConfig::DEFAULT,
    );
}

#[test]
fn composite_swiglu() {
    let (t, dm, h) = (3, 4, 5);
    let mut g = Graph::new("swiglu");
    let x = f32_input(&mut g, "x", &[t, dm]);
    let w_gate = f32_input(&mut g, "w_gate", &[h, dm]);
    let w_up = f32_input(&mut g, "w_up", &[h, dm]);
    let w_down = f32_input(&mut g, "w_down", &[dm, h]);
    let y = composite::swiglu(&mut g, x, w_gate, w_up, w_down).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = [
        uniform(&[t, dm], -1.0, 1.0, 351),
        uniform(&[h, dm], -1.0, 1.0, 352),
        uniform(&[h, dm], -1.0, 1.0, 353),
        uniform(&[dm, h], -1.0, 1.0, 354),
    ];
    check_grad(&g, &["x", "w_gate", "w_up", "w_down"], &inputs, FdConfig::DEFAULT);
}

fn cross_entropy_graph(n: usize, v: usize) -> Graph {
    let mut g = Graph::new("cross_entropy");
    let logits = f32_input(&mut g, "logits", &[n, v]);
    let labels = g.input("labels", TensorType::new(DType::I32, [n])).unwrap();
    let loss = composite::cross_entropy(&mut g, logits, labels).unwrap();
    g.set_output("loss", loss).unwrap();
    g
}

#[test]
fn composite_cross_entropy() {
    // Distinct logits keep the row maximum (subtracted inside) away from ties.
    let g = cross_entropy_graph(3, 5);
    let inputs = [distinct(&[3, 5], 0.0, 361), Tensor::i32([3], vec![4, 0, 2])];
    check_grad(&g, &["logits"], &inputs, FdConfig::DEFAULT);
}

#[test]
fn composite_cross_entropy_loss_seed_matches_softmax_minus_one_hot() {
    let (n, v) = (3, 5);
    let g = cross_entropy_graph(n, v);
    let gg = grad(&g, &["logits"], Seed::Loss("loss".into())).unwrap();
    orion_core::verify::verify(&gg).unwrap();
    let logits = uniform(&[n, v], -2.0, 2.0, 371);
    let labels = [1usize, 4, 1];
    let label_tensor = Tensor::i32([n], labels.iter().map(|&l| l as i32).collect());
    let outs = interpret_f32(&gg, &[logits.clone(), label_tensor]);
    // d mean_i(-log softmax(z_i)[l_i]) / dz_ij = (softmax(z_i)_j - [j = l_i]) / n
    let z = logits.to_f32_vec();
    let mut expected = vec![0.0f32; n * v];
    for i in 0..n {
        let row = &z[i * v..(i + 1) * v];
        let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        for j in 0..v {
            let p = (row[j] as f64).exp() / total;
            let hit = if j == labels[i] { 1.0 } else { 0.0 };
            expected[i * v + j] = ((p - hit) / n as f64) as f32;
        }
    }
    orion_core::interp::tolerance::assert_close(&outs[1], &Tensor::f32([n, v], expected), Tolerance::F32);
}
