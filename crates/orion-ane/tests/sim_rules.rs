//! One test per catalogue rule, C01..C21 (programs, weights, I/O surfaces; C22..C43 are in
//! `sim_rules_limits.rs`): what the simulated device does when a program or request breaks the rule
//! (compile error carrying the rule id, status 0x1d, silently wrong data, budget exhaustion, unchanged
//! baked weights) and that Orion's lowering and backend avoid it (the emitted program passes, surfaces
//! are ordered, sized and packed correctly).
//!
//! Rules about the macOS API rather than programs (C01 NSData, C02 nil dictionary, C04 temp directory,
//! C05 unload leak, C08 weightsBuffer) are tested on the shared code that handles them; each such test
//! says so. Violating programs are built as MIL ASTs and printed in the dialect of the chip under test,
//! so that the only rule they break is the one under test.

mod sim_support;

use orion_ane::backend::AneBackend;
use orion_ane::blob::{BlobFile, BlobWriter};
use orion_ane::device::{AneDevice, DeviceError, Surface, WeightDict};
use orion_ane::lower::{lower, IoDType, LowerOptions, WeightMode};
use orion_ane::mil::{var_arg, Argument, Dialect, Literal, MilDType, MilType, Value};
use orion_ane::surfaces::pack_inputs;
use orion_core::composite::{causal_attention, gelu_tanh};
use orion_core::{DType, Graph, TensorType};

use sim_support::*;

// ---- C01..C10 ----------------------------------------------------------------------------------------

/// API rule (NSData of UTF-8): tested on the shared code — the device interface takes bytes and the
/// simulator refuses bytes that are not UTF-8; the emitted text is a Rust `String`, UTF-8 by type.
#[test]
fn c01_mil_text_is_utf8_bytes() {
    let mut bytes = doubling().text("m4").into_bytes();
    bytes.push(0xFF);
    let err = sim("m4").compile(&bytes, &WeightDict::new()).unwrap_err();
    assert_eq!(err.rule(), Some("C01"), "{err}");
    let emitted = emit(&linear_graph(32, 32, 16), "m4", WeightMode::Baked);
    assert!(std::str::from_utf8(emitted.mil_text.as_bytes()).is_ok());
    assert_accepted(&emitted, "m4");
}

/// API rule (never a nil dictionary): the interface takes `&WeightDict`, which cannot be nil; a
/// weight-free program compiles with an empty dictionary, and the lowering emits one.
#[test]
fn c02_weight_dictionary_is_always_present() {
    let device = sim("m4");
    compile_load(&device, &doubling().text("m4"), &WeightDict::new());
    let mut g = Graph::new("weight_free");
    let x = g.input("x", TensorType::new(DType::F32, [32, 8])).unwrap();
    let y = g.add(x, x).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    assert!(emitted.weights.is_empty());
    assert_accepted(&emitted, "m4");
}

#[test]
fn c03_blobfile_offset_names_the_metadata_record() {
    // The data offset (128) instead of the metadata offset (64): refused, never read as garbage.
    let text = conv_mil("@model_path/weights/w.bin", 128, None).text("m4");
    assert_eq!(compile_rule("m4", &text, &conv_weights()), Some("C03"));
    let emitted = emit(&linear_graph(32, 32, 16), "m4", WeightMode::Baked);
    assert!(!emitted.weights.is_empty());
    for bytes in emitted.weights.values() {
        let file = BlobFile::parse(bytes).unwrap();
        assert_eq!(file.records()[0].offset, 64);
    }
    assert!(emitted.mil_text.contains("offset = uint64(64)"), "{}", emitted.mil_text);
    assert_backend_agrees(
        &linear_graph(32, 32, 16),
        &[input(&[32, 32], 0.1)],
        "m4",
        WeightMode::Baked,
    );
}

