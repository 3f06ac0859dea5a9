//! The compiled programs of one training step: per-layer forward/backward and the CPU parts.
//!
//! - **layer** (on the training device): the forward graph of one block ([`build_layer`], built
//!   by the same family code as the model graphs) with `x [T, D]` and the layer's weights as program
//!   *inputs*, so one compiled program serves every layer and every step; and its backward graph
//!   `grad(layer_fwd, wrt = x and every weight, Seed::Cotangents)`. The backward graph recomputes
//!   the block's forward inside (activation checkpointing per layer: the step keeps only each
//!   layer's input `x`). Weight gradients (dW): every `grad_<weight>` output that autodiff produces
//!   directly by a matmul (`dyᵀ·x` for a linear layer) is split out ([`split_weight_gemms`]): the
//!   device program outputs the two operands instead, and a small CPU program (`dw`) runs those
//!   weight-gradient GEMMs in f32. Gradients not made by a final matmul (norm gains, biases) stay in
//!   the device program.
//! - **embed** (CPU, f32): `tokens [T]` → `x [T, D]` (token gather, plus GPT-2's position rows) and
//!   its backward (`grad` with cotangent `grad_x`: scatter-add rows into the tables).
//! - **head** (CPU, f32): final norm, classifier and mean cross-entropy over all `N = B·T` targets,
//!   and its backward (`Seed::Loss`) giving `grad_x` and the norm/classifier gradients. The
//!   classifier stays on the CPU because its vocabulary-wide matrix is the largest GEMM and needs no
//!   fp16 loss scaling there (constraints C26/C27 keep wide classifiers off the ANE anyway).
//!
//! Invariant: every program's input names are canonical weight names of layer 0 (layer programs) or
//! of the model (embed/head), so binding is by name; outputs are looked up by name, never by guess.

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::model::{build_layer, layer_prefix, weight_specs};
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

/// Every program of a training step for one configuration and sequence length.
#[derive(Debug)]
pub struct StepPrograms {
    pub layer: ProgramPair,
    /// The layer backward's weight-gradient GEMMs (CPU, f32), when any were split out.
    pub layer_dw: Option<WeightGemms>,
    pub embed: ProgramPair,
    pub head: ProgramPair,
    /// Layer 0's weight names in the layer programs' input order (after `x`).
    pub layer_weights: Vec<String>,
    /// The layer programs' dtype (f32 on the CPU, f16 on fp16 devices).
    pub layer_dtype: DType,
    /// The layer forward and (split) backward graphs, weights as inputs, for re-baking.
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
        let layer_graph = build_layer(cfg, 0, seq_len, layer_dtype)?;
        let layer_weights: Vec<String> = layer_graph.inputs().skip(1).map(|(n, _, _)| n.to_string()).collect();
        let mut wrt: Vec<&str> = vec!["x"];
        wrt.extend(layer_weights.iter().map(String::as_str));
        let (layer_backward, dw) = split_weight_gemms(&grad(&layer_graph, &wrt, Seed::Cotangents)?)?;
        let layer = ProgramPair {
            forward: Program::compile(&layer_graph, device)?,
            backward: Program::compile(&layer_backward, device)?,
        };
        let layer_graphs = (layer_graph, layer_backward);
        let layer_dw = match dw {
            Some(g) => Some(WeightGemms {
                program: Program::compile(&g, cpu)?,
            }),
            None => None,
        };
        let embed_graph = embed_graph(cfg, seq_len)?;
        let tables = table_names(cfg);
        let embed = ProgramPair::new(&embed_graph, &tables, Seed::Cotangents, cpu)?;
        let head_graph = head_graph(cfg, batch * seq_len)?;
        let head_inputs: Vec<String> = head_graph
            .inputs()
            .filter(|(n, _, _)| *n != "labels")
            .map(|(n, _, _)| n.to_string())
            .collect();
        let head_wrt: Vec<&str> = head_inputs.iter().map(String::as_str).collect();
        let head = ProgramPair::new(&head_graph, &head_wrt, Seed::Loss("loss".into()), cpu)?;
        Ok(StepPrograms {
            layer,
            layer_dw,
            embed,
            head,
            layer_weights,
            layer_dtype,
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

fn weight_input(g: &mut Graph, cfg: &ModelConfig, name: &str) -> Result<orion_core::ValueId> {
    Ok(g.input(name, TensorType::new(DType::F32, shape_of(cfg, name)?))?)
}

/// `tokens` i32 `[T]` and the tables → `x [T, D]` (GPT-2 adds position rows `0..T`).
fn embed_graph(cfg: &ModelConfig, seq_len: usize) -> Result<Graph> {
    let mut g = Graph::new(format!("{}_embed_{seq_len}", cfg.family.name()));
    let tokens = g.input("tokens", TensorType::new(DType::I32, [seq_len]))?;
    let tables = table_names(cfg);
    let wte = weight_input(&mut g, cfg, tables[0])?;
    let mut x = g.gather(wte, tokens)?;
    if let Some(wpe_name) = tables.get(1) {
        let wpe = weight_input(&mut g, cfg, wpe_name)?;
        let rows = g.slice_axis(wpe, 0, 0, seq_len)?;
        x = g.add(x, rows)?;
    }
    g.set_output("x", x)?;
    Ok(g)
}

/// `x [N, D]`, final norm weights, classifier and i32 `labels [N]` → scalar mean cross-entropy `loss`.
fn head_graph(cfg: &ModelConfig, rows: usize) -> Result<Graph> {
    let mut g = Graph::new(format!("{}_head_{rows}", cfg.family.name()));
    let x = g.input("x", TensorType::new(DType::F32, [rows, cfg.dim]))?;
    let normed = match cfg.family {
        Family::Gpt2 => {
            let gamma = weight_input(&mut g, cfg, "ln_f.weight")?;
            let beta = weight_input(&mut g, cfg, "ln_f.bias")?;
            layer_norm(&mut g, x, gamma, beta, cfg.norm_eps)?
        }
        Family::Llama => {
            let gamma = weight_input(&mut g, cfg, "model.norm.weight")?;
            rms_norm(&mut g, x, gamma, cfg.norm_eps)?
        }
    };
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
