//! Rounding f32 operands to bfloat16 and packing them, two contraction steps to a 32-bit word,
//! into the panels and strips the GEMM of [`super::gemm_bf16`] reads. Word w of a packing holds
//! step `2q`'s value in its low half and step `2q + 1`'s in its high half (one pair q), which is
//! how `vdpbf16ps` pairs the halves of its operands.
//!
//! Two layouts are vectorised: lines contiguous over the steps (a row-major `A`, a transposed `B`:
//! 32 steps of 16 lines rounded at once, then a 16 × 16 word transpose), and values side by side
//! for each step (a transposed `A`, a row-major `B`: two steps rounded and interleaved). Rounding
//! is `vcvtne2ps2bf16` (nearest even; subnormal inputs flushed to zero), the same instruction for
//! every layout, including the gathered fallback of other strides ([`round_pairs`]).
//!
//! Unsafe: raw pointers and AVX-512 intrinsics; callers hold the bounds (each function's safety
//! section) and have checked the CPU's features (`gemm_bf16::available`). Masked loads and stores
//! never touch the lanes they leave out.
#![allow(unsafe_code)]

/// Packs `lines ≤ 16` lines contiguous over the steps (line l's step p at `first + l·line_stride
/// + p`, `remaining` steps left in the operand) into the words of `steps / 2` pairs: pair q's
/// word for line l at `to + q·pair_stride + l`, `min(16, pair_stride)` words a pair (lines past
/// `lines` and steps past `remaining` zero).
///
/// # Safety
/// Every step below `min(steps, remaining)` of every line lies inside the checked operand; `to`
/// has room for the words; the kernel's features are available.
pub(super) unsafe fn pack_lines(
    first: *const f32,
    (line_stride, lines): (usize, usize),
    steps: usize,
    remaining: usize,
    (to, pair_stride): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    x86::pack_lines(first, (line_stride, lines), steps, remaining, (to, pair_stride));
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
pub(super) unsafe fn pack_steps(
    first: *const f32,
    (step_stride, lines): (usize, usize),
    (pairs, remaining): (usize, usize),
    (to, pair_stride): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    x86::pack_steps(first, (step_stride, lines), (pairs, remaining), (to, pair_stride));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, step_stride, lines, pairs, remaining, to, pair_stride);
}

/// Packs `lines ≤ 16` lines whose values lie side by side for each step (step p's line l at
/// `first + p·step_stride + l`) into line-major words: line l's pair q at `to + l·line_words +
/// q`, for `pairs` pairs (a multiple of 16; every step inside the operand). Lines past `lines` are
/// left alone. This is the layout of the AMX kernel's panels of `A` ([`super::gemm_amx`]).
///
/// # Safety
/// Every step below `2·pairs` of every line lies inside the checked operand; `to` has room for
/// `lines` lines of `line_words ≥ pairs` words; the kernel's features are available.
pub(super) unsafe fn pack_steps_to_lines(
    first: *const f32,
    (step_stride, lines): (usize, usize),
    pairs: usize,
    (to, line_words): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    x86::pack_steps_to_lines(first, (step_stride, lines), pairs, (to, line_words));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, step_stride, lines, pairs, to, line_words);
}

/// Packs `lines` lines contiguous over the steps (line l's step p at `first + l·line_stride + p`)
/// into the AMX kernel's tiles of 16 pairs: line l's pair q at `to + (q / 16)·chunk_stride + l·16
/// + q % 16`, for `pairs` pairs (a multiple of 16; every step inside the operand).
///
/// # Safety
/// Every step below `2·pairs` of every line lies inside the checked operand; `to` has room for
/// the words; the kernel's features are available.
pub(super) unsafe fn pack_lines_to_tiles(
    first: *const f32,
    (line_stride, lines): (usize, usize),
    pairs: usize,
    (to, chunk_stride): (*mut u32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    x86::pack_lines_to_tiles(first, (line_stride, lines), pairs, (to, chunk_stride));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, line_stride, lines, pairs, to, chunk_stride);
}

