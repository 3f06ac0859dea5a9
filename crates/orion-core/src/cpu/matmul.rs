//! Matrix products of the CPU backend: MatMul and Conv1x1 through the `gemm` crate, with batch
//! loops over broadcast batch axes, half-precision weights converted to f32 in chunks right before
//! each `gemm` call, and single-row (or single-column) products split across rayon tasks (`gemm`
//! runs those through its own single-threaded SIMD vector kernel, which measured faster here than
//! the hand-written GEMV in `gemv`; see the `cpu_kernels` bench).
//!
//! This is the one module of the crate allowed `unsafe` (the `gemm` entry point takes raw pointers
//! and strides); [`gemm_f32`] is its only unsafe block and checks, before the call, that every
//! element the call can touch lies inside the slices it was given.
//!
//! Invariants: a [`MatMulPlan`] describes a batch of logical `[m, k] · [k, n]` products; operand
//! matrices are addressed through (row stride, column stride) so transposes cost nothing; the
//! output is dense `[batches, m, n]`. Sums are f32 in `gemm`'s blocked order (within
//! `Tolerance::F32` of the interpreter's sequential sums).
#![allow(unsafe_code)]

use super::storage::{kind_error, View};
use crate::error::Result;
use crate::interp::exec_error;
use gemm::Parallelism;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::borrow::Cow;

/// Multiply-adds from which `gemm` is given more than one thread.
const GEMM_PAR_MIN_WORK: usize = 1 << 18;
/// f32 elements of scratch a half-precision operand is converted into per `gemm` call.
const HALF_SCRATCH: usize = 1 << 16;
/// Multiply-adds from which a single-row (or single-column) product is split across tasks.
const SPLIT_MIN_WORK: usize = 1 << 16;
/// Fewest output columns (or rows) one task of a split product computes.
const SPLIT_MIN_LINES: usize = 64;

/// A read-only f32 matrix: element (row, col) is `data[row * rs + col * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`) for `a [m, k]`, `b [k, n]` and a row-major
/// `dst` with row stride `dst_rs`, through `gemm::gemm`; up to `threads` rayon tasks for large
/// products.
///
/// Errors (instead of undefined behaviour) when a stride or slice length would let the call reach
/// outside the given slices, or rows of `dst` overlap.
pub fn gemm_f32(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bad = |what: &str| exec_error("matmul", format!("cpu backend: gemm {what} for [{m},{k}]·[{k},{n}]"));
    if (m - 1) * dst_rs + n > dst.len() || (m > 1 && dst_rs < n) {
        return Err(bad("destination too small or rows overlapping"));
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    if (m - 1) * a.rs + (k - 1) * a.cs >= a.data.len() {
        return Err(bad("left operand too small"));
    }
    if (k - 1) * b.rs + (n - 1) * b.cs >= b.data.len() {
        return Err(bad("right operand too small"));
    }
    let parallelism = if threads > 1 && m * n * k >= GEMM_PAR_MIN_WORK {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let stride = |s: usize| isize::try_from(s).map_err(|_| bad("stride overflow"));
    let (dst_rs, a_rs, a_cs, b_rs, b_cs) = (
        stride(dst_rs)?,
        stride(a.rs)?,
        stride(a.cs)?,
        stride(b.rs)?,
        stride(b.cs)?,
    );
    // SAFETY: `gemm` reads lhs elements (i, p) at `i*a_rs + p*a_cs` for i < m, p < k, whose largest
    // offset `(m-1)*a.rs + (k-1)*a.cs` was checked to be inside `a.data`; likewise rhs elements
    // (p, j) at `p*b_rs + j*b_cs` inside `b.data`. It writes (and, with `read_dst`, reads) dst
    // elements (i, j) at `i*dst_rs + j` for j < n, all inside `dst` by the first check, and distinct
    // because `dst_rs >= n` whenever m > 1, so no two tasks write one element. `dst` is a unique
    // borrow, so it overlaps neither operand. `f32` is one of the element types `gemm` supports, and
    // all three slices outlive the call (the call does not keep the pointers).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// How a batch of products is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Gemm,
    /// `m == 1` (one-token decode): output columns split across rayon tasks, one `gemm` call each.
    SplitColumns,
    /// `n == 1`: output rows split across rayon tasks, one `gemm` call each.
    SplitRows,
    /// The interpreter's summation order (for each output, p = 0, 1, .. in one f32 accumulator),
    /// vectorised across output columns. Used for F16 results, which are rounded to half: a
    /// different order could move an f32 sum across a half rounding boundary.
    Ordered,
}

/// Position of a logical matrix inside an operand batch: element (row, col) at `row*rs + col*cs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub rs: usize,
    pub cs: usize,
}

impl Layout {
    /// The layout of a stored row-major `[rows, cols]` matrix read transposed or not.
    pub(crate) fn of(stored_cols: usize, transposed: bool) -> Layout {
        if transposed {
            Layout { rs: 1, cs: stored_cols }
        } else {
            Layout { rs: stored_cols, cs: 1 }
        }
    }
}

/// A batch of logical products `[m, k] · [k, n]`, planned at compile time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MatMulPlan {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Layout,
    pub b: Layout,
    /// Element offsets of each output batch's left and right matrices.
    pub batches: Vec<(usize, usize)>,
    pub method: Method,
}