/// API rule (compile directory complete before compile): a BLOBFILE path missing from the dictionary
/// is a compile failure; the lowering's dictionary holds every path its program names.
#[test]
fn c04_every_weight_file_is_present_at_compile() {
    let text = conv_mil("@model_path/weights/w.bin", 64, None).text("m4");
    assert_eq!(compile_rule("m4", &text, &WeightDict::new()), Some("C04"));
    let emitted = emit(&linear_graph(32, 32, 16), "m4", WeightMode::Baked);
    for function in &emitted.program.functions {
        for op in &function.operations {
            for (_, literal) in &op.attributes {
                if let Value::Blob { path, .. } = &literal.value {
                    assert!(emitted.weights.contains_key(path), "{path}");
                }
            }
        }
    }
    assert_accepted(&emitted, "m4");
}

/// API rule (unloading): the simulator counts loaded programs; the backend's executable unloads on drop.
#[test]
fn c05_loaded_programs_are_unloaded_on_drop() {
    let device = std::sync::Arc::new(sim("m4"));
    let backend = AneBackend::new(device.clone(), LowerOptions::default());
    let exe = backend.compile_program(&linear_graph(32, 32, 16)).unwrap();
    let other = backend.compile_program(&linear_graph(32, 32, 8)).unwrap();
    assert_eq!(device.loaded_count(), 2);
    drop(exe);
    assert_eq!(device.loaded_count(), 1);
    drop(other);
    assert_eq!(device.loaded_count(), 0);
}

#[test]
fn c06_compiles_past_the_budget_fail() {
    let device = sim("m4");
    let budget = device.profile().limits.compile_budget;
    let text = doubling().text("m4");
    for _ in 0..budget {
        device.compile(text.as_bytes(), &WeightDict::new()).unwrap();
    }
    let err = device.compile(text.as_bytes(), &WeightDict::new()).unwrap_err();
    assert!(matches!(err, DeviceError::BudgetExhausted { .. }));
    assert_eq!(err.rule(), Some("C06"));
    // The backend compiles once and evaluates many times (weights as inputs: new weights, no compile).
    let device = std::sync::Arc::new(sim("m4"));
    let backend = AneBackend::new(device.clone(), options(WeightMode::Inputs));
    let exe = backend.compile_program(&linear_graph(32, 32, 16)).unwrap();
    for k in 0..5 {
        exe.run_with_report(&[input(&[32, 32], 0.01 * k as f32)]).unwrap();
    }
    assert_eq!(device.compile_count(), 1);
}

#[test]
fn c07_baked_weights_survive_file_overwrite_and_reload() {
    let device = sim("m4");
    let path = "@model_path/weights/w.bin";
    let id = compile_load(&device, &conv_mil(path, 64, None).text("m4"), &conv_weights());
    let x = ramp(1024, 0.1);
    let before = eval(&device, id, std::slice::from_ref(&x), 1, 256);
    device.overwrite_weight_file(id, path, &blob(&[2.0; 256])).unwrap();
    device.unload(id).unwrap();
    device.load(id).unwrap();
    assert_eq!(eval(&device, id, &[x], 1, 256), before, "reload changes nothing (C07)");
    // Weights as inputs: a new weight takes effect with no compile and no reload.
    let g = linear_graph(32, 32, 16);
    let emitted = emit(&g, "m4", WeightMode::Inputs);
    assert!(
        emitted.weights.is_empty() && emitted.inputs.len() == 2,
        "{:?}",
        emitted.inputs
    );
    assert_backend_agrees(&g, &[input(&[32, 32], 0.1)], "m4", WeightMode::Inputs);
}

/// API rule (`weightsBuffer` ignored): the device interface has no weights buffer; weights reach a
/// program only through the compile-time dictionary or input surfaces, and input surfaces do change
/// the output.
#[test]
fn c08_weights_reach_the_device_only_as_dictionary_or_inputs() {
    let mil = Mil::new(&[("a00_x", t16(&[1, 4, 1, 32])), ("a01_w", t16(&[1, 4, 1, 32]))])
        .op("z00_y", t16(&[1, 4, 1, 32]), "mul", &[("x", "a00_x"), ("y", "a01_w")])
        .ret(&["z00_y"]);
    let device = sim("m4");
    let id = compile_load(&device, &mil.text("m4"), &WeightDict::new());
    let x = vec![1.5; 128];
    let first = eval(&device, id, &[x.clone(), vec![2.0; 128]], 1, 128);
    let second = eval(&device, id, &[x, vec![-1.0; 128]], 1, 128);
    assert_eq!((first[0][0], second[0][0]), (3.0, -1.5));
}

