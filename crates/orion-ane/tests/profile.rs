//! Chip profiles: JSON round trip of every built-in, validation of bad JSON, sources for every field, and
//! the cost model against ane.md §8's calibration targets (expected ranges computed here from the
//! reference's numbers, not from the code under test).

use orion_ane::catalogue;
use orion_ane::profile::{ChipId, ChipProfile, ProfileError};

fn builtin(id: &str) -> ChipProfile {
    ChipProfile::builtin(id).unwrap_or_else(|| panic!("no builtin {id}"))
}

#[test]
fn every_builtin_round_trips_through_json() {
    let all = ChipProfile::all_builtin();
    assert_eq!(
        all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["m1", "m2", "m3", "m4", "m5"]
    );
    for profile in all {
        let json = profile.to_json();
        let back = ChipProfile::from_json(&json).unwrap_or_else(|e| panic!("{}: {e}", profile.id));
        assert_eq!(back, profile);
    }
}

#[test]
fn builtins_carry_the_reference_arch_ids() {
    // ane.md §8: M(n) <-> H(n+12).
    for (id, arch) in [
        ("m1", "h13"),
        ("m2", "h14"),
        ("m3", "h15"),
        ("m4", "h16"),
        ("m5", "h17"),
    ] {
        assert_eq!(builtin(id).arch, arch);
    }
    assert_eq!(ChipProfile::builtin("M4").map(|p| p.id), Some(ChipId::M4));
    assert_eq!(ChipProfile::builtin("m6"), None);
}

#[test]
fn every_builtin_field_has_a_source_citing_the_catalogue_or_reference() {
    for profile in ChipProfile::all_builtin() {
        let paths = profile.field_paths();
        assert!(paths.len() >= 30, "{}: only {} fields found", profile.id, paths.len());
        for path in &paths {
            let source = profile
                .sources
                .get(path)
                .unwrap_or_else(|| panic!("{}: no source for {path}", profile.id));
            assert!(
                source.contains("ane.md §"),
                "{}: {path} source does not cite ane.md: {source}",
                profile.id
            );
        }
        for source in profile.sources.values() {
            for id in cited_rule_ids(source) {
                assert!(
                    catalogue::rule(&id).is_some(),
                    "{}: cites unknown rule {id}",
                    profile.id
                );
            }
        }
    }
}

/// Every "Cnn" token in `text`.
fn cited_rule_ids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(2))
        .filter(|&i| bytes[i] == b'C' && bytes[i + 1].is_ascii_digit() && bytes[i + 2].is_ascii_digit())
        .filter(|&i| i + 3 >= bytes.len() || !bytes[i + 3].is_ascii_digit())
        .map(|i| text[i..i + 3].to_string())
        .collect()
}

#[test]
fn conservative_settings_for_contradicted_items() {
    for profile in ChipProfile::all_builtin() {
        let l = &profile.limits;
        // C09, C10, C07, C11, C13, C28: never assume the optimistic answer.
        assert!(
            !l.ops.concat && !l.ops.gelu && !l.ops.weights_reload_takes_effect,
            "{}",
            profile.id
        );
        assert!(
            !l.ops.sdpa_mask_honoured && !l.ops.conv_bias && !l.ops.layer_norm,
            "{}",
            profile.id
        );
        // C21: at least 49,152-byte surfaces; C18: uniform sizes; C23: K padded to 32; C06: budget below 119.
        assert!(l.min_surface_bytes >= 49_152 && l.uniform_io_sizes, "{}", profile.id);
        assert_eq!(l.ops.matmul_inner_multiple, 32);
        assert!(l.compile_budget < 119);
    }
    // C16, C17, C15 on M1; C22 on M5.
    let m1 = builtin("m1");
    assert!(!m1.limits.ops.fp32_io_cast && !m1.limits.ops.multi_record_blobs);
    assert_eq!(
        serde_json::to_value(m1.limits.dialect).ok(),
        Some(serde_json::json!("ios16_program10"))
    );
    assert_eq!(builtin("m5").limits.last_axis_alignment_bytes, 128);
    // C26: 16,384 through M3, 65,536 on M4/M5.
    assert_eq!(builtin("m3").limits.max_spatial, 16_384);
    assert_eq!(builtin("m4").limits.max_spatial, 65_536);
}

/// The M4 profile as a JSON value, edited by `edit`, then parsed.
fn parse_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ChipProfile, ProfileError> {
    let mut value: serde_json::Value = serde_json::from_str(&builtin("m4").to_json()).expect("valid JSON");
    edit(&mut value);
    ChipProfile::from_json(&value.to_string())
}

fn json_error_mentions(result: Result<ChipProfile, ProfileError>, needle: &str) {
    match result {
        Err(ProfileError::Json { message }) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected a JSON error mentioning {needle:?}, got {other:?}"),
    }
}

