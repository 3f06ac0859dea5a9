//! Generation with one program per transformer layer on a device (the ANE, or its simulator), the
//! token embedding and the final norm + classifier on the host CPU.
//!
//! This is the shape of inference the ANE can run: gathers by token id and vocabulary-wide
//! classifiers stay on the CPU (C31, C26/C27), each layer is a program small enough for the device,
//! and every I/O tensor is `[rows, features]` with the sequence on the surface's last axis.
//! - **prefill**: the prompt is padded with zero rows up to a *bucket* (a multiple of
//!   `prefill_multiple`, so one compiled program serves every prompt length in the bucket; the layers
//!   are causal, so padding never changes the prompt's rows); each layer's program returns `y` and its
//!   keys and values, whose first `n` rows fill the host KV cache;
//! - **decode**: the token travels in row 0 of a `decode_bucket`-row surface (the smallest the device
//!   rules allow: fp16 needs 32 rows for a 64-byte last axis, ane.md §2) and each layer's decode program
//!   attends to the cache, returning the token's key and value for the host to store.
//!
//! Weights are baked into each layer's programs (`WeightMode::Constants`: one program per layer and
//! bucket, as inference on the ANE would run them) or given as inputs (`WeightMode::Inputs`: one program
//! per bucket serves every layer, the `dynamic` training layout). The host cache is f32 and rounded to
//! the program dtype when passed in, exactly as an fp16 surface would hold it.
//!
//! Invariant: with `dtype = F32` on the CPU backend the logits equal the whole-model programs' up to
//! float reassociation; greedy tokens on the simulated ANE equal the CPU's on the test models (tested).

use super::stepper::{run_generation, TokenStepper};
use super::{GenerateOptions, Generation};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::layer_step::{
    bucket_rows, build_layer_decode, build_layer_prefill, decode_mask_rows, decode_rope_rows,
};
use crate::model::{Model, WeightMode};
use crate::train::programs::{head_name, layer_weight_name, table_names, Program};
use crate::train::strategy::bake_weights;
use orion_core::backend::Backend;
use orion_core::composite::{layer_norm, linear, rms_norm};
use orion_core::{DType, Graph, Tensor, TensorData, TensorType};
use std::collections::HashMap;

/// How the per-layer programs are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayeredOptions {
    /// Positions the cache holds (prompt plus new tokens); at most the model's context.
    pub capacity: usize,
    /// Compute dtype of the layer programs (`F16` on the ANE).
    pub dtype: DType,
    /// Rows of the decode surface (the token is row 0).
    pub decode_bucket: usize,
    /// Prompts are padded to a multiple of this many rows.
    pub prefill_multiple: usize,
    pub weights: WeightMode,
}

impl LayeredOptions {
    /// fp16 programs with the buckets an ANE whose last surface axis must be `alignment_bytes` long
    /// needs (`alignment_bytes / 2` rows), weights baked.
    pub fn for_alignment(capacity: usize, alignment_bytes: usize) -> LayeredOptions {
        let rows = (alignment_bytes / 2).max(1);
        LayeredOptions {
            capacity,
            dtype: DType::F16,
            decode_bucket: rows,
            prefill_multiple: rows,
            weights: WeightMode::Constants,
        }
    }
}

/// Per-layer programs of one model on one device, with the host KV cache.
#[derive(Debug)]
pub struct LayeredGenerator<'m> {
    model: &'m Model,
    device: &'m dyn Backend,
    options: LayeredOptions,
    /// Cache rows the decode programs declare (`capacity` rounded up to the decode bucket).
    cache_rows: usize,
    head: Program,
    /// Decode programs: one per layer (baked) or one for all (inputs).
    decode: Vec<Program>,
    /// Prefill programs by bucket length.
    prefill: HashMap<usize, Vec<Program>>,
    /// Per layer, `cache_rows × kv_dim` keys and values in the programs' dtype: handed to a decode
    /// step by sharing (no copy) and written in place once the step's inputs are dropped.
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    compiled: usize,
}