#[test]
fn c09_concat_is_rejected_and_lowered_without_it() {
    let mil = Mil::new(&[("a00_x", t16(&[1, 4, 1, 32]))])
        .konst("ax", Literal::int32(3))
        .konst("il", Literal::bool(false))
        .op_args(
            "z00_y",
            t16(&[1, 4, 1, 64]),
            "concat",
            vec![
                ("axis".to_string(), Argument::Var("ax".to_string())),
                ("interleave".to_string(), Argument::Var("il".to_string())),
                (
                    "values".to_string(),
                    Argument::Tuple(vec!["a00_x".to_string(), "a00_x".to_string()]),
                ),
            ],
        )
        .ret(&["z00_y"]);
    assert_eq!(compile_rule("m4", &mil.text("m4"), &WeightDict::new()), Some("C09"));
    let mut g = Graph::new("concat");
    let x = g.input("x", TensorType::new(DType::F32, [32, 8])).unwrap();
    let y = g.input("y", TensorType::new(DType::F32, [32, 8])).unwrap();
    let c = g.concat(&[x, y], 1).unwrap();
    g.set_output("c", c).unwrap();
    for chip in ["m1", "m4"] {
        let emitted = emit(&g, chip, WeightMode::Baked);
        assert!(!op_names(&emitted).contains(&"concat".to_string()));
        assert_backend_agrees(
            &g,
            &[input(&[32, 8], 0.1), input(&[32, 8], 0.2)],
            chip,
            WeightMode::Baked,
        );
    }
}

#[test]
fn c10_gelu_is_rejected_and_the_tanh_form_is_emitted() {
    let mil = Mil::new(&[("a00_x", t16(&[1, 4, 1, 32]))])
        .op("z00_y", t16(&[1, 4, 1, 32]), "gelu", &[("x", "a00_x")])
        .ret(&["z00_y"]);
    assert_eq!(compile_rule("m4", &mil.text("m4"), &WeightDict::new()), Some("C10"));
    let mut g = Graph::new("gelu");
    let x = g.input("x", TensorType::new(DType::F32, [32, 8])).unwrap();
    let y = gelu_tanh(&mut g, x).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    assert!(!op_names(&emitted).contains(&"gelu".to_string()));
    assert_backend_agrees(&g, &[input(&[32, 8], 0.3)], "m4", WeightMode::Baked);
}

// ---- C11..C20 ----------------------------------------------------------------------------------------

#[test]
fn c11_masked_sdpa_is_rejected_and_attention_is_decomposed() {
    let q = t16(&[1, 1, 32, 32]);
    let mil = Mil::new(&[("a00_q", q.clone()), ("a01_m", q.clone())])
        .op(
            "z00_y",
            q,
            "scaled_dot_product_attention",
            &[
                ("attn_mask", "a01_m"),
                ("key", "a00_q"),
                ("query", "a00_q"),
                ("value", "a00_q"),
            ],
        )
        .ret(&["z00_y"]);
    assert_eq!(compile_rule("m4", &mil.text("m4"), &WeightDict::new()), Some("C11"));
    let mut g = Graph::new("attention");
    let ty = TensorType::new(DType::F32, [2, 32, 8]);
    let (q, k, v) = (
        g.input("q", ty.clone()).unwrap(),
        g.input("k", ty.clone()).unwrap(),
        g.input("v", ty).unwrap(),
    );
    let y = causal_attention(&mut g, q, k, v).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    assert!(!op_names(&emitted).iter().any(|n| n.contains("attention")));
    let inputs = [
        input(&[2, 32, 8], 0.1),
        input(&[2, 32, 8], 0.2),
        input(&[2, 32, 8], 0.3),
    ];
    assert_backend_agrees(&g, &inputs, "m4", WeightMode::Baked);
}

