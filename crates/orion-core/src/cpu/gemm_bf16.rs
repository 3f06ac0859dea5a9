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
//! How: `k` is taken two steps at a time (a "pair"; an odd `k` is padded with a zero), in blocks
//! of at most `KP` pairs split evenly. `A` is packed in panels of `MR` rows and `B` in strips of
//! `NR` columns, one 32-bit word per (row or column, pair) holding the two bfloat16 values
//! ([`super::bf16_pack`]: rounded by `vcvtne2ps2bf16`, nearest even as PyTorch's `bfloat16`
//! casts, subnormals flushed to zero). For each block of `NC` columns and of pairs, a task packs
//! that block of `B`, then for each block of `MC` rows runs the tiles of every panel over every
//! strip: a micro-kernel keeps an `MR × NR` tile of `C` in 24 vector registers (per pair, two
//! strip vectors and one broadcast word per row) and prefetches the next tile's destination.
//! With more than `NC` columns a task packs its rows of `A` whole first (once, not once per block
//! of columns); otherwise each block of `A` right before its tiles. A constant `B` can be packed
//! once, when its plan is built ([`PackedPairs`]: prefill's weights), with an epilogue applied to
//! each finished row part. Work is split across rayon tasks by column ranges when `A` is the
//! smaller operand and by row ranges otherwise, as in [`super::gemm_kernel`].
//!
//! Where the CPU has AMX and `k` is a multiple of 32 (whole chunks of 16 pairs, as in every
//! product of the models here but GPT-2's vocabulary contraction; [`gemm_bf16`] runs any other
//! `k` of 32 or more as its whole chunks there and its last steps, accumulating, on the AVX-512
//! kernel), tiles are 32 × 32 and run on
//! [`super::gemm_amx`] instead: the same strips of `B`, panels of `A` of 32 rows laid out as
//! the kernel's tiles, and blocks of up to `KP_AMX` pairs in whole chunks.
//!
//! Unsafe: the kernel uses raw pointers and AVX-512 intrinsics. [`gemm_bf16`] checks, before any
//! kernel runs, that every element reachable from the dimensions and strides lies inside the
//! slices and that rows of `C` do not overlap; tasks write disjoint parts of `C` (distinct rows,
//! or distinct columns of the same rows). The kernels run only after `is_x86_feature_detected!`
//! confirmed AVX-512F, AVX-512BW and AVX512_BF16.
//!
//! Invariants: each element of `C` is summed over the pairs in increasing order (each pair's two
//! products added to the f32 sum by one `vdpbf16ps`), so results do not depend on the thread
//! count, the split, or whether `B` was packed beforehand (on AMX, 16 pairs per `tdpbf16ps`, in
//! the hardware's order within them). On CPUs without AVX512_BF16 (and off x86-64) [`gemm_bf16`] returns
//! `Ok(false)` and the caller computes the product in f32.
#![allow(unsafe_code)]

use super::bf16_pack::{pack_lines, pack_steps, round_pairs};
use super::gemm_amx::{self, AmxTile, TileConfig};
use super::gemm_kernel::RowEpilogue;
use super::gemm_shared::{lane_masks, split_destination};
use super::matmul::MatRef;
use crate::error::Result;
use crate::interp::exec_error;
use rayon::prelude::*;

/// 16-lane vectors per row of a micro-kernel tile.
const VECS: usize = 2;
/// Output columns of one micro-kernel tile.
const NR: usize = 16 * VECS;
/// Most output rows of one tile (`2·MR` accumulators + 2 strip vectors of the 32 registers).
const MR: usize = 12;
/// Pairs (two contraction steps each) per block: a `KP × NR` strip of words is 16 KB, in L1 with
/// the panel of `A` (6 KB).
const KP: usize = 128;
/// Pairs per block on the AMX kernel: a panel of 32 rows and a strip of 32 columns are 20 KB each,
/// in L1 together; a 288-step contraction (Stories15M's width) is one block, so its destination
/// is written once rather than written, read back and written again.
const KP_AMX: usize = 160;
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