impl<'m> LayeredGenerator<'m> {
    /// Compiles the decode programs on `device` and the classifier on `host`.
    pub fn new(model: &'m Model, host: &dyn Backend, device: &'m dyn Backend, options: LayeredOptions) -> Result<Self> {
        let cfg = model.config();
        if options.capacity == 0 || options.capacity > cfg.max_seq_len {
            return Err(ModelError::Usage(format!(
                "capacity {} must be between 1 and the context length {}",
                options.capacity, cfg.max_seq_len
            )));
        }
        if options.decode_bucket == 0 || options.prefill_multiple == 0 || !options.dtype.is_float() {
            return Err(ModelError::Usage(format!(
                "invalid layered generation options {options:?}"
            )));
        }
        let cache_rows = options.capacity.div_ceil(options.decode_bucket) * options.decode_bucket;
        let cache_type = TensorType::new(options.dtype, [cache_rows, cfg.n_kv_heads * cfg.head_dim()]);
        let empty_cache = || (0..cfg.n_layers).map(|_| Tensor::zeros(&cache_type)).collect();
        let mut generator = LayeredGenerator {
            model,
            device,
            options,
            cache_rows,
            head: Program::compile(&head_graph(model)?, host)?,
            decode: Vec::new(),
            prefill: HashMap::new(),
            keys: empty_cache(),
            values: empty_cache(),
            len: 0,
            compiled: 0,
        };
        generator.decode = generator.compile_layers(|cfg, layer, dtype| {
            build_layer_decode(cfg, layer, cache_rows, options.decode_bucket, dtype)
        })?;
        Ok(generator)
    }

    /// Device programs compiled so far.
    pub fn programs_compiled(&self) -> usize {
        self.compiled
    }

