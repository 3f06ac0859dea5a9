//! Tests of the optimiser module: AdamW against `torch.optim.AdamW` (fixture from
//! tools/optim_fixtures.py), weight-decay exclusion, resumable state, global-norm clipping,
//! learning-rate schedules and the dynamic loss scaler.

use orion_models::optim::{
    clip_global_norm, default_decay, learning_rate, AdamW, AdamWConfig, LossScaler, LossScalerConfig, Schedule,
};
use serde_json::Value;
use std::collections::BTreeMap;

type Tensors = BTreeMap<String, Vec<f32>>;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim/adamw.json");
    let text = std::fs::read_to_string(path).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn tensors(v: &Value) -> Tensors {
    v.as_object()
        .expect("object of tensors")
        .iter()
        .map(|(k, vals)| {
            let vals = vals
                .as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32);
            (k.clone(), vals.collect())
        })
        .collect()
}

fn fixture_config(f: &Value) -> AdamWConfig {
    let num = |k: &str| f[k].as_f64().expect("number") as f32;
    AdamWConfig {
        lr: num("lr"),
        beta1: num("beta1"),
        beta2: num("beta2"),
        eps: num("eps"),
        weight_decay: num("weight_decay"),
    }
}

fn fixture_shapes(f: &Value) -> BTreeMap<String, Vec<usize>> {
    serde_json::from_value(f["shapes"].clone()).expect("shapes")
}

#[test]
fn adamw_matches_pytorch_for_five_steps() {
    let f = fixture();
    let mut opt = AdamW::with_shapes(fixture_config(&f), &fixture_shapes(&f));
    let mut params = tensors(&f["initial"]);
    for (i, step) in f["steps"].as_array().expect("steps").iter().enumerate() {
        let lr = step["lr"].as_f64().expect("lr") as f32;
        opt.step(&mut params, &tensors(&step["grads"]), lr).expect("step");
        for (name, expected) in tensors(&step["params"]) {
            for (j, (&got, &want)) in params[&name].iter().zip(&expected).enumerate() {
                let tol = 1e-6 * want.abs().max(1e-2);
                assert!(
                    (got - want).abs() <= tol,
                    "step {i} {name}[{j}]: {got} vs PyTorch {want} (diff {})",
                    (got - want).abs()
                );
            }
        }
    }
    assert_eq!(opt.step_count(), 5);
}

#[test]
fn fixture_learning_rates_follow_the_cosine_schedule() {
    // The Python script computes its schedule with its own formula; ours must agree.
    let f = fixture();
    let schedule = Schedule::Cosine {
        warmup: 2,
        total: 5,
        min_lr_ratio: 0.1,
    };
    for (i, step) in f["steps"].as_array().expect("steps").iter().enumerate() {
        let want = step["lr"].as_f64().expect("lr");
        let got = learning_rate(&schedule, 0.01, i) as f64;
        assert!((got - want).abs() <= 1e-7 * want, "step {i}: {got} vs {want}");
    }
}

#[test]
fn decay_rule_excludes_norms_and_biases() {
    assert!(default_decay("model.layers.0.mlp.up_proj.weight", &[8, 4]));
    assert!(default_decay("model.embed_tokens.weight", &[32, 4]));
    assert!(!default_decay("model.layers.0.input_layernorm.weight", &[4]));
    assert!(!default_decay("h.0.ln_1.bias", &[4]));
    assert!(!default_decay("h.0.attn.c_proj.bias", &[4]));
}

#[test]
fn zero_gradients_shrink_only_decayed_parameters() {
    // With g = 0 the Adam term is 0 / (0 + eps) = 0, so only decoupled decay acts: p · (1 − lr·wd).
    let shapes = BTreeMap::from([("w".to_string(), vec![2, 2]), ("norm".to_string(), vec![2])]);
    let config = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::with_shapes(config, &shapes);
    assert!(opt.decays("w") && !opt.decays("norm"));
    let mut params = Tensors::from([
        ("w".into(), vec![1.0, -2.0, 4.0, 0.5]),
        ("norm".into(), vec![3.0, -1.0]),
    ]);
    let grads = Tensors::from([("w".into(), vec![0.0; 4]), ("norm".into(), vec![0.0; 2])]);
    opt.step(&mut params, &grads, 0.1).expect("step");
    let factor = 1.0f32 - 0.1 * 0.5;
    let expected_w: Vec<f32> = [1.0f32, -2.0, 4.0, 0.5].iter().map(|x| x * factor).collect();
    for (got, want) in params["w"].iter().zip(&expected_w) {
        assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    }
    assert_eq!(params["norm"], vec![3.0, -1.0]);
}

