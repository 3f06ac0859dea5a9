//! MIL → IR: every supported MIL operation converts to IR that the reference interpreter runs to the
//! values an obvious loop computes; the §3 examples and a CoreML-style model convert and run; every
//! unsupported construct is an error that names it.

use orion_ane::blob::BlobWriter;
use orion_ane::mil::{
    parse_program, to_graph, BlobDictResolver, InMemoryResolver, MilDType, MilError, MilType, WeightResolver,
};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{erf, interpret, Precision};
use orion_core::{Graph, Op, Tensor};
use std::collections::HashMap;

type UnaryFn = fn(f32) -> f32;
type BinaryFn = fn(f32, f32) -> f32;
type PredicateFn = fn(f32, f32) -> bool;

/// A one-function ios18 program.
fn program(params: &str, body: &str, outputs: &str) -> String {
    format!("program(1.3)\n{{\n    func main<ios18>({params}) {{\n{body}\n    }} -> ({outputs});\n}}\n")
}

fn convert(text: &str) -> Result<Graph, MilError> {
    let parsed = parse_program(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    to_graph(&parsed, "main", &InMemoryResolver::new())
}

fn run(text: &str, inputs: &[Tensor]) -> Vec<Tensor> {
    let graph = convert(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    interpret(&graph, inputs, Precision::F32).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    if let Err(e) = compare(actual, expected, Tolerance::F32) {
        panic!("{what}: {e}");
    }
}

/// Deterministic values in [-2, 2).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

fn positive(n: usize, seed: u32) -> Vec<f32> {
    data(n, seed).into_iter().map(|v| v.abs() + 0.25).collect()
}

// ---- elementwise -------------------------------------------------------------------------------

#[test]
fn binary_ops_broadcast_like_numpy() {
    let x = positive(6, 1);
    let y = data(3, 2);
    let cases: [(&str, BinaryFn); 7] = [
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("real_div", |a, b| a / b),
        ("maximum", |a, b| a.max(b)),
        ("minimum", |a, b| a.min(b)),
        ("pow", |a, b| a.powf(b)),
    ];
    for (name, f) in cases {
        let body = format!("        tensor<fp32, [2, 3]> z = {name}(x = x, y = y)[name = string(\"z\")];");
        let text = program("tensor<fp32, [2, 3]> x, tensor<fp32, [3]> y", &body, "z");
        let out = run(&text, &[Tensor::f32([2, 3], x.clone()), Tensor::f32([3], y.clone())]);
        let expected: Vec<f32> = (0..6).map(|k| f(x[k], y[k % 3])).collect();
        assert_close(&out[0], &Tensor::f32([2, 3], expected), name);
    }
}

#[test]
fn comparisons_give_bool_tensors() {
    let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = vec![1.0, 0.0, 3.0, 5.0, 5.0, 7.0];
    let cases: [(&str, PredicateFn); 6] = [
        ("equal", |a, b| a == b),
        ("not_equal", |a, b| a != b),
        ("less", |a, b| a < b),
        ("less_equal", |a, b| a <= b),
        ("greater", |a, b| a > b),
        ("greater_equal", |a, b| a >= b),
    ];
    for (name, f) in cases {
        let body = format!("        tensor<bool, [6]> z = {name}(x = x, y = y)[name = string(\"z\")];");
        let text = program("tensor<fp32, [6]> x, tensor<fp32, [6]> y", &body, "z");
        let out = run(&text, &[Tensor::f32([6], x.clone()), Tensor::f32([6], y.clone())]);
        let expected: Vec<bool> = (0..6).map(|k| f(x[k], y[k])).collect();
        assert_eq!(out[0], Tensor::bool([6], expected), "{name}");
    }
}

fn run_unary(name: &str, extra: &str, consts: &str, x: &[f32]) -> Tensor {
    let body = format!("{consts}        tensor<fp32, [6]> z = {name}(x = x{extra})[name = string(\"z\")];");
    let text = program("tensor<fp32, [6]> x", &body, "z");
    run(&text, &[Tensor::f32([6], x.to_vec())]).remove(0)
}

#[test]
fn unary_ops_match_their_formulas() {
    let x = positive(6, 3);
    let cases: [(&str, UnaryFn); 8] = [
        ("exp", f32::exp),
        ("sqrt", f32::sqrt),
        ("tanh", f32::tanh),
        ("sigmoid", |v| 1.0 / (1.0 + (-v).exp())),
        ("relu", |v| v.max(0.0)),
        ("erf", erf),
        ("square", |v| v * v),
        ("silu", |v| v / (1.0 + (-v).exp())),
    ];
    let signed = data(6, 4);
    for (name, f) in cases {
        let input = if name == "sqrt" { &x } else { &signed };
        let expected: Vec<f32> = input.iter().map(|&v| f(v)).collect();
        assert_close(&run_unary(name, "", "", input), &Tensor::f32([6], expected), name);
    }
}

#[test]
fn epsilon_ops_apply_mil_defaults_and_explicit_values() {
    let x = positive(6, 5);
    let zero_eps = "        fp32 e = const()[name = string(\"e\"), val = fp32(0.0)];\n";
    let tenth_eps = "        fp32 e = const()[name = string(\"e\"), val = fp32(0.1)];\n";
    let cases: [(&str, f32, UnaryFn); 3] = [
        ("inverse", 1e-4, |v| 1.0 / v),
        ("rsqrt", 1e-12, |v| 1.0 / v.sqrt()),
        ("log", 1e-45, f32::ln),
    ];
    for (name, default, f) in cases {
        let at = |eps: f32| Tensor::f32([6], x.iter().map(|&v| f(v + eps)).collect());
        assert_close(&run_unary(name, "", "", &x), &at(default), &format!("{name} default"));
        assert_close(
            &run_unary(name, ", epsilon = e", zero_eps, &x),
            &at(0.0),
            &format!("{name} eps 0"),
        );
        assert_close(
            &run_unary(name, ", epsilon = e", tenth_eps, &x),
            &at(0.1),
            &format!("{name} eps 0.1"),
        );
    }
    // The default 1e-4 of `inverse` is visible: 1/(0.5 + 1e-4) differs from 2 by 4e-4.
    let inv = run_unary("inverse", "", "", &[0.5; 6]);
    assert!((inv.as_f32().unwrap()[0] - 2.0).abs() > 3e-4);
}

#[test]
fn clip_bounds_both_sides() {
    let x = data(6, 6);
    let consts = "        fp32 lo = const()[name = string(\"lo\"), val = fp32(-0.5)];\n        \
                  fp32 hi = const()[name = string(\"hi\"), val = fp32(0.75)];\n";
    let out = run_unary("clip", ", alpha = lo, beta = hi", consts, &x);
    let expected: Vec<f32> = x.iter().map(|&v| v.clamp(-0.5, 0.75)).collect();
    assert_close(&out, &Tensor::f32([6], expected), "clip");
}

#[test]
fn gelu_modes_expand_to_their_formulas() {
    let x = data(6, 7);
    let modes: [(&str, UnaryFn); 3] = [
        ("EXACT", |v| 0.5 * v * (1.0 + erf(v / 2f32.sqrt()))),
        ("TANH_APPROXIMATION", |v| {
            0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044_715 * v * v * v)).tanh())
        }),
        ("SIGMOID_APPROXIMATION", |v| v / (1.0 + (-1.702 * v).exp())),
    ];
    for (mode, f) in modes {
        let consts = format!("        string m = const()[name = string(\"m\"), val = string(\"{mode}\")];\n");
        let out = run_unary("gelu", ", mode = m", &consts, &x);
        let expected: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        assert_close(&out, &Tensor::f32([6], expected), mode);
    }
    // Without `mode` the default is EXACT.
    let expected: Vec<f32> = x.iter().map(|&v| 0.5 * v * (1.0 + erf(v / 2f32.sqrt()))).collect();
    assert_close(&run_unary("gelu", "", "", &x), &Tensor::f32([6], expected), "default");
}

