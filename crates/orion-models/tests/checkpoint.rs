//! Tests of checkpoints: bit-exact round trip (weights, moments, RNG), bit-identical resumed training,
//! atomic replacement when a write fails, and clear errors (with the path) for damaged files.

use orion_core::cpu::ProductPrecision;
use orion_core::Tensor;
use orion_models::checkpoint::{checkpoint_path, load_checkpoint, save_checkpoint, Checkpoint, RngState};
use orion_models::optim::{AdamW, AdamWConfig, LossScaler, LossScalerConfig};
use orion_models::ModelConfig;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Awkward f32 values: NaN with a payload, negative zero, subnormal, infinities, extremes.
fn awkward() -> Vec<f32> {
    vec![
        f32::from_bits(0x7fc0_1234),
        -0.0,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -1.0e-30,
        0.1,
    ]
}

fn sample() -> Checkpoint {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    rng.set_stream(3);
    let _: [u32; 5] = rng.gen(); // move into the middle of a block
    let weights = BTreeMap::from([
        ("a.weight".to_string(), Tensor::f32(vec![2, 4], awkward())),
        ("a.bias".to_string(), Tensor::f32(vec![3], vec![1.5, -2.5, 3.25])),
        ("empty".to_string(), Tensor::f32(vec![0, 4], vec![])),
    ]);
    let mut opt = AdamW::new(AdamWConfig::default());
    opt.set_decay("a.bias", false);
    let mut state = opt.state();
    state.step = 42;
    state.m.insert("a.weight".into(), awkward());
    state
        .v
        .insert("a.weight".into(), awkward().iter().map(|x| x.abs()).collect());
    state.m.insert("a.bias".into(), vec![0.0, 1.0, 2.0]);
    state.v.insert("a.bias".into(), vec![3.0, 4.0, 5.0]);
    let mut scaler = LossScaler::new(LossScalerConfig::fp16()).expect("scaler");
    scaler.update(true).expect("overflow");
    Checkpoint {
        step: 42,
        config: ModelConfig::builtin("stories260K").expect("config"),
        weights,
        optimizer: state,
        loss_scaler: scaler.state(),
        rng: RngState::capture(&rng),
        products: ProductPrecision::Bf16,
        data: json!({"epoch": 1, "cursor": 123456789012u64, "order_seed": 9}),
        extra: json!({"device": "cpu", "note": "ünïcödé"}),
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.step, b.step);
    assert_eq!(a.config, b.config);
    assert_eq!(a.loss_scaler, b.loss_scaler);
    assert_eq!(a.rng, b.rng);
    assert_eq!(a.products, b.products);
    assert_eq!(a.data, b.data);
    assert_eq!(a.extra, b.extra);
    assert_eq!(a.optimizer.step, b.optimizer.step);
    assert_eq!(a.optimizer.no_decay, b.optimizer.no_decay);
    assert_eq!(
        a.weights.keys().collect::<Vec<_>>(),
        b.weights.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.weights {
        let u = &b.weights[name];
        assert_eq!(t.shape(), u.shape(), "{name}");
        assert_eq!(bits(&t.to_f32_vec()), bits(&u.to_f32_vec()), "{name}");
    }
    for (ma, mb) in [(&a.optimizer.m, &b.optimizer.m), (&a.optimizer.v, &b.optimizer.v)] {
        assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
        for (name, v) in ma {
            assert_eq!(bits(v), bits(&mb[name]), "{name}");
        }
    }
}

#[test]
fn round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = sample();
    save_checkpoint(dir.path(), &ckpt).expect("save");
    let back = load_checkpoint(dir.path()).expect("load");
    assert_same(&ckpt, &back);
}

#[test]
fn restored_rng_continues_the_same_stream() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let _: [u64; 3] = rng.gen();
    let _ = rng.next_u32(); // odd word position
    let mut restored = RngState::capture(&rng).restore();
    let a: Vec<u64> = (0..20).map(|_| rng.next_u64()).collect();
    let b: Vec<u64> = (0..20).map(|_| restored.next_u64()).collect();
    assert_eq!(a, b);
}

type Params = BTreeMap<String, Vec<f32>>;

fn random_grads(rng: &mut ChaCha8Rng, params: &Params) -> Params {
    params
        .iter()
        .map(|(k, v)| (k.clone(), (0..v.len()).map(|_| rng.gen_range(-1.0f32..1.0)).collect()))
        .collect()
}

fn train(params: &mut Params, opt: &mut AdamW, rng: &mut ChaCha8Rng, steps: std::ops::Range<usize>) {
    for s in steps {
        let grads = random_grads(rng, params);
        opt.step(params, &grads, 1e-2 / (1 + s) as f32).expect("step");
    }
}

