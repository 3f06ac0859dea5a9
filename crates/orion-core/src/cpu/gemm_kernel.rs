//! The AVX-512 f32 GEMM of the CPU backend for products with row-major destinations:
//! `C = A · B` (or `C += A · B`) with `C [m, n]` stored with contiguous rows, and `B [k, n]` either
//! row-major (f32 or half precision, converted to f32 while it is packed) or packed beforehand
//! ([`PackedRight`]: a constant weight, packed once when its plan is built).
//!
//! Prefill multiplies a prompt's rows by every weight matrix. There the `gemm` crate packs each
//! weight again on every call, and ran 16-row products at 26–60 GFLOP/s. Here: for each block of
//! `KC` contraction steps and `NC` columns, the block of `B` is copied once into 32-column strips
//! (64-byte aligned, zero-padded) — or, packed beforehand, read where it lies — and the block of
//! `A` into panels of `MR` rows; a micro-kernel keeps an `MR × 32` tile of `C` in 24 vector
//! registers, broadcasting one `A` value per row and loading two `B` vectors per step. While the
//! panels run over a packed strip, each prefetches its share of the next strip (the hardware
//! prefetcher stops at page edges) and the next tile's destination, one row or line every few
//! steps; the second half of each block's tiles prefetches the next block of `A` (in prefill its
//! rows were mostly just written by the other core: 3–5 % on GPT-2's 128-row products measured
//! that way). Spreading the prefetches (the first panel used to fetch the whole next strip, and
//! each tile its successor's destination, in a burst of requests that held up its own loads) and
//! packing row-major `A` a cache line of every row at a time (instead of a row at a time, which
//! waited on each row's misses in turn) took GPT-2's 128-token prefill program from 107–112 to
//! 94–98 ms (median of 10 runs, four alternated rounds, Intel Xeon, 2026-11-29). Work is
//! split across rayon tasks by column ranges when `A` is the smaller operand (each task streams
//! its own part of `B`) and by row blocks otherwise. A packed product may carry an epilogue, which
//! each task applies to its row parts of `C` once they are complete (see `super::epilogue`).
//!
//! Measured with both threads, GPT-2 weight shapes streamed from memory: row-major `B` (criterion
//! bench `small_row_gemm`) 1.7–2× the `gemm` crate at 16–64 rows, about even at 128 and slower from
//! there on, so the backend uses it below 128 rows only. Packed `B` (`orion bench inference`,
//! interleaved with the previous build): GPT-2 prefill of 16 tokens 47–58 → 28–32 ms, of 64 tokens
//! 85–107 → 59–70 ms; at 128 tokens, with the epilogues and 288-row blocks, 104.1 → 96.1 ms median
//! against the unpacked plan (interleaved in one process), and even with it at 256 tokens.
//!
//! Unsafe: the micro-kernels use raw pointers and AVX-512 intrinsics. [`gemm_row_major`],
//! [`gemm_strided_left`] and [`gemm_packed`] check, before any kernel runs, that every element reachable from the given
//! dimensions and strides lies inside the slices, and that rows of `C` do not overlap; a
//! [`PackedRight`] holds exactly the strips of its `(k, n)`, which the product must match; tasks
//! write disjoint parts of `C` (distinct rows, or distinct columns of the same rows). Prefetches
//! may name any address (they never fault). The kernels run only after `is_x86_feature_detected!`
//! confirmed AVX-512F and F16C.
//!
//! Invariants: each element of `C` is summed over p in increasing order, one f32 fused
//! multiply-add per step (within `Tolerance::F32` of the interpreter's sequential sums); results
//! do not depend on the thread count, nor on whether `B` was packed beforehand (every split
//! assigns whole elements, each computed in the same order). On CPUs without AVX-512, and off
//! x86-64, the three entry points return `Ok(false)`; the backend then packs no
//! weights and uses the `gemm` crate.
#![allow(unsafe_code)]

