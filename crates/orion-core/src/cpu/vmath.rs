//! Vectorisable transcendental functions of the CPU backend: `exp`, `tanh` and `sigmoid` written
//! branch-free (range reduction, a polynomial, selects), so LLVM turns a loop over a slice into
//! SIMD code; the slice functions are additionally compiled for AVX-512F and for AVX2 and picked at
//! run time on x86-64 (`is_x86_feature_detected!`). They replace per-element calls into the C library
//! (`f32::exp`, `f32::tanh`) in softmax, GELU, SiLU and the cross-entropy (the `transcendental`
//! bench compares the two). [`with_wide_vectors`] runs any closure inside such a multiversioned
//! function, so the loops of other kernels (fused programs, softmax rows, column reductions) that
//! are inlined into it use the widest registers too.
//!
//! Accuracy (checked in the tests against `f64` references over the whole f32 range): `exp` within
//! 2 ulp of the exact value (Cephes' `expf` reduction and polynomial, with the scale 2ⁿ applied in
//! two halves so every finite result is reached); results below `f32::MIN_POSITIVE` flush to 0
//! (an absolute error under 1.2e-38), above `f32::MAX` are `inf`; NaN stays NaN. `tanh` (Cephes'
//! `tanhf`: an odd polynomial below 0.625, `1 − 2/(e^{2|x|} + 1)` above) and `sigmoid`
//! (`1/(1 + e^{−x})`, the interpreter's formula) within 4 ulp, or 1e-7 absolute near zero
//! crossings. No fused multiply-adds are used, so the plain, AVX2 and AVX-512 builds give identical bits.
//!
//! Invariant: the slice functions write `dst[i] = f(src[i])` for every `i < min(len)`, nothing else.
#![allow(unsafe_code)]

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part exact in few bits and the rest (Cephes' C1, C2).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Above: the result overflows to `inf`; below: it is under `f32::MIN_POSITIVE` (flushed to 0).
const EXP_MAX: f32 = 88.722_84;
const EXP_MIN: f32 = -87.336_55;
/// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x (see the module header for accuracy).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let shifted = xc * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_66) * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2ⁿ as two factors 2^(n/2) so n = 128 (x just below EXP_MAX) and n = -126 stay representable.
    // The integer n is read from the bits of `shifted` (1.5·2²³ + n, whose unit in the last place
    // is 1): equal to `n as i32` for every clamped x, and unlike that saturating cast it vectorises
    // (for a NaN x the value is NaN whatever the scale).
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let half = n >> 1;
    let scale = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let value = y * scale(half) * scale(n - half);
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        value
    }
}

/// tanh x (see the module header for accuracy).
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small = x + x
        * z
        * ((((-5.704_988_7e-3 * z + 2.063_908_8e-2) * z - 5.373_971_5e-2) * z + 0.133_314_42) * z - 0.333_332_8);
    let large = (1.0 - 2.0 / (exp(a + a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// 1 / (1 + e^−x).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Which function a slice loop applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Exp,
    Tanh,
    Sigmoid,
}

/// `dst[i] = f(src[i])`.
pub(crate) fn map(f: Func, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above); the function only reads `src`
        // and writes `dst` through safe slice code.
        unsafe { wide::map(f, src, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); the function only reads `src` and
        // writes `dst` through safe slice code.
        unsafe { map_avx2(f, src, dst) };
        return;
    }
    map_plain(f, src, dst);
}

/// Runs `body` inside a function compiled with AVX-512F enabled (or AVX2, whichever the CPU has
/// first; plain x86-64 or the target's baseline otherwise), so loops inlined into it (mark them
/// `#[inline(always)]`) use the widest registers. Plain IEEE arithmetic gives the same bits at any
/// width, so results do not depend on the path taken.
#[inline(always)]
pub(crate) fn with_wide_vectors<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above); `body` is safe code.
        return unsafe { wide::call(body) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); `body` is safe code.
        return unsafe { call_avx2(body) };
    }
    body()
}

