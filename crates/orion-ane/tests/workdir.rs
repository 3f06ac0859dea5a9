//! The shared, platform-independent parts of the real device: the compile-directory layout (C04, C05),
//! the known-cause mapping of failures to catalogue rules, and chip detection from the brand string.

use orion_ane::device::errors::{
    compile_failure_cause, evaluate_failure_cause, status_in_message, C06_SUSPECT_COMPILES,
};
use orion_ane::device::host::chip_from_brand;
use orion_ane::device::workdir::{weight_file_relative_path, WorkDir};
use orion_ane::device::{DeviceError, WeightDict};
use orion_ane::profile::{ChipId, ChipProfile};
use std::path::PathBuf;

fn temp_root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orion-workdir-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn weight_paths_map_below_the_directory() {
    assert_eq!(
        weight_file_relative_path("@model_path/weights/w.bin").unwrap(),
        PathBuf::from("weights/w.bin")
    );
    assert_eq!(
        weight_file_relative_path("@model_path/layer0/wq.bin").unwrap(),
        PathBuf::from("layer0/wq.bin")
    );
}

#[test]
fn traversal_absolute_and_odd_paths_are_rejected() {
    let bad = [
        "weights/w.bin",               // no prefix
        "@model_path/",                // no file
        "@model_path/../escape.bin",   // traversal
        "@model_path/weights/../../x", // traversal deeper
        "@model_path//etc/passwd",     // empty component = absolute after the prefix
        "@model_path/./w.bin",         // dot component
        "@model_path/a\\..\\b.bin",    // backslashes
        "@model_path/C:/w.bin",        // drive prefix
        "@model_path/model.mil",       // would replace the MIL text
    ];
    for path in bad {
        assert!(weight_file_relative_path(path).is_err(), "{path:?} was accepted");
    }
}

#[test]
fn workdir_is_complete_before_use_and_removed_on_drop() {
    let root = temp_root("complete");
    let mut weights = WeightDict::new();
    weights.insert("@model_path/weights/a.bin".to_string(), vec![1, 2, 3]);
    weights.insert("@model_path/layer0/wq.bin".to_string(), vec![9; 100]);
    let dir = WorkDir::create(&root, "ABCDEF0123", b"program(1.3)", &weights, "program#1").unwrap();
    let path = dir.path().to_path_buf();
    assert_eq!(path, root.join("ABCDEF0123"));
    assert_eq!(std::fs::read(path.join("model.mil")).unwrap(), b"program(1.3)");
    assert_eq!(std::fs::read(path.join("weights/a.bin")).unwrap(), vec![1, 2, 3]);
    assert_eq!(std::fs::read(path.join("layer0/wq.bin")).unwrap(), vec![9; 100]);
    assert!(path.join("weights").is_dir());
    dir.overwrite_weight_file("@model_path/weights/a.bin", &[7]).unwrap();
    assert_eq!(std::fs::read(path.join("weights/a.bin")).unwrap(), vec![7]);
    assert!(dir
        .overwrite_weight_file("@model_path/weights/missing.bin", &[7])
        .is_err());
    drop(dir);
    assert!(!path.exists(), "the compile directory outlived its program (C05)");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn empty_weights_still_give_a_weights_folder_and_kept_dirs_stay() {
    let root = temp_root("keep");
    let mut dir = WorkDir::create(&root, "00ff", b"x", &WeightDict::new(), "program#2").unwrap();
    assert!(dir.path().join("weights").is_dir());
    dir.keep();
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(path.join("model.mil").is_file());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_identifiers_and_paths_fail_as_c04_without_writing_outside() {
    let root = temp_root("bad");
    for hex in ["", "../x", "a/b", "/abs"] {
        let err = WorkDir::create(&root, hex, b"x", &WeightDict::new(), "p").unwrap_err();
        assert_eq!(err.rule(), Some("C04"), "{hex:?}: {err}");
    }
    let mut weights = WeightDict::new();
    weights.insert("@model_path/../../evil.bin".to_string(), vec![1]);
    let err = WorkDir::create(&root, "abc", b"x", &weights, "p").unwrap_err();
    assert!(matches!(err, DeviceError::Compile { rule: Some("C04"), .. }), "{err}");
    assert!(!root.parent().unwrap().join("evil.bin").exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn evaluation_failures_name_surface_rules_only_on_evidence() {
    let limits = ChipProfile::builtin("m4").unwrap().limits;
    let min = limits.min_surface_bytes;
    let small = evaluate_failure_cause(&[min - 64], &[min], &limits).unwrap();
    assert_eq!(small.rule, "C21");
    let unequal = evaluate_failure_cause(&[min, 2 * min], &[min], &limits).unwrap();
    assert_eq!(unequal.rule, "C18");
    let unequal_out = evaluate_failure_cause(&[min], &[min, 2 * min], &limits).unwrap();
    assert_eq!(unequal_out.rule, "C18");
    assert_eq!(evaluate_failure_cause(&[min, min], &[min], &limits), None);
}

#[test]
fn compile_failures_map_messages_and_late_compiles() {
    assert_eq!(
        compile_failure_cause("op concat is not supported", 3).unwrap().rule,
        "C09"
    );
    assert_eq!(compile_failure_cause("gelu: unsupported mode", 3).unwrap().rule, "C10");
    assert_eq!(
        compile_failure_cause("ANECCompile() FAILED", C06_SUSPECT_COMPILES)
            .unwrap()
            .rule,
        "C06"
    );
    assert_eq!(compile_failure_cause("ANECCompile() FAILED", 5), None);
    assert_eq!(
        compile_failure_cause("broadcast shapes differ", 5),
        None,
        "cast inside a word"
    );
    assert_eq!(compile_failure_cause("unsupported op cast", 5).unwrap().rule, "C16");
}

#[test]
fn status_codes_are_read_from_framework_messages() {
    let m = "ANEProgramProcessRequestDirect() Failed with status=0x1d : Program Inference error";
    assert_eq!(status_in_message(m), Some(0x1d));
    assert_eq!(status_in_message("status=0x20004"), Some(0x20004));
    assert_eq!(status_in_message("no status here"), None);
}

#[test]
fn brand_strings_map_to_generations() {
    assert_eq!(chip_from_brand("Apple M1"), Some(ChipId::M1));
    assert_eq!(chip_from_brand("Apple M4 Pro"), Some(ChipId::M4));
    assert_eq!(chip_from_brand("Apple M3 Ultra"), Some(ChipId::M3));
    assert_eq!(chip_from_brand("Apple M5 Max"), Some(ChipId::M5));
    assert_eq!(chip_from_brand("Apple M9"), None);
    assert_eq!(chip_from_brand("Apple M12"), None);
    assert_eq!(chip_from_brand("Intel(R) Core(TM) i7"), None);
    assert_eq!(chip_from_brand("Apple M4X"), None);
}