use super::gemm_bf16::{gemm_packed_pairs, PackedPairs};
use super::gemm_shared::{lane_masks, split_destination};
use super::gemv::widen_halves;
use super::matmul::MatRef;
use crate::error::Result;
use crate::interp::exec_error;
use half::f16;
use rayon::prelude::*;

/// 16-lane vectors per row of a micro-kernel tile.
const VECS: usize = 2;
/// Output columns of one micro-kernel tile.
const NR: usize = 16 * VECS;
/// Most output rows of one micro-kernel tile (`2·MR` accumulators + 2 `B` vectors + 1 broadcast
/// of the 32 vector registers).
const MR: usize = 12;
/// Contraction steps per block: a `KC × NR` strip of f32 `B` is 32 KB (L1 holds 48 KB).
const KC: usize = 256;
/// Rows per block of `A` (a multiple of `MR`): `MC × KC` f32 is 288 KB, in L2 (2 MB here). A
/// product streams `B` once per block of rows, so GPT-2's 256-row prefill takes one block (with
/// 144 rows a block it was 5 % slower than the `gemm` crate; now even, in interleaved runs).
const MC: usize = 288;
/// Columns of `B` packed at a time: a `KC × NC` f32 block is 512 KB, in L2.
const NC: usize = 1024;
/// Multiply-adds from which a product is split across tasks.
const PAR_MIN_WORK: usize = 1 << 18;

/// The right operand: row-major `[k, n]` rows `ld` elements apart, f32 or half precision.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RightRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl RightRows<'_> {
    /// True when the operand reaches every element of a `[k, n]` matrix with rows `ld` apart.
    fn fits(self, (k, n): (usize, usize), ld: usize) -> bool {
        let len = match self {
            RightRows::F32(v) => v.len(),
            RightRows::F16(v) => v.len(),
        };
        ld >= n && (k - 1) * ld + n <= len
    }
}

/// Floats per 64-byte cache line.
const LINE: usize = 16;

/// The part of `buffer` after its first 64-byte boundary (`buffer` has `LINE` spare elements).
fn aligned(buffer: &[f32]) -> &[f32] {
    &buffer[buffer.as_ptr().align_offset(64).min(LINE)..]
}

/// As [`aligned`], mutable.
fn aligned_mut(buffer: &mut [f32]) -> &mut [f32] {
    let skip = buffer.as_ptr().align_offset(64).min(LINE);
    &mut buffer[skip..]
}

/// True when this CPU runs the kernels of this module (for f32 right operands; half ones also
/// need F16C, which every AVX-512 CPU has, checked anyway).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C = A · B` (`C += A · B` when `accumulate`) for row-major `A [m, k]` (`lda`), `B [k, n]` (`ldb`)
/// and `C [m, n]` (`ldc`), on up to `threads` rayon tasks. Returns `Ok(false)` without touching
/// `C` when the CPU lacks AVX-512 (the caller then computes the product another way).
///
/// Errors when a leading dimension is smaller than its row, or a slice is too short for the
/// dimensions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_row_major(
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    lda: usize,
    b: RightRows<'_>,
    ldb: usize,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<bool> {
    if m > 0 && n > 0 && k > 0 && lda < k {
        return Err(shape_error("operand too small or rows overlapping", (m, n, k)));
    }
    gemm_strided_left(c, ldc, a, (lda, 1), b, ldb, (m, n, k), accumulate, threads)
}

/// As [`gemm_row_major`] with `A`'s element (i, p) at `a[i·rs + p·cs]`: a transposed `A` (`rs = 1`)
/// goes into the kernel's panels directly, `MR` contiguous values per contraction step.
///
/// Errors when a slice is too short for the dimensions, or rows of `B` or `C` overlap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided_left(
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    (rs, cs): (usize, usize),
    b: RightRows<'_>,
    ldb: usize,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<bool> {
    if m > 0 && n > 0 && k > 0 && !b.fits((k, n), ldb) {
        return Err(shape_error("operand too small or rows overlapping", (m, n, k)));
    }
    let rows = (Right::Rows(b, ldb), None);
    multiply(c, ldc, Left { a, rs, cs }, rows, (m, n, k), accumulate, threads)
}

