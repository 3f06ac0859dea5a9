//! The mixed-precision GEMM of [`ProductPrecision::Bf16`](super::ProductPrecision): `C = A · B`
//! (or `C += A · B`) with both operands rounded to bfloat16 and the products summed in f32, for
//! row-major destinations and operands at any strides (training's products read activations and
//! weights transposed as often as not).
//!
//! Why: the training step and long prefills are bound by multiply-adds, not memory. `vdpbf16ps`
//! multiplies two pairs of bfloat16 values per f32 lane and adds both products to the lane, at the
//! issue rate of an f32 multiply-add: twice the multiply-adds per cycle. Measured on the 2-vCPU
//! EPYC (Zen 4) with `tools/peers/fma_peak.c` and a copy of it issuing `vdpbf16ps`: 233.9 GFLOP/s
//! for f32 multiply-adds, 468.8 for bfloat16 pairs, both threads.
//!
//! How: `k` is taken two steps at a time (a "pair"; an odd `k` is padded with a zero). Each task
//! first packs its rows of `A` whole, for each block of `KP` pairs in panels of `MR` rows, one
//! 32-bit word per (row, pair) — the two bfloat16 values of steps `2q` and `2q + 1`. For each
//! block of `NC` columns and `KP` pairs it packs that block of `B` into strips of `NR` columns, one
//! word per (pair, column), and a micro-kernel keeps an `MR × NR` tile of `C` in 24 vector
//! registers: per pair, two strip vectors and one broadcast word per row. Packing gathers the
//! f32 values in the packed order first, then rounds them 32 at a time (`vcvtne2ps2bf16`, nearest
//! even, as PyTorch's `bfloat16` casts; subnormal inputs and results are flushed to zero by
//! these instructions). Work is split across rayon tasks by column ranges when `A` is the smaller
//! operand and by row ranges otherwise, as in [`super::gemm_kernel`].
//!
//! Unsafe: the kernel uses raw pointers and AVX-512 intrinsics. [`gemm_bf16`] checks, before any
//! kernel runs, that every element reachable from the dimensions and strides lies inside the
//! slices and that rows of `C` do not overlap; tasks write disjoint parts of `C` (distinct rows,
//! or distinct columns of the same rows). The kernels run only after `is_x86_feature_detected!`
//! confirmed AVX-512F, AVX-512BW and AVX512_BF16.
//!
//! Invariants: each element of `C` is summed over the pairs in increasing order (two rounded
//! f32 additions per pair, the even step's product first), so results do not depend on the thread
//! count or the split. On CPUs without AVX512_BF16 (and off x86-64) [`gemm_bf16`] returns
//! `Ok(false)` and the caller computes the product in f32.
#![allow(unsafe_code)]

use super::matmul::MatRef;
use crate::error::Result;
use crate::interp::exec_error;

/// 16-lane vectors per row of a micro-kernel tile.
const VECS: usize = 2;
/// Output columns of one micro-kernel tile.
const NR: usize = 16 * VECS;
/// Most output rows of one tile (`2·MR` accumulators + 2 strip vectors of the 32 registers).
const MR: usize = 12;
/// Pairs (two contraction steps each) per block: a `KP × NR` strip of words is 16 KB, in L1 with
/// the panel of `A` (6 KB).
const KP: usize = 128;
/// Rows of `A` whose panels are run over each strip in turn: `MC × KP` words are 96 KB, in L2.
const MC: usize = 192;
/// Columns of `B` packed at a time: a `KP × NC` block of words is 512 KB, in L2.
const NC: usize = 1024;
/// Multiply-adds from which a product is split across tasks.
const PAR_MIN_WORK: usize = 1 << 18;