// ---- reductions, softmax, products ---------------------------------------------------------------

#[test]
fn softmax_default_axis_is_the_last() {
    let x = data(6, 8);
    let body = "        tensor<fp32, [2, 3]> z = softmax(x = x)[name = string(\"z\")];\n        \
                int32 a0 = const()[name = string(\"a0\"), val = int32(0)];\n        \
                tensor<fp32, [2, 3]> w = softmax(axis = a0, x = x)[name = string(\"w\")];";
    let out = run(
        &program("tensor<fp32, [2, 3]> x", body, "z, w"),
        &[Tensor::f32([2, 3], x.clone())],
    );
    let mut last = vec![0.0; 6];
    for r in 0..2 {
        let sum: f32 = (0..3).map(|c| x[r * 3 + c].exp()).sum();
        for c in 0..3 {
            last[r * 3 + c] = x[r * 3 + c].exp() / sum;
        }
    }
    let mut first = vec![0.0; 6];
    for c in 0..3 {
        let sum: f32 = (0..2).map(|r| x[r * 3 + c].exp()).sum();
        for r in 0..2 {
            first[r * 3 + c] = x[r * 3 + c].exp() / sum;
        }
    }
    assert_close(&out[0], &Tensor::f32([2, 3], last), "axis -1");
    assert_close(&out[1], &Tensor::f32([2, 3], first), "axis 0");
}

#[test]
fn reductions_honour_axes_and_keep_dims() {
    let x = data(6, 9);
    let body = "        tensor<int32, [1]> last = const()[name = string(\"last\"), val = tensor<int32, [1]>([-1])];\n        \
                tensor<int32, [1]> first = const()[name = string(\"first\"), val = tensor<int32, [1]>([0])];\n        \
                bool keep = const()[name = string(\"keep\"), val = bool(true)];\n        \
                tensor<fp32, [2]> s = reduce_sum(axes = last, x = x)[name = string(\"s\")];\n        \
                tensor<fp32, [1, 3]> m = reduce_mean(axes = first, keep_dims = keep, x = x)[name = string(\"m\")];\n        \
                fp32 a = reduce_max(x = x)[name = string(\"a\")];";
    let out = run(
        &program("tensor<fp32, [2, 3]> x", body, "s, m, a"),
        &[Tensor::f32([2, 3], x.clone())],
    );
    let sums: Vec<f32> = (0..2).map(|r| (0..3).map(|c| x[r * 3 + c]).sum()).collect();
    let means: Vec<f32> = (0..3).map(|c| (x[c] + x[3 + c]) / 2.0).collect();
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_close(&out[0], &Tensor::f32([2], sums), "reduce_sum");
    assert_close(&out[1], &Tensor::f32([1, 3], means), "reduce_mean");
    assert_close(&out[2], &Tensor::f32([], vec![max]), "reduce_max");
}