#[test]
fn c12_non_tensor_arguments_are_named_consts() {
    let mil = Mil::new(&[("a00_x", t16(&[1, 4, 1, 32]))])
        .op_args(
            "z00_y",
            t16(&[1, 4, 1, 32]),
            "softmax",
            vec![
                ("axis".to_string(), Argument::Literal(Literal::int32(-1))),
                var_arg("x", "a00_x"),
            ],
        )
        .ret(&["z00_y"]);
    assert_eq!(compile_rule("m4", &mil.text("m4"), &WeightDict::new()), Some("C12"));
    let mut g = Graph::new("softmax");
    let x = g.input("x", TensorType::new(DType::F32, [32, 8])).unwrap();
    let y = g.softmax(x, -1).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    let inline = emitted.program.functions[0]
        .operations
        .iter()
        .flat_map(|op| &op.args)
        .any(|(_, a)| matches!(a, Argument::Literal(_)));
    assert!(!inline && rules_found(&emitted, "C12") == 0);
    assert_accepted(&emitted, "m4");
}

#[test]
fn c13_conv_bias_is_rejected_and_added_separately() {
    let text = conv_mil("@model_path/weights/w.bin", 64, Some(("bias", "bias"))).text("m4");
    assert_eq!(compile_rule("m4", &text, &conv_weights()), Some("C13"));
    let mut g = Graph::new("linear_bias");
    let x = g.input("x", TensorType::new(DType::F32, [32, 32])).unwrap();
    let w = g.constant(input(&[16, 32], 0.01)).unwrap();
    let b = g.constant(input(&[16], 0.5)).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    let y = g.add(y, b).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    let conv_bias = emitted.program.functions[0]
        .operations
        .iter()
        .any(|op| op.op == "conv" && op.arg("bias").is_some());
    assert!(op_names(&emitted).contains(&"conv".to_string()) && !conv_bias);
    assert_backend_agrees(&g, &[input(&[32, 32], 0.1)], "m4", WeightMode::Baked);
}

#[test]
fn c14_returned_names_must_be_live() {
    let text = doubling().ret(&["z00_y", "gone"]).text("m4");
    assert_eq!(compile_rule("m4", &text, &WeightDict::new()), Some("C14"));
    assert_eq!(
        rules_found(&emit(&linear_graph(32, 32, 16), "m4", WeightMode::Baked), "C14"),
        0
    );
}

#[test]
fn c15_each_chip_compiles_its_dialect() {
    let m4_text = doubling().text("m4");
    assert_eq!(compile_rule("m1", &m4_text, &WeightDict::new()), Some("C15"));
    let m1_text = doubling().text("m1");
    assert!(m1_text.starts_with("program(1.0)"));
    compile_load(&sim("m1"), &m1_text, &WeightDict::new());
    let emitted = emit(&linear_graph(32, 32, 16), "m1", WeightMode::Baked);
    assert_eq!(emitted.dialect, Dialect::Ios16);
    assert_backend_agrees(
        &linear_graph(32, 32, 16),
        &[input(&[32, 32], 0.1)],
        "m1",
        WeightMode::Baked,
    );
}

#[test]
fn c16_fp32_io_cast_fails_on_m1() {
    let mil = Mil::new(&[("a00_x", MilType::tensor(MilDType::Fp32, &[1, 4, 1, 16]))])
        .konst("to16", Literal::string("fp16"))
        .op(
            "z00_y",
            t16(&[1, 4, 1, 16]),
            "cast",
            &[("dtype", "to16"), ("x", "a00_x")],
        )
        .ret(&["z00_y"]);
    assert_eq!(compile_rule("m1", &mil.text("m1"), &WeightDict::new()), Some("C16"));
    compile_load(&sim("m4"), &mil.text("m4"), &WeightDict::new());
    let fp32 = LowerOptions {
        io_dtype: Some(IoDType::F32),
        ..LowerOptions::default()
    };
    let err = lower(&linear_graph(32, 32, 16), &profile("m1"), &fp32).unwrap_err();
    assert!(err.to_string().contains("C16"), "{err}");
    let emitted = emit(&linear_graph(32, 32, 16), "m1", WeightMode::Baked);
    assert!(emitted.inputs.iter().all(|d| d.surface_dtype == DType::F16));
}

