//! Lint, rule by rule: each test lints a hand-written program that breaks one catalogue rule and finds
//! the violation with that id and severity, and finds no violation of that id in the programs the
//! lowering emits for the same chip (a set of small graphs covering linears, padding, the concat
//! rewrite, fp32 I/O, blocks).

mod lower_support;

use std::collections::BTreeMap;

use lower_support::{data, m1, m4};
use orion_ane::blob::BlobWriter;
use orion_ane::lint::{has_errors, lint, Severity, Violation};
use orion_ane::lower::{lower, EmittedProgram, IoDType, LowerOptions, WeightMode};
use orion_ane::mil::parse_program;
use orion_ane::profile::ChipProfile;
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::{DType, Graph, Tensor, TensorType, UnaryOp};

const IOS18_HEAD: &str = "program(1.3)\n{\n    func main<ios18>";
const IOS16_HEAD: &str = "program(1.0)\n{\n    func main<ios16>";

/// A one-function program in the dialect of `profile` (ios18 text for m4, ios16 for m1).
fn text(profile: &ChipProfile, params: &str, body: &str, outputs: &str) -> String {
    let head = if profile.id.as_str() == "m1" {
        IOS16_HEAD
    } else {
        IOS18_HEAD
    };
    format!("{head}({params}) {{\n{body}\n    }} -> ({outputs});\n}}\n")
}

fn lint_text(source: &str, weights: &BTreeMap<String, Vec<u8>>, profile: &ChipProfile) -> Vec<Violation> {
    let program = parse_program(source).unwrap_or_else(|e| panic!("{e}\n{source}"));
    lint(&program, weights, profile)
}

fn found(violations: &[Violation], rule: &str, severity: Severity) -> bool {
    violations.iter().any(|v| v.rule == rule && v.severity == severity)
}

fn assert_found(violations: &[Violation], rule: &str, severity: Severity) {
    assert!(
        found(violations, rule, severity),
        "expected {rule} {severity:?} among {violations:#?}"
    );
}

/// Programs the lowering emits for `profile`: a baked linear stack, a runtime matmul with an unaligned
/// contraction, the concat rewrite, rank-3 shape ops, GPT-2 and Llama blocks (baked and as inputs), and
/// fp32 I/O where the chip allows it.
fn emitted(profile: &ChipProfile) -> Vec<EmittedProgram> {
    let mut graphs = Vec::new();
    let mut g = Graph::new("mlp");
    let x = g.input("x", TensorType::new(DType::F32, vec![32, 40])).unwrap();
    let w1 = g.constant(Tensor::f32([64, 40], data(64 * 40, 1))).unwrap();
    let w2 = g.input("w2", TensorType::new(DType::F32, vec![40, 64])).unwrap();
    let h = g.matmul(x, w1, false, true).unwrap();
    let h = g.unary(UnaryOp::Relu, h).unwrap();
    let y = g.matmul(h, w2, false, true).unwrap();
    let halves = g.split(y, -1, &[20, 20]).unwrap();
    let rotated = g.concat(&[halves[1], halves[0]], -1).unwrap();
    let r3 = g.reshape(rotated, &[4, 8, 40]).unwrap();
    let t3 = g.transpose(r3, &[1, 0, 2]).unwrap();
    let s = g.softmax(t3, -1).unwrap();
    g.set_output("y", s).unwrap();
    graphs.push(g);
    graphs.push(gpt2_block(&BlockConfig::tiny()).unwrap());
    graphs.push(llama_block(&BlockConfig::tiny()).unwrap());
    let mut out = Vec::new();
    for g in &graphs {
        for weights in [WeightMode::Baked, WeightMode::Inputs] {
            let options = LowerOptions {
                weights,
                ..LowerOptions::default()
            };
            out.push(lower(g, profile, &options).expect("lowering"));
            if profile.limits.ops.fp32_io_cast {
                let fp32 = LowerOptions {
                    io_dtype: Some(IoDType::F32),
                    ..options
                };
                out.push(lower(g, profile, &fp32).expect("lowering"));
            }
        }
    }
    out
}

