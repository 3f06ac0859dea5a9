//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), written to match
//! `torch.optim.AdamW` step for step.
//!
//! One step `t` (counted from 1) for a parameter `p` with gradient `g`, learning rate `lr`:
//! ```text
//! p ← p · (1 − lr · weight_decay)            (only if the parameter decays)
//! m ← β1 · m + (1 − β1) · g
//! v ← β2 · v + (1 − β2) · g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//! Weight-decay rule ([`default_decay`]): tensors of rank ≥ 2 decay (linear weights and embeddings,
//! the nanoGPT/llama2.c convention); rank-1 tensors (norm gains and biases) and anything named
//! `*.bias` do not. The decision is made per parameter name with [`AdamW::set_decay`] (or all at once
//! by [`AdamW::with_shapes`]); a name never mentioned decays.
//!
//! Invariants: `m` and `v` of a parameter have the length of that parameter; the step counter counts
//! applied updates only (a step skipped by the loss scaler is not an update); the state round-trips
//! exactly through [`AdamW::state`] / [`AdamW::from_state`] (f32 bits are kept), which is what makes
//! resumed training bit-identical. The per-element pass is `kernels::adamw_update` (vectorised, split
//! over two threads for large tensors, bit-identical to the scalar formula above).

use super::kernels::{adamw_update, AdamWCoefficients};
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Hyper-parameters of AdamW. `lr` is the base learning rate a [`super::Schedule`] scales.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// llama2.c's `train.py` defaults: lr 5e-4, β = (0.9, 0.95), ε = 1e-8, weight decay 0.1.
    fn default() -> AdamWConfig {
        AdamWConfig {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl AdamWConfig {
    /// Checks that every hyper-parameter is finite and in its range (β in [0, 1), ε > 0, decay ≥ 0).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: f32| Err(ModelError::Usage(format!("AdamW: {what} = {value} is out of range")));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr);
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(name, beta);
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay);
        }
        Ok(())
    }
}

/// Whether a parameter of this name and shape gets weight decay: rank ≥ 2 and not a bias.
/// Norm gains and biases (rank 1) are excluded; embeddings and linear weights decay.
pub fn default_decay(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && !name.ends_with(".bias")
}

/// Everything AdamW needs to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWState {
    /// Updates applied so far (the `t` of the bias corrections is `step + 1` for the next update).
    pub step: u64,
    /// First moments by parameter name.
    pub m: BTreeMap<String, Vec<f32>>,
    /// Second moments by parameter name.
    pub v: BTreeMap<String, Vec<f32>>,
    /// Parameters excluded from weight decay.
    pub no_decay: BTreeSet<String>,
}

/// The AdamW optimiser: configuration, step counter and per-parameter moments.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
    no_decay: BTreeSet<String>,
}

