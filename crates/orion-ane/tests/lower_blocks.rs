//! Lowering whole transformer blocks: the GPT-2 and Llama reference blocks, forward and backward
//! (autodiff with `Seed::Cotangents`, gradients for every input), optimised by the core pipeline, are
//! lowered for m4 (ios18) and m1 (ios16) with
//! - weights as IR inputs (`WeightMode::Baked`: nothing to bake but the causal mask),
//! - weights turned into IR constants and baked (BLOBFILE constants, linears as 1×1 convs),
//! - weights turned into IR constants lowered with `WeightMode::Inputs` (constants become inputs),
//!
//! and every program round-trips (print → parse → to_graph → interpret) to the reference interpreter's
//! results, both sides in fp16 rounding.
//!
//! Tolerance: `Tolerance::F16` (abs 1e-3, rel 1e-2). Both sides run the same ops with the same
//! rounding; the lowering only adds exact rewrites (zero padding of contractions and concats, `x + 0`
//! broadcasts, `x · −1`, `1 / x`). What could differ is the f32 accumulation order inside a conv versus
//! a matmul (a 1-ulp fp16 difference in a few elements) and its propagation; at the time of writing the
//! results of these blocks are bit-identical, so the standard fp16 bound leaves a wide margin.

mod lower_support;

use lower_support::{check_lowering, data, inputs_for, m1, m4};
use orion_ane::lower::{LowerOptions, WeightMode};
use orion_core::autodiff::{grad, Seed};
use orion_core::interp::tolerance::Tolerance;
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::{Graph, Op, Tensor, ValueId};

/// The block's forward graph and its backward graph (forward outputs + gradients of every input).
fn forward_and_backward(forward: Graph) -> [Graph; 2] {
    let names: Vec<String> = forward.inputs().map(|(n, _, _)| n.to_string()).collect();
    let wrt: Vec<&str> = names.iter().map(String::as_str).collect();
    let backward = grad(&forward, &wrt, Seed::Cotangents).expect("autodiff");
    [forward, backward]
}

fn optimised(g: &Graph) -> Graph {
    optimise(g, &PipelineOptions::default()).expect("optimise").graph
}

/// `g` with every input except `keep` replaced by a constant holding its value from `inputs`.
fn bake_inputs(g: &Graph, inputs: &[Tensor], keep: &[&str]) -> (Graph, Vec<Tensor>) {
    let mut out = Graph::new(g.name());
    let mut map: Vec<Option<ValueId>> = vec![None; g.values().len()];
    let mut kept = Vec::new();
    let mut input_index = 0;
    for node in g.nodes() {
        let new_values = match &node.op {
            Op::Input { name, ty } => {
                let value = inputs[input_index].clone();
                input_index += 1;
                if keep.contains(&name.as_str()) {
                    kept.push(value);
                    vec![out.input(name.clone(), ty.clone()).expect("input")]
                } else {
                    vec![out.constant(value).expect("constant")]
                }
            }
            op => {
                let operands: Vec<ValueId> = node.inputs.iter().map(|v| map[v.index()].expect("mapped")).collect();
                out.add_like(op, operands).expect("node")
            }
        };
        for (old, new) in node.outputs.iter().zip(new_values) {
            map[old.index()] = Some(new);
        }
    }
    for o in g.outputs() {
        out.set_output(o.name.clone(), map[o.value.index()].expect("output"))
            .expect("output");
    }
    (out, kept)
}

/// Scales weights so that activations stay of order one (random ±1 weights in 8 channels are fine).
fn block_inputs(g: &Graph) -> Vec<Tensor> {
    let mut inputs = inputs_for(g, 17);
    for (t, (name, _, _)) in inputs.iter_mut().zip(g.inputs()) {
        if name.starts_with("rope_") {
            // Plausible cos/sin tables: values in [-1, 1] already; keep them.
            continue;
        }
        if name.starts_with("grad_") {
            let n = t.numel();
            *t = Tensor::f32(t.shape().dims().to_vec(), data(n, 99).iter().map(|v| v * 0.5).collect());
        }
    }
    inputs
}

fn check_block(forward: Graph) {
    for graph in forward_and_backward(forward) {
        let graph = optimised(&graph);
        let inputs = block_inputs(&graph);
        let activations = ["x", "grad_y", "rope_cos", "rope_sin"];
        let (baked, baked_inputs) = bake_inputs(&graph, &inputs, &activations);
        let baked = optimised(&baked);
        for profile in [m4(), m1()] {
            let tol = Tolerance::F16;
            let inputs_mode = LowerOptions {
                weights: WeightMode::Inputs,
                ..LowerOptions::default()
            };
            let p = check_lowering(&graph, &inputs, &profile, &LowerOptions::default(), tol);
            assert!(
                p.weights.len() <= 1,
                "only the causal mask is a constant: {:?}",
                p.weights.keys()
            );
            let p = check_lowering(&baked, &baked_inputs, &profile, &LowerOptions::default(), tol);
            assert!(p.weights.len() > 4, "{} weight files", p.weights.len());
            assert!(p.mil_text.contains("= conv("), "baked linears are convs");
            let p = check_lowering(&baked, &baked_inputs, &profile, &inputs_mode, tol);
            assert!(p.weights.is_empty(), "{:?}", p.weights.keys());
        }
    }
}

