//! Model graphs and the `Model` (a configuration plus its weights).
//!
//! Three graph kinds are built for each family (`gpt2`, `llama`), all from `orion_core::composite`:
//! - **forward** `[T]`: input `tokens` i32 `[T]`; output `logits` `[T, V]`;
//! - **prefill** `[T]`: as forward, but outputs only the last row `logits` `[1, V]` and every layer's
//!   keys and values `k.{i}`, `v.{i}` `[n_kv, T, head_dim]` (keys after RoPE) to fill a KV cache;
//! - **decode step** (capacity `L`, static shapes): inputs `token` i32 `[1]`, `position` i32 `[1]`,
//!   `mask` `[1, L]` and per layer `cache.k.{i}`, `cache.v.{i}` `[n_kv, L, head_dim]`; outputs
//!   `logits` `[1, V]` and the new rows `k.{i}`, `v.{i}` `[n_kv, 1, head_dim]` for the host to store at
//!   `position`. The mask is 0 for cache rows `< position` (already written) and
//!   [`composite::MASK_VALUE`] from `position` on: the current token's own key and value come from the
//!   new rows, not from the cache (see [`cached_attention`]).
//!
//! One-layer graphs ([`build_layer`], and [`build_layer_batched`] for `B` sequences in `x [B·T, D]`
//! with attention kept within each sequence) serve the per-layer training programs; `layer_step`
//! builds the per-layer inference programs of devices.
//!
//! Weights are either graph inputs named by the canonical names of [`weight_specs`] (declared after
//! the data inputs, in spec order) or constants shared with a `Model` (`WeightMode::Constants`, no
//! copy for f32). With constants, linear layers that read the same input (q/k/v; Llama's gate/up)
//! are one product with their weights stacked into one new constant, split afterwards
//! (`Builder::projections`): fewer, wider GEMMs and GEMVs, the same values. Canonical names: Llama
//! uses the Hugging Face names unchanged (`model.embed_tokens.weight`,
//! `model.layers.{i}.self_attn.q_proj.weight`, …, `lm_head.weight` when untied); GPT-2 uses the
//! Hugging Face names without the `transformer.` prefix, with `c_attn` split into
//! `h.{i}.attn.{q,k,v}_proj.{weight,bias}` and every matrix in `nn.Linear` layout `[out, in]`
//! (Hugging Face's `Conv1D` stores `[in, out]`); a tied head has no tensor of its own.
//!
//! Invariant: a `Model` holds exactly the tensors of `weight_specs(config)`, each f32 of the listed
//! shape (checked by [`Model::new`]); every graph built here passes `orion_core::verify`.

pub mod gpt2;
pub mod layer_step;
pub mod llama;
mod stack;

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use orion_core::composite::{self, merge_heads, MASK_VALUE};
use orion_core::{DType, Graph, Tensor, TensorData, TensorType, ValueId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stack::stack_rows;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// A tensor the model needs: canonical name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl WeightSpec {
    fn new(name: impl Into<String>, shape: &[usize]) -> WeightSpec {
        WeightSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

/// Every tensor of a model with this configuration, in canonical order.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    match cfg.family {
        Family::Gpt2 => gpt2::weight_specs(cfg),
        Family::Llama => llama::weight_specs(cfg),
    }
}

/// Where a graph's weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightMode {
    /// Graph inputs named by the canonical names (for training and for one compiled program per shape).
    Inputs,
    /// Constants holding the model's tensors (inference; the weights are part of the program).
    Constants,
}

/// Which graph a family builder produces (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GraphKind {
    Forward {
        seq_len: usize,
    },
    Prefill {
        seq_len: usize,
    },
    Decode {
        cache_len: usize,
    },
    /// One layer on `x [T, D]` (per-layer training programs).
    Layer {
        seq_len: usize,
    },
    /// One layer on `x [T, D]` that also returns its keys and values `[T, kv_dim]` (per-layer prefill).
    LayerPrefill {
        seq_len: usize,
    },
    /// One layer's decode step on a surface bucket `x [bucket, D]` (row 0 is the token) against caches
    /// `[cache_len, kv_dim]`; see [`layer_step`].
    LayerDecode {
        cache_len: usize,
        bucket: usize,
    },
}

/// The forward graph with weights as inputs: `tokens` i32 `[T]` → `logits` `[T, V]`.
pub fn build_forward(cfg: &ModelConfig, seq_len: usize, dtype: DType) -> Result<Graph> {
    build(cfg, GraphKind::Forward { seq_len }, dtype, None)
}

/// The prefill graph with weights as inputs: last-row logits and every layer's keys and values.
pub fn build_prefill(cfg: &ModelConfig, seq_len: usize, dtype: DType) -> Result<Graph> {
    build(cfg, GraphKind::Prefill { seq_len }, dtype, None)
}