/// Rounds `values` (two per word, in packed order) to bfloat16 pairs: word w holds value `2w` in
/// its low half and `2w + 1` in its high half (`values.len() == 2 · words.len()`).
///
/// # Safety
/// AVX-512F and AVX512_BF16 are available.
pub(super) unsafe fn round_pairs(values: &[f32], words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    x86::round_pairs(values, words);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, words);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
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

    /// See [`super::pack_lines`]: 32 steps (16 pairs) at a time.
    ///
    /// # Safety
    /// As there.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_lines(
        first: *const f32,
        (line_stride, lines): (usize, usize),
        steps: usize,
        remaining: usize,
        (to, pair_stride): (*mut u32, usize),
    ) {
        for p0 in (0..steps).step_by(32) {
            let valid = 32.min(steps - p0).min(remaining.saturating_sub(p0));
            let pairs = 16.min((steps - p0) / 2);
            let at = to.add(p0 / 2 * pair_stride);
            pack_lines_16(
                first.wrapping_add(p0),
                (line_stride, lines),
                valid,
                (at, pair_stride, pairs),
            );
        }
    }

    /// See [`super::pack_steps`]: a pair at a time.
    ///
    /// # Safety
    /// As there.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_steps(
        first: *const f32,
        (step_stride, lines): (usize, usize),
        (pairs, remaining): (usize, usize),
        (to, pair_stride): (*mut u32, usize),
    ) {
        for q in 0..pairs {
            let even = first.wrapping_add(2 * q * step_stride);
            let odd = (2 * q + 1 < remaining).then(|| even.wrapping_add(step_stride));
            pack_pair(even, odd, lines, to.add(q * pair_stride), 16.min(pair_stride));
        }
    }

    /// See [`super::pack_lines_to_tiles`]: 32 steps of a line at a time.
    ///
    /// # Safety
    /// As there.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_lines_to_tiles(
        first: *const f32,
        (line_stride, lines): (usize, usize),
        pairs: usize,
        (to, chunk_stride): (*mut u32, usize),
    ) {
        for l in 0..lines {
            let line = first.add(l * line_stride);
            for c in 0..pairs / 16 {
                let low = _mm512_loadu_ps(line.add(32 * c));
                let high = _mm512_loadu_ps(line.add(32 * c + 16));
                // In memory order, word w holds steps 2w and 2w + 1.
                let words = as_words(_mm512_cvtne2ps_pbh(high, low));
                _mm512_storeu_si512(to.add(c * chunk_stride + l * 16).cast(), words);
            }
        }
    }

    /// See [`super::pack_steps_to_lines`]: 16 pairs of 16 lines at a time, transposed.
    ///
    /// # Safety
    /// As there.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_steps_to_lines(
        first: *const f32,
        (step_stride, lines): (usize, usize),
        pairs: usize,
        (to, line_words): (*mut u32, usize),
    ) {
        let mask = first_lanes(lines);
        for q0 in (0..pairs).step_by(16) {
            let by_pair: [__m512i; 16] = std::array::from_fn(|q| {
                let even = first.add(2 * (q0 + q) * step_stride);
                let low = _mm512_maskz_loadu_ps(mask, even);
                let high = _mm512_maskz_loadu_ps(mask, even.add(step_stride));
                interleave(high, low)
            });
            for (l, line) in transpose_16(by_pair).iter().enumerate().take(lines) {
                _mm512_storeu_si512(to.add(l * line_words + q0).cast(), *line);
            }
        }
    }

    /// One pair of steps of `lines` side-by-side values: `even` and `odd` (none past `k`) rounded
    /// into `width ≤ 16` words at `to`.
    ///
    /// # Safety
    /// `lines` values at `even` (and `odd`) lie inside the operand; `to` has `width` words.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_pair(even: *const f32, odd: Option<*const f32>, lines: usize, to: *mut u32, width: usize) {
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
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_lines_16(
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
}
