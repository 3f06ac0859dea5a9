//! The AMX micro-kernel of the bfloat16 GEMM ([`super::gemm_bf16`]): a tile of up to 32 × 32
//! elements of `C` computed by `tdpbf16ps` on Intel's Advanced Matrix Extensions, for CPUs that
//! have them (Sapphire Rapids and later Xeons).
//!
//! Why: one `tdpbf16ps` multiplies a 16 × 32 bfloat16 tile by a 32 × 16 one into 16 × 16 f32
//! sums — 8192 multiply-adds, where `vdpbf16ps` does 32. Measured on the 2-vCPU Xeon of
//! 2026-11-29 (`tools/peers/fma_peak.c`, both threads): 7.66 TFLOP/s of `tdpbf16ps` on
//! register-resident tiles, 245 GFLOP/s of `vdpbf16ps`, 492 of f32 multiply-adds; the training
//! step's layer products ran at 1.4–1.5 TFLOP/s on this kernel (`docs/BENCHMARKS.md`).
//!
//! How: eight tile registers, all configured as 16 rows of 64 bytes — four accumulators (the
//! tile's 2 × 2 blocks of 16 × 16 f32), two of `A` (16 rows × 16 pairs) and two of `B` (16 pairs ×
//! 16 columns). `B` is read straight from the strips [`super::gemm_bf16`] packs for its AVX-512
//! kernel (pair q's 32 words at `q·32`: rows of 128 bytes, the two halves two tiles); `A` needs
//! its own panels, each chunk of 16 pairs of its 32 rows two contiguous 1 KB tiles ([`pack_panels`];
//! rows 64 bytes apart ran the inner loop 3.2× faster than rows a block apart).
//! Whole tiles of `C` are loaded and stored in place; tiles at a right or bottom edge go through
//! a 32 × 32 buffer. A contraction whose pairs are not a multiple of 16 is not run here whole
//! (the caller checks [`fits`]; `gemm_bf16` splits off the last steps for the AVX-512 kernel).
//!
//! Linux hands out the tile registers only to processes that ask (`arch_prctl` with
//! `ARCH_REQ_XCOMP_PERM`); [`available`] asks once. Setting `ORION_AMX=0` in the environment
//! keeps the AVX-512 kernel (to compare the two on one machine).
//!
//! Unsafe: inline assembly (`ldtilecfg`, `tileloadd`, `tdpbf16ps`, `tilestored`, `tilerelease`)
//! and raw pointers (the kernel, and the panel packing's reads of `A`). The tile registers are touched only between [`TileConfig::load`] and
//! [`TileConfig::release`] on one thread; nothing Rust generates uses them. Each load and store
//! reads or writes 16 rows of 64 bytes at the given stride, which the callers' bounds (each
//! function's safety section) cover.
//!
//! Invariants: each element's sum runs over the pairs in increasing order, 16 pairs per
//! `tdpbf16ps`, so results do not depend on the thread count or the split of the product (they
//! may differ from the AVX-512 kernel's in the last bits: the instruction's internal order is the
//! hardware's).
#![allow(unsafe_code)]

use super::bf16_pack::{pack_lines_to_tiles, pack_steps_to_lines, round_pairs};

/// Rows (and columns) of `C` in one tile call.
pub(super) const TILE: usize = 32;
/// Pairs one `tdpbf16ps` contracts.
pub(super) const CHUNK_PAIRS: usize = 16;

/// True when this CPU has AMX-BF16, the kernel permits it (asked once, here), and `ORION_AMX` is
/// not `0`.
pub(super) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var("ORION_AMX").map_or(true, |v| v != "0") && platform::request())
}

/// True when a contraction of `pairs` pairs suits the kernel (whole chunks of 16 pairs; blocks
/// of pairs are then multiples of 16 too, see `gemm_bf16::block_pairs`).
pub(super) fn fits(pairs: usize) -> bool {
    pairs.is_multiple_of(CHUNK_PAIRS)
}

