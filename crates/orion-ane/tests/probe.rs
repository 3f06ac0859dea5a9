//! The probe against the simulator: probing a simulated chip recovers the profile the simulator follows
//! — for every built-in chip, and for a deliberately altered profile (so the probe measures rather than
//! copies) — and the run's edges: quick mode, a compile budget that runs out midway, a device that runs
//! nothing, and the atomic JSON write.
//!
//! Expected values are the profiles the simulators were built from (set in this file or built in),
//! never the probe's own output. Floats of the cost model are compared within 1e-6 relative.

use orion_ane::device::{AneDevice, DeviceError, EvalReport, ProgramId, SimulatedAne, Surface, WeightDict};
use orion_ane::probe::{run_probe, write_profile, ExperimentStatus, ProbeError, ProbeOptions, ProbeReport};
use orion_ane::profile::{ChipProfile, IoBindingOrder, MilDialect};
use serde_json::Value;

fn probe(profile: ChipProfile, options: &ProbeOptions) -> ProbeReport {
    let device = SimulatedAne::new(profile);
    run_probe(&device, options).unwrap_or_else(|e| panic!("probe failed: {e}"))
}

/// Every leaf of `value` except `sources`, by dotted path.
fn leaves(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if prefix.is_empty() && key == "sources" {
                    continue;
                }
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(child, &path, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// The fields where `probed` differs from `expected` (numbers within 1e-6 relative are equal).
fn differences(probed: &ChipProfile, expected: &ChipProfile) -> Vec<String> {
    let (mut got, mut want) = (Vec::new(), Vec::new());
    leaves(&serde_json::to_value(probed).unwrap(), "", &mut got);
    leaves(&serde_json::to_value(expected).unwrap(), "", &mut want);
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .filter(|((_, g), (_, w))| match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() > 1e-6 * w.abs().max(1e-12),
            _ => g != w,
        })
        .map(|((path, g), (_, w))| format!("{path}: probed {g}, expected {w}"))
        .collect()
}

fn assert_recovers(expected: ChipProfile) {
    let report = probe(expected.clone(), &ProbeOptions::default());
    report.profile.validate().unwrap();
    let diffs = differences(&report.profile, &expected);
    assert!(
        diffs.is_empty(),
        "{}:\n{}\n{}",
        expected.id,
        diffs.join("\n"),
        report.table()
    );
    // Every field is probed except the saturation extents of a shape exponent of 0 (nothing to see)
    // and the surface alignment, which the simulator does not enforce (the probe says so and keeps
    // the reference's).
    for (field, source) in &report.profile.sources {
        let unobservable = field == "limits.surface_alignment_bytes"
            || (field == "cost.shape_ref_spatial" && expected.cost.spatial_exponent == 0.0)
            || (field == "cost.shape_ref_channels" && expected.cost.channel_exponent == 0.0);
        if !unobservable {
            assert!(source.starts_with("probed:"), "{}: {field}: {source}", expected.id);
        }
    }
    assert!(
        report
            .experiments
            .iter()
            .all(|e| e.status == ExperimentStatus::Measured),
        "{}",
        report.table()
    );
}

#[test]
fn probing_the_simulated_m1_recovers_its_profile() {
    assert_recovers(ChipProfile::builtin("m1").unwrap());
}

#[test]
fn probing_the_simulated_m2_recovers_its_profile() {
    assert_recovers(ChipProfile::builtin("m2").unwrap());
}

#[test]
fn probing_the_simulated_m3_recovers_its_profile() {
    assert_recovers(ChipProfile::builtin("m3").unwrap());
}

#[test]
fn probing_the_simulated_m4_recovers_its_profile() {
    assert_recovers(ChipProfile::builtin("m4").unwrap());
}

#[test]
fn probing_the_simulated_m5_recovers_its_profile() {
    assert_recovers(ChipProfile::builtin("m5").unwrap());
}

/// An M4 whose every measurable field differs from the built-in M4 (the probe's reference).
fn altered_m4() -> ChipProfile {
    let mut p = ChipProfile::builtin("m4").unwrap();
    let l = &mut p.limits;
    l.max_spatial = 32_768;
    l.max_contraction = 8_192;
    l.max_channels = 16_384;
    l.min_surface_bytes = 16_384;
    l.last_axis_alignment_bytes = 32;
    l.uniform_io_sizes = false;
    l.io_binding_order = IoBindingOrder::Declaration;
    l.compile_budget = 50;
    l.sram_budget_bytes = 6_000_000;
    l.dialect = MilDialect::Ios16Program10;
    l.ops.concat = true;
    l.ops.gelu = true;
    l.ops.conv_bias = true;
    l.ops.fp32_io_cast = false;
    l.ops.multi_record_blobs = false;
    l.ops.matmul_inner_multiple = 16;
    l.ops.layer_norm = true;
    l.ops.weights_reload_takes_effect = true;
    l.ops.sin_cos = false;
    l.numerics.matmul_overflow_to_inf = false;
    l.numerics.width_offset_slice_gain = true;
    let c = &mut p.cost;
    c.dispatch_floor_ms = 0.07;
    c.isolated_eval_ms = 0.2;
    c.effective_tflops = 11.0;
    c.bandwidth_gb_s = 35.0;
    c.sram_knee_bytes = 6_000_000;
    c.spill_exponent = 0.5;
    c.shape_ref_spatial = 1_024;
    c.shape_ref_channels = 256;
    c.spatial_exponent = 0.2;
    c.channel_exponent = 0.7;
    c.compile_ms_per_kernel = 90.0;
    p.validate().unwrap();
    p
}

#[test]
fn an_altered_simulator_is_measured_not_copied() {
    let altered = altered_m4();
    let builtin = ChipProfile::builtin("m4").unwrap();
    let report = probe(altered.clone(), &ProbeOptions::default());
    let diffs = differences(&report.profile, &altered);
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), report.table());
    // The alteration touched every measured field, so none of them can have come from the reference.
    let changed = differences(&altered, &builtin);
    assert!(changed.len() >= 30, "{changed:?}");
    assert_eq!(report.profile.limits.compile_budget, 50, "the budget of 50 was counted");
    assert!(report.profile.sources["limits.ops.concat"].starts_with("probed:"));
}