fn invalid_field(result: Result<ChipProfile, ProfileError>, expected_field: &str) {
    match result {
        Err(ProfileError::Invalid { field, .. }) => assert_eq!(field, expected_field),
        other => panic!("expected {expected_field} to be rejected, got {other:?}"),
    }
}

#[test]
fn from_json_rejects_missing_unknown_and_nonsense() {
    json_error_mentions(
        parse_edited(|v| drop(v["limits"].as_object_mut().map(|m| m.remove("max_spatial")))),
        "max_spatial",
    );
    json_error_mentions(
        parse_edited(|v| drop(v["cost"].as_object_mut().map(|m| m.remove("bandwidth_gb_s")))),
        "bandwidth_gb_s",
    );
    json_error_mentions(parse_edited(|v| v["id"] = "m9".into()), "m9");
    json_error_mentions(parse_edited(|v| v["limits"]["dialect"] = "ios99".into()), "ios99");
    json_error_mentions(parse_edited(|v| v["limits"]["max_spatail"] = 5.into()), "max_spatail");
    json_error_mentions(
        parse_edited(|v| v["cost"]["effective_tflops"] = serde_json::Value::Null),
        "effective_tflops",
    );
    json_error_mentions(ChipProfile::from_json("{ not json"), "line 1");
    invalid_field(parse_edited(|v| v["arch"] = "h13".into()), "arch");
    invalid_field(
        parse_edited(|v| v["limits"]["last_axis_alignment_bytes"] = 0.into()),
        "limits.last_axis_alignment_bytes",
    );
    invalid_field(
        parse_edited(|v| v["limits"]["surface_alignment_bytes"] = 48.into()),
        "limits.surface_alignment_bytes",
    );
    invalid_field(
        parse_edited(|v| v["limits"]["max_channels"] = 0.into()),
        "limits.max_channels",
    );
    invalid_field(
        parse_edited(|v| v["limits"]["min_surface_bytes"] = 1000.into()),
        "limits.min_surface_bytes",
    );
    invalid_field(
        parse_edited(|v| v["limits"]["compile_budget"] = 0.into()),
        "limits.compile_budget",
    );
    invalid_field(
        parse_edited(|v| v["cost"]["effective_tflops"] = (-1.0).into()),
        "cost.effective_tflops",
    );
    invalid_field(
        parse_edited(|v| v["cost"]["spill_exponent"] = 0.0.into()),
        "cost.spill_exponent",
    );
    invalid_field(
        parse_edited(|v| v["cost"]["sram_knee_bytes"] = 0.into()),
        "cost.sram_knee_bytes",
    );
    invalid_field(parse_edited(|v| v["sources"]["limits.typo"] = "x".into()), "sources");
    // An M5 may report either arch (ane.md §8 [C]); sources may be omitted by hand-written profiles.
    let mut m5: serde_json::Value = serde_json::from_str(&builtin("m5").to_json()).expect("valid JSON");
    m5["arch"] = "h16".into();
    m5.as_object_mut().map(|m| m.remove("sources"));
    assert!(ChipProfile::from_json(&m5.to_string()).is_ok());
}

// ---- cost model -------------------------------------------------------------------------------------

/// ane.md §8 calibration: Stories110M static training, 72 programs per step, ~93 GFLOP on the ANE,
/// ~340 MB of fp16 weights streamed per step, S = 256, model width 768. The reference gives no I/O size;
/// each program reads and writes at least one [768, 256] fp16 activation.
const EVALS: usize = 72;
const STEP_FLOPS: f64 = 93e9;
const STEP_WEIGHT_BYTES: f64 = 340e6;
const IO_BYTES_PER_EVAL: f64 = 2.0 * 768.0 * 256.0 * 2.0;

fn step_ms(profile: &ChipProfile) -> (f64, f64, f64) {
    let e = profile.estimate_eval(
        STEP_FLOPS / EVALS as f64,
        IO_BYTES_PER_EVAL,
        STEP_WEIGHT_BYTES / EVALS as f64,
        256,
        768,
    );
    let n = EVALS as f64;
    (e.total_ms * n, e.compute_ms * n, e.bandwidth_ms * n)
}

/// The reference's measured ANE time per step widened by 25 % each way (BW and K_sram are guesses).
fn assert_near_target(id: &str, low_ms: f64, high_ms: f64) {
    let (total, _, _) = step_ms(&builtin(id));
    assert!(
        total >= 0.75 * low_ms && total <= 1.25 * high_ms,
        "{id}: {total:.2} ms vs target {low_ms}-{high_ms} ms"
    );
}

