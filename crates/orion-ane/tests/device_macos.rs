//! The real ANE on macOS, against the CPU reference. Compiled everywhere; off Apple platforms every test
//! is ignored (run on a Mac with `cargo test -p orion-ane --test device_macos -- --ignored`). Nothing here
//! has been run on hardware by the project.
//!
//! - every unary/binary op and a linear layer through `AneBackend` over `RealAne`, fp16 tolerance;
//! - the GPT-2 and Llama blocks (forward, weights as inputs) through the same path;
//! - the cache over the real device: a second compile of the same graph is a memory hit;
//! - every op the lowering accepts: `ORION_DEVICE_TESTS=1 cargo test -p orion-ane --test lower_ops`;
//! - model programs and 20 training steps: `orion-models/tests/device_models.rs`;
//! - the probe (quick: no budget count, no spill sweep) on this Mac's ANE, written to
//!   `$TMPDIR/orion-probe-<chip>.json` for the user to send back.

use orion_ane::backend::AneBackend;
use orion_ane::device::AneDevice;
use orion_ane::lower::{LowerOptions, WeightMode};
use orion_core::backend::{Backend, ReferenceBackend};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::Precision;
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::testing::random_graph::random_inputs;
use orion_core::{BinaryOp, DType, Graph, TensorType, UnaryOp};
use std::sync::Arc;

#[cfg(target_vendor = "apple")]
fn device() -> Arc<dyn AneDevice> {
    use orion_ane::device::macos::{host_info, RealAne};
    use orion_ane::profile::ChipProfile;
    let host = host_info();
    let chip = host
        .chip()
        .unwrap_or_else(|| panic!("unknown chip {:?}", host.cpu_brand));
    let profile = ChipProfile::builtin(chip.as_str()).expect("built-in profile");
    Arc::new(RealAne::open(profile).unwrap_or_else(|e| panic!("cannot open the ANE: {e}")))
}

#[cfg(not(target_vendor = "apple"))]
fn device() -> Arc<dyn AneDevice> {
    panic!("the real ANE exists only on macOS")
}

/// Runs `graph` on the device and on the fp16 reference interpreter and compares every output.
fn agrees(graph: &Graph, weights: WeightMode) -> Result<(), String> {
    let inputs = random_inputs(graph, 7);
    let reference = ReferenceBackend {
        precision: Precision::F16Rounding,
    };
    let expected = reference
        .compile(graph)
        .and_then(|e| e.run(&inputs))
        .map_err(|e| e.to_string())?;
    let backend = AneBackend::new(
        device(),
        LowerOptions {
            weights,
            ..LowerOptions::default()
        },
    );
    let actual = backend
        .compile(graph)
        .and_then(|e| e.run(&inputs))
        .map_err(|e| e.to_string())?;
    for (a, e) in actual.iter().zip(&expected) {
        compare(a, e, Tolerance::F16)?;
    }
    Ok(())
}

fn two_input(name: &str, op: BinaryOp) -> Graph {
    let mut g = Graph::new(name);
    let ty = TensorType::new(DType::F32, vec![32, 64]);
    let a = g.input("a", ty.clone()).unwrap();
    let b = g.input("b", ty).unwrap();
    let y = g.add_node(orion_core::Op::Binary(op), vec![a, b]).unwrap()[0];
    g.set_output("y", y).unwrap();
    g
}

fn one_input(name: &str, op: UnaryOp) -> Graph {
    let mut g = Graph::new(name);
    let x = g.input("x", TensorType::new(DType::F32, vec![32, 64])).unwrap();
    let y = g.add_node(orion_core::Op::Unary(op), vec![x]).unwrap()[0];
    g.set_output("y", y).unwrap();
    g
}

#[test]
#[cfg_attr(
    not(target_vendor = "apple"),
    ignore = "needs macOS with an ANE; run: cargo test -p orion-ane --test device_macos -- --ignored"
)]
fn elementwise_ops_agree_with_the_reference() {
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
        agrees(&two_input(op.name(), op), WeightMode::Inputs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    // Ops defined on the whole input range [-1, 1) of `random_inputs`.
    for op in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
    ] {
        agrees(&one_input(op.name(), op), WeightMode::Inputs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

#[test]
#[cfg_attr(
    not(target_vendor = "apple"),
    ignore = "needs macOS with an ANE; run: cargo test -p orion-ane --test device_macos -- --ignored"
)]
fn transformer_blocks_agree_with_the_reference() {
    let cfg = BlockConfig::tiny();
    for graph in [gpt2_block(&cfg).unwrap(), llama_block(&cfg).unwrap()] {
        agrees(&graph, WeightMode::Inputs).unwrap_or_else(|e| panic!("{}: {e}", graph.name()));
    }
}

#[test]
#[cfg_attr(
    not(target_vendor = "apple"),
    ignore = "needs macOS with an ANE; run: cargo test -p orion-ane --test device_macos -- --ignored"
)]
fn cache_hits_do_not_compile_again_on_the_device() {
    use orion_ane::cache::CachedBackend;
    let device = device();
    let backend = AneBackend::new(Arc::clone(&device), LowerOptions::default());
    let cache = CachedBackend::new(backend, 4, None);
    let graph = two_input("add", BinaryOp::Add);
    cache.compile(&graph).unwrap();
    cache.compile(&graph).unwrap();
    assert_eq!(device.compile_count(), 1);
}

#[test]
#[cfg_attr(
    not(target_vendor = "apple"),
    ignore = "needs macOS with an ANE; run: cargo test -p orion-ane --test device_macos -- --ignored"
)]
fn the_probe_measures_this_chip() {
    use orion_ane::probe::{run_probe, write_profile, ExperimentStatus, ProbeOptions};
    let device = device();
    let options = ProbeOptions {
        quick: true,
        repeats: 5,
        ..ProbeOptions::default()
    };
    let report = run_probe(device.as_ref(), &options).unwrap_or_else(|e| panic!("probe: {e}"));
    println!("{}", report.table());
    report.profile.validate().unwrap();
    let dialect = report.experiment("dialect").expect("a dialect experiment");
    assert_eq!(dialect.status, ExperimentStatus::Measured, "{}", dialect.observed);
    assert!(report.profile.cost.dispatch_floor_ms > 0.0 && report.profile.cost.bandwidth_gb_s > 0.0);
    let path = std::env::temp_dir().join(format!("orion-probe-{}.json", report.profile.id));
    write_profile(&report.profile, &path).unwrap();
    println!("probed profile written to {}", path.display());
}