/// The KV-cache decode-step graph of capacity `cache_len`, weights as inputs.
pub fn build_decode_step(cfg: &ModelConfig, cache_len: usize, dtype: DType) -> Result<Graph> {
    build(cfg, GraphKind::Decode { cache_len }, dtype, None)
}

/// The canonical-name prefix of layer `layer`'s tensors (`h.{i}.` or `model.layers.{i}.`).
pub fn layer_prefix(cfg: &ModelConfig, layer: usize) -> String {
    match cfg.family {
        Family::Gpt2 => format!("h.{layer}."),
        Family::Llama => format!("model.layers.{layer}."),
    }
}

/// One transformer block as its own graph, for per-layer training programs: input `x` `[T, D]`,
/// then layer `layer`'s weights as inputs (canonical names, spec order), output `y` `[T, D]`.
/// The block is built by the same family code as the full model graphs.
pub fn build_layer(cfg: &ModelConfig, layer: usize, seq_len: usize, dtype: DType) -> Result<Graph> {
    build_layer_graph(cfg, layer, GraphKind::Layer { seq_len }, dtype)
}

/// [`build_layer`] for `batch` sequences at once: `x` `[B·T, D]` holds the sequences one after
/// another, attention stays within each sequence (causal), `y` `[B·T, D]`. Every row gets the
/// values the one-sequence graph gives it (the same ops, batched; sums may differ in order).
pub fn build_layer_batched(
    cfg: &ModelConfig,
    layer: usize,
    batch: usize,
    seq_len: usize,
    dtype: DType,
) -> Result<Graph> {
    build_layer_graph_of(cfg, layer, GraphKind::Layer { seq_len }, batch, dtype)
}

/// A one-layer graph of `kind` (`Layer`, `LayerPrefill` or `LayerDecode`): input `x`, the kind's data
/// inputs (see [`layer_step`]), then the layer's weights as inputs; output `y` (and `k`, `v`).
pub(crate) fn build_layer_graph(cfg: &ModelConfig, layer: usize, kind: GraphKind, dtype: DType) -> Result<Graph> {
    build_layer_graph_of(cfg, layer, kind, 1, dtype)
}

/// [`build_layer_graph`] over `batch` sequences (only `Layer` graphs take more than one).
fn build_layer_graph_of(cfg: &ModelConfig, layer: usize, kind: GraphKind, batch: usize, dtype: DType) -> Result<Graph> {
    cfg.validate()?;
    if batch == 0 || (batch > 1 && !matches!(kind, GraphKind::Layer { .. })) {
        return Err(ModelError::Usage(format!(
            "layer graph: {batch} sequences (only training layer graphs take a batch)"
        )));
    }
    let (seq_len, name) = match kind {
        GraphKind::Layer { seq_len } => (seq_len, format!("{}_layer_{seq_len}", cfg.family.name())),
        GraphKind::LayerPrefill { seq_len } => (seq_len, format!("{}_layer_prefill_{seq_len}", cfg.family.name())),
        // The decode bucket's rows are surface padding, not positions: only the cache must exist.
        GraphKind::LayerDecode { cache_len, bucket } => (
            if cache_len == 0 || bucket == 0 { 0 } else { 1 },
            format!("{}_layer_decode_{cache_len}_{bucket}", cfg.family.name()),
        ),
        GraphKind::Forward { .. } | GraphKind::Prefill { .. } | GraphKind::Decode { .. } => {
            return Err(ModelError::Usage("a layer graph is built for a layer kind".into()))
        }
    };
    if layer >= cfg.n_layers || seq_len == 0 || seq_len > cfg.max_seq_len || !dtype.is_float() {
        return Err(ModelError::Usage(format!(
            "layer graph: layer {layer} of {}, length {seq_len} of {}, dtype {dtype}",
            cfg.n_layers, cfg.max_seq_len
        )));
    }
    let name = if batch > 1 { format!("{name}_b{batch}") } else { name };
    let mut g = Graph::new(name);
    let rows = match kind {
        GraphKind::LayerDecode { bucket, .. } => bucket,
        _ => seq_len,
    };
    let x = g.input("x", TensorType::new(dtype, [batch * rows, cfg.dim]))?;
    let step_inputs = layer_step::declare_inputs(&mut g, cfg, kind, dtype)?;
    let prefix = layer_prefix(cfg, layer);
    let mut weights = HashMap::new();
    for spec in weight_specs(cfg).into_iter().filter(|s| s.name.starts_with(&prefix)) {
        let value = g.input(spec.name.clone(), TensorType::new(dtype, spec.shape.clone()))?;
        weights.insert(spec.name, value);
    }
    // A block reads only `x`, its weights and the RoPE rows; `tokens` is unused here.
    let mut b = Builder {
        g,
        cfg,
        kind,
        dtype,
        batch,
        tokens: x,
        position: None,
        mask: step_inputs.mask,
        caches: step_inputs.caches,
        rope: step_inputs.rope,
        weights,
        source: None,
    };
    let y = match cfg.family {
        Family::Gpt2 => gpt2::block(&mut b, x, layer)?,
        Family::Llama => llama::layer_block(&mut b, x, layer)?,
    };
    b.g.set_output("y", y)?;
    orion_core::verify::verify(&b.g)?;
    Ok(b.g)
}

