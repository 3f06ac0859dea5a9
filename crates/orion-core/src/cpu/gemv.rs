//! Matrix-vector products for single-row matmuls (one-token decode): `y[r] = W[r, :] · x` with each
//! row of `W` contiguous over K (the `nn.Linear` layout read as `x · Wᵀ`, a key cache read as
//! `q · Kᵀ`, or a left matrix times a column vector), f32 or half-precision rows.
//!
//! Decode is bound by memory bandwidth (every weight is read once per token), so the kernel reads
//! each weight byte exactly once and converts half rows in registers (`vcvtph2ps`). On x86-64 the
//! widest kernel the CPU supports is picked at run time (`is_x86_feature_detected!`): AVX-512
//! (F/BW/VL with FMA and F16C; masked loads for the last `k % 16` columns), else AVX2+FMA (+F16C);
//! everywhere else, and on CPUs without those features, a portable kernel with `LANES` independent
//! accumulators runs (LLVM vectorises it for the baseline target, e.g. NEON on Apple silicon).
//!
//! How the AVX-512 kernel walks the rows depends on the CPU, because the two measured disagree
//! (`super::gemv_reading`, with the figures): on AMD, one row after another, each front to back
//! as a single stream with four accumulators and no software prefetch; on Intel, four rows at a
//! time sharing each load of `x`, half rows prefetched 2 KB ahead. The AVX2 and portable kernels
//! read one row at a time. History: until 2026-11-27 every CPU read four rows at a time; on the
//! 2-core AMD EPYC (Zen 4) that streamed only 22–25 GB/s of f32 and 19–20 of half rows while
//! llama2.c's one-row loop decoded the same file faster, so the single stream replaced it; on the
//! 2-core Intel Xeon the single stream then decoded 11–16 % slower (2026-11-29, alternated
//! `ORION_GEMV` runs of `orion bench inference`: GPT-2 f32 44.9–46.0 → 49.9–53.1 tok/s with
//! groups, f16 70.0–71.9 → 79.8–82.5, Stories110M 49.9–51.0 → 57.6–58.1), hence the choice.
//!
//! The same AVX-512 loop also serves a few left rows at once ([`rows_of_many`], driven by
//! `super::gemv_rows`): each matrix row is read once per group of 8, 4 or 1 left rows.
//!
//! Invariants: [`gemv`] checks every length before any kernel runs (a wrong size is an error, never
//! an out-of-bounds read); rows are split across rayon tasks in fixed chunks, each output written
//! by exactly one task, so results do not depend on the thread count. Sums use several accumulators,
//! so the order differs from the interpreter's sequential loop (within `Tolerance::F32`).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use super::gemv_reading::{gemv_reading, GemvReading};
use crate::error::Result;
use crate::interp::exec_error;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Independent accumulators of the portable dot product.
const LANES: usize = 16;
/// Elements of a half-precision row the portable kernel converts at a time.
const HALF_CHUNK: usize = 256;
/// Multiply-adds below which the product runs on one thread.
const PAR_MIN_WORK: usize = 1 << 15;
/// Fewest rows one task computes.
const MIN_TASK_ROWS: usize = 16;

/// The matrix of a matrix-vector product: rows of K elements, `stride` elements apart.
#[derive(Clone, Copy, Debug)]
pub enum MatrixRows<'a> {
    F32(&'a [f32]),
    /// Half-precision rows, converted to f32 in registers.
    F16(&'a [f16]),
}

impl MatrixRows<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            MatrixRows::F32(m) => m.len(),
            MatrixRows::F16(m) => m.len(),
        }
    }
}

/// Which matrix-vector kernel this CPU runs, for `orion doctor` and benchmark notes.
pub fn kernel_description() -> String {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return format!("AVX-512, {}", gemv_reading().describe());
    }
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2_fma() {
        return "AVX2 and FMA, one row at a time".into();
    }
    "portable loop, one row at a time".into()
}

/// `y[r] = Σ_k matrix[r·stride + k] · x[k]` for every row `r < y.len()`, on up to `threads` rayon
/// tasks. `stride >= x.len()`; the matrix must hold `(rows - 1)·stride + K` elements.
pub fn gemv(matrix: MatrixRows<'_>, stride: usize, x: &[f32], y: &mut [f32], threads: usize) -> Result<()> {
    gemv_then(matrix, stride, x, y, threads, &|_, _| {})
}

