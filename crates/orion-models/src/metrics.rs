//! Training metrics: `metrics.jsonl` (one JSON object per step, each line flushed as written) and a
//! `loss.png` plot of the training and validation curves.
//!
//! A line holds `step`, `loss`, `lr`, `tokens_per_s`, `val_loss` when it was measured, and any extra
//! fields flattened in. Non-finite numbers are written as `null` (JSON has no NaN) and read back as
//! NaN, so a diverged step is still visible in the log.
//!
//! The plot is drawn by a small rasteriser here and written as an 8-bit palette PNG compressed with a
//! fixed-Huffman, run-length-only deflate: no system libraries and no fonts (labels use a built-in
//! 3×5 pixel font). The image is a pure function of the records, so it is reproducible.
//!
//! Invariant: after [`MetricsWriter::resume`] at step `s`, the file holds only records with
//! `step ≤ s`, so a resumed run does not log the steps after its checkpoint twice.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metrics log's file name inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss plot's file name inside a run directory.
pub const LOSS_PLOT_FILE: &str = "loss.png";

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    #[serde(with = "nullable_f32")]
    pub loss: f32,
    #[serde(with = "nullable_f32")]
    pub lr: f32,
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f32>,
    /// Further fields (grad norm, loss scale, overflow counters, …), written at the top level.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StepMetrics {
    pub fn new(step: u64, loss: f32, lr: f32, tokens_per_s: f64) -> StepMetrics {
        StepMetrics {
            step,
            loss,
            lr,
            tokens_per_s,
            val_loss: None,
            extra: Map::new(),
        }
    }
}

/// `f32` that is written as `null` when not finite and read back from `null` as NaN.
mod nullable_f32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f32(*x)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }
}

/// Appends [`StepMetrics`] to `DIR/metrics.jsonl`, one flushed line per record.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Starts a new log in `dir` (created if missing), replacing any previous one.
    pub fn create(dir: &Path) -> Result<MetricsWriter> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let path = dir.join(METRICS_FILE);
        let file = File::create(&path).map_err(|e| ModelError::io(&path, e))?;
        Ok(MetricsWriter { path, file })
    }

    /// Continues the log in `dir` after resuming from a checkpoint at `last_step`: records with a
    /// larger step (logged after that checkpoint by the interrupted run) and a torn last line are
    /// dropped; the rest is kept and new records are appended.
    pub fn resume(dir: &Path, last_step: u64) -> Result<MetricsWriter> {
        let path = dir.join(METRICS_FILE);
        if !path.exists() {
            return MetricsWriter::create(dir);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let mut kept = String::new();
        for line in text.lines() {
            let step = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step")?.as_u64());
            if matches!(step, Some(s) if s <= last_step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        crate::weights::export::write_atomically(&path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| ModelError::io(&path, e))?;
        Ok(MetricsWriter { path, file })
    }

    /// Appends one record as one line and flushes it.
    pub fn write(&mut self, record: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| ModelError::format(&self.path, format!("cannot encode metrics: {e}")))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| ModelError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record of a `metrics.jsonl` file; a bad line is an error naming its number.
pub fn read_metrics(jsonl: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(jsonl).map_err(|e| ModelError::io(jsonl, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| ModelError::format(jsonl, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Draws the training loss (blue line) and validation loss (orange line with dots) of a
/// `metrics.jsonl` file against the step, and writes the picture to `png`.
pub fn plot_losses(jsonl: &Path, png: &Path) -> Result<()> {
    let records = read_metrics(jsonl)?;
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.loss.is_finite())
        .map(|r| (r.step as f64, r.loss as f64))
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.val_loss.filter(|v| v.is_finite()).map(|v| (r.step as f64, v as f64)))
        .collect();
    if train.is_empty() && val.is_empty() {
        return Err(ModelError::format(jsonl, "no finite loss to plot"));
    }
    let canvas = draw_plot(&train, &val);
    let bytes = encode_png(&canvas).map_err(|e| ModelError::format(png, format!("cannot encode the plot: {e}")))?;
    crate::weights::export::write_atomically(png, &bytes)
}

const WIDTH: usize = 720;
const HEIGHT: usize = 450;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 50;
/// Palette indices of the picture.
const WHITE: u8 = 0;
const BLACK: u8 = 1;
const GRID: u8 = 2;
const BLUE: u8 = 3;
const ORANGE: u8 = 4;
const PALETTE: [[u8; 3]; 5] = [
    [255, 255, 255],
    [0, 0, 0],
    [225, 225, 225],
    [31, 119, 180],
    [255, 127, 14],
];

/// An indexed-colour raster.
struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            pixels: vec![WHITE; WIDTH * HEIGHT],
        }
    }

    fn set(&mut self, x: i64, y: i64, color: u8) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = color;
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: u8) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, color);
            }
        }
    }

    /// A line of the given thickness (Bresenham, each point stamped as a square).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thick: i64, color: u8) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x - thick / 2, y - thick / 2, thick, thick, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 3×5 font at `scale`; unknown characters are left blank. Returns the width drawn.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, color: u8) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            if let Some(rows) = glyph(ch) {
                for (r, bits) in rows.iter().enumerate() {
                    for c in 0..3 {
                        if bits & (4 >> c) != 0 {
                            self.rect(cx + c * scale, y + r as i64 * scale, scale, scale, color);
                        }
                    }
                }
            }
            cx += 4 * scale;
        }
        cx - x
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 4 * scale
}