/// True when this CPU runs the kernel of this module (AVX-512F, AVX-512BW and AVX512_BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C = A · B` (`C += A · B` when `accumulate`) with `A [m, k]` and `B [k, n]` at any strides
/// ([`MatRef`]) rounded to bfloat16, and row-major `C [m, n]` (`ldc`), on up to `threads` rayon
/// tasks. Returns `Ok(false)` without touching `C` when the CPU lacks AVX512_BF16.
///
/// Errors when a slice is too short for the dimensions or rows of `C` overlap.
pub(crate) fn gemm_bf16(
    c: &mut [f32],
    ldc: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
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
    let bad = |what: &str| {
        exec_error(
            "matmul",
            format!("cpu backend: bf16 gemm {what} for [{m},{k}]·[{k},{n}]"),
        )
    };
    if ldc < n || (m - 1) * ldc + n > c.len() {
        return Err(bad("destination too small or rows overlapping"));
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return Ok(true);
    }
    if (m - 1) * a.rs + (k - 1) * a.cs >= a.data.len() {
        return Err(bad("left operand too small"));
    }
    if (k - 1) * b.rs + (n - 1) * b.cs >= b.data.len() {
        return Err(bad("right operand too small"));
    }
    let product = Product {
        a: Operand::of(a),
        b: Operand::of(b),
        c: CPtr(c.as_mut_ptr()),
        ldc,
        k,
        accumulate,
    };
    let tasks = if threads > 1 && m * n * k >= PAR_MIN_WORK {
        threads
    } else {
        1
    };
    let strips = n.div_ceil(NR);
    if tasks == 1 {
        // SAFETY: the bounds of the whole product were checked above; this one call covers it.
        unsafe { product.run((0, m), (0, n)) };
    } else if m < n && strips >= tasks {
        let per_task = strips.div_ceil(tasks) * NR;
        rayon::scope(|s| {
            for t in 0..tasks {
                let (j0, j1) = ((t * per_task).min(n), ((t + 1) * per_task).min(n));
                let p = &product;
                // SAFETY: bounds checked above; tasks cover disjoint column ranges [j0, j1) of C.
                s.spawn(move |_| unsafe { p.run((0, m), (j0, j1)) });
            }
        });
    } else {
        let per_task = m.div_ceil(tasks).div_ceil(MR) * MR;
        rayon::scope(|s| {
            for t in 0..tasks {
                let (i0, i1) = ((t * per_task).min(m), ((t + 1) * per_task).min(m));
                let p = &product;
                // SAFETY: bounds checked above; tasks cover disjoint row ranges [i0, i1) of C.
                s.spawn(move |_| unsafe { p.run((i0, i1), (0, n)) });
            }
        });
    }
    Ok(true)
}

/// An operand as raw parts: element (r, c) at `data + r·rs + c·cs`.
#[derive(Clone, Copy)]
struct Operand {
    data: *const f32,
    rs: usize,
    cs: usize,
}

impl Operand {
    fn of(m: MatRef<'_>) -> Operand {
        Operand {
            data: m.data.as_ptr(),
            rs: m.rs,
            cs: m.cs,
        }
    }
}

/// The destination pointer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);

/// One checked product, shared by its tasks.
struct Product {
    a: Operand,
    b: Operand,
    c: CPtr,
    ldc: usize,
    k: usize,
    accumulate: bool,
}

// SAFETY: the operands point into slices borrowed for the whole call and are only read; tasks
// write pairwise disjoint elements of `C` (see `gemm_bf16`), whose slice outlives the scope.
unsafe impl Sync for Product {}

