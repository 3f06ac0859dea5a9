//! Training with the matrix products in bfloat16 (`ProductPrecision::Bf16`, `--products bf16`): the
//! step's loss stays close to the f32 step's and, where the CPU has the bfloat16 kernel, is not
//! the f32 loss; checkpoints record the precision and a resume in another one is refused.

use orion_core::cpu::kernels::bf16_products_available;
use orion_core::cpu::{CpuBackend, CpuOptions, ProductPrecision};
use orion_core::DType;
use orion_models::checkpoint::{load_checkpoint, save_checkpoint};
use orion_models::config::{Family, ModelConfig};
use orion_models::data::dataset::{Batcher, BatcherConfig, TokenStream};
use orion_models::optim::{AdamWConfig, LossScalerConfig, Schedule};
use orion_models::train::{Batch, Params, StepPrograms, StepRunner, TrainOptions, Trainer};
use orion_models::Model;

const BATCH: usize = 4;
const SEQ: usize = 32;

/// One layer, but a vocabulary of 1024: the classifier's products (128 rows × 1024 × 64, 8.4M
/// multiply-adds each) are above `gemm_with`'s threshold for the bfloat16 kernel.
fn config() -> ModelConfig {
    ModelConfig {
        family: Family::Llama,
        dim: 64,
        n_layers: 1,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 1024,
        hidden_dim: 176,
        max_seq_len: SEQ,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        tied_embeddings: true,
        biases: false,
    }
}

/// A runner whose programs and classifier compute in `products`, as `orion train` builds it.
fn runner(products: ProductPrecision) -> StepRunner {
    let cfg = config();
    let cpu = CpuBackend::new(CpuOptions {
        products,
        ..CpuOptions::default()
    });
    let programs = StepPrograms::new(&cfg, SEQ, BATCH, &cpu, DType::F32, &cpu).unwrap();
    StepRunner::new(cfg, SEQ, BATCH, programs).with_products(products)
}

#[test]
fn a_bf16_step_gives_a_finite_loss_close_to_the_f32_step_and_differs_where_the_kernel_runs() {
    let model = Model::random(config(), 5).unwrap();
    let params: Params = model.weights().into_iter().map(|(n, t)| (n, t.to_f32_vec())).collect();
    let n = BATCH * SEQ;
    let batch = Batch {
        inputs: (0..n).map(|i| (i * 37 % 1024) as i32).collect(),
        targets: (0..n).map(|i| (i * 61 % 1024) as i32).collect(),
    };
    let f32_out = runner(ProductPrecision::F32)
        .loss_and_grads(&params, &batch, 1.0)
        .unwrap();
    let bf16_runner = runner(ProductPrecision::Bf16);
    assert_eq!(bf16_runner.products(), ProductPrecision::Bf16);
    let bf16_out = bf16_runner.loss_and_grads(&params, &batch, 1.0).unwrap();
    let (a, b) = (f32_out.loss, bf16_out.loss);
    assert!(a.is_finite() && b.is_finite(), "losses {a} and {b}");
    // Bfloat16 operands round to 8 significant bits (2^-9 relative): the loss moves by far less
    // than 5e-2 relative, a wrong product (a dropped block, a transposed operand) by far more.
    assert!(((b - a) / a).abs() < 5e-2, "bf16 loss {b} vs f32 loss {a}");
    if bf16_products_available() {
        assert_ne!(a.to_bits(), b.to_bits(), "bf16 products gave the f32 loss exactly");
    }
    // The gradients have the same names and sizes.
    let names = |o: &orion_models::train::StepOutput| -> Vec<(String, usize)> {
        o.grads.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    };
    assert_eq!(names(&f32_out), names(&bf16_out));
}

/// A trainer over a periodic stream with the runner in `products`.
fn trainer(products: ProductPrecision) -> Trainer {
    let ids: Vec<u32> = (0..4000u32).map(|i| (i * 7) % 1024).collect();
    let batcher_cfg = BatcherConfig {
        batch_size: BATCH,
        seq_len: SEQ,
        shuffle: true,
        seed: 3,
        val_fraction: 0.1,
        vocab_size: 1024,
    };
    let batcher = Batcher::new(TokenStream::from_ids("periodic", ids), batcher_cfg).unwrap();
    let options = TrainOptions {
        accum: 1,
        adamw: AdamWConfig::default(),
        schedule: Schedule::Constant,
        clip: Some(1.0),
        loss_scaler: LossScalerConfig::f32(),
        seed: 9,
    };
    Trainer::new(runner(products), &Model::random(config(), 4).unwrap(), batcher, options).unwrap()
}

#[test]
fn checkpoints_record_the_products_and_a_resume_in_another_precision_is_refused() {
    let mut first = trainer(ProductPrecision::Bf16);
    first.train_step().unwrap();
    let ckpt = first.checkpoint(serde_json::Value::Null).unwrap();
    assert_eq!(ckpt.products, ProductPrecision::Bf16);
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &ckpt).unwrap();

    let resume = |products| {
        let fresh = trainer(products);
        Trainer::from_checkpoint(
            fresh.runner,
            load_checkpoint(dir.path()).unwrap(),
            fresh.batcher,
            fresh.options,
        )
    };
    let err = resume(ProductPrecision::F32).unwrap_err().to_string();
    assert!(err.contains("bf16") && err.contains("f32"), "{err}");
    let mut resumed = resume(ProductPrecision::Bf16).unwrap();
    assert_eq!(resumed.step, 1);
    assert!(resumed.train_step().unwrap().loss.is_finite());
}
