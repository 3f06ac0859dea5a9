//! `orion train` end to end: a short run writes metrics, a checkpoint, the exported model and a
//! sample; a run killed after a checkpoint and resumed ends with byte-identical weights to an
//! uninterrupted run; unsupported devices and strategies are refused clearly; `--products bf16`
//! trains, and resuming its checkpoint in another precision is refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{"family": "llama", "dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
 "vocab_size": 300, "hidden_dim": 32, "max_seq_len": 16, "norm_eps": 1e-5, "rope_theta": 10000.0,
 "tied_embeddings": true, "biases": false}"#;

fn orion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orion"))
}

/// A small text, a model config and the common flags of a tiny run writing into `out`.
fn setup(dir: &Path) -> (String, String) {
    let text: String = (0..400)
        .map(|i| format!("The cat {} sat on mat number {}. ", ["Tom", "Ann", "Bo"][i % 3], i % 7))
        .collect();
    std::fs::write(dir.join("data.txt"), text).unwrap();
    std::fs::write(dir.join("model.json"), CONFIG).unwrap();
    (
        dir.join("data.txt").display().to_string(),
        dir.join("model.json").display().to_string(),
    )
}

fn tiny_run(dir: &Path, out: &str, steps: u32, extra: &[&str]) -> Command {
    let (data, model) = setup(dir);
    let mut cmd = orion();
    cmd.args(["train", "--quiet", "--data", &data, "--model", &model, "--out", out])
        .args(["--steps", &steps.to_string(), "--batch-size", "2", "--seq-len", "16"])
        .args(["--checkpoint-every", "2", "--eval-every", "5", "--sample-tokens", "0"])
        .args(extra);
    cmd
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The tensor data of a safetensors file: everything after the JSON header. (The header's metadata
/// keys come from a hash map, so their order, not the weights, may differ between two exports.)
fn tensor_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..].to_vec()
}

#[test]
fn a_short_run_writes_metrics_checkpoint_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    ok(tiny_run(dir.path(), &out, 6, &[]).output().unwrap());
    let metrics = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[4]["val_loss"].as_f64().unwrap().is_finite());
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.model",
        "loss.png",
        "checkpoint.orionckpt",
    ] {
        assert!(dir.path().join("out").join(file).is_file(), "{file} missing");
    }
}

#[test]
fn killed_and_resumed_run_ends_with_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight").display().to_string();
    ok(tiny_run(dir.path(), &straight, 40, &[]).output().unwrap());
    let broken = dir.path().join("broken");
    let broken_s = broken.display().to_string();
    let mut child = tiny_run(dir.path(), &broken_s, 40, &[]).spawn().unwrap();
    let start = Instant::now();
    while !broken.join("checkpoint.orionckpt").exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !broken.join("model.safetensors").exists(),
        "the run finished before it was killed"
    );
    ok(tiny_run(dir.path(), &broken_s, 40, &["--resume", &broken_s])
        .output()
        .unwrap());
    let a = tensor_bytes(&dir.path().join("straight/model.safetensors"));
    let b = tensor_bytes(&broken.join("model.safetensors"));
    assert!(a == b, "resumed weights differ from the uninterrupted run");
}

#[test]
fn the_real_ane_is_refused_where_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let result = tiny_run(dir.path(), &out, 1, &["--device", "ane"]).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("no ANE on this machine"), "{stderr}");
}

