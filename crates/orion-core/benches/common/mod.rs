//! What the criterion benches of `orion-core` share (each includes it as `mod common;`).

/// `n` deterministic values in [-1, 1), a linear congruential sequence started from `seed`.
pub fn values(n: usize, seed: usize) -> Vec<f32> {
    let mut state = (seed as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}