/// `C = A · B` (`C += A · B` when `accumulate`) for `A [m, k]` with element (i, p) at
/// `a[i·rs + p·cs]`, a right operand packed beforehand ([`PackedRight`], which gives `k` and `n`)
/// and row-major `C [m, n]` (`ldc`), on up to `threads` rayon tasks. Returns `Ok(false)` without
/// touching `C` when the CPU lacks AVX-512.
///
/// With an `epilogue`, each task, once its part of `C` is complete, calls it on each of its rows:
/// `epilogue(i, j, values)` with `values` the task's columns `j..` of row `i` (still in cache),
/// to be replaced in place.
///
/// Errors when a slice is too short for the dimensions or rows of `C` overlap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed(
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    (rs, cs): (usize, usize),
    b: &PackedRight,
    m: usize,
    (accumulate, threads): (bool, usize),
    epilogue: Option<&RowEpilogue<'_>>,
) -> Result<bool> {
    let (k, n) = (b.k, b.n);
    let values = match &b.strips {
        Strips::F32(values) => values,
        Strips::Bf16(pairs) => {
            let a = MatRef { data: a, rs, cs };
            return gemm_packed_pairs(c, ldc, a, pairs, m, (accumulate, threads), epilogue);
        }
    };
    multiply(
        c,
        ldc,
        Left { a, rs, cs },
        (Right::Packed(values, n), epilogue),
        (m, n, k),
        accumulate,
        threads,
    )
}

/// What a packed product applies to each finished row part: `(row, first column, values)`.
pub(crate) type RowEpilogue<'a> = dyn Fn(usize, usize, &mut [f32]) + Sync + 'a;

/// The error for a product whose operands do not fit its dimensions.
fn shape_error(what: &str, (m, n, k): (usize, usize, usize)) -> crate::error::CoreError {
    exec_error(
        "matmul",
        format!("cpu backend: gemm kernel {what} for [{m},{k}]·[{k},{n}]"),
    )
}

/// The left operand: element (i, p) at `a[i·rs + p·cs]`.
#[derive(Clone, Copy)]
struct Left<'a> {
    a: &'a [f32],
    rs: usize,
    cs: usize,
}

/// Checks the destination and the left operand, then runs the product on up to `threads` tasks.
/// (The right operand was checked by the caller: [`RightRows::fits`], or by packing.)
fn multiply(
    c: &mut [f32],
    ldc: usize,
    left: Left<'_>,
    (b, epilogue): (Right<'_>, Option<&RowEpilogue<'_>>),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Result<bool> {
    if !available() {
        return Ok(false);
    }
    if m == 0 || n == 0 {
        return Ok(true);
    }
    if ldc < n || (m - 1) * ldc + n > c.len() {
        return Err(shape_error("destination too small or rows overlapping", (m, n, k)));
    }
    if k == 0 {
        for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
            if !accumulate {
                row[..n].fill(0.0);
            }
            if let Some(epilogue) = epilogue {
                epilogue(i, 0, &mut row[..n]);
            }
        }
        return Ok(true);
    }
    if (m - 1) * left.rs + (k - 1) * left.cs >= left.a.len() {
        return Err(shape_error("left operand too small", (m, n, k)));
    }
    let tasks = if threads > 1 && m * n * k >= PAR_MIN_WORK {
        threads
    } else {
        1
    };
    let product = Product {
        a: left.a.as_ptr(),
        a_strides: (left.rs, left.cs),
        b,
        c: CPtr(c.as_mut_ptr()),
        ldc,
        k,
        accumulate,
        epilogue,
    };
    // SAFETY: the bounds of the whole product were checked above; the parts are disjoint (see
    // `split_destination`), so no two tasks write one element of C.
    split_destination((m, n), tasks, (MR, NR), |rows, columns| unsafe {
        product.run(rows, columns)
    });
    Ok(true)
}