/// The palette-1 configuration of the eight tile registers: 16 rows of 64 bytes each.
#[repr(C, align(64))]
pub(super) struct TileConfig([u8; 64]);

impl TileConfig {
    pub(super) fn new() -> TileConfig {
        let mut bytes = [0u8; 64];
        bytes[0] = 1; // palette 1
        for tile in 0..8 {
            bytes[16 + 2 * tile] = 64; // bytes per row (little-endian u16)
            bytes[48 + tile] = 16; // rows
        }
        TileConfig(bytes)
    }

    /// Configures this thread's tile registers (zeroing them).
    ///
    /// # Safety
    /// [`available`] returned true.
    pub(super) unsafe fn load(&self) {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly));
    }

    /// Returns this thread's tile registers to their initial state.
    ///
    /// # Safety
    /// [`TileConfig::load`] ran on this thread.
    pub(super) unsafe fn release() {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// One tile call: `rows ≤ 32` rows and `columns ≤ 32` columns of `C` over `kp` pairs (a multiple
/// of 16).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct AmxTile {
    pub rows: usize,
    pub columns: usize,
    pub kp: usize,
    /// The packed panel of `A`: for each chunk of 16 pairs, the 32 rows' 16 words one row after
    /// another (row i's pair q at `(q / 16)·512 + i·16 + q % 16`; rows past `rows` zero).
    pub a: *const u32,
    /// The packed strip of `B`: `kp` rows of 32 words, 64-byte aligned (columns past `columns`
    /// zero).
    pub strip: *const u32,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
}

/// A 32 × 32 f32 buffer for edge tiles.
#[repr(C, align(64))]
struct EdgeBuffer([f32; TILE * TILE]);

impl AmxTile {
    /// Computes the tile.
    ///
    /// # Safety
    /// The tile configuration is loaded on this thread; `a` and `strip` hold what the fields
    /// say; `c` reaches `rows` rows of `columns` values (`ldc` apart), written by no one else
    /// meanwhile.
    pub(super) unsafe fn run(&self) {
        if self.rows == TILE && self.columns == TILE {
            self.run_on(self.c, self.ldc, self.accumulate);
            return;
        }
        let mut edge = EdgeBuffer([0.0; TILE * TILE]);
        if self.accumulate {
            for i in 0..self.rows {
                let from = std::slice::from_raw_parts(self.c.add(i * self.ldc), self.columns);
                edge.0[i * TILE..i * TILE + self.columns].copy_from_slice(from);
            }
        }
        self.run_on(edge.0.as_mut_ptr(), TILE, self.accumulate);
        for i in 0..self.rows {
            let to = std::slice::from_raw_parts_mut(self.c.add(i * self.ldc), self.columns);
            to.copy_from_slice(&edge.0[i * TILE..i * TILE + self.columns]);
        }
    }

    /// The tile's products into the 32 × 32 f32 values at `c` (`ldc` apart), loaded first when
    /// `accumulate`.
    ///
    /// # Safety
    /// As [`AmxTile::run`], with `c` reaching 32 rows of 32 values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_on(&self, c: *mut f32, ldc: usize, accumulate: bool) {
        use std::arch::asm;
        let c_stride = ldc * 4;
        let (c01, c10) = (c.add(16), c.add(16 * ldc));
        let c11 = c10.add(16);
        if accumulate {
            asm!(
                "tileloadd tmm0, [{c00} + {s}*1]",
                "tileloadd tmm1, [{c01} + {s}*1]",
                "tileloadd tmm2, [{c10} + {s}*1]",
                "tileloadd tmm3, [{c11} + {s}*1]",
                c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                s = in(reg) c_stride,
                options(nostack, readonly),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        // Rows of a tile of `A` are 64 bytes apart (a contiguous 1 KB block), those of `B` 128.
        let (a_stride, b_stride) = (CHUNK_PAIRS * 4, TILE * 4);
        for q in (0..self.kp).step_by(CHUNK_PAIRS) {
            let (a, b) = (self.a.add(q * TILE), self.strip.add(q * TILE));
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a, a1 = in(reg) a.add(16 * CHUNK_PAIRS), sa = in(reg) a_stride,
                b0 = in(reg) b, b1 = in(reg) b.add(16), sb = in(reg) b_stride,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c00} + {s}*1], tmm0",
            "tilestored [{c01} + {s}*1], tmm1",
            "tilestored [{c10} + {s}*1], tmm2",
            "tilestored [{c11} + {s}*1], tmm3",
            c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
            s = in(reg) c_stride,
            options(nostack),
        );
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_on(&self, _c: *mut f32, _ldc: usize, _accumulate: bool) {}
}