    /// Generates after `prompt` (see [`run_generation`]).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        run_generation(self, prompt, options, on_token)
    }

    fn cfg(&self) -> &'m ModelConfig {
        self.model.config()
    }

    /// One program per layer (baked weights) or one for all layers (weights as inputs).
    fn compile_layers(&mut self, build: impl Fn(&ModelConfig, usize, DType) -> Result<Graph>) -> Result<Vec<Program>> {
        let (cfg, dtype) = (self.cfg(), self.options.dtype);
        let layers = match self.options.weights {
            WeightMode::Constants => cfg.n_layers,
            WeightMode::Inputs => 1,
        };
        let mut programs = Vec::with_capacity(layers);
        for layer in 0..layers {
            let graph = build(cfg, layer, dtype)?;
            let graph = match self.options.weights {
                WeightMode::Constants => bake_weights(&graph, &|name| weight_tensor(self.model, name, dtype).ok())?,
                WeightMode::Inputs => graph,
            };
            programs.push(Program::compile(&graph, self.device)?);
            self.compiled += 1;
        }
        Ok(programs)
    }

    /// Runs layer `layer`'s program (from `programs`) on `data`; weights by name when they are inputs.
    fn run_layer(&self, programs: &[Program], layer: usize, data: &[(&str, Tensor)]) -> Result<Vec<Tensor>> {
        let program = match self.options.weights {
            WeightMode::Constants => programs.get(layer),
            WeightMode::Inputs => programs.first(),
        }
        .ok_or_else(|| ModelError::Usage(format!("no program for layer {layer}")))?;
        let mut inputs = Vec::with_capacity(program.inputs.len());
        for name in &program.inputs {
            match data.iter().find(|(n, _)| n == name) {
                Some((_, t)) => inputs.push(t.clone()),
                None => {
                    let canonical = layer_weight_name(self.cfg(), name, layer);
                    inputs.push(weight_tensor(self.model, &canonical, self.options.dtype)?);
                }
            }
        }
        let outputs = program.exe.run(&inputs)?;
        ["y", "k", "v"]
            .iter()
            .map(|name| program.fetch(&outputs, name).cloned())
            .collect()
    }

    /// The host embedding of `token` at `position` (token row plus GPT-2's position row).
    fn embed_row(&self, token: u32, position: usize) -> Result<Vec<f32>> {
        let d = self.cfg().dim;
        let tables = table_names(self.cfg());
        let mut row = table_row(self.model, tables[0], token as usize, d)?;
        if let Some(wpe) = tables.get(1) {
            let pos = table_row(self.model, wpe, position, d)?;
            row.iter_mut().zip(&pos).for_each(|(a, b)| *a += b);
        }
        Ok(row)
    }

    /// Final norm and classifier of one hidden row (host, f32).
    fn logits(&self, row: Vec<f32>) -> Result<Vec<f32>> {
        let x = Tensor::f32([1, self.cfg().dim], row);
        let out = self.head.exe.run(&[x])?;
        Ok(self.head.fetch(&out, "logits")?.to_f32_vec())
    }

    /// Stores `rows` rows of a `[_, kv_dim]` key and value output at cache position `at` (in place
    /// when no step input still shares the layer's cache), rounded to the cache's dtype.
    fn store(&mut self, layer: usize, k: &Tensor, v: &Tensor, rows: usize, at: usize) -> Result<()> {
        let kv_dim = self.cfg().n_kv_heads * self.cfg().head_dim();
        let (n, half) = (rows * kv_dim, self.options.dtype == DType::F16);
        let (Some(keys), Some(values)) = (self.keys.get_mut(layer), self.values.get_mut(layer)) else {
            return Err(ModelError::Usage(format!("the cache has no layer {layer}")));
        };
        for (cache, output) in [(keys, k), (values, v)] {
            let output = output.to_f32_vec();
            let stored = cache
                .as_f32_mut()
                .and_then(|c| c.get_mut(at * kv_dim..at * kv_dim + n))
                .zip(output.get(..n));
            let Some((stored, output)) = stored else {
                return Err(ModelError::Usage(format!(
                    "cannot store {rows} cache rows at {at} from {} values",
                    output.len()
                )));
            };
            stored.copy_from_slice(output);
            if half {
                stored
                    .iter_mut()
                    .for_each(|x| *x = orion_core::tensor::round_to_f16(*x));
            }
        }
        Ok(())
    }

    /// The padded prompt length for `n` tokens.
    fn prefill_bucket(&self, n: usize) -> usize {
        let m = self.options.prefill_multiple;
        (n.div_ceil(m) * m).min(self.cfg().max_seq_len).max(n)
    }
}

impl TokenStepper for LayeredGenerator<'_> {
    fn capacity(&self) -> usize {
        self.options.capacity
    }

    fn len(&self) -> usize {
        self.len
    }

    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        let (n, d, dtype) = (prompt.len(), self.cfg().dim, self.options.dtype);
        if n == 0 || n > self.options.capacity {
            return Err(ModelError::Usage(format!(
                "a prompt of {n} tokens does not fit a context of {}",
                self.options.capacity
            )));
        }
        let bucket = self.prefill_bucket(n);
        if !self.prefill.contains_key(&bucket) {
            let programs = self.compile_layers(|cfg, layer, dtype| build_layer_prefill(cfg, layer, bucket, dtype))?;
            self.prefill.insert(bucket, programs);
        }
        let mut x = vec![0.0; bucket * d];
        for (i, &token) in prompt.iter().enumerate() {
            x[i * d..(i + 1) * d].copy_from_slice(&self.embed_row(token, i)?);
        }
        let programs = self.prefill.remove(&bucket).unwrap_or_default();
        let result: Result<()> = (0..self.cfg().n_layers).try_for_each(|layer| {
            let xt = float_tensor(dtype, vec![bucket, d], x.clone())?;
            let out = self.run_layer(&programs, layer, &[("x", xt)])?;
            self.store(layer, &out[1], &out[2], n, 0)?;
            x = out[0].to_f32_vec();
            x[n * d..].iter_mut().for_each(|v| *v = 0.0);
            Ok(())
        });
        self.prefill.insert(bucket, programs);
        result?;
        self.len = n;
        self.logits(x[(n - 1) * d..n * d].to_vec())
    }

    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let (position, dtype, bucket) = (self.len, self.options.dtype, self.options.decode_bucket);
        if position >= self.options.capacity {
            return Err(ModelError::Usage(format!(
                "the context of {position} positions is full"
            )));
        }
        let cfg = self.cfg();
        let mut row = self.embed_row(token, position)?;
        let mask = decode_mask_rows(self.cache_rows, position, bucket, dtype)?;
        let rope = match cfg.family {
            crate::config::Family::Llama => Some(decode_rope_rows(cfg, position, bucket, dtype)?),
            crate::config::Family::Gpt2 => None,
        };
        let programs = std::mem::take(&mut self.decode);
        let result: Result<()> = (0..cfg.n_layers).try_for_each(|layer| {
            let mut data = vec![
                ("x", bucket_rows(&row, bucket, dtype)?),
                ("mask", mask.clone()),
                ("cache.k", self.keys[layer].clone()),
                ("cache.v", self.values[layer].clone()),
            ];
            if let Some((cos, sin)) = &rope {
                data.push(("cos", cos.clone()));
                data.push(("sin", sin.clone()));
            }
            let out = self.run_layer(&programs, layer, &data)?;
            // The inputs share the cache's storage: dropped first, the cache is written in place.
            drop(data);
            self.store(layer, &out[1], &out[2], 1, position)?;
            row = out[0].to_f32_vec()[..cfg.dim].to_vec();
            Ok(())
        });
        self.decode = programs;
        result?;
        self.len += 1;
        self.logits(row)
    }
}

