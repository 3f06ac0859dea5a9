//! The classifier and cross-entropy of the training head as fused CPU kernels: logits, loss and
//! both gradients a block of rows at a time (`gemm`, the fused softmax cross-entropy, `gemm`), so
//! the vocabulary-wide logits are never materialised for the whole batch.
//!
//! The three products run in the caller's [`ProductPrecision`] (`gemm_with`): f32, or with both
//! operands rounded to bfloat16 and summed in f32 where the CPU has that kernel (`--products bf16`).
//!
//! Invariants: results do not depend on the block size or thread count beyond the summation order
//! of `gemm` (the loss is summed per block in f64, in row order); every buffer taken from the CPU
//! backend's spare pool is fully written before it is read.

use crate::error::{ModelError, Result};
use orion_core::cpu::kernels::{gemm_with, softmax_cross_entropy, MatRef};
use orion_core::cpu::{recycle_vec, spare_buffer, ProductPrecision};

/// Logits elements the fused classifier computes per block of rows (256 MB of f32: a whole batch
/// of 8 × 256 rows at a 32,000-token vocabulary). Each block re-reads and re-writes the
/// accumulated classifier gradient (`[V, D]`, 98 MB for Stories110M), so fewer, larger blocks
/// win: the Stories110M head took 943–950 ms with 2^26 against 1,027–1,035 with 2^24 and
/// 1,181–1,258 with 2^22 (interleaved `orion bench training` runs, 2026-11-27).
pub const CLASSIFIER_BLOCK: usize = 1 << 26;

/// Mean cross-entropy of the classifier `W [V, D]` on `x_norm [N, D]` with `targets [N]`, and its
/// gradients: blocks of `block` rows go through `gemm` (logits), the fused softmax cross-entropy
/// (logits → their gradient, in place) and `gemm` again for the gradients of `x_norm` and of `W`.
/// Returns (loss, grad x_norm `[N, D]`, grad W `[V, D]`). Products in f32: see
/// [`fused_classifier_with`].
pub fn fused_classifier(
    w: &[f32],
    d: usize,
    x_norm: &[f32],
    targets: &[i32],
    block: usize,
) -> Result<(f32, Vec<f32>, Vec<f32>)> {
    fused_classifier_with(ProductPrecision::F32, w, d, x_norm, targets, block)
}

/// As [`fused_classifier`], with its three products in `products` (`gemm_with`).
pub fn fused_classifier_with(
    products: ProductPrecision,
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
    orion_core::cpu::install(|| classifier_blocks(products, w, d, x_norm, targets, block))
}