/// What a task does with its part of a product's result once computed: `then(first, part)`
/// with `part` the results of rows `first..first + part.len()`, to be replaced in place.
pub(crate) type RowsThen<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// [`gemv`], each task then calling `then` on its part of `y` while it is in the core's cache (a
/// decode step's bias, activation or residual add: see `super::epilogue`).
pub(crate) fn gemv_then(
    matrix: MatrixRows<'_>,
    stride: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
    then: &RowsThen<'_>,
) -> Result<()> {
    let (k, rows) = (x.len(), y.len());
    if rows == 0 {
        return Ok(());
    }
    if stride < k || (rows - 1) * stride + k > matrix.len() {
        return Err(exec_error(
            "matmul",
            format!(
                "cpu backend: gemv of {rows} rows of {k} (stride {stride}) over a matrix of {} elements",
                matrix.len()
            ),
        ));
    }
    let per_task = rows_per_task(rows, rows * k, threads);
    if per_task == rows {
        rows_range(matrix, stride, x, 0, y);
        then(0, y);
        return Ok(());
    }
    y.par_chunks_mut(per_task).enumerate().for_each(|(task, ys)| {
        rows_range(matrix, stride, x, task * per_task, ys);
        then(task * per_task, ys);
    });
    Ok(())
}

/// Matrix rows each task takes when `rows` rows (`work` multiply-adds in all) are split across up
/// to `threads` tasks; `rows` itself when the product runs on one thread. One contiguous part per
/// thread, so each core streams a single region (two parts per thread, for balancing, were slower
/// in 5 of 6 alternated runs of the decode-like sequence: 13.6–17.4 against 13.7–15.3 ms median on
/// the EPYC).
pub(super) fn rows_per_task(rows: usize, work: usize, threads: usize) -> usize {
    if threads <= 1 || work < PAR_MIN_WORK || rows < 2 * MIN_TASK_ROWS {
        rows
    } else {
        rows.div_ceil(threads).max(MIN_TASK_ROWS)
    }
}

/// `dst[i] = src[i]` as f32 for every `i < min(len)` (exact: every half is an f32). With AVX-512,
/// sixteen at a time in registers (`vcvtph2ps`, the instruction the `half` crate's F16C path
/// uses, so the same bits); elsewhere through the `half` crate, which converts eight per call.
pub(crate) fn widen_halves(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports AVX-512 F/BW/VL and F16C (checked just above); both slices
        // hold `n` elements.
        unsafe { avx512::widen(src, dst) };
        return;
    }
    src.convert_to_f32_slice(dst);
}

/// Whether [`rows_of_many`] has its vector kernel on this CPU (AVX-512); the planner chooses
/// `Method::GemvRows` only then, since the fallback reads the matrix once per left row.
pub fn many_rows_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return true;
    }
    false
}

/// `by_row[j·m + i]` = matrix row `first + j` · left row `i` of `x = (xs, m, k, x_stride)`, for
/// `j < by_row.len() / m` (see `super::gemv_rows`); an error when a length does not fit.
pub(super) fn rows_of_many(
    matrix: MatrixRows<'_>,
    stride: usize,
    x: (&[f32], usize, usize, usize),
    first: usize,
    by_row: &mut [f32],
) -> Result<()> {
    let (xs, m, k, x_stride) = x;
    let rows = by_row.len().checked_div(m).unwrap_or(0);
    if rows == 0 || k == 0 {
        by_row.fill(0.0);
        return Ok(());
    }
    let end = (first + rows - 1) * stride + k;
    if rows * m != by_row.len() || stride < k || x_stride < k || end > matrix.len() || (m - 1) * x_stride + k > xs.len()
    {
        return Err(exec_error(
            "matmul",
            "cpu backend: multi-row product lengths differ".into(),
        ));
    }
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports AVX-512 F/BW/VL, FMA and F16C (checked just above); the slice
        // from `first·stride` to `end` holds `(rows - 1)·stride + k` elements and `xs` holds
        // `(m - 1)·x_stride + k` (both checked above); `m, k >= 1`.
        unsafe {
            match matrix {
                MatrixRows::F32(all) => avx512::dot_rows_many_f32(&all[first * stride..end], stride, x, by_row),
                MatrixRows::F16(all) => avx512::dot_rows_many_f16(&all[first * stride..end], stride, x, by_row),
            }
        }
        return Ok(());
    }
    one_row_at_a_time(matrix, stride, x, first, by_row);
    Ok(())
}

