//! End-to-end tests of `orion probe` and `--profile FILE` through the real binary: a probe of the
//! simulator writes a profile that `lint`, `compile` and `sim` accept and that changes what they do; a
//! profile with concat switched on lowers concat natively where the built-in chip rewrites it; malformed
//! profiles and impossible devices are clear errors with a non-zero exit.

use orion_ane::mil::{
    print_program, var_arg, Argument, Dialect, Function, Literal, MilDType, MilType, Operation, Param,
};
use orion_core::{DType, Graph, TensorType};
use serde_json::Value;
use std::path::Path;

mod support;

use support::{fails, ok, orion, path, text};

/// `orion probe --device ane-sim --chip CHIP --quick --out DIR/CHIP.json`; the profile as JSON.
fn probed(dir: &Path, chip: &str) -> (std::path::PathBuf, Value) {
    let file = dir.join(format!("{chip}.json"));
    let stdout = ok(&orion(&[
        "probe",
        "--device",
        "ane-sim",
        "--chip",
        chip,
        "--quick",
        "--out",
        path(&file),
    ]));
    assert!(stdout.contains("C15") && stdout.contains("dialect"), "{stdout}");
    assert!(stdout.contains(&format!("wrote {}", file.display())), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    (file, json)
}

/// `z00_z = concat(a00_x, a01_y)` on the last axis, printed as program(1.3) <ios18>.
fn concat_mil() -> String {
    let t = |n: usize| MilType::tensor(MilDType::Fp16, &[1, 1, 1, n]);
    let mut f = Function::new("main", "ios18");
    f.params = vec![
        Param {
            name: "a00_x".into(),
            ty: t(64),
        },
        Param {
            name: "a01_y".into(),
            ty: t(64),
        },
    ];
    f.operations.push(Operation::constant("ax", Literal::int32(3)));
    f.operations.push(Operation::constant("il", Literal::bool(false)));
    let values = (
        "values".to_string(),
        Argument::Tuple(vec!["a00_x".into(), "a01_y".into()]),
    );
    let args = vec![var_arg("axis", "ax"), var_arg("interleave", "il"), values];
    f.operations.push(Operation::new("z00_z", t(128), "concat", args));
    f.outputs = vec!["z00_z".into()];
    let mut program = Dialect::Ios18.empty_program();
    program.functions.push(f);
    print_program(&program, Dialect::Ios18)
}

#[test]
fn a_probed_profile_is_accepted_and_changes_what_lint_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, json) = probed(dir.path(), "m1");
    assert_eq!(json["id"], "m1");
    assert_eq!(
        json["limits"]["dialect"], "ios16_program10",
        "the simulated M1 reads ios16 only"
    );
    assert!(json["sources"]["limits.dialect"]
        .as_str()
        .unwrap()
        .starts_with("probed:"));
    // The same ios18 program: fine for the default chip (m4), a C15 error under the probed M1 profile.
    let mil = dir.path().join("concat.mil");
    std::fs::write(&mil, concat_mil()).unwrap();
    let default = text(&orion(&["lint", path(&mil)]).stdout);
    assert!(!default.contains("C15"), "{default}");
    let out = orion(&["lint", path(&mil), "--profile", path(&m1)]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success() && stdout.contains("C15"), "{stdout}");
    assert!(stdout.contains("on m1"), "{stdout}");
}

#[test]
fn a_profile_with_concat_on_keeps_concat_where_the_builtin_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut json) = probed(dir.path(), "m4");
    assert_eq!(
        json["limits"]["ops"]["concat"], false,
        "the simulated M4 rejects concat"
    );
    json["limits"]["ops"]["concat"] = Value::Bool(true);
    let concat_on = dir.path().join("concat_on.json");
    std::fs::write(&concat_on, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    // lint: C09 on the built-in M4, clean with the edited profile.
    let mil = dir.path().join("concat.mil");
    std::fs::write(&mil, concat_mil()).unwrap();
    let builtin = orion(&["lint", path(&mil), "--chip", "m4"]);
    assert!(!builtin.status.success() && text(&builtin.stdout).contains("C09"));
    assert!(ok(&orion(&["lint", path(&mil), "--profile", path(&concat_on)])).contains("0 error(s)"));

    // sim: the profile's simulator runs concat.
    let stdout = ok(&orion(&["sim", path(&mil), "--profile", path(&concat_on)]));
    assert!(stdout.contains("z00_z"), "{stdout}");

    // compile: native concat with the profile, the pad-and-add rewrite without it.
    let mut g = Graph::new("joined");
    let x = g.input("x", TensorType::new(DType::F32, [1, 64])).unwrap();
    let y = g.input("y", TensorType::new(DType::F32, [1, 64])).unwrap();
    let z = g.concat(&[x, y], 1).unwrap();
    g.set_output("z", z).unwrap();
    let ir = dir.path().join("joined.ir");
    std::fs::write(&ir, orion_core::text::print(&g)).unwrap();
    let (with, without) = (dir.path().join("with"), dir.path().join("without"));
    ok(&orion(&[
        "compile",
        path(&ir),
        "--profile",
        path(&concat_on),
        "--out",
        path(&with),
    ]));
    ok(&orion(&["compile", path(&ir), "--chip", "m4", "--out", path(&without)]));
    let read = |d: &Path| std::fs::read_to_string(d.join("model.mil")).unwrap();
    assert!(read(&with).contains("concat("), "{}", read(&with));
    assert!(!read(&without).contains("concat("), "{}", read(&without));
}

#[test]
fn malformed_profiles_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mil = dir.path().join("concat.mil");
    std::fs::write(&mil, concat_mil()).unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let stderr = fails(&orion(&["lint", path(&mil), "--profile", path(&garbage)]));
    assert!(
        stderr.contains("garbage.json") && stderr.contains("invalid profile JSON"),
        "{stderr}"
    );

    let mut bad = serde_json::to_value(orion_ane::profile::ChipProfile::builtin("m4").unwrap()).unwrap();
    bad["limits"]["min_surface_bytes"] = Value::from(0);
    let zero = dir.path().join("zero.json");
    std::fs::write(&zero, bad.to_string()).unwrap();
    let stderr = fails(&orion(&["sim", path(&mil), "--profile", path(&zero)]));
    assert!(stderr.contains("limits.min_surface_bytes"), "{stderr}");

    let missing = dir.path().join("missing.json");
    let stderr = fails(&orion(&[
        "compile",
        path(&mil),
        "--profile",
        path(&missing),
        "--out",
        path(dir.path()),
    ]));
    assert!(stderr.contains("cannot read profile"), "{stderr}");

    let stderr = fails(&orion(&["lint", path(&mil), "--chip", "m1", "--profile", path(&zero)]));
    assert!(stderr.contains("--chip") && stderr.contains("--profile"), "{stderr}");
}

#[test]
fn impossible_probes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.json");
    let stderr = fails(&orion(&[
        "probe",
        "--device",
        "ane-sim",
        "--chip",
        "m9",
        "--out",
        path(&out),
    ]));
    assert!(stderr.contains("unknown chip"), "{stderr}");
    let unwritable = dir.path().join("no-such-dir").join("p.json");
    let stderr = fails(&orion(&[
        "probe",
        "--device",
        "ane-sim",
        "--quick",
        "--out",
        path(&unwritable),
    ]));
    assert!(stderr.contains("cannot write the profile"), "{stderr}");
    if cfg!(not(target_vendor = "apple")) {
        let stderr = fails(&orion(&["probe", "--device", "ane", "--out", path(&out)]));
        assert!(stderr.contains("no ANE on this machine"), "{stderr}");
    }
    assert!(!out.exists());
}
