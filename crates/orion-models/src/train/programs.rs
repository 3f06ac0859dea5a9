//! The compiled programs of one training step: per-layer forward/backward and the CPU parts.
//!
//! - **layer** (on the training device): the forward graph of one block ([`build_layer`], built
//!   by the same family code as the model graphs) with `x [T, D]` and the layer's weights as program
//!   *inputs*, so one compiled program serves every layer and every step — on the `cpu` device for
//!   the whole batch at once (`x [B·T, D]`, [`build_layer_batched`]: larger GEMMs, B times fewer
//!   calls), elsewhere one sequence per call; and its backward graph
//!   `grad(layer_fwd, wrt = x and every weight, Seed::Cotangents)`. On a device the backward graph
//!   recomputes the block's forward inside (activation checkpointing per layer: the step keeps only
//!   each layer's input `x`); on the `cpu` device the forward instead outputs the activations the
//!   backward reads and the backward takes them as inputs ([`split_saved_activations`]), trading
//!   memory for a quarter of the layer FLOPs. Weight gradients (dW): every `grad_<weight>` output
//!   that autodiff produces directly by a matmul (`dyᵀ·x` for a linear layer) is split out
//!   ([`split_weight_gemms`]): the device program outputs the two operands instead, and a small
//!   CPU program (`dw`) runs those weight-gradient GEMMs in f32. Gradients not made by a final
//!   matmul (norm gains, biases) stay in the device program.
//! - **embed** (CPU, f32): `tokens [B·T]` → `x [B·T, D]` for the whole batch (token gather, plus
//!   GPT-2's position rows) and its backward (`grad` with cotangent `grad_x`: scatter-add rows into
//!   the tables).
//! - **head** (CPU, f32): the final norm over all `N = B·T` rows as a graph pair (forward, and its
//!   backward with cotangent `grad_x_norm`); the classifier and mean cross-entropy after it are not
//!   a graph but fused CPU kernels in the step (`cpu::kernels::softmax_cross_entropy` between
//!   `gemm` calls, a block of rows at a time), because the decomposed graph reads and writes the
//!   `N × V` logits some twenty times; [`head_graph`] keeps the whole head as a graph, the
//!   definition that fused path is tested against. The classifier stays on the CPU because its
//!   vocabulary-wide matrix is the largest GEMM and needs no fp16 loss scaling there (constraints
//!   C26/C27 keep wide classifiers off the ANE anyway).
//!
//! [`build_layer`]: crate::model::build_layer
//! [`build_layer_batched`]: crate::model::build_layer_batched
//!
//! Invariant: every program's input names are canonical weight names of layer 0 (layer programs) or
//! of the model (embed/head), so binding is by name; outputs are looked up by name, never by guess.

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::model::{build_layer_batched, layer_prefix, weight_specs};
use orion_core::autodiff::{grad, Seed};
use orion_core::backend::{Backend, Executable};
use orion_core::composite::{cross_entropy, layer_norm, linear, rms_norm};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::{DType, Graph, GraphOutput, Op, TensorType, ValueId};

/// A compiled graph with its input and output names.
#[derive(Debug)]
pub struct Program {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub exe: Box<dyn Executable>,
}

impl Program {
    /// Optimises `graph` with the pass pipeline and compiles it on `backend`.
    pub fn compile(graph: &Graph, backend: &dyn Backend) -> Result<Program> {
        let optimised = optimise(graph, &PipelineOptions::default())?.graph;
        let inputs = optimised.inputs().map(|(n, _, _)| n.to_string()).collect();
        let outputs = optimised.outputs().iter().map(|o| o.name.clone()).collect();
        Ok(Program {
            inputs,
            outputs,
            exe: backend.compile(&optimised)?,
        })
    }

    /// The tensor of output `name` among `outputs` (the result of running this program).
    pub fn fetch<'a>(&self, outputs: &'a [orion_core::Tensor], name: &str) -> Result<&'a orion_core::Tensor> {
        outputs
            .get(self.output(name)?)
            .ok_or_else(|| ModelError::Usage(format!("program returned no tensor for output {name:?}")))
    }

    /// Index of output `name`.
    pub fn output(&self, name: &str) -> Result<usize> {
        self.outputs
            .iter()
            .position(|o| o == name)
            .ok_or_else(|| ModelError::Usage(format!("program has no output {name:?}")))
    }
}

