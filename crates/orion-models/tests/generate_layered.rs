//! Per-layer generation (embedding and classifier on the host, one program per layer on a device):
//! on the CPU in f32 its logits equal the whole-model forward and its greedy tokens equal the
//! whole-model KV-cache generator's; on the simulated ANE (fp16 programs, 32-row decode surfaces,
//! prompt buckets) its greedy tokens equal the CPU's on the test models, from both file formats.

use orion_ane::backend::AneBackend;
use orion_ane::lower::LowerOptions;
use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::generate::layered::{LayeredGenerator, LayeredOptions};
use orion_models::generate::stepper::TokenStepper;
use orion_models::generate::{forward_logits, GenerateOptions, Generator};
use orion_models::{Model, WeightMode};
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(rel)
}

const MODELS: [&str; 3] = ["gpt2_tiny", "llama_tiny", "llama_tiny/llama2c_v0.bin"];
const PROMPT: [u32; 8] = [1, 5, 17, 42, 3, 60, 7, 33];

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    }
}

fn cpu_tokens(model: &Model, capacity: usize, n: usize) -> Vec<u32> {
    let cpu = CpuBackend::default();
    let mut generator = Generator::with_capacity(model, &cpu, capacity, DType::F32).unwrap();
    generator.generate(&PROMPT, &greedy(n), &mut |_| true).unwrap().tokens
}

#[test]
fn f32_layer_programs_on_cpu_match_the_whole_model() {
    let cpu = CpuBackend::default();
    for path in MODELS {
        let model = Model::load(&fixture(path), None).unwrap();
        let vocab = model.config().vocab_size;
        let full = forward_logits(&model, &cpu, &PROMPT).unwrap().to_f32_vec();
        let last = &full[(PROMPT.len() - 1) * vocab..];
        for weights in [WeightMode::Constants, WeightMode::Inputs] {
            let options = LayeredOptions {
                capacity: 32,
                dtype: DType::F32,
                decode_bucket: 4,
                prefill_multiple: 16,
                weights,
            };
            let mut layered = LayeredGenerator::new(&model, &cpu, &cpu, options).unwrap();
            let logits = layered.prefill(&PROMPT).unwrap();
            let worst = logits
                .iter()
                .zip(last)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{path} {weights:?}: prefill logits differ by {worst}");
            let tokens = layered.generate(&PROMPT, &greedy(20), &mut |_| true).unwrap().tokens;
            assert_eq!(tokens, cpu_tokens(&model, 32, 20), "{path} {weights:?}");
            let per_layer = match weights {
                WeightMode::Constants => model.config().n_layers,
                WeightMode::Inputs => 1,
            };
            // decode programs + one prefill bucket
            assert_eq!(layered.programs_compiled(), 2 * per_layer, "{path} {weights:?}");
        }
    }
}

#[test]
fn ane_sim_greedy_tokens_equal_cpu() {
    for path in MODELS {
        let model = Model::load(&fixture(path), None).unwrap();
        let device = AneBackend::simulated("m4", LowerOptions::default()).unwrap();
        let cpu = CpuBackend::default();
        let options = LayeredOptions::for_alignment(32, 64);
        assert_eq!((options.decode_bucket, options.dtype), (32, DType::F16));
        let mut layered = LayeredGenerator::new(&model, &cpu, &device, options).unwrap();
        let out = layered.generate(&PROMPT, &greedy(24), &mut |_| true).unwrap();
        assert_eq!(out.tokens, cpu_tokens(&model, 32, 24), "{path}");
        assert_eq!(out.timing.decode_steps, 23);
    }
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let model = Model::load(&fixture("llama_tiny"), None).unwrap();
    let cpu = CpuBackend::default();
    let options = LayeredOptions {
        capacity: 4,
        dtype: DType::F32,
        decode_bucket: 4,
        prefill_multiple: 4,
        weights: WeightMode::Inputs,
    };
    let mut layered = LayeredGenerator::new(&model, &cpu, &cpu, options).unwrap();
    let err = layered.generate(&PROMPT, &greedy(2), &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("more than the context of 4"), "{err}");
}