/// A right operand `B [k, n]` copied once into the strips the micro-kernel reads (a constant
/// weight, packed when its plan is built, so products with it pack only their left operand).
/// For each block of `KC` contraction steps from `p0` (the last block `kc ≤ KC` steps), the
/// strips of `NR` columns follow one another, strip `s` holding its `kc` rows of `NR` values
/// (columns past `n` zero) at `p0·strips·NR + s·kc·NR` from the first 64-byte boundary. Or, for
/// [`ProductPrecision::Bf16`](super::ProductPrecision), rounded to bfloat16 pairs in the strips of
/// [`super::gemm_bf16`] ([`PackedPairs`]), which that kernel multiplies instead.
pub(crate) struct PackedRight {
    k: usize,
    n: usize,
    strips: Strips,
}

/// The strips of a [`PackedRight`].
enum Strips {
    /// f32 values from the first 64-byte boundary (`LINE` spare elements).
    F32(Vec<f32>),
    Bf16(PackedPairs),
}

impl std::fmt::Debug for PackedRight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedRight [{}, {}]", self.k, self.n)
    }
}

impl PackedRight {
    /// Packs `B [k, n]` whose element (p, j) is `src[p·rs + j·cs]`, on the rayon pool.
    ///
    /// Errors when `src` is too short for the dimensions, or a dimension is zero.
    pub(crate) fn pack(src: &[f32], (rs, cs): (usize, usize), (k, n): (usize, usize)) -> Result<PackedRight> {
        if k == 0 || n == 0 || (k - 1) * rs + (n - 1) * cs >= src.len() {
            return Err(exec_error(
                "plan",
                format!(
                    "cpu backend: packing a [{k}, {n}] right operand from {} values",
                    src.len()
                ),
            ));
        }
        let strips = n.div_ceil(NR);
        let mut values = vec![0.0f32; k * strips * NR + LINE];
        let packed = aligned_mut(&mut values);
        for (block, p0) in packed.chunks_mut(KC * strips * NR).zip((0..k).step_by(KC)) {
            let kc = KC.min(k - p0);
            block[..kc * strips * NR]
                .par_chunks_mut(kc * NR)
                .enumerate()
                .for_each(|(s, strip)| {
                    for (jj, j) in (s * NR..n.min((s + 1) * NR)).enumerate() {
                        for (p, dst) in strip.iter_mut().skip(jj).step_by(NR).enumerate() {
                            *dst = src[(p0 + p) * rs + j * cs];
                        }
                    }
                });
        }
        Ok(PackedRight {
            k,
            n,
            strips: Strips::F32(values),
        })
    }

    /// As [`PackedRight::pack`], rounded to bfloat16 pairs for [`super::gemm_bf16`] where the CPU
    /// has that kernel (in f32 strips otherwise).
    pub(crate) fn pack_bf16(src: &[f32], strides: (usize, usize), (k, n): (usize, usize)) -> Result<PackedRight> {
        match PackedPairs::pack(src, strides, (k, n))? {
            Some(pairs) => Ok(PackedRight {
                k,
                n,
                strips: Strips::Bf16(pairs),
            }),
            None => PackedRight::pack(src, strides, (k, n)),
        }
    }