#[test]
fn mismatched_gradients_are_errors_and_change_nothing() {
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut params = Tensors::from([("a".into(), vec![1.0, 2.0])]);
    let before = params.clone();
    let short = Tensors::from([("a".into(), vec![1.0])]);
    assert!(opt.step(&mut params, &short, 0.1).is_err());
    let unknown = Tensors::from([("a".into(), vec![1.0, 1.0]), ("b".into(), vec![1.0])]);
    assert!(opt.step(&mut params, &unknown, 0.1).is_err());
    assert!(opt.step(&mut params, &Tensors::new(), 0.1).is_err());
    assert!(opt.step(&mut params, &before.clone(), f32::NAN).is_err());
    assert_eq!(params, before);
    assert_eq!(opt.step_count(), 0);
}

fn pseudo_grads(step: usize) -> Tensors {
    let g = |seed: usize, n: usize| {
        (0..n)
            .map(|i| (((seed * 31 + i * 17) % 13) as f32 - 6.0) * 0.01)
            .collect()
    };
    Tensors::from([("w".into(), g(step, 6)), ("b".into(), g(step + 100, 3))])
}

#[test]
fn state_round_trip_continues_bit_identically() {
    let shapes = BTreeMap::from([("w".to_string(), vec![2, 3]), ("b".to_string(), vec![3])]);
    let config = AdamWConfig::default();
    let start = Tensors::from([
        ("w".into(), vec![0.5, -0.25, 1.0, 2.0, -1.5, 0.125]),
        ("b".into(), vec![0.1; 3]),
    ]);

    let mut straight = AdamW::with_shapes(config, &shapes);
    let mut p1 = start.clone();
    for s in 0..5 {
        straight.step(&mut p1, &pseudo_grads(s), 1e-2).expect("step");
    }

    let mut first = AdamW::with_shapes(config, &shapes);
    let mut p2 = start;
    for s in 0..2 {
        first.step(&mut p2, &pseudo_grads(s), 1e-2).expect("step");
    }
    let json = serde_json::to_string(&first.state()).expect("encode");
    let mut resumed = AdamW::from_state(config, serde_json::from_str(&json).expect("decode")).expect("state");
    for s in 2..5 {
        resumed.step(&mut p2, &pseudo_grads(s), 1e-2).expect("step");
    }
    for (name, a) in &p1 {
        let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
        let b: Vec<u32> = p2[name].iter().map(|x| x.to_bits()).collect();
        assert_eq!(a, b, "{name}");
    }
    assert_eq!(resumed.state(), straight.state());
}

#[test]
fn from_state_rejects_inconsistent_moments() {
    let mut state = AdamW::new(AdamWConfig::default()).state();
    state.m.insert("a".into(), vec![0.0; 3]);
    state.v.insert("a".into(), vec![0.0; 2]);
    assert!(AdamW::from_state(AdamWConfig::default(), state).is_err());
}

#[test]
fn clipping_measures_the_global_norm_and_scales_only_above_the_limit() {
    // Norm of (3, 0) and (4) is 5.
    let grads = Tensors::from([("a".into(), vec![3.0, 0.0]), ("b".into(), vec![4.0])]);

    let mut below = grads.clone();
    assert_eq!(clip_global_norm(&mut below, 10.0), 5.0);
    assert_eq!(below, grads);

    let mut equal = grads.clone();
    assert_eq!(clip_global_norm(&mut equal, 5.0), 5.0);
    assert_eq!(equal, grads);

    let mut above = grads.clone();
    assert_eq!(clip_global_norm(&mut above, 2.5), 5.0);
    assert_eq!(above["a"], vec![1.5, 0.0]);
    assert_eq!(above["b"], vec![2.0]);

    let mut disabled = grads.clone();
    assert_eq!(clip_global_norm(&mut disabled, 0.0), 5.0);
    assert_eq!(disabled, grads);
}

#[test]
fn clipping_accumulates_in_f64_and_leaves_non_finite_gradients_alone() {
    // 10^6 elements of 1e-3: an f32 running sum drifts, the f64 one gives exactly-rounded 1.0.
    let mut many = Tensors::from([("a".into(), vec![1e-3f32; 1_000_000])]);
    let x = 1e-3f32 as f64;
    let expected = (1_000_000f64 * x * x).sqrt();
    let naive_f32 = many["a"].iter().fold(0f32, |acc, v| acc + v * v).sqrt() as f64;
    assert!(
        (naive_f32 - expected).abs() > 1e-5 * expected,
        "the test would not tell f32 from f64"
    );
    let got = clip_global_norm(&mut many, 100.0) as f64;
    assert!((got - expected).abs() <= 1e-7 * expected, "{got} vs {expected}");

    let mut bad = Tensors::from([("a".into(), vec![1.0, f32::INFINITY])]);
    assert_eq!(clip_global_norm(&mut bad, 1.0), f32::INFINITY);
    assert_eq!(bad["a"], vec![1.0, f32::INFINITY]);
}