/// Which kernel `--products bf16` runs on this CPU, in words (for `orion doctor` and benchmark
/// notes): AMX tiles (whole chunks of 32 contraction steps) with AVX512_BF16 for the rest,
/// AVX512_BF16 alone, or none (f32 products).
pub fn kernel_description() -> &'static str {
    if !available() {
        "none (no AVX512_BF16: products run in f32)"
    } else if gemm_amx::available() {
        "AMX tiles (tdpbf16ps) for whole chunks of 32 contraction steps, AVX512_BF16 (vdpbf16ps) for the rest"
    } else {
        "AVX512_BF16 (vdpbf16ps)"
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
    if m > 0 && n > 0 && k > 0 && (k - 1) * b.rs + (n - 1) * b.cs >= b.data.len() {
        return Err(shape_error("right operand too small", (m, n, k)));
    }
    if let Some(whole) = amx_whole_steps(k).filter(|_| m > 0 && n > 0) {
        let b_rest = MatRef {
            data: &b.data[whole * b.rs..],
            ..b
        };
        let rights = (Right::Operand(Operand::of(b)), Right::Operand(Operand::of(b_rest)));
        return multiply_split(c, ldc, a, rights, (m, n, whole, k), (accumulate, threads), None);
    }
    multiply(
        c,
        ldc,
        a,
        Right::Operand(Operand::of(b)),
        (m, n, k),
        (accumulate, threads),
        None,
    )
}

/// `C = A · B` (`C += A · B` when `accumulate`) for `A [m, k]` at any strides and a constant `B`
/// packed beforehand ([`PackedPairs`], which gives `k` and `n`), with row-major `C` (`ldc`), on up
/// to `threads` rayon tasks. With an `epilogue`, each task, once its part of `C` is complete,
/// calls it on each of its rows (`epilogue(i, j, values)`, the task's columns `j..` of row `i`).
/// Returns `Ok(false)` without touching `C` when the CPU lacks AVX512_BF16.
///
/// Errors when a slice is too short for the dimensions or rows of `C` overlap.
pub(crate) fn gemm_packed_pairs(
    c: &mut [f32],
    ldc: usize,
    a: MatRef<'_>,
    b: &PackedPairs,
    m: usize,
    (accumulate, threads): (bool, usize),
    epilogue: Option<&RowEpilogue<'_>>,
) -> Result<bool> {
    let right = Right::Packed(aligned(&b.words).as_ptr());
    let Some(rest) = &b.rest else {
        return multiply(c, ldc, a, right, (m, b.n, b.k), (accumulate, threads), epilogue);
    };
    let rights = (right, Right::Packed(aligned(&rest.words).as_ptr()));
    let dims = (m, b.n, b.k, b.k + rest.k);
    multiply_split(c, ldc, a, rights, dims, (accumulate, threads), epilogue)
}

/// The steps of a `k`-step contraction that run on AMX when the rest (fewer than 32) runs on the
/// AVX-512 kernel: `Some` on AMX for a `k` of 32 or more that is not whole chunks.
fn amx_whole_steps(k: usize) -> Option<usize> {
    let chunk_steps = 2 * gemm_amx::CHUNK_PAIRS;
    let whole = k / chunk_steps * chunk_steps;
    (whole > 0 && whole < k && uses_amx(whole)).then_some(whole)
}

/// `C = A · B` over `k` steps as two products: the first `whole` steps with `main` (on AMX), then
/// the rest with `rest`, accumulating, and the epilogue after it.
fn multiply_split(
    c: &mut [f32],
    ldc: usize,
    a: MatRef<'_>,
    (main, rest): (Right, Right),
    (m, n, whole, k): (usize, usize, usize, usize),
    (accumulate, threads): (bool, usize),
    epilogue: Option<&RowEpilogue<'_>>,
) -> Result<bool> {
    if m == 0 || n == 0 {
        return Ok(available());
    }
    if (m - 1) * a.rs + (k - 1) * a.cs >= a.data.len() {
        return Err(shape_error("left operand too small", (m, n, k)));
    }
    if !multiply(c, ldc, a, main, (m, n, whole), (accumulate, threads), None)? {
        return Ok(false);
    }
    let a_rest = MatRef {
        data: &a.data[whole * a.cs..],
        ..a
    };
    multiply(c, ldc, a_rest, rest, (m, n, k - whole), (true, threads), epilogue)
}

