//! Data-movement kernels of the CPU backend, generic over the element type: concat and split (as
//! row-block copies over an `[outer, axis·inner]` view, large ones split over rayon tasks by
//! blocks of rows), pad, gather and scatter_add_rows.
//!
//! Invariants: plans are built from the inferred shapes at compile time, so every offset is inside
//! the planned buffers. The one runtime check is on index data: a gather or scatter index outside
//! the table is a `CoreError::Execute` naming its position, never a panic. Scatter sums rows in
//! index order, as the interpreter does.

use super::strided::{StridedCopy, PAR_MIN_ELEMENTS, TASKS_PER_THREAD};
use crate::error::{CoreError, Result};
use crate::interp::exec_error;
use crate::interp::index::{strides, unravel};
use rayon::prelude::*;

/// Operands one after another along an axis. Seen as `[outer, axis·inner]` blocks, each output
/// row of `outer` is the operands' rows one after another (`widths[i]` elements of operand `i`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConcatPlan {
    pub outer: usize,
    pub widths: Vec<usize>,
}

impl ConcatPlan {
    pub(crate) fn new(parts: &[&[usize]], axis: usize, out: &[usize]) -> ConcatPlan {
        let inner: usize = out[axis + 1..].iter().product();
        ConcatPlan {
            outer: out[..axis].iter().product(),
            widths: parts.iter().map(|dims| dims[axis] * inner).collect(),
        }
    }

    /// Writes the concatenation of `srcs` into `out`, blocks of output rows over up to `threads`
    /// rayon tasks when large.
    pub(crate) fn run<T: Copy + Send + Sync>(&self, srcs: &[&[T]], out: &mut [T], threads: usize) {
        let total: usize = self.widths.iter().sum();
        if total == 0 || self.outer == 0 {
            return;
        }
        let rows = |first: usize, block: &mut [T]| {
            for (r, row) in block.chunks_mut(total).enumerate() {
                let o = first + r;
                let mut at = 0;
                for (src, &w) in srcs.iter().zip(&self.widths) {
                    row[at..at + w].copy_from_slice(&src[o * w..(o + 1) * w]);
                    at += w;
                }
            }
        };
        let out = &mut out[..self.outer * total];
        match rows_per_task(self.outer, total, threads) {
            Some(per) => out
                .par_chunks_mut(per * total)
                .enumerate()
                .for_each(|(task, block)| rows(task * per, block)),
            None => rows(0, out),
        }
    }
}

/// Pieces of an operand along an axis. Seen as `[outer, axis·inner]` blocks, piece `i` takes
/// `widths[i]` elements of every source row, starting `offsets[i]` into it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SplitPlan {
    pub outer: usize,
    pub widths: Vec<usize>,
    pub offsets: Vec<usize>,
}

impl SplitPlan {
    pub(crate) fn new(src: &[usize], axis: usize, pieces: &[&[usize]]) -> SplitPlan {
        let inner: usize = src[axis + 1..].iter().product();
        let widths: Vec<usize> = pieces.iter().map(|dims| dims[axis] * inner).collect();
        let offsets = widths
            .iter()
            .scan(0, |at, &w| {
                *at += w;
                Some(*at - w)
            })
            .collect();
        SplitPlan {
            outer: src[..axis].iter().product(),
            widths,
            offsets,
        }
    }

    /// Writes piece `index` of `src` into `out`, blocks of rows over up to `threads` rayon tasks
    /// when large.
    pub(crate) fn run_piece<T: Copy + Send + Sync>(&self, index: usize, src: &[T], out: &mut [T], threads: usize) {
        let (Some(&w), Some(&offset)) = (self.widths.get(index), self.offsets.get(index)) else {
            return;
        };
        let total: usize = self.widths.iter().sum();
        if w == 0 || self.outer == 0 {
            return;
        }
        let rows = |first: usize, block: &mut [T]| {
            for (r, row) in block.chunks_mut(w).enumerate() {
                let at = (first + r) * total + offset;
                row.copy_from_slice(&src[at..at + w]);
            }
        };
        let out = &mut out[..self.outer * w];
        match rows_per_task(self.outer, w, threads) {
            Some(per) => out
                .par_chunks_mut(per * w)
                .enumerate()
                .for_each(|(task, block)| rows(task * per, block)),
            None => rows(0, out),
        }
    }
}

/// Rows per rayon task for a row-block copy of `rows` rows of `width` elements, or `None` when
/// it runs on the calling thread (one thread, or fewer than `PAR_MIN_ELEMENTS` elements).
fn rows_per_task(rows: usize, width: usize, threads: usize) -> Option<usize> {
    let elements = rows * width;
    if threads < 2 || elements < PAR_MIN_ELEMENTS || rows < 2 {
        return None;
    }
    Some(rows.div_ceil(threads * TASKS_PER_THREAD).max(1))
}

/// Constant padding: fill, then copy the operand into the interior.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PadPlan {
    pub value: f32,
    pub interior: StridedCopy,
}

