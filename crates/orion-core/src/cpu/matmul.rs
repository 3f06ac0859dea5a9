//! Matrix products of the CPU backend: MatMul and Conv1x1 through the `gemm` crate, with batch
//! loops over broadcast batch axes; single-row products whose matrix has contiguous lines over k
//! (`x · Wᵀ` in decode, `q · Kᵀ` against a cache, `W · x`) go to the hand-written GEMV (`gemv`),
//! other single-row (or single-column) products are split across rayon tasks, one `gemm` call
//! each. Half-precision operands are converted to f32 whole (into a per-thread scratch buffer,
//! in parallel) right before `gemm`; right operands above `HALF_WHOLE` elements in chunks of
//! stored lines. Products with fewer than `SWAP_MAX_ROWS` rows whose right operand has contiguous
//! columns are computed as `(W · xᵀ)ᵀ`: measured on GPT-2's 128-row prefill shapes with weights
//! read from memory (as in prefill), 1.6–1.9× faster in `gemm`; with weights hot in cache (the
//! `prefill_gemm` bench) both orientations run alike. Products of 64–255 rows with `n ≤ k` are
//! split into one single-threaded `gemm` per block of rows (see [`splits_rows`]). Products with
//! fewer than `KERNEL_MAX_ROWS` rows and contiguous rows in both operands and the destination
//! (prefill of a short prompt against weights stored `[k, n]`) go to the AVX-512 kernel of
//! [`super::gemm_kernel`], which also takes half-precision weights without a whole-matrix
//! conversion. Products whose right operand is a constant f32 weight packed when the plan was
//! built ([`Method::PackedRight`]) always go to that kernel, which then packs only the left
//! operand ([`run_packed`]).
//!
//! Unsafe: the `gemm` entry point takes raw pointers and strides; [`gemm_checked`] holds the only
//! unsafe block and checks, before the call, that every element the call can touch lies inside
//! the slices it was given and that no two destination elements share a place.
//!
//! Invariants: a [`MatMulPlan`] describes a batch of logical `[m, k] · [k, n]` products; operand
//! matrices are addressed through (row stride, column stride) so transposes cost nothing; the
//! output is dense `[batches, m, n]`. Sums are f32 in `gemm`'s blocked order or the GEMV's lane
//! order (within `Tolerance::F32` of the interpreter's sequential sums).
#![allow(unsafe_code)]

use super::epilogue::Epilogue;
use super::gemm_bf16::gemm_bf16;
use super::gemm_kernel::{gemm_packed, gemm_row_major, PackedRight, RightRows, RowEpilogue};
use super::gemv::{gemv, gemv_then, many_rows_kernel_available, widen_halves, MatrixRows, RowsThen};
use super::gemv_rows::{gemv_rows, MULTI_ROW_MAX};
use super::storage::{kind_error, View};
use super::ProductPrecision;
use crate::error::Result;
use crate::interp::exec_error;
use gemm::Parallelism;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// Multiply-adds from which `gemm` is given more than one thread.
const GEMM_PAR_MIN_WORK: usize = 1 << 18;
/// Multiply-adds (over all products) from which a batch of products is split across tasks, one
/// product per task: decode attention's per-head products (12 heads × 16 K multiply-adds against a
/// 256-position cache, each streaming 64 KB) otherwise ran one after another on one core.
const BATCH_PAR_MIN_WORK: usize = 1 << 16;
/// Elements of a half-precision operand converted to f32 at once before `gemm` (larger right
/// operands are converted and multiplied in chunks of stored lines).
const HALF_WHOLE: usize = 1 << 24;
/// Half-precision elements from which a conversion is split across tasks.
const CONVERT_PAR_MIN: usize = 1 << 18;
/// Products with fewer rows than this and a right operand with contiguous columns are computed
/// transposed (see [`gemm_oriented`]).
const SWAP_MAX_ROWS: usize = 256;
/// Fewest rows, and fewest multiply-adds, of a product split into row blocks by
/// [`gemm_row_halves`] rather than threaded inside `gemm`: measured on GPT-2's 128-row prefill
/// (`n ≤ k` shapes 1.15–1.2× faster split; `n > k` shapes slower, so those stay in `gemm`).
const ROW_SPLIT_MIN_ROWS: usize = 64;
const ROW_SPLIT_MIN_WORK: usize = 1 << 24;
/// Products with fewer rows than this whose operands and destination have contiguous rows go to
/// the AVX-512 kernel of [`super::gemm_kernel`] (where the CPU has it): measured with both
/// threads against `gemm` on GPT-2's weight shapes (criterion bench `small_row_gemm`), 1.7–2× at
/// 16–64 rows and about even at 128.
const KERNEL_MAX_ROWS: usize = 128;
/// Multiply-adds from which a product in [`ProductPrecision::Bf16`] goes to the bfloat16 kernel
/// (smaller ones stay f32: packing both operands would cost more than the kernel saves).
const BF16_MIN_WORK: usize = 1 << 22;
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
/// `dst` with row stride `dst_rs`, through `gemm::gemm` (or, below `KERNEL_MAX_ROWS` rows with
/// contiguous rows everywhere, the AVX-512 kernel of `gemm_kernel`); up to `threads` rayon tasks
/// for large products.
///
/// Errors (instead of undefined behaviour) when a stride or slice length would let the call reach
/// outside the given slices, or rows of `dst` overlap.
pub fn gemm_f32(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    gemm_strided(dst, (dst_rs, 1), a, b, dims, accumulate, threads)
}