/// Checks the destination and the left operand (the right one was checked by the caller, or by
/// packing), then runs the product on up to `threads` tasks.
fn multiply(
    c: &mut [f32],
    ldc: usize,
    a: MatRef<'_>,
    b: Right,
    (m, n, k): (usize, usize, usize),
    (accumulate, threads): (bool, usize),
    epilogue: Option<&RowEpilogue<'_>>,
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
    if (m - 1) * a.rs + (k - 1) * a.cs >= a.data.len() {
        return Err(shape_error("left operand too small", (m, n, k)));
    }
    let amx = uses_amx(k);
    let product = Product {
        a: Operand::of(a),
        amx,
        b,
        n,
        c: CPtr(c.as_mut_ptr()),
        ldc,
        k,
        accumulate,
        epilogue,
    };
    let tasks = if threads > 1 && m * n * k >= PAR_MIN_WORK {
        threads
    } else {
        1
    };
    // SAFETY: the bounds of the whole product were checked above; the parts are disjoint (see
    // `split_destination`), so no two tasks write one element of C.
    let panel_rows = product.panel_rows();
    split_destination((m, n), tasks, (panel_rows, NR), |rows, columns| unsafe {
        product.run(rows, columns)
    });
    Ok(true)
}

/// The error for a product whose operands do not fit its dimensions.
fn shape_error(what: &str, (m, n, k): (usize, usize, usize)) -> crate::error::CoreError {
    exec_error(
        "matmul",
        format!("cpu backend: bf16 gemm {what} for [{m},{k}]·[{k},{n}]"),
    )
}

/// A constant right operand `B [k, n]` rounded and packed once, when its plan is built, into the
/// strips the kernel reads: for each block of [`block_pairs`] pairs from `q0` (the last `kp` pairs
/// or fewer), the strips of all `n` columns follow one another, strip `s` holding its `kp` rows of
/// `NR` words at `q0·strips·NR + s·kp·NR` (columns past `n` zero). On AMX, a `k` of 32 or more
/// that is not whole chunks is packed as its whole chunks (`k` of this packing) and the steps after
/// them (`rest`), as [`gemm_bf16`] splits an unpacked product, so both give the same bits.
pub(crate) struct PackedPairs {
    k: usize,
    n: usize,
    /// The strips, from the first 64-byte boundary (`LINE` spare words).
    words: Vec<u32>,
    /// The last steps of `B`, packed on their own (see above).
    rest: Option<Box<PackedPairs>>,
}

impl PackedPairs {
    /// Packs `B [k, n]` whose element (p, j) is `src[p·rs + j·cs]`, a block of pairs per rayon
    /// task; `None` where the CPU lacks the kernel.
    ///
    /// Errors when `src` is too short for the dimensions, or a dimension is zero.
    pub(crate) fn pack(src: &[f32], (rs, cs): (usize, usize), (k, n): (usize, usize)) -> Result<Option<PackedPairs>> {
        if k == 0 || n == 0 || (k - 1) * rs + (n - 1) * cs >= src.len() {
            return Err(exec_error(
                "plan",
                format!(
                    "cpu backend: packing a [{k}, {n}] right operand from {} values",
                    src.len()
                ),
            ));
        }
        if !available() {
            return Ok(None);
        }
        if let Some(whole) = amx_whole_steps(k) {
            let main = Self::pack(src, (rs, cs), (whole, n))?;
            let rest = Self::pack(&src[whole * rs..], (rs, cs), (k - whole, n))?;
            return Ok(main.zip(rest).map(|(main, rest)| PackedPairs {
                rest: Some(Box::new(rest)),
                ..main
            }));
        }
        let (pairs, per_block, strips) = (k.div_ceil(2), block_pairs(k), n.div_ceil(NR));
        let mut words = vec![0u32; pairs * strips * NR + LINE];
        aligned_mut(&mut words)[..pairs * strips * NR]
            .par_chunks_mut(per_block * strips * NR)
            .enumerate()
            .for_each(|(block, part)| {
                let q0 = block * per_block;
                let kp = per_block.min(pairs - q0);
                let mut gathered = vec![0.0; 2 * kp * NR];
                let b = Operand {
                    data: src.as_ptr(),
                    rs,
                    cs,
                };
                // SAFETY: every element of `B` lies inside `src` (checked above), `part` holds the
                // block's strips, and the CPU has the kernel's features.
                unsafe { pack_right(b, k, (q0, kp), (0, n), &mut gathered, part) };
            });
        Ok(Some(PackedPairs {
            k,
            n,
            words,
            rest: None,
        }))
    }
}

/// True when a `k`-step contraction runs on the AMX kernel: the CPU has it and `k` is even with
/// whole chunks of pairs (so no tile reads past a block).
fn uses_amx(k: usize) -> bool {
    gemm_amx::available() && k.is_multiple_of(2) && gemm_amx::fits(k / 2)
}