/// No program the lowering emits for m1 or m4 breaks `rule` (at any severity), and lint's findings
/// stored in the program equal a fresh lint of the program.
fn assert_absent_from_lowering(rule: &str) {
    for profile in [m1(), m4()] {
        for p in emitted(&profile) {
            let again = lint(&p.program, &p.weights, &profile);
            assert_eq!(again, p.lint);
            assert!(!has_errors(&again), "{}: {:#?}", p.name, again);
            let hits: Vec<&Violation> = again.iter().filter(|v| v.rule == rule).collect();
            assert!(
                hits.is_empty(),
                "{} on {}: {hits:#?}\n{}",
                p.name,
                profile.id,
                p.mil_text
            );
        }
    }
}

fn one_record(values: &[f32]) -> Vec<u8> {
    let mut w = BlobWriter::new();
    w.write_fp16_from_f32(values).unwrap();
    w.finish()
}

#[test]
fn c12_inline_non_tensor_arguments() {
    let p = m4();
    let body = "        tensor<fp16, [1, 1, 4, 4]> z00_y = matmul(transpose_x = false, transpose_y = bool(false), x = a00_x, y = a00_x)[name = string(\"z00_y\")];";
    let v = lint_text(
        &text(&p, "tensor<fp16, [1, 1, 4, 4]> a00_x", body, "z00_y"),
        &BTreeMap::new(),
        &p,
    );
    assert_found(&v, "C12", Severity::Error);
    assert_eq!(
        v.iter().filter(|v| v.rule == "C12").count(),
        2,
        "one per inline argument"
    );
    assert_absent_from_lowering("C12");
}

#[test]
fn c14_return_names_must_be_live() {
    let p = m4();
    let body = "        tensor<fp16, [1, 1, 1, 64]> v0 = relu(x = a00_x)[name = string(\"v0\")];";
    let v = lint_text(
        &text(&p, "tensor<fp16, [1, 1, 1, 64]> a00_x", body, "v0, z00_gone, v0"),
        &BTreeMap::new(),
        &p,
    );
    let c14: Vec<&Violation> = v.iter().filter(|v| v.rule == "C14").collect();
    assert_eq!(c14.len(), 2, "{c14:#?}");
    assert!(c14[0].message.contains("z00_gone") && c14[1].message.contains("more than once"));
    assert_absent_from_lowering("C14");
}

fn conv_text(p: &ChipProfile, bias: bool, weight_shape: &str, groups: i32, runtime_weight: bool) -> String {
    let s = |v: &str| {
        if p.id.as_str() == "m1" {
            format!("tensor<string, []>(\"{v}\")")
        } else {
            format!("string(\"{v}\")")
        }
    };
    let int = |v: i32| {
        if p.id.as_str() == "m1" {
            format!(
                "tensor<int32, []> c_gr = const()[name = {}, val = tensor<int32, []>({v})];",
                s("c_gr")
            )
        } else {
            format!("int32 c_gr = const()[name = {}, val = int32({v})];", s("c_gr"))
        }
    };
    let string_ty = if p.id.as_str() == "m1" {
        "tensor<string, []>"
    } else {
        "string"
    };
    let mut body = vec![
        format!(
            "        {string_ty} c_pt = const()[name = {}, val = {}];",
            s("c_pt"),
            s("valid")
        ),
        format!(
            "        tensor<int32, [2]> c_st = const()[name = {}, val = tensor<int32, [2]>([1, 1])];",
            s("c_st")
        ),
        format!(
            "        tensor<int32, [4]> c_pd = const()[name = {}, val = tensor<int32, [4]>([0, 0, 0, 0])];",
            s("c_pd")
        ),
        format!("        {}", int(groups)),
    ];
    let mut params = "tensor<fp16, [1, 4, 1, 32]> a00_x".to_string();
    if runtime_weight {
        params.push_str(&format!(", tensor<fp16, {weight_shape}> a01_w"));
    } else {
        body.push(format!(
            "        tensor<fp16, {weight_shape}> w = const()[name = {}, val = tensor<fp16, {weight_shape}>(BLOBFILE(path = {}, offset = {}))];",
            s("w"),
            s("@model_path/weights/w.bin"),
            if p.id.as_str() == "m1" { "tensor<uint64, []>(64)" } else { "uint64(64)" }
        ));
    }
    let weight = if runtime_weight { "a01_w" } else { "w" };
    let bias_arg = if bias { ", bias = b" } else { "" };
    if bias {
        body.push(format!(
            "        tensor<fp16, [4]> b = const()[name = {}, val = tensor<fp16, [4]>([0.0, 0.0, 0.0, 0.0])];",
            s("b")
        ));
    }
    body.push(format!(
        "        tensor<fp16, [1, 4, 1, 32]> z00_y = conv(dilations = c_st{bias_arg}, groups = c_gr, pad = c_pd, pad_type = c_pt, strides = c_st, weight = {weight}, x = a00_x)[name = {}];",
        s("z00_y")
    ));
    text(p, &params, &body.join("\n"), "z00_y")
}