fn build<'a>(cfg: &'a ModelConfig, kind: GraphKind, dtype: DType, model: Option<&'a Model>) -> Result<Graph> {
    cfg.validate()?;
    if !dtype.is_float() {
        return Err(ModelError::Usage(format!(
            "model graphs compute in f32 or f16, not {dtype}"
        )));
    }
    let (name, len) = match kind {
        GraphKind::Forward { seq_len } => ("forward", seq_len),
        GraphKind::Prefill { seq_len } => ("prefill", seq_len),
        GraphKind::Decode { cache_len } => ("decode", cache_len),
        GraphKind::Layer { .. } | GraphKind::LayerPrefill { .. } | GraphKind::LayerDecode { .. } => {
            return Err(ModelError::Usage(
                "a whole-model graph is built for a model kind".into(),
            ))
        }
    };
    if len == 0 || len > cfg.max_seq_len {
        return Err(ModelError::Usage(format!(
            "{name} length {len} must be between 1 and the context length {}",
            cfg.max_seq_len
        )));
    }
    let mut b = Builder::new(cfg, kind, dtype, format!("{}_{name}_{len}", cfg.family.name()))?;
    b.declare_weights(model)?;
    match cfg.family {
        Family::Gpt2 => gpt2::build(&mut b)?,
        Family::Llama => llama::build(&mut b)?,
    }
    orion_core::verify::verify(&b.g)?;
    Ok(b.g)
}