/// Pairs per block of a `k`-step contraction: the fewest blocks of at most `KP` pairs (`KP_AMX` on
/// the AMX kernel), of equal size but the last (a 600-step contraction is three blocks of 100
/// pairs, not 128, 128 and 44), rounded up to whole chunks on the AMX kernel.
fn block_pairs(k: usize) -> usize {
    let pairs = k.div_ceil(2);
    if uses_amx(k) {
        let even = pairs.div_ceil(pairs.div_ceil(KP_AMX));
        even.next_multiple_of(gemm_amx::CHUNK_PAIRS)
    } else {
        pairs.div_ceil(pairs.div_ceil(KP)).max(1)
    }
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

/// Where the strips of the right operand come from.
#[derive(Clone, Copy)]
enum Right {
    /// At any strides, rounded and packed block by block during the product.
    Operand(Operand),
    /// Packed beforehand: the words of a [`PackedPairs`] from its first 64-byte boundary.
    Packed(*const u32),
}

/// One checked product, shared by its tasks.
struct Product<'a> {
    a: Operand,
    /// Tiles run on the AMX kernel ([`gemm_amx`]): panels of `A` are 32 rows, each row's words
    /// contiguous over the pairs.
    amx: bool,
    b: Right,
    n: usize,
    c: CPtr,
    ldc: usize,
    k: usize,
    accumulate: bool,
    epilogue: Option<&'a RowEpilogue<'a>>,
}

// SAFETY: the operands point into slices (or a packing) borrowed for the whole call and are only
// read; tasks write pairwise disjoint elements of `C` (see `multiply`), whose slice outlives the
// scope; the epilogue is `Sync`.
unsafe impl Sync for Product<'_> {}

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

/// The part of `words` from its first 64-byte boundary (`words` has `LINE` spare elements, or
/// is empty).
fn aligned(words: &[u32]) -> &[u32] {
    &words[words.as_ptr().align_offset(64).min(LINE).min(words.len())..]
}

/// As [`aligned`], mutable.
fn aligned_mut(words: &mut [u32]) -> &mut [u32] {
    let skip = words.as_ptr().align_offset(64).min(LINE).min(words.len());
    &mut words[skip..]
}

