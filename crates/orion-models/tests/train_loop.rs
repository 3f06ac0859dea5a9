//! Training trajectory against PyTorch: 10 AdamW steps (torch.optim.AdamW, fixed lr, given betas,
//! eps and weight decay with norms and biases excluded) on 10 fixed batches of the tiny GPT-2 and
//! Llama fixtures; the loss before each update matches `tools/make_train_fixtures.py` within 1e-4.

use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::model::weight_specs;
use orion_models::optim::{default_decay, AdamW, AdamWConfig};
use orion_models::train::{Batch, Params, StepPrograms, StepRunner};
use orion_models::Model;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn flat_ids(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32))
        .collect()
}

fn check_trajectory(name: &str) {
    let model = Model::load(&fixtures().join("models").join(name), None).unwrap();
    let text = std::fs::read_to_string(fixtures().join("train").join(format!("{name}.json"))).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let adamw = &fixture["adamw"];
    let f = |k: &str| adamw[k].as_f64().unwrap() as f32;
    let config = AdamWConfig {
        lr: f("lr"),
        beta1: f("beta1"),
        beta2: f("beta2"),
        eps: f("eps"),
        weight_decay: f("weight_decay"),
    };
    let shapes: BTreeMap<String, Vec<usize>> = weight_specs(model.config())
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect();
    let decayed: Vec<&str> = adamw["decayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (param, shape) in &shapes {
        assert_eq!(
            default_decay(param, shape),
            decayed.contains(&param.as_str()),
            "{name}: decay of {param}"
        );
    }
    let mut opt = AdamW::with_shapes(config, &shapes);
    let cpu = CpuBackend::default();
    let programs = StepPrograms::new(model.config(), 8, 2, &cpu, DType::F32, &cpu).unwrap();
    let runner = StepRunner::new(model.config().clone(), 8, 2, programs);
    let mut params: Params = model.weights().into_iter().map(|(n, t)| (n, t.to_f32_vec())).collect();
    let batches = adamw["batches"].as_array().unwrap();
    let want = adamw["losses"].as_array().unwrap();
    assert_eq!(batches.len(), 10);
    for (step, (b, want)) in batches.iter().zip(want).enumerate() {
        let batch = Batch {
            inputs: flat_ids(&b["inputs"]),
            targets: flat_ids(&b["targets"]),
        };
        let out = runner.loss_and_grads(&params, &batch, 1.0).unwrap();
        let want = want.as_f64().unwrap();
        let err = ((out.loss as f64 - want) / want).abs();
        assert!(
            err < 1e-4,
            "{name} step {step}: loss {} vs {want} (relative {err:e})",
            out.loss
        );
        opt.step(&mut params, &out.grads, config.lr).unwrap();
    }
}

#[test]
fn gpt2_ten_adamw_steps_match_pytorch() {
    check_trajectory("gpt2_tiny");
}

#[test]
fn llama_ten_adamw_steps_match_pytorch() {
    check_trajectory("llama_tiny");
}

mod loop_tests {
    use orion_core::cpu::CpuBackend;
    use orion_core::DType;
    use orion_models::checkpoint::{load_checkpoint, save_checkpoint};
    use orion_models::config::{Family, ModelConfig};
    use orion_models::data::dataset::{Batcher, BatcherConfig, TokenStream};
    use orion_models::optim::{AdamWConfig, LossScalerConfig, Schedule};
    use orion_models::train::{StepPrograms, StepRunner, TrainOptions, Trainer};
    use orion_models::Model;

    fn config() -> ModelConfig {
        ModelConfig {
            family: Family::Llama,
            dim: 16,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 12,
            hidden_dim: 32,
            max_seq_len: 8,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            tied_embeddings: true,
            biases: false,
        }
    }

    fn trainer() -> Trainer {
        let cfg = config();
        // A periodic stream: the next token is fully predictable from the previous one.
        let ids: Vec<u32> = (0..2000u32).map(|i| (i * 5) % 12).collect();
        let batcher_cfg = BatcherConfig {
            batch_size: 2,
            seq_len: 8,
            shuffle: true,
            seed: 3,
            val_fraction: 0.1,
            vocab_size: 12,
        };
        let batcher = Batcher::new(TokenStream::from_ids("periodic", ids), batcher_cfg).unwrap();
        let cpu = CpuBackend::default();
        let programs = StepPrograms::new(&cfg, 8, 2, &cpu, DType::F32, &cpu).unwrap();
        let runner = StepRunner::new(cfg.clone(), 8, 2, programs);
        let options = TrainOptions {
            accum: 2,
            adamw: AdamWConfig {
                lr: 1e-2,
                ..AdamWConfig::default()
            },
            schedule: Schedule::Cosine {
                warmup: 3,
                total: 40,
                min_lr_ratio: 0.1,
            },
            clip: Some(1.0),
            loss_scaler: LossScalerConfig::f32(),
            seed: 9,
        };
        Trainer::new(runner, &Model::random(cfg, 4).unwrap(), batcher, options).unwrap()
    }

    #[test]
    fn loss_falls_well_below_uniform_on_a_predictable_stream() {
        let mut t = trainer();
        let first = t.validation_loss(4).unwrap().unwrap();
        for _ in 0..40 {
            let report = t.train_step().unwrap();
            assert!(!report.skipped && report.grad_norm.is_finite());
        }
        let last = t.validation_loss(4).unwrap().unwrap();
        assert!(
            last < 0.5 * first && last < 0.5 * (12f32).ln(),
            "validation loss {first} -> {last}"
        );
    }

    #[test]
    fn resuming_from_a_saved_checkpoint_is_bit_identical() {
        let mut straight = trainer();
        for _ in 0..6 {
            straight.train_step().unwrap();
        }
        let mut first = trainer();
        for _ in 0..3 {
            first.train_step().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), &first.checkpoint(serde_json::Value::Null).unwrap()).unwrap();
        let fresh = trainer();
        let mut resumed = Trainer::from_checkpoint(
            fresh.runner,
            load_checkpoint(dir.path()).unwrap(),
            fresh.batcher,
            fresh.options,
        )
        .unwrap();
        for _ in 0..3 {
            resumed.train_step().unwrap();
        }
        assert_eq!(resumed.step, 6);
        for (name, want) in &straight.params {
            let got = &resumed.params[name];
            let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} differs after resume");
        }
    }
}