/// Forward and backward of one of the step's parts.
#[derive(Debug)]
pub struct ProgramPair {
    pub forward: Program,
    pub backward: Program,
}

impl ProgramPair {
    fn new(forward: &Graph, wrt: &[&str], seed: Seed, backend: &dyn Backend) -> Result<ProgramPair> {
        let backward = grad(forward, wrt, seed)?;
        Ok(ProgramPair {
            forward: Program::compile(forward, backend)?,
            backward: Program::compile(&backward, backend)?,
        })
    }
}

/// The weight-gradient GEMMs of the layer backward, run on the CPU in f32.
#[derive(Debug)]
pub struct WeightGemms {
    /// Inputs `dw_in.<n>` (device outputs of the same name) → outputs `grad_<weight>`.
    pub program: Program,
}

/// Splits the `grad_<weight>` outputs of `backward` that a matmul produces: returns the device graph
/// (those outputs replaced by the matmul operands, named `dw_in.<value>`, each once) and the f32 CPU
/// graph computing the matmuls from them (`None` when there is nothing to split).
pub fn split_weight_gemms(backward: &Graph) -> Result<(Graph, Option<Graph>)> {
    let mut device = backward.clone();
    let mut cpu = Graph::new(format!("{}_dw", backward.name()));
    let mut kept = Vec::new();
    let mut operands: Vec<(ValueId, String, ValueId)> = Vec::new();
    for o in backward.outputs() {
        let node = backward.producer(o.value);
        let flags = match (o.name.strip_prefix("grad_"), &node.op) {
            (
                Some(w),
                Op::MatMul {
                    transpose_a,
                    transpose_b,
                },
            ) if w != "x" && node.inputs.len() == 2 => (*transpose_a, *transpose_b),
            _ => {
                kept.push(o.clone());
                continue;
            }
        };
        let mut cpu_inputs = Vec::with_capacity(2);
        for &v in &node.inputs {
            let known = operands.iter().find(|(dv, _, _)| *dv == v).map(|(_, _, cv)| *cv);
            let cv = match known {
                Some(cv) => cv,
                None => {
                    let name = format!("dw_in.{}", v.index());
                    let cv = cpu.input(name.clone(), TensorType::new(DType::F32, backward.dims(v)))?;
                    operands.push((v, name, cv));
                    cv
                }
            };
            cpu_inputs.push(cv);
        }
        let dw = cpu.matmul(cpu_inputs[0], cpu_inputs[1], flags.0, flags.1)?;
        cpu.set_output(o.name.clone(), dw)?;
    }
    if operands.is_empty() {
        return Ok((device, None));
    }
    kept.extend(operands.into_iter().map(|(value, name, _)| GraphOutput { name, value }));
    device.replace_outputs(kept)?;
    Ok((device, Some(cpu)))
}

/// Name of a saved activation: `saved.<value id in the backward graph>`.
pub const SAVED_PREFIX: &str = "saved.";