/// Weight `name` of `model` as a tensor of `dtype`.
fn weight_tensor(model: &Model, name: &str, dtype: DType) -> Result<Tensor> {
    let t = model.weight(name).ok_or_else(|| ModelError::MissingTensor {
        name: name.to_string(),
        expected: vec![],
    })?;
    float_tensor(dtype, t.shape().dims().to_vec(), t.to_f32_vec())
}

/// Row `index` of the `[rows, width]` table `name`.
fn table_row(model: &Model, name: &str, index: usize, width: usize) -> Result<Vec<f32>> {
    let t = model.weight(name).ok_or_else(|| ModelError::MissingTensor {
        name: name.to_string(),
        expected: vec![],
    })?;
    let values = t
        .as_f32()
        .ok_or_else(|| ModelError::Usage(format!("table {name} is not f32")))?;
    values
        .get(index * width..(index + 1) * width)
        .map(<[f32]>::to_vec)
        .ok_or_else(|| ModelError::Usage(format!("row {index} is outside table {name}")))
}

/// The host classifier: `x [1, D]` → final norm → `logits [1, V]`, weights baked (f32).
fn head_graph(model: &Model) -> Result<Graph> {
    let cfg = model.config();
    let mut g = Graph::new(format!("{}_head_logits", cfg.family.name()));
    let x = g.input("x", TensorType::new(DType::F32, [1, cfg.dim]))?;
    let weight = |g: &mut Graph, name: &str| -> Result<orion_core::ValueId> {
        let t = model.weight(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: vec![],
        })?;
        Ok(g.constant(t.as_ref().clone())?)
    };
    let normed = match cfg.family {
        crate::config::Family::Gpt2 => {
            let gamma = weight(&mut g, "ln_f.weight")?;
            let beta = weight(&mut g, "ln_f.bias")?;
            layer_norm(&mut g, x, gamma, beta, cfg.norm_eps)?
        }
        crate::config::Family::Llama => {
            let gamma = weight(&mut g, "model.norm.weight")?;
            rms_norm(&mut g, x, gamma, cfg.norm_eps)?
        }
    };
    let head = weight(&mut g, head_name(cfg))?;
    let logits = linear(&mut g, normed, head)?;
    g.set_output("logits", logits)?;
    Ok(g)
}

fn float_tensor(dtype: DType, dims: Vec<usize>, values: Vec<f32>) -> Result<Tensor> {
    Ok(Tensor::new(dtype, dims, TensorData::Float(values)).map_err(orion_core::CoreError::from)?)
}
