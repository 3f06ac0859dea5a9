//! Lowering, op by op: for every IR op the lowering accepts, a small graph is lowered for m4 (ios18)
//! and m1 (ios16), with constants baked and as inputs; the printed MIL is parsed, converted back to IR
//! with the emitted weight dictionary and interpreted in fp16 rounding, and must agree with the
//! reference interpreter on the original graph (fp16 rounding, `Tolerance::F16`: both sides round every
//! op to half; they differ only where the lowering adds exact rewrites such as padding or `x + 0`).
//! Ops the ANE cannot run must fail with an error that says so.
//!
//! On a Mac, `ORION_DEVICE_TESTS=1 cargo test -p orion-ane --test lower_ops` also runs every one of these
//! graphs on the real ANE through `AneBackend` (weights baked and as inputs) against the same fp16
//! reference: the "every op on the device" check. Not run on hardware by the project.

mod lower_support;

use lower_support::{check_lowering, data, inputs_for, lint_errors, m1, m4, tensor_for};
use orion_ane::lower::{lower, IoDType, LowerOptions, WeightMode};
use orion_ane::mil::Dialect;
use orion_ane::profile::ChipProfile;
use orion_ane::AneError;
use orion_core::interp::tolerance::Tolerance;
use orion_core::{BinaryOp, CompareOp, DType, Graph, ReduceOp, Tensor, TensorType, UnaryOp, ValueId};

type Build = fn(&mut Graph) -> orion_core::Result<()>;

