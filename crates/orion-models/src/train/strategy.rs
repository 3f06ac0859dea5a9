//! Weight-update strategies for the layer programs, and the [`WeightUpdater`] that applies one after
//! every optimiser step:
//! - `dynamic`: weights are program inputs; one compiled pair serves every layer and step; nothing to do
//!   after an update;
//! - `recompile`: each layer's weights are baked into its own programs as constants; all are recompiled
//!   after every update (2 compiles per layer, counted against the per-process budget, ane.md C06);
//! - `patch` (experimental, the published Orion's delta update): the baked programs stay compiled; after
//!   an update each program's weight files are overwritten and the program reloaded
//!   (`Executable::reload_constants`), then one program is checked against the CPU reference
//!   ([`super::patch`]); on a mismatch — which ANE rule C07 predicts on the chips measured — or where the
//!   backend has no reload path, the run falls back to `recompile` for good and says why.
//!
//! Baking rewrites the weight *inputs* of the already differentiated and split layer graphs into
//! constants ([`bake_weights`]): the arithmetic is exactly that of `dynamic`, only where the weights
//! come from changes. Restarting the process before the compile budget runs out is the caller's job
//! (`orion train`), using [`WeightUpdater::compiles_per_update`].

use super::patch::{PatchCheck, PatchVerdict};
use super::programs::{layer_weight_name, Program, ProgramPair, StepPrograms};
use super::step::Params;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use orion_core::backend::Backend;
use orion_core::{Graph, Op, Tensor, TensorData};
use std::sync::Arc;

/// `g` with every input named in `weights` replaced by a constant of that value (same value ids,
/// same outputs); the remaining inputs keep their order.
pub fn bake_weights(g: &Graph, weights: &dyn Fn(&str) -> Option<Tensor>) -> Result<Graph> {
    let mut out = Graph::new(g.name().to_string());
    for node in g.nodes() {
        let op = match &node.op {
            Op::Input { name, ty } => match weights(name) {
                Some(t) if t.ty() == *ty => Op::Const { value: Arc::new(t) },
                Some(t) => {
                    return Err(ModelError::Usage(format!(
                        "baking {name:?}: the program expects {ty}, the weight is {}",
                        t.ty()
                    )))
                }
                None => node.op.clone(),
            },
            _ => node.op.clone(),
        };
        let defined = out.add_node(op, node.inputs.clone())?;
        if defined != node.outputs {
            return Err(ModelError::Usage(format!(
                "baking changed the values of graph {}",
                g.name()
            )));
        }
    }
    for o in g.outputs() {
        out.set_output(o.name.clone(), o.value)?;
    }
    Ok(out)
}

/// The layer forward and backward graphs (weights as inputs, layer-0 names) with layer `layer`'s
/// weights from `params` baked in.
pub fn baked_layer_graphs(
    cfg: &ModelConfig,
    graphs: (&Graph, &Graph),
    params: &Params,
    layer: usize,
) -> Result<(Graph, Graph)> {
    let lookup = |name: &str| -> Option<Tensor> {
        let canonical = layer_weight_name(cfg, name, layer);
        let (_, _, ty) = graphs.0.inputs().find(|(n, _, _)| *n == name)?;
        let values = params.get(&canonical)?;
        Tensor::new(ty.dtype, ty.shape.clone(), TensorData::Float(values.clone())).ok()
    };
    let is_weight = |name: &str| name != "x" && !name.starts_with("grad_");
    let pick = |name: &str| if is_weight(name) { lookup(name) } else { None };
    Ok((bake_weights(graphs.0, &pick)?, bake_weights(graphs.1, &pick)?))
}

/// Compiles, for every layer, the forward and backward graphs with that layer's current weights
/// baked in. Returns the programs; `2·n_layers` compiles.
pub fn compile_baked_layers(
    cfg: &ModelConfig,
    graphs: (&Graph, &Graph),
    params: &Params,
    device: &dyn Backend,
) -> Result<Vec<ProgramPair>> {
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for layer in 0..cfg.n_layers {
        let (forward, backward) = baked_layer_graphs(cfg, graphs, params, layer)?;
        layers.push(ProgramPair {
            forward: Program::compile(&forward, device)?,
            backward: Program::compile(&backward, device)?,
        });
    }
    Ok(layers)
}