/// `a [batch, m, k]` times `b [k, n]` (optionally given transposed) by loops.
fn matmul_loop(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize, b_transposed: bool) -> Vec<f32> {
    let mut out = vec![0.0; batch * m * n];
    for t in 0..batch {
        for i in 0..m {
            for j in 0..n {
                out[(t * m + i) * n + j] = (0..k)
                    .map(|p| a[(t * m + i) * k + p] * if b_transposed { b[j * k + p] } else { b[p * n + j] })
                    .sum();
            }
        }
    }
    out
}

#[test]
fn matmul_batches_and_transposes() {
    let x = data(24, 10);
    let y = data(20, 11);
    let body = "        bool f = const()[name = string(\"f\"), val = bool(false)];\n        \
                bool t = const()[name = string(\"t\"), val = bool(true)];\n        \
                tensor<fp32, [2, 3, 5]> z = matmul(transpose_x = f, transpose_y = f, x = x, y = y)[name = string(\"z\")];\n        \
                tensor<fp32, [2, 3, 5]> w = matmul(transpose_y = t, x = x, y = yt)[name = string(\"w\")];";
    let text = program(
        "tensor<fp32, [2, 3, 4]> x, tensor<fp32, [4, 5]> y, tensor<fp32, [5, 4]> yt",
        body,
        "z, w",
    );
    let yt: Vec<f32> = (0..20).map(|k| y[(k % 4) * 5 + k / 4]).collect();
    let inputs = [
        Tensor::f32([2, 3, 4], x.clone()),
        Tensor::f32([4, 5], y.clone()),
        Tensor::f32([5, 4], yt.clone()),
    ];
    let out = run(&text, &inputs);
    let expected = Tensor::f32([2, 3, 5], matmul_loop(&x, &y, 2, 3, 4, 5, false));
    assert_close(&out[0], &expected, "matmul");
    assert_close(&out[1], &expected, "matmul transpose_y");
}

#[test]
fn linear_multiplies_by_the_transposed_weight_and_adds_bias() {
    let x = data(8, 12);
    let w = data(12, 13);
    let b = data(3, 14);
    let body = "        tensor<fp32, [2, 3]> z = linear(bias = b, weight = w, x = x)[name = string(\"z\")];";
    let text = program(
        "tensor<fp32, [2, 4]> x, tensor<fp32, [3, 4]> w, tensor<fp32, [3]> b",
        body,
        "z",
    );
    let out = run(
        &text,
        &[
            Tensor::f32([2, 4], x.clone()),
            Tensor::f32([3, 4], w.clone()),
            Tensor::f32([3], b.clone()),
        ],
    );
    let mut expected = matmul_loop(&x, &w, 1, 2, 4, 3, true);
    for (k, v) in expected.iter_mut().enumerate() {
        *v += b[k % 3];
    }
    assert_close(&out[0], &Tensor::f32([2, 3], expected), "linear");
}

#[test]
fn conv_1x1_with_bias_is_a_channel_mix() {
    let (cin, cout, s) = (3, 2, 4);
    let x = data(cin * s, 15);
    let w = data(cout * cin, 16);
    let b = data(cout, 17);
    let body = "        string pt = const()[name = string(\"pt\"), val = string(\"valid\")];\n        \
                tensor<int32, [2]> st = const()[name = string(\"st\"), val = tensor<int32, [2]>([1, 1])];\n        \
                int32 gr = const()[name = string(\"gr\"), val = int32(1)];\n        \
                tensor<fp32, [1, 2, 1, 4]> y = conv(bias = b, groups = gr, pad_type = pt, strides = st, weight = w, x = x)[name = string(\"y\")];";
    let text = program(
        "tensor<fp32, [1, 3, 1, 4]> x, tensor<fp32, [2, 3, 1, 1]> w, tensor<fp32, [2]> b",
        body,
        "y",
    );
    let inputs = [
        Tensor::f32([1, cin, 1, s], x.clone()),
        Tensor::f32([cout, cin, 1, 1], w.clone()),
        Tensor::f32([cout], b.clone()),
    ];
    let out = run(&text, &inputs);
    let mut expected = vec![0.0; cout * s];
    for o in 0..cout {
        for t in 0..s {
            expected[o * s + t] = b[o] + (0..cin).map(|i| w[o * cin + i] * x[i * s + t]).sum::<f32>();
        }
    }
    assert_close(&out[0], &Tensor::f32([1, cout, 1, s], expected), "conv");
}