#[test]
fn c17_one_tensor_per_weight_file_on_m1() {
    let mut writer = BlobWriter::new();
    writer.write_fp16_from_f32(&[0.25; 256]).unwrap();
    writer.write_fp16_from_f32(&[1.0; 8]).unwrap();
    let weights = WeightDict::from([("@model_path/weights/w.bin".to_string(), writer.finish())]);
    let text = conv_mil("@model_path/weights/w.bin", 64, None).text("m1");
    assert_eq!(compile_rule("m1", &text, &weights), Some("C17"));
    let mut g = linear_graph(32, 32, 16);
    let b = g.constant(input(&[16], 0.5)).unwrap();
    let y = g.output_value("y").unwrap();
    let z = g.add(y, b).unwrap();
    g.set_output("z", z).unwrap();
    let emitted = emit(&g, "m1", WeightMode::Baked);
    assert!(emitted.weights.len() >= 2);
    for bytes in emitted.weights.values() {
        assert_eq!(BlobFile::parse(bytes).unwrap().records().len(), 1);
    }
    assert_accepted(&emitted, "m1");
}

/// A program adding two `[1, 4, 1, 32]` inputs.
fn two_inputs() -> Mil {
    Mil::new(&[("a00_x", t16(&[1, 4, 1, 32])), ("a01_y", t16(&[1, 4, 1, 32]))])
        .op("z00_s", t16(&[1, 4, 1, 32]), "add", &[("x", "a00_x"), ("y", "a01_y")])
        .ret(&["z00_s"])
}

#[test]
fn c18_surfaces_of_one_side_share_one_size() {
    let device = sim("m4");
    let id = compile_load(&device, &two_inputs().text("m4"), &WeightDict::new());
    let inputs = [f16_surface(&[1.0], MIN), f16_surface(&[2.0], MIN + 64)];
    let err = device.evaluate(id, &inputs, &mut [Surface::zeroed(MIN)]).unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Evaluate {
                status: 0x1d,
                rule: Some("C18"),
                ..
            }
        ),
        "{err}"
    );
    // A program whose inputs have different dense sizes still gets one surface size per side.
    let mut g = Graph::new("uneven");
    let x = g.input("x", TensorType::new(DType::F32, [64, 512])).unwrap();
    let b = g.input("b", TensorType::new(DType::F32, [1, 512])).unwrap();
    let y = g.add(x, b).unwrap();
    g.set_output("y", y).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    let sizes: Vec<usize> = emitted.inputs.iter().map(|d| d.surface_bytes).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] == w[1]) && sizes[0] >= 64 * 512 * 2,
        "{sizes:?}"
    );
    assert_backend_agrees(
        &g,
        &[input(&[64, 512], 0.1), input(&[1, 512], 0.2)],
        "m4",
        WeightMode::Baked,
    );
}

