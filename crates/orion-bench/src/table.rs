//! Plain-text rendering: a run as a header and an aligned table (one column per figure name, in order
//! of first appearance), and a comparison as one line per gated figure.
//!
//! Invariant: rendering never fails and never drops a figure; a cell a row does not have is blank.

use crate::compare::{Comparison, Verdict};
use crate::result::{BenchRun, Better, Suite};

/// A number with as many decimals as its size deserves.
pub fn format_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The header lines of a run: suite, model, device, sizes, machine.
fn header(run: &BenchRun) -> Vec<String> {
    let c = &run.config;
    let mut setup = format!(
        "orion bench {} — model {} ({})",
        c.suite.name(),
        c.model,
        run.model_summary
    );
    // `compile` runs nothing: it lowers for a chip on the host.
    if c.suite != Suite::Compile {
        setup.push_str(&format!(", device {}", c.device.name()));
    }
    if let Some(chip) = &c.chip {
        setup.push_str(&format!(", chip {chip}"));
    }
    setup.push_str(&format!(
        ", weights {}, products {}, batch {}, seq {}",
        c.weights.name(),
        c.products.name(),
        c.batch_size,
        c.seq_len
    ));
    if let Some(s) = c.strategy {
        setup.push_str(&format!(", strategy {}", s.name()));
    }
    vec![
        setup,
        format!(
            "median of {} timed iteration(s){}; machine: {} ({} threads, {}/{})",
            c.iterations,
            if c.quick { " (--quick)" } else { "" },
            run.machine.cpu,
            run.machine.threads,
            run.machine.os,
            run.machine.arch
        ),
    ]
}

/// Lays out `cells` (first line = header) in left-aligned columns separated by two spaces.
fn align(cells: &[Vec<String>]) -> Vec<String> {
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            line.join("  ").trim_end().to_string()
        })
        .collect()
}

/// The run as text: header, table, notes. Gated columns are marked (↓ lower is better, ↑ higher).
pub fn render_run(run: &BenchRun) -> String {
    let mut columns: Vec<(String, Better)> = Vec::new();
    for f in run.rows.iter().flat_map(|r| &r.figures) {
        if !columns.iter().any(|(n, _)| *n == f.name) {
            columns.push((f.name.clone(), f.better));
        }
    }
    let mut title = vec!["".to_string(), "runs on".to_string()];
    title.extend(columns.iter().map(|(n, b)| match b {
        Better::Lower => format!("{n} ↓"),
        Better::Higher => format!("{n} ↑"),
        Better::Info => n.clone(),
    }));
    let mut cells = vec![title];
    for row in &run.rows {
        let mut line = vec![row.name.clone(), row.runs_on.clone()];
        line.extend(
            columns
                .iter()
                .map(|(n, _)| row.figure(n).map_or(String::new(), |f| format_value(f.value))),
        );
        cells.push(line);
    }
    let mut out = header(run);
    out.push(String::new());
    out.extend(align(&cells));
    if !run.notes.is_empty() {
        out.push(String::new());
        out.extend(run.notes.iter().map(|n| format!("note: {n}")));
    }
    out.push(String::new());
    out.join("\n")
}

/// A comparison as text: one line per gated figure, regressions marked.
pub fn render_comparison(c: &Comparison) -> String {
    let mut out = vec![format!(
        "comparison with the baseline (threshold {}%):",
        c.threshold_pct
    )];
    for change in &c.changes {
        let mark = match change.verdict {
            Verdict::Slower => "SLOWER ",
            Verdict::Missing => "MISSING",
            Verdict::Faster => "faster ",
            Verdict::Same => "same   ",
            Verdict::New => "new    ",
        };
        out.push(format!("  {mark} {}", change.describe()));
    }
    out.push(String::new());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_get_sensible_decimals() {
        assert_eq!(format_value(1234.567), "1235");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(123.456), "123.5");
        assert_eq!(format_value(1.23456), "1.23");
        assert_eq!(format_value(0.0123456), "0.0123");
    }
}