/// As [`gemm_f32`] in the arithmetic `precision` names: with [`ProductPrecision::Bf16`], products
/// of at least `BF16_MIN_WORK` multiply-adds go to the bfloat16 kernel of [`super::gemm_bf16`]
/// where the CPU has it; everything else as [`gemm_f32`].
pub fn gemm_with(
    precision: ProductPrecision,
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    (accumulate, threads): (bool, usize),
) -> Result<()> {
    if precision == ProductPrecision::Bf16
        && m * n * k >= BF16_MIN_WORK
        && gemm_bf16(dst, dst_rs, a, b, (m, n, k), accumulate, threads)?
    {
        return Ok(());
    }
    gemm_f32(dst, dst_rs, a, b, (m, n, k), accumulate, threads)
}

/// As [`gemm_f32`], always through the `gemm` crate (products with few rows otherwise go to the
/// AVX-512 kernel): the baseline of benchmarks and tests.
pub fn gemm_f32_crate(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    gemm_checked(dst, (dst_rs, 1), a, b, dims, (accumulate, threads), false)
}

/// As [`gemm_f32`], choosing the orientation: a product with few rows whose right operand has
/// contiguous columns (`x · Wᵀ` for a stored `W [n, k]`) is computed as `(W · xᵀ)ᵀ`, written through
/// transposed destination strides (see the module header for the measurement). `kernel` allows the
/// small-row kernel (off for the row blocks of [`gemm_row_halves`]: measured slower there).
pub(crate) fn gemm_oriented(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    (accumulate, threads): (bool, usize),
    kernel: bool,
) -> Result<()> {
    if m > 1 && m < SWAP_MAX_ROWS && n > 1 && b.rs == 1 && b.cs != 1 {
        let bt = MatRef {
            data: b.data,
            rs: b.cs,
            cs: b.rs,
        };
        let at = MatRef {
            data: a.data,
            rs: a.cs,
            cs: a.rs,
        };
        return gemm_checked(dst, (1, dst_rs), bt, at, (n, m, k), (accumulate, threads), kernel);
    }
    gemm_checked(dst, (dst_rs, 1), a, b, (m, n, k), (accumulate, threads), kernel)
}

/// True when `m × n` elements at `i·rs + j·cs` all lie in a slice of `len` and are pairwise
/// distinct (one stride spans every step of the other); `m, n ≥ 1`.
fn destination_fits(len: usize, (rs, cs): (usize, usize), (m, n): (usize, usize)) -> bool {
    let distinct = (m == 1 || rs > 0) && (n == 1 || cs > 0) && (m == 1 || n == 1 || rs >= n * cs || cs >= m * rs);
    (m - 1) * rs + (n - 1) * cs < len && distinct
}

/// As [`gemm_f32`] with any destination layout: `dst` element (i, j) is at `i·dst_rs + j·dst_cs`
/// (e.g. `(1, m)` writes the product transposed). Errors when two elements would share a place.
pub fn gemm_f32_strided(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    gemm_strided(dst, dst_strides, a, b, dims, accumulate, threads)
}