/// The body of [`fused_classifier_with`] (arguments checked), run inside the CPU pool.
fn classifier_blocks(
    products: ProductPrecision,
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
    // The classifier's gradient is `dzᵀ · x_norm`, `[V, D]` as the weight: measured against
    // `x_normᵀ · dz` (`[D, V]`) and a transpose on the Stories15M head (2048 rows, 32,000 tokens,
    // 2026-11-28, same process): bfloat16 products 113.6–116.1 ms against 102.6–105.6 + 21.7–23.2
    // for the transpose; f32 213.4–218.5 against 188.7–190.0 + 21.7–23.6.
    let (mut dx, mut dw) = (spare_buffer(n * d), spare_buffer(v * d));
    let mut total = 0.0f64;
    for r0 in (0..n).step_by(block) {
        let rows = block.min(n - r0);
        let xs = &x_norm[r0 * d..(r0 + rows) * d];
        let z = &mut logits[..rows * v];
        let x_ref = MatRef { data: xs, rs: d, cs: 1 };
        gemm_with(
            products,
            z,
            v,
            x_ref,
            MatRef { data: w, rs: 1, cs: d },
            (rows, v, d),
            (false, threads),
        )?;
        total += softmax_cross_entropy(z, v, &targets[r0..r0 + rows], 1.0 / n as f32, threads)?;
        let dz = MatRef { data: z, rs: v, cs: 1 };
        let dx_rows = &mut dx[r0 * d..(r0 + rows) * d];
        gemm_with(
            products,
            dx_rows,
            d,
            dz,
            MatRef { data: w, rs: d, cs: 1 },
            (rows, d, v),
            (false, threads),
        )?;
        let dz_t = MatRef { data: z, rs: 1, cs: v };
        gemm_with(products, &mut dw, d, dz_t, x_ref, (v, d, rows), (r0 > 0, threads))?;
    }
    recycle_vec(logits);
    Ok(((total / n as f64) as f32, dx, dw))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A classifier whose products over all rows are large enough (96 × 64 × 1100 multiply-adds,
    /// above `gemm_with`'s threshold for the bfloat16 kernel) for the precision to matter:
    /// (classifier `[V, D]`, x_norm `[N, D]`, targets, D).
    fn large_classifier() -> (Vec<f32>, Vec<f32>, Vec<i32>, usize) {
        let (n, d, v) = (96, 64, 1100);
        let w: Vec<f32> = (0..v * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 97.0).collect();
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 53 % 89) as f32 - 44.0) / 61.0).collect();
        let targets: Vec<i32> = (0..n).map(|r| ((r * 131) % v) as i32).collect();
        (w, x, targets, d)
    }

    /// The classifier as it was before `gemm_with`: the same blocks with `gemm_f32`.
    fn with_gemm_f32(w: &[f32], d: usize, x: &[f32], targets: &[i32], block: usize) -> (f32, Vec<f32>, Vec<f32>) {
        use orion_core::cpu::kernels::gemm_f32;
        let (n, v) = (targets.len(), w.len() / d);
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let (mut z, mut dx, mut dw) = (vec![0.0; block * v], vec![0.0; n * d], vec![0.0; v * d]);
        let mut total = 0.0f64;
        orion_core::cpu::install(|| {
            for r0 in (0..n).step_by(block) {
                let rows = block.min(n - r0);
                let xs = &x[r0 * d..(r0 + rows) * d];
                let z = &mut z[..rows * v];
                let x_ref = MatRef { data: xs, rs: d, cs: 1 };
                gemm_f32(
                    z,
                    v,
                    x_ref,
                    MatRef { data: w, rs: 1, cs: d },
                    (rows, v, d),
                    false,
                    threads,
                )
                .unwrap();
                total += softmax_cross_entropy(z, v, &targets[r0..r0 + rows], 1.0 / n as f32, threads).unwrap();
                let dz = MatRef { data: z, rs: v, cs: 1 };
                let w_ref = MatRef { data: w, rs: d, cs: 1 };
                let dx_rows = &mut dx[r0 * d..(r0 + rows) * d];
                gemm_f32(dx_rows, d, dz, w_ref, (rows, d, v), false, threads).unwrap();
                let dz_t = MatRef { data: z, rs: 1, cs: v };
                gemm_f32(&mut dw, d, dz_t, x_ref, (v, d, rows), r0 > 0, threads).unwrap();
            }
        });
        ((total / n as f64) as f32, dx, dw)
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn f32_products_through_gemm_with_give_the_gemm_f32_results_bit_for_bit() {
        let (w, x, targets, d) = large_classifier();
        // One block, and blocks of 40 rows (the classifier's gradient accumulated over three).
        for block in [targets.len(), 40] {
            let (loss, dx, dw) = with_gemm_f32(&w, d, &x, &targets, block);
            let (l, gx, gw) = fused_classifier_with(ProductPrecision::F32, &w, d, &x, &targets, block).unwrap();
            assert_eq!(l.to_bits(), loss.to_bits(), "block {block}: loss {l} vs {loss}");
            assert_eq!(bits(&gx), bits(&dx), "block {block}: grad x_norm");
            assert_eq!(bits(&gw), bits(&dw), "block {block}: grad W");
            // `fused_classifier` is the F32 precision.
            let (l, gx, gw) = fused_classifier(&w, d, &x, &targets, block).unwrap();
            assert_eq!(
                (l.to_bits(), bits(&gx), bits(&gw)),
                (loss.to_bits(), bits(&dx), bits(&dw))
            );
        }
    }

    /// Relative distance `|a − e| / |e|` of two gradients (Euclidean norms).
    fn relative_distance(a: &[f32], e: &[f32]) -> f64 {
        let diff: f64 = a.iter().zip(e).map(|(a, e)| (*a as f64 - *e as f64).powi(2)).sum();
        let norm: f64 = e.iter().map(|e| (*e as f64).powi(2)).sum();
        (diff / norm).sqrt()
    }

    /// Bfloat16 operands keep 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per operand), and
    /// the products are summed in f32, so loss and gradients stay within about 1e-2 of f32's; where
    /// the kernel runs they are not the f32 results (a precision that silently stayed f32 fails).
    #[test]
    fn bf16_products_stay_close_to_f32_and_differ_where_the_kernel_runs() {
        let (w, x, targets, d) = large_classifier();
        // One block of all rows: smaller blocks' products would stay f32.
        let block = targets.len();
        let (l32, gx32, gw32) = fused_classifier_with(ProductPrecision::F32, &w, d, &x, &targets, block).unwrap();
        let (l16, gx16, gw16) = fused_classifier_with(ProductPrecision::Bf16, &w, d, &x, &targets, block).unwrap();
        assert!(l16.is_finite());
        assert!(((l16 - l32) / l32).abs() < 1e-2, "loss {l16} vs {l32}");
        assert!(relative_distance(&gx16, &gx32) < 2e-2, "grad x_norm");
        assert!(relative_distance(&gw16, &gw32) < 2e-2, "grad W");
        let same = (l16.to_bits(), bits(&gx16), bits(&gw16)) == (l32.to_bits(), bits(&gx32), bits(&gw32));
        assert_eq!(
            same,
            !orion_core::cpu::kernels::bf16_products_available(),
            "bf16 results equal to f32's exactly when the CPU has no bfloat16 kernel"
        );
    }
}