fn weights_for(shape: &[usize]) -> BTreeMap<String, Vec<u8>> {
    let n = shape.iter().product();
    BTreeMap::from([("@model_path/weights/w.bin".to_string(), one_record(&data(n, 5)))])
}

#[test]
fn c13_conv_bias() {
    for p in [m1(), m4()] {
        let v = lint_text(
            &conv_text(&p, true, "[4, 4, 1, 1]", 1, false),
            &weights_for(&[4, 4]),
            &p,
        );
        assert_found(&v, "C13", Severity::Error);
        let clean = lint_text(
            &conv_text(&p, false, "[4, 4, 1, 1]", 1, false),
            &weights_for(&[4, 4]),
            &p,
        );
        assert!(clean.is_empty(), "{clean:#?}");
    }
    assert_absent_from_lowering("C13");
}

#[test]
fn c24_runtime_weight_grouped_conv() {
    let p = m4();
    let v = lint_text(&conv_text(&p, false, "[4, 2, 1, 1]", 2, true), &BTreeMap::new(), &p);
    assert_found(&v, "C24", Severity::Error);
    let baked = lint_text(
        &conv_text(&p, false, "[4, 2, 1, 1]", 2, false),
        &weights_for(&[4, 2]),
        &p,
    );
    assert!(
        !found(&baked, "C24", Severity::Error),
        "baked grouped weights are fine: {baked:#?}"
    );
    assert_absent_from_lowering("C24");
}

#[test]
fn c32_conv_kernel_width() {
    let p = m1();
    let v = lint_text(
        &conv_text(&p, false, "[4, 4, 1, 14]", 1, false),
        &weights_for(&[4, 4, 14]),
        &p,
    );
    assert_found(&v, "C32", Severity::Error);
    let v = lint_text(
        &conv_text(&p, false, "[4, 4, 1, 3]", 1, false),
        &weights_for(&[4, 4, 3]),
        &p,
    );
    assert_found(&v, "C32", Severity::Warning);
    assert!(!found(&v, "C32", Severity::Error));
    let m5 = ChipProfile::builtin("m5").unwrap();
    let v = lint_text(
        &conv_text(&m5, false, "[4, 4, 1, 14]", 1, false),
        &weights_for(&[4, 4, 14]),
        &m5,
    );
    assert!(!found(&v, "C32", Severity::Error), "M5 takes widths up to 15: {v:#?}");
    assert_absent_from_lowering("C32");
}

#[test]
fn c27_classifier_conv_input_channels() {
    let p = m4();
    let source =
        conv_text(&p, false, "[4, 32000, 1, 1]", 1, true).replace("[1, 4, 1, 32]> a00_x", "[1, 32000, 1, 32]> a00_x");
    let v = lint_text(&source, &BTreeMap::new(), &p);
    assert_found(&v, "C27", Severity::Error);
    assert!(!found(&v, "C26", Severity::Error), "within M4's caps: {v:#?}");
    assert_absent_from_lowering("C27");
}

fn unary_text(p: &ChipProfile, op: &str, dtype: &str) -> String {
    let name = if p.id.as_str() == "m1" {
        "tensor<string, []>(\"z00_y\")"
    } else {
        "string(\"z00_y\")"
    };
    let body = format!("        tensor<{dtype}, [1, 1, 1, 32]> z00_y = {op}(x = a00_x)[name = {name}];");
    text(p, &format!("tensor<{dtype}, [1, 1, 1, 32]> a00_x"), &body, "z00_y")
}