#[test]
fn layer_norm_normalises_over_trailing_and_inner_axes() {
    let x = data(24, 18);
    let gamma = data(4, 19);
    let beta = data(4, 20);
    let gamma3 = data(3, 21);
    let body = "        tensor<int32, [1]> last = const()[name = string(\"last\"), val = tensor<int32, [1]>([-1])];\n        \
                tensor<int32, [1]> mid = const()[name = string(\"mid\"), val = tensor<int32, [1]>([1])];\n        \
                fp32 eps = const()[name = string(\"eps\"), val = fp32(0.001)];\n        \
                tensor<fp32, [2, 3, 4]> y = layer_norm(axes = last, beta = beta, epsilon = eps, gamma = gamma, x = x)[name = string(\"y\")];\n        \
                tensor<fp32, [2, 3, 4]> z = layer_norm(axes = mid, gamma = g3, x = x)[name = string(\"z\")];";
    let params = "tensor<fp32, [2, 3, 4]> x, tensor<fp32, [4]> gamma, tensor<fp32, [4]> beta, tensor<fp32, [3]> g3";
    let inputs = [
        Tensor::f32([2, 3, 4], x.clone()),
        Tensor::f32([4], gamma.clone()),
        Tensor::f32([4], beta.clone()),
        Tensor::f32([3], gamma3.clone()),
    ];
    let out = run(&program(params, body, "y, z"), &inputs);
    let mut over_last = vec![0.0; 24];
    for row in 0..6 {
        let v = &x[row * 4..row * 4 + 4];
        let mean = v.iter().sum::<f32>() / 4.0;
        let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / 4.0;
        for c in 0..4 {
            over_last[row * 4 + c] = (v[c] - mean) / (var + 0.001).sqrt() * gamma[c] + beta[c];
        }
    }
    let mut over_mid = vec![0.0; 24];
    for b in 0..2 {
        for c in 0..4 {
            let at = |m: usize| x[(b * 3 + m) * 4 + c];
            let mean = (0..3).map(at).sum::<f32>() / 3.0;
            let var = (0..3).map(|m| (at(m) - mean) * (at(m) - mean)).sum::<f32>() / 3.0;
            for m in 0..3 {
                over_mid[(b * 3 + m) * 4 + c] = (at(m) - mean) / (var + 1e-5).sqrt() * gamma3[m];
            }
        }
    }
    assert_close(&out[0], &Tensor::f32([2, 3, 4], over_last), "layer_norm axes [-1]");
    assert_close(&out[1], &Tensor::f32([2, 3, 4], over_mid), "layer_norm axes [1]");
}

// ---- casts, selection, shapes ----------------------------------------------------------------------

#[test]
fn cast_select_and_identity() {
    let x = vec![-1.75, -0.5, 0.0, 0.5, 2.25, 3.0];
    let body = "        string i = const()[name = string(\"i\"), val = string(\"int32\")];\n        \
                string b = const()[name = string(\"b\"), val = string(\"bool\")];\n        \
                string h = const()[name = string(\"h\"), val = string(\"fp16\")];\n        \
                tensor<int32, [6]> xi = cast(dtype = i, x = x)[name = string(\"xi\")];\n        \
                tensor<bool, [6]> xb = cast(dtype = b, x = x)[name = string(\"xb\")];\n        \
                tensor<fp16, [6]> xh = cast(dtype = h, x = x)[name = string(\"xh\")];\n        \
                tensor<fp32, [6]> s = select(a = x, b = y, cond = xb)[name = string(\"s\")];\n        \
                tensor<fp32, [6]> same = identity(x = y)[name = string(\"same\")];";
    let y = data(6, 22);
    let out = run(
        &program("tensor<fp32, [6]> x, tensor<fp32, [6]> y", body, "xi, xb, xh, s, same"),
        &[Tensor::f32([6], x.clone()), Tensor::f32([6], y.clone())],
    );
    assert_eq!(out[0], Tensor::i32([6], vec![-1, 0, 0, 0, 2, 3]));
    assert_eq!(out[1], Tensor::bool([6], x.iter().map(|&v| v != 0.0).collect()));
    assert_eq!(out[2], Tensor::f16([6], x.clone()));
    let selected: Vec<f32> = (0..6).map(|k| if x[k] != 0.0 { x[k] } else { y[k] }).collect();
    assert_eq!(out[3], Tensor::f32([6], selected));
    assert_eq!(out[4], Tensor::f32([6], y));
}

#[test]
fn reshape_and_transpose() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let body = "        tensor<int32, [3]> sh = const()[name = string(\"sh\"), val = tensor<int32, [3]>([0, -1, 2])];\n        \
                tensor<fp32, [2, 6, 2]> r = reshape(shape = sh, x = x)[name = string(\"r\")];\n        \
                tensor<int32, [3]> p = const()[name = string(\"p\"), val = tensor<int32, [3]>([-1, 0, 1])];\n        \
                tensor<fp32, [4, 2, 3]> t = transpose(perm = p, x = x)[name = string(\"t\")];";
    let out = run(
        &program("tensor<fp32, [2, 3, 4]> x", body, "r, t"),
        &[Tensor::f32([2, 3, 4], x.clone())],
    );
    assert_eq!(out[0], Tensor::f32([2, 6, 2], x.clone()));
    let mut transposed = vec![0.0; 24];
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                transposed[(c * 2 + a) * 3 + b] = x[(a * 3 + b) * 4 + c];
            }
        }
    }
    assert_eq!(out[1], Tensor::f32([4, 2, 3], transposed));
}

