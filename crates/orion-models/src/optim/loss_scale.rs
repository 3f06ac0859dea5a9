//! Dynamic loss scaling for fp16 devices, with overflow detection and counters.
//!
//! Protocol for one training step: multiply the loss gradient by [`LossScaler::scale`] before the
//! backward pass; test the (accumulated) gradients with [`LossScaler::check`]; if they are all finite,
//! [`LossScaler::unscale`] them and apply the optimiser; in both cases call [`LossScaler::update`]
//! with whether an overflow happened. An overflow means the step is skipped (no update, no optimiser
//! step count), the scale is multiplied by `backoff_factor` and both counters grow. After
//! `growth_interval` consecutive clean steps the scale is multiplied by `growth_factor` (up to
//! `max_scale`).
//!
//! No blind clamping: non-finite gradients are never zeroed or clipped into range. If overflows keep
//! happening (`max_consecutive_overflows` in a row), `update` returns an error — at that point the
//! gradients are non-finite whatever the scale, which is a bug to report, not a range problem to hide.
//! A static scaler (`dynamic = false`, e.g. scale 1 on f32 devices) still detects, skips and counts.
//!
//! Invariant: `scale` is finite and > 0; the state round-trips exactly through serde (the scale is a
//! power of two times the initial scale, exactly representable in JSON).

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings of a [`LossScaler`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScalerConfig {
    pub initial_scale: f32,
    /// Whether the scale moves (back-off on overflow, growth after clean intervals).
    pub dynamic: bool,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: u64,
    pub max_scale: f32,
    /// Overflows in a row after which `update` gives up with an error.
    pub max_consecutive_overflows: u32,
}

impl LossScalerConfig {
    /// Dynamic scaling for fp16 devices: initial scale 2^10, ×2 every 1000 clean steps, ×½ on overflow.
    pub fn fp16() -> LossScalerConfig {
        LossScalerConfig {
            initial_scale: 1024.0,
            dynamic: true,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 1000,
            max_scale: 65536.0 * 256.0,
            max_consecutive_overflows: 30,
        }
    }

    /// A fixed scale of 1 for f32 devices: overflows are still detected, skipped and counted.
    pub fn f32() -> LossScalerConfig {
        LossScalerConfig {
            initial_scale: 1.0,
            dynamic: false,
            max_consecutive_overflows: 10,
            ..LossScalerConfig::fp16()
        }
    }

    /// Checks that the factors and scales are usable.
    pub fn validate(&self) -> Result<()> {
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(self.initial_scale) || !positive(self.max_scale) || self.initial_scale > self.max_scale {
            return Err(ModelError::Usage(format!(
                "loss scaler: initial scale {} and max scale {} must be positive and ordered",
                self.initial_scale, self.max_scale
            )));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor >= 1.0) {
            return Err(ModelError::Usage(format!(
                "loss scaler: growth factor {} must be ≥ 1",
                self.growth_factor
            )));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return Err(ModelError::Usage(format!(
                "loss scaler: backoff factor {} must be in (0, 1)",
                self.backoff_factor
            )));
        }
        if self.growth_interval == 0 || self.max_consecutive_overflows == 0 {
            return Err(ModelError::Usage(
                "loss scaler: growth interval and max consecutive overflows must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The complete, serialisable state of a [`LossScaler`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScalerState {
    pub config: LossScalerConfig,
    pub scale: f32,
    /// Clean steps since the last overflow or growth.
    pub good_steps: u64,
    pub consecutive_overflows: u32,
    /// Steps whose gradients held an inf or NaN.
    pub overflow_events: u64,
    /// Optimiser steps skipped because of an overflow.
    pub skipped_steps: u64,
}

/// Dynamic (or static) loss scaler; see the module header for the protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    state: LossScalerState,
}

/// Whether every element of every gradient is finite.
pub fn all_finite(grads: &BTreeMap<String, Vec<f32>>) -> bool {
    grads.values().all(|g| super::kernels::all_finite(g))
}

impl LossScaler {
    pub fn new(config: LossScalerConfig) -> Result<LossScaler> {
        config.validate()?;
        Ok(LossScaler {
            state: LossScalerState {
                config,
                scale: config.initial_scale,
                good_steps: 0,
                consecutive_overflows: 0,
                overflow_events: 0,
                skipped_steps: 0,
            },
        })
    }

    /// Restores a scaler saved with [`LossScaler::state`].
    pub fn from_state(state: LossScalerState) -> Result<LossScaler> {
        state.config.validate()?;
        if !(state.scale.is_finite() && state.scale > 0.0) {
            return Err(ModelError::Usage(format!(
                "loss scaler: saved scale {} is not positive",
                state.scale
            )));
        }
        Ok(LossScaler { state })
    }

    pub fn state(&self) -> LossScalerState {
        self.state.clone()
    }

    /// The factor the loss (gradient seed) is multiplied by.
    pub fn scale(&self) -> f32 {
        self.state.scale
    }

    /// True when every gradient element is finite (the step may proceed).
    pub fn check(&self, grads: &BTreeMap<String, Vec<f32>>) -> bool {
        all_finite(grads)
    }

    /// Divides every gradient by the current scale (multiplication by the exact reciprocal when the
    /// scale is a power of two).
    pub fn unscale(&self, grads: &mut BTreeMap<String, Vec<f32>>) {
        let inv = 1.0 / self.state.scale;
        for g in grads.values_mut() {
            for x in g.iter_mut() {
                *x *= inv;
            }
        }
    }

    /// Records the outcome of a step; see the module header. Errors after too many overflows in a row.
    pub fn update(&mut self, overflowed: bool) -> Result<()> {
        let s = &mut self.state;
        let cfg = s.config;
        if !overflowed {
            s.consecutive_overflows = 0;
            s.good_steps += 1;
            if cfg.dynamic && s.good_steps >= cfg.growth_interval {
                s.good_steps = 0;
                let grown = s.scale * cfg.growth_factor;
                if grown.is_finite() && grown <= cfg.max_scale {
                    s.scale = grown;
                }
            }
            return Ok(());
        }
        s.overflow_events += 1;
        s.skipped_steps += 1;
        s.good_steps = 0;
        s.consecutive_overflows += 1;
        if cfg.dynamic {
            let lowered = s.scale * cfg.backoff_factor;
            if lowered > 0.0 && lowered.is_normal() {
                s.scale = lowered;
            }
        }
        if s.consecutive_overflows >= cfg.max_consecutive_overflows {
            return Err(ModelError::Usage(format!(
                "non-finite gradients in {} steps in a row (loss scale now {}): this is a bug in the \
                 forward/backward computation or a diverged run, not an fp16 range problem",
                s.consecutive_overflows, s.scale
            )));
        }
        Ok(())
    }

    pub fn overflow_events(&self) -> u64 {
        self.state.overflow_events
    }

    pub fn skipped_steps(&self) -> u64 {
        self.state.skipped_steps
    }
}