/// A thread's buffers (kept between calls): f32 values gathered in packed order, and the packed
/// words of `A` and of a block of `B` (each with 16 spare words for 64-byte alignment).
#[derive(Default)]
struct Buffers {
    gathered: Vec<f32>,
    a: Vec<u32>,
    b: Vec<u32>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Words per 64-byte line.
const LINE: usize = 16;

/// The part of `words` from its first 64-byte boundary (`words` has `LINE` spare elements).
fn aligned_mut(words: &mut [u32]) -> &mut [u32] {
    let skip = words.as_ptr().align_offset(64).min(LINE);
    &mut words[skip..]
}

impl Product {
    /// Pairs in the contraction.
    fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Pairs per block: the fewest blocks of at most `KP` pairs, of equal size but the last (a
    /// 288-step contraction is one block of 144 pairs, not 128 and 16).
    fn block_pairs(&self) -> usize {
        let pairs = self.pairs();
        pairs.div_ceil(pairs.div_ceil(KP))
    }

    /// Computes `C[rows, cols]`. With more than `NC` columns, `A` is packed whole first (once,
    /// not once per block of columns); otherwise each block of `A` is packed right before its
    /// tiles, while still in cache.
    ///
    /// # Safety
    /// The caller checked the bounds of the whole product and that the CPU has the kernel's
    /// features; no other task writes `C[rows, cols]` concurrently.
    unsafe fn run(&self, (i0, i1): (usize, usize), (j0, j1): (usize, usize)) {
        let mut buffers = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let (pairs, per_block) = (self.pairs(), self.block_pairs());
        let panels = (i1 - i0).div_ceil(MR);
        let whole_left = j1 - j0 > NC;
        let left_words = if whole_left {
            panels * MR * pairs
        } else {
            MC * per_block
        };
        buffers.a.resize(left_words + LINE, 0);
        buffers
            .b
            .resize(per_block * NC.min(j1 - j0).div_ceil(NR) * NR + LINE, 0);
        buffers.gathered.resize(2 * per_block * NR, 0.0);
        let Buffers { gathered, a, b } = &mut buffers;
        let a_words = aligned_mut(a);
        if whole_left {
            for q0 in (0..pairs).step_by(per_block) {
                let kp = per_block.min(pairs - q0);
                let block = &mut a_words[q0 * panels * MR..(q0 + kp) * panels * MR];
                self.pack_left((i0, i1), (q0, kp), gathered, block);
            }
        }
        let b_words = aligned_mut(b);
        for jc in (j0..j1).step_by(NC) {
            let nc = NC.min(j1 - jc);
            let strips = nc.div_ceil(NR);
            for q0 in (0..pairs).step_by(per_block) {
                let kp = per_block.min(pairs - q0);
                self.pack_right((q0, kp), (jc, nc), gathered, b_words);
                let accumulate = self.accumulate || q0 > 0;
                for r0 in (i0..i1).step_by(MC) {
                    let r1 = (r0 + MC).min(i1);
                    // The first panel of rows r0..r1 in this block of pairs.
                    let first_panel = if whole_left {
                        a_words.as_ptr().add(q0 * panels * MR + (r0 - i0) / MR * kp * MR)
                    } else {
                        let block = &mut a_words[..(r1 - r0).div_ceil(MR) * MR * kp];
                        self.pack_left((r0, r1), (q0, kp), gathered, block);
                        a_words.as_ptr()
                    };
                    for s in 0..strips {
                        let j = jc + s * NR;
                        let tile_masks = masks(NR.min(jc + nc - j));
                        let strip = b_words.as_ptr().add(s * kp * NR);
                        for r in (r0..r1).step_by(MR) {
                            let tile = Tile {
                                rows: MR.min(r1 - r),
                                kp,
                                a: first_panel.add((r - r0) / MR * kp * MR),
                                c: self.c.0.add(r * self.ldc + j),
                                ldc: self.ldc,
                                masks: tile_masks,
                                accumulate,
                            };
                            tile.run(strip);
                        }
                    }
                }
            }
        }
        BUFFERS.with(|b| *b.borrow_mut() = buffers);
    }

    /// Packs pairs `q0..q0 + kp` of rows `r0..r1` of `A` into `words` as panels of `MR` rows:
    /// panel `t` holds pair q's `MR` words at `t·kp·MR + q·MR` (rows past `r1` and the step past
    /// an odd `k` zero).
    ///
    /// # Safety
    /// Rows `r0..r1` of the checked left operand; the kernel's features are available.
    unsafe fn pack_left(
        &self,
        (r0, r1): (usize, usize),
        (q0, kp): (usize, usize),
        gathered: &mut [f32],
        words: &mut [u32],
    ) {
        let (a, k) = (self.a, self.k);
        for (t, r) in (r0..r1).step_by(MR).enumerate() {
            let rows = MR.min(r1 - r);
            let panel_words = &mut words[t * kp * MR..(t + 1) * kp * MR];
            let panel = panel_words.as_mut_ptr();
            if a.cs == 1 {
                // Each row is a line over the steps.
                let first = a.data.add(r * a.rs + 2 * q0);
                pack_lines(first, (a.rs, rows), 2 * kp, k - 2 * q0, (panel, MR));
            } else if a.rs == 1 {
                // Each step's rows lie side by side.
                let first = a.data.add(r + 2 * q0 * a.cs);
                pack_steps(first, (a.cs, rows), (kp, k - 2 * q0), (panel, MR));
            } else {
                let values = &mut gathered[..2 * kp * MR];
                values.fill(0.0);
                // Value (row i, step p) goes to word (p/2)·MR + i, half p % 2.
                for i in 0..rows {
                    let from = a.data.add((r + i) * a.rs + 2 * q0 * a.cs);
                    for p in 0..(2 * kp).min(k - 2 * q0) {
                        values[((p / 2) * MR + i) * 2 + p % 2] = *from.add(p * a.cs);
                    }
                }
                round_pairs(values, panel_words);
            }
        }
    }

    /// Packs pairs `q0..q0 + kp` of columns `jc..jc + nc` of `B` into `words` as strips of `NR`
    /// columns: strip `s` holds pair q's `NR` words at `s·kp·NR + q·NR` (columns past `nc` and the
    /// step past an odd `k` zero).
    ///
    /// # Safety
    /// The block lies inside the checked right operand; the kernel's features are available.
    unsafe fn pack_right(
        &self,
        (q0, kp): (usize, usize),
        (jc, nc): (usize, usize),
        gathered: &mut [f32],
        words: &mut [u32],
    ) {
        let (b, k) = (self.b, self.k);
        let strips = nc.div_ceil(NR);
        for s in 0..strips {
            let (j, width) = (jc + s * NR, NR.min(nc - s * NR));
            let strip = &mut words[s * kp * NR..(s + 1) * kp * NR];
            if b.rs == 1 {
                // Each column is a line over the steps: two groups of 16 columns.
                for g in 0..VECS {
                    let lines = width.saturating_sub(g * 16).min(16);
                    let first = b.data.wrapping_add(2 * q0 + (j + g * 16) * b.cs);
                    let to = strip.as_mut_ptr().add(g * 16);
                    pack_lines(first, (b.cs, lines), 2 * kp, k - 2 * q0, (to, NR));
                }
            } else if b.cs == 1 {
                // Each step's columns lie side by side.
                for g in 0..VECS {
                    let lines = width.saturating_sub(g * 16).min(16);
                    let first = b.data.wrapping_add(2 * q0 * b.rs + j + g * 16);
                    let to = strip.as_mut_ptr().add(g * 16);
                    pack_steps(first, (b.rs, lines), (kp, k - 2 * q0), (to, NR));
                }
            } else {
                let values = &mut gathered[..2 * kp * NR];
                values.fill(0.0);
                // Value (step p, column jj) goes to word (p/2)·NR + jj, half p % 2.
                for jj in 0..width {
                    let from = b.data.add(2 * q0 * b.rs + (j + jj) * b.cs);
                    for p in 0..(2 * kp).min(k - 2 * q0) {
                        values[((p / 2) * NR + jj) * 2 + p % 2] = *from.add(p * b.rs);
                    }
                }
                round_pairs(values, strip);
            }
        }
    }
}

/// Packs `lines ≤ 16` lines contiguous over the steps (line l's step p at `first + l·line_stride
/// + p`, `remaining` steps left in the operand) into the words of `steps / 2` pairs: pair q's
/// word for line l at `to + q·pair_stride + l`, `min(16, pair_stride)` words a pair (lines past
/// `lines` and steps past `remaining` zero).
///
/// # Safety
/// Every step below `min(steps, remaining)` of every line lies inside the checked operand; `to`
/// has room for the words; the kernel's features are available.
unsafe fn pack_lines(
    first: *const f32,
    (line_stride, lines): (usize, usize),
    steps: usize,
    remaining: usize,
    (to, pair_stride): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    for p0 in (0..steps).step_by(32) {
        let valid = 32.min(steps - p0).min(remaining.saturating_sub(p0));
        let pairs = 16.min((steps - p0) / 2);
        x86::pack_lines_16(
            first.wrapping_add(p0),
            (line_stride, lines),
            valid,
            (to.add(p0 / 2 * pair_stride), pair_stride, pairs),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, line_stride, lines, steps, remaining, to, pair_stride);
}

/// Packs `pairs` pairs of steps whose `lines ≤ 16` values lie side by side (step p's line l at
/// `first + p·step_stride + l`, `remaining` steps left in the operand): pair q's word for line l
/// at `to + q·pair_stride + l`, `min(16, pair_stride)` words a pair (lines past `lines` and steps
/// past `remaining` zero).
///
/// # Safety
/// As [`pack_lines`].
unsafe fn pack_steps(
    first: *const f32,
    (step_stride, lines): (usize, usize),
    (pairs, remaining): (usize, usize),
    (to, pair_stride): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    for q in 0..pairs {
        let even = first.wrapping_add(2 * q * step_stride);
        let odd = if 2 * q + 1 < remaining {
            Some(even.wrapping_add(step_stride))
        } else {
            None
        };
        x86::pack_pair(even, odd, lines, to.add(q * pair_stride), 16.min(pair_stride));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, step_stride, lines, pairs, remaining, to, pair_stride);
}

/// Rounds `values` (two per word, in packed order) to bfloat16 pairs: word w holds value `2w` in
/// its low half and `2w + 1` in its high half (`values.len() == 2 · words.len()`).
///
/// # Safety
/// AVX-512F and AVX512_BF16 are available.
unsafe fn round_pairs(values: &[f32], words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    x86::round_pairs(values, words);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, words);
}

/// Lane masks of the `VECS` vectors of a strip `nr` columns wide (`1 ≤ nr ≤ NR`).
fn masks(nr: usize) -> [u16; VECS] {
    std::array::from_fn(|v| {
        let lanes = nr.saturating_sub(v * 16);
        if lanes >= 16 {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        }
    })
}

/// One micro-kernel call: `rows ≤ MR` rows and one strip of `C`, over `kp` pairs.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile {
    rows: usize,
    kp: usize,
    /// The packed panel of `A`: word (i, q) at `q·MR + i`.
    a: *const u32,
    c: *mut f32,
    ldc: usize,
    masks: [u16; VECS],
    accumulate: bool,
}

impl Tile {
    /// # Safety
    /// As [`Product::run`]; `strip` (64-byte aligned) points at `kp` packed rows of `NR` words.
    unsafe fn run(&self, strip: *const u32) {
        #[cfg(target_arch = "x86_64")]
        match self.rows {
            12 => x86::tile::<12>(self, strip),
            11 => x86::tile::<11>(self, strip),
            10 => x86::tile::<10>(self, strip),
            9 => x86::tile::<9>(self, strip),
            8 => x86::tile::<8>(self, strip),
            7 => x86::tile::<7>(self, strip),
            6 => x86::tile::<6>(self, strip),
            5 => x86::tile::<5>(self, strip),
            4 => x86::tile::<4>(self, strip),
            3 => x86::tile::<3>(self, strip),
            2 => x86::tile::<2>(self, strip),
            _ => x86::tile::<1>(self, strip),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = strip;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, MR, NR, VECS};
    use std::arch::x86_64::*;

    /// See [`super::round_pairs`].
    ///
    /// # Safety
    /// AVX-512F and AVX512_BF16 are available; `values.len() == 2 · words.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_pairs(values: &[f32], words: &mut [u32]) {
        for (from, to) in values.chunks(32).zip(words.chunks_mut(16)) {
            // A short last chunk: masked loads and store (`from.len() == 2 · to.len()`).
            let lanes = |first: usize| {
                let count = from.len().saturating_sub(first).min(16);
                if count == 16 {
                    u16::MAX
                } else {
                    (1u16 << count) - 1
                }
            };
            let low = _mm512_maskz_loadu_ps(lanes(0), from.as_ptr());
            let high = _mm512_maskz_loadu_ps(lanes(16), from.as_ptr().wrapping_add(16));
            // Values 0..16 become the low 16 bfloat16 halves, in memory order.
            let rounded = as_words(_mm512_cvtne2ps_pbh(high, low));
            let count = to.len();
            let mask = if count == 16 { u16::MAX } else { (1u16 << count) - 1 };
            _mm512_mask_storeu_epi32(to.as_mut_ptr().cast(), mask, rounded);
        }
    }