/// Packs pairs `q0..q0 + kp` of rows `r0..r1` of `A` (element (r, p) at `data + r·rs + p·cs`) into
/// this kernel's panels of 32 rows, each a run of chunks of 16 pairs, each chunk the 32 rows' 16
/// words one row after another (two 1 KB tiles): row i's pair q at `t·32·kp + (q / 16)·512 + i·16
/// + q % 16` in panel `t` (rows past `r1` zero). `kp` is a multiple of 16 and every step exists.
///
/// # Safety
/// Rows `r0..r1` and steps `2·q0..2·(q0 + kp)` lie inside the checked operand; `words` holds
/// the panels; AVX512_BF16 is available.
pub(super) unsafe fn pack_panels(
    (data, rs, cs): (*const f32, usize, usize),
    (r0, r1): (usize, usize),
    (q0, kp): (usize, usize),
    gathered: &mut [f32],
    words: &mut [u32],
) {
    let (tile, chunk) = (TILE, CHUNK_PAIRS);
    let chunk_words = tile * chunk;
    for (t, r) in (r0..r1).step_by(tile).enumerate() {
        let rows = tile.min(r1 - r);
        let panel = &mut words[t * kp * tile..(t + 1) * kp * tile];
        for block in panel.chunks_mut(chunk_words) {
            block[rows * chunk..].fill(0);
        }
        if rs == 1 && cs != 1 {
            continue;
        }
        if cs == 1 {
            // Each row is a line over the steps.
            let first = data.add(r * rs + 2 * q0);
            pack_lines_to_tiles(first, (rs, rows), kp, (panel.as_mut_ptr(), chunk_words));
            continue;
        }
        for i in 0..rows {
            let values = &mut gathered[..2 * kp];
            let from = data.add((r + i) * rs + 2 * q0 * cs);
            for (p, value) in values.iter_mut().enumerate() {
                *value = *from.add(p * cs);
            }
            for (c, steps) in values.chunks(2 * chunk).enumerate() {
                let at = c * chunk_words + i * chunk;
                round_pairs(steps, &mut panel[at..at + chunk]);
            }
        }
    }
    if rs == 1 && cs != 1 {
        // Each step's rows lie side by side: one chunk of pairs across all the rows at a time,
        // 16 rows by 16, so the reads of one step follow one another in memory.
        for c0 in (0..kp).step_by(chunk) {
            for (t, r) in (r0..r1).step_by(tile).enumerate() {
                let rows = tile.min(r1 - r);
                for g in (0..rows).step_by(16) {
                    let first = data.add(r + g + 2 * (q0 + c0) * cs);
                    let to = words.as_mut_ptr().add(t * kp * tile + c0 * tile + g * chunk);
                    pack_steps_to_lines(first, (cs, 16.min(rows - g)), chunk, (to, chunk));
                }
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod platform {
    /// `arch_prctl` code asking for an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    /// The state component of the tile registers' data.
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;

    /// True when CPUID reports AMX-TILE and AMX-BF16 and Linux grants this process the tile
    /// data state.
    pub(super) fn request() -> bool {
        if std::arch::x86_64::__cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        if !(amx_bf16 && amx_tile) {
            return false;
        }
        // SAFETY: the system call takes two integers and changes only this process's
        // permission; it fails cleanly on kernels without it.
        let granted = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
        granted == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
mod platform {
    /// Elsewhere the kernel is not used.
    pub(super) fn request() -> bool {
        false
    }
}