    /// The operand's `(k, n)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// The first strip of the block at `p0` that holds column `j` in the f32 strips `values` of a
/// `[k, n]` [`PackedRight`] (`p0 < k` a multiple of `KC`, `j < n` a multiple of `NR`).
///
/// # Safety
/// `p0` and `j` are as stated, so the offset lies inside `values`.
unsafe fn strips_from(values: &[f32], (k, n): (usize, usize), p0: usize, j: usize) -> *const f32 {
    let kc = KC.min(k - p0);
    aligned(values)
        .as_ptr()
        .add(p0 * n.div_ceil(NR) * NR + (j / NR) * kc * NR)
}

/// The destination pointer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: tasks given a `CPtr` write pairwise disjoint elements (see `multiply`), and the
// destination slice outlives the scope the tasks run in.
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

/// Where the strips of the right operand come from.
#[derive(Clone, Copy)]
enum Right<'a> {
    /// Row-major rows `ldb` apart, packed block by block during the product.
    Rows(RightRows<'a>, usize),
    /// Packed beforehand: the f32 strips of a [`PackedRight`] with `n` columns.
    Packed(&'a [f32], usize),
}

/// One checked product, as raw parts shared by its tasks.
struct Product<'a> {
    a: *const f32,
    /// Element (i, p) of `A` at `a + i·rs + p·cs`.
    a_strides: (usize, usize),
    b: Right<'a>,
    c: CPtr,
    ldc: usize,
    k: usize,
    accumulate: bool,
    epilogue: Option<&'a RowEpilogue<'a>>,
}

// SAFETY: `a` points into a slice borrowed for the whole call; the product is only read by tasks.
unsafe impl Sync for Product<'_> {}

/// A thread's packing buffers (kept between calls): a block of `B` in strips, a block of `A` in
/// panels.
#[derive(Default)]
struct Packed {
    b: Vec<f32>,
    a: Vec<f32>,
}

thread_local! {
    static PACKED: std::cell::RefCell<Packed> = std::cell::RefCell::new(Packed::default());
}

impl Product<'_> {
    /// Computes `C[rows, cols]`: for each block of `NC` columns and `KC` contraction steps, packs
    /// that block of `B` into 32-column strips (contiguous, zero-padded) unless it was packed
    /// beforehand; then for each block of `MC` rows packs that block of `A` into panels of `MR`
    /// rows and runs the tiles of every panel over every strip.
    ///
    /// # Safety
    /// The caller checked the bounds of the whole product (`multiply`) and that AVX-512F and
    /// F16C are available; `j0` is a multiple of `NR`; no other task writes `C[rows, cols]`
    /// concurrently.
    unsafe fn run(&self, (i0, i1): (usize, usize), (j0, j1): (usize, usize)) {
        let mut packed = PACKED.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if let Right::Rows(..) = self.b {
            packed.b.resize(KC * NC + LINE, 0.0);
        }
        packed.a.resize(KC * MC + LINE, 0.0);
        // A packed operand is not copied per block, so its columns need no blocking: each block
        // of `A` is then packed once per contraction block.
        let column_block = match self.b {
            Right::Rows(..) => NC,
            Right::Packed(..) => (j1 - j0).max(1),
        };
        for jc in (j0..j1).step_by(column_block) {
            let nc = column_block.min(j1 - jc);
            for p0 in (0..self.k).step_by(KC) {
                let kc = KC.min(self.k - p0);
                let strips = match self.b {
                    Right::Rows(rows, ldb) => {
                        pack_right(rows, ldb, (p0, kc), (jc, nc), aligned_mut(&mut packed.b));
                        aligned(&packed.b).as_ptr()
                    }
                    Right::Packed(values, n) => strips_from(values, (self.k, n), p0, jc),
                };
                let accumulate = self.accumulate || p0 > 0;
                for r0 in (i0..i1).step_by(MC) {
                    let r1 = (r0 + MC).min(i1);
                    self.pack_left((r0, r1), (p0, kc), aligned_mut(&mut packed.a));
                    let strip_count = nc.div_ceil(NR);
                    let mut ahead = self.next_left_block((i0, i1), (r0, r1), (p0, jc + nc == j1));
                    let tiles = strip_count * (r1 - r0).div_ceil(MR);
                    ahead.spread_over(tiles);
                    for s in 0..strip_count {
                        let j = jc + s * NR;
                        let strip = strips.add(s * kc * NR);
                        // While the panels run over a packed strip, the next strip in memory is
                        // fetched into cache, a share of its rows by each panel (the hardware
                        // prefetcher stops at page edges; all of it during the first panel
                        // asked for the whole strip at once and left the memory idle meanwhile).
                        let next = match self.b {
                            Right::Packed(..) => strip.wrapping_add(kc * NR),
                            Right::Rows(..) => std::ptr::null(),
                        };
                        let share = kc.div_ceil((r1 - r0).div_ceil(MR));
                        for (q, (panel, r)) in aligned(&packed.a)
                            .chunks_exact(KC * MR)
                            .zip((r0..r1).step_by(MR))
                            .enumerate()
                        {
                            // The destination of the tile after this one, fetched meanwhile.
                            let next_c = if r + MR < r1 {
                                self.c.0.wrapping_add((r + MR) * self.ldc + j)
                            } else if s + 1 < strip_count {
                                self.c.0.wrapping_add(r0 * self.ldc + j + NR)
                            } else {
                                std::ptr::null_mut()
                            };
                            let tile = Tile {
                                rows: MR.min(r1 - r),
                                kc,
                                a: panel.as_ptr(),
                                c: self.c.0.add(r * self.ldc + j),
                                ldc: self.ldc,
                                masks: lane_masks::<VECS>(NR.min(jc + nc - j)),
                                accumulate,
                                prefetch: if next.is_null() {
                                    (next, 0)
                                } else {
                                    let first = (q * share).min(kc);
                                    (next.wrapping_add(first * NR), share.min(kc - first))
                                },
                                next_c,
                            };
                            tile.run(strip);
                            ahead.step();
                        }
                    }
                }
            }
        }
        PACKED.with(|p| *p.borrow_mut() = packed);
        if let Some(epilogue) = self.epilogue {
            for i in i0..i1 {
                // SAFETY: the row part lies inside the checked destination and belongs to this
                // task alone (see `multiply`); no other reference to it exists meanwhile.
                let values = std::slice::from_raw_parts_mut(self.c.0.add(i * self.ldc + j0), j1 - j0);
                epilogue(i, j0, values);
            }
        }
    }