    /// The 32 bfloat16 halves of `v` as 16 words (same 64 bytes).
    fn as_words(v: __m512bh) -> __m512i {
        // SAFETY: both are plain 64-byte vectors; every bit pattern is valid for either.
        unsafe { std::mem::transmute::<__m512bh, __m512i>(v) }
    }

    /// 16 words as the 32 bfloat16 halves `vdpbf16ps` multiplies (same 64 bytes).
    fn as_pairs(v: __m512i) -> __m512bh {
        // SAFETY: as in `as_words`.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// Lane mask of the first `count ≤ 16` lanes.
    fn first_lanes(count: usize) -> u16 {
        if count >= 16 {
            u16::MAX
        } else {
            (1u16 << count) - 1
        }
    }

    /// Rounds `high` and `low` to bfloat16 and interleaves them: word i holds `low[i]` in its low
    /// half and `high[i]` in its high half.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn interleave(high: __m512, low: __m512) -> __m512i {
        // cvtne2ps puts `low`'s 16 halves first, then `high`'s; word i takes halves i and 16 + i.
        const ORDER: [u16; 32] = {
            let mut order = [0u16; 32];
            let mut i = 0;
            while i < 16 {
                order[2 * i] = i as u16;
                order[2 * i + 1] = 16 + i as u16;
                i += 1;
            }
            order
        };
        let halves = as_words(_mm512_cvtne2ps_pbh(high, low));
        _mm512_permutexvar_epi16(_mm512_loadu_si512(ORDER.as_ptr().cast()), halves)
    }