/// Graph under construction: data inputs, weights by name, and the attention strategy.
#[derive(Debug)]
pub(crate) struct Builder<'a> {
    pub g: Graph,
    pub cfg: &'a ModelConfig,
    pub kind: GraphKind,
    pub dtype: DType,
    /// Sequences in the rows (batched training layer graphs; 1 for every other graph).
    pub batch: usize,
    /// `tokens` `[T]` or `token` `[1]`.
    pub tokens: ValueId,
    /// Decode only: `position` i32 `[1]`.
    pub position: Option<ValueId>,
    mask: Option<ValueId>,
    caches: Vec<(ValueId, ValueId)>,
    /// Layer decode only: the RoPE rows `cos`, `sin` `[bucket, head_dim]` given as inputs.
    pub rope: Option<(ValueId, ValueId)>,
    weights: HashMap<String, ValueId>,
    /// The model whose weights are the graph's constants (`WeightMode::Constants`).
    source: Option<&'a Model>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &'a ModelConfig, kind: GraphKind, dtype: DType, name: String) -> Result<Builder<'a>> {
        let mut g = Graph::new(name);
        let (hd, n_kv) = (cfg.head_dim(), cfg.n_kv_heads);
        let (tokens, position, mask, caches) = match kind {
            GraphKind::Forward { seq_len } | GraphKind::Prefill { seq_len } => (
                g.input("tokens", TensorType::new(DType::I32, [seq_len]))?,
                None,
                None,
                vec![],
            ),
            GraphKind::Decode { cache_len } => {
                let token = g.input("token", TensorType::new(DType::I32, [1]))?;
                let position = g.input("position", TensorType::new(DType::I32, [1]))?;
                let mask = g.input("mask", TensorType::new(dtype, [1, cache_len]))?;
                let mut caches = Vec::with_capacity(cfg.n_layers);
                for i in 0..cfg.n_layers {
                    let ty = TensorType::new(dtype, [n_kv, cache_len, hd]);
                    let k = g.input(format!("cache.k.{i}"), ty.clone())?;
                    let v = g.input(format!("cache.v.{i}"), ty)?;
                    caches.push((k, v));
                }
                (token, Some(position), Some(mask), caches)
            }
            GraphKind::Layer { .. } | GraphKind::LayerPrefill { .. } | GraphKind::LayerDecode { .. } => {
                return Err(ModelError::Usage("layer graphs are built by build_layer_graph".into()))
            }
        };
        Ok(Builder {
            g,
            cfg,
            kind,
            dtype,
            batch: 1,
            tokens,
            position,
            mask,
            caches,
            rope: None,
            weights: HashMap::new(),
            source: None,
        })
    }

    /// Declares every weight of the spec, as inputs or as constants from `model`.
    fn declare_weights(&mut self, model: Option<&'a Model>) -> Result<()> {
        self.source = model;
        for spec in weight_specs(self.cfg) {
            let value = match model {
                None => self
                    .g
                    .input(spec.name.clone(), TensorType::new(self.dtype, spec.shape.clone()))?,
                Some(m) => {
                    let tensor = m.tensor_as(&spec.name, self.dtype)?;
                    self.g.add_node(orion_core::Op::Const { value: tensor }, vec![])?[0]
                }
            };
            self.weights.insert(spec.name, value);
        }
        Ok(())
    }

    /// The value of weight `name` (declared by `declare_weights`).
    pub fn w(&self, name: &str) -> Result<ValueId> {
        self.weights
            .get(name)
            .copied()
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                expected: vec![],
            })
    }

    /// `x · Wᵀ (+ b)` for each linear layer in `names` (canonical prefixes without `.weight`), all
    /// reading the same `x`. When every weight is a constant (inference graphs) the layers are one
    /// product with the weights (and biases) stacked into one constant, split afterwards: one wide
    /// GEMM or GEMV instead of several narrow ones, the same values.
    pub fn projections(&mut self, x: ValueId, names: &[String]) -> Result<Vec<ValueId>> {
        let mut weights = Vec::with_capacity(names.len());
        let mut biases = Vec::with_capacity(names.len());
        for name in names {
            weights.push(self.w(&format!("{name}.weight"))?);
            if self.cfg.biases {
                biases.push(self.w(&format!("{name}.bias"))?);
            }
        }
        let key = names.join("+");
        let stacked = match (
            self.stack_constants(&weights, &format!("{key}.weight"))?,
            self.cfg.biases,
        ) {
            (Some(w), false) => Some((w, None)),
            (Some(w), true) => self
                .stack_constants(&biases, &format!("{key}.bias"))?
                .map(|b| (w, Some(b))),
            (None, _) => None,
        };
        let Some((w, bias)) = stacked.filter(|_| names.len() > 1) else {
            let mut out = Vec::with_capacity(names.len());
            for (i, &w) in weights.iter().enumerate() {
                let y = composite::linear(&mut self.g, x, w)?;
                out.push(match biases.get(i) {
                    Some(&b) => self.g.add(y, b)?,
                    None => y,
                });
            }
            return Ok(out);
        };
        let mut y = composite::linear(&mut self.g, x, w)?;
        if let Some(b) = bias {
            y = self.g.add(y, b)?;
        }
        let sizes: Vec<usize> = weights.iter().map(|&w| self.g.dims(w)[0]).collect();
        Ok(self.g.split(y, -1, &sizes)?)
    }

    /// The constant values of `values` stacked along axis 0 into one new constant, or `None` when
    /// any of them is not a constant. With a source model, the stacked tensor `name` is built once
    /// per model and dtype and shared by every graph built while one holds it, so the CPU backend
    /// derives its transposed or half copies once for all of them (see [`Model::shared_stack`]).
    fn stack_constants(&mut self, values: &[ValueId], name: &str) -> Result<Option<ValueId>> {
        let mut parts = Vec::with_capacity(values.len());
        for &v in values {
            let orion_core::Op::Const { value } = &self.g.producer(v).op else {
                return Ok(None);
            };
            parts.push(Arc::clone(value));
        }
        let dtype = self.dtype;
        let tensor = match self.source {
            Some(model) => model.shared_stack(&format!("{name}:{dtype}"), || stack_rows(&parts, dtype))?,
            None => stack_rows(&parts, dtype)?.map(Arc::new),
        };
        let Some(tensor) = tensor else {
            return Ok(None);
        };
        Ok(Some(
            self.g.add_node(orion_core::Op::Const { value: tensor }, vec![])?[0],
        ))
    }

    /// `x [rows, H·d]` → `[H, T, d]`, or `[B, H, T, d]` for a batched graph.
    pub fn split_heads(&mut self, x: ValueId, heads: usize) -> Result<ValueId> {
        if self.batch == 1 {
            return Ok(composite::split_heads(&mut self.g, x, heads)?);
        }
        let (rows, width) = (self.g.dims(x)[0], self.g.dims(x)[1]);
        let r = self
            .g
            .reshape(x, &[self.batch, rows / self.batch, heads, width / heads])?;
        Ok(self.g.transpose(r, &[0, 2, 1, 3])?)
    }

    /// The inverse of [`Builder::split_heads`]: `[H, T, d]` (or `[B, H, T, d]`) → `[rows, H·d]`.
    pub fn merge_heads(&mut self, x: ValueId) -> Result<ValueId> {
        if self.batch == 1 {
            return Ok(merge_heads(&mut self.g, x)?);
        }
        let d = self.g.dims(x);
        let t = self.g.transpose(x, &[0, 2, 1, 3])?;
        Ok(self.g.reshape(t, &[d[0] * d[2], d[1] * d[3]])?)
    }

    /// Number of token rows the graph computes per sequence (T, or 1 for a decode step).
    pub fn rows(&self) -> usize {
        match self.kind {
            GraphKind::Forward { seq_len }
            | GraphKind::Prefill { seq_len }
            | GraphKind::Layer { seq_len }
            | GraphKind::LayerPrefill { seq_len } => seq_len,
            GraphKind::LayerDecode { bucket, .. } => bucket,
            GraphKind::Decode { .. } => 1,
        }
    }

    /// A float constant in the graph's dtype.
    pub fn float_const(&mut self, dims: &[usize], values: Vec<f32>) -> Result<ValueId> {
        let tensor =
            Tensor::new(self.dtype, dims.to_vec(), TensorData::Float(values)).map_err(orion_core::CoreError::from)?;
        Ok(self.g.constant(tensor)?)
    }

    /// Attention of layer `layer` for `q [H, T, d]`, `k, v [n_kv, T, d]` (already position-encoded):
    /// causal over the rows for forward/prefill, against the cache for a decode step. Records
    /// `k.{layer}`/`v.{layer}` as outputs for prefill and decode. Returns `[H, T, d]`.
    pub fn attend(&mut self, layer: usize, q: ValueId, k: ValueId, v: ValueId) -> Result<ValueId> {
        match self.kind {
            GraphKind::Layer { .. } if self.batch > 1 => batched_causal_attention(&mut self.g, q, k, v),
            GraphKind::Forward { .. } | GraphKind::Layer { .. } => {
                Ok(composite::causal_attention(&mut self.g, q, k, v)?)
            }
            GraphKind::LayerPrefill { .. } => {
                let (k_rows, v_rows) = (merge_heads(&mut self.g, k)?, merge_heads(&mut self.g, v)?);
                self.g.set_output("k", k_rows)?;
                self.g.set_output("v", v_rows)?;
                Ok(composite::causal_attention(&mut self.g, q, k, v)?)
            }
            GraphKind::LayerDecode { .. } => {
                let mask = self
                    .mask
                    .ok_or_else(|| ModelError::Usage("layer decode graph has no mask".into()))?;
                let cache = *self
                    .caches
                    .first()
                    .ok_or_else(|| ModelError::Usage("layer decode graph has no cache".into()))?;
                layer_step::attend_decode(&mut self.g, q, k, v, cache, mask)
            }
            GraphKind::Prefill { seq_len } => {
                self.g.set_output(format!("k.{layer}"), k)?;
                self.g.set_output(format!("v.{layer}"), v)?;
                if self.last_row_only(layer) {
                    let q_last = self.g.slice_axis(q, 1, seq_len - 1, seq_len)?;
                    return last_query_attention(&mut self.g, q_last, k, v);
                }
                Ok(composite::causal_attention(&mut self.g, q, k, v)?)
            }
            GraphKind::Decode { .. } => {
                let (cache_k, cache_v) = *self
                    .caches
                    .get(layer)
                    .ok_or_else(|| ModelError::Usage(format!("decode graph has no cache for layer {layer}")))?;
                let mask = self
                    .mask
                    .ok_or_else(|| ModelError::Usage("decode graph has no mask".into()))?;
                self.g.set_output(format!("k.{layer}"), k)?;
                self.g.set_output(format!("v.{layer}"), v)?;
                cached_attention(&mut self.g, q, k, v, (cache_k, cache_v), mask)
            }
        }
    }

    /// True for the last layer of a prefill graph of several rows: only its keys and values are
    /// needed for every row (the cache); its attention output, residual adds and MLP only for the
    /// last row, whose logits are the graph's output. The other rows' would be computed and thrown
    /// away: on GPT-2's 128-token prefill, 1.4 of its 22.5 GFLOP.
    pub fn last_row_only(&self, layer: usize) -> bool {
        matches!(self.kind, GraphKind::Prefill { seq_len } if seq_len > 1) && layer + 1 == self.cfg.n_layers
    }

    /// The rows of the residual stream `x [T, D]` that layer `layer`'s attention output is added
    /// to: the last row alone where [`Builder::last_row_only`], all of them otherwise.
    pub fn residual_rows(&mut self, layer: usize, x: ValueId) -> Result<ValueId> {
        if !self.last_row_only(layer) {
            return Ok(x);
        }
        let rows = self.g.dims(x)[0];
        Ok(self.g.slice_axis(x, 0, rows - 1, rows)?)
    }

    /// Final step shared by the families: (last row for prefill) `x · headᵀ` → output `logits`.
    pub fn finish(&mut self, x: ValueId, head: ValueId) -> Result<()> {
        let rows = self.g.dims(x)[0];
        let x = match self.kind {
            GraphKind::Prefill { .. } if rows > 1 => self.g.slice_axis(x, 0, rows - 1, rows)?,
            GraphKind::Prefill { .. } => x,
            GraphKind::Forward { .. }
            | GraphKind::Decode { .. }
            | GraphKind::Layer { .. }
            | GraphKind::LayerPrefill { .. }
            | GraphKind::LayerDecode { .. } => x,
        };
        let logits = composite::linear(&mut self.g, x, head)?;
        self.g.set_output("logits", logits)?;
        Ok(())
    }
}

