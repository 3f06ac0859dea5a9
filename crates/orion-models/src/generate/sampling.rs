//! Choosing the next token from logits: greedy, temperature, top-k and top-p, with a seeded RNG.
//!
//! Invariants: the same options, seed and logits give the same tokens on every platform (ChaCha8
//! stream, f64 arithmetic, a total order on candidates: higher logit first, lower id on ties).
//! Temperature 0 is greedy (the first maximum); top-k 1 picks the same token as greedy; NaN logits
//! are an error, never a random pick.

use crate::error::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 = greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = no limit).
    pub top_p: f32,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions::greedy()
    }
}

impl SamplingOptions {
    /// Always the most likely token.
    pub fn greedy() -> SamplingOptions {
        SamplingOptions {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// Checks the ranges: temperature finite and ≥ 0, top-p in (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::Usage(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Usage(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A sampler: options plus the random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    options: SamplingOptions,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(options: SamplingOptions, seed: u64) -> Result<Sampler> {
        options.validate()?;
        Ok(Sampler {
            options,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.iter().any(|x| x.is_nan()) {
            return Err(ModelError::Usage("logits contain NaN".into()));
        }
        if self.options.temperature == 0.0 {
            return argmax(logits);
        }
        let candidates = self.candidates(logits)?;
        let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
        let mut r = self.rng.gen::<f64>() * total;
        for &(id, p) in &candidates {
            if r < p {
                return token_id(id);
            }
            r -= p;
        }
        // Rounding left `r` just above the last cumulative sum: the last candidate it is.
        let last = candidates.last().map(|&(id, _)| id).unwrap_or(0);
        token_id(last)
    }

    /// (token, unnormalised probability) after temperature, top-k and top-p, most likely first.
    fn candidates(&self, logits: &[f32]) -> Result<Vec<(usize, f64)>> {
        if logits.is_empty() {
            return Err(ModelError::Usage("cannot sample from empty logits".into()));
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.options.top_k > 0 {
            order.truncate(self.options.top_k);
        }
        let inv_t = 1.0 / f64::from(self.options.temperature);
        let max = f64::from(logits[order[0]]);
        let mut probs: Vec<(usize, f64)> = order
            .into_iter()
            .map(|i| (i, ((f64::from(logits[i]) - max) * inv_t).exp()))
            .collect();
        if self.options.top_p < 1.0 {
            let total: f64 = probs.iter().map(|&(_, p)| p).sum();
            let target = f64::from(self.options.top_p) * total;
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (n, &(_, p)) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= target {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        Ok(probs)
    }
}

/// Index of the first maximum of `logits`.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            return Err(ModelError::Usage("logits contain NaN".into()));
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    let (i, _) = best.ok_or_else(|| ModelError::Usage("cannot sample from empty logits".into()))?;
    token_id(i)
}

fn token_id(i: usize) -> Result<u32> {
    u32::try_from(i).map_err(|_| ModelError::Usage(format!("token index {i} does not fit u32")))
}