#[test]
fn c19_surfaces_bind_in_name_order() {
    // Declared (x, lora_A, lora_B); y = x + 2·lora_A + 4·lora_B. Byte order: lora_A, lora_B, x.
    let ty = t16(&[1, 4, 1, 32]);
    let mil = Mil::new(&[("x", ty.clone()), ("lora_A", ty.clone()), ("lora_B", ty.clone())])
        .konst("two", Literal::float(MilDType::Fp16, 2.0))
        .konst("four", Literal::float(MilDType::Fp16, 4.0))
        .op("a2", ty.clone(), "mul", &[("x", "lora_A"), ("y", "two")])
        .op("b4", ty.clone(), "mul", &[("x", "lora_B"), ("y", "four")])
        .op("s", ty.clone(), "add", &[("x", "x"), ("y", "a2")])
        .op("y", ty, "add", &[("x", "s"), ("y", "b4")])
        .ret(&["y"]);
    let device = sim("m4");
    let id = compile_load(&device, &mil.text("m4"), &WeightDict::new());
    let (x, a, b) = (vec![1.0; 128], vec![10.0; 128], vec![100.0; 128]);
    let declaration = eval(&device, id, &[x.clone(), a.clone(), b.clone()], 1, 1);
    let by_name = eval(&device, id, &[a, b, x], 1, 1);
    assert_eq!(by_name[0][0], 1.0 + 20.0 + 400.0);
    // Fed in declaration order: lora_A gets x's surface, lora_B gets lora_A's, x gets lora_B's.
    assert_eq!(
        declaration[0][0],
        100.0 + 2.0 * 1.0 + 4.0 * 10.0,
        "silently wrong, no error"
    );
    // The lowering names I/O so that declaration order is byte order, and lint sees no C19 risk.
    let mut g = Graph::new("names");
    let big = g.input("Zeta", TensorType::new(DType::F32, [32, 8])).unwrap();
    let small = g.input("alpha", TensorType::new(DType::F32, [32, 8])).unwrap();
    let d = g.sub(big, small).unwrap();
    g.set_output("B", d).unwrap();
    g.set_output("a", big).unwrap();
    let emitted = emit(&g, "m4", WeightMode::Baked);
    let names: Vec<&str> = emitted.inputs.iter().map(|d| d.mil_name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(rules_found(&emitted, "C19"), 0);
    assert_backend_agrees(
        &g,
        &[input(&[32, 8], 0.5), input(&[32, 8], 0.25)],
        "m4",
        WeightMode::Baked,
    );
}

#[test]
fn c20_oversized_surfaces_are_read_packed_from_offset_zero() {
    // [1, 4, 1, 16] fp16: 32 bytes per channel row. Rows written at a 64-byte stride are misread.
    let ty = t16(&[1, 4, 1, 16]);
    let mil = Mil::new(&[("a00_x", ty.clone())])
        .op("z00_y", ty, "add", &[("x", "a00_x"), ("y", "a00_x")])
        .ret(&["z00_y"]);
    let device = sim("m4");
    let id = compile_load(&device, &mil.text("m4"), &WeightDict::new());
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let mut strided = vec![0.0; 128];
    for c in 0..4 {
        strided[c * 32..c * 32 + 16].copy_from_slice(&x[c * 16..c * 16 + 16]);
    }
    let packed_out = eval(&device, id, std::slice::from_ref(&x), 1, 64);
    let strided_out = eval(&device, id, &[strided], 1, 64);
    let doubled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert_eq!(packed_out[0], doubled);
    assert_ne!(strided_out[0], doubled, "stride-padded rows are read as packed data");
    // pack_inputs writes the MIL tensor packed at offset 0 and zero-fills the rest.
    let emitted = emit(&linear_graph(32, 32, 16), "m4", WeightMode::Baked);
    let x = input(&[32, 32], 0.1);
    let surfaces = pack_inputs(&emitted.inputs, std::slice::from_ref(&x)).unwrap();
    let values = x.as_f32().unwrap();
    // Channel-major: MIL element (c, s) = IR (s, c) at c·32 + s.
    let first_row: Vec<f32> = (0..32).map(|s| values[s * 32]).collect();
    assert_eq!(read_f16(&surfaces[0], 32), first_row);
    assert!(surfaces[0].bytes()[2048..].iter().all(|&b| b == 0));
}

// ---- C21..C30 ----------------------------------------------------------------------------------------

#[test]
fn c21_surfaces_below_the_minimum_fail() {
    let device = sim("m4");
    let id = compile_load(&device, &two_inputs().text("m4"), &WeightDict::new());
    let inputs = [f16_surface(&[1.0], 256), f16_surface(&[2.0], 256)];
    let err = device.evaluate(id, &inputs, &mut [Surface::zeroed(256)]).unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Evaluate {
                status: 0x1d,
                rule: Some("C21"),
                ..
            }
        ),
        "{err}"
    );
    let emitted = emit(&linear_graph(1, 32, 16), "m4", WeightMode::Baked);
    assert!(emitted
        .inputs
        .iter()
        .chain(&emitted.outputs)
        .all(|d| d.surface_bytes >= MIN));
    assert_backend_agrees(
        &linear_graph(1, 32, 16),
        &[input(&[1, 32], 0.1)],
        "m4",
        WeightMode::Baked,
    );
}

#[test]
fn every_rule_has_a_test() {
    let sources = [include_str!("sim_rules.rs"), include_str!("sim_rules_limits.rs")].concat();
    for rule in orion_ane::catalogue::catalogue() {
        let prefix = format!("fn {}_", rule.id.to_lowercase());
        assert!(sources.contains(&prefix), "no test for {}", rule.id);
    }
}
