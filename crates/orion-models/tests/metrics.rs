//! Tests of the metrics log and loss plot: every line is JSON with the promised fields, resuming
//! drops the steps after the checkpoint, and `loss.png` is a well-formed PNG of a real picture.

use orion_models::metrics::{plot_losses, read_metrics, MetricsWriter, StepMetrics, LOSS_PLOT_FILE, METRICS_FILE};
use serde_json::{json, Value};

fn record(step: u64, loss: f32) -> StepMetrics {
    let mut r = StepMetrics::new(step, loss, 1e-3, 1234.5);
    r.extra.insert("grad_norm".into(), json!(0.75));
    r
}

fn write_run(dir: &std::path::Path, steps: u64) {
    let mut w = MetricsWriter::create(dir).expect("create");
    for step in 0..steps {
        let mut r = record(step, 4.0 / (1.0 + step as f32 * 0.1));
        if step % 10 == 9 {
            r.val_loss = Some(4.2 / (1.0 + step as f32 * 0.09));
        }
        w.write(&r).expect("write");
    }
}

#[test]
fn every_line_is_a_json_object_with_the_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = MetricsWriter::create(dir.path()).expect("create");
    w.write(&record(0, 5.5)).expect("write");
    let mut with_val = record(1, 5.25);
    with_val.val_loss = Some(5.75);
    w.write(&with_val).expect("write");
    w.write(&record(2, f32::NAN)).expect("write");
    // Each line is on disk as soon as it is written: read while the writer is still open.
    let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).expect("read");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line parses"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["step"], json!(0));
    assert_eq!(lines[0]["loss"], json!(5.5));
    assert_eq!(lines[0]["lr"].as_f64().map(|x| x as f32), Some(1e-3));
    assert_eq!(lines[0]["tokens_per_s"], json!(1234.5));
    assert_eq!(lines[0]["grad_norm"], json!(0.75));
    assert!(lines[0].get("val_loss").is_none());
    assert_eq!(lines[1]["val_loss"], json!(5.75));
    assert_eq!(lines[2]["loss"], Value::Null);
    let back = read_metrics(w.path()).expect("read back");
    assert!(back[2].loss.is_nan());
    assert_eq!(back[1], with_val);
}

#[test]
fn resume_drops_steps_after_the_checkpoint_and_a_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), 8);
    let path = dir.path().join(METRICS_FILE);
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str("{\"step\": 8, \"lo"); // a crash in the middle of a line
    std::fs::write(&path, text).expect("write");
    let mut w = MetricsWriter::resume(dir.path(), 5).expect("resume");
    w.write(&record(6, 1.0)).expect("write");
    let steps: Vec<u64> = read_metrics(&path).expect("read").iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5, 6]);
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Bitwise CRC-32 (no table), independent of the crate's implementation.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[test]
fn loss_plot_is_a_well_formed_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), 200);
    let png = dir.path().join(LOSS_PLOT_FILE);
    plot_losses(&dir.path().join(METRICS_FILE), &png).expect("plot");
    let bytes = std::fs::read(&png).expect("read png");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 2_000, "suspiciously small: {} bytes", bytes.len());
    // Walk the chunks: each CRC must be right; IHDR first, IEND last, IDAT non-trivial.
    let mut pos = 8;
    let mut kinds = Vec::new();
    let mut idat = 0;
    while pos < bytes.len() {
        let len = be_u32(&bytes[pos..]) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let body = &bytes[pos + 8..pos + 8 + len];
        let crc = be_u32(&bytes[pos + 8 + len..]);
        assert_eq!(crc, crc32_bitwise(&bytes[pos + 4..pos + 8 + len]), "CRC of {:?}", kind);
        if kind == b"IHDR" {
            assert!(be_u32(body) >= 320 && be_u32(&body[4..]) >= 200, "tiny image");
        }
        if kind == b"IDAT" {
            idat += len;
        }
        kinds.push(String::from_utf8_lossy(kind).to_string());
        pos += 12 + len;
    }
    assert_eq!(pos, bytes.len());
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
    assert!(idat > 1_000, "image data of {idat} bytes");
}

#[test]
fn plotting_nothing_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = MetricsWriter::create(dir.path()).expect("create");
    w.write(&record(0, f32::NAN)).expect("write");
    let err = plot_losses(w.path(), &dir.path().join(LOSS_PLOT_FILE)).expect_err("no finite loss");
    assert!(err.to_string().contains(METRICS_FILE), "{err}");
}