/// [`gemm_checked`] with the AVX-512 kernel allowed for products with few rows.
fn gemm_strided(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    gemm_checked(dst, dst_strides, a, b, dims, (accumulate, threads), true)
}

/// The checked product: `dst` element (i, j) is at `i·dst_rs + j·dst_cs`. Products with fewer than
/// `KERNEL_MAX_ROWS` rows and contiguous rows everywhere go to the AVX-512 kernel when `kernel`
/// allows it and the CPU has it; all others to `gemm::gemm`.
fn gemm_checked(
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    (accumulate, threads): (bool, usize),
    kernel: bool,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bad = |what: &str| exec_error("matmul", format!("cpu backend: gemm {what} for [{m},{k}]·[{k},{n}]"));
    if !destination_fits(dst.len(), (dst_rs, dst_cs), (m, n)) {
        return Err(bad("destination too small or elements overlapping"));
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
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
    let rows_apart = a.rs >= k && b.rs >= n && dst_rs >= n;
    if kernel && m < KERNEL_MAX_ROWS && dst_cs == 1 && a.cs == 1 && b.cs == 1 && rows_apart {
        let right = RightRows::F32(b.data);
        if gemm_row_major(dst, dst_rs, a.data, a.rs, right, b.rs, (m, n, k), accumulate, threads)? {
            return Ok(());
        }
    }
    let parallelism = if threads > 1 && m * n * k >= GEMM_PAR_MIN_WORK {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let stride = |s: usize| isize::try_from(s).map_err(|_| bad("stride overflow"));
    let (dst_rs, dst_cs, a_rs, a_cs, b_rs, b_cs) = (
        stride(dst_rs)?,
        stride(dst_cs)?,
        stride(a.rs)?,
        stride(a.cs)?,
        stride(b.rs)?,
        stride(b.cs)?,
    );
    // SAFETY: `gemm` reads lhs elements (i, p) at `i*a_rs + p*a_cs` for i < m, p < k, whose largest
    // offset `(m-1)*a.rs + (k-1)*a.cs` was checked to be inside `a.data`; likewise rhs elements
    // (p, j) at `p*b_rs + j*b_cs` inside `b.data`. It writes (and, with `read_dst`, reads) dst
    // elements (i, j) at `i*dst_rs + j*dst_cs`, whose largest offset was checked to be inside `dst`,
    // and which are pairwise distinct (`destination_fits`: one stride spans every step of the other), so no
    // two tasks write one element. `dst` is a unique borrow, so it overlaps neither operand. `f32` is
    // one of the element types `gemm` supports, and all three slices outlive the call (the call
    // does not keep the pointers).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
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
    /// `m == 1` with every column of the right operand contiguous over k (`x · Wᵀ` for a stored
    /// `W [n, k]`): the hand-written matrix-vector kernel over the right operand's columns.
    GemvRight,
    /// `n == 1` with every row of the left operand contiguous over k (`W · x`, conv1x1 on one
    /// position): the matrix-vector kernel over the left operand's rows.
    GemvLeft,
    /// `2 ≤ m ≤ MULTI_ROW_MAX` rows with contiguous lines over k on both sides (a short prompt's
    /// `x · Wᵀ`), where the AVX-512 kernel exists: each right column read once from memory for all
    /// the rows ([`gemv_rows`]). The planner then keeps such weights in their stored layout
    /// instead of packing them, so a short prompt's first program costs no packed copy.
    GemvRows,
    /// `m == 1` with contiguous rows of a small right operand (attention probabilities times a
    /// value cache in decode): the rows of `b` scaled by the vector and summed, in one loop.
    RowCombination,
    /// `m == 1` (one-token decode): output columns split across rayon tasks, one `gemm` call each.
    SplitColumns,
    /// `n == 1`: output rows split across rayon tasks, one `gemm` call each.
    SplitRows,
    /// The right operand is a constant packed when the plan was built ([`MatMulPlan::packed`]):
    /// the AVX-512 kernel of [`super::gemm_kernel`], which then packs only the left operand.
    PackedRight,
    /// A large product in [`ProductPrecision::Bf16`] (set by [`MatMulPlan::in_bf16`] after planning):
    /// the bfloat16 kernel of [`super::gemm_bf16`] for f32 operands; as `Gemm` for half ones.
    Bf16Gemm,
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
    /// The right operand, packed (with [`Method::PackedRight`]; the step then reads only `a`).
    pub packed: Option<PackedWeight>,
}

/// A constant right operand in the AVX-512 kernel's strips, shared by the plans that use it
/// (plans are equal when they share the very same packing).
#[derive(Clone, Debug)]
pub(crate) struct PackedWeight(pub Arc<PackedRight>);

impl PartialEq for PackedWeight {
    fn eq(&self, other: &PackedWeight) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl MatMulPlan {
    /// Chooses the method: the interpreter's order when the result is rounded to half, the
    /// matrix-vector kernel for single-row or single-column products whose matrix has contiguous
    /// lines over k, a split across tasks for other single-row or single-column products, one
    /// `gemm` call otherwise.
    pub(crate) fn choose_method(m: usize, n: usize, k: usize, (a, b): (Layout, Layout), half_result: bool) -> Method {
        if half_result {
            Method::Ordered
        } else if m == 1 && b.rs == 1 && (n == 1 || b.cs >= k) {
            Method::GemvRight
        } else if n == 1 && a.cs == 1 && (m == 1 || a.rs >= k) {
            Method::GemvLeft
        } else if m <= multi_row_limit() && b.rs == 1 && b.cs >= k && a.cs == 1 && a.rs >= k {
            Method::GemvRows
        } else if m == 1 && b.cs == 1 && n * k < SPLIT_MIN_WORK {
            Method::RowCombination
        } else if m == 1 {
            Method::SplitColumns
        } else if n == 1 {
            Method::SplitRows
        } else {
            Method::Gemm
        }
    }
}

impl MatMulPlan {
    /// Turns a large `Gemm` product into a [`Method::Bf16Gemm`] one (where the CPU has the
    /// bfloat16 kernel); returns whether it did.
    pub(crate) fn in_bf16(&mut self) -> bool {
        let large = self.m * self.n * self.k >= BF16_MIN_WORK;
        if self.method == Method::Gemm && large && super::gemm_bf16::available() {
            self.method = Method::Bf16Gemm;
            return true;
        }
        false
    }
}

/// Most rows a product may have for [`Method::GemvRows`] on this CPU (1 where it has no such
/// kernel: then no product takes that method).
pub(crate) fn multi_row_limit() -> usize {
    if many_rows_kernel_available() {
        MULTI_ROW_MAX
    } else {
        1
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

    /// The `len` elements at `start`, `start + step`, … as one contiguous f32 vector (borrowed
    /// when already contiguous f32).
    fn vector(self, start: usize, len: usize, step: usize) -> Result<Cow<'a, [f32]>> {
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        if start + (len - 1) * step >= self.len() {
            return Err(exec_error("matmul", "cpu backend: vector operand out of bounds".into()));
        }
        Ok(match self {
            Operand::F32(v) if step == 1 => Cow::Borrowed(&v[start..start + len]),
            Operand::F32(v) => Cow::Owned((0..len).map(|i| v[start + i * step]).collect()),
            Operand::Half(v) => Cow::Owned((0..len).map(|i| v[start + i * step].to_f32()).collect()),
        })
    }

    /// `rows` lines of `len` elements, `stride` apart, from `start`, for the matrix-vector kernel.
    fn rows(self, start: usize, rows: usize, stride: usize, len: usize) -> Result<MatrixRows<'a>> {
        let end = if rows == 0 {
            start
        } else {
            start + (rows - 1) * stride + len
        };
        if end > self.len() {
            return Err(exec_error("matmul", "cpu backend: matrix operand out of bounds".into()));
        }
        Ok(match self {
            Operand::F32(v) => MatrixRows::F32(&v[start..end]),
            Operand::Half(v) => MatrixRows::F16(&v[start..end]),
        })
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
    let many = plan.batches.len() > 1 && threads > 1 && work * plan.batches.len() >= BATCH_PAR_MIN_WORK;
    if many {
        out.par_chunks_mut(per_batch)
            .zip(plan.batches.par_iter())
            .try_for_each(|(o, &(ao, bo))| one_product(plan, (a, ao), (b, bo), o, 1, &|_, _| {}))
    } else {
        for (o, &(ao, bo)) in out.chunks_mut(per_batch).zip(&plan.batches) {
            one_product(plan, (a, ao), (b, bo), o, threads, &|_, _| {})?;
        }
        Ok(())
    }
}

/// Runs every product of `plan` (method [`Method::PackedRight`]) into the dense output
/// `out [batches, m, n]`, the right operand being the plan's packed constant; with an `epilogue`,
/// the output is the epilogue's program applied to the products (each row part replaced while it
/// is still in cache).
pub(crate) fn run_packed(
    plan: &MatMulPlan,
    a: View<'_>,
    out: &mut [f32],
    threads: usize,
    epilogue: Option<&Epilogue<'_>>,
) -> Result<()> {
    let error = |what: &str| exec_error("matmul", format!("cpu backend: packed product {what}"));
    let Some(PackedWeight(packed)) = &plan.packed else {
        return Err(error("without a packed right operand"));
    };
    let (m, n, k) = (plan.m, plan.n, plan.k);
    if packed.dims() != (k, n) {
        return Err(error("whose packed operand differs from the plan"));
    }
    if out.len() != m * n * plan.batches.len() {
        return Err(error("whose output size differs from the plan"));
    }
    if m * n == 0 {
        return Ok(());
    }
    let a = Operand::of(a)?;
    for (batch, (o, &(ao, _))) in out.chunks_mut(m * n).zip(&plan.batches).enumerate() {
        let a_data = a.f32_range(ao, span(m, k, plan.a))?;
        let base = batch * m * n;
        let apply = epilogue.map(|e| move |i: usize, j: usize, values: &mut [f32]| e.apply(base + i * n + j, values));
        let rows = apply.as_ref().map(|f| f as &RowEpilogue<'_>);
        if !gemm_packed(o, n, &a_data, (plan.a.rs, plan.a.cs), packed, m, (false, threads), rows)? {
            return Err(error("on a CPU without the AVX-512 kernel"));
        }
    }
    Ok(())
}

/// Runs the one product of `plan` (method [`Method::GemvRight`]: a single row times a weight
/// stored with rows over k) into `out [n]`, the `epilogue` replacing each task's part of the
/// result while it is in the core's cache.
pub(crate) fn run_gemv_epilogue(
    plan: &MatMulPlan,
    (a, b): (View<'_>, View<'_>),
    out: &mut [f32],
    threads: usize,
    epilogue: &Epilogue<'_>,
) -> Result<()> {
    let error = || exec_error("matmul", "cpu backend: matrix-vector epilogue unlike its plan".into());
    let [(ao, bo)] = plan.batches[..] else {
        return Err(error());
    };
    if plan.method != Method::GemvRight || out.len() != plan.n {
        return Err(error());
    }
    let then = |first: usize, part: &mut [f32]| epilogue.apply(first, part);
    one_product(plan, (Operand::of(a)?, ao), (Operand::of(b)?, bo), out, threads, &then)
}

/// One `[m, k] · [k, n]` product with operands at offsets `ao` and `bo`.
/// A matrix-vector product calls `then` on each task's part of the result (see [`gemv_then`]).
fn one_product(
    plan: &MatMulPlan,
    (a, ao): (Operand<'_>, usize),
    (b, bo): (Operand<'_>, usize),
    out: &mut [f32],
    threads: usize,
    then: &RowsThen<'_>,
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
        Method::GemvRight => {
            let stride = if n == 1 { k } else { plan.b.cs };
            let x = a.vector(ao, k, plan.a.cs)?;
            gemv_then(b.rows(bo, n, stride, k)?, stride, &x, out, threads, then)
        }
        Method::GemvLeft => {
            let stride = if m == 1 { k } else { plan.a.rs };
            let x = b.vector(bo, k, plan.b.rs)?;
            gemv(a.rows(ao, m, stride, k)?, stride, &x, out, threads)
        }
        Method::GemvRows => {
            let xs = a.f32_range(ao, span(m, k, plan.a))?;
            let weights = b.rows(bo, n, plan.b.cs, k)?;
            gemv_rows(weights, plan.b.cs, (&xs, m, k, plan.a.rs), out, threads)
        }
        Method::RowCombination => {
            let x = a.vector(ao, k, plan.a.cs)?;
            let rows = b.f32_range(bo, span(k, n, plan.b))?;
            combine_rows(&x, &rows, plan.b.rs, out);
            Ok(())
        }
        Method::Gemm | Method::SplitColumns | Method::SplitRows => gemm_product(plan, a, ao, b, bo, out, threads),
        Method::Bf16Gemm => {
            if let (Operand::F32(a_all), Operand::F32(b_all)) = (a, b) {
                let (a_span, b_span) = (span(m, k, plan.a), span(k, n, plan.b));
                let (Some(a_part), Some(b_part)) = (a_all.get(ao..ao + a_span), b_all.get(bo..bo + b_span)) else {
                    return Err(exec_error("matmul", "cpu backend: operand range out of bounds".into()));
                };
                let a_ref = MatRef {
                    data: a_part,
                    rs: plan.a.rs,
                    cs: plan.a.cs,
                };
                let b_ref = MatRef {
                    data: b_part,
                    rs: plan.b.rs,
                    cs: plan.b.cs,
                };
                if gemm_bf16(out, n, a_ref, b_ref, (m, n, k), false, threads)? {
                    return Ok(());
                }
            }
            gemm_product(plan, a, ao, b, bo, out, threads)
        }
        Method::PackedRight => Err(exec_error(
            "matmul",
            "cpu backend: a packed product given a right operand".into(),
        )),
        Method::Ordered => {
            let a_data = a.f32_range(ao, span(m, k, plan.a))?;
            let b_data = b.f32_range(bo, span(k, n, plan.b))?;
            ordered_product(plan, &a_data, &b_data, out);
            Ok(())
        }
    }
}

/// `out[j] = Σ_p x[p] · rows[p·stride + j]`, p in increasing order (the interpreter's order).
fn combine_rows(x: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    out.fill(0.0);
    for (p, &xp) in x.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&rows[p * stride..p * stride + n]) {
            *o += xp * v;
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
    let (a_span, b_span) = (span(m, k, plan.a), span(k, n, plan.b));
    if let (Operand::F32(a_all), Operand::Half(b_all)) = (a, b) {
        if m < KERNEL_MAX_ROWS && plan.a.cs == 1 && plan.b.cs == 1 && plan.a.rs >= k && plan.b.rs >= n {
            let (a_part, b_part) = (a_all.get(ao..ao + a_span), b_all.get(bo..bo + b_span));
            let (Some(a_part), Some(b_part)) = (a_part, b_part) else {
                return Err(exec_error("matmul", "cpu backend: operand range out of bounds".into()));
            };
            let right = RightRows::F16(b_part);
            if gemm_row_major(out, n, a_part, plan.a.rs, right, plan.b.rs, (m, n, k), false, threads)? {
                return Ok(());
            }
        }
    }
    let large_half = |op: Operand<'_>, len: usize| matches!(op, Operand::Half(_)) && len > HALF_WHOLE;
    if large_half(b, b_span) && !large_half(a, a_span) {
        let a_data = a.f32_range(ao, a_span)?;
        let a_ref = MatRef {
            data: &a_data,
            rs: plan.a.rs,
            cs: plan.a.cs,
        };
        return gemm_half_right(plan, a_ref, half_range(b, bo, b_span)?, out, (HALF_WHOLE, threads));
    }
    let (mut scratch_a, mut scratch_b) = (Scratch::take(), Scratch::take());
    let result = {
        let a_data = scratch_a.f32_of(a, ao, a_span, threads)?;
        let b_data = scratch_b.f32_of(b, bo, b_span, threads)?;
        let a_ref = MatRef {
            data: &a_data,
            rs: plan.a.rs,
            cs: plan.a.cs,
        };
        let b_ref = MatRef {
            data: &b_data,
            rs: plan.b.rs,
            cs: plan.b.cs,
        };
        if splits_rows(m, n, k, threads) {
            gemm_row_halves(out, a_ref, b_ref, (m, n, k), threads)
        } else {
            gemm_oriented(out, n, a_ref, b_ref, (m, n, k), (false, threads), true)
        }
    };
    scratch_a.give_back();
    scratch_b.give_back();
    result
}

/// True for the products [`gemm_row_halves`] computes: a few hundred rows, a wide reduction
/// (`n ≤ k`, e.g. GPT-2's MLP down-projection `[128, 3072]·[3072, 768]`) and enough work for
/// every thread.
fn splits_rows(m: usize, n: usize, k: usize, threads: usize) -> bool {
    threads > 1 && (ROW_SPLIT_MIN_ROWS..SWAP_MAX_ROWS).contains(&m) && n <= k && m * n * k >= ROW_SPLIT_MIN_WORK
}

/// `out = a · b` (dense `[m, n]`) as one single-threaded `gemm` call per block of `m / threads`
/// rows, the blocks run as rayon tasks.
fn gemm_row_halves(
    out: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    (m, n, k): (usize, usize, usize),
    threads: usize,
) -> Result<()> {
    let rows = m.div_ceil(threads);
    out.par_chunks_mut(rows * n).enumerate().try_for_each(|(t, o)| {
        let part = MatRef {
            data: a.data.get(t * rows * a.rs..).unwrap_or(&[]),
            ..a
        };
        gemm_oriented(o, n, part, b, (o.len() / n, n, k), (false, 1), false)
    })
}

/// Elements spanned by a dense `[rows, cols]` matrix in `layout`.
pub(crate) fn span(rows: usize, cols: usize, layout: Layout) -> usize {
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

thread_local! {
    /// Conversion buffers kept between calls on this thread (taken out while in use, so a nested
    /// use on the same thread, e.g. by a rayon task stolen during `gemm`, gets its own).
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A conversion buffer borrowed from this thread's pool.
struct Scratch(Vec<f32>);

impl Scratch {
    fn take() -> Scratch {
        Scratch(SCRATCH.with(|pool| pool.borrow_mut().pop()).unwrap_or_default())
    }

    fn give_back(self) {
        SCRATCH.with(|pool| pool.borrow_mut().push(self.0));
    }

    /// Elements `start..start + len` of `op` as f32: borrowed when f32, else converted into this
    /// buffer (in parallel for large operands).
    fn f32_of<'s>(&'s mut self, op: Operand<'s>, start: usize, len: usize, threads: usize) -> Result<Cow<'s, [f32]>> {
        match op {
            Operand::F32(_) => op.f32_range(start, len),
            Operand::Half(_) => {
                let src = half_range(op, start, len)?;
                convert(src, &mut self.0, threads);
                Ok(Cow::Borrowed(&self.0[..len]))
            }
        }
    }
}

/// `a · b` with a half-precision right operand too large to convert at once: converted in chunks
/// of about `chunk` elements of stored lines.
fn gemm_half_right(
    plan: &MatMulPlan,
    a: MatRef<'_>,
    b: &[f16],
    out: &mut [f32],
    (chunk, threads): (usize, usize),
) -> Result<()> {
    let (m, n, k) = (plan.m, plan.n, plan.k);
    let mut scratch = Vec::new();
    if plan.b.cs == 1 {
        // Stored rows are contraction steps: each chunk adds the products over p0..p1.
        let lines = (chunk / n.max(1)).max(1);
        for p0 in (0..k).step_by(lines) {
            let p1 = (p0 + lines).min(k);
            convert(&b[p0 * plan.b.rs..(p1 - 1) * plan.b.rs + n], &mut scratch, threads);
            let b_ref = MatRef {
                data: &scratch,
                rs: plan.b.rs,
                cs: 1,
            };
            let a_sub = MatRef {
                data: &a.data[p0 * a.cs..],
                ..a
            };
            gemm_oriented(out, n, a_sub, b_ref, (m, n, p1 - p0), (p0 > 0, threads), true)?;
        }
    } else {
        // Stored rows are output columns (the nn.Linear layout): each chunk fills columns j0..j1.
        let lines = (chunk / k.max(1)).max(1);
        for j0 in (0..n).step_by(lines) {
            let j1 = (j0 + lines).min(n);
            convert(&b[j0 * plan.b.cs..(j1 - 1) * plan.b.cs + k], &mut scratch, threads);
            let b_ref = MatRef {
                data: &scratch,
                rs: 1,
                cs: plan.b.cs,
            };
            gemm_oriented(&mut out[j0..], n, a, b_ref, (m, j1 - j0, k), (false, threads), true)?;
        }
    }
    Ok(())
}

/// Converts `src` into `scratch` (resized to fit), split across tasks when large.
fn convert(src: &[f16], scratch: &mut Vec<f32>, threads: usize) {
    scratch.resize(src.len(), 0.0);
    let dst = &mut scratch[..src.len()];
    if threads > 1 && src.len() >= CONVERT_PAR_MIN {
        let chunk = src.len().div_ceil(threads * 2);
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| widen_halves(s, d));
    } else {
        widen_halves(src, dst);
    }
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
