//! Hand-written matrix-vector product for single-row matmuls (one-token decode): `y = W · x` with
//! the rows of `W [rows, K]` contiguous (the `nn.Linear` layout), so each output is a dot product
//! over K.
//!
//! The plan does not choose this kernel: measured with the `cpu_kernels` bench against `gemm`'s own
//! SIMD vector path (runtime-dispatched AVX-512 here; this kernel is limited to the baseline SSE2
//! that safe, portable code gets), `gemm` was as fast or faster for f32 weights, and converting f16
//! weights in large chunks before `gemm` beat converting row by row here. It stays public in
//! `cpu::kernels` so the comparison can be re-run on other machines (e.g. Apple silicon).
//!
//! Invariants: `matrix.len() == y.len() * x.len()`; rows are split across rayon tasks only when the
//! product is large enough to pay for the split (results do not depend on the split: each output
//! is computed by exactly one task in a fixed order). Dot products use `LANES` independent
//! accumulators so LLVM keeps them in vector registers; the sum order therefore differs from the
//! interpreter's sequential loop (within `Tolerance::F32`). Half-precision weights are converted
//! to f32 in chunks of `HALF_CHUNK` with `half`'s slice conversion (F16C when the CPU has it).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Independent accumulators of a dot product (four SSE registers, two AVX registers).
const LANES: usize = 16;
/// Elements of a half-precision row converted at a time.
const HALF_CHUNK: usize = 256;
/// Multiply-adds below which the product runs on one thread.
const PAR_MIN_WORK: usize = 1 << 16;

/// The matrix of a matrix-vector product, row-major `[rows, K]`.
#[derive(Clone, Copy, Debug)]
pub enum MatrixRows<'a> {
    F32(&'a [f32]),
    /// Half-precision weights, converted on the fly.
    F16(&'a [f16]),
}

/// `y[r] = Σ_k matrix[r, k] · x[k]` for every row `r`, using up to `threads` rayon tasks.
///
/// # Panics
/// When the matrix does not hold `y.len() * x.len()` elements (a caller bug: the plan checks).
pub fn gemv(matrix: MatrixRows<'_>, x: &[f32], y: &mut [f32], threads: usize) {
    let k = x.len();
    let rows = y.len();
    let len = match matrix {
        MatrixRows::F32(m) => m.len(),
        MatrixRows::F16(m) => m.len(),
    };
    assert_eq!(len, rows * k, "gemv: matrix of {len} elements is not [{rows}, {k}]");
    if k == 0 {
        y.fill(0.0);
        return;
    }
    if threads <= 1 || rows * k < PAR_MIN_WORK || rows < 2 {
        rows_range(matrix, x, 0, y);
        return;
    }
    let per_task = rows.div_ceil(threads * 4).max(8);
    y.par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(task, ys)| rows_range(matrix, x, task * per_task, ys));
}

/// Rows `first..first + y.len()` of the product.
fn rows_range(matrix: MatrixRows<'_>, x: &[f32], first: usize, y: &mut [f32]) {
    let k = x.len();
    match matrix {
        MatrixRows::F32(m) => {
            for (i, out) in y.iter_mut().enumerate() {
                let row = first + i;
                *out = dot(&m[row * k..(row + 1) * k], x);
            }
        }
        MatrixRows::F16(m) => {
            let mut buffer = [0.0f32; HALF_CHUNK];
            for (i, out) in y.iter_mut().enumerate() {
                let row = first + i;
                *out = dot_half(&m[row * k..(row + 1) * k], x, &mut buffer);
            }
        }
    }
}

/// Dot product of a half-precision row with `x`, converting `HALF_CHUNK` elements at a time.
fn dot_half(row: &[f16], x: &[f32], buffer: &mut [f32; HALF_CHUNK]) -> f32 {
    let mut sum = 0.0f32;
    for (chunk, xs) in row.chunks(HALF_CHUNK).zip(x.chunks(HALF_CHUNK)) {
        let converted = &mut buffer[..chunk.len()];
        chunk.convert_to_f32_slice(converted);
        sum += dot(converted, xs);
    }
    sum
}

/// Pairwise sum of the lanes.
fn reduce_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for lane in 0..width {
            acc[lane] += acc[lane + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Dot product with `LANES` independent accumulators.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    reduce_lanes(acc) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_matches_a_plain_loop_for_both_formats_and_thread_counts() {
        let (rows, k) = (301, 300); // not multiples of LANES or HALF_CHUNK; large enough to split
        let matrix: Vec<f32> = (0..rows * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let expected: Vec<f32> = (0..rows)
            .map(|r| (0..k).map(|c| matrix[r * k + c] * x[c]).sum())
            .collect();
        let halves: Vec<f16> = matrix.iter().map(|&v| f16::from_f32(v)).collect(); // exact: multiples of 1/8
        for threads in [1, 3] {
            let mut y = vec![0.0; rows];
            gemv(MatrixRows::F32(&matrix), &x, &mut y, threads);
            let mut yh = vec![0.0; rows];
            gemv(MatrixRows::F16(&halves), &x, &mut yh, threads);
            for r in 0..rows {
                assert!(
                    (y[r] - expected[r]).abs() < 1e-3,
                    "row {r}: {} vs {}",
                    y[r],
                    expected[r]
                );
                assert!((yh[r] - expected[r]).abs() < 1e-3, "half row {r}");
            }
        }
    }
}