impl AdamW {
    /// A fresh optimiser (step 0, moments created as zeros on first use; every parameter decays
    /// until [`AdamW::set_decay`] says otherwise).
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW {
            config,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            no_decay: BTreeSet::new(),
        }
    }

    /// A fresh optimiser whose decay set follows [`default_decay`] for the given parameter shapes.
    pub fn with_shapes(config: AdamWConfig, shapes: &BTreeMap<String, Vec<usize>>) -> AdamW {
        let mut opt = AdamW::new(config);
        for (name, shape) in shapes {
            opt.set_decay(name, default_decay(name, shape));
        }
        opt
    }

    /// Says whether parameter `name` gets weight decay.
    pub fn set_decay(&mut self, name: &str, decay: bool) {
        if decay {
            self.no_decay.remove(name);
        } else {
            self.no_decay.insert(name.to_string());
        }
    }

    /// Whether parameter `name` gets weight decay.
    pub fn decays(&self, name: &str) -> bool {
        !self.no_decay.contains(name)
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr` (the scheduled rate, not `config.lr`).
    ///
    /// Every gradient must name a parameter of the same length and every parameter must have a
    /// gradient; otherwise nothing is changed and an error names the offender. Non-finite gradients
    /// are not filtered here: the loss scaler decides whether a step happens at all.
    pub fn step(
        &mut self,
        params: &mut BTreeMap<String, Vec<f32>>,
        grads: &BTreeMap<String, Vec<f32>>,
        lr: f32,
    ) -> Result<()> {
        self.step_scaled(params, grads, lr, 1.0)
    }

    /// As [`AdamW::step`] with every gradient multiplied by `grad_scale` first (global-norm
    /// clipping folded into the update): bit-identical to scaling `grads` in place and calling
    /// `step`, without the extra pass over them.
    pub fn step_scaled(
        &mut self,
        params: &mut BTreeMap<String, Vec<f32>>,
        grads: &BTreeMap<String, Vec<f32>>,
        lr: f32,
        grad_scale: f32,
    ) -> Result<()> {
        self.config.validate()?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(ModelError::Usage(format!("AdamW: learning rate {lr} is out of range")));
        }
        check_matching(params, grads, &self.m)?;
        self.step += 1;
        let t = self.step as f64;
        let cfg = self.config;
        let bias1 = 1.0 - (cfg.beta1 as f64).powf(t);
        let bias2_sqrt = (1.0 - (cfg.beta2 as f64).powf(t)).sqrt();
        let step_size = (lr as f64 / bias1) as f32;
        let bias2_sqrt = bias2_sqrt as f32;
        let decay_factor = (1.0 - lr as f64 * cfg.weight_decay as f64) as f32;
        for (name, p) in params.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let m = self.m.entry(name.clone()).or_insert_with(|| vec![0.0; p.len()]);
            let v = self.v.entry(name.clone()).or_insert_with(|| vec![0.0; p.len()]);
            let decay = if self.no_decay.contains(name) {
                1.0
            } else {
                decay_factor
            };
            let coefficients = AdamWCoefficients {
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                step_size,
                bias2_sqrt,
                decay,
                grad_scale,
            };
            adamw_update(p, g, m, v, coefficients);
        }
        Ok(())
    }

    /// A copy of the complete optimiser state (for checkpoints).
    pub fn state(&self) -> AdamWState {
        AdamWState {
            step: self.step,
            m: self.m.clone(),
            v: self.v.clone(),
            no_decay: self.no_decay.clone(),
        }
    }

    /// Rebuilds an optimiser from a saved state; `m` and `v` must name the same parameters with the
    /// same lengths.
    pub fn from_state(config: AdamWConfig, state: AdamWState) -> Result<AdamW> {
        config.validate()?;
        if state.m.len() != state.v.len() {
            return Err(ModelError::Usage(format!(
                "AdamW state: {} first moments but {} second moments",
                state.m.len(),
                state.v.len()
            )));
        }
        for (name, m) in &state.m {
            match state.v.get(name) {
                Some(v) if v.len() == m.len() => {}
                Some(v) => {
                    return Err(ModelError::Usage(format!(
                        "AdamW state: moments of {name:?} have lengths {} and {}",
                        m.len(),
                        v.len()
                    )))
                }
                None => return Err(ModelError::Usage(format!("AdamW state: {name:?} has no second moment"))),
            }
        }
        Ok(AdamW {
            config,
            step: state.step,
            m: state.m,
            v: state.v,
            no_decay: state.no_decay,
        })
    }
}

/// Checks that `params` and `grads` name the same tensors with equal lengths, and that existing
/// moments still fit their parameters.
fn check_matching(
    params: &BTreeMap<String, Vec<f32>>,
    grads: &BTreeMap<String, Vec<f32>>,
    moments: &BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    for (name, g) in grads {
        match params.get(name) {
            None => {
                return Err(ModelError::Usage(format!(
                    "AdamW: gradient for unknown parameter {name:?}"
                )))
            }
            Some(p) if p.len() != g.len() => {
                return Err(ModelError::Usage(format!(
                    "AdamW: parameter {name:?} has {} elements but its gradient has {}",
                    p.len(),
                    g.len()
                )))
            }
            Some(_) => {}
        }
    }
    for (name, p) in params {
        if !grads.contains_key(name) {
            return Err(ModelError::Usage(format!("AdamW: parameter {name:?} has no gradient")));
        }
        if let Some(m) = moments.get(name) {
            if m.len() != p.len() {
                return Err(ModelError::Usage(format!(
                    "AdamW: parameter {name:?} has {} elements but its moments have {}",
                    p.len(),
                    m.len()
                )));
            }
        }
    }
    Ok(())
}