/// Calls `body` with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn call_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// `values[i] = e^(values[i] − shift)` in place; returns their sum (as [`sum_plain`]).
pub(crate) fn exp_shifted_sum_in_place(values: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `map`.
        return unsafe { wide::exp_shifted_sum_in_place(values, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: as in `map`.
        return unsafe { exp_shifted_sum_in_place_avx2(values, shift) };
    }
    exp_shifted_sum_in_place_plain(values, shift)
}

/// [`exp_shifted_sum_in_place`] without run-time dispatch: call it inside [`with_wide_vectors`]
/// (the same bits at every width, and the same as [`exp_shifted_sum_plain`]).
#[inline(always)]
pub(crate) fn exp_shifted_sum_in_place_plain(values: &mut [f32], shift: f32) -> f32 {
    for v in values.iter_mut() {
        *v = exp(*v - shift);
    }
    sum_plain(values)
}

/// [`exp_shifted_sum_in_place_plain`] compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_shifted_sum_in_place_avx2(values: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_in_place_plain(values, shift)
}

#[inline(always)]
fn map_plain(f: Func, src: &[f32], dst: &mut [f32]) {
    match f {
        Func::Exp => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = exp(s)),
        Func::Tanh => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = tanh(s)),
        Func::Sigmoid => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = sigmoid(s)),
    }
}

/// `dst[i] = e^(src[i] − shift)`; returns the sum of the results (as [`sum_plain`]): softmax's
/// numerator and denominator in one pass. No run-time dispatch: call it inside
/// [`with_wide_vectors`] (the same bits at every width).
#[inline(always)]
pub(crate) fn exp_shifted_sum_plain(src: &[f32], shift: f32, dst: &mut [f32]) -> f32 {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp(s - shift);
    }
    let n = src.len().min(dst.len());
    sum_plain(&dst[..n])
}

/// The largest element (NaN if any is NaN; −inf for an empty slice), in lanes as [`sum_plain`].
pub(crate) fn max(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above); the body is safe slice code.
        return unsafe { wide::max(values) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); the body is safe slice code.
        return unsafe { max_avx2(values) };
    }
    max_plain(values)
}

/// Branch-free lanes (a compare-and-select per element and a separate NaN flag), so LLVM
/// vectorises the loop.
///
/// [`max`] without the run-time dispatch (for loops already inside [`with_wide_vectors`]).
#[inline(always)]
pub(crate) fn max_plain(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let v = chunk[lane];
            nan[lane] |= v.is_nan();
            acc[lane] = if v > acc[lane] { v } else { acc[lane] };
        }
    }
    if nan.iter().any(|&n| n) {
        return f32::NAN;
    }
    tail.iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v))
}

/// [`max_plain`] compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_avx2(values: &[f32]) -> f32 {
    max_plain(values)
}

/// Independent accumulators of [`sum_plain`] and [`max`].
pub(crate) const LANES: usize = 16;

fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

