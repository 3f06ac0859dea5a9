//! `CpuOptions::products = ProductPrecision::Bf16`: the large f32 products of a plan run on the
//! bfloat16 kernel (where the CPU has AVX512_BF16) and match the interpreter run on operands
//! rounded to bfloat16 by the `half` crate; small products, and every product in F32, stay f32.

#[path = "common/cpu.rs"]
mod cpu;

use cpu::{compile, options, values};
use half::bf16;
use orion_core::backend::Executable;
use orion_core::cpu::kernels::bf16_products_available;
use orion_core::cpu::{CpuOptions, ProductPrecision, WeightFormat};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorType};

const SHAPES: [[usize; 2]; 5] = [[256, 384], [192, 384], [256, 160], [16, 16], [16, 16]];

/// Two large products reading their operands from inputs (`x · Wᵀ`, `xᵀ · d`, 18.9 M and 15.7 M
/// multiply-adds) and a small one (`s · t`).
fn products() -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new("products");
    let ids: Vec<_> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, dims)| {
            g.input(format!("x{i}"), TensorType::new(DType::F32, dims.to_vec()))
                .unwrap()
        })
        .collect();
    let forward = g.matmul(ids[0], ids[1], false, true).unwrap();
    let gradient = g.matmul(ids[0], ids[2], true, false).unwrap();
    let small = g.matmul(ids[3], ids[4], false, false).unwrap();
    g.set_output("forward", forward).unwrap();
    g.set_output("gradient", gradient).unwrap();
    g.set_output("small", small).unwrap();
    let inputs = SHAPES
        .iter()
        .enumerate()
        .map(|(i, dims)| Tensor::f32(dims.to_vec(), values(dims[0] * dims[1], 20 + i as u64)))
        .collect();
    (g, inputs)
}

fn in_precision(products: ProductPrecision) -> CpuOptions {
    CpuOptions {
        products,
        ..options(Some(2), WeightFormat::F32)
    }
}

fn rounded(t: &Tensor) -> Tensor {
    let values = t
        .as_f32()
        .unwrap()
        .iter()
        .map(|&v| bf16::from_f32(v).to_f32())
        .collect();
    Tensor::f32(t.shape().dims().to_vec(), values)
}

#[test]
fn large_products_match_the_interpreter_on_bfloat16_operands() {
    let (g, inputs) = products();
    let exe = compile(&g, in_precision(ProductPrecision::Bf16));
    let out = exe.run(&inputs).unwrap();
    let exact = interpret(&g, &inputs, Precision::F32).unwrap();
    if !bf16_products_available() {
        eprintln!("no AVX512_BF16 here: Bf16 runs as F32");
        assert_eq!(exe.plan_summary().count("gemm_bf16"), 0);
        for (o, e) in out.iter().zip(&exact) {
            compare(o, e, Tolerance::F32).unwrap();
        }
        return;
    }
    assert_eq!(
        exe.plan_summary().count("gemm_bf16"),
        2,
        "{:?}",
        exe.plan_summary().kernels
    );
    let rounded_inputs: Vec<Tensor> = inputs.iter().map(rounded).collect();
    let on_rounded = interpret(&g, &rounded_inputs, Precision::F32).unwrap();
    for (name, i) in [("forward", 0), ("gradient", 1)] {
        compare(&out[i], &on_rounded[i], Tolerance::F32).unwrap_or_else(|m| panic!("{name}: {m}"));
        assert!(
            compare(&out[i], &exact[i], Tolerance::F32).is_err(),
            "{name}: within f32 tolerance of the unrounded product, so the operands were not rounded"
        );
    }
    // The small product stays f32.
    compare(&out[2], &exact[2], Tolerance::F32).unwrap();
}

#[test]
fn f32_precision_plans_no_bfloat16_product() {
    let (g, inputs) = products();
    let exe = compile(&g, in_precision(ProductPrecision::F32));
    assert_eq!(exe.plan_summary().count("gemm_bf16"), 0);
    let out = exe.run(&inputs).unwrap();
    let exact = interpret(&g, &inputs, Precision::F32).unwrap();
    for (o, e) in out.iter().zip(&exact) {
        compare(o, e, Tolerance::F32).unwrap();
    }
}

/// `gelu(x · W1ᵀ + b) ` and `x · W2ᵀ` with constant weights (prefill's products): packed once as
/// bfloat16 pairs (split by columns, with the bias and GELU as its epilogue; split by rows), and
/// matching the interpreter run with `x` and the weights rounded to bfloat16.
#[test]
fn constant_weights_are_packed_as_bfloat16_pairs_and_epilogues_still_apply() {
    let (m, k, wide, narrow) = (300, 256, 400, 96);
    let build = |round: bool| {
        let value = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| if round { bf16::from_f32(x).to_f32() } else { x })
                .collect()
        };
        let mut g = Graph::new("prefill");
        let x = g.input("x", TensorType::new(DType::F32, [m, k])).unwrap();
        let w1 = g
            .constant(Tensor::f32([wide, k], value(&values(wide * k, 31))))
            .unwrap();
        let b = g.constant(Tensor::f32([wide], values(wide, 32))).unwrap();
        let w2 = g
            .constant(Tensor::f32([narrow, k], value(&values(narrow * k, 33))))
            .unwrap();
        let product = g.matmul(x, w1, false, true).unwrap();
        let biased = g.add(product, b).unwrap();
        let activated = orion_core::composite::gelu_tanh(&mut g, biased).unwrap();
        let other = g.matmul(x, w2, false, true).unwrap();
        g.set_output("activated", activated).unwrap();
        g.set_output("other", other).unwrap();
        g
    };
    let (g, on_rounded) = (build(false), build(true));
    let inputs = vec![Tensor::f32([m, k], values(m * k, 30))];
    let exe = compile(&g, in_precision(ProductPrecision::Bf16));
    let summary = exe.plan_summary().clone();
    let out = exe.run(&inputs).unwrap();
    let exact = interpret(&g, &inputs, Precision::F32).unwrap();
    if !bf16_products_available() {
        assert_eq!(summary.bf16_packed_weights, 0);
        return;
    }
    assert_eq!(
        (summary.packed_weights, summary.bf16_packed_weights),
        (2, 2),
        "{summary}"
    );
    assert_eq!(summary.count("gemm_packed_epilogue"), 1, "{:?}", summary.kernels);
    let expected = interpret(&on_rounded, &[rounded(&inputs[0])], Precision::F32).unwrap();
    for (i, name) in ["activated", "other"].iter().enumerate() {
        compare(&out[i], &expected[i], Tolerance::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            compare(&out[i], &exact[i], Tolerance::F32).is_err(),
            "{name}: not rounded"
        );
    }
    // The same plan in F32 packs f32 strips.
    let f32_plan = compile(&g, in_precision(ProductPrecision::F32));
    assert_eq!(f32_plan.plan_summary().bf16_packed_weights, 0);
}
