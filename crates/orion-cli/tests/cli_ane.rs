//! End-to-end tests of `orion compile`, `orion lint` and `orion sim` through the real binary: a small
//! IR program is compiled for a chip, the emitted MIL passes lint, and simulating it on the inputs
//! written as `.npy` gives what the reference interpreter computes in fp16; every bad input is a clear
//! error with a non-zero exit.

use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorType};
use std::path::{Path, PathBuf};

mod support;

use support::{fails, ok, orion, path, text};

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i % 13) as f32 - 6.0) * scale).collect()
}

/// `y = tanh(x · Wᵀ + b)` with `x [32, 32]` an input, `W [16, 32]` and `b [16]` constants.
fn small_graph() -> Graph {
    let mut g = Graph::new("small");
    let x = g.input("x", TensorType::new(DType::F32, [32, 32])).unwrap();
    let w = g.constant(Tensor::f32([16, 32], ramp(512, 0.01))).unwrap();
    let b = g.constant(Tensor::f32([16], ramp(16, 0.1))).unwrap();
    let h = g.matmul(x, w, false, true).unwrap();
    let h = g.add(h, b).unwrap();
    let y = g.unary(orion_core::UnaryOp::Tanh, h).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// A version 1.0 `.npy` of little-endian f32 (`<f4`) or f16 (`<f2`) values.
fn write_npy(file: &Path, dims: &[usize], values: &[f32], f16: bool) {
    let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    let descr = if f16 { "<f2" } else { "<f4" };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
        shape.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &v in values {
        if f16 {
            bytes.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        } else {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(file, bytes).unwrap();
}

/// The header text and the data bytes of a version 1.0 `.npy` file.
fn read_npy(file: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    (text(&bytes[10..10 + len]), bytes[10 + len..].to_vec())
}

fn f16_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(2)
        .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect()
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Writes `small.ir`, compiles it for m4 into `model/`, returns (IR file, model dir).
fn compiled(dir: &Path, weights: &str) -> (PathBuf, PathBuf) {
    let ir = dir.join("small.ir");
    std::fs::write(&ir, orion_core::text::print(&small_graph())).unwrap();
    let model = dir.join("model");
    let stdout = ok(&orion(&[
        "compile",
        path(&ir),
        "--chip",
        "m4",
        "--weights",
        weights,
        "--out",
        path(&model),
    ]));
    assert!(stdout.contains("a00_x") && stdout.contains("z00_y"), "{stdout}");
    assert!(stdout.contains("lint: 0 error(s)"), "{stdout}");
    (ir, model)
}

#[test]
fn compile_lint_and_sim_agree_with_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = compiled(dir.path(), "baked");
    let mil = model.join("model.mil");
    assert!(std::fs::read_to_string(&mil).unwrap().starts_with("program(1.3)"));
    let weight_files = std::fs::read_dir(model.join("weights")).unwrap().count();
    assert!(weight_files >= 1);
    assert!(ok(&orion(&["lint", path(&mil), "--chip", "m4"])).contains("0 error(s)"));
    let stderr = fails(&orion(&["lint", path(&mil), "--chip", "m1"]));
    assert!(stderr.contains("m1"), "{stderr}");

    // x [32, 32] travels channel-major: MIL a00_x is [1, 32, 1, 32] with element (c, s) = x[s][c].
    let x = ramp(1024, 0.05);
    let x_file = dir.path().join("x.npy");
    write_npy(&x_file, &[1, 32, 1, 32], &transpose(&x, 32, 32), true);
    let out = dir.path().join("out");
    let input = format!("a00_x={}", path(&x_file));
    let stdout = ok(&orion(&[
        "sim",
        path(&mil),
        "--chip",
        "m4",
        "--input",
        &input,
        "--out",
        path(&out),
    ]));
    assert!(
        stdout.contains("estimate:") && stdout.contains("ms per evaluation"),
        "{stdout}"
    );
    let (header, data) = read_npy(&out.join("z00_y.npy"));
    assert!(
        header.contains("'<f2'") && header.contains("(1, 16, 1, 32)"),
        "{header}"
    );
    let actual = Tensor::f32([32, 16], transpose(&f16_values(&data), 16, 32));
    let expected = interpret(&small_graph(), &[Tensor::f32([32, 32], x)], Precision::F16Rounding).unwrap();
    compare(&actual, &expected[0], Tolerance::F16).unwrap();
}

#[test]
fn weights_as_inputs_write_no_weight_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = compiled(dir.path(), "inputs");
    assert!(!model.join("weights").exists());
    let stdout = ok(&orion(&["sim", path(&model.join("model.mil")), "--chip", "m4"]));
    assert!(stdout.contains("a01_"), "the weight is a program input: {stdout}");
    assert!(stdout.contains("random (seed 0)"), "{stdout}");
}

#[test]
fn random_inputs_follow_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = compiled(dir.path(), "baked");
    let mil = model.join("model.mil");
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        ok(&orion(&["sim", path(&mil), "--seed", seed, "--out", path(&out)]));
        std::fs::read(out.join("z00_y.npy")).unwrap()
    };
    assert_eq!(run("7", "a"), run("7", "b"));
    assert_ne!(run("7", "c"), run("8", "d"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (ir, model) = compiled(dir.path(), "baked");
    let mil = model.join("model.mil");
    let mil = path(&mil);
    let wrong_shape = dir.path().join("wrong.npy");
    write_npy(&wrong_shape, &[32, 32], &[0.0; 1024], false);
    let not_npy = dir.path().join("bad.npy");
    std::fs::write(&not_npy, b"hello").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--input".into(), format!("b00_q={}", path(&wrong_shape))],
            "no parameter",
        ),
        (
            vec!["--input".into(), format!("a00_x={}", path(&wrong_shape))],
            "does not match",
        ),
        (
            vec!["--input".into(), format!("a00_x={}", path(&not_npy))],
            "not a .npy",
        ),
        (vec!["--input".into(), "a00_x=/nonexistent/x.npy".into()], "cannot read"),
        (vec!["--input".into(), "a00_x".into()], "NAME=FILE"),
        (vec!["--chip".into(), "m9".into()], "unknown chip"),
        (vec!["--weights".into(), path(dir.path()).into()], "not found"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["sim", mil];
        args.extend(extra.iter().map(String::as_str));
        let stderr = fails(&orion(&args));
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let stderr = fails(&orion(&["sim", path(&ir)]));
    assert!(stderr.contains("small.ir:"), "an IR file is not MIL: {stderr}");
    let stderr = fails(&orion(&["compile", mil, "--out", path(dir.path())]));
    assert!(stderr.contains("model.mil:"), "a MIL file is not IR: {stderr}");
    let bad_mil = dir.path().join("gelu.mil");
    let gelu = std::fs::read_to_string(mil).unwrap().replace("tanh(", "gelu(");
    std::fs::write(&bad_mil, gelu).unwrap();
    let out = orion(&["lint", path(&bad_mil), "--chip", "m4"]);
    fails(&out);
    assert!(text(&out.stdout).contains("error[C10]"), "{}", text(&out.stdout));
}

/// `mil` with the declared shape of parameter `name` replaced by `dims`.
fn with_parameter_shape(mil: &str, name: &str, dims: &str) -> String {
    let at = mil.find(&format!("> {name}")).expect("parameter declared");
    let open = mil[..at].rfind('[').expect("its shape");
    format!("{}[{dims}]{}", &mil[..open], &mil[at..])
}

#[test]
fn hostile_input_shapes_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = compiled(dir.path(), "baked");
    let mil = std::fs::read_to_string(model.join("model.mil")).unwrap();
    let cases = [
        // 12 TB of random input values: once an allocation failure and an abort.
        ("1, 1, 1, 99999999999", "larger than any surface"),
        ("1, 1, 1, 99999999999999999999", "invalid extent"),
        // Each axis within the caps, the element count past usize.
        ("65536, 65536, 65536, 65536", "larger than any surface"),
        // Small enough to allocate, over M4's spatial cap: the device would refuse it.
        ("1, 1, 1, 70000", "C26"),
    ];
    for (dims, message) in cases {
        let file = model.join("hostile.mil");
        std::fs::write(&file, with_parameter_shape(&mil, "a00_x", dims)).unwrap();
        let stderr = fails(&orion(&["sim", path(&file), "--chip", "m4"]));
        assert!(stderr.contains(message), "{dims}: {stderr}");
    }
}