#[test]
fn slices_by_index_and_by_size() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let body = "        tensor<int32, [3]> b = const()[name = string(\"b\"), val = tensor<int32, [3]>([1, -2, 5])];\n        \
                tensor<int32, [3]> e = const()[name = string(\"e\"), val = tensor<int32, [3]>([0, 3, -1])];\n        \
                tensor<bool, [3]> bm = const()[name = string(\"bm\"), val = tensor<bool, [3]>([false, false, true])];\n        \
                tensor<bool, [3]> em = const()[name = string(\"em\"), val = tensor<bool, [3]>([false, false, false])];\n        \
                tensor<bool, [3]> sq = const()[name = string(\"sq\"), val = tensor<bool, [3]>([true, false, false])];\n        \
                tensor<fp32, [2, 3]> i = slice_by_index(begin = b, begin_mask = bm, end = e, end_mask = em, squeeze_mask = sq, x = x)[name = string(\"i\")];\n        \
                tensor<int32, [3]> sb = const()[name = string(\"sb\"), val = tensor<int32, [3]>([0, 1, 2])];\n        \
                tensor<int32, [3]> ss = const()[name = string(\"ss\"), val = tensor<int32, [3]>([2, -1, 2])];\n        \
                tensor<fp32, [2, 2, 2]> s = slice_by_size(begin = sb, size = ss, x = x)[name = string(\"s\")];";
    let out = run(
        &program("tensor<fp32, [2, 3, 4]> x", body, "i, s"),
        &[Tensor::f32([2, 3, 4], x.clone())],
    );
    // x[1, 1:3, 0:3] (axis 0 squeezed, begin of axis 2 masked, end -1 = 3).
    let xr = &x;
    let by_index: Vec<f32> = (1..3).flat_map(|b| (0..3).map(move |c| xr[(3 + b) * 4 + c])).collect();
    assert_eq!(out[0], Tensor::f32([2, 3], by_index));
    let by_size: Vec<f32> = (0..2)
        .flat_map(|a| (1..3).flat_map(move |b| (2..4).map(move |c| (a * 3 + b) * 4 + c)))
        .map(|k| x[k])
        .collect();
    assert_eq!(out[1], Tensor::f32([2, 2, 2], by_size));
}

#[test]
fn concat_split_and_pad() {
    let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let y: Vec<f32> = (10..14).map(|v| v as f32).collect();
    let body = "        int32 ax = const()[name = string(\"ax\"), val = int32(-1)];\n        \
                bool no = const()[name = string(\"no\"), val = bool(false)];\n        \
                tensor<fp32, [2, 5]> c = concat(axis = ax, interleave = no, values = (x, y))[name = string(\"c\")];\n        \
                tensor<int32, [2]> sizes = const()[name = string(\"sizes\"), val = tensor<int32, [2]>([1, 4])];\n        \
                tensor<fp32, [2, 1]> c0, tensor<fp32, [2, 4]> c1 = split(axis = ax, split_sizes = sizes, x = c)[name = string(\"sp\")];\n        \
                int32 n = const()[name = string(\"n\"), val = int32(2)];\n        \
                int32 zero = const()[name = string(\"zero\"), val = int32(0)];\n        \
                tensor<fp32, [1, 5]> r0, tensor<fp32, [1, 5]> r1 = split(axis = zero, num_splits = n, x = c)[name = string(\"rows\")];\n        \
                tensor<fp32, [2, 2]> h0, tensor<fp32, [2, 2]> h1 = split(axis = ax, x = c1)[name = string(\"halves\")];\n        \
                tensor<int32, [4]> widths = const()[name = string(\"widths\"), val = tensor<int32, [4]>([1, 0, 0, 2])];\n        \
                fp32 v = const()[name = string(\"v\"), val = fp32(-1.0)];\n        \
                tensor<fp32, [3, 5]> p = pad(constant_val = v, pad = widths, x = x)[name = string(\"p\")];";
    let out = run(
        &program(
            "tensor<fp32, [2, 3]> x, tensor<fp32, [2, 2]> y",
            body,
            "c, c0, c1, r1, h1, p",
        ),
        &[Tensor::f32([2, 3], x.clone()), Tensor::f32([2, 2], y.clone())],
    );
    let joined = vec![0.0, 1.0, 2.0, 10.0, 11.0, 3.0, 4.0, 5.0, 12.0, 13.0];
    assert_eq!(out[0], Tensor::f32([2, 5], joined.clone()));
    assert_eq!(out[1], Tensor::f32([2, 1], vec![0.0, 3.0]));
    assert_eq!(
        out[2],
        Tensor::f32([2, 4], vec![1.0, 2.0, 10.0, 11.0, 4.0, 5.0, 12.0, 13.0])
    );
    assert_eq!(out[3], Tensor::f32([1, 5], joined[5..].to_vec()));
    assert_eq!(out[4], Tensor::f32([2, 2], vec![10.0, 11.0, 12.0, 13.0]));
    let mut padded = vec![-1.0; 15];
    for r in 0..2 {
        for c in 0..3 {
            padded[(r + 1) * 5 + c] = x[r * 3 + c];
        }
    }
    assert_eq!(out[5], Tensor::f32([3, 5], padded));
}

#[test]
fn gather_reads_rows_and_rejects_bad_indices_at_run_time() {
    let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let body = "        tensor<fp32, [2, 2, 3]> g = gather(x = t, indices = i)[name = string(\"g\")];";
    let text = program("tensor<fp32, [4, 3]> t, tensor<int32, [2, 2]> i", body, "g");
    let out = run(
        &text,
        &[
            Tensor::f32([4, 3], table.clone()),
            Tensor::i32([2, 2], vec![3, 0, 1, 3]),
        ],
    );
    let expected: Vec<f32> = [3, 0, 1, 3]
        .iter()
        .flat_map(|&r| table[r * 3..r * 3 + 3].to_vec())
        .collect();
    assert_eq!(out[0], Tensor::f32([2, 2, 3], expected));
    let graph = convert(&text).unwrap();
    let bad = interpret(
        &graph,
        &[Tensor::f32([4, 3], table), Tensor::i32([2, 2], vec![0, 4, 0, 0])],
        Precision::F32,
    );
    assert!(bad.is_err());
}