#[test]
fn c10_c11_c09_c28_ops_the_chip_rejects() {
    let p = m4();
    let v = lint_text(&unary_text(&p, "gelu", "fp16"), &BTreeMap::new(), &p);
    assert_found(&v, "C10", Severity::Error);
    let mut lenient = m4();
    lenient.limits.ops.gelu = true;
    assert!(lint_text(&unary_text(&p, "gelu", "fp16"), &BTreeMap::new(), &lenient).is_empty());

    let ln = unary_text(&p, "layer_norm", "fp16");
    assert_found(&lint_text(&ln, &BTreeMap::new(), &p), "C28", Severity::Error);

    let sdpa = text(
        &p,
        "tensor<fp16, [1, 1, 32, 32]> a00_q, tensor<fp16, [1, 1, 32, 32]> a01_m",
        "        tensor<fp16, [1, 1, 32, 32]> z00_y = scaled_dot_product_attention(attn_mask = a01_m, key = a00_q, query = a00_q, value = a00_q)[name = string(\"z00_y\")];",
        "z00_y",
    );
    assert_found(&lint_text(&sdpa, &BTreeMap::new(), &p), "C11", Severity::Error);

    let concat = text(
        &p,
        "tensor<fp16, [1, 1, 1, 32]> a00_x",
        "        int32 ax = const()[name = string(\"ax\"), val = int32(3)];\n        bool il = const()[name = string(\"il\"), val = bool(false)];\n        tensor<fp16, [1, 1, 1, 64]> z00_y = concat(axis = ax, interleave = il, values = (a00_x, a00_x))[name = string(\"z00_y\")];",
        "z00_y",
    );
    assert_found(&lint_text(&concat, &BTreeMap::new(), &p), "C09", Severity::Error);
    let mut with_concat = m4();
    with_concat.limits.ops.concat = true;
    assert!(lint_text(&concat, &BTreeMap::new(), &with_concat).is_empty());

    for rule in ["C09", "C10", "C11", "C28"] {
        assert_absent_from_lowering(rule);
    }
}

#[test]
fn c31_ops_not_available_and_int32_compute() {
    let v = lint_text(&unary_text(&m1(), "sin", "fp16"), &BTreeMap::new(), &m1());
    assert_found(&v, "C31", Severity::Error);
    let m3 = ChipProfile::builtin("m3").unwrap();
    assert!(
        lint_text(&unary_text(&m3, "sin", "fp16"), &BTreeMap::new(), &m3).is_empty(),
        "native from M3"
    );
    let v = lint_text(&unary_text(&m4(), "cumsum", "fp16"), &BTreeMap::new(), &m4());
    assert_found(&v, "C31", Severity::Error);
    let v = lint_text(&unary_text(&m4(), "relu", "int32"), &BTreeMap::new(), &m4());
    let c31 = v.iter().filter(|v| v.rule == "C31").count();
    assert_eq!(c31, 3, "int32 input, int32 compute, int32 output: {v:#?}");
    assert_absent_from_lowering("C31");
}

#[test]
fn c16_fp32_io_and_casts_without_fp32_support() {
    let p = m1();
    let body = "        tensor<string, []> d = const()[name = tensor<string, []>(\"d\"), val = tensor<string, []>(\"fp16\")];\n        tensor<fp16, [1, 1, 1, 32]> z00_y = cast(dtype = d, x = a00_x)[name = tensor<string, []>(\"z00_y\")];";
    let v = lint_text(
        &text(&p, "tensor<fp32, [1, 1, 1, 32]> a00_x", body, "z00_y"),
        &BTreeMap::new(),
        &p,
    );
    assert_eq!(
        v.iter().filter(|v| v.rule == "C16").count(),
        2,
        "fp32 input and the cast: {v:#?}"
    );
    let m4_text = body.replace("tensor<string, []>", "string");
    let v = lint_text(
        &text(&m4(), "tensor<fp32, [1, 1, 1, 32]> a00_x", &m4_text, "z00_y"),
        &BTreeMap::new(),
        &m4(),
    );
    assert!(!found(&v, "C16", Severity::Error), "M4 runs fp32 I/O: {v:#?}");
    assert_absent_from_lowering("C16");
}

fn blob_const_text(p: &ChipProfile, offset: u64) -> String {
    let body = format!(
        "        tensor<fp16, [1, 1, 1, 32]> w = const()[name = string(\"w\"), val = tensor<fp16, [1, 1, 1, 32]>(BLOBFILE(path = string(\"@model_path/weights/w.bin\"), offset = uint64({offset})))];\n        tensor<fp16, [1, 1, 1, 32]> z00_y = add(x = a00_x, y = w)[name = string(\"z00_y\")];"
    );
    text(p, "tensor<fp16, [1, 1, 1, 32]> a00_x", &body, "z00_y")
}