impl MatMulPlan {
    /// Chooses the method: the interpreter's order when the result is rounded to half, a split
    /// across tasks for single-row or single-column products, one `gemm` call otherwise.
    pub(crate) fn choose_method(m: usize, n: usize, half_result: bool) -> Method {
        if half_result {
            Method::Ordered
        } else if m == 1 {
            Method::SplitColumns
        } else if n == 1 {
            Method::SplitRows
        } else {
            Method::Gemm
        }
    }
}

/// A matmul operand: f32 storage or half-precision weights.
#[derive(Clone, Copy, Debug)]
enum Operand<'a> {
    F32(&'a [f32]),
    Half(&'a [f16]),
}

impl<'a> Operand<'a> {
    fn of(view: View<'a>) -> Result<Operand<'a>> {
        match view {
            View::Float(v) => Ok(Operand::F32(v)),
            View::Half(v) => Ok(Operand::Half(v)),
            View::I32(_) | View::Bool(_) => Err(kind_error("matmul", "float storage")),
        }
    }

    fn len(self) -> usize {
        match self {
            Operand::F32(v) => v.len(),
            Operand::Half(v) => v.len(),
        }
    }

    /// Elements `start..start + len` (checked), as f32 (converted when half).
    fn f32_range(self, start: usize, len: usize) -> Result<Cow<'a, [f32]>> {
        if start + len > self.len() {
            return Err(exec_error("matmul", "cpu backend: operand range out of bounds".into()));
        }
        Ok(match self {
            Operand::F32(v) => Cow::Borrowed(&v[start..start + len]),
            Operand::Half(v) => Cow::Owned(v[start..start + len].to_f32_vec()),
        })
    }
}

/// Runs every product of `plan` into the dense output `out [batches, m, n]`.
pub(crate) fn run(plan: &MatMulPlan, a: View<'_>, b: View<'_>, out: &mut [f32], threads: usize) -> Result<()> {
    let (a, b) = (Operand::of(a)?, Operand::of(b)?);
    let per_batch = plan.m * plan.n;
    if out.len() != per_batch * plan.batches.len() {
        return Err(exec_error(
            "matmul",
            "cpu backend: output size differs from the plan".into(),
        ));
    }
    if per_batch == 0 {
        return Ok(());
    }
    let work = plan.m * plan.n * plan.k;
    let many = plan.batches.len() > 1 && threads > 1 && work * plan.batches.len() >= GEMM_PAR_MIN_WORK;
    if many {
        out.par_chunks_mut(per_batch)
            .zip(plan.batches.par_iter())
            .try_for_each(|(o, &(ao, bo))| one_product(plan, a, ao, b, bo, o, 1))
    } else {
        for (o, &(ao, bo)) in out.chunks_mut(per_batch).zip(&plan.batches) {
            one_product(plan, a, ao, b, bo, o, threads)?;
        }
        Ok(())
    }
}

/// One `[m, k] · [k, n]` product with operands at offsets `ao` and `bo`.
fn one_product(
    plan: &MatMulPlan,
    a: Operand<'_>,
    ao: usize,
    b: Operand<'_>,
    bo: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<()> {
    let (m, n, k) = (plan.m, plan.n, plan.k);
    let split = threads > 1 && m * n * k >= SPLIT_MIN_WORK;
    match plan.method {
        Method::SplitColumns if split => {
            let per_task = n.div_ceil(threads * 2).max(SPLIT_MIN_LINES);
            out.par_chunks_mut(per_task).enumerate().try_for_each(|(t, o)| {
                let part = MatMulPlan {
                    n: o.len(),
                    batches: Vec::new(),
                    ..plan.clone()
                };
                gemm_product(&part, a, ao, b, bo + t * per_task * plan.b.cs, o, 1)
            })
        }
        Method::SplitRows if split => {
            let per_task = m.div_ceil(threads * 2).max(SPLIT_MIN_LINES);
            out.par_chunks_mut(per_task).enumerate().try_for_each(|(t, o)| {
                let part = MatMulPlan {
                    m: o.len(),
                    batches: Vec::new(),
                    ..plan.clone()
                };
                gemm_product(&part, a, ao + t * per_task * plan.a.rs, b, bo, o, 1)
            })
        }
        Method::Gemm | Method::SplitColumns | Method::SplitRows => gemm_product(plan, a, ao, b, bo, out, threads),
        Method::Ordered => {
            let a_data = a.f32_range(ao, span(m, k, plan.a))?;
            let b_data = b.f32_range(bo, span(k, n, plan.b))?;
            ordered_product(plan, &a_data, &b_data, out);
            Ok(())
        }
    }
}

/// `out = a · b` summing over p in increasing order for every output (the interpreter's order).
fn ordered_product(plan: &MatMulPlan, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (n, k) = (plan.n, plan.k);
    let mut b_row = vec![0.0f32; n];
    for (i, out_row) in out.chunks_mut(n.max(1)).enumerate() {
        out_row.fill(0.0);
        for p in 0..k {
            let a_ip = a[i * plan.a.rs + p * plan.a.cs];
            let row: &[f32] = if plan.b.cs == 1 {
                &b[p * plan.b.rs..p * plan.b.rs + n]
            } else {
                for (j, v) in b_row.iter_mut().enumerate() {
                    *v = b[p * plan.b.rs + j * plan.b.cs];
                }
                &b_row
            };
            for (o, &b_pj) in out_row.iter_mut().zip(row) {
                *o += a_ip * b_pj;
            }
        }
    }
}

fn gemm_product(
    plan: &MatMulPlan,
    a: Operand<'_>,
    ao: usize,
    b: Operand<'_>,
    bo: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<()> {
    let (m, n, k) = (plan.m, plan.n, plan.k);
    let a_span = span(m, k, plan.a);
    let b_span = span(k, n, plan.b);
    match (a, b) {
        (Operand::F32(_), Operand::F32(_)) => {
            let a_data = a.f32_range(ao, a_span)?;
            let a_ref = MatRef {
                data: &a_data,
                rs: plan.a.rs,
                cs: plan.a.cs,
            };
            let b_data = b.f32_range(bo, b_span)?;
            let b_ref = MatRef {
                data: &b_data,
                rs: plan.b.rs,
                cs: plan.b.cs,
            };
            gemm_f32(out, n, a_ref, b_ref, (m, n, k), false, threads)
        }
        (Operand::Half(_), _) => {
            // With both operands in half, the right one is converted whole here.
            let b_data = b.f32_range(bo, b_span)?;
            let b_ref = MatRef {
                data: &b_data,
                rs: plan.b.rs,
                cs: plan.b.cs,
            };
            let a_half = half_range(a, ao, a_span)?;
            gemm_half_left(plan, a_half, b_ref, out, threads)
        }
        (Operand::F32(_), Operand::Half(_)) => {
            let a_data = a.f32_range(ao, a_span)?;
            let a_ref = MatRef {
                data: &a_data,
                rs: plan.a.rs,
                cs: plan.a.cs,
            };
            let b_half = half_range(b, bo, b_span)?;
            gemm_half_right(plan, a_ref, b_half, out, threads)
        }
    }
}

/// Elements spanned by a dense `[rows, cols]` matrix in `layout`.
fn span(rows: usize, cols: usize, layout: Layout) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * layout.rs + (cols - 1) * layout.cs + 1
    }
}

fn half_range(op: Operand<'_>, start: usize, len: usize) -> Result<&[f16]> {
    match op {
        Operand::Half(v) if start + len <= v.len() => Ok(&v[start..start + len]),
        Operand::Half(_) | Operand::F32(_) => Err(exec_error("matmul", "cpu backend: bad half operand".into())),
    }
}

/// Stored lines (rows when `cs == 1`, else columns) converted per call, and the line length.
fn chunk_lines(line_len: usize) -> usize {
    (HALF_SCRATCH / line_len.max(1)).max(1)
}

/// `a · b` with a half-precision left operand, converted in chunks of stored lines.
fn gemm_half_left(plan: &MatMulPlan, a: &[f16], b: MatRef<'_>, out: &mut [f32], threads: usize) -> Result<()> {
    let (m, n, k) = (plan.m, plan.n, plan.k);
    let mut scratch = Vec::new();
    if plan.a.cs == 1 {
        // Stored rows are output rows: each chunk fills rows i0..i1 of the output.
        let lines = chunk_lines(k);
        for i0 in (0..m).step_by(lines) {
            let i1 = (i0 + lines).min(m);
            convert(&a[i0 * plan.a.rs..(i1 - 1) * plan.a.rs + k], &mut scratch);
            let a_ref = MatRef {
                data: &scratch,
                rs: plan.a.rs,
                cs: 1,
            };
            gemm_f32(&mut out[i0 * n..], n, a_ref, b, (i1 - i0, n, k), false, threads)?;
        }
    } else {
        // Stored rows are contraction steps: each chunk adds the products over p0..p1.
        let lines = chunk_lines(m);
        for p0 in (0..k).step_by(lines) {
            let p1 = (p0 + lines).min(k);
            convert(&a[p0 * plan.a.cs..(p1 - 1) * plan.a.cs + m], &mut scratch);
            let a_ref = MatRef {
                data: &scratch,
                rs: 1,
                cs: plan.a.cs,
            };
            let b_sub = MatRef {
                data: &b.data[p0 * b.rs..],
                ..b
            };
            gemm_f32(out, n, a_ref, b_sub, (m, n, p1 - p0), p0 > 0, threads)?;
        }
    }
    Ok(())
}

/// `a · b` with a half-precision right operand, converted in chunks of stored lines.
fn gemm_half_right(plan: &MatMulPlan, a: MatRef<'_>, b: &[f16], out: &mut [f32], threads: usize) -> Result<()> {
    let (m, n, k) = (plan.m, plan.n, plan.k);
    let mut scratch = Vec::new();
    if plan.b.cs == 1 {
        // Stored rows are contraction steps: each chunk adds the products over p0..p1.
        let lines = chunk_lines(n);
        for p0 in (0..k).step_by(lines) {
            let p1 = (p0 + lines).min(k);
            convert(&b[p0 * plan.b.rs..(p1 - 1) * plan.b.rs + n], &mut scratch);
            let b_ref = MatRef {
                data: &scratch,
                rs: plan.b.rs,
                cs: 1,
            };
            let a_sub = MatRef {
                data: &a.data[p0 * a.cs..],
                ..a
            };
            gemm_f32(out, n, a_sub, b_ref, (m, n, p1 - p0), p0 > 0, threads)?;
        }
    } else {
        // Stored rows are output columns (the nn.Linear layout): each chunk fills columns j0..j1.
        let lines = chunk_lines(k);
        for j0 in (0..n).step_by(lines) {
            let j1 = (j0 + lines).min(n);
            convert(&b[j0 * plan.b.cs..(j1 - 1) * plan.b.cs + k], &mut scratch);
            let b_ref = MatRef {
                data: &scratch,
                rs: 1,
                cs: plan.b.cs,
            };
            gemm_f32(&mut out[j0..], n, a, b_ref, (m, j1 - j0, k), false, threads)?;
        }
    }
    Ok(())
}

/// Converts `src` into `scratch` (resized to fit).
fn convert(src: &[f16], scratch: &mut Vec<f32>) {
    scratch.resize(src.len(), 0.0);
    src.convert_to_f32_slice(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_f32_rejects_out_of_bounds_strides() {
        let a = [1.0f32; 4];
        let mut dst = [0.0f32; 4];
        let small = MatRef { data: &a, rs: 2, cs: 1 };
        // [3, 2] needs 6 elements of `a`: refused rather than read out of bounds.
        assert!(gemm_f32(&mut dst, 2, small, small, (3, 2, 2), false, 1).is_err());
        assert!(gemm_f32(&mut dst, 2, small, small, (2, 2, 2), false, 1).is_ok());
        assert_eq!(dst, [2.0; 4]);
    }
}