    /// The block of `A` packed after the current one (`rows` of the task's `(i0, i1)` at
    /// contraction block `p0`; `last_columns` when no further column block of this task follows),
    /// to prefetch while the current one runs; nothing when `A`'s rows are not contiguous.
    fn next_left_block(
        &self,
        (i0, i1): (usize, usize),
        (_, r1): (usize, usize),
        (p0, last_columns): (usize, bool),
    ) -> LeftAhead {
        let (rs, cs) = self.a_strides;
        let next = if r1 < i1 {
            Some((r1, (r1 + MC).min(i1), p0))
        } else if p0 + KC < self.k {
            Some((i0, (i0 + MC).min(i1), p0 + KC))
        } else if !last_columns {
            Some((i0, (i0 + MC).min(i1), 0))
        } else {
            None
        };
        match next {
            Some((r0, r1, p0)) if cs == 1 => LeftAhead {
                first: self.a.wrapping_add(r0 * rs + p0),
                row_stride: rs,
                rows: r1 - r0,
                lines_per_row: KC.min(self.k - p0).div_ceil(LINE) + 1,
                issued: 0,
                per_step: 0,
                start_after: 0,
                steps: 0,
            },
            _ => LeftAhead::default(),
        }
    }

    /// Copies `A[r0..r1, p0..p0 + kc]` into `packed` as panels of `MR` rows: panel `t` holds, from
    /// `t·KC·MR`, step p's `MR` values at `p·MR` (rows past `r1` left as they are: never stored).
    ///
    /// # Safety
    /// `A[r0..r1, p0..p0 + kc]` lies inside the checked left operand.
    unsafe fn pack_left(&self, (r0, r1): (usize, usize), (p0, kc): (usize, usize), packed: &mut [f32]) {
        let (rs, cs) = self.a_strides;
        for (panel, r) in packed.chunks_exact_mut(KC * MR).zip((r0..r1).step_by(MR)) {
            let rows = MR.min(r1 - r);
            if rs == 1 && cs != 1 {
                // A transposed `A`: each step's `rows` values lie side by side.
                for (p, step) in panel.chunks_exact_mut(MR).take(kc).enumerate() {
                    step[..rows].copy_from_slice(std::slice::from_raw_parts(self.a.add(r + (p0 + p) * cs), rows));
                }
                continue;
            }
            if cs == 1 {
                // Row-major `A`: a cache line of each of the panel's rows at a time, so the
                // rows' lines are fetched together (one row after the other waited on each
                // row's misses in turn), then written out step by step.
                let mut lines = [[0.0f32; LINE]; MR];
                for p in (0..kc).step_by(LINE) {
                    let width = LINE.min(kc - p);
                    for (i, line) in lines.iter_mut().enumerate().take(rows) {
                        let row = self.a.add((r + i) * rs + p0 + p);
                        line[..width].copy_from_slice(std::slice::from_raw_parts(row, width));
                    }
                    for (t, step) in panel[p * MR..].chunks_exact_mut(MR).take(width).enumerate() {
                        for (dst, line) in step.iter_mut().zip(&lines).take(rows) {
                            *dst = line[t];
                        }
                    }
                }
                continue;
            }
            for i in 0..rows {
                let row = self.a.add((r + i) * rs + p0 * cs);
                for p in 0..kc {
                    panel[p * MR + i] = *row.add(p * cs);
                }
            }
        }
    }
}