#[test]
fn inline_literal_arguments_and_returned_consts_convert() {
    let body =
        "        tensor<fp32, [2]> z = add(x = x, y = tensor<fp32, [2]>([0.5, -1.0]))[name = string(\"z\")];\n        \
                tensor<fp32, [2]> k = const()[name = string(\"k\"), val = tensor<fp32, [2]>([7.0, 8.0])];";
    let out = run(
        &program("tensor<fp32, [2]> x", body, "z, k"),
        &[Tensor::f32([2], vec![1.0, 2.0])],
    );
    assert_eq!(out[0], Tensor::f32([2], vec![1.5, 1.0]));
    assert_eq!(out[1], Tensor::f32([2], vec![7.0, 8.0]));
}

// ---- whole programs ---------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/mil/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn reference_conv_examples_run_in_both_dialects() {
    let w = data(128 * 64, 30);
    let x = data(64 * 64, 31);
    let weights = InMemoryResolver::new().with("@model_path/weights/w.bin", 64, Tensor::f16([128, 64, 1, 1], w));
    let mut graphs = Vec::new();
    for name in ["example1_ios18_conv.mil", "example3_ios16_conv.mil"] {
        let parsed = parse_program(&fixture(name)).unwrap();
        graphs.push(to_graph(&parsed, "main", &weights).unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    assert_eq!(graphs[0], graphs[1], "the dialect must not change the meaning");
    let g = &graphs[0];
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.name()).collect();
    assert_eq!(
        kinds,
        ["input", "const", "conv1x1"],
        "parameter consts must not become nodes"
    );
    assert_eq!(g.outputs()[0].name, "z00_y");
    let out = interpret(g, &[Tensor::f16([1, 64, 1, 64], x.clone())], Precision::F32).unwrap();
    let (wh, xh) = (Tensor::f16([128, 64], data(128 * 64, 30)), Tensor::f16([64, 64], x));
    let (wv, xv) = (wh.as_f32().unwrap(), xh.as_f32().unwrap());
    let mut expected = vec![0.0; 128 * 64];
    for o in 0..128 {
        for s in 0..64 {
            expected[o * 64 + s] = (0..64).map(|i| wv[o * 64 + i] * xv[i * 64 + s]).sum::<f32>();
        }
    }
    // The reference rounds the f32 sum to half once; the loop keeps f32: allow half's rounding.
    let tol = Tolerance { abs: 1e-2, rel: 1e-3 };
    compare(&out[0], &Tensor::f16([1, 128, 1, 64], expected), tol).unwrap();
}

