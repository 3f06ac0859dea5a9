//! Model graphs against PyTorch: logits of the tiny seeded GPT-2 and Llama fixtures (written by
//! `tools/make_tiny_models.py` with Hugging Face transformers, computed in float64) from every file
//! format, on the reference interpreter and on the CPU backend, plus greedy continuations.

use orion_core::backend::{Backend, ReferenceBackend};
use orion_core::cpu::CpuBackend;
use orion_core::interp::Precision;
use orion_core::{DType, Tensor};
use orion_models::generate::{forward_logits, reforward_greedy};
use orion_models::model::{build_decode_step, build_forward, build_prefill, token_tensor};
use orion_models::{Model, WeightMode};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(rel)
}

struct Expected {
    prompt: Vec<u32>,
    logits: Vec<Vec<f64>>,
    greedy: Vec<u32>,
}

fn expected(model: &str) -> Expected {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let entry = &json[model];
    let ids = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Expected {
        prompt: ids(&entry["prompt"]),
        logits: entry["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect(),
        greedy: ids(&entry["greedy"]),
    }
}

/// The f32 tolerance of the brief: 1e-4, relative for logits larger than one.
fn assert_logits_close(actual: &Tensor, expected: &[Vec<f64>], tol: f64, what: &str) {
    let rows = expected.len();
    let vocab = expected[0].len();
    assert_eq!(actual.shape().dims(), &[rows, vocab], "{what}");
    let values = actual.to_f32_vec();
    let mut worst = 0.0f64;
    for (r, row) in expected.iter().enumerate() {
        for (c, &e) in row.iter().enumerate() {
            let a = f64::from(values[r * vocab + c]);
            let err = (a - e).abs() / e.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err <= tol,
                "{what}: logits[{r}][{c}] = {a}, PyTorch {e} (scaled error {err:e})"
            );
        }
    }
    assert!(worst.is_finite(), "{what}");
}

fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(ReferenceBackend {
            precision: Precision::F32,
        }),
        Box::new(CpuBackend::default()),
    ]
}

fn check_model(model: &Model, name: &str, what: &str) {
    let exp = expected(name);
    for backend in backends() {
        let label = format!("{what} on {}", backend.name());
        let logits = forward_logits(model, backend.as_ref(), &exp.prompt).unwrap();
        assert_logits_close(&logits, &exp.logits, 1e-4, &label);
        let greedy = reforward_greedy(model, backend.as_ref(), &exp.prompt, exp.greedy.len()).unwrap();
        assert_eq!(greedy, exp.greedy, "{label}: greedy continuation");
    }
}

#[test]
fn gpt2_hf_safetensors_matches_pytorch() {
    let model = Model::load(&fixture("gpt2_tiny"), None).unwrap();
    check_model(&model, "gpt2_tiny", "gpt2 (HF safetensors)");
}

#[test]
fn llama_hf_safetensors_matches_pytorch() {
    let model = Model::load(&fixture("llama_tiny/model.safetensors"), None).unwrap();
    check_model(&model, "llama_tiny", "llama (HF safetensors)");
}

#[test]
fn llama2c_legacy_bin_matches_pytorch() {
    let model = Model::load(&fixture("llama_tiny/llama2c_v0.bin"), None).unwrap();
    assert!(
        !model.config().tied_embeddings,
        "negative vocab in the header means a separate head"
    );
    check_model(&model, "llama_tiny", "llama (llama2.c legacy .bin)");
}

#[test]
fn llama2c_v1_bin_matches_pytorch() {
    let model = Model::load(&fixture("llama_tiny/llama2c_v1.bin"), None).unwrap();
    check_model(&model, "llama_tiny", "llama (llama2.c v1 .bin)");
}

#[test]
fn constants_and_inputs_give_the_same_logits() {
    let model = Model::load(&fixture("llama_tiny"), None).unwrap();
    let exp = expected("llama_tiny");
    let graph = model
        .forward_graph(exp.prompt.len(), DType::F32, WeightMode::Constants)
        .unwrap();
    assert_eq!(graph.inputs().count(), 1, "only the tokens remain an input");
    let exe = CpuBackend::default().compile(&graph).unwrap();
    let tokens = token_tensor(&exp.prompt, 64).unwrap();
    let inputs = model.bind(&graph, vec![("tokens", tokens)]).unwrap();
    let logits = exe.run(&inputs).unwrap().remove(0);
    assert_logits_close(&logits, &exp.logits, 1e-4, "llama, weights as constants");
}

