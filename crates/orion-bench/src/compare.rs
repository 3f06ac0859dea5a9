//! The regression gate: compares a run with a saved baseline figure by figure.
//!
//! Rules:
//! - the two runs must measure the same thing (suite, model, device, chip, weights, batch, length,
//!   strategy, quick mode, huge pages, products precision): otherwise [`compare`] fails with [`BenchError::Mismatch`] naming the field;
//! - only `Lower`/`Higher` figures are compared. Each change is expressed as a slowdown, the ratio of
//!   times: `current / baseline` for a time, `baseline / current` for a rate, so "10 % slower" means
//!   the same for ms and tok/s. A slowdown above `1 + threshold` is `Slower`, below
//!   `1 / (1 + threshold)` is `Faster`, anything between is `Same`;
//! - times where both values are under [`NOISE_FLOOR_MS`] are `Same` (below the clock's useful
//!   resolution on a shared machine);
//! - a gated figure of the baseline that this run lacks is `Missing`, and fails the gate like a
//!   slower one (the gate cannot vouch for it); a figure only this run has is `New`.

use crate::error::{BenchError, Result};
use crate::result::{BenchRun, Better, RunConfig};

/// Times below this (both runs) are never called slower or faster, ms.
pub const NOISE_FLOOR_MS: f64 = 0.05;

/// The outcome for one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Faster,
    Same,
    Slower,
    /// In the baseline, not in this run.
    Missing,
    /// In this run, not in the baseline.
    New,
}

/// One gated figure of either run.
#[derive(Clone, Debug, PartialEq)]
pub struct FigureChange {
    pub row: String,
    pub figure: String,
    pub unit: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// Ratio of times (> 1: slower); `None` unless both values exist.
    pub slowdown: Option<f64>,
    pub verdict: Verdict,
}

impl FigureChange {
    /// `row figure` as the table and messages name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.row, self.figure)
    }

    /// A one-line description (`decode tok/s: 80.1 → 40.2 tok/s (1.99× slower)`).
    pub fn describe(&self) -> String {
        let value = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
        let change = match (self.verdict, self.slowdown) {
            (Verdict::Missing, _) => "missing in this run".to_string(),
            (Verdict::New, _) => "new in this run".to_string(),
            (_, Some(s)) if s >= 2.0 => format!("{s:.2}× slower"),
            (_, Some(s)) if s >= 1.0 => format!("{:.1}% slower", (s - 1.0) * 100.0),
            (_, Some(s)) if s > 0.5 => format!("{:.1}% faster", (1.0 / s - 1.0) * 100.0),
            (_, Some(s)) if s > 0.0 => format!("{:.2}× faster", 1.0 / s),
            _ => "no comparable change".to_string(),
        };
        format!(
            "{}: {} → {} {} ({change})",
            self.label(),
            value(self.baseline),
            value(self.current),
            self.unit
        )
    }
}

/// Every gated figure of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub threshold_pct: f64,
    pub changes: Vec<FigureChange>,
}

impl Comparison {
    /// Figures that fail the gate: slower beyond the threshold, or missing.
    pub fn regressions(&self) -> Vec<&FigureChange> {
        self.changes
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Slower | Verdict::Missing))
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.regressions().is_empty()
    }
}

