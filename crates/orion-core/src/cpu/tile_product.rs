//! Small dense products on blocks already in cache, summed in the `gemm` crate's order: each
//! output is one chain of fused multiply-adds over the contraction index in increasing order,
//! starting from 0 (or from the output's current value, to continue a chain across calls). The
//! fused attention steps use it, so their results keep the bits of the unfused `gemm` steps.
//!
//! On AVX-512 CPUs a product goes to `gemm_kernel`'s packed micro-kernel (the same order of sums).
//! A left operand read down its columns (the attention backward's `Pᵀ` and `dSᵀ`) goes into the
//! kernel's panels directly: it used to be copied row-major first, and the Stories15M attention
//! backward step took 12.5–13.7 ms against 12.3–12.6 now (alternated runs, 2026-11-27). Elsewhere:
//! portable register tiles of `TILE_ROWS` output rows × 64, 32 or 16 columns, with one chain per
//! element at the edges, in the same order. Call inside `vmath::with_wide_vectors` so the tiles use
//! the widest vectors (and `mul_add` is one instruction). Measured on the attention backward of
//! Stories110M (8 × 12 heads of 256 × 256, in cache): 17.1 ms with the tiles, 15.9 with the kernel.

use super::gemm_kernel::{self, gemm_strided_left, RightRows};

/// Output rows of a tile.
const TILE_ROWS: usize = 4;
/// Widest tile, in output columns.
const TILE_COLUMNS: usize = 64;

/// The factors of `out[r, c] (+)= Σ_{t < depth} a(r, t) · b(t, c)`, with `a(r, t)` at
/// `a[r·a_row + t·a_step]` and `b(t, c)` at `b[t·b_row + c]` (rows of `b` contiguous).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Factors<'a> {
    pub a: &'a [f32],
    pub a_row: usize,
    pub a_step: usize,
    pub b: &'a [f32],
    pub b_row: usize,
    pub depth: usize,
}

/// Rows `0..rows` (`out_row` apart) and columns `from..to` of the product into `out`; with
/// `accumulate` each chain continues from the output's value instead of 0. Through the AVX-512
/// kernel of `gemm_kernel` when the CPU has it (same order of sums, packed operands, about twice
/// the tiles' speed), else in [`tiles`].
#[inline(always)]
pub(crate) fn multiply(
    f: Factors<'_>,
    out: &mut [f32],
    out_row: usize,
    rows: usize,
    (from, to): (usize, usize),
    accumulate: bool,
) {
    if rows == 0 || from >= to {
        return;
    }
    let by_kernel = gemm_kernel::available()
        && f.depth > 0
        && match (f.b.get(from..), out.get_mut(from..)) {
            (Some(b), Some(c)) => {
                let dims = (rows, to - from, f.depth);
                let (left, right) = ((f.a_row, f.a_step), RightRows::F32(b));
                matches!(
                    gemm_strided_left(c, out_row, f.a, left, right, f.b_row, dims, accumulate, 1),
                    Ok(true)
                )
            }
            _ => false,
        };
    if !by_kernel {
        tiles(f, out, out_row, rows, (from, to), accumulate);
    }
}

/// [`multiply`] in portable register tiles (without the AVX-512 kernel).
#[inline(always)]
fn tiles(f: Factors<'_>, out: &mut [f32], out_row: usize, rows: usize, (from, to): (usize, usize), accumulate: bool) {
    let mut i = 0;
    while i < rows {
        let tile_rows = (rows - i).min(TILE_ROWS);
        let mut j = from;
        while j < to {
            let width = to - j;
            let done = if tile_rows < TILE_ROWS {
                0
            } else if width >= TILE_COLUMNS {
                tile::<TILE_COLUMNS>(f, out, out_row, (i, j), accumulate)
            } else if width >= 32 {
                tile::<32>(f, out, out_row, (i, j), accumulate)
            } else if width >= 16 {
                tile::<16>(f, out, out_row, (i, j), accumulate)
            } else {
                0
            };
            if done == 0 {
                let width = width.min(TILE_COLUMNS);
                for r in i..i + tile_rows {
                    for c in j..j + width {
                        let mut sum = if accumulate { out[r * out_row + c] } else { 0.0 };
                        for t in 0..f.depth {
                            sum = f.a[r * f.a_row + t * f.a_step].mul_add(f.b[t * f.b_row + c], sum);
                        }
                        out[r * out_row + c] = sum;
                    }
                }
                j += width;
            } else {
                j += done;
            }
        }
        i += tile_rows;
    }
}

/// One `TILE_ROWS × W` tile at output row `i`, column `j`, its sums in registers; returns `W`.
#[inline(always)]
fn tile<const W: usize>(
    f: Factors<'_>,
    out: &mut [f32],
    out_row: usize,
    (i, j): (usize, usize),
    accumulate: bool,
) -> usize {
    let mut sums = [[0.0f32; W]; TILE_ROWS];
    if accumulate {
        for (r, row) in sums.iter_mut().enumerate() {
            row.copy_from_slice(&out[(i + r) * out_row + j..(i + r) * out_row + j + W]);
        }
    }
    for t in 0..f.depth {
        let b = &f.b[t * f.b_row + j..t * f.b_row + j + W];
        for (r, row) in sums.iter_mut().enumerate() {
            let x = f.a[(i + r) * f.a_row + t * f.a_step];
            for (s, &y) in row.iter_mut().zip(b) {
                *s = x.mul_add(y, *s);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        out[(i + r) * out_row + j..(i + r) * out_row + j + W].copy_from_slice(row);
    }
    W
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_and_edges_match_one_sequential_chain_per_element() {
        let (rows, depth, cols) = (7, 5, 83);
        let a: Vec<f32> = (0..rows * depth).map(|i| ((i * 37) % 23) as f32 * 0.37 - 4.0).collect();
        let b: Vec<f32> = (0..depth * cols).map(|i| ((i * 11) % 29) as f32 * 0.21 - 3.0).collect();
        for accumulate in [false, true] {
            let start: Vec<f32> = (0..rows * cols).map(|i| (i % 13) as f32 * 0.5).collect();
            let mut out = start.clone();
            let f = Factors {
                a: &a,
                a_row: depth,
                a_step: 1,
                b: &b,
                b_row: cols,
                depth,
            };
            multiply(f, &mut out, cols, rows, (3, cols), accumulate);
            for r in 0..rows {
                for c in 0..cols {
                    let mut sum = if accumulate || c < 3 { start[r * cols + c] } else { 0.0 };
                    if c >= 3 {
                        for t in 0..depth {
                            sum = a[r * depth + t].mul_add(b[t * cols + c], sum);
                        }
                    }
                    assert_eq!(
                        out[r * cols + c].to_bits(),
                        sum.to_bits(),
                        "({r}, {c}), accumulate {accumulate}"
                    );
                }
            }
        }
    }
}