/// [`rows_of_many`] without the multi-row kernel: one matrix-vector product per left row (lengths
/// checked by the caller).
pub(super) fn one_row_at_a_time(
    matrix: MatrixRows<'_>,
    stride: usize,
    (xs, m, k, x_stride): (&[f32], usize, usize, usize),
    first: usize,
    by_row: &mut [f32],
) {
    let mut column = vec![0.0f32; by_row.len() / m];
    for i in 0..m {
        rows_range(matrix, stride, &xs[i * x_stride..i * x_stride + k], first, &mut column);
        for (j, &value) in column.iter().enumerate() {
            by_row[j * m + i] = value;
        }
    }
}

/// Rows `first..first + y.len()` of the product (lengths checked by the caller).
fn rows_range(matrix: MatrixRows<'_>, stride: usize, x: &[f32], first: usize, y: &mut [f32]) {
    let k = x.len();
    let end = (first + y.len() - 1) * stride + k;
    match matrix {
        MatrixRows::F32(m) => {
            let rows = &m[first * stride..end];
            #[cfg(target_arch = "x86_64")]
            if avx512::available() {
                // SAFETY: the CPU supports AVX-512 F/BW/VL, FMA and F16C (checked just above);
                // `rows` holds `(y.len() - 1)·stride + k` elements by the slice bounds, `x` holds k.
                unsafe { avx512::dot_rows_f32(rows, stride, x, y) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if x86::has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above); `rows` holds
                // `(y.len() - 1)·stride + k` elements by the slice bounds, `x` holds k.
                unsafe { x86::dot_rows_f32(rows, stride, x, y) };
                return;
            }
            portable_rows_f32(rows, stride, x, y);
        }
        MatrixRows::F16(m) => {
            let rows = &m[first * stride..end];
            #[cfg(target_arch = "x86_64")]
            if avx512::available() {
                // SAFETY: the CPU supports AVX-512 F/BW/VL, FMA and F16C (checked just above);
                // `rows` holds `(y.len() - 1)·stride + k` elements by the slice bounds, `x` holds k.
                unsafe { avx512::dot_rows_f16(rows, stride, x, y) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if x86::has_avx2_fma() && x86::has_f16c() {
                // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above); `rows` holds
                // `(y.len() - 1)·stride + k` elements by the slice bounds, `x` holds k.
                unsafe { x86::dot_rows_f16(rows, stride, x, y) };
                return;
            }
            portable_rows_f16(rows, stride, x, y);
        }
    }
}

fn portable_rows_f32(m: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
    let k = x.len();
    for (r, out) in y.iter_mut().enumerate() {
        *out = dot(&m[r * stride..r * stride + k], x);
    }
}

fn portable_rows_f16(m: &[f16], stride: usize, x: &[f32], y: &mut [f32]) {
    let k = x.len();
    let mut buffer = [0.0f32; HALF_CHUNK];
    for (r, out) in y.iter_mut().enumerate() {
        let row = &m[r * stride..r * stride + k];
        let mut sum = 0.0f32;
        for (chunk, xs) in row.chunks(HALF_CHUNK).zip(x.chunks(HALF_CHUNK)) {
            let converted = &mut buffer[..chunk.len()];
            chunk.convert_to_f32_slice(converted);
            sum += dot(converted, xs);
        }
        *out = sum;
    }
}

/// Dot product with `LANES` independent accumulators (the portable kernel).
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
    let mut width = LANES / 2;
    while width > 0 {
        for lane in 0..width {
            acc[lane] += acc[lane + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// The AVX-512 kernels: 16 lanes per vector, the last `k % 16` columns of each row through masked
/// loads (masked-out lanes are neither read nor faulted on), half rows widened with `vcvtph2ps`.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Whether the CPU has every feature these kernels enable.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// Sixteen elements at `p` as f32 (all of them, or only the lanes set in `mask`, the others 0).
    trait Load16: Copy {
        /// Elements prefetched ahead of the current column when rows are read in groups
        /// (`super::gemv_reading`); 0: none.
        const GROUP_PREFETCH: usize;
        /// # Safety
        /// `p..p + 16` must be readable and the CPU must support AVX-512 F/BW/VL.
        unsafe fn load16(p: *const Self) -> __m512;
        /// # Safety
        /// The lanes set in `mask` must be readable at `p`; AVX-512 F/BW/VL supported.
        unsafe fn load16_masked(p: *const Self, mask: __mmask16) -> __m512;
    }

    impl Load16 for f32 {
        /// f32 row groups streamed faster without (24.9–25.2 GiB/s against 23.0 with 2 KB ahead).
        const GROUP_PREFETCH: usize = 0;
        #[inline(always)]
        unsafe fn load16(p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees sixteen readable f32s at `p`; the load is unaligned.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load16_masked(p: *const f32, mask: __mmask16) -> __m512 {
            // SAFETY: the caller guarantees the masked lanes are readable; masked-out lanes are
            // not accessed (fault suppression of masked loads).
            unsafe { _mm512_maskz_loadu_ps(mask, p) }
        }
    }

    impl Load16 for f16 {
        /// 2 KB: half row groups 16.3–17.0 GiB/s without, 22.1 with 2 KB, 20.6–21.0 with 4 KB.
        const GROUP_PREFETCH: usize = 1024;
        #[inline(always)]
        unsafe fn load16(p: *const f16) -> __m512 {
            // SAFETY: the caller guarantees sixteen readable halves (32 bytes) at `p`; unaligned.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
        }
        #[inline(always)]
        unsafe fn load16_masked(p: *const f16, mask: __mmask16) -> __m512 {
            // SAFETY: as for f32: only the masked lanes are read.
            unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast::<i16>())) }
        }
    }

    /// `y[r] = m[r·stride..r·stride + k] · x` with k = `x.len()`, reading the rows as this
    /// process does ([`super::gemv_reading`]).
    ///
    /// # Safety
    /// [`available`] holds; `m.len() >= (y.len() - 1)·stride + k` when `y` is not empty.
    pub(super) unsafe fn dot_rows_f32(m: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows_f32_reading(super::gemv_reading(), m, stride, x, y) }
    }

    /// As [`dot_rows_f32`] for half-precision rows.
    ///
    /// # Safety
    /// As [`dot_rows_f32`].
    pub(super) unsafe fn dot_rows_f16(m: &[f16], stride: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows_f16_reading(super::gemv_reading(), m, stride, x, y) }
    }

    /// As [`dot_rows_f32`], reading the rows as `reading` says.
    ///
    /// # Safety
    /// As [`dot_rows_f32`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_rows_f32_reading(
        reading: super::GemvReading,
        m: &[f32],
        stride: usize,
        x: &[f32],
        y: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows(reading, m, stride, x, y) }
    }

    /// As [`dot_rows_f16`], reading the rows as `reading` says.
    ///
    /// # Safety
    /// As [`dot_rows_f32`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_rows_f16_reading(
        reading: super::GemvReading,
        m: &[f16],
        stride: usize,
        x: &[f32],
        y: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows(reading, m, stride, x, y) }
    }

    /// The rows as streams ([`dot_row_streams`]) or in groups ([`dot_row_groups`]).
    ///
    /// # Safety
    /// As [`dot_row_streams`].
    #[inline(always)]
    unsafe fn dot_rows<T: Load16>(reading: super::GemvReading, m: &[T], stride: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            match reading {
                super::GemvReading::RowStreams => dot_row_streams(m, stride, x, y),
                super::GemvReading::RowGroups => dot_row_groups(m, stride, x, y),
            }
        }
    }

    /// One row after another, each read front to back as one stream with `ACCUMULATORS` vector
    /// accumulators (64 columns a step, then 16, then the masked tail into the first), so every
    /// row's result comes from the same operations.
    #[inline(always)]
    unsafe fn dot_row_streams<T: Load16>(m: &[T], stride: usize, x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let body = k - k % 16;
        let wide = k - k % (16 * ACCUMULATORS);
        let mask: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let rows = y.len();
        if rows == 0 {
            return;
        }
        debug_assert!(m.len() >= (rows - 1) * stride + k);
        let (mp, xp) = (m.as_ptr(), x.as_ptr());
        // SAFETY: row `r` starts at `r·stride` with `r < rows`; full loads read columns
        // `i..i + 16` with `i + 16 <= body <= k`, the masked tail load reads only columns
        // `body..k`, so the last element read is below `(rows - 1)·stride + k <= m.len()`; `x`
        // loads read within `0..k` the same way. The caller guarantees the features.
        unsafe {
            let x_tail = _mm512_maskz_loadu_ps(mask, xp.add(body));
            for (r, out) in y.iter_mut().enumerate() {
                let rp = mp.add(r * stride);
                let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
                let mut i = 0;
                while i < wide {
                    for (j, lanes) in acc.iter_mut().enumerate() {
                        let at = i + 16 * j;
                        *lanes = _mm512_fmadd_ps(T::load16(rp.add(at)), _mm512_loadu_ps(xp.add(at)), *lanes);
                    }
                    i += 16 * ACCUMULATORS;
                }
                while i < body {
                    acc[0] = _mm512_fmadd_ps(T::load16(rp.add(i)), _mm512_loadu_ps(xp.add(i)), acc[0]);
                    i += 16;
                }
                acc[0] = _mm512_fmadd_ps(T::load16_masked(rp.add(body), mask), x_tail, acc[0]);
                let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                *out = _mm512_reduce_add_ps(sum);
            }
        }
    }

    /// Four rows at a time, one accumulator per row sharing each load of `x` (16 columns a step,
    /// then the masked tail), prefetching `T::GROUP_PREFETCH` elements ahead in every row; the
    /// last `rows % 4` rows one by one with the same operations, so a row's result does not
    /// depend on its group.
    ///
    /// # Safety
    /// As [`dot_row_streams`].
    #[inline(always)]
    unsafe fn dot_row_groups<T: Load16>(m: &[T], stride: usize, x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let rows = y.len();
        if rows == 0 {
            return;
        }
        debug_assert!(m.len() >= (rows - 1) * stride + k);
        let whole = rows - rows % 4;
        // SAFETY: each call reads rows `first..first + R` below `rows`, which the caller
        // guarantees lie inside `m` (see `row_group`).
        unsafe {
            for first in (0..whole).step_by(4) {
                row_group::<T, 4>(m.as_ptr().add(first * stride), stride, x, &mut y[first..first + 4]);
            }
            for r in whole..rows {
                row_group::<T, 1>(m.as_ptr().add(r * stride), stride, x, &mut y[r..r + 1]);
            }
        }
    }

    /// `y[j] = row j · x` for the `R` rows from `first` (`stride` apart) with one accumulator per
    /// row: see [`dot_row_groups`].
    ///
    /// # Safety
    /// `R` rows of `x.len()` elements from `first`, `stride` apart, are readable; `y.len() == R`;
    /// the CPU supports AVX-512 F/BW/VL and F16C.
    #[inline(always)]
    unsafe fn row_group<T: Load16, const R: usize>(first: *const T, stride: usize, x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let body = k - k % 16;
        let mask: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let per_line = 64 / std::mem::size_of::<T>();
        let xp = x.as_ptr();
        // SAFETY: full loads read columns `i..i + 16` with `i + 16 <= body <= k`, the masked tail
        // load only columns `body..k`, of rows inside the readable ones (contract); `x` loads
        // read within `0..k` the same way. Prefetches never fault (`wrapping_add` keeps the
        // address arithmetic defined past the matrix).
        unsafe {
            let rp: [*const T; R] = std::array::from_fn(|j| first.add(j * stride));
            let mut acc = [_mm512_setzero_ps(); R];
            let mut i = 0;
            while i < body {
                let xv = _mm512_loadu_ps(xp.add(i));
                if T::GROUP_PREFETCH > 0 && i % per_line == 0 {
                    for p in rp {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + T::GROUP_PREFETCH).cast::<i8>());
                    }
                }
                for (lanes, p) in acc.iter_mut().zip(rp) {
                    *lanes = _mm512_fmadd_ps(T::load16(p.add(i)), xv, *lanes);
                }
                i += 16;
            }
            let x_tail = _mm512_maskz_loadu_ps(mask, xp.add(body));
            for ((out, lanes), p) in y.iter_mut().zip(acc).zip(rp) {
                *out = _mm512_reduce_add_ps(_mm512_fmadd_ps(T::load16_masked(p.add(body), mask), x_tail, lanes));
            }
        }
    }

    /// `by_row[r·m + i] = w[r·stride..r·stride + k] · xs[i·x_stride..i·x_stride + k]` for the
    /// `m` left rows and every row `r < by_row.len() / m` of `w`.
    ///
    /// # Safety
    /// [`available`] holds; `m >= 1`, `k >= 1`, `by_row.len()` a non-zero multiple of `m`,
    /// `w.len() >= (by_row.len() / m - 1)·stride + k` and `xs.len() >= (m - 1)·x_stride + k`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_rows_many_f32(
        w: &[f32],
        stride: usize,
        x: (&[f32], usize, usize, usize),
        by_row: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows_many(w, stride, x, by_row) }
    }

    /// As [`dot_rows_many_f32`] for half-precision rows.
    ///
    /// # Safety
    /// As [`dot_rows_many_f32`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_rows_many_f16(
        w: &[f16],
        stride: usize,
        x: (&[f32], usize, usize, usize),
        by_row: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows_many(w, stride, x, by_row) }
    }

    /// For each row of `w`, the left rows in groups of 8, then 4, then one: each group reads the
    /// row once (from memory for the first group, from L1 after), one accumulator per left row.
    #[inline(always)]
    unsafe fn dot_rows_many<T: Load16>(w: &[T], stride: usize, x: (&[f32], usize, usize, usize), by_row: &mut [f32]) {
        let (xs, m, k, x_stride) = x;
        let body = k - k % 16;
        let mask: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let shape = Group {
            k,
            body,
            mask,
            x_stride,
        };
        for (r, out) in by_row.chunks_exact_mut(m).enumerate() {
            // SAFETY: row `r` is below `by_row.len() / m`, so `r·stride + k <= w.len()`; left
            // row `i + j < m` starts at `(i + j)·x_stride`, with `k` readable after it (contract).
            unsafe {
                let row = w.as_ptr().add(r * stride);
                let mut i = 0;
                while i + 8 <= m {
                    group::<T, 8>(row, xs.as_ptr().add(i * x_stride), shape, &mut out[i..i + 8]);
                    i += 8;
                }
                while i + 4 <= m {
                    group::<T, 4>(row, xs.as_ptr().add(i * x_stride), shape, &mut out[i..i + 4]);
                    i += 4;
                }
                while i < m {
                    group::<T, 1>(row, xs.as_ptr().add(i * x_stride), shape, &mut out[i..i + 1]);
                    i += 1;
                }
            }
        }
    }

    /// Columns of one dot product and where the left rows are.
    #[derive(Clone, Copy)]
    struct Group {
        k: usize,
        /// `k` rounded down to a multiple of 16.
        body: usize,
        /// The lanes of the last `k % 16` columns.
        mask: __mmask16,
        x_stride: usize,
    }

    /// `out[j] = row · left row j` for `G` left rows starting at `x`.
    ///
    /// # Safety
    /// `row..row + k` and each `x + j·x_stride..+ k` (`j < G`) are readable; `out.len() == G`;
    /// the CPU supports AVX-512 F/BW/VL (and F16C for halves).
    #[inline(always)]
    unsafe fn group<T: Load16, const G: usize>(row: *const T, x: *const f32, shape: Group, out: &mut [f32]) {
        let Group {
            k,
            body,
            mask,
            x_stride,
        } = shape;
        // SAFETY: full loads read columns `p..p + 16` with `p + 16 <= body <= k`; the tail loads
        // only the masked lanes `body..k` (contract).
        unsafe {
            let mut acc = [_mm512_setzero_ps(); G];
            let mut p = 0;
            while p < body {
                let weights = T::load16(row.add(p));
                for (j, lanes) in acc.iter_mut().enumerate() {
                    *lanes = _mm512_fmadd_ps(weights, _mm512_loadu_ps(x.add(j * x_stride + p)), *lanes);
                }
                p += 16;
            }
            if body < k {
                let weights = T::load16_masked(row.add(body), mask);
                for (j, lanes) in acc.iter_mut().enumerate() {
                    let left = _mm512_maskz_loadu_ps(mask, x.add(j * x_stride + body));
                    *lanes = _mm512_fmadd_ps(weights, left, *lanes);
                }
            }
            for (o, lanes) in out.iter_mut().zip(acc) {
                *o = _mm512_reduce_add_ps(lanes);
            }
        }
    }

    /// Widens `src` into `dst` (equal lengths), sixteen halves a step, the tail masked.
    ///
    /// # Safety
    /// [`available`] holds; `src.len() == dst.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let body = n - n % 16;
        let mask: __mmask16 = ((1u32 << (n % 16)) - 1) as __mmask16;
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY: full steps read and write `i..i + 16 <= body <= n`; the tail touches only the
        // masked lanes `body..n` (masked-out lanes are neither read nor written).
        unsafe {
            let mut i = 0;
            while i < body {
                _mm512_storeu_ps(dp.add(i), f16::load16(sp.add(i)));
                i += 16;
            }
            _mm512_mask_storeu_ps(dp.add(body), mask, f16::load16_masked(sp.add(body), mask));
        }
    }

    /// Vector accumulators per row (four multiply-adds in flight hide their latency).
    const ACCUMULATORS: usize = 4;
}

