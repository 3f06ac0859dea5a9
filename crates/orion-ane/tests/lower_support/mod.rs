//! Test-only support for the lowering tests: the IR ↔ surface layout mapping (the production version is
//! the sim helper's `surfaces` module; this one is written independently from the `IoLayout`
//! definition), the MIL round trip (print → parse → to_graph → interpret) and deterministic data.

#![allow(dead_code)]

use std::collections::HashMap;

use orion_ane::lint::{Severity, Violation};
use orion_ane::lower::{const_input_value, lower, EmittedProgram, IoDesc, IoLayout, LowerOptions};
use orion_ane::mil::{parse_program, to_graph, BlobDictResolver, Dialect};
use orion_ane::profile::ChipProfile;
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Op, Tensor, TensorType};

/// Deterministic values in [-1, 1).
pub fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(977);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// A deterministic tensor of type `ty` (floats in [-1, 1), bools alternating, ints small).
pub fn tensor_for(ty: &TensorType, seed: u32) -> Tensor {
    let n = ty.shape.numel();
    let dims = ty.shape.dims().to_vec();
    match ty.dtype {
        DType::F32 => Tensor::f32(dims, data(n, seed)),
        DType::F16 => Tensor::f16(dims, data(n, seed)),
        DType::I32 => Tensor::i32(dims, (0..n as i32).map(|i| i % 3).collect()),
        DType::Bool => Tensor::bool(dims, (0..n).map(|i| i % 2 == 0).collect()),
    }
}

/// One deterministic tensor per graph input.
pub fn inputs_for(graph: &Graph, seed: u32) -> Vec<Tensor> {
    graph
        .inputs()
        .enumerate()
        .map(|(i, (_, _, ty))| tensor_for(ty, seed + i as u32 * 101))
        .collect()
}

pub fn m1() -> ChipProfile {
    ChipProfile::builtin("m1").expect("built-in m1")
}

pub fn m4() -> ChipProfile {
    ChipProfile::builtin("m4").expect("built-in m4")
}

/// An IR tensor in the surface layout of `desc`: `[rows, cols]` → `[1, cols, 1, rows]` with element
/// (r, c) at `c·rows + r`, or flat `[1, 1, 1, N]`; the element type of the surface.
pub fn to_surface(desc: &IoDesc, t: &Tensor) -> Tensor {
    let values = t.to_f32_vec();
    let packed = match desc.layout {
        IoLayout::ChannelMajor { rows, cols } => {
            let mut out = vec![0.0; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
            out
        }
        IoLayout::Flat => values,
    };
    let shape = desc.mil_shape.to_vec();
    match desc.surface_dtype {
        DType::F32 => Tensor::f32(shape, packed),
        _ => Tensor::f16(shape, packed),
    }
}

/// The inverse of [`to_surface`], giving a tensor of the IR type.
pub fn from_surface(desc: &IoDesc, t: &Tensor) -> Tensor {
    let values = t.to_f32_vec();
    let unpacked = match desc.layout {
        IoLayout::ChannelMajor { rows, cols } => {
            let mut out = vec![0.0; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    out[r * cols + c] = values[c * rows + r];
                }
            }
            out
        }
        IoLayout::Flat => values,
    };
    let dims = desc.ir_type.shape.dims().to_vec();
    match desc.ir_type.dtype {
        DType::F16 => Tensor::f16(dims, unpacked),
        _ => Tensor::f32(dims, unpacked),
    }
}

/// The tensor an input description stands for: a graph input by name, or a constant turned input.
pub fn input_tensor(graph: &Graph, inputs: &[Tensor], desc: &IoDesc) -> Tensor {
    if let Some(v) = const_input_value(desc) {
        match &graph.producer(v).op {
            Op::Const { value } => return value.as_ref().clone(),
            other => panic!("{} names {v}, which is a {other:?}", desc.ir_name),
        }
    }
    let index = graph
        .inputs()
        .position(|(name, _, _)| name == desc.ir_name)
        .unwrap_or_else(|| panic!("no graph input {}", desc.ir_name));
    inputs[index].clone()
}

/// Errors among the lint findings, formatted.
pub fn lint_errors(lint: &[Violation]) -> Vec<String> {
    lint.iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| v.to_string())
        .collect()
}

/// Runs the emitted program the way the simulator will: parse the text, convert with the emitted
/// weight dictionary, interpret in fp16 rounding; returns the outputs in IR layout and type.
pub fn run_emitted(program: &EmittedProgram, graph: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let parsed = parse_program(&program.mil_text).unwrap_or_else(|e| panic!("{e}\n{}", program.mil_text));
    assert_eq!(
        parsed, program.program,
        "printed text must parse back to the emitted program"
    );
    let files: HashMap<String, Vec<u8>> = program.weights.clone().into_iter().collect();
    let mil_graph = to_graph(&parsed, "main", &BlobDictResolver::new(files))
        .unwrap_or_else(|e| panic!("{e}\n{}", program.mil_text));
    let surfaces: Vec<Tensor> = program
        .inputs
        .iter()
        .map(|d| to_surface(d, &input_tensor(graph, inputs, d)))
        .collect();
    let outputs = interpret(&mil_graph, &surfaces, Precision::F16Rounding)
        .unwrap_or_else(|e| panic!("{e}\n{}", program.mil_text));
    program
        .outputs
        .iter()
        .zip(&outputs)
        .map(|(d, t)| from_surface(d, t))
        .collect()
}

/// Lowers `graph`, checks that lint finds no error, runs the program and compares every output with the
/// reference interpreter (fp16 rounding) within `tol`. Returns the emitted program.
pub fn check_lowering(
    graph: &Graph,
    inputs: &[Tensor],
    profile: &ChipProfile,
    options: &LowerOptions,
    tol: Tolerance,
) -> EmittedProgram {
    let program = lower(graph, profile, options).unwrap_or_else(|e| panic!("{} on {}: {e}", graph.name(), profile.id));
    let errors = lint_errors(&program.lint);
    assert!(
        errors.is_empty(),
        "lint errors:\n{}\n{}",
        errors.join("\n"),
        program.mil_text
    );
    let expected = interpret(graph, inputs, Precision::F16Rounding).expect("reference interpreter");
    let actual = run_emitted(&program, graph, inputs);
    assert_eq!(actual.len(), expected.len());
    for ((a, e), out) in actual.iter().zip(&expected).zip(graph.outputs()) {
        let e = match e.dtype() {
            DType::F16 => e.clone(),
            _ => Tensor::f32(e.shape().dims().to_vec(), e.to_f32_vec()),
        };
        if let Err(msg) = compare(a, &e, tol) {
            panic!(
                "{} output {:?} on {} ({:?}, {:?}): {msg}\n{}",
                graph.name(),
                out.name,
                profile.id,
                options.weights,
                program.dialect,
                program.mil_text
            );
        }
    }
    program
}

/// Both dialects' options for `weights`.
pub fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Ios18 => "ios18",
        Dialect::Ios16 => "ios16",
    }
}
