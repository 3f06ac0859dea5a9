//! End-to-end tests of `orion generate` and `orion logits` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn orion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(args)
        .output()
        .expect("the orion binary runs")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../orion-models/tests/fixtures")
}

fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'<f4'"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, values)
}

/// `orion logits` equals the logits PyTorch recorded for the same weights and tokens
/// (`tools/make_tiny_models.py`), from a safetensors directory and from a llama2.c file.
#[test]
fn logits_match_the_pytorch_fixture() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("models/expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (model, weights) in [
        ("gpt2_tiny", "models/gpt2_tiny"),
        ("llama_tiny", "models/llama_tiny/model.safetensors"),
        ("llama_tiny", "models/llama_tiny/llama2c_v0.bin"),
    ] {
        let case = &expected[model];
        let tokens: Vec<String> = case["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let out = dir.path().join(format!("{model}.npy"));
        let weights = fixtures().join(weights);
        let run = orion(&[
            "logits",
            "--weights",
            weights.to_str().unwrap(),
            "--tokens",
            &tokens.join(","),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let (shape, values) = read_npy_f32(&out);
        let rows = case["logits"].as_array().unwrap();
        assert_eq!(shape, [rows.len(), rows[0].as_array().unwrap().len()]);
        let reference: Vec<f64> = rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        let worst = values
            .iter()
            .zip(&reference)
            .map(|(&a, &e)| (a as f64 - e).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{model} from {}: max |diff| {worst}", weights.display());
    }
}

#[test]
fn generate_streams_a_continuation_with_a_matching_tokenizer() {
    // A random Llama with the fixture tokenizer's 512-token vocabulary (stories260K's shape).
    let dir = tempfile::tempdir().unwrap();
    let config = orion_models::ModelConfig::builtin("stories260K").unwrap();
    let model = orion_models::Model::random(config, 7).unwrap();
    let weights = dir.path().join("model.safetensors");
    orion_models::weights::export::export_safetensors(&model, &weights).unwrap();
    let tokenizer = fixtures().join("tokenizer/llama_bpe.model");
    let args = [
        "generate",
        "--weights",
        weights.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "6",
        "--temperature",
        "0.8",
        "--seed",
        "3",
    ];
    let first = orion(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let text = String::from_utf8(first.stdout.clone()).unwrap();
    assert!(text.starts_with("Once upon a time"), "{text}");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("tok/s") && stderr.contains("prefill"), "{stderr}");
    let again = orion(&args);
    assert_eq!(first.stdout, again.stdout, "the same seed gives the same text");
}

/// Greedy text on the simulated ANE (per-layer fp16 programs) equals the CPU's, and the timing line
/// names the device.
#[test]
fn ane_sim_generates_the_cpu_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = orion_models::ModelConfig::builtin("stories260K").unwrap();
    let model = orion_models::Model::random(config, 11).unwrap();
    let weights = dir.path().join("model.safetensors");
    orion_models::weights::export::export_safetensors(&model, &weights).unwrap();
    let tokenizer = fixtures().join("tokenizer/llama_bpe.model");
    let run = |device: &str| {
        orion(&[
            "generate",
            "--weights",
            weights.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--prompt",
            "The cat",
            "--max-tokens",
            "8",
            "--device",
            device,
        ])
    };
    let (cpu, sim) = (run("cpu"), run("ane-sim"));
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    assert_eq!(
        String::from_utf8_lossy(&sim.stdout),
        String::from_utf8_lossy(&cpu.stdout)
    );
    let stderr = String::from_utf8_lossy(&sim.stderr);
    assert!(
        stderr.contains("ane-sim") && stderr.contains("one program per layer"),
        "{stderr}"
    );
}

#[test]
fn bad_requests_fail_clearly() {
    let gpt2 = fixtures().join("models/gpt2_tiny");
    let gpt2 = gpt2.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["generate", "--weights", gpt2, "--prompt", "hi"],
            "do not belong together",
        ),
        (
            &["generate", "--weights", gpt2, "--prompt", "hi", "--device", "ane"],
            "no ANE on this machine",
        ),
        (
            &["logits", "--weights", gpt2, "--tokens", "1,999", "--out", "/tmp/x.npy"],
            "outside the model's vocabulary",
        ),
        (
            &[
                "logits",
                "--weights",
                "/nonexistent/model.bin",
                "--tokens",
                "1",
                "--out",
                "/tmp/x.npy",
            ],
            "cannot load",
        ),
    ];
    for (args, message) in cases {
        let run = orion(args);
        assert!(!run.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// `--products bf16` generates (a prompt long enough for the packed, bfloat16 prefill products);
/// an unknown precision is refused before anything runs.
#[test]
fn bf16_products_generate_and_unknown_precisions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = orion_models::ModelConfig::builtin("stories260K").unwrap();
    let model = orion_models::Model::random(config, 5).unwrap();
    let weights = dir.path().join("model.safetensors");
    orion_models::weights::export::export_safetensors(&model, &weights).unwrap();
    let tokenizer = fixtures().join("tokenizer/llama_bpe.model");
    let prompt = "Once upon a time there was a little girl who lived in a small house";
    let run = |products: &str| {
        orion(&[
            "generate",
            "--weights",
            weights.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--prompt",
            prompt,
            "--max-tokens",
            "5",
            "--products",
            products,
        ])
    };
    let bf16 = run("bf16");
    assert!(bf16.status.success(), "{}", String::from_utf8_lossy(&bf16.stderr));
    assert!(String::from_utf8_lossy(&bf16.stdout).starts_with(prompt));
    let refused = run("fp8");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fp8"));
    assert!(refused.stdout.is_empty());
}
