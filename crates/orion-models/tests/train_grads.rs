//! Training gradients against PyTorch: for the tiny seeded GPT-2 and Llama (GQA) fixtures and a fixed
//! batch (B=2, T=8), the loss and the gradient of EVERY parameter from the per-layer training
//! programs on the CPU match `tools/make_train_fixtures.py` (Hugging Face transformers, float64).

use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::train::{Batch, Params, StepPrograms, StepRunner};
use orion_models::Model;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> (Model, Value) {
    let model = Model::load(&fixtures().join("models").join(name), None).unwrap();
    let text = std::fs::read_to_string(fixtures().join("train").join(format!("{name}.json"))).unwrap();
    (model, serde_json::from_str(&text).unwrap())
}

fn flat_ids(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32))
        .collect()
}

fn batch_of(v: &Value) -> Batch {
    Batch {
        inputs: flat_ids(&v["inputs"]),
        targets: flat_ids(&v["targets"]),
    }
}

fn params_of(model: &Model) -> Params {
    model
        .weights()
        .into_iter()
        .map(|(name, t)| (name, t.to_f32_vec()))
        .collect()
}

fn runner(model: &Model) -> StepRunner {
    let cpu = CpuBackend::default();
    let programs = StepPrograms::new(model.config(), 8, 2, &cpu, DType::F32, &cpu).unwrap();
    StepRunner::new(model.config().clone(), 8, 2, programs)
}

/// ‖a − b‖ / max(‖b‖, floor), in f64. The floor (a thousandth of the global gradient norm) is for
/// tensors whose true gradient is zero: GPT-2's key bias adds the same score to every key of a query,
/// which softmax ignores, so PyTorch's ~1e-17 and our f32 rounding noise can only be compared absolutely.
fn norm_relative_error(a: &[f32], b: &[f64], floor: f64) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(floor)
}

fn check_grads(name: &str) {
    let (model, fixture) = load(name);
    let out = runner(&model)
        .loss_and_grads(&params_of(&model), &batch_of(&fixture["batch"]), 1.0)
        .unwrap();
    let want_loss = fixture["loss"].as_f64().unwrap();
    assert!(
        ((out.loss as f64 - want_loss) / want_loss).abs() < 1e-4,
        "{name}: loss {} vs {want_loss}",
        out.loss
    );
    let want = fixture["grads"].as_object().unwrap();
    let global: f64 = want
        .values()
        .flat_map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)))
        .sum::<f64>()
        .sqrt();
    assert_eq!(out.grads.len(), want.len(), "{name}: one gradient per parameter");
    for (param, values) in want {
        let expected: Vec<f64> = values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = out
            .grads
            .get(param)
            .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
        assert_eq!(got.len(), expected.len(), "{name}: {param} length");
        let err = norm_relative_error(got, &expected, 1e-3 * global);
        assert!(
            err < 1e-4,
            "{name}: gradient of {param} off by {err:e} (norm-wise relative)"
        );
    }
}

#[test]
fn gpt2_loss_and_every_gradient_match_pytorch() {
    check_grads("gpt2_tiny");
}

#[test]
fn llama_gqa_loss_and_every_gradient_match_pytorch() {
    check_grads("llama_tiny");
}

/// Every matrix gradient of a layer (dW = dyᵀ·x) is split out of the layer backward program and
/// computed by the CPU weight-GEMM program; the device program outputs none of them.
#[test]
fn weight_gradient_gemms_run_in_the_cpu_program() {
    for name in ["gpt2_tiny", "llama_tiny"] {
        let (model, _) = load(name);
        let programs = runner(&model).programs;
        let dw = programs.layer_dw.as_ref().expect("weight GEMMs split out");
        for weight in &programs.layer_weights {
            let rank = orion_models::model::weight_specs(model.config())
                .into_iter()
                .find(|s| &s.name == weight)
                .unwrap()
                .shape
                .len();
            let grad = format!("grad_{weight}");
            let on_cpu = dw.program.outputs.contains(&grad);
            let on_device = programs.layer.backward.outputs.contains(&grad);
            assert_eq!(on_cpu, rank == 2, "{name}: {grad} on the CPU");
            assert_eq!(on_device, rank != 2, "{name}: {grad} on the device");
        }
    }
}

/// The `recompile` strategy bakes each layer's weights into its own programs (only `x` and `grad_y`
/// stay inputs) and computes the same loss and gradients as the weights-as-inputs programs.
#[test]
fn baked_layer_programs_match_weights_as_inputs() {
    let (model, fixture) = load("llama_tiny");
    let params = params_of(&model);
    let batch = batch_of(&fixture["batch"]);
    let dynamic = runner(&model);
    let want = dynamic.loss_and_grads(&params, &batch, 1.0).unwrap();
    let mut baked = runner(&model);
    let compiles = baked
        .programs
        .recompile_layers(model.config(), &params, &CpuBackend::default())
        .unwrap();
    assert_eq!(compiles, 2 * model.config().n_layers);
    for layer in 0..model.config().n_layers {
        let pair = baked.programs.layer_pair(layer).unwrap();
        assert_eq!(pair.forward.inputs, ["x"]);
        assert_eq!(pair.backward.inputs, ["x", "grad_y"]);
    }
    let got = baked.loss_and_grads(&params, &batch, 1.0).unwrap();
    assert!((got.loss - want.loss).abs() <= 1e-5 * want.loss.abs());
    for (name, w) in &want.grads {
        let w64: Vec<f64> = w.iter().map(|v| *v as f64).collect();
        let err = norm_relative_error(&got.grads[name], &w64, 1e-9);
        assert!(err < 1e-5, "{name}: baked vs inputs off by {err:e}");
    }
}
