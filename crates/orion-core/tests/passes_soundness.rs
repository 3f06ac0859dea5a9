//! Soundness of the pass pipeline: optimising a graph never changes what it computes.
//!
//! For random graphs (`testing::random_graph`) and the reference transformer blocks, the reference
//! interpreter (f32 precision) must give the same outputs, within `Tolerance::F32`, before and after
//! `optimise` and before and after every single pass. Each optimised graph must also keep the
//! graph's interface (input names/order/types, output names/order/types) and pass the verifier
//! (`PipelineOptions::verify` is on in these tests).

use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::passes::{optimise, pass_names, run_pass, PassContext, PipelineOptions};
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::testing::random_graph::{random_graph, random_inputs, RandomGraphOptions};
use orion_core::text::print;
use orion_core::verify::verify;
use orion_core::{Graph, Tensor, TensorType};
use proptest::prelude::*;

fn verifying() -> PipelineOptions {
    PipelineOptions {
        verify: true,
        ..PipelineOptions::default()
    }
}

/// `(name, type)` of every input or output, in order.
type Slots = Vec<(String, TensorType)>;

fn signature(g: &Graph) -> (Slots, Slots) {
    let inputs = g.inputs().map(|(n, _, t)| (n.to_string(), t.clone())).collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), g.ty(o.value).clone()))
        .collect();
    (inputs, outputs)
}

/// Fails with a message naming `what` and the first differing output.
fn same_results(before: &Graph, after: &Graph, inputs: &[Tensor], what: &str) -> Result<(), String> {
    if signature(before) != signature(after) {
        return Err(format!("{what}: the graph's interface changed"));
    }
    let expected = interpret(before, inputs, Precision::F32);
    let actual = interpret(after, inputs, Precision::F32);
    let (expected, actual) = match (expected, actual) {
        (Ok(e), Ok(a)) => (e, a),
        // A graph that fails to run (e.g. a bad index) must still fail after optimisation.
        (Err(_), Err(_)) => return Ok(()),
        (Ok(_), Err(e)) => return Err(format!("{what}: optimised graph fails: {e}")),
        (Err(e), Ok(_)) => return Err(format!("{what}: original fails ({e}) but optimised runs")),
    };
    for ((out, e), a) in before.outputs().iter().zip(&expected).zip(&actual) {
        compare(a, e, Tolerance::F32).map_err(|m| format!("{what}: output {:?}: {m}", out.name))?;
    }
    Ok(())
}

/// Checks `optimise` and every single pass on `g` with `inputs`.
fn check_graph(g: &Graph, inputs: &[Tensor]) -> Result<(), String> {
    let optimised = optimise(g, &verifying()).map_err(|e| format!("optimise failed: {e}"))?;
    same_results(g, &optimised.graph, inputs, "optimise")?;
    for name in pass_names() {
        let out = run_pass(name, g, &PassContext::default()).map_err(|e| format!("{name} failed: {e}"))?;
        verify(&out).map_err(|e| format!("{name} output does not verify: {e}"))?;
        same_results(g, &out, inputs, name)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn optimising_random_graphs_keeps_their_results(seed in any::<u64>()) {
        let g = random_graph(seed, &RandomGraphOptions::default());
        let inputs = random_inputs(&g, seed ^ 0x5eed);
        if let Err(message) = check_graph(&g, &inputs) {
            prop_assert!(false, "seed {seed}: {message}\n{}", print(&g));
        }
    }
}

#[test]
fn every_pass_rewrites_some_random_graphs() {
    // Not a meaning check: guards against a vacuous soundness test (a pass that silently stops
    // rewriting, or a generator that no longer produces what the passes look for). Over 64 random
    // graphs every pass must change some graph, and the pipeline must never add nodes.
    let seeds = 0..64u64;
    let mut changed: Vec<(&str, usize)> = pass_names().into_iter().map(|n| (n, 0)).collect();
    for seed in seeds {
        let g = random_graph(seed, &RandomGraphOptions::default());
        let before = print(&g);
        for (name, count) in changed.iter_mut() {
            let out = run_pass(name, &g, &PassContext::default()).expect("pass runs");
            if print(&out) != before {
                *count += 1;
            }
        }
        let optimised = optimise(&g, &verifying()).expect("optimise").graph;
        assert!(
            optimised.nodes().len() <= g.nodes().len(),
            "seed {seed}: pipeline grew the graph"
        );
    }
    for (name, count) in changed {
        assert!(count > 0, "{name} changed none of 64 random graphs");
    }
}

fn check_block(g: &Graph) {
    for seed in 0..3u64 {
        let inputs = random_inputs(g, seed);
        if let Err(message) = check_graph(g, &inputs) {
            panic!("{} seed {seed}: {message}", g.name());
        }
    }
}

#[test]
fn optimising_gpt2_block_keeps_its_results() {
    check_block(&gpt2_block(&BlockConfig::tiny()).expect("gpt2 block builds"));
}

#[test]
fn optimising_llama_block_keeps_its_results() {
    check_block(&llama_block(&BlockConfig::tiny()).expect("llama block builds"));
}

#[test]
fn optimising_f16_blocks_keeps_their_results() {
    let cfg = BlockConfig {
        dtype: orion_core::DType::F16,
        ..BlockConfig::tiny()
    };
    check_block(&gpt2_block(&cfg).expect("gpt2 f16 block builds"));
    check_block(&llama_block(&cfg).expect("llama f16 block builds"));
}
