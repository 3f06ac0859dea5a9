//! `orion bench` end to end on a tiny Llama (seconds per run): the regression gate fails, naming the
//! figures, when every timed region is made slower on purpose; the suites report what they claim
//! (every program type with FLOPs matching a hand count, a training breakdown that adds up to the
//! step, cost-model estimates naming the chip, programs per strategy, the products precision
//! recorded and gated); bad requests fail clearly.
//! No test asserts that an unchanged rerun passes: the machine is shared and noisy.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// dim 16, 2 layers, 2 heads / 1 key-value head, hidden 32, vocabulary 300, context 64.
const CONFIG: &str = r#"{"family": "llama", "dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
 "vocab_size": 300, "hidden_dim": 32, "max_seq_len": 64, "norm_eps": 1e-5, "rope_theta": 10000.0,
 "tied_embeddings": true, "biases": false}"#;
const DIM: f64 = 16.0;
const KV_DIM: f64 = 8.0;
const HIDDEN: f64 = 32.0;
const HEADS: f64 = 2.0;
const HEAD_DIM: f64 = 8.0;

fn model(dir: &Path) -> String {
    let path = dir.join("tiny.json");
    std::fs::write(&path, CONFIG).unwrap();
    path.display().to_string()
}

/// Runs `orion bench SUITE --model tiny --quick ARGS`.
fn bench(dir: &Path, suite: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["bench", suite, "--model", &model(dir), "--quick"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The value of figure `figure` in row `row` of a saved run.
fn figure(run: &Value, row: &str, figure: &str) -> f64 {
    let r = run["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == row)
        .unwrap_or_else(|| panic!("no row {row:?} in {run}"));
    r["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == figure)
        .unwrap_or_else(|| panic!("no figure {figure:?} in row {row:?}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_gate_fails_naming_each_figure_made_slower_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let base_arg = base.to_str().unwrap();
    let common = ["--seq-len", "32", "--iterations", "2"];
    ok(bench(
        dir.path(),
        "inference",
        &[&common[..], &["--save-baseline", base_arg]].concat(),
    ));
    let saved = json(&base);
    assert_eq!(saved["format"], "orion-bench/1");
    assert_eq!(saved["config"]["suite"], "inference");
    // The delay (40 ms inside every program run) is hundreds of times a tiny model's prefill and
    // decode step, far beyond any noise: the gate must fail and name the time and the rate.
    let slow = bench(
        dir.path(),
        "inference",
        &[&common[..], &["--baseline", base_arg, "--inject-delay-ms", "40"]].concat(),
    );
    let stderr = failed(slow);
    assert!(stderr.contains("slower than the baseline"), "{stderr}");
    assert!(stderr.contains("prefill 16 ms"), "{stderr}");
    assert!(stderr.contains("decode tok/s"), "{stderr}");
    assert!(stderr.contains("first token (16-token prompt) ms"), "{stderr}");

    // The same for each program of the kernels suite.
    let kbase = dir.path().join("kernels.json");
    let kargs = ["--seq-len", "16", "--batch-size", "2"];
    ok(bench(
        dir.path(),
        "kernels",
        &[&kargs[..], &["--save-baseline", kbase.to_str().unwrap()]].concat(),
    ));
    let slow = bench(
        dir.path(),
        "kernels",
        &[
            &kargs[..],
            &["--baseline", kbase.to_str().unwrap(), "--inject-delay-ms", "25"],
        ]
        .concat(),
    );
    let stderr = failed(slow);
    for program in ["layer forward ms", "layer backward ms", "decode step ms", "prefill ms"] {
        assert!(stderr.contains(program), "{program}: {stderr}");
    }
}

#[test]
fn kernels_cover_every_program_type_with_counted_flops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    // One sequence per batch: the layer programs see T = 16 rows whether or not the device batches.
    let stdout = ok(bench(
        dir.path(),
        "kernels",
        &["--seq-len", "16", "--batch-size", "1", "--json", out.to_str().unwrap()],
    ))
    .stdout;
    let run = json(&out);
    let names: Vec<&str> = run["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for kind in [
        "layer forward",
        "layer backward",
        "weight-gradient GEMMs",
        "embedding forward",
        "embedding backward",
        "classifier + cross-entropy, fwd+bwd (fused)",
        "decode step",
        "prefill",
    ] {
        assert!(names.contains(&kind), "{kind} missing from {names:?}");
        assert!(String::from_utf8_lossy(&stdout).contains(kind));
    }
    // Matrix products of one layer forward at T = 16, counted by hand: projections q, k, v, o, the
    // three MLP matrices, and per head Q·Kᵀ and P·V.
    let t = 16.0;
    let matmuls = 2.0 * t * (DIM * DIM + 2.0 * DIM * KV_DIM + DIM * DIM + 3.0 * DIM * HIDDEN)
        + 2.0 * 2.0 * HEADS * t * t * HEAD_DIM;
    let mflop = figure(&run, "layer forward", "MFLOP") * 1e6;
    assert!(
        mflop >= matmuls && mflop < 1.5 * matmuls,
        "{mflop} vs {matmuls} of matrix products"
    );
    // The classifier's three products over the 16 rows: logits, their gradient back to the rows and
    // to the 300 × 16 classifier.
    let classifier = 3.0 * 2.0 * t * 300.0 * DIM;
    let counted = figure(&run, "classifier + cross-entropy, fwd+bwd (fused)", "MFLOP") * 1e6;
    assert!(
        counted >= classifier && counted < 1.5 * classifier,
        "{counted} vs {classifier}"
    );
    let ms = figure(&run, "layer forward", "ms");
    let rate = figure(&run, "layer forward", "GFLOP/s");
    assert!(
        (rate - mflop / (ms * 1e6)).abs() <= 1e-9 * rate.max(1.0),
        "{rate} vs {mflop} / {ms}"
    );
    // The decode step moves at least every matmul weight of the model once (f32): the layers' q, k, v,
    // o and MLP matrices and the (tied) classifier; f16 storage halves all of them.
    let layer_matrices = 2.0 * (2.0 * DIM * DIM + 2.0 * DIM * KV_DIM + 3.0 * DIM * HIDDEN);
    let f32_mb = figure(&run, "decode step", "MB");
    assert!(f32_mb * 1e6 >= 4.0 * (layer_matrices + 300.0 * DIM), "{f32_mb} MB");
    let out16 = dir.path().join("k16.json");
    ok(bench(
        dir.path(),
        "kernels",
        &[
            "--seq-len",
            "16",
            "--batch-size",
            "1",
            "--weights",
            "f16",
            "--json",
            out16.to_str().unwrap(),
        ],
    ));
    let f16_mb = figure(&json(&out16), "decode step", "MB");
    assert!(
        ((f32_mb - f16_mb) * 1e6 - 2.0 * (layer_matrices + 300.0 * DIM)).abs() < 1.0,
        "{f32_mb} vs {f16_mb}"
    );
}

#[test]
fn the_training_breakdown_adds_up_to_the_measured_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    ok(bench(
        dir.path(),
        "training",
        &[
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--iterations",
            "1",
            "--json",
            out.to_str().unwrap(),
        ],
    ));
    let run = json(&out);
    // One timed step: each figure is that step's, so the phases and the rest sum to the step.
    let phases = [
        "embedding",
        "layer forward",
        "head (norm, classifier, loss)",
        "layer backward",
        "weight gradients",
        "data",
        "optimiser",
        "update (strategy)",
        "other (outside the phases)",
    ];
    let sum: f64 = phases.iter().map(|p| figure(&run, p, "ms")).sum();
    let step = figure(&run, "step", "ms");
    assert!((sum - step).abs() <= 1e-6 * step, "{sum} vs {step}");
    assert!(figure(&run, "layer forward", "ms") > 0.0 && figure(&run, "layer backward", "ms") > 0.0);
    let tokens_per_s = figure(&run, "step", "tok/s");
    assert!((tokens_per_s - 32.0 / step * 1e3).abs() <= 1e-9 * tokens_per_s);
    // A random model's loss starts near ln(vocabulary).
    assert!((figure(&run, "step", "loss") - 300f64.ln()).abs() < 0.5);
}

#[test]
fn ane_sim_kernels_carry_the_named_chips_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim.json");
    let stdout = ok(bench(
        dir.path(),
        "kernels",
        &[
            "--device",
            "ane-sim",
            "--chip",
            "m1",
            "--seq-len",
            "16",
            "--batch-size",
            "1",
            "--json",
            out.to_str().unwrap(),
        ],
    ))
    .stdout;
    let run = json(&out);
    assert_eq!(run["config"]["chip"], "m1");
    let layer = run["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "layer forward")
        .unwrap()
        .clone();
    assert_eq!(layer["runs_on"], "ane-sim m1");
    assert!(figure(&run, "layer forward", "est ms") > 0.0);
    assert!(figure(&run, "layer backward", "est ms") > 0.0);
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("cost model of m1 (Apple M1"), "{text}");
}

#[test]
fn compile_counts_the_programs_of_each_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.json");
    ok(bench(
        dir.path(),
        "compile",
        &["--seq-len", "16", "--json", out.to_str().unwrap()],
    ));
    let run = json(&out);
    assert_eq!(figure(&run, "dynamic (weights as inputs)", "programs"), 2.0);
    let recompile = "recompile, per update (2 layers baked)";
    assert_eq!(figure(&run, recompile, "programs"), 4.0);
    // Baked: every layer's matrices (q, k, v, o, three MLP) in fp16, forward and backward programs.
    let layer_matrices = 2.0 * DIM * DIM + 2.0 * DIM * KV_DIM + 3.0 * DIM * HIDDEN;
    assert!(figure(&run, recompile, "weights MB") * 1e6 >= 2.0 * 2.0 * 2.0 * layer_matrices);
    assert!(figure(&run, "dynamic (weights as inputs)", "weights MB") < figure(&run, recompile, "weights MB"));
}

#[test]
fn bad_requests_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let stderr = failed(bench(dir.path(), "compile", &["--baseline", missing.to_str().unwrap()]));
    assert!(stderr.contains("nope.json"), "{stderr}");

    let not_a_run = dir.path().join("other.json");
    std::fs::write(&not_a_run, "{}").unwrap();
    let stderr = failed(bench(
        dir.path(),
        "compile",
        &["--baseline", not_a_run.to_str().unwrap()],
    ));
    assert!(stderr.contains("not a saved `orion bench` run"), "{stderr}");

    let base = dir.path().join("compile.json");
    ok(bench(
        dir.path(),
        "compile",
        &["--seq-len", "8", "--save-baseline", base.to_str().unwrap()],
    ));
    let stderr = failed(bench(
        dir.path(),
        "compile",
        &["--seq-len", "16", "--baseline", base.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("sequence length 8") && stderr.contains("sequence length 16"),
        "{stderr}"
    );
    let stderr = failed(bench(
        dir.path(),
        "training",
        &["--seq-len", "8", "--baseline", base.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("suite compile") && stderr.contains("suite training"),
        "{stderr}"
    );

    let stderr = failed(bench(dir.path(), "training", &["--seq-len", "65"]));
    assert!(stderr.contains("longer than tiny.json's context of 64"), "{stderr}");
    let stderr = failed(bench(dir.path(), "compile", &["--threshold=-5"]));
    assert!(stderr.contains("--threshold"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["bench", "inference", "--model", "stories1B", "--quick"])
        .output()
        .unwrap();
    assert!(failed(out).contains("unknown built-in model"));
}

/// `--products bf16` is recorded in the run (JSON and header), and a baseline measured with the
/// other precision is refused, naming the field.
#[test]
fn products_are_recorded_and_a_baseline_in_another_precision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("bf16.json");
    let sizes = ["--seq-len", "16", "--batch-size", "2", "--iterations", "1"];
    let mut args = sizes.to_vec();
    args.extend(["--products", "bf16", "--save-baseline", base.to_str().unwrap()]);
    let out = ok(bench(dir.path(), "training", &args));
    assert!(String::from_utf8_lossy(&out.stdout).contains("products bf16"));
    let run = json(&base);
    assert_eq!(run["config"]["products"], "bf16");
    assert!(figure(&run, "step", "loss").is_finite());
    let mut args = sizes.to_vec();
    args.extend(["--baseline", base.to_str().unwrap()]);
    let stderr = failed(bench(dir.path(), "training", &args));
    assert!(stderr.contains("products") && stderr.contains("bf16"), "{stderr}");
}