#[test]
fn training_resumed_from_a_checkpoint_matches_an_uninterrupted_run() {
    let shapes = BTreeMap::from([("w".to_string(), vec![3, 5]), ("g".to_string(), vec![5])]);
    let init: Params = shapes
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                (0..s.iter().product()).map(|i| i as f32 * 0.1 - 0.7).collect(),
            )
        })
        .collect();
    let config = AdamWConfig::default();

    let (mut p1, mut o1, mut r1) = (
        init.clone(),
        AdamW::with_shapes(config, &shapes),
        ChaCha8Rng::seed_from_u64(5),
    );
    train(&mut p1, &mut o1, &mut r1, 0..7);

    let (mut p2, mut o2, mut r2) = (init, AdamW::with_shapes(config, &shapes), ChaCha8Rng::seed_from_u64(5));
    train(&mut p2, &mut o2, &mut r2, 0..3);
    let weights = p2
        .iter()
        .map(|(k, v)| (k.clone(), Tensor::f32(shapes[k].clone(), v.clone())))
        .collect();
    let ckpt = Checkpoint {
        step: 3,
        config: ModelConfig::builtin("stories260K").expect("config"),
        weights,
        optimizer: o2.state(),
        loss_scaler: LossScaler::new(LossScalerConfig::f32()).expect("scaler").state(),
        rng: RngState::capture(&r2),
        products: ProductPrecision::F32,
        data: json!(null),
        extra: json!({}),
    };
    drop((p2, o2, r2));
    let dir = tempfile::tempdir().expect("tempdir");
    save_checkpoint(dir.path(), &ckpt).expect("save");
    let back = load_checkpoint(dir.path()).expect("load");
    let mut p3: Params = back.weights.iter().map(|(k, t)| (k.clone(), t.to_f32_vec())).collect();
    let mut o3 = AdamW::from_state(config, back.optimizer).expect("optimizer");
    let mut r3 = back.rng.restore();
    train(&mut p3, &mut o3, &mut r3, back.step as usize..7);

    for (name, v) in &p1 {
        assert_eq!(bits(v), bits(&p3[name]), "{name}");
    }
}

#[test]
fn a_failed_write_leaves_the_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = sample();
    save_checkpoint(dir.path(), &first).expect("save");
    let before = std::fs::read(checkpoint_path(dir.path())).expect("read");

    // Occupy the temporary file's name with a directory, so writing the new bytes fails.
    let temp = dir.path().join(format!(
        ".{}.tmp-{}",
        orion_models::checkpoint::CHECKPOINT_FILE,
        std::process::id()
    ));
    std::fs::create_dir(&temp).expect("mkdir");
    let mut second = sample();
    second.step = 43;
    assert!(save_checkpoint(dir.path(), &second).is_err());
    assert_eq!(std::fs::read(checkpoint_path(dir.path())).expect("read"), before);
    assert_eq!(load_checkpoint(dir.path()).expect("load").step, 42);

    // Once the obstacle is gone, the same save succeeds and replaces the file.
    std::fs::remove_dir(&temp).expect("rmdir");
    save_checkpoint(dir.path(), &second).expect("save");
    assert_eq!(load_checkpoint(dir.path()).expect("load").step, 43);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

fn expect_error_naming_path(dir: &Path, what: &str) {
    let err = load_checkpoint(dir).expect_err(what).to_string();
    let path = checkpoint_path(dir).display().to_string();
    assert!(err.contains(&path), "{what}: error {err:?} does not name {path}");
}

#[test]
fn flipped_bytes_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_checkpoint(dir.path(), &sample()).expect("save");
    let path = checkpoint_path(dir.path());
    let good = std::fs::read(&path).expect("read");
    for pos in [
        0,
        9,
        20,
        good.len() / 2,
        good.len() - 30,
        good.len() - 10,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[pos] ^= 0x10;
        std::fs::write(&path, &bad).expect("write");
        expect_error_naming_path(dir.path(), &format!("flipped byte at {pos}"));
    }
}

#[test]
fn truncated_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_checkpoint(dir.path(), &sample()).expect("save");
    let path = checkpoint_path(dir.path());
    let good = std::fs::read(&path).expect("read");
    for len in [0, 5, 8, 19, good.len() / 3, good.len() - 4, good.len() - 1] {
        std::fs::write(&path, &good[..len]).expect("write");
        expect_error_naming_path(dir.path(), &format!("truncated to {len}"));
    }
    std::fs::remove_file(&path).expect("rm");
    expect_error_naming_path(dir.path(), "missing file");
}

#[test]
fn non_f32_weights_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ckpt = sample();
    ckpt.weights.insert("ids".into(), Tensor::i32(vec![2], vec![1, 2]));
    let err = save_checkpoint(dir.path(), &ckpt).expect_err("i32 weight").to_string();
    assert!(err.contains("\"ids\""), "{err}");
    assert!(!checkpoint_path(dir.path()).exists());
}