/// Turns a forward graph and its (split) backward graph, which recomputes the forward, into a pair
/// that saves activations instead: the forward also outputs every forward value the backward reads
/// or outputs (like a weight-gradient operand; for a reshape, the viewed value), named
/// `saved.<id>`, and in the backward those values become inputs of the same names, so its
/// recomputation is dead code; outputs that became inputs are dropped from the backward. Returns (forward,
/// backward, saved names). `backward` must be `grad(forward, …)` (whose first nodes are the
/// forward's, with the same value ids), possibly with outputs replaced by [`split_weight_gemms`].
pub fn split_saved_activations(forward: &Graph, backward: &Graph) -> Result<(Graph, Graph, Vec<String>)> {
    let forward_nodes = forward.nodes().len();
    let nodes = backward.nodes();
    let is_activation = |v: ValueId| {
        let at = backward.values()[v.index()].node.index();
        at < forward_nodes && !matches!(nodes[at].op, Op::Input { .. } | Op::Const { .. })
    };
    let forward_outputs: Vec<&str> = forward.outputs().iter().map(|o| o.name.as_str()).collect();
    let saved_node = nodes_to_save(backward, forward_nodes, &forward_outputs);
    let mut fwd = Graph::new(forward.name().to_string());
    let mut bwd = Graph::new(backward.name().to_string());
    let mut saved: Vec<(String, ValueId)> = Vec::new();
    for (at, node) in nodes.iter().enumerate() {
        if at < forward_nodes {
            let same = forward.nodes()[at].inputs == node.inputs && forward.nodes()[at].outputs == node.outputs;
            if !same || fwd.add_node(node.op.clone(), node.inputs.clone())? != node.outputs {
                return Err(ModelError::Usage(format!(
                    "{} does not start with the nodes of {}",
                    backward.name(),
                    forward.name()
                )));
            }
        }
        if !saved_node[at] {
            bwd.add_node(node.op.clone(), node.inputs.clone())?;
            continue;
        }
        // Every value of a saved node becomes an input (so value ids stay those of `backward`).
        for &v in &node.outputs {
            let name = format!("{SAVED_PREFIX}{}", v.index());
            let op = Op::Input {
                name: name.clone(),
                ty: backward.ty(v).clone(),
            };
            if bwd.add_node(op, vec![])? != [v] {
                return Err(ModelError::Usage(format!(
                    "saving {name} changed the values of {}",
                    backward.name()
                )));
            }
            saved.push((name, v));
        }
    }
    for o in forward.outputs() {
        fwd.set_output(o.name.clone(), o.value)?;
    }
    for (name, v) in &saved {
        fwd.set_output(name.clone(), *v)?;
    }
    // Outputs that are saved inputs now (or the forward's own outputs) are dropped.
    let kept = backward
        .outputs()
        .iter()
        .filter(|o| {
            let saved_input = is_activation(o.value) && saved_node[backward.values()[o.value.index()].node.index()];
            !saved_input && !forward_outputs.contains(&o.name.as_str())
        })
        .cloned()
        .collect();
    bwd.replace_outputs(kept)?;
    Ok((fwd, bwd, saved.into_iter().map(|(name, _)| name).collect()))
}

/// For each node of `backward` (whose first `forward_nodes` nodes are the forward's): whether its
/// values are saved by the forward, i.e. it is a forward activation (not an input or constant) that
/// a backward node reads or that is an output other than the forward's own (for both, the viewed
/// value of a reshape, which the backward redoes for free).
fn nodes_to_save(backward: &Graph, forward_nodes: usize, forward_outputs: &[&str]) -> Vec<bool> {
    let nodes = backward.nodes();
    let is_activation = |v: ValueId| {
        let at = backward.values()[v.index()].node.index();
        at < forward_nodes && !matches!(nodes[at].op, Op::Input { .. } | Op::Const { .. })
    };
    let viewed = |mut v: ValueId| loop {
        let node = backward.producer(v);
        match (&node.op, node.inputs.first()) {
            (Op::Reshape { .. } | Op::Identity, Some(&operand)) if is_activation(v) && is_activation(operand) => {
                v = operand
            }
            _ => return v,
        }
    };
    let mut saved_node = vec![false; nodes.len()];
    let reads = nodes[forward_nodes.min(nodes.len())..]
        .iter()
        .flat_map(|n| n.inputs.iter())
        .map(|&v| viewed(v));
    // An output that views another activation (a reshape) saves the viewed value: the backward
    // redoes the view, so the forward does not output one buffer under two names (which costs a
    // copy of each).
    let outputs = backward
        .outputs()
        .iter()
        .filter(|o| !forward_outputs.contains(&o.name.as_str()))
        .map(|o| viewed(o.value));
    for v in reads.chain(outputs) {
        if is_activation(v) {
            saved_node[backward.values()[v.index()].node.index()] = true;
        }
    }
    recompute_elementwise(backward, forward_nodes, &mut saved_node);
    saved_node
}