#[test]
fn reference_matmul_examples_run_in_both_dialects() {
    let x = data(256 * 128, 32);
    let w = data(128 * 256, 33);
    for name in ["example2_ios18_matmul.mil", "example4_ios16_matmul.mil"] {
        let parsed = parse_program(&fixture(name)).unwrap();
        let g = to_graph(&parsed, "main", &InMemoryResolver::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = [
            Tensor::f16([1, 1, 256, 128], x.clone()),
            Tensor::f16([1, 1, 128, 256], w.clone()),
        ];
        let out = interpret(&g, &inputs, Precision::F32).unwrap();
        let (xv, wv) = (inputs[0].as_f32().unwrap(), inputs[1].as_f32().unwrap());
        let expected = Tensor::f16([1, 1, 256, 256], matmul_loop(xv, wv, 1, 256, 128, 256, false));
        compare(&out[0], &expected, Tolerance { abs: 1e-2, rel: 1e-3 }).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The weights of `coreml_model.mil`, written in one blob file in declaration order.
fn coreml_weights() -> (BlobDictResolver, [Vec<f32>; 5]) {
    let wte = data(32 * 16, 40);
    let ln_w = positive(16, 41);
    let ln_b = data(16, 42);
    let fc_w = data(64 * 16, 43).iter().map(|v| v * 0.25).collect::<Vec<_>>();
    let fc_b = data(64, 44);
    let mut writer = BlobWriter::new();
    let mut offsets = Vec::new();
    for values in [&wte, &ln_w, &ln_b, &fc_w, &fc_b] {
        offsets.push(writer.write_fp16_from_f32(values).unwrap().0);
    }
    assert_eq!(offsets, [64, 1152, 1280, 1408, 3520], "offsets written in the fixture");
    let mut files = HashMap::new();
    files.insert("@model_path/weights/weight.bin".to_string(), writer.finish());
    let half = |v: &Vec<f32>| Tensor::f16([v.len()], v.clone()).as_f32().unwrap().to_vec();
    (
        BlobDictResolver::new(files),
        [half(&wte), half(&ln_w), half(&ln_b), half(&fc_w), half(&fc_b)],
    )
}

#[test]
fn coreml_style_model_converts_and_runs_with_blob_weights() {
    let (resolver, [wte, ln_w, ln_b, fc_w, fc_b]) = coreml_weights();
    let parsed = parse_program(&fixture("coreml_model.mil")).unwrap();
    let g = to_graph(&parsed, "main", &resolver).unwrap_or_else(|e| panic!("{e}"));
    let ids = vec![3, 0, 31, 7, 7, 1, 2, 30];
    let x = data(8 * 16, 45);
    let out = interpret(
        &g,
        &[Tensor::i32([1, 8], ids.clone()), Tensor::f32([1, 8, 16], x.clone())],
        Precision::F32,
    )
    .unwrap();
    // The same computation by loops in f32 (the program rounds to half after every op).
    let eps = 1.3125 * 2f32.powi(-17);
    let mut hidden = vec![0.0; 8 * 32];
    let mut score = vec![0.0; 8];
    for t in 0..8 {
        let h: Vec<f32> = (0..16).map(|c| wte[ids[t] as usize * 16 + c] + x[t * 16 + c]).collect();
        let mean = h.iter().sum::<f32>() / 16.0;
        let var = h.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 16.0;
        let n: Vec<f32> = (0..16)
            .map(|c| (h[c] - mean) / (var + eps).sqrt() * ln_w[c] + ln_b[c])
            .collect();
        let lin: Vec<f32> = (0..64)
            .map(|o| fc_b[o] + (0..16).map(|c| fc_w[o * 16 + c] * n[c]).sum::<f32>())
            .collect();
        for j in 0..32 {
            let g = lin[32 + j];
            hidden[t * 32 + j] = lin[j] * 0.5 * g * (1.0 + erf(g / 2f32.sqrt()));
        }
        score[t] = hidden[t * 32..t * 32 + 32].iter().sum::<f32>() / 32.0;
    }
    assert_eq!(
        g.outputs().iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["hidden", "score"]
    );
    // Every op rounds to half (u = 2^-11) and intermediates reach |8| before the products that
    // cancel, so single roundings contribute up to 8·u ≈ 4e-3 absolute: abs 1e-2, rel 1e-2.
    let tol = Tolerance { abs: 1e-2, rel: 1e-2 };
    compare(&out[0], &Tensor::f32([1, 8, 32], hidden), tol).unwrap();
    compare(&out[1], &Tensor::f32([1, 8, 1], score), tol).unwrap();
}

#[test]
fn multifunction_fixture_converts_the_requested_function() {
    let parsed = parse_program(&fixture("coreml_multifunction_ios18.mil")).unwrap();
    let g = to_graph(&parsed, "decode", &InMemoryResolver::new()).unwrap();
    let out = interpret(&g, &[Tensor::f16([1, 1, 8], data(8, 50))], Precision::F32).unwrap();
    let expected: Vec<f32> = Tensor::f16([8], data(8, 50))
        .as_f32()
        .unwrap()
        .iter()
        .map(|v| v * 0.5)
        .collect();
    assert_eq!(out[0], Tensor::f16([1, 1, 8], expected));
    // `main` needs stateful ops the IR does not have.
    let err = to_graph(&parsed, "main", &InMemoryResolver::new()).unwrap_err();
    assert!(err.message.contains("state"), "{err}");
    let err = to_graph(&parsed, "prefill", &InMemoryResolver::new()).unwrap_err();
    assert!(err.message.contains("no function 'prefill'"), "{err}");
}

#[test]
fn blob_resolver_checks_files_and_types() {
    let mut writer = BlobWriter::new();
    let offset = writer.write_fp32(&[1.0, 2.0, 3.0]).unwrap();
    let mut files = HashMap::new();
    files.insert("@model_path/w.bin".to_string(), writer.finish());
    let resolver = BlobDictResolver::new(files);
    let fp32 = MilType::tensor(MilDType::Fp32, &[3]);
    assert_eq!(
        resolver.resolve("@model_path/w.bin", offset, &fp32),
        Ok(Tensor::f32([3], vec![1.0, 2.0, 3.0]))
    );
    let wrong_dtype = MilType::tensor(MilDType::Fp16, &[3]);
    assert!(resolver.resolve("@model_path/w.bin", offset, &wrong_dtype).is_err());
    let wrong_shape = MilType::tensor(MilDType::Fp32, &[4]);
    assert!(resolver.resolve("@model_path/w.bin", offset, &wrong_shape).is_err());
    assert!(resolver.resolve("@model_path/w.bin", offset + 64, &fp32).is_err());
    assert!(resolver.resolve("@model_path/other.bin", offset, &fp32).is_err());
}

// ---- errors -------------------------------------------------------------------------------------------

fn conversion_error(params: &str, body: &str, outputs: &str) -> MilError {
    match convert(&program(params, body, outputs)) {
        Ok(_) => panic!("conversion of {body:?} should fail"),
        Err(e) => e,
    }
}

#[test]
fn unsupported_constructs_are_named_with_their_line() {
    let x = "tensor<fp32, [1, 4, 1, 2]> x";
    let x_w3 = "tensor<fp32, [1, 4, 1, 2]> x, tensor<fp32, [4, 4, 3, 3]> w";
    let eye = "tensor<fp32, [4, 4, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp32, [4, 4, 1, 1]>([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])];";
    // (params, body, outputs, expected text in the message, line of the error)
    let cases: Vec<(&str, String, &str, &str, usize)> = vec![
        (x, "tensor<fp32, [1, 4, 1, 2]> y = frobnicate(x = x)[name = string(\"y\")];".into(), "y", "unsupported operation 'frobnicate'", 4),
        (x, "tensor<fp32, [1, 4, 1, 3]> y = relu(x = x)[name = string(\"y\")];".into(), "y", "variable 'y' is declared f32[1,4,1,3] but the operation produces f32[1,4,1,2]", 4),
        (x, "tensor<fp32, [1, 4, 1, 2]> y = relu(x = nope)[name = string(\"y\")];".into(), "y", "'nope' is not defined", 4),
        (x, format!("int32 g = const()[name = string(\"g\"), val = int32(2)];\n{eye}\ntensor<fp32, [1, 4, 1, 2]> y = conv(groups = g, weight = w, x = x)[name = string(\"y\")];"), "y", "groups = 2 is not supported", 6),
        (x_w3, "tensor<fp32, [1, 4, 1, 2]> y = conv(weight = w, x = x)[name = string(\"y\")];".into(), "y", "only [Cout, Cin, 1, 1] (1x1) kernels are supported", 4),
        (x, format!("tensor<int32, [2]> s = const()[name = string(\"s\"), val = tensor<int32, [2]>([2, 1])];\n{eye}\ntensor<fp32, [1, 4, 1, 1]> y = conv(strides = s, weight = w, x = x)[name = string(\"y\")];"), "y", "strides = [2, 1] is not supported", 6),
        (x, "string pt = const()[name = string(\"pt\"), val = string(\"custom\")];\ntensor<int32, [4]> pd = const()[name = string(\"pd\"), val = tensor<int32, [4]>([0, 0, 1, 1])];\ntensor<fp32, [1, 4, 1, 4]> y = conv(pad = pd, pad_type = pt, weight = x, x = x)[name = string(\"y\")];".into(), "y", "weight [1, 4, 1, 2]", 6),
        (x, "tensor<fp32, [4, 4, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp32, [4, 4, 1, 1]>(BLOBFILE(path = string(\"@model_path/w.bin\"), offset = uint64(64)))];".into(), "w", "no weight registered for \"@model_path/w.bin\" at offset 64", 4),
        (x, "fp32 a = reduce_sum(x = x)[name = string(\"a\")];\nfp32 y = reduce_sum(axes = a, x = x)[name = string(\"y\")];".into(), "y", "'a' must be a const", 5),
        (x, "tensor<fp32, [1, 4, 1, 2]> x = relu(x = x)[name = string(\"x\")];".into(), "x", "variable 'x' is defined twice", 4),
        (x, "tensor<fp32, [1, 4, 1, 2]> y = relu(x = x, alpha = x)[name = string(\"y\")];".into(), "y", "unexpected parameter 'alpha'", 4),
        (x, "string m = const()[name = string(\"m\"), val = string(\"FAST\")];\ntensor<fp32, [1, 4, 1, 2]> y = gelu(mode = m, x = x)[name = string(\"y\")];".into(), "y", "unsupported gelu mode 'FAST'", 5),
        (x, "string p = const()[name = string(\"p\"), val = string(\"reflect\")];\ntensor<int32, [2]> w = const()[name = string(\"w\"), val = tensor<int32, [2]>([1, 1])];\ntensor<fp32, [1, 4, 1, 4]> y = pad(mode = p, pad = w, x = x)[name = string(\"y\")];".into(), "y", "mode = 'reflect' is not supported", 6),
        (x, "bool t = const()[name = string(\"t\"), val = bool(true)];\nint32 a = const()[name = string(\"a\"), val = int32(1)];\ntensor<fp32, [1, 8, 1, 2]> y = concat(axis = a, interleave = t, values = (x, x))[name = string(\"y\")];".into(), "y", "interleave = true is not supported", 6),
        (x, "tensor<fp32, [1, 4, 1, 2]> y = relu(x = x)[name = string(\"y\")];".into(), "missing", "returned variable 'missing' is not defined", 3),
    ];
    for (params, body, outputs, needle, line) in cases {
        let err = conversion_error(params, &body, outputs);
        assert!(err.message.contains(needle), "expected {needle:?} in {err}");
        assert_eq!(err.line, line, "{err}");
    }
}

#[test]
fn unknown_op_error_names_the_op_and_the_line() {
    let body = "        tensor<fp32, [2]> a = relu(x = x)[name = string(\"a\")];\n        \
                tensor<fp32, [2]> b = topk(x = a)[name = string(\"b\")];";
    let err = conversion_error("tensor<fp32, [2]> x", body, "b");
    assert_eq!(err.line, 5);
    assert_eq!(err.to_string(), "5: topk 'b': unsupported operation 'topk'");
}

#[test]
fn const_type_must_match_its_declaration() {
    let body = "        tensor<int32, [3]> c = const()[name = string(\"c\"), val = tensor<int32, [2]>([1, 2])];";
    let err = conversion_error("", body, "c");
    assert!(
        err.message.contains("variable 'c' is declared tensor<int32, [3]>"),
        "{err}"
    );
    let body = "        tensor<int32, [3]> c = const()[name = string(\"c\"), val = tensor<int32, [3]>([1, 2])];";
    let err = conversion_error("", body, "c");
    assert!(err.message.contains("2 values given for 3 elements"), "{err}");
}

#[test]
fn parameter_types_without_an_ir_equivalent_are_rejected() {
    let err = conversion_error("tensor<int8, [2]> x", "", "x");
    assert!(
        err.message.contains("parameter 'x'") && err.message.contains("int8"),
        "{err}"
    );
    let err = conversion_error("tensor<fp16, [1, ?]> x", "", "x");
    assert!(err.message.contains("known extents"), "{err}");
}

#[test]
fn graph_inputs_keep_mil_names_and_types() {
    let g = convert(&program(
        "tensor<fp16, [1, 2]> a00_x, tensor<int32, [3]> a01_i, bool a02_f",
        "",
        "a00_x",
    ))
    .unwrap();
    let inputs: Vec<String> = g.inputs().map(|(n, _, t)| format!("{n}: {t}")).collect();
    assert_eq!(inputs, ["a00_x: f16[1,2]", "a01_i: i32[3]", "a02_f: bool[]"]);
    assert!(g.nodes().iter().all(|n| matches!(n.op, Op::Input { .. })));
}
