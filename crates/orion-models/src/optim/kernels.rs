//! The optimiser's per-element passes over flat f32 buffers, written so that the compiler
//! vectorises them (zipped iterators, no indexing, no early exit) and split over up to
//! [`THREADS`] scoped threads for large tensors.
//!
//! Invariants: every pass computes each element with exactly the operations, in exactly the order,
//! of the scalar definition it replaces (IEEE `+ − × ÷ √` are correctly rounded in vector lanes
//! too), so results are bit-identical whatever the split; sums are combined in a fixed order
//! (per-chunk partial sums, chunks in order), so they do not depend on thread timing.

/// Threads a large pass is split over (the machines this runs on have few cores; the passes are
/// bound by memory bandwidth, which two threads saturate).
pub(crate) const THREADS: usize = 2;
/// Elements below which a pass runs on the calling thread (a thread costs tens of microseconds).
const PARALLEL_MIN: usize = 1 << 17;
/// Elements per partial sum of [`sum_of_squares`]: the order of the f64 additions is fixed per
/// chunk, independent of the thread split.
const SUM_CHUNK: usize = 1 << 12;

/// The AdamW coefficients of one step (see `adamw.rs` for the update they define).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamWCoefficients {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `√(1 − β2^t)`.
    pub bias2_sqrt: f32,
    /// `1 − lr · weight_decay`, or 1 for a parameter that does not decay.
    pub decay: f32,
    /// Factor every gradient element is multiplied by first (global-norm clipping; 1 leaves it
    /// exactly as it is): `g · s` is the product a separate scaling pass would have stored.
    pub grad_scale: f32,
}

/// One AdamW update of `p` in place from gradient `g · c.grad_scale`, moments `m` and `v` (all of
/// one length).
pub(crate) fn adamw_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamWCoefficients) {
    debug_assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
    if p.len() < PARALLEL_MIN {
        adamw_serial(p, g, m, v, c);
        return;
    }
    let chunk = p.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let parts = p
            .chunks_mut(chunk)
            .zip(g.chunks(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk));
        for (((p, g), m), v) in parts {
            scope.spawn(move || adamw_serial(p, g, m, v, c));
        }
    });
}

fn adamw_serial(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamWCoefficients) {
    let (one_minus_beta1, one_minus_beta2) = (1.0 - c.beta1, 1.0 - c.beta2);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * c.grad_scale;
        *m = c.beta1 * *m + one_minus_beta1 * g;
        *v = c.beta2 * *v + one_minus_beta2 * g * g;
        let denom = v.sqrt() / c.bias2_sqrt + c.eps;
        *p = *p * c.decay - c.step_size * *m / denom;
    }
}

/// `Σ x²` in f64: partial sums over fixed chunks of [`SUM_CHUNK`] elements (each accumulated in
/// eight interleaved lanes, then the lanes in order), the partial sums added in chunk order.
pub(crate) fn sum_of_squares(values: &[f32]) -> f64 {
    if values.len() < PARALLEL_MIN {
        return values.chunks(SUM_CHUNK).map(chunk_sum_of_squares).sum();
    }
    let chunks_per_thread = values.len().div_ceil(SUM_CHUNK).div_ceil(THREADS);
    let partials: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .chunks(chunks_per_thread * SUM_CHUNK)
            .map(|part| scope.spawn(move || part.chunks(SUM_CHUNK).map(chunk_sum_of_squares).collect::<Vec<f64>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    partials.iter().flatten().sum()
}

fn chunk_sum_of_squares(chunk: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut groups = chunk.chunks_exact(8);
    for group in &mut groups {
        for (lane, &x) in lanes.iter_mut().zip(group) {
            let x = x as f64;
            *lane += x * x;
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(groups.remainder()) {
        let x = x as f64;
        *lane += x * x;
    }
    lanes.iter().sum()
}

/// `x ← x · scale` for every element.
pub(crate) fn scale_in_place(values: &mut [f32], scale: f32) {
    if values.len() < PARALLEL_MIN {
        values.iter_mut().for_each(|x| *x *= scale);
        return;
    }
    let chunk = values.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        for part in values.chunks_mut(chunk) {
            scope.spawn(move || part.iter_mut().for_each(|x| *x *= scale));
        }
    });
}

/// Whether every element is finite (neither infinite nor NaN): no magnitude bit pattern reaches the
/// exponent-all-ones pattern. Compared as signed integers (the masked patterns are non-negative)
/// with no early exit inside a chunk, so the loop vectorises even on baseline x86-64; large
/// slices are split over threads.
pub(crate) fn all_finite(values: &[f32]) -> bool {
    if values.len() < PARALLEL_MIN {
        return all_finite_serial(values);
    }
    let chunk = values.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .chunks(chunk)
            .map(|part| scope.spawn(move || all_finite_serial(part)))
            .collect();
        let results: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        results.into_iter().all(|ok| ok)
    })
}