/// Copies `B[p0..p0 + kc, jc..jc + nc]` into `packed` as strips of `NR` columns: strip `s` holds
/// its `kc` rows of `NR` values contiguously from `s·kc·NR`, columns past `nc` zero.
fn pack_right(b: RightRows<'_>, ldb: usize, (p0, kc): (usize, usize), (jc, nc): (usize, usize), packed: &mut [f32]) {
    for (s, strip) in packed.chunks_exact_mut(kc * NR).take(nc.div_ceil(NR)).enumerate() {
        let (j, width) = (jc + s * NR, NR.min(nc - s * NR));
        for (p, dst) in strip.chunks_exact_mut(NR).take(kc).enumerate() {
            let from = (p0 + p) * ldb + j;
            match b {
                RightRows::F32(b) => dst[..width].copy_from_slice(&b[from..from + width]),
                RightRows::F16(b) => widen_halves(&b[from..from + width], &mut dst[..width]),
            }
            dst[width..].fill(0.0);
        }
    }
}

/// The cache lines of the next block of `A`, prefetched a few at a time between the tiles of the
/// second half of the current block (early enough to hide the transfer — the rows were often
/// just written by the other core — late enough not to be evicted by the streaming `B`).
struct LeftAhead {
    first: *const f32,
    row_stride: usize,
    rows: usize,
    lines_per_row: usize,
    issued: usize,
    per_step: usize,
    start_after: usize,
    steps: usize,
}

impl Default for LeftAhead {
    fn default() -> LeftAhead {
        LeftAhead {
            first: std::ptr::null(),
            row_stride: 0,
            rows: 0,
            lines_per_row: 0,
            issued: 0,
            per_step: 0,
            start_after: 0,
            steps: 0,
        }
    }
}

impl LeftAhead {
    /// Plans the prefetches over the last half of `tiles` tile runs.
    fn spread_over(&mut self, tiles: usize) {
        let total = self.rows * self.lines_per_row;
        self.start_after = tiles / 2;
        self.per_step = total.div_ceil((tiles - self.start_after).max(1));
    }

    /// Called after each tile: issues this tile's share of prefetches.
    fn step(&mut self) {
        self.steps += 1;
        if self.steps <= self.start_after {
            return;
        }
        let total = self.rows * self.lines_per_row;
        for _ in 0..self.per_step.min(total - self.issued) {
            let (row, line) = (self.issued / self.lines_per_row, self.issued % self.lines_per_row);
            let address = self.first.wrapping_add(row * self.row_stride + line * LINE);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: prefetching never faults, whatever the address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(address.cast())
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = address;
            self.issued += 1;
        }
    }
}

