//! Products of a few rows times a weight stored with rows over k (a short prompt's `x · Wᵀ`):
//! `out[i·n + r] = W[r, :] · xs[i, :]` for up to [`MULTI_ROW_MAX`] (8) left rows, each weight row read
//! from memory once for all of them (`Method::GemvRows`).
//!
//! Why: below a few dozen rows such a product is bound by reading the weights, like decode, and
//! the GEMM kernel first needs every weight packed into its strips — a second copy of the model
//! (340 MB for Stories110M) made when the first prefill program is built: 0.1–0.4 s of a short
//! prompt's first token on the EPYC. This kernel reads the stored rows directly, so short prompts
//! need no packed copy at all. The AVX-512 kernel (in `gemv`) takes each weight row once per group of 8,
//! 4 or 1 left rows, one accumulator per left row; the planner chooses the method only where that
//! kernel runs (elsewhere the fallback reads the matrix once per left row).
//!
//! Invariants: every length is checked before any kernel runs; matrix rows are split across
//! rayon tasks in fixed chunks, each task writing its own part, so results do not depend on the
//! thread count; sums are in a different order from the interpreter's (within `Tolerance::F32`).

use super::gemv::{rows_of_many, rows_per_task, MatrixRows};
use crate::error::Result;
use crate::interp::exec_error;
#[cfg(test)]
use half::f16;
use rayon::prelude::*;

/// Most left rows [`gemv_rows`] takes. Measured on the EPYC (Stories110M file, prefill program
/// alone, alternated in one process; packed GEMM against this kernel): 3 rows 15.8 / 15.6 ms, 5
/// rows 15.7 / 19.5, 6 rows 14.8 / 24.3, 8 rows 15.7 / 30.0, 16 rows 19.5 / 51.5 (past about 4
/// rows the left rows no longer stay in L1 beside the weight row, and each multiply-add needs its
/// own load of them). Packing the weights first costs 110–160 ms warm and about 0.4 s in a fresh
/// process, so up to 8 rows — short prompts — the in-place kernel is cheaper overall for a
/// generation's one prefill, at up to 14 ms more per repeated prefill.
pub(crate) const MULTI_ROW_MAX: usize = 8;

/// `out[i·n + r] = Σ_k matrix[r·stride + k] · xs[i·x_stride + k]` for the `m` rows of `xs` and
/// every matrix row `r < n` (`out` holds `m·n`): a few rows times a weight stored with rows over k
/// (a short prompt's projections). Each matrix row is read from memory once for all `m` left rows
/// (then from L1), its rows split across up to `threads` rayon tasks as `gemv` splits them.
pub(crate) fn gemv_rows(
    matrix: MatrixRows<'_>,
    stride: usize,
    (xs, m, k, x_stride): (&[f32], usize, usize, usize),
    out: &mut [f32],
    threads: usize,
) -> Result<()> {
    if m == 0 || k == 0 || out.is_empty() {
        out.fill(0.0);
        return Ok(());
    }
    let n = out.len() / m;
    let fits = out.len() == m * n
        && stride >= k
        && x_stride >= k
        && (n - 1) * stride + k <= matrix.len()
        && (m - 1) * x_stride + k <= xs.len();
    if !fits {
        return Err(exec_error(
            "matmul",
            format!(
                "cpu backend: {m} rows of {k} (stride {x_stride}, {} values) times {n} rows (stride {stride}, {} values) into {}",
                xs.len(),
                matrix.len(),
                out.len()
            ),
        ));
    }
    // Results gathered per matrix row (`[n, m]`), so each task writes one contiguous part.
    let mut by_row = vec![0.0f32; n * m];
    let per_task = rows_per_task(n, n * k * m, threads);
    by_row
        .par_chunks_mut(per_task * m)
        .enumerate()
        .try_for_each(|(task, part)| rows_of_many(matrix, stride, (xs, m, k, x_stride), task * per_task, part))?;
    for (r, results) in by_row.chunks_exact(m).enumerate() {
        for (i, &value) in results.iter().enumerate() {
            out[i * n + r] = value;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values exact in half precision (multiples of 1/8 in [-1, 1)).
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 5 + seed * 11) % 17) as f32 - 8.0) / 8.0)
            .collect()
    }

    #[test]
    fn every_row_count_matches_an_f64_loop_on_odd_sizes_tails_and_strides() {
        // (m, n, k, pads): groups of 8, 4 and 1 left rows, k below, at and past 16-column steps.
        for (m, n, k, (w_pad, x_pad)) in [
            (1, 3, 1, (0, 0)),
            (2, 5, 7, (1, 0)),
            (3, 40, 16, (0, 2)),
            (5, 33, 17, (3, 1)),
            (8, 9, 64, (0, 0)),
            (12, 70, 100, (2, 5)),
            (13, 64, 300, (0, 0)),
            (16, 48, 129, (16, 3)),
        ] {
            let (stride, x_stride) = (k + w_pad, k + x_pad);
            let w = values((n - 1) * stride + k, n);
            let halves: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let xs = values((m - 1) * x_stride + k, m + 1);
            let expected: Vec<f32> = (0..m * n)
                .map(|o| {
                    let (i, r) = (o / n, o % n);
                    (0..k)
                        .map(|c| w[r * stride + c] as f64 * xs[i * x_stride + c] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            // The path of CPUs without the multi-row kernel, directly.
            let mut by_row = vec![f32::NAN; m * n];
            super::super::gemv::one_row_at_a_time(MatrixRows::F32(&w), stride, (&xs, m, k, x_stride), 0, &mut by_row);
            for (o, e) in expected.iter().enumerate() {
                let a = by_row[(o % n) * m + o / n];
                assert!(
                    (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "fallback m {m} k {k} output {o}: {a} vs {e}"
                );
            }
            for threads in [1, 2, 3] {
                for matrix in [MatrixRows::F32(&w), MatrixRows::F16(&halves)] {
                    let mut out = vec![f32::NAN; m * n];
                    gemv_rows(matrix, stride, (&xs, m, k, x_stride), &mut out, threads).unwrap();
                    for (o, (a, e)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "m {m} n {n} k {k} threads {threads} output {o}: {a} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors_not_reads_out_of_bounds() {
        let w = values(4 * 10, 1);
        let xs = values(3 * 10, 2);
        let mut out = vec![0.0; 3 * 4];
        assert!(gemv_rows(MatrixRows::F32(&w), 10, (&xs, 3, 10, 10), &mut out, 2).is_ok());
        // One matrix row too few, a left row too short, a stride below k, an output of 11.
        assert!(gemv_rows(MatrixRows::F32(&w[..39]), 10, (&xs, 3, 10, 10), &mut out, 2).is_err());
        assert!(gemv_rows(MatrixRows::F32(&w), 10, (&xs[..29], 3, 10, 10), &mut out, 2).is_err());
        assert!(gemv_rows(MatrixRows::F32(&w), 9, (&xs, 3, 10, 10), &mut out, 2).is_err());
        assert!(gemv_rows(MatrixRows::F32(&w), 10, (&xs, 3, 10, 10), &mut out[..11], 2).is_err());
    }
}
