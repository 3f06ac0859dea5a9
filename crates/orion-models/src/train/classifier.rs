//! The classifier and cross-entropy of the training head as fused CPU kernels: logits, loss and
//! both gradients a block of rows at a time (`gemm`, the fused softmax cross-entropy, `gemm`), so
//! the vocabulary-wide logits are never materialised for the whole batch.
//!
//! Invariants: results do not depend on the block size or thread count beyond the summation order
//! of `gemm` (the loss is summed per block in f64, in row order); every buffer taken from the CPU
//! backend's spare pool is fully written before it is read.

use crate::error::{ModelError, Result};
use orion_core::cpu::kernels::{gemm_f32, softmax_cross_entropy, MatRef};
use orion_core::cpu::{recycle_vec, spare_buffer};

/// Logits elements the fused classifier computes per block of rows (256 MB of f32: a whole batch
/// of 8 × 256 rows at a 32,000-token vocabulary). Each block re-reads and re-writes the
/// accumulated classifier gradient (`[D, V]`, 98 MB for Stories110M), so fewer, larger blocks
/// win: the Stories110M head took 943–950 ms with 2^26 against 1,027–1,035 with 2^24 and
/// 1,181–1,258 with 2^22 (interleaved `orion bench training` runs, 2026-11-27).
pub const CLASSIFIER_BLOCK: usize = 1 << 26;

/// Mean cross-entropy of the classifier `W [V, D]` on `x_norm [N, D]` with `targets [N]`, and its
/// gradients: blocks of `block` rows go through `gemm` (logits), the fused softmax cross-entropy
/// (logits → their gradient, in place) and `gemm` again for the gradients of `x_norm` and of `W`.
/// Returns (loss, grad x_norm `[N, D]`, grad W `[V, D]`).
pub fn fused_classifier(
    w: &[f32],
    d: usize,
    x_norm: &[f32],
    targets: &[i32],
    block: usize,
) -> Result<(f32, Vec<f32>, Vec<f32>)> {
    let n = targets.len();
    let v = w.len() / d.max(1);
    if d == 0 || n == 0 || w.len() != v * d || x_norm.len() != n * d {
        return Err(ModelError::Usage(format!(
            "classifier of {} values over {d} features for {} rows of {} values",
            w.len(),
            n,
            x_norm.len()
        )));
    }
    orion_core::cpu::install(|| classifier_blocks(w, d, x_norm, targets, block))
}

/// The body of [`fused_classifier`] (arguments checked), run inside the CPU pool.
fn classifier_blocks(
    w: &[f32],
    d: usize,
    x_norm: &[f32],
    targets: &[i32],
    block: usize,
) -> Result<(f32, Vec<f32>, Vec<f32>)> {
    let (n, v) = (targets.len(), w.len() / d);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let block = block.clamp(1, n);
    // Every element of these buffers is written before it is read (`gemm` without accumulation
    // first), so recycled buffers from the CPU backend's spare pool serve.
    let mut logits = spare_buffer(block * v);
    // The classifier's gradient is accumulated transposed (`x_normᵀ · dz`, [D, V]): measured
    // faster in `gemm` than `dzᵀ · x_norm`.
    let (mut dx, mut dw_t) = (spare_buffer(n * d), spare_buffer(v * d));
    let mut total = 0.0f64;
    for r0 in (0..n).step_by(block) {
        let rows = block.min(n - r0);
        let xs = &x_norm[r0 * d..(r0 + rows) * d];
        let z = &mut logits[..rows * v];
        let x_ref = MatRef { data: xs, rs: d, cs: 1 };
        gemm_f32(
            z,
            v,
            x_ref,
            MatRef { data: w, rs: 1, cs: d },
            (rows, v, d),
            false,
            threads,
        )?;
        total += softmax_cross_entropy(z, v, &targets[r0..r0 + rows], 1.0 / n as f32, threads)?;
        let dz = MatRef { data: z, rs: v, cs: 1 };
        let dx_rows = &mut dx[r0 * d..(r0 + rows) * d];
        gemm_f32(
            dx_rows,
            d,
            dz,
            MatRef { data: w, rs: d, cs: 1 },
            (rows, d, v),
            false,
            threads,
        )?;
        let x_t = MatRef { data: xs, rs: 1, cs: d };
        gemm_f32(&mut dw_t, v, x_t, dz, (d, v, rows), r0 > 0, threads)?;
    }
    let dw = transpose(&dw_t, d, v, threads);
    recycle_vec(logits);
    recycle_vec(dw_t);
    Ok(((total / n as f64) as f32, dx, dw))
}