/// `composite::causal_attention` over a batch of sequences: `q [B, H, T, d]`, `k, v [B, n_kv, T, d]`
/// → `[B, H, T, d]`, the same ops with a leading batch axis (grouped heads fold into query rows).
fn batched_causal_attention(g: &mut Graph, q: ValueId, k: ValueId, v: ValueId) -> Result<ValueId> {
    let (qd, kd) = (g.dims(q), g.dims(k));
    let (batch, heads, t, head_dim, kv_heads) = (qd[0], qd[1], qd[2], qd[3], kd[1]);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ModelError::Usage(format!(
            "{heads} query heads are not a multiple of {kv_heads} key/value heads"
        )));
    }
    let group = heads / kv_heads;
    let q_grouped = g.reshape(q, &[batch, kv_heads, group * t, head_dim])?;
    let scores = g.matmul(q_grouped, k, false, true)?;
    // Reshaped before scaling (a view; the same values as scaling first): the scale and the mask
    // add are then on one shape and run as one fused pass, forward and backward.
    let scores = g.reshape(scores, &[batch, kv_heads, group, t, t])?;
    let scores = g.mul_scalar(scores, 1.0 / (head_dim as f32).sqrt())?;
    let mask = composite::causal_mask(g, t, g.dtype(q))?;
    let masked = g.add(scores, mask)?;
    let probs = g.softmax(masked, -1)?;
    let probs = g.reshape(probs, &[batch, kv_heads, group * t, t])?;
    let out = g.matmul(probs, v, false, false)?;
    Ok(g.reshape(out, &[batch, heads, t, head_dim])?)
}