impl PadPlan {
    pub(crate) fn new(src: &[usize], before: &[usize], out: &[usize], value: f32) -> PadPlan {
        let offset = before.iter().zip(strides(out)).map(|(b, s)| b * s).sum();
        PadPlan {
            value,
            interior: StridedCopy::scatter(src, offset, out),
        }
    }

    pub(crate) fn run<T: super::storage::Elem>(&self, src: &[T], out: &mut [T]) {
        out.fill(T::from_f32(self.value));
        self.interior.apply(src, out);
    }
}

/// Row gather and its adjoint: a table of `rows` rows of `width`, indexed by i32 data of extents
/// `index_dims`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RowsPlan {
    pub rows: usize,
    pub width: usize,
    pub index_dims: Vec<usize>,
}

impl RowsPlan {
    /// `out[p, :] = table[indices[p], :]`.
    pub(crate) fn gather<T: Copy>(&self, table: &[T], indices: &[i32], out: &mut [T]) -> Result<()> {
        if self.width == 0 {
            return self.check_all(indices, "gather");
        }
        for (position, (&row, dst)) in indices.iter().zip(out.chunks_mut(self.width)).enumerate() {
            let r = self.checked_row(row, position, "gather")?;
            dst.copy_from_slice(&table[r * self.width..(r + 1) * self.width]);
        }
        Ok(())
    }

    /// `out[indices[p], :] += updates[p, :]` over a zeroed `out`, in index order.
    pub(crate) fn scatter_add(&self, indices: &[i32], updates: &[f32], out: &mut [f32]) -> Result<()> {
        out.fill(0.0);
        if self.width == 0 {
            return self.check_all(indices, "scatter_add_rows");
        }
        for (position, (&row, src)) in indices.iter().zip(updates.chunks(self.width)).enumerate() {
            let r = self.checked_row(row, position, "scatter_add_rows")?;
            for (o, &u) in out[r * self.width..(r + 1) * self.width].iter_mut().zip(src) {
                *o += u;
            }
        }
        Ok(())
    }

    fn check_all(&self, indices: &[i32], op: &str) -> Result<()> {
        for (position, &row) in indices.iter().enumerate() {
            self.checked_row(row, position, op)?;
        }
        Ok(())
    }

    /// `row` as a table row, or the interpreter's error naming its position among the indices.
    fn checked_row(&self, row: i32, position: usize, op: &str) -> Result<usize> {
        match usize::try_from(row) {
            Ok(r) if r < self.rows => Ok(r),
            _ => Err(index_error(op, row, &unravel(position, &self.index_dims), self.rows)),
        }
    }
}

fn index_error(op: &str, row: i32, position: &[usize], rows: usize) -> CoreError {
    exec_error(
        op,
        format!("index {row} at position {position:?} of the indices is outside 0..{rows}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenates `[outer, w_i]` row blocks by an index loop (the reference).
    fn concat_rows(parts: &[Vec<u32>], widths: &[usize], outer: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for o in 0..outer {
            for (p, &w) in parts.iter().zip(widths) {
                out.extend_from_slice(&p[o * w..(o + 1) * w]);
            }
        }
        out
    }

    #[test]
    fn concat_and_split_are_inverse_row_block_copies_on_one_thread_and_many() {
        // Concat along the last axis of [2, 3, rows, k_i] (the RoPE halves), along a middle axis,
        // and along the first axis; large enough cases run as rayon tasks with 3 threads.
        let cases: [(&[usize], &[usize], usize); 3] = [
            (&[2, 3, 3000, 2], &[2, 3, 3000, 3], 3),
            (&[4, 2, 5], &[4, 7, 5], 1),
            (&[2, 9], &[5, 9], 0),
        ];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (a, b, axis) in cases {
            let mut out_dims = a.to_vec();
            out_dims[axis] += b[axis];
            let pa: Vec<u32> = (0..a.iter().product::<usize>() as u32).collect();
            let pb: Vec<u32> = (0..b.iter().product::<usize>() as u32).map(|v| v + 1_000_000).collect();
            let outer: usize = a[..axis].iter().product();
            let inner: usize = a[axis + 1..].iter().product();
            let widths = [a[axis] * inner, b[axis] * inner];
            let expected = concat_rows(&[pa.clone(), pb.clone()], &widths, outer);
            let plan = ConcatPlan::new(&[a, b], axis, &out_dims);
            let split = SplitPlan::new(&out_dims, axis, &[a, b]);
            for threads in [1, 3] {
                let mut out = vec![0u32; expected.len()];
                pool.install(|| plan.run(&[&pa, &pb], &mut out, threads));
                assert_eq!(out, expected, "concat {a:?} {b:?} axis {axis}, {threads} threads");
                let (mut qa, mut qb) = (vec![0u32; pa.len()], vec![0u32; pb.len()]);
                pool.install(|| {
                    split.run_piece(0, &out, &mut qa, threads);
                    split.run_piece(1, &out, &mut qb, threads);
                });
                assert_eq!((qa, qb), (pa.clone(), pb.clone()), "split, {threads} threads");
            }
        }
    }
}