#[test]
fn stories110m_step_lands_near_the_measured_ane_time() {
    assert_near_target("m4", 8.9, 10.2); // M4 Pro/Max, static
    assert_near_target("m5", 9.1, 9.8);
    assert_near_target("m1", 32.0, 45.0); // M1 Pro/Max
    let (m4_total, _, _) = step_ms(&builtin("m4"));
    assert!(
        (6.0..=12.0).contains(&m4_total),
        "M4 step {m4_total:.2} ms outside 6-12 ms"
    );
}

#[test]
fn m4_compute_time_matches_the_reference_estimate() {
    // ane.md §8: P_eff · e_shape ≈ 13.6 TF on M4 at S = 256 ⇒ compute ≈ 6.8 ms for 93 GFLOP.
    let (_, compute, _) = step_ms(&builtin("m4"));
    let expected = STEP_FLOPS / 13.6e12 * 1e3;
    assert!(
        (compute - expected).abs() / expected < 0.05,
        "compute {compute:.2} ms vs {expected:.2} ms"
    );
}

#[test]
fn m1_is_dominated_by_weight_bandwidth() {
    // ane.md §8: on M1, ≈ 340 MB at 9 GB/s ≈ 38 ms of streaming dominates.
    let (total, compute, bandwidth) = step_ms(&builtin("m1"));
    assert!(
        bandwidth > compute,
        "bandwidth {bandwidth:.1} ms <= compute {compute:.1} ms"
    );
    let weight_streaming_ms = STEP_WEIGHT_BYTES / 9e9 * 1e3;
    assert!(
        total >= weight_streaming_ms,
        "{total:.1} ms < {weight_streaming_ms:.1} ms of weight streaming"
    );
}

/// Compute time of a compute-bound program (tiny I/O, no weights) at the given shape.
fn compute_ms(profile: &ChipProfile, spatial: usize, channels: usize) -> f64 {
    profile.estimate_eval(1e12, 0.0, 0.0, spatial, channels).compute_ms
}

#[test]
fn shape_factors_reproduce_the_fitted_measurements() {
    // M3 Pro: 9.98 TF at S = 64, 16.77 TF at S = 2048 (512-ch) ⇒ ×1.68.
    let m3 = builtin("m3");
    let ratio = compute_ms(&m3, 64, 512) / compute_ms(&m3, 2048, 512);
    assert!(
        (ratio - 16.77 / 9.98).abs() < 0.05 * (16.77 / 9.98),
        "S ratio {ratio:.3}"
    );
    // M4 Max: 256-ch runs at 0.55 × the 512-ch rate.
    let m4 = builtin("m4");
    let ratio = compute_ms(&m4, 2048, 512) / compute_ms(&m4, 2048, 256);
    assert!((ratio - 0.55).abs() < 0.05 * 0.55, "C ratio {ratio:.3}");
    // Beyond the saturation points nothing changes; M1/M2 have no shape effect.
    assert_eq!(compute_ms(&m4, 4096, 1024), compute_ms(&m4, 2048, 512));
    let m1 = builtin("m1");
    assert_eq!(compute_ms(&m1, 16, 32), compute_ms(&m1, 2048, 512));
}

#[test]
fn sram_spill_follows_the_m4_max_measurements() {
    // M4 Max: best at 12.5 MB of weights; ×0.54 at 32 MB; ×0.29 at 128 MB (ane.md §8). One exponent cannot
    // hit both points exactly: 10 % tolerance at 32 MB, 20 % at 128 MB.
    let m4 = builtin("m4");
    let eff = |weights: f64| m4.estimate_eval(1e12, 0.0, weights, 2048, 512).sram_efficiency;
    assert_eq!(eff(12.5e6), 1.0);
    assert!((eff(32e6) - 0.54).abs() < 0.10 * 0.54, "32 MB: {}", eff(32e6));
    assert!((eff(128e6) - 0.29).abs() < 0.20 * 0.29, "128 MB: {}", eff(128e6));
}

#[test]
fn estimates_are_floor_plus_work_and_never_nan() {
    for profile in ChipProfile::all_builtin() {
        let idle = profile.estimate_eval_ms(0.0, 0.0, 0.0, 0, 0);
        assert_eq!(idle, profile.cost.dispatch_floor_ms, "{}", profile.id);
        let small = profile.estimate_eval_ms(1e9, 1e5, 1e6, 256, 768);
        let large = profile.estimate_eval_ms(2e9, 1e5, 1e6, 256, 768);
        assert!(small > idle && large > small, "{}: {idle} {small} {large}", profile.id);
        let odd = profile.estimate_eval_ms(f64::NAN, -5.0, 1e6, 0, 0);
        assert!(odd.is_finite() && odd >= idle, "{}: {odd}", profile.id);
    }
}