/// Single-token attention against a KV cache: `q [H, 1, d]`, new `k, v [n_kv, 1, d]`, caches
/// `[n_kv, L, d]`, additive `mask [1, L]` (0 for valid cache rows, `MASK_VALUE` otherwise).
///
/// Scores against the cache (masked) and against the new key are concatenated, so one softmax
/// covers the valid cache rows plus the current token; the output is the matching mix of cached and
/// new values. Grouped heads fold into rows as in `composite::causal_attention` (query head `h`
/// reads key/value head `h / (H / n_kv)`). Returns `[H, 1, d]`.
pub fn cached_attention(
    g: &mut Graph,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    cache: (ValueId, ValueId),
    mask: ValueId,
) -> Result<ValueId> {
    let (cache_k, cache_v) = cache;
    let (qd, cd) = (g.dims(q), g.dims(cache_k));
    if qd.len() != 3 || cd.len() != 3 || qd[1] != 1 || g.dims(k) != [cd[0], 1, cd[2]] || qd[2] != cd[2] {
        return Err(ModelError::Usage(format!(
            "cached_attention needs q [H,1,d], k [n_kv,1,d], cache [n_kv,L,d]; got {qd:?}, {:?}, {cd:?}",
            g.dims(k)
        )));
    }
    let (heads, head_dim, kv_heads, cache_len) = (qd[0], qd[2], cd[0], cd[1]);
    if heads % kv_heads != 0 {
        return Err(ModelError::Usage(format!(
            "{heads} query heads are not a multiple of {kv_heads} key/value heads"
        )));
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let q = g.reshape(q, &[kv_heads, group, head_dim])?;
    let past = g.matmul(q, cache_k, false, true)?;
    let past = g.mul_scalar(past, scale)?;
    let past = g.add(past, mask)?;
    let current = g.matmul(q, k, false, true)?;
    let current = g.mul_scalar(current, scale)?;
    let scores = g.concat(&[past, current], -1)?;
    let probs = g.softmax(scores, -1)?;
    let parts = g.split(probs, -1, &[cache_len, 1])?;
    let from_past = g.matmul(parts[0], cache_v, false, false)?;
    let from_current = g.matmul(parts[1], v, false, false)?;
    let out = g.add(from_past, from_current)?;
    Ok(g.reshape(out, &[heads, 1, head_dim])?)
}

/// Attention of the last query row against every key (none is hidden from it, so no mask):
/// `softmax(q·kᵀ/√d)·v` for `q [H, 1, d]` and `k, v [H_kv, T, d]`, the values the causal form gives
/// that row (its mask adds only zeros there). Returns `[H, 1, d]`.
pub fn last_query_attention(g: &mut Graph, q: ValueId, k: ValueId, v: ValueId) -> Result<ValueId> {
    let (qd, kd) = (g.dims(q), g.dims(k));
    if qd.len() != 3 || kd.len() != 3 || qd[1] != 1 || g.dims(v) != kd || qd[2] != kd[2] {
        return Err(ModelError::Usage(format!(
            "last_query_attention needs q [H,1,d] and k, v [n_kv,T,d]; got {qd:?}, {kd:?}, {:?}",
            g.dims(v)
        )));
    }
    let (heads, head_dim, kv_heads) = (qd[0], qd[2], kd[0]);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ModelError::Usage(format!(
            "{heads} query heads are not a multiple of {kv_heads} key/value heads"
        )));
    }
    let q = g.reshape(q, &[kv_heads, heads / kv_heads, head_dim])?;
    let scores = g.matmul(q, k, false, true)?;
    let scores = g.mul_scalar(scores, 1.0 / (head_dim as f32).sqrt())?;
    let probs = g.softmax(scores, -1)?;
    let out = g.matmul(probs, v, false, false)?;
    Ok(g.reshape(out, &[heads, 1, head_dim])?)
}

