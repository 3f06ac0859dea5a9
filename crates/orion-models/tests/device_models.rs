//! Model programs and training on an ANE device against the CPU. Each check runs twice: on the
//! simulated M4 (always — this proves the checks themselves) and on the real ANE (macOS only; ignored
//! elsewhere: `cargo test -p orion-models --test device_models -- --ignored` on a Mac). Nothing here
//! has been run on hardware by the project.
//!
//! - per-layer generation (layer prefill and decode programs, fp16) gives the CPU's greedy tokens on the
//!   tiny GPT-2 and Llama;
//! - 20 training steps (layer forward/backward programs on the device, weights as inputs) have no NaN, no
//!   skipped step, and track the all-f32 CPU losses within the fp16 tolerance argued in cli_train.rs.

use orion_ane::backend::AneBackend;
use orion_ane::device::{AneDevice, SimulatedAne};
use orion_ane::lower::{LowerOptions, WeightMode as LowerWeights};
use orion_core::backend::Backend;
use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::config::{Family, ModelConfig};
use orion_models::generate::layered::{LayeredGenerator, LayeredOptions};
use orion_models::generate::{GenerateOptions, Generator};
use orion_models::train::Trainer;
use orion_models::Model;
use std::path::PathBuf;
use std::sync::Arc;
use support::{synthetic_trainer, SyntheticRun};

mod support;

#[cfg(target_vendor = "apple")]
fn real_device() -> Arc<dyn AneDevice> {
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
fn real_device() -> Arc<dyn AneDevice> {
    panic!("the real ANE exists only on macOS")
}

fn simulated() -> Arc<dyn AneDevice> {
    Arc::new(SimulatedAne::builtin("m4").unwrap())
}

fn greedy_tokens_match_the_cpu(device: Arc<dyn AneDevice>) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let prompt = [1u32, 5, 17, 42, 3, 60, 7, 33];
    let options = GenerateOptions {
        max_new_tokens: 16,
        ..GenerateOptions::default()
    };
    for name in ["gpt2_tiny", "llama_tiny"] {
        let model = Model::load(&fixtures.join(name), None).unwrap();
        let cpu = CpuBackend::default();
        let mut reference = Generator::with_capacity(&model, &cpu, 32, DType::F32).unwrap();
        let want = reference.generate(&prompt, &options, &mut |_| true).unwrap().tokens;
        let alignment = device.profile().limits.last_axis_alignment_bytes;
        let backend = AneBackend::new(Arc::clone(&device), LowerOptions::default());
        let layered = LayeredOptions::for_alignment(32, alignment);
        let mut generator = LayeredGenerator::new(&model, &cpu, &backend, layered).unwrap();
        let got = generator.generate(&prompt, &options, &mut |_| true).unwrap().tokens;
        assert_eq!(got, want, "{name} on {}", device.name());
    }
}

fn trainer(device: &dyn Backend, dtype: DType) -> Trainer {
    let run = SyntheticRun {
        cfg: ModelConfig {
            family: Family::Llama,
            dim: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 32,
            hidden_dim: 128,
            max_seq_len: 32,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            tied_embeddings: true,
            biases: false,
        },
        tokens: 8000,
        mul: 11,
        div: 7,
        lr: 3e-3,
        batcher_seed: 5,
        model_seed: 2,
        train_seed: 1,
    };
    synthetic_trainer(&run, device, dtype)
}

fn twenty_training_steps_track_the_cpu(device: Arc<dyn AneDevice>) {
    let options = LowerOptions {
        weights: LowerWeights::Inputs,
        ..LowerOptions::default()
    };
    let ane = AneBackend::new(device, options);
    let cpu = CpuBackend::default();
    let mut on_device = trainer(&ane, DType::F16);
    let mut on_cpu = trainer(&cpu, DType::F32);
    for step in 1..=20 {
        let (a, b) = (on_device.train_step().unwrap(), on_cpu.train_step().unwrap());
        assert!(!a.skipped && a.loss.is_finite(), "step {step}: {a:?}");
        assert!(
            ((a.loss - b.loss) / b.loss).abs() < 1e-2,
            "step {step}: {} vs cpu {}",
            a.loss,
            b.loss
        );
    }
}

#[test]
fn simulated_greedy_tokens_match_the_cpu() {
    greedy_tokens_match_the_cpu(simulated());
}

#[test]
#[cfg_attr(not(target_os = "macos"), ignore = "needs macOS with an ANE")]
fn real_ane_greedy_tokens_match_the_cpu() {
    greedy_tokens_match_the_cpu(real_device());
}

#[test]
fn simulated_twenty_training_steps_track_the_cpu() {
    twenty_training_steps_track_the_cpu(simulated());
}

#[test]
#[cfg_attr(not(target_os = "macos"), ignore = "needs macOS with an ANE")]
fn real_ane_twenty_training_steps_track_the_cpu() {
    twenty_training_steps_track_the_cpu(real_device());
}