/// The AVX2 + FMA (+ F16C) kernels.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    pub(super) fn has_avx2_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    pub(super) fn has_f16c() -> bool {
        is_x86_feature_detected!("f16c")
    }

    /// Sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Eight elements at `p` as f32 (one unaligned load of f32s, or of halves converted).
    trait Load: Copy {
        /// # Safety
        /// `p..p + 8` must be readable and the CPU must support AVX2, FMA and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
        fn to_f32(self) -> f32;
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees eight readable f32s at `p`; the load is unaligned.
            unsafe { _mm256_loadu_ps(p) }
        }
        fn to_f32(self) -> f32 {
            self
        }
    }

    impl Load for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: the caller guarantees eight readable halves (16 bytes) at `p` and F16C
            // support; `_mm_loadu_si128` has no alignment requirement.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
        }
        fn to_f32(self) -> f32 {
            f16::to_f32(self)
        }
    }

    /// `y[r] = m[r·stride..r·stride + k] · x` with k = `x.len()`.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `m.len() >= (y.len() - 1)·stride + k` when `y` is not empty.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows_f32(m: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract (f32 loads need no F16C).
        unsafe { dot_rows(m, stride, x, y) }
    }

    /// As [`dot_rows_f32`] for half-precision rows.
    ///
    /// # Safety
    /// As [`dot_rows_f32`], and the CPU supports F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows_f16(m: &[f16], stride: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract.
        unsafe { dot_rows(m, stride, x, y) }
    }

    /// One row after another, each read front to back as one stream with four vector
    /// accumulators (32 columns a step, then 8 into the first), the last `k % 8` columns in scalar
    /// code; every row's result comes from the same operations.
    #[inline(always)]
    unsafe fn dot_rows<T: Load>(m: &[T], stride: usize, x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let body = k - k % 8;
        let wide = k - k % 32;
        let rows = y.len();
        if rows == 0 {
            return;
        }
        debug_assert!(m.len() >= (rows - 1) * stride + k);
        let (mp, xp) = (m.as_ptr(), x.as_ptr());
        // SAFETY: row `r` starts at `r·stride` with `r < rows`, and every vector load reads
        // columns `i..i + 8` with `i + 8 <= body <= k`, so the last element read is below
        // `(rows - 1)·stride + k <= m.len()`; `x` loads read `i..i + 8 <= k`. The caller
        // guarantees AVX2/FMA (and F16C for halves).
        unsafe {
            for (r, out) in y.iter_mut().enumerate() {
                let rp = mp.add(r * stride);
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i < wide {
                    for (j, lanes) in acc.iter_mut().enumerate() {
                        let at = i + 8 * j;
                        *lanes = _mm256_fmadd_ps(T::load8(rp.add(at)), _mm256_loadu_ps(xp.add(at)), *lanes);
                    }
                    i += 32;
                }
                while i < body {
                    acc[0] = _mm256_fmadd_ps(T::load8(rp.add(i)), _mm256_loadu_ps(xp.add(i)), acc[0]);
                    i += 8;
                }
                let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let tail: f32 = (body..k).map(|c| m[r * stride + c].to_f32() * x[c]).sum();
                *out = hsum(sum) + tail;
            }
        }
    }
}

#[cfg(test)]
#[path = "gemv_tests.rs"]
mod tests;