#[test]
fn quick_mode_spares_the_compile_budget_and_skips_the_spill_sweep() {
    let device = SimulatedAne::new(ChipProfile::builtin("m4").unwrap());
    let options = ProbeOptions {
        quick: true,
        ..ProbeOptions::default()
    };
    let report = run_probe(&device, &options).unwrap();
    assert_eq!(report.compiles, device.compile_count());
    assert!(device.compile_count() < 50, "{} compiles", device.compile_count());
    for field in ["limits.compile_budget", "cost.sram_knee_bytes", "cost.spill_exponent"] {
        let source = &report.profile.sources[field];
        assert!(source.starts_with("not probed: skipped (quick)"), "{field}: {source}");
    }
    let budget = report.experiment("compile budget").unwrap();
    assert_eq!(budget.status, ExperimentStatus::Skipped);
}

#[test]
fn a_budget_that_runs_out_midway_is_measured_and_stops_the_compiles() {
    let mut small = ChipProfile::builtin("m4").unwrap();
    small.limits.compile_budget = 8;
    let report = probe(small, &ProbeOptions::default());
    assert_eq!(report.profile.limits.compile_budget, 8);
    assert!(report.profile.sources["limits.compile_budget"].starts_with("probed:"));
    // The op experiments come after the first dozen compiles: their fields keep the reference.
    let source = &report.profile.sources["limits.ops.concat"];
    assert!(source.contains("refused compiles (its budget, C06)"), "{source}");
    report.profile.validate().unwrap();
}

/// A device that refuses every compile.
#[derive(Debug)]
struct Refusing(ChipProfile);

impl AneDevice for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    fn profile(&self) -> &ChipProfile {
        &self.0
    }
    fn compile(&self, _: &[u8], _: &WeightDict) -> Result<ProgramId, DeviceError> {
        Err(DeviceError::Compile {
            program: "any".into(),
            message: "ANECCompile() FAILED".into(),
            rule: None,
        })
    }
    fn load(&self, id: ProgramId) -> Result<(), DeviceError> {
        Err(DeviceError::UnknownProgram {
            program: id.to_string(),
        })
    }
    fn evaluate(&self, id: ProgramId, _: &[Surface], _: &mut [Surface]) -> Result<EvalReport, DeviceError> {
        Err(DeviceError::UnknownProgram {
            program: id.to_string(),
        })
    }
    fn unload(&self, id: ProgramId) -> Result<(), DeviceError> {
        Err(DeviceError::UnknownProgram {
            program: id.to_string(),
        })
    }
    fn compile_count(&self) -> u32 {
        0
    }
    fn overwrite_weight_file(&self, id: ProgramId, _: &str, _: &[u8]) -> Result<(), DeviceError> {
        Err(DeviceError::UnknownProgram {
            program: id.to_string(),
        })
    }
}

#[test]
fn a_device_that_runs_nothing_is_an_error_naming_what_it_saw() {
    let device = Refusing(ChipProfile::builtin("m2").unwrap());
    match run_probe(&device, &ProbeOptions::default()) {
        Err(ProbeError::Unusable(seen)) => assert!(seen.contains("ANECCompile() FAILED"), "{seen}"),
        other => panic!("expected Unusable, got {other:?}"),
    }
}

#[test]
fn the_profile_is_written_atomically_and_reads_back() {
    let report = probe(
        ChipProfile::builtin("m4").unwrap(),
        &ProbeOptions {
            quick: true,
            ..ProbeOptions::default()
        },
    );
    let dir = std::env::temp_dir().join(format!("orion-probe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m4.json");
    write_profile(&report.profile, &path).unwrap();
    let back = ChipProfile::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, report.profile);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["m4.json".to_string()], "no temporary file is left");
    let missing = dir.join("no-such-dir").join("m4.json");
    assert!(matches!(
        write_profile(&report.profile, &missing),
        Err(ProbeError::Write { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