/// Unmarks (in forward order) every saved elementwise node whose operands are graph inputs,
/// constants, saved or themselves recomputed, and whose forward users are all elementwise: the
/// backward recomputes it inside its own fused loops instead. Such a value exists in the forward
/// only to be saved (its users fuse it away otherwise), so recomputing it saves the forward a
/// write and the backward a read, and adds no saved value.
fn recompute_elementwise(backward: &Graph, forward_nodes: usize, saved_node: &mut [bool]) {
    let nodes = &backward.nodes()[..forward_nodes.min(backward.nodes().len())];
    let elementwise = |at: usize| {
        let node = &nodes[at];
        matches!(node.op, Op::Unary(_) | Op::Binary(_))
            && node.outputs.len() == 1
            && backward.ty(node.outputs[0]).dtype.is_float()
    };
    let node_of = |v: ValueId| backward.values()[v.index()].node.index();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); backward.values().len()];
    for (at, node) in nodes.iter().enumerate() {
        for &v in &node.inputs {
            users[v.index()].push(at);
        }
    }
    let mut recomputed = vec![false; nodes.len()];
    for at in 0..nodes.len() {
        if !saved_node[at] || !elementwise(at) {
            continue;
        }
        let available = nodes[at].inputs.iter().all(|&u| {
            let from = node_of(u);
            from >= nodes.len()
                || matches!(nodes[from].op, Op::Input { .. } | Op::Const { .. })
                || saved_node[from]
                || recomputed[from]
        });
        let fused_away = users[nodes[at].outputs[0].index()].iter().all(|&u| elementwise(u));
        if available && fused_away {
            saved_node[at] = false;
            recomputed[at] = true;
        }
    }
}

/// Every program of a training step for one configuration and sequence length.
#[derive(Debug)]
pub struct StepPrograms {
    pub layer: ProgramPair,
    /// The layer backward's weight-gradient GEMMs (CPU, f32), when any were split out.
    pub layer_dw: Option<WeightGemms>,
    /// Embedding of the whole batch (`tokens [B·T]`) and its backward.
    pub embed: ProgramPair,
    /// The final norm of the head (`x [B·T, D]` → `x_norm`) and its backward; the classifier and
    /// cross-entropy after it run as fused CPU kernels in the step (see `step`).
    pub head: ProgramPair,
    /// Layer 0's weight names in the layer programs' input order (after `x`).
    pub layer_weights: Vec<String>,
    /// The layer programs' dtype (f32 on the CPU, f16 on fp16 devices).
    pub layer_dtype: DType,
    /// Outputs of `layer.forward` that `layer.backward` takes as inputs of the same name
    /// ([`split_saved_activations`]; on the `cpu` device); empty when the backward recomputes the
    /// forward. Baked programs always recompute (see [`StepPrograms::saved_activations`]).
    pub layer_saved: Vec<String>,
    /// Sequences one layer program call computes (the layer graphs' `x` holds this many times `T`
    /// rows): 1 unless the programs were built for whole batches.
    pub layer_batch: usize,
    /// The layer forward and (split) backward graphs, weights as inputs, for re-baking (the
    /// backward recomputes the forward).
    pub layer_graphs: (Graph, Graph),
    /// `recompile` strategy: per-layer programs with the current weights baked in (used instead of
    /// `layer` when present).
    pub baked: Option<Vec<ProgramPair>>,
}