    /// One pair of steps of `lines` side-by-side values: `even` and `odd` (none past `k`) rounded
    /// into `width ≤ 16` words at `to`.
    ///
    /// # Safety
    /// `lines` values at `even` (and `odd`) lie inside the operand; `to` has `width` words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_pair(
        even: *const f32,
        odd: Option<*const f32>,
        lines: usize,
        to: *mut u32,
        width: usize,
    ) {
        let mask = first_lanes(lines);
        let low = _mm512_maskz_loadu_ps(mask, even);
        let high = odd.map_or(_mm512_setzero_ps(), |odd| _mm512_maskz_loadu_ps(mask, odd));
        _mm512_mask_storeu_epi32(to.cast(), first_lanes(width), interleave(high, low));
    }

    /// Up to 16 lines of `valid ≤ 32` steps each (line l at `first + l·line_stride`), rounded into
    /// pairs and transposed: pair q's 16 words (one a line, zero past `lines`) at
    /// `to + q·pair_stride`, `min(16, pair_stride)` of them, for q < `pairs`.
    ///
    /// # Safety
    /// `valid` values of each of the `lines` lines lie inside the operand; `to` has room.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_lines_16(
        first: *const f32,
        (line_stride, lines): (usize, usize),
        valid: usize,
        (to, pair_stride, pairs): (*mut u32, usize, usize),
    ) {
        let (low_mask, high_mask) = (first_lanes(valid), first_lanes(valid.saturating_sub(16)));
        let rows: [__m512i; 16] = std::array::from_fn(|l| {
            if l < lines {
                let line = first.wrapping_add(l * line_stride);
                let low = _mm512_maskz_loadu_ps(low_mask, line);
                let high = _mm512_maskz_loadu_ps(high_mask, line.wrapping_add(16));
                // In memory order, word w holds steps 2w and 2w + 1.
                as_words(_mm512_cvtne2ps_pbh(high, low))
            } else {
                _mm512_setzero_si512()
            }
        });
        let columns = transpose_16(rows);
        let store = first_lanes(pair_stride);
        for (q, column) in columns.iter().enumerate().take(pairs) {
            _mm512_mask_storeu_epi32(to.add(q * pair_stride).cast(), store, *column);
        }
    }

    /// The transpose of a 16 × 16 matrix of 32-bit words (`rows[r]` lane c → `out[c]` lane r).
    #[target_feature(enable = "avx512f")]
    fn transpose_16(r: [__m512i; 16]) -> [__m512i; 16] {
        // Within each 128-bit lane L: `a` pairs rows two by two, `b[4g + c]` then holds rows
        // 4g..4g + 4 of column 4L + c.
        let a: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        let b: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            let (x, y) = (a[4 * g + c / 2], a[4 * g + 2 + c / 2]);
            if c % 2 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        // Column 4L + c gathers lane L of b[c], b[4 + c], b[8 + c], b[12 + c].
        let mut out = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            let e01 = _mm512_shuffle_i32x4::<0x44>(b[c], b[4 + c]);
            let e23 = _mm512_shuffle_i32x4::<0xEE>(b[c], b[4 + c]);
            let f01 = _mm512_shuffle_i32x4::<0x44>(b[8 + c], b[12 + c]);
            let f23 = _mm512_shuffle_i32x4::<0xEE>(b[8 + c], b[12 + c]);
            out[c] = _mm512_shuffle_i32x4::<0x88>(e01, f01);
            out[4 + c] = _mm512_shuffle_i32x4::<0xDD>(e01, f01);
            out[8 + c] = _mm512_shuffle_i32x4::<0x88>(e23, f23);
            out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(e23, f23);
        }
        out
    }

    /// The micro-kernel for `R` rows over one packed strip.
    ///
    /// # Safety
    /// AVX-512F and AVX512_BF16 are available; `t.a` holds `t.kp` packed pairs of `MR` words,
    /// `strip` (64-byte aligned) `t.kp` rows of `NR` words, and `t.c` reaches `R` rows of the
    /// masked lanes (`t.ldc` apart), written by no one else meanwhile.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile<const R: usize>(t: &Tile, strip: *const u32) {
        let mut acc = [[_mm512_setzero_ps(); VECS]; R];
        if t.accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, lanes) in row.iter_mut().enumerate() {
                    *lanes = _mm512_maskz_loadu_ps(t.masks[v], t.c.add(i * t.ldc + v * 16));
                }
            }
        }
        for q in 0..t.kp {
            let row = strip.add(q * NR);
            let b: [__m512bh; VECS] = std::array::from_fn(|v| as_pairs(_mm512_load_si512(row.add(v * 16).cast())));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let a = as_pairs(_mm512_set1_epi32(*t.a.add(q * MR + i) as i32));
                for (lanes, &bv) in acc_row.iter_mut().zip(&b) {
                    *lanes = _mm512_dpbf16_ps(*lanes, a, bv);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &lanes) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(i * t.ldc + v * 16), t.masks[v], lanes);
            }
        }
    }
}

#[cfg(test)]
#[path = "gemm_bf16_tests.rs"]
mod tests;
