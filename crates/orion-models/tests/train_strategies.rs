//! Weight-update strategies on the simulated ANE: `dynamic`, `recompile` and `patch` give the same
//! losses within fp16 tolerance; `patch` is verified on a chip whose reloaded weight files take effect
//! and falls back to `recompile` (naming rule C07) on the built-in chips, where they do not; and the
//! patch check rejects a program still computing with its old weights.

use orion_ane::backend::AneBackend;
use orion_ane::device::SimulatedAne;
use orion_ane::lower::LowerOptions;
use orion_ane::profile::ChipProfile;
use orion_core::backend::Backend;
use orion_core::cpu::CpuBackend;
use orion_core::interp::Precision;
use orion_core::{DType, Tensor};
use orion_models::config::{Family, ModelConfig};
use orion_models::train::patch::judge;
use orion_models::train::{Strategy, Trainer, UpdateEvent, WeightUpdater};
use std::sync::Arc;
use support::{synthetic_trainer, SyntheticRun};

mod support;

const STEPS: usize = 6;

fn config() -> ModelConfig {
    ModelConfig {
        family: Family::Llama,
        dim: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 16,
        hidden_dim: 64,
        max_seq_len: 32,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        tied_embeddings: true,
        biases: false,
    }
}

fn trainer(device: &dyn Backend, dtype: DType) -> Trainer {
    let run = SyntheticRun {
        cfg: config(),
        tokens: 4000,
        mul: 7,
        div: 5,
        lr: 1e-2,
        batcher_seed: 3,
        model_seed: 4,
        train_seed: 9,
    };
    synthetic_trainer(&run, device, dtype)
}

/// Losses of `STEPS` steps with `strategy`, and every update event.
fn run(strategy: Strategy, device: &dyn Backend, dtype: DType) -> (Vec<f32>, Vec<UpdateEvent>) {
    let mut t = trainer(device, dtype);
    let cfg = config();
    let (mut updater, _) = WeightUpdater::start(strategy, &mut t.runner.programs, &cfg, &t.params, device).unwrap();
    let (mut losses, mut events) = (Vec::new(), Vec::new());
    for _ in 0..STEPS {
        let report = t.train_step().unwrap();
        assert!(!report.skipped && report.loss.is_finite());
        losses.push(report.loss);
        events.push(
            updater
                .after_update(&mut t.runner.programs, &cfg, &t.params, device)
                .unwrap(),
        );
    }
    (losses, events)
}

fn sim(reload_takes_effect: bool) -> AneBackend {
    let mut profile = ChipProfile::builtin("m4").unwrap();
    profile.limits.ops.weights_reload_takes_effect = reload_takes_effect;
    AneBackend::new(Arc::new(SimulatedAne::new(profile)), LowerOptions::default())
}

fn assert_track(a: &[f32], b: &[f32], what: &str) {
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        // fp16 tolerance of a loss computed from fp16 layer outputs (argued in cli_train.rs).
        assert!(((x - y) / x).abs() < 1e-2, "{what}: step {}: {x} vs {y}", step + 1);
    }
}

#[test]
fn patch_is_verified_where_reloads_take_effect_and_tracks_the_other_strategies() {
    let device = sim(true);
    let (dynamic, _) = run(Strategy::Dynamic, &device, DType::F16);
    let (recompile, events) = run(Strategy::Recompile, &device, DType::F16);
    assert!(events.iter().all(|e| *e == UpdateEvent::Recompiled(4)), "{events:?}");
    let (patch, events) = run(Strategy::Patch, &device, DType::F16);
    for event in &events {
        match event {
            UpdateEvent::Patched(v) => assert!(v.verified && v.rms_to_new * 2.0 < v.rms_to_old, "{v:?}"),
            other => panic!("patch did not verify: {other:?}"),
        }
    }
    assert!(dynamic[STEPS - 1] < dynamic[0], "no learning: {dynamic:?}");
    assert_track(&dynamic, &recompile, "recompile vs dynamic");
    assert_track(&dynamic, &patch, "patch vs dynamic");
}

#[test]
fn patch_falls_back_to_recompile_where_reloads_are_ignored() {
    let device = sim(false);
    let (recompile, _) = run(Strategy::Recompile, &device, DType::F16);
    let (patch, events) = run(Strategy::Patch, &device, DType::F16);
    match &events[0] {
        UpdateEvent::FellBack { reason, compiles } => {
            assert!(reason.contains("C07"), "{reason}");
            assert_eq!(*compiles, 4);
        }
        other => panic!("expected a fallback at the first update, got {other:?}"),
    }
    assert!(
        events[1..].iter().all(|e| *e == UpdateEvent::Recompiled(4)),
        "{events:?}"
    );
    assert_eq!(patch, recompile, "after the fallback the run is the recompile run");
}

#[test]
fn patch_on_a_backend_without_reload_falls_back_at_once() {
    let cpu = CpuBackend::default();
    let (_, events) = run(Strategy::Patch, &cpu, DType::F32);
    match &events[0] {
        UpdateEvent::FellBack { reason, .. } => assert!(reason.contains("no weight-reload path"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_patch_check_rejects_stale_and_unresolvable_outputs() {
    let new: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let old: Vec<f32> = new
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.05 * (i as f32).cos())
        .collect();
    let t = |v: &[f32]| Tensor::f16([8, 8], v.to_vec());
    let f16 = Precision::F16Rounding;
    assert!(judge(&t(&new), &t(&new), &t(&old), f16).verified, "exact new output");
    let stale = judge(&t(&old), &t(&new), &t(&old), f16);
    assert!(!stale.verified && stale.reason.contains("C07"), "{stale:?}");
    // An update no larger than the device's own noise cannot be told apart from no update: not trusted.
    let f32t = |v: &[f32]| Tensor::f32([8, 8], v.to_vec());
    let noisy: Vec<f32> = new
        .iter()
        .enumerate()
        .map(|(i, v)| v + if i % 2 == 0 { 5e-6 } else { -5e-6 })
        .collect();
    let barely_moved: Vec<f32> = new.iter().map(|v| v + 5e-6).collect();
    let unresolved = judge(&f32t(&noisy), &f32t(&new), &f32t(&barely_moved), Precision::F32);
    assert!(
        !unresolved.verified && unresolved.reason.contains("less than the check can resolve"),
        "{unresolved:?}"
    );
}