/// One micro-kernel call: `rows ≤ MR` rows and one strip of `C`, over `kc` contraction steps.
/// (Off x86-64 no kernel reads it: [`available`] is false there, so no tile is ever run.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile {
    rows: usize,
    kc: usize,
    /// The packed panel of `A`: element (i, p) at `p·MR + i`.
    a: *const f32,
    c: *mut f32,
    ldc: usize,
    masks: [u16; VECS],
    accumulate: bool,
    /// Rows of `NR` values to prefetch (the tile's share of the next strip), spread over the
    /// steps (never read).
    prefetch: (*const f32, usize),
    /// When not null: the next tile's destination (`MR` rows `ldc` apart), its `2·MR` cache lines
    /// prefetched spread over the steps (never read here).
    next_c: *mut f32,
}

impl Tile {
    /// # Safety
    /// As [`Product::run`]; `strip` points at `kc` packed rows of `NR` values.
    unsafe fn run(&self, strip: *const f32) {
        #[cfg(target_arch = "x86_64")]
        match self.rows {
            12 => tile::<12>(self, strip),
            11 => tile::<11>(self, strip),
            10 => tile::<10>(self, strip),
            9 => tile::<9>(self, strip),
            8 => tile::<8>(self, strip),
            7 => tile::<7>(self, strip),
            6 => tile::<6>(self, strip),
            5 => tile::<5>(self, strip),
            4 => tile::<4>(self, strip),
            3 => tile::<3>(self, strip),
            2 => tile::<2>(self, strip),
            _ => tile::<1>(self, strip),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = strip;
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The micro-kernel for `R` rows over one packed strip.
///
/// # Safety
/// AVX-512F is available; `t.a` holds `t.kc` packed steps of `MR` values, `strip` (64-byte
/// aligned) holds `t.kc` rows of `NR` values, `t.c` reaches `R` rows of the masked lanes (`t.ldc`
/// apart), written by no one else meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(t: &Tile, strip: *const f32) {
    let mut acc = [[_mm512_setzero_ps(); VECS]; R];
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, lanes) in row.iter_mut().enumerate() {
                *lanes = _mm512_maskz_loadu_ps(t.masks[v], t.c.add(i * t.ldc + v * 16));
            }
        }
    }
    let step = |acc: &mut [[__m512; VECS]; R], p: usize| {
        let row = strip.add(p * NR);
        let b: [__m512; VECS] = std::array::from_fn(|v| _mm512_load_ps(row.add(v * 16)));
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*t.a.add(p * MR + i));
            for (lanes, &bv) in acc_row.iter_mut().zip(&b) {
                *lanes = _mm512_fmadd_ps(a, bv, *lanes);
            }
        }
    };
    // The prefetches (rows of the next strip, lines of the next destination), spread evenly over
    // the steps: one of each every `spacing` steps (issued together, they filled the line fill
    // buffers and held up the tile's own loads).
    let (ahead, ahead_rows) = (t.prefetch.0, t.prefetch.1.min(t.kc));
    let c_lines = if t.next_c.is_null() { 0 } else { 2 * MR };
    let events = ahead_rows.max(c_lines);
    let spacing = t.kc / events.max(1);
    let mut p = 0;
    for event in 0..events {
        // Prefetching never faults, whatever the address.
        if event < ahead_rows {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(event * NR).cast());
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(event * NR + 16).cast());
        }
        if event < c_lines {
            let line = t.next_c.wrapping_add((event / 2) * t.ldc + (event % 2) * 16);
            _mm_prefetch::<_MM_HINT_T0>(line.cast_const().cast());
        }
        for q in p..p + spacing {
            step(&mut acc, q);
        }
        p += spacing;
    }
    for q in p..t.kc {
        step(&mut acc, q);
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &lanes) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(t.c.add(i * t.ldc + v * 16), t.masks[v], lanes);
        }
    }
}

#[cfg(test)]
#[path = "gemm_kernel_tests.rs"]
mod tests;
