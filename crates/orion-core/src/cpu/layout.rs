//! Data-movement kernels of the CPU backend, generic over the element type: strided copies
//! (transpose, slice, broadcast), concat, split, pad, gather and scatter_add_rows.
//!
//! Invariants: plans are built from the inferred shapes at compile time, so every offset is inside
//! the planned buffers. The one runtime check is on index data: a gather or scatter index outside
//! the table is a `CoreError::Execute` naming its position, never a panic. Scatter sums rows in
//! index order, as the interpreter does.

use super::strided::StridedCopy;
use crate::error::{CoreError, Result};
use crate::interp::exec_error;
use crate::interp::index::{strides, unravel};

/// Operands one after another along an axis: one placement per operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConcatPlan {
    pub parts: Vec<StridedCopy>,
}

impl ConcatPlan {
    pub(crate) fn new(parts: &[&[usize]], axis: usize, out: &[usize]) -> ConcatPlan {
        let out_strides = strides(out);
        let mut along = 0;
        let parts = parts
            .iter()
            .map(|dims| {
                let copy = StridedCopy::scatter(dims, along * out_strides[axis], out);
                along += dims[axis];
                copy
            })
            .collect();
        ConcatPlan { parts }
    }

    pub(crate) fn run<T: Copy>(&self, srcs: &[&[T]], out: &mut [T]) {
        for (copy, src) in self.parts.iter().zip(srcs) {
            copy.apply(src, out);
        }
    }
}

/// Pieces of an operand along an axis: one extraction per output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SplitPlan {
    pub pieces: Vec<StridedCopy>,
}

impl SplitPlan {
    pub(crate) fn new(src: &[usize], axis: usize, pieces: &[&[usize]]) -> SplitPlan {
        let src_strides = strides(src);
        let mut along = 0;
        let pieces = pieces
            .iter()
            .map(|dims| {
                let copy = StridedCopy::gather(dims, along * src_strides[axis], &src_strides);
                along += dims[axis];
                copy
            })
            .collect();
        SplitPlan { pieces }
    }
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