/// Sum with `LANES` accumulators (lane `i` adds elements `i, i + LANES, …`), then the lanes
/// pairwise: a fixed order, so the result does not depend on the build.
#[inline(always)]
fn sum_plain(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for lane in 0..LANES {
            acc[lane] += chunk[lane];
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

/// [`map_plain`] compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_avx2(f: Func, src: &[f32], dst: &mut [f32]) {
    map_plain(f, src, dst);
}

/// The slice loops compiled with AVX-512F enabled (the same code as the plain and AVX2 builds, so
/// the same lanes and bits; LLVM uses 16-wide registers).
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::Func;

    /// Calls `body` with AVX-512F enabled.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn call<R>(body: impl FnOnce() -> R) -> R {
        body()
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map(f: Func, src: &[f32], dst: &mut [f32]) {
        super::map_plain(f, src, dst)
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted_sum_in_place(values: &mut [f32], shift: f32) -> f32 {
        super::exp_shifted_sum_in_place_plain(values, shift)
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max(values: &[f32]) -> f32 {
        super::max_plain(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `a` and the exact `e` (rounded to f32).
    fn ulps(a: f32, e: f64) -> f64 {
        let ef = e as f32;
        if a == ef {
            return 0.0;
        }
        let ulp = (f32::from_bits(ef.abs().to_bits() + 1) - ef.abs()) as f64;
        (a as f64 - e).abs() / ulp
    }

    /// Every 331st f32 bit pattern in `[lo, hi]` (both signs), plus the ends.
    fn sweep(lo: f32, hi: f32) -> Vec<f32> {
        let mut xs = vec![lo, hi, -lo, -hi];
        let (a, b) = (lo.to_bits(), hi.to_bits());
        for bits in (a..=b).step_by(331) {
            xs.push(f32::from_bits(bits));
            xs.push(-f32::from_bits(bits));
        }
        xs
    }

    #[test]
    fn exp_is_within_two_ulp_and_handles_the_ends() {
        for x in sweep(1e-30, EXP_MAX) {
            let exact = (x as f64).exp();
            let got = exp(x);
            if exact < f32::MIN_POSITIVE as f64 {
                assert!(got == 0.0 || got == f32::MIN_POSITIVE, "exp({x}) = {got}");
            } else {
                assert!(ulps(got, exact) <= 2.0, "exp({x}) = {got}, exact {exact}");
            }
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_and_sigmoid_are_within_four_ulp_or_1e7() {
        for x in sweep(1e-30, 100.0) {
            let (t, te) = (tanh(x), (x as f64).tanh());
            assert!(
                ulps(t, te) <= 4.0 || (t as f64 - te).abs() < 1e-7,
                "tanh({x}) = {t}, exact {te}"
            );
            let (s, se) = (sigmoid(x), 1.0 / (1.0 + (-(x as f64)).exp()));
            assert!(
                ulps(s, se) <= 4.0 || (s as f64 - se).abs() < 1e-7,
                "sigmoid({x}) = {s}, exact {se}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e4), 1.0);
        assert_eq!(tanh(-1e4), -1.0);
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!((sigmoid(-200.0), sigmoid(200.0)), (0.0, 1.0));
    }

    #[test]
    fn slice_loops_match_the_scalar_functions_bit_for_bit_on_odd_lengths() {
        let src: Vec<f32> = (0..1037).map(|i| (i as f32 - 500.0) * 0.173).collect();
        for f in [Func::Exp, Func::Tanh, Func::Sigmoid] {
            let scalar = |x: f32| match f {
                Func::Exp => exp(x),
                Func::Tanh => tanh(x),
                Func::Sigmoid => sigmoid(x),
            };
            let mut dst = vec![f32::NAN; src.len()];
            map(f, &src, &mut dst);
            for (i, (&d, &s)) in dst.iter().zip(&src).enumerate() {
                assert_eq!(d.to_bits(), scalar(s).to_bits(), "{f:?} at {i}");
            }
        }
        let shifted: Vec<f32> = src.iter().map(|&s| s * 0.1).collect();
        let mut dst = vec![0.0; src.len()];
        let total = with_wide_vectors(|| exp_shifted_sum_plain(&shifted, 3.0, &mut dst));
        let mut expected = 0.0f64;
        for (&d, &s) in dst.iter().zip(&shifted) {
            assert_eq!(d.to_bits(), exp(s - 3.0).to_bits());
            expected += d as f64;
        }
        assert!(
            (total as f64 - expected).abs() <= 1e-6 * expected,
            "{total} vs {expected}"
        );
        assert_eq!(total.to_bits(), sum_plain(&dst).to_bits());
        let mut in_place = shifted.clone();
        assert_eq!(exp_shifted_sum_in_place(&mut in_place, 3.0).to_bits(), total.to_bits());
        assert_eq!(in_place, dst);
    }

    #[test]
    fn lane_sums_and_maxima_match_plain_loops_on_every_length() {
        for n in 0..70usize {
            let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0).collect();
            let exact: f64 = v.iter().map(|&x| x as f64).sum();
            assert!((sum_plain(&v) as f64 - exact).abs() < 1e-4, "sum of {n}");
            let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&v), m, "max of {n}");
            if n > 0 {
                let mut with_nan = v.clone();
                with_nan[n / 2] = f32::NAN;
                assert!(max(&with_nan).is_nan() && sum_plain(&with_nan).is_nan());
            }
        }
    }
}
