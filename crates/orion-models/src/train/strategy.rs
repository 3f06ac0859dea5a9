//! Weight-update strategies for the layer programs: `dynamic` (weights as program inputs, one
//! compiled pair serves every layer and step) and `recompile` (each layer's weights baked into its
//! own programs as constants, all recompiled after every update).
//!
//! `recompile` bakes by rewriting the weight *inputs* of the already differentiated and split layer
//! graphs into constants ([`bake_weights`]): the arithmetic is exactly that of `dynamic`, only where
//! the weights come from changes. Counting compiles against a per-process budget (ane.md C06) and
//! restarting the process is the caller's job (`orion train`); `patch` is not implemented.

use super::programs::{layer_weight_name, Program, ProgramPair};
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

/// Compiles, for every layer, the forward and backward graphs (weights as inputs, layer-0 names)
/// with that layer's current weights baked in. Returns the programs; `2·n_layers` compiles.
pub fn compile_baked_layers(
    cfg: &ModelConfig,
    graphs: (&Graph, &Graph),
    params: &Params,
    device: &dyn Backend,
) -> Result<Vec<ProgramPair>> {
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for layer in 0..cfg.n_layers {
        let lookup = |name: &str| -> Option<Tensor> {
            let canonical = layer_weight_name(cfg, name, layer);
            let (_, _, ty) = graphs.0.inputs().find(|(n, _, _)| *n == name)?;
            let values = params.get(&canonical)?;
            Tensor::new(ty.dtype, ty.shape.clone(), TensorData::Float(values.clone())).ok()
        };
        let is_weight = |name: &str| name != "x" && !name.starts_with("grad_");
        let pick = |name: &str| if is_weight(name) { lookup(name) } else { None };
        layers.push(ProgramPair {
            forward: Program::compile(&bake_weights(graphs.0, &pick)?, device)?,
            backward: Program::compile(&bake_weights(graphs.1, &pick)?, device)?,
        });
    }
    Ok(layers)
}