/// `--strategy patch` on the simulated M4, whose reloaded weight files do not take effect (C07): the
/// first check fails, the run says so, falls back to `recompile`, and its losses are the recompile
/// run's, step for step.
#[test]
fn patch_strategy_falls_back_on_the_simulated_m4_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (name, strategy) in [("rec", "recompile"), ("patch", "patch")] {
        let out = dir.path().join(name).display().to_string();
        let args = ["--device", "ane-sim", "--strategy", strategy];
        let result = ok(tiny_run(dir.path(), &out, 4, &args).output().unwrap());
        let stderr = String::from_utf8_lossy(&result.stderr).to_string();
        assert_eq!(
            name == "patch",
            stderr.contains("falling back to recompile at step 1"),
            "{stderr}"
        );
        assert_eq!(name == "patch", stderr.contains("C07"), "{stderr}");
        runs.push(losses(&dir.path().join(name).join("metrics.jsonl")));
    }
    assert_eq!(runs[0], runs[1]);
    let metrics = std::fs::read_to_string(dir.path().join("patch/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["strategy"], "recompile");
    assert!(last["update_ms"].as_f64().unwrap() > 0.0);
}

fn losses(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// 50 steps with the layer programs on the simulated ANE (fp16, weights as inputs, loss scale 1024)
/// track the all-f32 CPU run. Tolerance: fp16 keeps 11 significant bits (relative rounding 2^-11 ≈
/// 4.9e-4 per value), so the loss (computed on the CPU from fp16 layer outputs) starts within a few
/// 1e-4 and then drifts as the fp16 gradients move the weights slightly differently each step; 1e-2
/// relative allows that drift over 50 steps (observed: below 3e-4) while a wrong gradient, a dropped
/// loss-scale factor or a skipped update moves the trajectory by far more.
#[test]
fn ane_sim_losses_track_cpu_within_fp16_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for device in ["cpu", "ane-sim"] {
        let out = dir.path().join(device).display().to_string();
        let extra = ["--device", device, "--checkpoint-every", "0"];
        let (data, model) = setup(dir.path());
        let mut cmd = orion();
        cmd.args(["train", "--quiet", "--data", &data, "--model", &model, "--out", &out])
            .args([
                "--steps",
                "50",
                "--batch-size",
                "2",
                "--seq-len",
                "16",
                "--sample-tokens",
                "0",
            ])
            .args(extra);
        ok(cmd.output().unwrap());
        runs.push(losses(&dir.path().join(device).join("metrics.jsonl")));
    }
    assert_eq!(runs[0].len(), 50);
    assert!(
        runs[0][49] < 0.8 * runs[0][0],
        "the CPU run did not learn: {:?}",
        runs[0]
    );
    for (step, (cpu, sim)) in runs[0].iter().zip(&runs[1]).enumerate() {
        let rel = ((cpu - sim) / cpu).abs();
        assert!(
            rel < 1e-2,
            "step {}: cpu {cpu} vs ane-sim {sim} (relative {rel:e})",
            step + 1
        );
    }
}

/// `--init` starts from exported weights: the first loss of the fine-tuning run is the trained
/// model's loss level, far below the first loss of a run from random weights.
#[test]
fn init_fine_tunes_from_exported_weights() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first").display().to_string();
    ok(tiny_run(dir.path(), &first, 40, &[]).output().unwrap());
    let tuned = dir.path().join("tuned").display().to_string();
    let init = dir.path().join("first/model.safetensors").display().to_string();
    ok(tiny_run(dir.path(), &tuned, 2, &["--init", &init]).output().unwrap());
    let from_scratch = losses(&dir.path().join("first/metrics.jsonl"));
    let fine_tuned = losses(&dir.path().join("tuned/metrics.jsonl"));
    assert!(
        fine_tuned[0] < 0.8 * from_scratch[0],
        "{} vs {}",
        fine_tuned[0],
        from_scratch[0]
    );
}

/// `--strategy recompile` on the simulator: weights baked and recompiled after every update; with a
/// budget of 20 compiles per process it checkpoints and re-executes itself several times, and its
/// losses equal those of the weights-as-inputs run within the fp16 tolerance argued above.
#[test]
fn recompile_strategy_restarts_at_the_compile_budget_and_tracks_dynamic() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (name, extra) in [
        ("dyn", vec![]),
        ("rec", vec!["--strategy", "recompile", "--compile-budget", "20"]),
    ] {
        let out = dir.path().join(name).display().to_string();
        let mut args = vec!["--device", "ane-sim"];
        args.extend(extra);
        let result = ok(tiny_run(dir.path(), &out, 12, &args).output().unwrap());
        let stderr = String::from_utf8_lossy(&result.stderr).to_string();
        assert_eq!(name == "rec", stderr.contains("restarting with --resume"), "{stderr}");
        runs.push(losses(&dir.path().join(name).join("metrics.jsonl")));
    }
    assert_eq!(runs[1].len(), 12);
    for (step, (a, b)) in runs[0].iter().zip(&runs[1]).enumerate() {
        assert!(((a - b) / a).abs() < 1e-2, "step {}: {a} vs {b}", step + 1);
    }
}

/// `--products bf16` (bfloat16 operands, f32 sums) trains the built-in default model for a few
/// steps to finite losses; an unknown precision is refused before anything runs.
#[test]
fn bf16_products_train_the_default_model_and_unknown_precisions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bf16").display().to_string();
    let args = [
        "--products",
        "bf16",
        "--device",
        "cpu",
        "--steps",
        "3",
        "--sample-tokens",
        "0",
    ];
    ok(orion()
        .args(["train", "--quiet", "--out", &out])
        .args(args)
        .output()
        .unwrap());
    let losses = losses(&dir.path().join("bf16/metrics.jsonl"));
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");

    let other = dir.path().join("fp8").display().to_string();
    let result = orion()
        .args(["train", "--quiet", "--out", &other, "--products", "fp8", "--steps", "1"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("fp8") && stderr.contains("bf16"), "{stderr}");
    assert!(!dir.path().join("fp8").exists(), "a refused run wrote {other}");
}

/// A checkpoint records `--products`: resuming it in the other precision is refused, naming the
/// flag, and the same precision continues.
#[test]
fn resuming_with_other_products_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    ok(tiny_run(dir.path(), &out, 2, &["--products", "bf16"]).output().unwrap());
    let resume = ["--resume", out.as_str()];
    let result = tiny_run(dir.path(), &out, 3, &resume).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("--products bf16"), "{stderr}");
    let same = [resume[0], resume[1], "--products", "bf16"];
    ok(tiny_run(dir.path(), &out, 3, &same).output().unwrap());
    assert_eq!(losses(&dir.path().join("out/metrics.jsonl")).len(), 3);
}