fn all_finite_serial(values: &[f32]) -> bool {
    const LARGEST_FINITE: i32 = 0x7f7f_ffff;
    values.chunks(SUM_CHUNK).all(|chunk| {
        let non_finite = chunk.iter().fold(0u32, |acc, x| {
            acc | u32::from((x.to_bits() & 0x7fff_ffff) as i32 > LARGEST_FINITE)
        });
        non_finite == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * scale).collect()
    }

    #[test]
    fn adamw_update_is_bit_identical_to_the_scalar_definition_in_both_splits() {
        for (len, grad_scale) in [(13, 1.0), (PARALLEL_MIN + 5, 1.0), (29, 0.37), (PARALLEL_MIN + 3, 0.37)] {
            let (p0, g) = (ramp(len, 1e-3), ramp(len, 2e-4));
            let (m0, v0) = (
                ramp(len, 1e-5),
                ramp(len, 1e-6).iter().map(|x| x.abs()).collect::<Vec<_>>(),
            );
            let c = AdamWCoefficients {
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                step_size: 0.01,
                bias2_sqrt: 0.3,
                decay: 0.999,
                grad_scale,
            };
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            adamw_update(&mut p, &g, &mut m, &mut v, c);
            // The definition: the gradients scaled by a separate pass (as clipping did), then AdamW.
            let g: Vec<f32> = g.iter().map(|x| x * grad_scale).collect();
            for i in 0..len {
                let mi = c.beta1 * m0[i] + (1.0 - c.beta1) * g[i];
                let vi = c.beta2 * v0[i] + (1.0 - c.beta2) * g[i] * g[i];
                let pi = p0[i] * c.decay - c.step_size * mi / (vi.sqrt() / c.bias2_sqrt + c.eps);
                assert_eq!(
                    (m[i].to_bits(), v[i].to_bits(), p[i].to_bits()),
                    (mi.to_bits(), vi.to_bits(), pi.to_bits())
                );
            }
        }
    }

    #[test]
    fn sum_of_squares_matches_an_f64_loop() {
        for len in [0, 5, 4099, PARALLEL_MIN * 2 + 3] {
            let x = ramp(len, 1e-2);
            let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let got = sum_of_squares(&x);
            assert!((got - want).abs() <= 1e-12 * want.max(1.0), "{len}: {got} vs {want}");
        }
    }

    #[test]
    fn scale_in_place_scales_every_element() {
        for len in [3, PARALLEL_MIN + 1] {
            let mut x = ramp(len, 1.0);
            let want: Vec<f32> = x.iter().map(|v| v * 0.25).collect();
            scale_in_place(&mut x, 0.25);
            assert_eq!(x, want);
        }
    }

    #[test]
    fn all_finite_finds_any_inf_or_nan_anywhere() {
        let mut big = ramp(PARALLEL_MIN * 2 + 3, 1.0);
        assert!(all_finite(&big));
        for at in [0, PARALLEL_MIN + 1, PARALLEL_MIN * 2 + 2] {
            big[at] = f32::INFINITY;
            assert!(!all_finite(&big), "inf at {at}");
            big[at] = 1.0;
        }
        let mut x = ramp(10_000, 1.0);
        assert!(all_finite(&x));
        x[9_999] = f32::NAN;
        assert!(!all_finite(&x));
        x[9_999] = f32::NEG_INFINITY;
        assert!(!all_finite(&x));
        x[9_999] = f32::MAX;
        assert!(all_finite(&x));
    }
}