#[test]
fn gpt2_block_forward_and_backward() {
    check_block(gpt2_block(&BlockConfig::tiny()).expect("gpt2 block"));
}

#[test]
fn llama_block_forward_and_backward() {
    check_block(llama_block(&BlockConfig::tiny()).expect("llama block"));
}

#[test]
fn wider_blocks_lower_with_aligned_surfaces() {
    // A configuration whose surfaces meet the 64-byte last-axis rule (S = 32 fp16, C22): no warnings.
    let cfg = BlockConfig {
        seq_len: 32,
        dim: 32,
        heads: 2,
        kv_heads: 2,
        hidden: 64,
        dtype: orion_core::DType::F32,
    };
    let g = optimised(&llama_block(&cfg).expect("llama block"));
    let inputs = block_inputs(&g);
    let (baked, baked_inputs) = bake_inputs(&g, &inputs, &["x", "rope_cos", "rope_sin"]);
    let baked = optimised(&baked);
    let p = check_lowering(&baked, &baked_inputs, &m4(), &LowerOptions::default(), Tolerance::F16);
    assert!(p.lint.is_empty(), "{:?}", p.lint);
}

// ---- golden programs ---------------------------------------------------------------------------

/// Golden MIL texts: a baked linear layer (conv + separate bias add), the same layer with its weights
/// as inputs, a causal attention core and an RMSNorm, each in both dialects. Compared byte for byte;
/// `ORION_BLESS=1 cargo test -p orion-ane --test lower_blocks golden` rewrites them.
#[test]
fn golden_programs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("ORION_BLESS").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for (name, graph, weights) in golden_graphs() {
        for (profile, dialect) in [(m4(), "ios18"), (m1(), "ios16")] {
            let options = LowerOptions {
                weights,
                ..LowerOptions::default()
            };
            let inputs = inputs_for(&graph, 23);
            let program = check_lowering(&graph, &inputs, &profile, &options, Tolerance::F16);
            let path = dir.join(format!("{name}.{dialect}.mil"));
            if bless {
                std::fs::create_dir_all(&dir).expect("golden dir");
                std::fs::write(&path, &program.mil_text).expect("write golden");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == program.mil_text => {}
                Ok(_) => mismatches.push(format!("{} differs:\n{}", path.display(), program.mil_text)),
                Err(e) => mismatches.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(rerun with ORION_BLESS=1 to accept the new text)",
        mismatches.join("\n")
    );
}

fn golden_graphs() -> Vec<(&'static str, Graph, WeightMode)> {
    use orion_core::composite::{causal_attention, linear_bias, rms_norm};
    use orion_core::{DType, TensorType};
    let f32_ty = |dims: &[usize]| TensorType::new(DType::F32, dims.to_vec());
    let linear = || {
        let mut g = Graph::new("linear");
        let x = g.input("x", f32_ty(&[32, 64])).unwrap();
        let w = g.constant(Tensor::f32([48, 64], data(48 * 64, 1))).unwrap();
        let b = g.constant(Tensor::f32([48], data(48, 2))).unwrap();
        let y = linear_bias(&mut g, x, w, b).unwrap();
        g.set_output("y", y).unwrap();
        g
    };
    let mut attention = Graph::new("attention");
    let q = attention.input("q", f32_ty(&[2, 32, 16])).unwrap();
    let k = attention.input("k", f32_ty(&[2, 32, 16])).unwrap();
    let v = attention.input("v", f32_ty(&[2, 32, 16])).unwrap();
    let o = causal_attention(&mut attention, q, k, v).unwrap();
    attention.set_output("o", o).unwrap();
    let mut rmsnorm = Graph::new("rmsnorm");
    let x = rmsnorm.input("x", f32_ty(&[32, 64])).unwrap();
    let w = rmsnorm.input("weight", f32_ty(&[64])).unwrap();
    let y = rms_norm(&mut rmsnorm, x, w, 1e-5).unwrap();
    rmsnorm.set_output("y", y).unwrap();
    vec![
        ("linear_baked", optimised(&linear()), WeightMode::Baked),
        ("linear_inputs", optimised(&linear()), WeightMode::Inputs),
        ("attention", optimised(&attention), WeightMode::Baked),
        ("rmsnorm", optimised(&rmsnorm), WeightMode::Baked),
    ]
}