impl StepPrograms {
    /// Builds and compiles the programs: layers on `device` in `layer_dtype`, the rest on `cpu` in f32.
    pub fn new(
        cfg: &ModelConfig,
        seq_len: usize,
        batch: usize,
        device: &dyn Backend,
        layer_dtype: DType,
        cpu: &dyn Backend,
    ) -> Result<StepPrograms> {
        // On the CPU one call covers the whole batch (larger, faster GEMMs); a device gets one
        // sequence per call (its programs' shapes are bounded by the chip's rules).
        let layer_batch = if device.name() == "cpu" { batch.max(1) } else { 1 };
        let layer_graph = build_layer_batched(cfg, 0, layer_batch, seq_len, layer_dtype)?;
        let layer_weights: Vec<String> = layer_graph.inputs().skip(1).map(|(n, _, _)| n.to_string()).collect();
        let mut wrt: Vec<&str> = vec!["x"];
        wrt.extend(layer_weights.iter().map(String::as_str));
        let (layer_backward, dw) = split_weight_gemms(&grad(&layer_graph, &wrt, Seed::Cotangents)?)?;
        // On the CPU memory is plentiful: the forward keeps what the backward reads instead of the
        // backward recomputing it. (Baked strategies compile the recomputing pair, `layer_graphs`.)
        let (layer, layer_saved) = if device.name() == "cpu" {
            let (forward, backward, saved) = split_saved_activations(&layer_graph, &layer_backward)?;
            let pair = ProgramPair {
                forward: Program::compile(&forward, device)?,
                backward: Program::compile(&backward, device)?,
            };
            (pair, saved)
        } else {
            let pair = ProgramPair {
                forward: Program::compile(&layer_graph, device)?,
                backward: Program::compile(&layer_backward, device)?,
            };
            (pair, Vec::new())
        };
        let layer_graphs = (layer_graph, layer_backward);
        let layer_dw = match dw {
            Some(g) => Some(WeightGemms {
                program: Program::compile(&g, cpu)?,
            }),
            None => None,
        };
        let embed_graph = embed_graph(cfg, batch, seq_len)?;
        let tables = table_names(cfg);
        let embed = ProgramPair::new(&embed_graph, &tables, Seed::Cotangents, cpu)?;
        let norm_graph = final_norm_graph(cfg, batch * seq_len)?;
        let norm_inputs: Vec<String> = norm_graph.inputs().map(|(n, _, _)| n.to_string()).collect();
        let norm_wrt: Vec<&str> = norm_inputs.iter().map(String::as_str).collect();
        let head = ProgramPair::new(&norm_graph, &norm_wrt, Seed::Cotangents, cpu)?;
        Ok(StepPrograms {
            layer,
            layer_dw,
            embed,
            head,
            layer_weights,
            layer_dtype,
            layer_saved,
            layer_batch,
            layer_graphs,
            baked: None,
        })
    }

    /// `recompile` strategy: compiles every layer's programs with `params` baked in on `device` and
    /// uses them from now on. Returns the number of compiles (2 per layer).
    pub fn recompile_layers(
        &mut self,
        cfg: &ModelConfig,
        params: &super::step::Params,
        device: &dyn Backend,
    ) -> Result<usize> {
        let graphs = (&self.layer_graphs.0, &self.layer_graphs.1);
        let layers = super::strategy::compile_baked_layers(cfg, graphs, params, device)?;
        let compiles = 2 * layers.len();
        self.baked = Some(layers);
        Ok(compiles)
    }

    /// The activations the layer programs in use pass from forward to backward (none when baked).
    pub fn saved_activations(&self) -> &[String] {
        match &self.baked {
            None => &self.layer_saved,
            Some(_) => &[],
        }
    }

    /// The programs serving layer `layer`.
    pub fn layer_pair(&self, layer: usize) -> Result<&ProgramPair> {
        match &self.baked {
            None => Ok(&self.layer),
            Some(layers) => layers
                .get(layer)
                .ok_or_else(|| ModelError::Usage(format!("no baked programs for layer {layer}"))),
        }
    }
}

/// The embedding tables: the token table and, for GPT-2, the position table.
pub fn table_names(cfg: &ModelConfig) -> Vec<&'static str> {
    match cfg.family {
        Family::Gpt2 => vec!["wte.weight", "wpe.weight"],
        Family::Llama => vec!["model.embed_tokens.weight"],
    }
}

/// The name of the classifier matrix (the token table when tied).
pub fn head_name(cfg: &ModelConfig) -> &'static str {
    match (cfg.tied_embeddings, cfg.family) {
        (false, _) => "lm_head.weight",
        (true, Family::Gpt2) => "wte.weight",
        (true, Family::Llama) => "model.embed_tokens.weight",
    }
}

