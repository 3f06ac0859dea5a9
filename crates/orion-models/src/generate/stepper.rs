//! The generation loop shared by every way of computing next-token logits: prefill the prompt, sample,
//! feed each new token back, stop at `max_new_tokens`, a stop token, a full context or the callback.
//!
//! A [`TokenStepper`] owns its cache and programs; [`run_generation`] owns sampling, stopping and
//! timing, so every stepper (the whole-model CPU programs, the per-layer device programs) stops and
//! samples identically.

use super::{GenerateOptions, Generation, Sampler, StopReason, Timing};
use crate::error::{ModelError, Result};
use std::time::Instant;

/// Something that turns tokens into next-token logits, keeping its own KV cache.
pub trait TokenStepper {
    /// Positions the cache holds (prompt plus generated tokens).
    fn capacity(&self) -> usize;
    /// Positions filled so far.
    fn len(&self) -> usize;
    /// True before the first prefill.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Empties the cache and runs `prompt` (non-empty, within capacity); returns the last row's logits.
    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>>;
    /// Feeds `token` at position `len()`; returns its logits.
    fn step(&mut self, token: u32) -> Result<Vec<f32>>;
}

/// Generates after `prompt` with `stepper`, calling `on_token` with each new token as soon as it is
/// chosen; `on_token` returns `false` to stop early.
pub fn run_generation(
    stepper: &mut dyn TokenStepper,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Usage("the prompt must have at least one token".into()));
    }
    if prompt.len() > stepper.capacity() {
        return Err(ModelError::Usage(format!(
            "the prompt has {} tokens, more than the context of {}",
            prompt.len(),
            stepper.capacity()
        )));
    }
    let mut sampler = Sampler::new(options.sampling.clone(), options.seed)?;
    let mut timing = Timing {
        prompt_tokens: prompt.len(),
        ..Timing::default()
    };
    let mut out = Vec::new();
    if options.max_new_tokens == 0 {
        return Ok(Generation {
            tokens: out,
            stop: StopReason::MaxTokens,
            timing,
        });
    }
    let start = Instant::now();
    let logits = stepper.prefill(prompt)?;
    let mut next = sampler.sample(&logits)?;
    timing.prefill_ms = start.elapsed().as_secs_f64() * 1e3;

    let decode_start = Instant::now();
    let stop = loop {
        out.push(next);
        if options.stop_tokens.contains(&next) {
            break StopReason::StopToken(next);
        }
        if !on_token(next) {
            break StopReason::Callback;
        }
        if out.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        if stepper.len() >= stepper.capacity() {
            break StopReason::ContextFull;
        }
        let logits = stepper.step(next)?;
        timing.decode_steps += 1;
        next = sampler.sample(&logits)?;
    };
    timing.decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;
    Ok(Generation {
        tokens: out,
        stop,
        timing,
    })
}