/// The decode-step mask for a cache of `cache_len` rows at `position`: 0 before, `MASK_VALUE` from it.
pub fn decode_mask(cache_len: usize, position: usize, dtype: DType) -> Result<Tensor> {
    let values = (0..cache_len)
        .map(|j| if j < position { 0.0 } else { MASK_VALUE })
        .collect();
    Ok(Tensor::new(dtype, [1, cache_len], TensorData::Float(values)).map_err(orion_core::CoreError::from)?)
}

/// A configuration with its weights (f32, shared so that graphs can hold them as constants).
#[derive(Clone, Debug)]
pub struct Model {
    config: ModelConfig,
    weights: BTreeMap<String, Arc<Tensor>>,
    /// Stacked projection weights of constant-weight graphs by name and dtype, held weakly: alive
    /// while some graph (or a program compiled from one) holds them.
    stacks: Arc<Mutex<HashMap<String, Weak<Tensor>>>>,
}

impl Model {
    /// Checks that `weights` are exactly the tensors of `weight_specs(&config)` (f32, right shapes).
    pub fn new(config: ModelConfig, mut weights: BTreeMap<String, Tensor>) -> Result<Model> {
        config.validate()?;
        let mut checked = BTreeMap::new();
        for spec in weight_specs(&config) {
            let tensor = weights.remove(&spec.name).ok_or_else(|| ModelError::MissingTensor {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
            })?;
            if tensor.shape().dims() != spec.shape.as_slice() || tensor.dtype() != DType::F32 {
                return Err(ModelError::TensorShape {
                    name: spec.name,
                    expected: spec.shape,
                    found: tensor.shape().dims().to_vec(),
                });
            }
            checked.insert(spec.name, Arc::new(tensor));
        }
        if let Some((name, tensor)) = weights.into_iter().next() {
            return Err(ModelError::UnexpectedTensor {
                name,
                found: tensor.shape().dims().to_vec(),
            });
        }
        Ok(Model {
            config,
            weights: checked,
            stacks: Arc::default(),
        })
    }