/// The transpose `[cols, rows]` of the row-major `[rows, cols]` matrix `m`, in square tiles (so
/// both sides are read and written a cache line at a time), the output rows split over `threads`
/// scoped threads (a copy at memory speed: one core does not saturate the bandwidth).
fn transpose(m: &[f32], rows: usize, cols: usize, threads: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = spare_buffer(rows * cols); // every element is written below
    if rows == 0 || cols == 0 {
        return out;
    }
    // Output rows (columns of `m`) per thread, a whole number of tiles.
    let band = cols.div_ceil(threads.max(1)).div_ceil(TILE) * TILE;
    let transpose_band = |c_first: usize, part: &mut [f32]| {
        let c_end = c_first + part.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (c_first..c_end).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in c0..(c0 + TILE).min(c_end) {
                        part[(c - c_first) * rows + r] = m[r * cols + c];
                    }
                }
            }
        }
    };
    if band >= cols {
        transpose_band(0, &mut out);
        return out;
    }
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(band * rows).enumerate() {
            let transpose_band = &transpose_band;
            scope.spawn(move || transpose_band(i * band, part));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns_across_tiles() {
        let (rows, cols) = (37, 70);
        let m: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        // One thread, and three (bands of 32, 32 and 6 output rows).
        for threads in [1, 3] {
            let t = transpose(&m, rows, cols, threads);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], m[r * cols + c], "{threads} threads");
                }
            }
        }
    }

    #[test]
    fn fused_classifier_matches_an_f64_loop_for_any_block_size() {
        let (n, d, v) = (7, 5, 11);
        let w: Vec<f32> = (0..v * d).map(|i| ((i * 17 % 23) as f32 - 11.0) / 10.0).collect();
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 13 % 19) as f32 - 9.0) / 7.0).collect();
        let targets: Vec<i32> = (0..n).map(|r| ((r * 5) % v) as i32).collect();
        // Reference: logits, softmax, mean cross-entropy and both gradients in f64.
        let (mut loss, mut dx, mut dw) = (0.0f64, vec![0.0f64; n * d], vec![0.0f64; v * d]);
        for r in 0..n {
            let z: Vec<f64> = (0..v)
                .map(|j| (0..d).map(|k| x[r * d + k] as f64 * w[j * d + k] as f64).sum())
                .collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|zj| (zj - m).exp()).sum();
            let t = targets[r] as usize;
            loss += (s.ln() + m - z[t]) / n as f64;
            for j in 0..v {
                let g = ((z[j] - m).exp() / s - if j == t { 1.0 } else { 0.0 }) / n as f64;
                for k in 0..d {
                    dx[r * d + k] += g * w[j * d + k] as f64;
                    dw[j * d + k] += g * x[r * d + k] as f64;
                }
            }
        }
        for block in [1, 3, n, 100] {
            let (l, gx, gw) = fused_classifier(&w, d, &x, &targets, block).unwrap();
            assert!((l as f64 - loss).abs() < 1e-6, "block {block}: loss {l} vs {loss}");
            for (a, e) in gx.iter().zip(&dx).chain(gw.iter().zip(&dw)) {
                assert!((*a as f64 - e).abs() < 1e-6, "block {block}: {a} vs {e}");
            }
        }
        assert!(fused_classifier(&w, d, &x[1..], &targets, 2).is_err());
    }
}