#[test]
fn f16_forward_stays_close_to_pytorch() {
    // Every op rounds to half (unit roundoff 2^-11 ≈ 4.9e-4) through ~2 layers of ~30 ops each on
    // values up to ~10, so errors of a few hundredths are expected; 0.1 (scaled) catches wiring bugs
    // (a wrong mask or permutation moves logits by whole units).
    let model = Model::load(&fixture("gpt2_tiny"), None).unwrap();
    let exp = expected("gpt2_tiny");
    let graph = model
        .forward_graph(exp.prompt.len(), DType::F16, WeightMode::Inputs)
        .unwrap();
    let exe = ReferenceBackend {
        precision: Precision::F32,
    }
    .compile(&graph)
    .unwrap();
    let inputs = model
        .bind(&graph, vec![("tokens", token_tensor(&exp.prompt, 64).unwrap())])
        .unwrap();
    let logits = exe.run(&inputs).unwrap().remove(0);
    assert_eq!(logits.dtype(), DType::F16);
    let as_f32 = Tensor::f32(logits.shape().clone(), logits.to_f32_vec());
    assert_logits_close(&as_f32, &exp.logits, 0.1, "gpt2 in f16");
}

#[test]
fn graphs_declare_the_documented_signatures() {
    let model = Model::load(&fixture("llama_tiny"), None).unwrap();
    let cfg = model.config();
    let forward = build_forward(cfg, 5, DType::F32).unwrap();
    let names: Vec<&str> = forward.inputs().map(|(n, _, _)| n).collect();
    assert_eq!(names[0], "tokens");
    assert_eq!(names.len(), 1 + orion_models::model::weight_specs(cfg).len());
    assert_eq!(
        forward.ty(forward.output_value("logits").unwrap()).shape.dims(),
        &[5, 64]
    );

    let prefill = build_prefill(cfg, 5, DType::F32).unwrap();
    assert_eq!(
        prefill.ty(prefill.output_value("logits").unwrap()).shape.dims(),
        &[1, 64]
    );
    assert_eq!(
        prefill.ty(prefill.output_value("k.1").unwrap()).shape.dims(),
        &[2, 5, 8]
    );

    let decode = build_decode_step(cfg, 16, DType::F32).unwrap();
    let names: Vec<&str> = decode.inputs().map(|(n, _, _)| n).take(5).collect();
    assert_eq!(names, ["token", "position", "mask", "cache.k.0", "cache.v.0"]);
    assert_eq!(
        decode.ty(decode.input_value("cache.v.1").unwrap()).shape.dims(),
        &[2, 16, 8]
    );
    assert_eq!(decode.ty(decode.output_value("v.0").unwrap()).shape.dims(), &[2, 1, 8]);

    let too_long = build_forward(cfg, 33, DType::F32).unwrap_err().to_string();
    assert!(too_long.contains("33") && too_long.contains("32"), "{too_long}");
    assert!(build_forward(cfg, 4, DType::I32).is_err());
}

#[test]
fn bind_reports_missing_and_unknown_inputs() {
    let model = Model::load(&fixture("gpt2_tiny"), None).unwrap();
    let graph = model.forward_graph(3, DType::F32, WeightMode::Inputs).unwrap();
    let missing = model.bind(&graph, vec![]).unwrap_err().to_string();
    assert!(missing.contains("tokens"), "{missing}");
    let tokens = token_tensor(&[1, 2, 3], 64).unwrap();
    let unknown = model
        .bind(&graph, vec![("tokens", tokens.clone()), ("extra", tokens)])
        .unwrap_err();
    assert!(unknown.to_string().contains("extra"), "{unknown}");
    let out_of_vocab = token_tensor(&[64], 64).unwrap_err().to_string();
    assert!(out_of_vocab.contains("64"), "{out_of_vocab}");
}