fn build(name: &str, f: Build) -> Graph {
    let mut g = Graph::new(name);
    f(&mut g).unwrap_or_else(|e| panic!("building {name}: {e}"));
    g
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> orion_core::Result<ValueId> {
    g.input(name, TensorType::new(DType::F32, dims.to_vec()))
}

fn constant(g: &mut Graph, dims: &[usize], seed: u32) -> orion_core::Result<ValueId> {
    let n = dims.iter().product();
    g.constant(Tensor::f32(dims.to_vec(), data(n, seed)))
}

/// Lowers `graph` for m4 and m1, weights baked and as inputs, and checks every output.
fn check_all(graph: &Graph) {
    check_inputs(graph, &inputs_for(graph, 7));
}

fn check_inputs(graph: &Graph, inputs: &[Tensor]) {
    for profile in [m4(), m1()] {
        for weights in [WeightMode::Baked, WeightMode::Inputs] {
            let options = LowerOptions {
                weights,
                ..LowerOptions::default()
            };
            let program = check_lowering(graph, inputs, &profile, &options, Tolerance::F16);
            let expected = if profile.id.as_str() == "m4" {
                Dialect::Ios18
            } else {
                Dialect::Ios16
            };
            assert_eq!(program.dialect, expected);
        }
    }
    on_the_real_device(graph, inputs);
}

/// With `ORION_DEVICE_TESTS` set on Apple platforms: `graph` on the real ANE agrees with the fp16
/// reference interpreter, weights baked and as inputs.
#[cfg(target_vendor = "apple")]
fn on_the_real_device(graph: &Graph, inputs: &[Tensor]) {
    use orion_ane::backend::AneBackend;
    use orion_ane::device::macos::{host_info, RealAne};
    use orion_core::backend::Backend;
    use orion_core::interp::tolerance::compare;
    use orion_core::interp::{interpret, Precision};
    use std::sync::Arc;
    if std::env::var_os("ORION_DEVICE_TESTS").is_none() {
        return;
    }
    let chip = host_info().chip().expect("a known M-series chip");
    let profile = ChipProfile::builtin(chip.as_str()).expect("built-in profile");
    let uses_sin_or_cos = graph
        .nodes()
        .iter()
        .any(|n| matches!(n.op, orion_core::Op::Unary(UnaryOp::Sin | UnaryOp::Cos)));
    if uses_sin_or_cos && !profile.limits.ops.sin_cos {
        return; // refused before the device on this chip (C31), as tested on every platform
    }
    let device = Arc::new(RealAne::open(profile).unwrap_or_else(|e| panic!("cannot open the ANE: {e}")));
    let expected = interpret(graph, inputs, Precision::F16Rounding).expect("reference interpreter");
    for weights in [WeightMode::Baked, WeightMode::Inputs] {
        let options = LowerOptions {
            weights,
            ..LowerOptions::default()
        };
        let backend = AneBackend::new(device.clone(), options);
        let actual = backend
            .compile(graph)
            .and_then(|exe| exe.run(inputs))
            .unwrap_or_else(|e| panic!("{} on the ANE ({weights:?}): {e}", graph.name()));
        for ((a, e), out) in actual.iter().zip(&expected).zip(graph.outputs()) {
            if let Err(msg) = compare(a, e, Tolerance::F16) {
                panic!("{} output {:?} on the ANE ({weights:?}): {msg}", graph.name(), out.name);
            }
        }
    }
}

#[cfg(not(target_vendor = "apple"))]
fn on_the_real_device(_graph: &Graph, _inputs: &[Tensor]) {}

/// Positive inputs for ops defined on (0, ∞).
fn positive_inputs(graph: &Graph) -> Vec<Tensor> {
    inputs_for(graph, 3)
        .into_iter()
        .map(|t| {
            Tensor::f32(
                t.shape().dims().to_vec(),
                t.to_f32_vec().iter().map(|v| v.abs() + 0.5).collect(),
            )
        })
        .collect()
}

fn lower_error(graph: &Graph, profile: &ChipProfile, options: &LowerOptions) -> String {
    match lower(graph, profile, options) {
        Err(e @ AneError::Lower { .. }) => e.to_string(),
        Err(other) => panic!("expected a lowering error, got {other}"),
        Ok(p) => panic!("expected a lowering error, got a program:\n{}", p.mil_text),
    }
}

fn sin_and_cos_graph() -> Graph {
    build("sin_cos", |g| {
        let x = input(g, "x", &[4, 8])?;
        let s = g.unary(UnaryOp::Sin, x)?;
        let c = g.unary(UnaryOp::Cos, x)?;
        g.set_output("s", s)?;
        g.set_output("c", c)
    })
}

#[test]
fn sin_and_cos_lower_from_m3_and_are_refused_before() {
    let g = sin_and_cos_graph();
    let inputs = inputs_for(&g, 5);
    for chip in ["m3", "m4", "m5"] {
        let profile = ChipProfile::builtin(chip).unwrap();
        let program = check_lowering(&g, &inputs, &profile, &LowerOptions::default(), Tolerance::F16);
        assert!(
            program.mil_text.contains(" sin(") && program.mil_text.contains(" cos("),
            "{chip}"
        );
    }
    for chip in ["m1", "m2"] {
        let program = lower(&g, &ChipProfile::builtin(chip).unwrap(), &LowerOptions::default()).unwrap();
        let errors = lint_errors(&program.lint).join("\n");
        assert!(
            errors.contains("C31") && errors.contains("sin") && errors.contains("cos"),
            "{chip}: {errors}"
        );
    }
    on_the_real_device(&g, &inputs);
}

// ---- matmul and conv ---------------------------------------------------------------------------

#[test]
fn matmul_of_two_inputs_pads_the_contraction() {
    let g = build("matmul", |g| {
        let a = input(g, "a", &[4, 40])?;
        let b = input(g, "b", &[40, 8])?;
        let y = g.matmul(a, b, false, false)?;
        g.set_output("y", y)
    });
    check_all(&g);
    let program = lower(&g, &m1(), &LowerOptions::default()).unwrap();
    assert!(
        program.mil_text.contains("= pad("),
        "K = 40 must be padded to 64:\n{}",
        program.mil_text
    );
    assert!(
        program.mil_text.contains("tensor<fp16, [1, 1, 4, 64]>"),
        "{}",
        program.mil_text
    );
}

#[test]
fn matmul_transposes_and_batches() {
    let g = build("matmul_t", |g| {
        let a = input(g, "a", &[2, 8, 4])?;
        let b = input(g, "b", &[6, 8])?;
        let y = g.matmul(a, b, true, true)?;
        g.set_output("y", y)
    });
    check_all(&g);
    let g = build("matmul_batch", |g| {
        let a = input(g, "a", &[2, 3, 4, 32])?;
        let b = input(g, "b", &[1, 3, 32, 5])?;
        let y = g.matmul(a, b, false, false)?;
        g.set_output("y", y)
    });
    check_all(&g);
}

#[test]
fn linear_with_constant_weight_becomes_conv_when_baked() {
    let g = build("linear", |g| {
        let x = input(g, "x", &[4, 8])?;
        let w = constant(g, &[6, 8], 11)?;
        let y = g.matmul(x, w, false, true)?;
        g.set_output("y", y)
    });
    check_all(&g);
    let baked = lower(&g, &m4(), &LowerOptions::default()).unwrap();
    assert!(baked.mil_text.contains("= conv("), "{}", baked.mil_text);
    assert!(!baked.mil_text.contains("matmul"), "{}", baked.mil_text);
    assert!(
        baked.mil_text.contains("tensor<fp16, [6, 8, 1, 1]>"),
        "{}",
        baked.mil_text
    );
    assert_eq!(baked.weights.len(), 1);
    let mut matmul_chip = m4();
    matmul_chip.limits.ops.baked_linear_as_conv = false;
    let as_matmul = lower(&g, &matmul_chip, &LowerOptions::default()).unwrap();
    assert!(as_matmul.mil_text.contains("= matmul("), "{}", as_matmul.mil_text);
    assert!(!as_matmul.mil_text.contains("= conv("), "{}", as_matmul.mil_text);
    let as_inputs = lower(
        &g,
        &m4(),
        &LowerOptions {
            weights: WeightMode::Inputs,
            ..LowerOptions::default()
        },
    )
    .unwrap();
    assert!(as_inputs.mil_text.contains("= matmul("), "{}", as_inputs.mil_text);
    assert!(as_inputs.weights.is_empty());
    assert_eq!(as_inputs.inputs.len(), 2);
    assert_eq!(as_inputs.inputs[1].ir_name, "%1");
}

#[test]
fn matmul_with_constant_in_other_orientations() {
    let g = build("linear_kn", |g| {
        let x = input(g, "x", &[4, 8])?;
        let w = constant(g, &[8, 6], 12)?;
        let y = g.matmul(x, w, false, false)?;
        let xt = input(g, "xt", &[8, 4])?;
        let w2 = constant(g, &[6, 8], 13)?;
        let y2 = g.matmul(xt, w2, true, true)?;
        let lhs = constant(g, &[3, 4], 14)?;
        let y3 = g.matmul(lhs, x, false, false)?;
        g.set_output("y", y)?;
        g.set_output("y2", y2)?;
        g.set_output("y3", y3)
    });
    check_all(&g);
}

#[test]
fn conv1x1_with_baked_and_runtime_weights() {
    let g = build("conv", |g| {
        let x = input(g, "x", &[1, 8, 1, 4])?;
        let w = constant(g, &[6, 8, 1, 1], 21)?;
        let y = g.conv1x1(x, w)?;
        let w2 = input(g, "w2", &[3, 6, 1, 1])?;
        let y2 = g.conv1x1(y, w2)?;
        g.set_output("y", y2)
    });
    check_all(&g);
}

// ---- elementwise -------------------------------------------------------------------------------

#[test]
fn unary_ops() {
    // sin and cos exist only from M3 on: `sin_and_cos_lower_from_m3_and_are_refused_before`.
    for u in UnaryOp::ALL
        .into_iter()
        .filter(|u| !matches!(u, UnaryOp::Sin | UnaryOp::Cos))
    {
        let positive = matches!(u, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal);
        let mut g = Graph::new(format!("unary_{}", u.name()));
        let x = input(&mut g, "x", &[4, 8]).unwrap();
        let y = g.unary(u, x).unwrap();
        g.set_output("y", y).unwrap();
        let inputs = if positive {
            positive_inputs(&g)
        } else {
            inputs_for(&g, 5)
        };
        check_inputs(&g, &inputs);
    }
}

#[test]
fn binary_ops_broadcast_with_inputs_and_constants() {
    for b in BinaryOp::ALL {
        let mut g = Graph::new(format!("binary_{}", b.name()));
        let x = input(&mut g, "x", &[4, 8]).unwrap();
        let y = input(&mut g, "y", &[8]).unwrap();
        let r1 = g.binary(b, x, y).unwrap();
        let c = g.scalar(1.5, DType::F32).unwrap();
        let r2 = g.binary(b, r1, c).unwrap();
        let c2 = g.scalar(0.75, DType::F32).unwrap();
        let r3 = g.binary(b, c2, x).unwrap();
        let row = constant(&mut g, &[1, 8], 31).unwrap();
        let r4 = g.binary(b, x, row).unwrap();
        for (name, v) in [("r1", r1), ("r2", r2), ("r3", r3), ("r4", r4)] {
            g.set_output(name, v).unwrap();
        }
        let inputs = positive_inputs(&g);
        check_inputs(&g, &inputs);
    }
}

#[test]
fn compare_select_and_bool_cast() {
    for c in CompareOp::ALL {
        let mut g = Graph::new(format!("compare_{}", c.name()));
        let x = input(&mut g, "x", &[4, 8]).unwrap();
        let y = input(&mut g, "y", &[8]).unwrap();
        let mask = g.compare(c, x, y).unwrap();
        let picked = g.select(mask, x, y).unwrap();
        let as_float = g.cast(mask, DType::F32).unwrap();
        let half = g.scalar(0.5, DType::F32).unwrap();
        let zero_one = g.compare(c, x, half).unwrap();
        let chosen = g.select(zero_one, half, x).unwrap();
        g.set_output("picked", picked).unwrap();
        g.set_output("as_float", as_float).unwrap();
        g.set_output("chosen", chosen).unwrap();
        let mut inputs = inputs_for(&g, 9);
        // Make some elements equal so that equal/less_equal/greater_equal see ties.
        let mut xs = inputs[0].to_f32_vec();
        let ys = inputs[1].to_f32_vec();
        xs[..8].copy_from_slice(&ys);
        inputs[0] = Tensor::f32([4, 8], xs);
        check_inputs(&g, &inputs);
    }
}

// ---- reductions, softmax -----------------------------------------------------------------------

#[test]
fn softmax_on_every_axis() {
    let g = build("softmax", |g| {
        let x = input(g, "x", &[4, 8])?;
        let a = g.softmax(x, 0)?;
        let b = g.softmax(x, 1)?;
        let x3 = input(g, "x3", &[2, 3, 4])?;
        let c = g.softmax(x3, 1)?;
        g.set_output("a", a)?;
        g.set_output("b", b)?;
        g.set_output("c", c)
    });
    check_all(&g);
}

#[test]
fn reductions_with_and_without_kept_axes() {
    for op in ReduceOp::ALL {
        let mut g = Graph::new(op.name());
        let x = input(&mut g, "x", &[3, 4, 8]).unwrap();
        let outs = [
            g.reduce(op, x, &[-1], true).unwrap(),
            g.reduce(op, x, &[-1], false).unwrap(),
            g.reduce(op, x, &[0, 2], false).unwrap(),
            g.reduce(op, x, &[0, 1, 2], false).unwrap(),
            g.reduce(op, x, &[1], true).unwrap(),
        ];
        for (i, v) in outs.into_iter().enumerate() {
            g.set_output(format!("r{i}"), v).unwrap();
        }
        check_all(&g);
    }
}

// ---- shape ops ---------------------------------------------------------------------------------

#[test]
fn reshape_and_transpose() {
    let g = build("shapes", |g| {
        let x = input(g, "x", &[4, 8])?;
        let r = g.reshape(x, &[2, 16])?;
        let r3 = g.reshape(x, &[2, 4, 4])?;
        let t = g.transpose(x, &[1, 0])?;
        let t3 = g.transpose(r3, &[2, 0, 1])?;
        let e = g.unary(UnaryOp::Exp, t3)?;
        let back = g.transpose(e, &[1, 2, 0])?;
        g.set_output("r", r)?;
        g.set_output("t", t)?;
        g.set_output("t3", t3)?;
        g.set_output("back", back)
    });
    check_all(&g);
}

#[test]
fn slice_split_and_pad() {
    let g = build("slices", |g| {
        let x = input(g, "x", &[4, 8])?;
        let s = g.slice(x, &[1, 2], &[3, 7])?;
        let parts = g.split(x, -1, &[3, 5])?;
        let rows = g.split(x, 0, &[1, 3])?;
        let p = g.pad(x, &[1, 0], &[0, 3], 0.0)?;
        let p2 = g.pad(x, &[0, 2], &[1, 1], -2.5)?;
        g.set_output("s", s)?;
        g.set_output("p0", parts[0])?;
        g.set_output("p1", parts[1])?;
        g.set_output("rows1", rows[1])?;
        g.set_output("pad", p)?;
        g.set_output("pad2", p2)
    });
    check_all(&g);
}

fn concat_graph() -> Graph {
    build("concat", |g| {
        let x = input(g, "x", &[4, 8])?;
        let y = input(g, "y", &[4, 3])?;
        let z = input(g, "z", &[2, 8])?;
        let last = g.concat(&[x, y, x], -1)?;
        let first = g.concat(&[x, z], 0)?;
        // RoPE's rotate_half: [-x2, x1] on the last axis.
        let halves = g.split(x, -1, &[4, 4])?;
        let neg = g.unary(UnaryOp::Neg, halves[1])?;
        let rotated = g.concat(&[neg, halves[0]], -1)?;
        g.set_output("last", last)?;
        g.set_output("first", first)?;
        g.set_output("rotated", rotated)
    })
}

#[test]
fn concat_is_rewritten_where_the_chip_rejects_it() {
    let g = concat_graph();
    check_all(&g);
    let program = lower(&g, &m4(), &LowerOptions::default()).unwrap();
    assert!(!program.mil_text.contains("concat("), "{}", program.mil_text);
    assert!(program.mil_text.contains("= pad("), "{}", program.mil_text);
}

#[test]
fn concat_is_native_where_the_chip_accepts_it() {
    let g = concat_graph();
    let mut profile = m4();
    profile.limits.ops.concat = true;
    let program = check_lowering(
        &g,
        &inputs_for(&g, 4),
        &profile,
        &LowerOptions::default(),
        Tolerance::F16,
    );
    assert!(program.mil_text.contains("= concat("), "{}", program.mil_text);
}

#[test]
fn broadcast_cast_select_identity() {
    let g = build("misc", |g| {
        let col = input(g, "col", &[4, 1])?;
        let row = input(g, "row", &[8])?;
        let b1 = g.broadcast(col, &[4, 8])?;
        let b2 = g.broadcast(row, &[3, 8])?;
        let h = g.cast(b1, DType::F16)?;
        let f = g.cast(h, DType::F32)?;
        let id = g.identity(f)?;
        let x = input(g, "x", &[4, 8])?;
        let zero = g.scalar(0.0, DType::F32)?;
        let positive = g.compare(CompareOp::Greater, row, zero)?;
        let s = g.select(positive, x, b1)?;
        g.set_output("b1", id)?;
        g.set_output("b2", b2)?;
        g.set_output("s", s)
    });
    check_all(&g);
}

#[test]
fn f16_graphs_constant_outputs_and_pass_through() {
    let g = build("f16", |g| {
        let x = g.input("x", TensorType::new(DType::F16, vec![4, 8]))?;
        let c = g.constant(Tensor::f16([2, 8], data(16, 41)))?;
        let e = g.unary(UnaryOp::Tanh, x)?;
        g.set_output("e", e)?;
        g.set_output("c", c)?;
        g.set_output("x_again", x)?;
        g.set_output("e_again", e)
    });
    check_all(&g);
}

#[test]
fn fp32_surfaces_where_the_chip_allows_them() {
    let g = build("fp32_io", |g| {
        let x = input(g, "x", &[4, 32])?;
        let w = constant(g, &[16, 32], 51)?;
        let y = g.matmul(x, w, false, true)?;
        let y = g.unary(UnaryOp::Relu, y)?;
        g.set_output("y", y)
    });
    let options = LowerOptions {
        io_dtype: Some(IoDType::F32),
        ..LowerOptions::default()
    };
    let program = check_lowering(&g, &inputs_for(&g, 2), &m4(), &options, Tolerance::F16);
    assert_eq!(program.inputs[0].surface_dtype, DType::F32);
    assert!(
        program.mil_text.contains("tensor<fp32, [1, 32, 1, 4]> a00_x"),
        "{}",
        program.mil_text
    );
    let err = lower_error(&g, &m1(), &options);
    assert!(err.contains("C16"), "{err}");
}

// ---- refused ops and limits --------------------------------------------------------------------

#[test]
fn cpu_only_ops_are_refused_with_a_reason() {
    let gather = build("gather", |g| {
        let table = input(g, "table", &[10, 8])?;
        let ids = g.input("ids", TensorType::new(DType::I32, vec![4]))?;
        let rows = g.gather(table, ids)?;
        g.set_output("rows", rows)
    });
    let scatter = build("scatter", |g| {
        let ids = g.input("ids", TensorType::new(DType::I32, vec![4]))?;
        let upd = input(g, "upd", &[4, 8])?;
        let table = g.scatter_add_rows(ids, upd, 10)?;
        g.set_output("table", table)
    });
    let to_int = build("to_int", |g| {
        let x = input(g, "x", &[4, 8])?;
        let i = g.cast(x, DType::I32)?;
        let f = g.cast(i, DType::F32)?;
        g.set_output("f", f)
    });
    let to_bool = build("to_bool", |g| {
        let x = input(g, "x", &[4, 8])?;
        let b = g.cast(x, DType::Bool)?;
        let f = g.cast(b, DType::F32)?;
        g.set_output("f", f)
    });
    let int_compare = build("int_compare", |g| {
        let x = input(g, "x", &[4, 8])?;
        let i = g.constant(Tensor::i32([8], (0..8).collect()))?;
        let j = g.constant(Tensor::i32([8], (0..8).rev().collect()))?;
        let m = g.compare(CompareOp::Less, i, j)?;
        let y = g.select(m, x, x)?;
        g.set_output("y", y)
    });
    let cases = [
        (gather, "gather"),
        (scatter, "scatter_add_rows"),
        (to_int, "cast f32 -> i32"),
        (to_bool, "cast f32 -> bool"),
        (int_compare, "int32"),
    ];
    for (g, what) in cases {
        for profile in [m4(), m1()] {
            let err = lower_error(&g, &profile, &LowerOptions::default());
            assert!(
                err.contains(what) && err.contains("runs on the CPU instead") && err.contains("C31"),
                "{}: {err}",
                g.name()
            );
        }
    }
}

#[test]
fn dead_cpu_only_ops_do_not_block_the_program() {
    let g = build("dead_gather", |g| {
        let x = input(g, "x", &[4, 8])?;
        let ids = g.input("ids", TensorType::new(DType::I32, vec![2]))?;
        let _unused = g.gather(x, ids)?;
        let y = g.unary(UnaryOp::Exp, x)?;
        g.set_output("y", y)
    });
    let program = check_lowering(&g, &inputs_for(&g, 1), &m4(), &LowerOptions::default(), Tolerance::F16);
    assert_eq!(program.inputs.len(), 1, "the dead int32 input gets no surface");
}

#[test]
fn rank_above_four_and_extents_over_caps_are_refused() {
    let rank5 = build("rank5", |g| {
        let x = input(g, "x", &[2, 8])?;
        let r = g.reshape(x, &[1, 2, 2, 2, 2])?;
        let e = g.unary(UnaryOp::Exp, r)?;
        let back = g.reshape(e, &[2, 8])?;
        g.set_output("y", back)
    });
    let err = lower_error(&rank5, &m4(), &LowerOptions::default());
    assert!(err.contains("rank 5") && err.contains("%1"), "{err}");

    let wide = build("wide", |g| {
        let x = input(g, "x", &[2, 70_000])?;
        let e = g.unary(UnaryOp::Exp, x)?;
        g.set_output("y", e)
    });
    let err = lower_error(&wide, &m4(), &LowerOptions::default());
    assert!(err.contains("C26") && err.contains("max_channels"), "{err}");
    let long = build("long", |g| {
        let x = input(g, "x", &[20_000, 2])?;
        let e = g.unary(UnaryOp::Exp, x)?;
        g.set_output("y", e)
    });
    let err = lower_error(&long, &m1(), &LowerOptions::default());
    assert!(err.contains("C26") && err.contains("max_spatial"), "{err}");
    assert!(lower(&long, &m4(), &LowerOptions::default()).is_ok(), "65,536 on M4");
}

#[test]
fn int_and_bool_surfaces_are_refused() {
    let g = build("bool_out", |g| {
        let x = input(g, "x", &[4, 8])?;
        let zero = g.scalar(0.0, DType::F32)?;
        let m = g.compare(CompareOp::Less, x, zero)?;
        g.set_output("m", m)
    });
    let err = lower_error(&g, &m4(), &LowerOptions::default());
    assert!(err.contains("output \"m\"") && err.contains("bool"), "{err}");
}

// ---- I/O description ---------------------------------------------------------------------------

#[test]
fn io_descriptions_name_order_and_size_surfaces() {
    let g = build("io", |g| {
        let x = input(g, "X.in", &[4, 8])?;
        let bias = input(g, "bias", &[8])?;
        let t = input(g, "t3", &[2, 3, 4])?;
        let y = g.add(x, bias)?;
        let s = g.reduce(ReduceOp::Sum, t, &[0, 1, 2], true)?;
        g.set_output("y", y)?;
        g.set_output("Sum", s)
    });
    let profile = m4();
    let program = lower(&g, &profile, &LowerOptions::default()).unwrap();
    let names: Vec<&str> = program.inputs.iter().map(|d| d.mil_name.as_str()).collect();
    assert_eq!(names, ["a00_x_in", "a01_bias", "a02_t3"]);
    let outs: Vec<&str> = program.outputs.iter().map(|d| d.mil_name.as_str()).collect();
    assert_eq!(outs, ["z00_y", "z01_sum"]);
    assert_eq!(program.inputs[0].mil_shape, [1, 8, 1, 4]);
    assert_eq!(program.inputs[1].mil_shape, [1, 1, 1, 8]);
    assert_eq!(program.inputs[2].mil_shape, [1, 1, 1, 24]);
    assert_eq!(program.inputs[0].dense_bytes, 64);
    for d in program.inputs.iter().chain(&program.outputs) {
        assert_eq!(d.surface_bytes, profile.limits.min_surface_bytes, "{}", d.mil_name);
    }
    let func = &program.program.functions[0];
    let params: Vec<&str> = func.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(params, names, "declaration order = description order");
    assert_eq!(func.outputs, outs);
    check_inputs(&g, &inputs_for(&g, 8));
}

#[test]
fn large_surfaces_are_sized_to_the_largest_of_their_side() {
    let g = build("big", |g| {
        let x = input(g, "x", &[64, 512])?;
        let y = input(g, "y", &[512])?;
        let s = g.add(x, y)?;
        g.set_output("s", s)
    });
    let program = lower(&g, &m4(), &LowerOptions::default()).unwrap();
    assert_eq!(program.inputs[0].dense_bytes, 64 * 512 * 2);
    assert_eq!(program.inputs[1].dense_bytes, 1024);
    assert!(program.inputs.iter().all(|d| d.surface_bytes == 64 * 512 * 2));
    let mut not_uniform = m4();
    not_uniform.limits.uniform_io_sizes = false;
    let program = lower(&g, &not_uniform, &LowerOptions::default()).unwrap();
    assert_eq!(program.inputs[1].surface_bytes, not_uniform.limits.min_surface_bytes);
}

#[test]
fn output_is_deterministic_and_weights_are_one_record_per_file() {
    let g = build("det", |g| {
        let x = input(g, "x", &[4, 16])?;
        let w1 = constant(g, &[32, 16], 61)?;
        let w2 = constant(g, &[16, 32], 62)?;
        let h = g.matmul(x, w1, false, true)?;
        let h = g.unary(UnaryOp::Relu, h)?;
        let y = g.matmul(h, w2, false, true)?;
        g.set_output("y", y)
    });
    let a = lower(&g, &m4(), &LowerOptions::default()).unwrap();
    let b = lower(&g, &m4(), &LowerOptions::default()).unwrap();
    assert_eq!(a.mil_text, b.mil_text);
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.weights.len(), 2);
    for (path, bytes) in &a.weights {
        assert!(
            path.starts_with("@model_path/weights/") && path.ends_with(".bin"),
            "{path}"
        );
        let file = orion_ane::blob::BlobFile::parse(bytes).unwrap();
        assert_eq!(file.records().len(), 1);
        assert_eq!(file.records()[0].offset, 64);
        assert!(a.mil_text.contains(&format!("\"{path}\"")), "{path}");
    }
    // Different weight values give different file names (content hash, ane.md §1).
    let mut g2 = Graph::new("det");
    let x = input(&mut g2, "x", &[4, 16]).unwrap();
    let w1 = constant(&mut g2, &[32, 16], 71).unwrap();
    let w2 = constant(&mut g2, &[16, 32], 62).unwrap();
    let h = g2.matmul(x, w1, false, true).unwrap();
    let h = g2.unary(UnaryOp::Relu, h).unwrap();
    let y = g2.matmul(h, w2, false, true).unwrap();
    g2.set_output("y", y).unwrap();
    let c = lower(&g2, &m4(), &LowerOptions::default()).unwrap();
    let a_keys: Vec<&String> = a.weights.keys().collect();
    let c_keys: Vec<&String> = c.weights.keys().collect();
    assert_ne!(a_keys[0], c_keys[0]);
    assert_eq!(a_keys[1], c_keys[1]);
    let _ = tensor_for;
}