/// Checks that the two configurations measure the same thing (see the module header).
pub fn check_same_configuration(baseline: &RunConfig, current: &RunConfig) -> Result<()> {
    let fields: [(&'static str, String, String); 11] = [
        ("suite", baseline.suite.name().into(), current.suite.name().into()),
        ("model", baseline.model.clone(), current.model.clone()),
        ("device", baseline.device.name().into(), current.device.name().into()),
        ("chip", format!("{:?}", baseline.chip), format!("{:?}", current.chip)),
        ("weights", baseline.weights.name().into(), current.weights.name().into()),
        (
            "batch size",
            baseline.batch_size.to_string(),
            current.batch_size.to_string(),
        ),
        (
            "sequence length",
            baseline.seq_len.to_string(),
            current.seq_len.to_string(),
        ),
        (
            "strategy",
            format!("{:?}", baseline.strategy.map(|s| s.name())),
            format!("{:?}", current.strategy.map(|s| s.name())),
        ),
        ("quick mode", baseline.quick.to_string(), current.quick.to_string()),
        (
            "huge pages",
            baseline.huge_pages.to_string(),
            current.huge_pages.to_string(),
        ),
        (
            "products",
            baseline.products.name().into(),
            current.products.name().into(),
        ),
    ];
    match fields.into_iter().find(|(_, b, c)| b != c) {
        Some((field, baseline, current)) => Err(BenchError::Mismatch {
            field,
            baseline,
            current,
        }),
        None => Ok(()),
    }
}

/// The slowdown of `current` against `baseline` for a figure where `better` is an improvement.
fn slowdown(better: Better, baseline: f64, current: f64) -> f64 {
    match better {
        Better::Higher => baseline / current,
        Better::Lower | Better::Info => current / baseline,
    }
}

fn verdict(better: Better, unit: &str, baseline: f64, current: f64, threshold: f64) -> (Option<f64>, Verdict) {
    if unit == "ms" && baseline.abs() < NOISE_FLOOR_MS && current.abs() < NOISE_FLOOR_MS {
        return (None, Verdict::Same);
    }
    let ratio = slowdown(better, baseline, current);
    let v = if ratio.is_nan() {
        Verdict::Same
    } else if ratio > 1.0 + threshold {
        Verdict::Slower
    } else if ratio < 1.0 / (1.0 + threshold) {
        Verdict::Faster
    } else {
        Verdict::Same
    };
    (ratio.is_finite().then_some(ratio), v)
}

/// Compares every gated figure of `current` with `baseline`; `threshold_pct` is the slowdown allowed
/// (10 = 10 %). Fails when the runs measure different things or the threshold is not a percentage.
pub fn compare(baseline: &BenchRun, current: &BenchRun, threshold_pct: f64) -> Result<Comparison> {
    if !threshold_pct.is_finite() || threshold_pct < 0.0 {
        return Err(BenchError::Usage(format!(
            "the threshold must be a non-negative percentage, not {threshold_pct}"
        )));
    }
    check_same_configuration(&baseline.config, &current.config)?;
    let threshold = threshold_pct / 100.0;
    let mut changes = Vec::new();
    for row in &baseline.rows {
        for fig in row.figures.iter().filter(|f| f.better != Better::Info) {
            let now = current.row(&row.name).and_then(|r| r.figure(&fig.name));
            let (ratio, verdict) = match now {
                Some(n) => verdict(fig.better, &fig.unit, fig.value, n.value, threshold),
                None => (None, Verdict::Missing),
            };
            changes.push(FigureChange {
                row: row.name.clone(),
                figure: fig.name.clone(),
                unit: fig.unit.clone(),
                baseline: Some(fig.value),
                current: now.map(|n| n.value),
                slowdown: ratio,
                verdict,
            });
        }
    }
    for row in &current.rows {
        for fig in row.figures.iter().filter(|f| f.better != Better::Info) {
            if baseline.row(&row.name).and_then(|r| r.figure(&fig.name)).is_none() {
                changes.push(FigureChange {
                    row: row.name.clone(),
                    figure: fig.name.clone(),
                    unit: fig.unit.clone(),
                    baseline: None,
                    current: Some(fig.value),
                    slowdown: None,
                    verdict: Verdict::New,
                });
            }
        }
    }
    Ok(Comparison { threshold_pct, changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Device, Machine, ProductsChoice, Row, Strategy, Suite, WeightsChoice, FORMAT};

    fn config(suite: Suite, model: &str) -> RunConfig {
        RunConfig {
            suite,
            model: model.to_string(),
            device: Device::Cpu,
            chip: None,
            weights: WeightsChoice::F32,
            batch_size: 1,
            seq_len: 64,
            strategy: None,
            iterations: 3,
            quick: true,
            huge_pages: false,
            products: ProductsChoice::F32,
        }
    }

    fn run(suite: Suite, model: &str, rows: Vec<Row>) -> BenchRun {
        BenchRun {
            format: FORMAT.to_string(),
            unix_time: 0,
            config: config(suite, model),
            machine: Machine {
                cpu: "test".into(),
                threads: 2,
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            model_summary: String::new(),
            rows,
            notes: vec![],
        }
    }

    /// A run with one time (`prefill ms`) and one rate (`decode tok/s`).
    fn inference(prefill_ms: f64, decode_tok_s: f64) -> BenchRun {
        run(
            Suite::Inference,
            "tiny",
            vec![
                Row::new("prefill 16", "cpu")
                    .with("ms", prefill_ms, "ms", Better::Lower)
                    .with("MFLOP", 5.0, "MFLOP", Better::Info),
                Row::new("decode", "cpu").with("tok/s", decode_tok_s, "tok/s", Better::Higher),
            ],
        )
    }

    fn verdict_of(c: &Comparison, label: &str) -> Verdict {
        c.changes
            .iter()
            .find(|x| x.label() == label)
            .map(|x| x.verdict)
            .unwrap_or_else(|| panic!("no figure {label}"))
    }

    #[test]
    fn faster_in_both_directions_passes() {
        // Time halved (2× faster), rate doubled (2× faster).
        let c = compare(&inference(10.0, 50.0), &inference(5.0, 100.0), 10.0).unwrap();
        assert_eq!(verdict_of(&c, "prefill 16 ms"), Verdict::Faster);
        assert_eq!(verdict_of(&c, "decode tok/s"), Verdict::Faster);
        assert!(c.passed());
        // Only gated figures are listed: the FLOP count is information.
        assert_eq!(c.changes.len(), 2);
    }

    #[test]
    fn equal_and_within_threshold_pass() {
        let c = compare(&inference(10.0, 50.0), &inference(10.0, 50.0), 10.0).unwrap();
        assert!(c.changes.iter().all(|x| x.verdict == Verdict::Same));
        assert_eq!(c.changes[0].slowdown, Some(1.0));
        // 9 % more time and a rate 9 % lower (slowdown 1/0.91 ≈ 1.099) stay under a 10 % threshold.
        let c = compare(&inference(10.0, 50.0), &inference(10.9, 45.5), 10.0).unwrap();
        assert!(c.passed(), "{:?}", c.changes);
    }

    #[test]
    fn slower_beyond_threshold_fails_and_is_direction_aware() {
        // 12 ms is 1.2× the time; 40 tok/s is 1.25× the time per token.
        let c = compare(&inference(10.0, 50.0), &inference(12.0, 40.0), 10.0).unwrap();
        assert_eq!(verdict_of(&c, "prefill 16 ms"), Verdict::Slower);
        assert_eq!(verdict_of(&c, "decode tok/s"), Verdict::Slower);
        let slow: Vec<String> = c.regressions().iter().map(|x| x.label()).collect();
        assert_eq!(slow, vec!["prefill 16 ms", "decode tok/s"]);
        let rate = c.changes.iter().find(|x| x.figure == "tok/s").unwrap();
        assert!((rate.slowdown.unwrap() - 1.25).abs() < 1e-12);
        // A higher rate is never "slower", a lower time never either.
        let c = compare(&inference(12.0, 40.0), &inference(10.0, 50.0), 10.0).unwrap();
        assert!(c.passed());
        // The same 20 % passes a 25 % threshold.
        assert!(compare(&inference(10.0, 50.0), &inference(12.0, 50.0), 25.0)
            .unwrap()
            .passed());
    }

    #[test]
    fn tiny_times_are_below_the_noise_floor() {
        let c = compare(&inference(0.01, 50.0), &inference(0.04, 50.0), 10.0).unwrap();
        assert_eq!(verdict_of(&c, "prefill 16 ms"), Verdict::Same);
        // Once either side is above the floor, the ratio counts.
        let c = compare(&inference(0.01, 50.0), &inference(0.2, 50.0), 10.0).unwrap();
        assert_eq!(verdict_of(&c, "prefill 16 ms"), Verdict::Slower);
    }

    #[test]
    fn missing_figure_fails_and_new_figure_is_listed() {
        let mut current = inference(10.0, 50.0);
        current.rows.retain(|r| r.name != "decode");
        current
            .rows
            .push(Row::new("prefill 64", "cpu").with("ms", 30.0, "ms", Better::Lower));
        let c = compare(&inference(10.0, 50.0), &current, 10.0).unwrap();
        assert_eq!(verdict_of(&c, "decode tok/s"), Verdict::Missing);
        assert_eq!(verdict_of(&c, "prefill 64 ms"), Verdict::New);
        let failing: Vec<String> = c.regressions().iter().map(|x| x.label()).collect();
        assert_eq!(failing, vec!["decode tok/s"]);
        assert!(c.regressions()[0].describe().contains("missing"));
    }

    #[test]
    fn mismatched_suite_or_model_is_an_error_naming_the_field() {
        let base = inference(10.0, 50.0);
        let mut other = inference(10.0, 50.0);
        other.config.model = "gpt2".into();
        let err = compare(&base, &other, 10.0).unwrap_err();
        assert!(matches!(err, BenchError::Mismatch { field: "model", .. }), "{err}");
        assert!(err.to_string().contains("tiny") && err.to_string().contains("gpt2"));

        other = inference(10.0, 50.0);
        other.config.suite = Suite::Kernels;
        let err = compare(&base, &other, 10.0).unwrap_err();
        assert!(matches!(err, BenchError::Mismatch { field: "suite", .. }), "{err}");

        other = inference(10.0, 50.0);
        other.config.strategy = Some(Strategy::Recompile);
        assert!(matches!(
            compare(&base, &other, 10.0),
            Err(BenchError::Mismatch { field: "strategy", .. })
        ));
        other = inference(10.0, 50.0);
        other.config.huge_pages = true;
        assert!(matches!(
            compare(&base, &other, 10.0),
            Err(BenchError::Mismatch {
                field: "huge pages",
                ..
            })
        ));
        // The number of iterations may differ: medians stay comparable.
        other = inference(10.0, 50.0);
        other.config.iterations = 9;
        assert!(compare(&base, &other, 10.0).is_ok());
    }

    #[test]
    fn a_baseline_with_other_products_is_refused() {
        let base = inference(10.0, 50.0);
        let mut other = inference(10.0, 50.0);
        other.config.products = ProductsChoice::Bf16;
        let err = compare(&base, &other, 10.0).unwrap_err();
        assert!(matches!(err, BenchError::Mismatch { field: "products", .. }), "{err}");
        assert!(
            err.to_string().contains("f32") && err.to_string().contains("bf16"),
            "{err}"
        );
        // Either way round, and equal precisions compare.
        assert!(compare(&other, &base, 10.0).is_err());
        assert!(compare(&other, &other.clone(), 10.0).is_ok());
    }

    #[test]
    fn threshold_must_be_a_percentage() {
        let r = inference(1.0, 1.0);
        assert!(matches!(compare(&r, &r, -1.0), Err(BenchError::Usage(_))));
        assert!(matches!(compare(&r, &r, f64::NAN), Err(BenchError::Usage(_))));
    }

    #[test]
    fn a_rate_falling_to_zero_is_slower() {
        // A zero rate is recorded as 0 (finite); the slowdown is infinite.
        let c = compare(&inference(10.0, 50.0), &inference(10.0, 0.0), 10.0).unwrap();
        assert_eq!(verdict_of(&c, "decode tok/s"), Verdict::Slower);
    }
}