/// How layer programs get their weights (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Dynamic,
    Recompile,
    Patch,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dynamic => "dynamic",
            Strategy::Recompile => "recompile",
            Strategy::Patch => "patch",
        }
    }
}

/// What applying an update did.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateEvent {
    /// Nothing to do (`dynamic`, or a skipped step).
    None,
    /// Every layer program was recompiled (this many compiles).
    Recompiled(usize),
    /// The new weights were sent to the compiled programs and the check passed.
    Patched(PatchVerdict),
    /// `patch` failed its check or is not possible here: the run recompiled and uses `recompile` from
    /// now on.
    FellBack { reason: String, compiles: usize },
}

/// Applies the chosen strategy after each optimiser step; `patch` may turn into `recompile`.
#[derive(Debug)]
pub struct WeightUpdater {
    requested: Strategy,
    active: Strategy,
    check: Option<PatchCheck>,
    /// Patches whose check passed.
    pub patches_verified: u64,
    /// Why `patch` fell back, once it has.
    pub fallback_reason: Option<String>,
}

impl WeightUpdater {
    /// Prepares `programs` for `strategy` (baked programs for `recompile` and `patch`); returns the
    /// updater and the compiles it made.
    pub fn start(
        strategy: Strategy,
        programs: &mut StepPrograms,
        cfg: &ModelConfig,
        params: &Params,
        device: &dyn Backend,
    ) -> Result<(WeightUpdater, usize)> {
        let compiles = match strategy {
            Strategy::Dynamic => 0,
            Strategy::Recompile | Strategy::Patch => programs.recompile_layers(cfg, params, device)?,
        };
        let check = match strategy {
            Strategy::Patch => Some(PatchCheck::new(cfg, programs, params)?),
            Strategy::Dynamic | Strategy::Recompile => None,
        };
        let updater = WeightUpdater {
            requested: strategy,
            active: strategy,
            check,
            patches_verified: 0,
            fallback_reason: None,
        };
        Ok((updater, compiles))
    }

    /// The strategy asked for.
    pub fn requested(&self) -> Strategy {
        self.requested
    }

    /// The strategy in use (`recompile` after a `patch` fallback).
    pub fn active(&self) -> Strategy {
        self.active
    }

    /// Compiles the next update may need (what the compile budget must still allow).
    pub fn compiles_per_update(&self, cfg: &ModelConfig) -> usize {
        match self.active {
            Strategy::Dynamic => 0,
            Strategy::Recompile | Strategy::Patch => 2 * cfg.n_layers,
        }
    }

    /// Makes `params` (just updated) take effect in the layer programs.
    pub fn after_update(
        &mut self,
        programs: &mut StepPrograms,
        cfg: &ModelConfig,
        params: &Params,
        device: &dyn Backend,
    ) -> Result<UpdateEvent> {
        match self.active {
            Strategy::Dynamic => Ok(UpdateEvent::None),
            Strategy::Recompile => Ok(UpdateEvent::Recompiled(programs.recompile_layers(cfg, params, device)?)),
            Strategy::Patch => {
                let check = self
                    .check
                    .as_mut()
                    .ok_or_else(|| ModelError::Usage("patch strategy without its check".into()))?;
                let verdict = check.patch_and_verify(programs, cfg, params)?;
                if verdict.verified {
                    self.patches_verified += 1;
                    return Ok(UpdateEvent::Patched(verdict));
                }
                let compiles = programs.recompile_layers(cfg, params, device)?;
                self.active = Strategy::Recompile;
                self.check = None;
                self.fallback_reason = Some(verdict.reason.clone());
                Ok(UpdateEvent::FellBack {
                    reason: verdict.reason,
                    compiles,
                })
            }
        }
    }
}