impl Product<'_> {
    /// Pairs in the contraction.
    fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Rows of a packed panel of `A` (the height of a tile).
    fn panel_rows(&self) -> usize {
        if self.amx {
            gemm_amx::TILE
        } else {
            MR
        }
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
        let (pairs, per_block) = (self.pairs(), block_pairs(self.k));
        let mr = self.panel_rows();
        let panels = (i1 - i0).div_ceil(mr);
        // A packing is read where it lies: its columns need no blocking.
        let column_block = match self.b {
            Right::Operand(_) => NC,
            Right::Packed(_) => j1 - j0,
        };
        let whole_left = j1 - j0 > column_block;
        let left_words = if whole_left {
            panels * mr * pairs
        } else {
            MC * per_block
        };
        let config = TileConfig::new();
        if self.amx {
            config.load();
        }
        buffers.a.resize(left_words + LINE, 0);
        if let Right::Operand(_) = self.b {
            buffers
                .b
                .resize(per_block * NC.min(j1 - j0).div_ceil(NR) * NR + LINE, 0);
        }
        buffers.gathered.resize(2 * per_block * NR, 0.0);
        let Buffers { gathered, a, b } = &mut buffers;
        let a_words = aligned_mut(a);
        if whole_left {
            for q0 in (0..pairs).step_by(per_block) {
                let kp = per_block.min(pairs - q0);
                let block = &mut a_words[q0 * panels * mr..(q0 + kp) * panels * mr];
                self.pack_left((i0, i1), (q0, kp), gathered, block);
            }
        }
        let b_words = aligned_mut(b);
        for jc in (j0..j1).step_by(column_block) {
            let nc = column_block.min(j1 - jc);
            let strips = nc.div_ceil(NR);
            for q0 in (0..pairs).step_by(per_block) {
                let kp = per_block.min(pairs - q0);
                let first_strip = match self.b {
                    Right::Operand(b) => {
                        pack_right(b, self.k, (q0, kp), (jc, nc), gathered, b_words);
                        b_words.as_ptr()
                    }
                    Right::Packed(words) => words.add(q0 * self.n.div_ceil(NR) * NR + jc / NR * kp * NR),
                };
                let accumulate = self.accumulate || q0 > 0;
                for r0 in (i0..i1).step_by(MC) {
                    let r1 = (r0 + MC).min(i1);
                    // The first panel of rows r0..r1 in this block of pairs.
                    let first_panel = if whole_left {
                        a_words.as_ptr().add(q0 * panels * mr + (r0 - i0) / mr * kp * mr)
                    } else {
                        let block = &mut a_words[..(r1 - r0).div_ceil(mr) * mr * kp];
                        self.pack_left((r0, r1), (q0, kp), gathered, block);
                        a_words.as_ptr()
                    };
                    for s in 0..strips {
                        let j = jc + s * NR;
                        let tile_masks = lane_masks::<VECS>(NR.min(jc + nc - j));
                        let strip = first_strip.add(s * kp * NR);
                        if self.amx {
                            for r in (r0..r1).step_by(mr) {
                                let tile = AmxTile {
                                    rows: mr.min(r1 - r),
                                    columns: NR.min(jc + nc - j),
                                    kp,
                                    a: first_panel.add((r - r0) / mr * kp * mr),
                                    strip,
                                    c: self.c.0.add(r * self.ldc + j),
                                    ldc: self.ldc,
                                    accumulate,
                                };
                                tile.run();
                            }
                            continue;
                        }
                        for r in (r0..r1).step_by(MR) {
                            // The destination of the tile after this one, fetched meanwhile.
                            let next_c = if r + MR < r1 {
                                self.c.0.wrapping_add((r + MR) * self.ldc + j)
                            } else if s + 1 < strips {
                                self.c.0.wrapping_add(r0 * self.ldc + j + NR)
                            } else {
                                std::ptr::null_mut()
                            };
                            let tile = Tile {
                                rows: MR.min(r1 - r),
                                kp,
                                a: first_panel.add((r - r0) / MR * kp * MR),
                                c: self.c.0.add(r * self.ldc + j),
                                ldc: self.ldc,
                                masks: tile_masks,
                                accumulate,
                                next_c,
                            };
                            tile.run(strip);
                        }
                    }
                }
            }
        }
        if self.amx {
            TileConfig::release();
        }
        BUFFERS.with(|b| *b.borrow_mut() = buffers);
        if let Some(epilogue) = self.epilogue {
            for i in i0..i1 {
                // SAFETY: the row part lies inside the checked destination and belongs to this
                // task alone (see `multiply`); no other reference to it exists meanwhile.
                let values = std::slice::from_raw_parts_mut(self.c.0.add(i * self.ldc + j0), j1 - j0);
                epilogue(i, j0, values);
            }
        }
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
        if self.amx {
            let a = (self.a.data, self.a.rs, self.a.cs);
            gemm_amx::pack_panels(a, (r0, r1), (q0, kp), gathered, words);
            return;
        }
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
}

/// Packs pairs `q0..q0 + kp` of columns `jc..jc + nc` of `B` (a `k`-step contraction) into `words`
/// as strips of `NR` columns: strip `s` holds pair q's `NR` words at `s·kp·NR + q·NR` (columns
/// past `nc` and the step past an odd `k` zero).
///
/// # Safety
/// The block lies inside `B`'s slice; the kernel's features are available.
unsafe fn pack_right(
    b: Operand,
    k: usize,
    (q0, kp): (usize, usize),
    (jc, nc): (usize, usize),
    gathered: &mut [f32],
    words: &mut [u32],
) {
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
    /// When not null: the next tile's destination (`MR` rows `ldc` apart), prefetched during the
    /// first `2·MR` pairs, one cache line a pair (never read here): most of a wide product's
    /// time otherwise goes to fetching destination lines it is about to overwrite.
    next_c: *mut f32,
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

    /// 16 words as the 32 bfloat16 halves `vdpbf16ps` multiplies (same 64 bytes).
    fn as_pairs(v: __m512i) -> __m512bh {
        // SAFETY: as in `as_words`.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
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
            if !t.next_c.is_null() && q < 2 * MR {
                // Prefetching never faults, whatever the address.
                let line = t.next_c.wrapping_add((q / 2) * t.ldc + (q % 2) * 16);
                _mm_prefetch::<_MM_HINT_T0>(line.cast_const().cast());
            }
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
