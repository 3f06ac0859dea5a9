//! The fused softmax cross-entropy of the CPU training head: loss and logit gradients of a block of
//! rows in one sweep per row, so a vocabulary-wide logits matrix is read and written once instead
//! of once per op of the decomposed graph (max, subtract, exp, sum, log, one-hot, …, and their
//! backward).
//!
//! For each row `z` with label `t`: `loss = log Σ_j e^(z_j − m) + m − z_t` with `m = max_j z_j`
//! (the composite `cross_entropy` before its mean), and the row is overwritten with
//! `scale · (softmax(z) − onehot(t))`, the gradient of `scale · Σ loss`.
//!
//! Invariants: labels are checked before any row is touched (an out-of-range label is an error
//! naming its row); rows are split across rayon tasks, each row computed by one task with
//! [`super::vmath`]'s fixed-order lanes, and the per-row losses are summed in row order in f64,
//! so results do not depend on the thread count.

use super::vmath;
use crate::error::Result;
use crate::interp::exec_error;
use rayon::prelude::*;

/// Rows from which the work is split across tasks.
const PAR_MIN_ROWS: usize = 4;

/// Replaces each row of `logits [rows, classes]` (rows = `labels.len()`) by `scale · (softmax − onehot)`
/// and returns the summed cross-entropy of the rows (unscaled).
pub fn softmax_cross_entropy(
    logits: &mut [f32],
    classes: usize,
    labels: &[i32],
    scale: f32,
    threads: usize,
) -> Result<f64> {
    let rows = labels.len();
    if classes == 0 || logits.len() != rows * classes {
        return Err(exec_error(
            "cross_entropy",
            format!(
                "cpu backend: {} logits are not {rows} rows of {classes} classes",
                logits.len()
            ),
        ));
    }
    if let Some((row, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes))
    {
        return Err(exec_error(
            "cross_entropy",
            format!("label {label} of row {row} is outside 0..{classes}"),
        ));
    }
    let mut losses = vec![0.0f32; rows];
    let one = |((row, &label), loss): ((&mut [f32], &i32), &mut f32)| {
        *loss = row_loss_and_grad(row, label as usize, scale);
    };
    if threads > 1 && rows >= PAR_MIN_ROWS {
        logits
            .par_chunks_mut(classes)
            .zip(labels.par_iter())
            .zip(losses.par_iter_mut())
            .for_each(one);
    } else {
        logits
            .chunks_mut(classes)
            .zip(labels)
            .zip(losses.iter_mut())
            .for_each(one);
    }
    Ok(losses.iter().map(|&l| l as f64).sum())
}

/// One row: returns its loss, leaves `scale · (softmax − onehot)` in `row`.
fn row_loss_and_grad(row: &mut [f32], label: usize, scale: f32) -> f32 {
    let target = row[label];
    let max = vmath::max(row);
    let total = vmath::exp_shifted_sum_in_place(row, max);
    let factor = scale / total;
    for v in row.iter_mut() {
        *v *= factor;
    }
    row[label] -= scale;
    total.ln() + max - target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_match_an_f64_computation_for_any_thread_count() {
        let (rows, classes) = (7, 37);
        let logits: Vec<f32> = (0..rows * classes)
            .map(|i| ((i * 31 % 53) as f32 - 26.0) / 5.0)
            .collect();
        let labels: Vec<i32> = (0..rows as i32).map(|r| (r * 11) % classes as i32).collect();
        let scale = 1.0 / rows as f32;
        let mut expected_loss = 0.0f64;
        let mut expected_grad = vec![0.0f64; rows * classes];
        for r in 0..rows {
            let z = &logits[r * classes..(r + 1) * classes];
            let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
            let t = labels[r] as usize;
            expected_loss += s.ln() + m - z[t] as f64;
            for j in 0..classes {
                let onehot = if j == t { 1.0 } else { 0.0 };
                expected_grad[r * classes + j] = scale as f64 * ((z[j] as f64 - m).exp() / s - onehot);
            }
        }
        for threads in [1, 3] {
            let mut grad = logits.clone();
            let loss = softmax_cross_entropy(&mut grad, classes, &labels, scale, threads).unwrap();
            assert!(
                (loss - expected_loss).abs() < 1e-5 * expected_loss.abs(),
                "{loss} vs {expected_loss}"
            );
            for (i, (&g, &e)) in grad.iter().zip(&expected_grad).enumerate() {
                assert!((g as f64 - e).abs() < 1e-7, "gradient {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn bad_labels_and_sizes_are_errors() {
        let mut logits = vec![0.0f32; 6];
        assert!(softmax_cross_entropy(&mut logits, 3, &[0, 3], 1.0, 1).is_err());
        assert!(softmax_cross_entropy(&mut logits, 3, &[0, -1], 1.0, 1).is_err());
        assert!(softmax_cross_entropy(&mut logits, 4, &[0, 1], 1.0, 1).is_err());
        assert_eq!(logits, vec![0.0; 6]);
        let loss = softmax_cross_entropy(&mut logits, 3, &[0, 2], 1.0, 1).unwrap();
        assert!((loss - 2.0 * 3f64.ln()).abs() < 1e-6);
    }
}
