//! End-to-end tests of `orion ir opt` and `orion ir grad` through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn orion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(args)
        .output()
        .expect("the orion binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path.to_string_lossy().into_owned()
}

const SMALL: &str = "graph small {
  %0 = input \"x\" : f32[2,3]
  %1 = input \"w\" : f32[4,3]
  %2 = matmul %0, %1 transpose_a=false transpose_b=true : f32[2,4]
  %3 = const [1.0] : f32[]
  %4 = mul %2, %3 : f32[2,4]
  %5 = tanh %4 : f32[2,4]
  output \"y\" = %5
}
";

#[test]
fn opt_on_the_builtin_block_prints_parseable_ir_and_reports() {
    let out = orion(&["ir", "opt", "--builtin", "gpt2-block"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for section in ["# optimised IR", "# memory", "# I/O plan", "# pass timings"] {
        assert!(stdout.contains(section), "missing {section}:\n{stdout}");
    }
    let graph = orion_core::text::parse(&stdout).expect("the printed IR parses back");
    assert_eq!(graph.outputs()[0].name, "y");
}

#[test]
fn opt_removes_the_multiplication_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "small.ir", SMALL);
    let out = orion(&["ir", "opt", &file, "--print-after", "identity"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let optimised = stdout.split("# optimised IR").nth(1).unwrap();
    assert!(!optimised.contains(" mul "), "{optimised}");
    assert!(stdout.contains("# IR after pass identity"));
}

#[test]
fn parse_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.ir", &SMALL.replace("tanh %4", "tanh %9"));
    let out = orion(&["ir", "opt", &file]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("{file}:7:")), "{stderr}");
}

#[test]
fn unknown_pass_and_missing_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "small.ir", SMALL);
    let out = orion(&["ir", "opt", &file, "--print-after", "no-such-pass"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-pass"));
    let out = orion(&["ir", "opt", "/nonexistent/file.ir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn grad_prints_a_backward_graph_with_gradient_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "small.ir", SMALL);
    let out = orion(&["ir", "grad", &file, "--wrt", "x,w"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let graph = orion_core::text::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["y", "grad_x", "grad_w"]);
    assert!(graph.input_value("grad_y").is_some());
    let out = orion(&["ir", "grad", &file, "--wrt", "nope"]);
    assert!(!out.status.success());
}