#[test]
fn c03_blobfile_offset_and_c04_missing_file() {
    let p = m4();
    let weights = BTreeMap::from([("@model_path/weights/w.bin".to_string(), one_record(&data(32, 3)))]);
    assert!(lint_text(&blob_const_text(&p, 64), &weights, &p).is_empty());
    for wrong in [0, 128] {
        let v = lint_text(&blob_const_text(&p, wrong), &weights, &p);
        assert_found(&v, "C03", Severity::Error);
    }
    let short = BTreeMap::from([("@model_path/weights/w.bin".to_string(), one_record(&data(16, 3)))]);
    assert_found(&lint_text(&blob_const_text(&p, 64), &short, &p), "C03", Severity::Error);
    let v = lint_text(&blob_const_text(&p, 64), &BTreeMap::new(), &p);
    assert_found(&v, "C04", Severity::Error);
    assert_absent_from_lowering("C03");
    assert_absent_from_lowering("C04");
}

#[test]
fn c17_multi_record_weight_files() {
    let mut w = BlobWriter::new();
    w.write_fp16_from_f32(&data(32, 1)).unwrap();
    w.write_fp16_from_f32(&data(32, 2)).unwrap();
    let weights = BTreeMap::from([("@model_path/weights/w.bin".to_string(), w.finish())]);
    let v = lint_text(&blob_const_text(&m4(), 64), &weights, &m1());
    assert_found(&v, "C17", Severity::Error);
    let v = lint_text(&blob_const_text(&m4(), 64), &weights, &m4());
    assert!(
        !found(&v, "C17", Severity::Error),
        "M4 takes multi-record files: {v:#?}"
    );
    assert_absent_from_lowering("C17");
}

#[test]
fn c15_dialect_mismatch() {
    let v = lint_text(&unary_text(&m4(), "relu", "fp16"), &BTreeMap::new(), &m1());
    assert_eq!(
        v.iter().filter(|v| v.rule == "C15").count(),
        2,
        "version and opset: {v:#?}"
    );
    let v = lint_text(&unary_text(&m1(), "relu", "fp16"), &BTreeMap::new(), &m4());
    assert_found(&v, "C15", Severity::Error);
    assert_absent_from_lowering("C15");
}

#[test]
fn c26_extents_over_caps_and_c23_contraction_multiple() {
    let p = m1();
    let v = lint_text(
        &unary_text(&p, "relu", "fp16").replace("32]", "20000]"),
        &BTreeMap::new(),
        &p,
    );
    assert_found(&v, "C26", Severity::Error);
    assert!(lint_text(
        &unary_text(&m4(), "relu", "fp16").replace("32]", "20000]"),
        &BTreeMap::new(),
        &m4()
    )
    .iter()
    .all(|v| v.rule != "C26"));

    let matmul = |k: usize| {
        text(
            &m4(),
            &format!("tensor<fp16, [1, 1, 32, {k}]> a00_x, tensor<fp16, [1, 1, {k}, 32]> a01_y"),
            "        bool f = const()[name = string(\"f\"), val = bool(false)];\n        tensor<fp16, [1, 1, 32, 32]> z00_y = matmul(transpose_x = f, transpose_y = f, x = a00_x, y = a01_y)[name = string(\"z00_y\")];",
            "z00_y",
        )
    };
    assert_found(&lint_text(&matmul(40), &BTreeMap::new(), &m4()), "C23", Severity::Error);
    assert!(!found(
        &lint_text(&matmul(64), &BTreeMap::new(), &m4()),
        "C23",
        Severity::Error
    ));
    assert_found(
        &lint_text(&matmul(70_000), &BTreeMap::new(), &m4()),
        "C26",
        Severity::Error,
    );
    assert_absent_from_lowering("C26");
    assert_absent_from_lowering("C23");
}

#[test]
fn c26_caps_a_parameter_even_when_every_result_is_within_them() {
    // A 70,000-wide input reshaped to [70, 1000]: no op result is over M4's caps, the surface is.
    let reshaped = |width: usize, rows: usize| {
        text(
            &m4(),
            &format!("tensor<fp16, [1, 1, 1, {width}]> a00_x"),
            &format!(
                "        tensor<int32, [4]> c_sh = const()[name = string(\"c_sh\"), val = tensor<int32, [4]>([1, 1, {rows}, 1000])];\n        \
                 tensor<fp16, [1, 1, {rows}, 1000]> z00_y = reshape(shape = c_sh, x = a00_x)[name = string(\"z00_y\")];"
            ),
            "z00_y",
        )
    };
    let over = lint_text(&reshaped(70_000, 70), &BTreeMap::new(), &m4());
    assert!(
        over.iter().any(|v| v.rule == "C26" && v.location.contains("a00_x")),
        "{over:#?}"
    );
    let within = lint_text(&reshaped(64_000, 64), &BTreeMap::new(), &m4());
    assert!(!found(&within, "C26", Severity::Error), "{within:#?}");
}