#[test]
fn cosine_schedule_warms_up_linearly_then_decays_to_the_floor() {
    let (base, warmup, total, ratio) = (1e-3f32, 4usize, 14usize, 0.1f32);
    let s = Schedule::Cosine {
        warmup,
        total,
        min_lr_ratio: ratio,
    };
    for step in 0..warmup {
        let want = base as f64 * (step + 1) as f64 / warmup as f64;
        assert!(
            (learning_rate(&s, base, step) as f64 - want).abs() <= 1e-7 * want,
            "warmup step {step}"
        );
    }
    let min = base * ratio;
    assert_eq!(learning_rate(&s, base, warmup), base);
    // Half-way through the decay the cosine is at 0: the midpoint of base and min.
    let mid = learning_rate(&s, base, warmup + (total - warmup) / 2);
    assert!((mid - (base + min) / 2.0).abs() <= 1e-7 * base, "{mid}");
    for step in warmup..total {
        assert!(
            learning_rate(&s, base, step + 1) < learning_rate(&s, base, step),
            "not decreasing at {step}"
        );
    }
    assert!((learning_rate(&s, base, total) - min).abs() <= 1e-7 * min);
    assert!((learning_rate(&s, base, total + 1000) - min).abs() <= 1e-7 * min);
    assert_eq!(learning_rate(&Schedule::Constant, base, 12345), base);
}

fn clean() -> Tensors {
    Tensors::from([("a".into(), vec![1.0, -2.0])])
}

#[test]
fn loss_scaler_skips_halves_and_counts_on_overflow() {
    let mut scaler = LossScaler::new(LossScalerConfig::fp16()).expect("scaler");
    assert_eq!(scaler.scale(), 1024.0);
    assert!(scaler.check(&clean()));
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let grads = Tensors::from([("a".into(), vec![1.0, bad])]);
        assert!(!scaler.check(&grads), "{bad} not detected");
        scaler.update(true).expect("update");
    }
    assert_eq!(scaler.scale(), 1024.0 / 8.0);
    assert_eq!(scaler.overflow_events(), 3);
    assert_eq!(scaler.skipped_steps(), 3);
    let mut grads = Tensors::from([("a".into(), vec![128.0, -64.0])]);
    scaler.unscale(&mut grads);
    assert_eq!(grads["a"], vec![1.0, -0.5]);
}

#[test]
fn loss_scaler_grows_after_a_clean_interval() {
    let config = LossScalerConfig {
        growth_interval: 3,
        ..LossScalerConfig::fp16()
    };
    let mut scaler = LossScaler::new(config).expect("scaler");
    scaler.update(false).expect("clean");
    scaler.update(false).expect("clean");
    assert_eq!(scaler.scale(), 1024.0);
    scaler.update(false).expect("clean");
    assert_eq!(scaler.scale(), 2048.0);
    // An overflow resets the interval.
    scaler.update(false).expect("clean");
    scaler.update(true).expect("overflow");
    scaler.update(false).expect("clean");
    scaler.update(false).expect("clean");
    assert_eq!(scaler.scale(), 1024.0);
    scaler.update(false).expect("clean");
    assert_eq!(scaler.scale(), 2048.0);
}

#[test]
fn persistent_overflow_is_an_error_not_a_silent_shrink() {
    let config = LossScalerConfig {
        max_consecutive_overflows: 4,
        ..LossScalerConfig::fp16()
    };
    let mut scaler = LossScaler::new(config).expect("scaler");
    for _ in 0..3 {
        scaler.update(true).expect("still tolerated");
    }
    let err = scaler.update(true).expect_err("fourth overflow in a row");
    assert!(err.to_string().contains("4 steps in a row"), "{err}");
}

#[test]
fn static_scaler_counts_without_moving_and_state_round_trips() {
    let mut scaler = LossScaler::new(LossScalerConfig::f32()).expect("scaler");
    scaler.update(true).expect("overflow");
    for _ in 0..2000 {
        scaler.update(false).expect("clean");
    }
    assert_eq!(scaler.scale(), 1.0);
    assert_eq!(scaler.overflow_events(), 1);
    let json = serde_json::to_string(&scaler.state()).expect("encode");
    let back = LossScaler::from_state(serde_json::from_str(&json).expect("decode")).expect("state");
    assert_eq!(back, scaler);
    assert!(LossScaler::new(LossScalerConfig {
        backoff_factor: 1.0,
        ..LossScalerConfig::fp16()
    })
    .is_err());
}