/// Rows of a 3×5 glyph (bit 2 is the left column).
fn glyph(ch: char) -> Option<[u8; 5]> {
    Some(match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        's' => [0, 7, 6, 1, 7],
        't' => [2, 7, 2, 2, 3],
        'p' => [0, 6, 5, 6, 4],
        'l' => [6, 2, 2, 2, 7],
        'o' => [0, 7, 5, 5, 7],
        'a' => [0, 3, 5, 5, 3],
        'r' => [0, 5, 6, 4, 4],
        'i' => [2, 0, 2, 2, 2],
        'n' => [0, 6, 5, 5, 5],
        'v' => [0, 5, 5, 5, 2],
        _ => return None,
    })
}

/// A closed interval of data values with "nice" tick positions (1, 2 or 5 × 10^k apart).
struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn covering(values: impl Iterator<Item = f64>, pad: f64) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi - lo < 1e-12 {
            let half = if lo.abs() > 1e-12 { lo.abs() * 0.05 } else { 0.5 };
            return Axis {
                lo: lo - half,
                hi: hi + half,
            };
        }
        let margin = (hi - lo) * pad;
        Axis {
            lo: lo - margin,
            hi: hi + margin,
        }
    }

    fn ticks(&self) -> Vec<f64> {
        let raw = (self.hi - self.lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step).floor() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    }

    /// Position of `v` in `[0, 1]` along the axis.
    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }
}

/// A tick label: at most 4 significant digits, exponent form for very large or small values.
fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (3 - a.log10().floor() as i64).clamp(0, 4) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn draw_plot(train: &[(f64, f64)], val: &[(f64, f64)]) -> Canvas {
    let mut c = Canvas::new();
    let all = || train.iter().chain(val.iter());
    let xs = Axis::covering(all().map(|p| p.0), 0.0);
    let ys = Axis::covering(all().map(|p| p.1), 0.05);
    let (pw, ph) = ((WIDTH - LEFT - RIGHT) as f64, (HEIGHT - TOP - BOTTOM) as f64);
    let px = |x: f64| LEFT as i64 + (xs.frac(x) * pw).round() as i64;
    let py = |y: f64| (TOP as f64 + (1.0 - ys.frac(y)) * ph).round() as i64;
    let (x0, x1, y0, y1) = (
        LEFT as i64,
        (WIDTH - RIGHT) as i64,
        TOP as i64,
        (HEIGHT - BOTTOM) as i64,
    );
    for t in ys.ticks() {
        let y = py(t);
        c.line((x0, y), (x1, y), 1, GRID);
        c.line((x0 - 5, y), (x0, y), 1, BLACK);
        let label = tick_label(t);
        c.text(x0 - 8 - text_width(&label, 2), y - 5, &label, 2, BLACK);
    }
    for t in xs.ticks() {
        let x = px(t);
        c.line((x, y0), (x, y1), 1, GRID);
        c.line((x, y1), (x, y1 + 5), 1, BLACK);
        let label = tick_label(t);
        c.text(x - text_width(&label, 2) / 2, y1 + 9, &label, 2, BLACK);
    }
    c.line((x0, y0), (x0, y1), 1, BLACK);
    c.line((x0, y1), (x1, y1), 1, BLACK);
    c.text((x0 + x1) / 2 - text_width("step", 2) / 2, y1 + 28, "step", 2, BLACK);
    c.text(4, y0, "loss", 2, BLACK);
    draw_series(&mut c, train, &px, &py, BLUE, false);
    draw_series(&mut c, val, &px, &py, ORANGE, true);
    let mut ly = y0 + 6;
    for (name, color, series) in [("train", BLUE, train), ("val", ORANGE, val)] {
        if !series.is_empty() {
            c.line((x1 - 110, ly + 4), (x1 - 80, ly + 4), 3, color);
            c.text(x1 - 72, ly, name, 2, BLACK);
            ly += 16;
        }
    }
    c
}

fn draw_series(
    c: &mut Canvas,
    points: &[(f64, f64)],
    px: &dyn Fn(f64) -> i64,
    py: &dyn Fn(f64) -> i64,
    color: u8,
    dots: bool,
) {
    let screen: Vec<(i64, i64)> = points.iter().map(|&(x, y)| (px(x), py(y))).collect();
    for pair in screen.windows(2) {
        c.line(pair[0], pair[1], 2, color);
    }
    if dots || screen.len() == 1 {
        for &(x, y) in &screen {
            c.rect(x - 3, y - 3, 7, 7, color);
        }
    }
}

/// The canvas as a PNG file (indexed colour, 8 bits per index), encoded by the `png` crate.
fn encode_png(c: &Canvas) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(PALETTE.iter().flatten().copied().collect::<Vec<u8>>());
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&c.pixels)?;
    writer.finish()?;
    Ok(out)
}