#[test]
fn c22_last_axis_alignment_is_a_warning() {
    let p = m4();
    let v = lint_text(
        &unary_text(&p, "relu", "fp16").replace("32]", "20]"),
        &BTreeMap::new(),
        &p,
    );
    assert_found(&v, "C22", Severity::Warning);
    assert!(!has_errors(&v));
    // The lowering cannot choose S; with S = 32 (fp16) its programs carry no C22 warning.
    let mut g = Graph::new("aligned");
    let x = g.input("x", TensorType::new(DType::F32, vec![32, 16])).unwrap();
    let w = g.constant(Tensor::f32([32, 16], data(512, 4))).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    g.set_output("y", y).unwrap();
    for profile in [m1(), m4()] {
        let program = lower(&g, &profile, &LowerOptions::default()).unwrap();
        assert!(program.lint.is_empty(), "{:#?}", program.lint);
    }
}

#[test]
fn c19_io_names_out_of_order_is_a_warning() {
    let p = m4();
    let body = "        tensor<fp16, [1, 1, 1, 32]> z01_b = add(x = x_first, y = a_second)[name = string(\"z01_b\")];\n        tensor<fp16, [1, 1, 1, 32]> z00_a = relu(x = x_first)[name = string(\"z00_a\")];";
    let source = text(
        &p,
        "tensor<fp16, [1, 1, 1, 32]> x_first, tensor<fp16, [1, 1, 1, 32]> a_second",
        body,
        "z01_b, z00_a",
    );
    let v = lint_text(&source, &BTreeMap::new(), &p);
    assert_eq!(
        v.iter().filter(|v| v.rule == "C19").count(),
        2,
        "inputs and outputs: {v:#?}"
    );
    assert!(!has_errors(&v));
    let mixed = text(
        &p,
        "tensor<fp16, [1, 1, 1, 32]> B, tensor<fp16, [1, 1, 1, 32]> a",
        "        tensor<fp16, [1, 1, 1, 32]> z00_y = add(x = B, y = a)[name = string(\"z00_y\")];",
        "z00_y",
    );
    assert_found(&lint_text(&mixed, &BTreeMap::new(), &p), "C19", Severity::Warning);
    assert_absent_from_lowering("C19");
}

#[test]
fn violations_display_their_rule_and_location() {
    let p = m4();
    let v = lint_text(&unary_text(&p, "gelu", "fp16"), &BTreeMap::new(), &p);
    let shown = v.iter().find(|v| v.rule == "C10").unwrap().to_string();
    assert!(shown.starts_with("error[C10] main: z00_y = gelu"), "{shown}");
}

/// The reference examples of ane.md §3 are clean on the chips they were written for (given their weight
/// file), and lint runs on every MIL fixture for every chip without panicking.
#[test]
fn reference_examples_are_clean_and_fixtures_lint_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mil");
    let conv_weights = BTreeMap::from([("@model_path/weights/w.bin".to_string(), one_record(&data(128 * 64, 8)))]);
    let examples = [
        ("example1_ios18_conv.mil", m4()),
        ("example2_ios18_matmul.mil", m4()),
        ("example3_ios16_conv.mil", m1()),
        ("example4_ios16_matmul.mil", m1()),
    ];
    for (file, profile) in examples {
        let source = std::fs::read_to_string(dir.join(file)).expect("fixture");
        let v = lint_text(&source, &conv_weights, &profile);
        assert!(v.is_empty(), "{file} on {}: {v:#?}", profile.id);
    }
    let mut linted = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let Ok(program) = parse_program(&std::fs::read_to_string(&path).expect("fixture")) else {
            continue;
        };
        for profile in ChipProfile::all_builtin() {
            let _ = lint(&program, &BTreeMap::new(), &profile);
            linted += 1;
        }
    }
    assert!(linted >= 6 * 5, "{linted} programs linted");
}