fn shape_of(cfg: &ModelConfig, name: &str) -> Result<Vec<usize>> {
    weight_specs(cfg)
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.shape)
        .ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: vec![],
        })
}

fn weight_input(g: &mut Graph, cfg: &ModelConfig, name: &str) -> Result<ValueId> {
    Ok(g.input(name, TensorType::new(DType::F32, shape_of(cfg, name)?))?)
}

/// `tokens` i32 `[B·T]` (B sequences of T) and the tables → `x [B·T, D]` (GPT-2 adds the position
/// rows `0..T` of each sequence).
pub fn embed_graph(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Result<Graph> {
    let rows = batch * seq_len;
    let mut g = Graph::new(format!("{}_embed_{batch}x{seq_len}", cfg.family.name()));
    let tokens = g.input("tokens", TensorType::new(DType::I32, [rows]))?;
    let tables = table_names(cfg);
    let wte = weight_input(&mut g, cfg, tables[0])?;
    let mut x = g.gather(wte, tokens)?;
    if let Some(wpe_name) = tables.get(1) {
        let wpe = weight_input(&mut g, cfg, wpe_name)?;
        let positions = (0..rows).map(|r| (r % seq_len.max(1)) as i32).collect();
        let positions = g.constant(orion_core::Tensor::i32([rows], positions))?;
        let rows = g.gather(wpe, positions)?;
        x = g.add(x, rows)?;
    }
    g.set_output("x", x)?;
    Ok(g)
}

/// `x [N, D]` and the final norm's weights → `x_norm [N, D]` (the part of the head that is a graph).
pub fn final_norm_graph(cfg: &ModelConfig, rows: usize) -> Result<Graph> {
    let mut g = Graph::new(format!("{}_final_norm_{rows}", cfg.family.name()));
    let x = g.input("x", TensorType::new(DType::F32, [rows, cfg.dim]))?;
    let normed = final_norm(&mut g, cfg, x)?;
    g.set_output("x_norm", normed)?;
    Ok(g)
}

fn final_norm(g: &mut Graph, cfg: &ModelConfig, x: ValueId) -> Result<ValueId> {
    Ok(match cfg.family {
        Family::Gpt2 => {
            let gamma = weight_input(g, cfg, "ln_f.weight")?;
            let beta = weight_input(g, cfg, "ln_f.bias")?;
            layer_norm(g, x, gamma, beta, cfg.norm_eps)?
        }
        Family::Llama => {
            let gamma = weight_input(g, cfg, "model.norm.weight")?;
            rms_norm(g, x, gamma, cfg.norm_eps)?
        }
    })
}

/// `x [N, D]`, final norm weights, classifier and i32 `labels [N]` → scalar mean cross-entropy `loss`:
/// the whole head as one graph (the definition the step's fused head is tested against).
pub fn head_graph(cfg: &ModelConfig, rows: usize) -> Result<Graph> {
    let mut g = Graph::new(format!("{}_head_{rows}", cfg.family.name()));
    let x = g.input("x", TensorType::new(DType::F32, [rows, cfg.dim]))?;
    let normed = final_norm(&mut g, cfg, x)?;
    let head = weight_input(&mut g, cfg, head_name(cfg))?;
    let labels = g.input("labels", TensorType::new(DType::I32, [rows]))?;
    let logits = linear(&mut g, normed, head)?;
    let loss = cross_entropy(&mut g, logits, labels)?;
    g.set_output("loss", loss)?;
    Ok(g)
}

/// The canonical name in layer `layer` of a layer-0 weight name.
pub fn layer_weight_name(cfg: &ModelConfig, layer0_name: &str, layer: usize) -> String {
    let (from, to) = (layer_prefix(cfg, 0), layer_prefix(cfg, layer));
    match layer0_name.strip_prefix(&from) {
        Some(rest) => format!("{to}{rest}"),
        None => layer0_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build_layer, Model};
    use orion_core::interp::{interpret, Precision};
    use orion_core::{Tensor, UnaryOp};
    use std::collections::HashMap;

    fn tiny(name: &str) -> ModelConfig {
        let mut cfg = ModelConfig::builtin(name).unwrap();
        (
            cfg.dim,
            cfg.n_layers,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.hidden_dim,
            cfg.vocab_size,
        ) = (16, 1, 4, 2, 24, 30);
        if cfg.family == Family::Gpt2 {
            cfg.n_kv_heads = cfg.n_heads;
        }
        cfg.max_seq_len = 8;
        cfg
    }

    /// Runs `g` on the interpreter with inputs by name; returns the outputs by name.
    fn run(g: &Graph, by_name: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        let inputs: Vec<Tensor> = g.inputs().map(|(n, _, _)| by_name[n].clone()).collect();
        let out = interpret(g, &inputs, Precision::F32).unwrap();
        g.outputs().iter().map(|o| o.name.clone()).zip(out).collect()
    }

    #[test]
    fn saving_activations_gives_the_recomputing_backward_bit_for_bit_without_its_forward() {
        for name in ["gpt2", "stories260K"] {
            let cfg = tiny(name);
            let forward = build_layer(&cfg, 0, 5, DType::F32).unwrap();
            let names: Vec<String> = forward.inputs().map(|(n, _, _)| n.to_string()).collect();
            let wrt: Vec<&str> = names.iter().map(String::as_str).collect();
            let (backward, _) = split_weight_gemms(&grad(&forward, &wrt, Seed::Cotangents).unwrap()).unwrap();
            let (fwd, bwd, saved) = split_saved_activations(&forward, &backward).unwrap();
            assert!(!saved.is_empty());
            // SiLU's sigmoid feeds only elementwise ops and reads the saved gate projection: the
            // backward recomputes it instead of taking it. (GPT-2's GELU tanh stays saved: its
            // operands are intermediate values nobody else saves.)
            for name in &saved {
                let id: usize = name[SAVED_PREFIX.len()..].parse().unwrap();
                let op = &backward.nodes()[backward.values()[id].node.index()].op;
                let activation = matches!(op, Op::Unary(UnaryOp::Sigmoid));
                assert!(!activation, "{name}: {} is saved", op.name());
            }
            // Data: x, grad_y and the model's layer-0 weights.
            let model = Model::random(cfg.clone(), 5).unwrap();
            let mut data: HashMap<String, Tensor> = model
                .weights()
                .into_iter()
                .map(|(n, t)| (n, t.as_ref().clone()))
                .collect();
            let values = |n: usize, seed: usize| (0..n).map(|i| ((i * 37 + seed) % 29) as f32 / 14.0 - 1.0).collect();
            data.insert("x".into(), Tensor::f32([5, cfg.dim], values(5 * cfg.dim, 1)));
            data.insert("grad_y".into(), Tensor::f32([5, cfg.dim], values(5 * cfg.dim, 2)));
            let reference = run(&backward, &data);
            let forward_out = run(&fwd, &data);
            assert!(forward_out["y"].bitwise_eq(&reference["y"]));
            data.extend(saved.iter().map(|n| (n.clone(), forward_out[n].clone())));
            let got = run(&bwd, &data);
            for (out_name, expected) in &reference {
                let actual = match got.get(out_name) {
                    Some(t) => t,
                    // An activation output (y, a weight-gradient operand) is now a saved input.
                    None if out_name == "y" => continue,
                    None => &data[&out_name.replace("dw_in.", SAVED_PREFIX)],
                };
                assert!(actual.bitwise_eq(expected), "{name}: {out_name} differs");
            }
            // The forward is not recomputed: after optimisation the backward has fewer matmuls.
            let matmuls = |g: &Graph| {
                let g = optimise(g, &PipelineOptions::default()).unwrap().graph;
                g.nodes().iter().filter(|n| matches!(n.op, Op::MatMul { .. })).count()
            };
            assert!(matmuls(&bwd) < matmuls(&backward), "{name}: forward matmuls remain");
        }
    }
}