    /// A model with seeded random weights (std `1/√fan_in` for matrices, 0.1 for biases, norm gains
    /// 1 ± 0.1),
    /// for tests and for training from scratch.
    pub fn random(config: ModelConfig, seed: u64) -> Result<Model> {
        use rand::Rng;
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = BTreeMap::new();
        for spec in weight_specs(&config) {
            let n: usize = spec.shape.iter().product();
            let is_norm_gain = spec.shape.len() == 1 && spec.name.ends_with("weight");
            let scale = match spec.shape.as_slice() {
                [_, fan_in] => 1.0 / (*fan_in as f32).sqrt(),
                _ => 0.1,
            };
            let values = (0..n)
                .map(|_| {
                    // Sum of uniforms: cheap, symmetric, unit variance.
                    let u: f32 = (0..3).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
                    let x = u * scale;
                    if is_norm_gain {
                        1.0 + x
                    } else {
                        x
                    }
                })
                .collect();
            weights.insert(spec.name.clone(), Tensor::f32(spec.shape.clone(), values));
        }
        Model::new(config, weights)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tensor called `name` (canonical name), if the model has it.
    pub fn weight(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.weights.get(name)
    }

    /// Every tensor in canonical (spec) order.
    pub fn weights(&self) -> Vec<(String, Arc<Tensor>)> {
        weight_specs(&self.config)
            .into_iter()
            .filter_map(|spec| self.weights.get(&spec.name).map(|t| (spec.name, Arc::clone(t))))
            .collect()
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.weights.values().map(|t| t.numel()).sum()
    }

    /// The stacked tensor called `key` if a graph still holds it, else `built` (remembered weakly).
    /// Graphs of different lengths (every prefill length, every decode cache size) then share one
    /// stacked constant instead of each copying the weights again: for GPT-2 the stacked
    /// query/key/value weights are 85 MB in f32, and the CPU backend's transposed or half copy of
    /// each is derived once per source tensor. The weights never change after construction, so a
    /// remembered stack always matches them.
    fn shared_stack(&self, key: &str, build: impl FnOnce() -> Result<Option<Tensor>>) -> Result<Option<Arc<Tensor>>> {
        let mut stacks = self.stacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stacks.retain(|_, held| held.strong_count() > 0);
        if let Some(shared) = stacks.get(key).and_then(Weak::upgrade) {
            return Ok(Some(shared));
        }
        let Some(built) = build()? else {
            return Ok(None);
        };
        let shared = Arc::new(built);
        stacks.insert(key.to_string(), Arc::downgrade(&shared));
        Ok(Some(shared))
    }

    /// Weight `name` in `dtype` (shared for f32, rounded copy for f16).
    fn tensor_as(&self, name: &str, dtype: DType) -> Result<Arc<Tensor>> {
        let tensor = self.weights.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: vec![],
        })?;
        if tensor.dtype() == dtype {
            return Ok(Arc::clone(tensor));
        }
        let data = TensorData::Float(tensor.to_f32_vec());
        let converted = Tensor::new(dtype, tensor.shape().clone(), data).map_err(orion_core::CoreError::from)?;
        Ok(Arc::new(converted))
    }

    /// The forward graph (`tokens [T]` → `logits [T, V]`).
    pub fn forward_graph(&self, seq_len: usize, dtype: DType, mode: WeightMode) -> Result<Graph> {
        build(&self.config, GraphKind::Forward { seq_len }, dtype, self.source(mode))
    }

    /// The prefill graph (last-row logits plus every layer's keys and values).
    pub fn prefill_graph(&self, seq_len: usize, dtype: DType, mode: WeightMode) -> Result<Graph> {
        build(&self.config, GraphKind::Prefill { seq_len }, dtype, self.source(mode))
    }

    /// The decode-step graph with a cache of `cache_len` rows.
    pub fn decode_graph(&self, cache_len: usize, dtype: DType, mode: WeightMode) -> Result<Graph> {
        build(&self.config, GraphKind::Decode { cache_len }, dtype, self.source(mode))
    }

    fn source(&self, mode: WeightMode) -> Option<&Model> {
        match mode {
            WeightMode::Inputs => None,
            WeightMode::Constants => Some(self),
        }
    }

    /// The input tensors of `graph` in its input order: each input named like a weight gets that
    /// weight (converted to the declared dtype), every other input must be given in `data` by name.
    pub fn bind(&self, graph: &Graph, data: Vec<(&str, Tensor)>) -> Result<Vec<Tensor>> {
        let mut data: HashMap<&str, Tensor> = data.into_iter().collect();
        let mut inputs = Vec::new();
        for (name, _, ty) in graph.inputs() {
            let tensor = match data.remove(name) {
                Some(t) => t,
                None if self.weights.contains_key(name) => self.tensor_as(name, ty.dtype)?.as_ref().clone(),
                None => return Err(ModelError::Usage(format!("no tensor given for graph input {name:?}"))),
            };
            if tensor.ty() != *ty {
                return Err(ModelError::Usage(format!(
                    "graph input {name:?} is declared {ty}, got {}",
                    tensor.ty()
                )));
            }
            inputs.push(tensor);
        }
        if let Some(name) = data.keys().next() {
            return Err(ModelError::Usage(format!(
                "graph {} has no input {name:?}",
                graph.name()
            )));
        }
        Ok(inputs)
    }
}

/// Token ids as an i32 tensor `[n]`, each checked against the vocabulary.
pub fn token_tensor(tokens: &[u32], vocab_size: usize) -> Result<Tensor> {
    let mut ids = Vec::with_capacity(tokens.len());
    for &t in tokens {
        if t as usize >= vocab_size {
            return Err(ModelError::Usage(format!(
                "token id {t} is outside the vocabulary of {vocab_size}"
            )));
        }
        ids.push(i32::try_from(t).map_err(|_| ModelError::Usage(format!("token id {t} does not fit i32")))?);
    }
    Ok(Tensor::i32([ids.len()], ids))
}

#[cfg(test)]
mod tests;
