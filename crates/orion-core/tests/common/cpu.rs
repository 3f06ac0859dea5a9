//! Shared support of the CPU backend's and the interpreter's test files: deterministic values,
//! compiling a graph, and running it against the reference interpreter (`Precision::F32`, within
//! `Tolerance::F32`).
#![allow(dead_code)]

use orion_core::backend::Executable;
use orion_core::cpu::{CpuBackend, CpuExecutable, CpuOptions, PlanSummary, ProductPrecision, WeightFormat};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorType, ValueId};

/// Deterministic pseudo-random values in [-2, 2) (a small LCG, independent of the crate).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
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

pub fn options(threads: Option<usize>, weights: WeightFormat) -> CpuOptions {
    CpuOptions {
        threads,
        weights,
        huge_pages: false,
        products: ProductPrecision::F32,
    }
}

pub fn compile(g: &Graph, opts: CpuOptions) -> CpuExecutable {
    match CpuBackend::new(opts).compile_cpu(g) {
        Ok(exe) => exe,
        Err(e) => panic!("compiling {} failed: {e}", g.name()),
    }
}

/// Runs `g` on the CPU (with `opts`) and on the interpreter (on `reference`, the same graph or one
/// with half-rounded weights); asserts every output matches; returns the plan summary.
pub fn check_against(g: &Graph, reference: &Graph, inputs: &[Tensor], opts: CpuOptions) -> PlanSummary {
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

pub fn check(g: &Graph, inputs: &[Tensor]) -> PlanSummary {
    check_against(g, g, inputs, CpuOptions::default())
}

/// A graph with float inputs of the given shapes and one output built by `body`.
pub fn graph_of(
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
