//! Text generation: prefill the prompt, then KV-cache decode steps, sampling one token per step.
//!
//! - `sampling`: greedy, temperature, top-k, top-p with a seeded ChaCha RNG;
//! - `kv_cache`: the host-side cache fed to the decode-step graph.
//!
//! A `Generator` compiles, once, a decode-step graph for each size its growing cache takes (64, 128,
//! 192, … rows up to its capacity, [`kv_cache::cache_row_sizes`]) with the model's weights baked in as
//! constants (`WeightMode::Constants`; the programs share one copy of every derived weight): the
//! smallest when it is created (so a model the backend cannot compile fails there), each larger one
//! when a cache first grows to it (a 255-token generation needs 4 of Stories110M's 16; compiling
//! all 16 up front was 33 ms of a 0.35 s start). One prefill graph per prompt length it meets is
//! kept for reuse. Each step runs the program of the
//! cache's current size, so its attention reads the rows the position needs rounded up to a
//! multiple of 64 (of a sixteenth of the next power of two past 1024), not the whole context. `generate` runs prefill on the prompt (filling the cache from its `k.{i}`/
//! `v.{i}` outputs), samples from the last row's logits, then feeds each new token to the decode
//! step at the next position, storing the step's new key/value rows in the cache. It stops at
//! `max_new_tokens`, at a stop token (which is returned), when the cache is full, or when the
//! per-token callback asks to. Models never name a backend: the caller passes one.
//!
//! Invariant: greedy generation with the cache gives the same tokens as re-running the full forward
//! graph on the growing sequence ([`reforward_greedy`], the slow reference), up to float rounding.

pub mod kv_cache;
pub mod layered;
pub mod sampling;
pub mod stepper;

pub use kv_cache::KvCache;
pub use sampling::{argmax, Sampler, SamplingOptions};

use crate::error::{ModelError, Result};
use crate::model::{decode_mask, token_tensor, Model, WeightMode};
use orion_core::backend::{Backend, Executable};
use orion_core::{DType, Graph, Tensor};
use std::collections::{BTreeMap, HashMap};

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// New tokens to produce at most (the prompt does not count).
    pub max_new_tokens: usize,
    pub sampling: SamplingOptions,
    /// Seed of the sampling RNG (unused by greedy decoding).
    pub seed: u64,
    /// Generation stops after producing any of these (the stop token is included in the output).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            sampling: SamplingOptions::greedy(),
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    StopToken(u32),
    /// The KV cache (context) has no room for another position.
    ContextFull,
    /// The per-token callback returned `false`.
    Callback,
}

/// Wall-clock timings of one `generate` call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Prompt forward including the prefill graph's compilation the first time a length is seen.
    pub prefill_ms: f64,
    pub prompt_tokens: usize,
    /// Time spent in decode steps (graph runs, cache updates, sampling).
    pub decode_ms: f64,
    pub decode_steps: usize,
}

impl Timing {
    /// Decode throughput in tokens per second (0 when no step ran).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_steps == 0 || self.decode_ms <= 0.0 {
            return 0.0;
        }
        self.decode_steps as f64 / (self.decode_ms / 1000.0)
    }
}

/// The result of `generate`: the new tokens (not the prompt), why it stopped, and timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub timing: Timing,
}

/// Compiled programs for generating from one model on one backend.
#[derive(Debug)]
pub struct Generator<'m> {
    model: &'m Model,
    backend: &'m dyn Backend,
    dtype: DType,
    capacity: usize,
    /// The decode-step programs by cache rows.
    decode: BTreeMap<usize, (Graph, Box<dyn Executable>)>,
    prefill: HashMap<usize, (Graph, Box<dyn Executable>)>,
    /// The cache of the previous `generate`, reused by the next (a fresh one is 2 × layers ×
    /// capacity × width zeroed values the prefill would fault in: 4 ms of GPT-2's 128-token
    /// prefill).
    spare_cache: Option<KvCache>,
}

impl<'m> Generator<'m> {
    /// A generator with the model's full context as cache capacity, computing in f32.
    pub fn new(model: &'m Model, backend: &'m dyn Backend) -> Result<Generator<'m>> {
        Generator::with_capacity(model, backend, model.config().max_seq_len, DType::F32)
    }

    /// A generator whose cache holds `capacity` positions (prompt plus new tokens), in `dtype`.
    pub fn with_capacity(
        model: &'m Model,
        backend: &'m dyn Backend,
        capacity: usize,
        dtype: DType,
    ) -> Result<Generator<'m>> {
        let mut generator = Generator {
            model,
            backend,
            dtype,
            capacity,
            decode: BTreeMap::new(),
            prefill: HashMap::new(),
            spare_cache: None,
        };
        generator.compile_decode(kv_cache::cache_rows_for(0, capacity))?;
        Ok(generator)
    }

    /// Compiles the decode program for a cache of `rows` rows unless it already is.
    fn compile_decode(&mut self, rows: usize) -> Result<()> {
        if !self.decode.contains_key(&rows) {
            let graph = self.model.decode_graph(rows, self.dtype, WeightMode::Constants)?;
            let exe = self.backend.compile(&graph)?;
            self.decode.insert(rows, (graph, exe));
        }
        Ok(())
    }

    /// Cache sizes whose decode programs are compiled so far, smallest first.
    pub fn compiled_decode_sizes(&self) -> Vec<usize> {
        self.decode.keys().copied().collect()
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Generates after `prompt`, calling `on_token` with each new token as soon as it is chosen;
    /// `on_token` returns `false` to stop early.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        let mut cache = match self.spare_cache.take() {
            Some(cache) => cache,
            None => KvCache::growing(self.model.config(), self.capacity, self.dtype),
        };
        cache.clear();
        let mut session = CpuSession {
            generator: self,
            cache,
            inputs: StepInputs::default(),
        };
        let generation = stepper::run_generation(&mut session, prompt, options, on_token);
        let CpuSession {
            generator,
            cache,
            inputs,
        } = session;
        // The decode inputs share the cache's storage; without them the cache is its sole owner.
        drop(inputs);
        generator.spare_cache = Some(cache);
        generation
    }

    /// Runs the prompt through the prefill graph, fills the cache, returns the last row's logits.
    fn prefill(&mut self, tokens: Tensor, cache: &mut KvCache) -> Result<Vec<f32>> {
        let len = tokens.numel();
        if !self.prefill.contains_key(&len) {
            let graph = self.model.prefill_graph(len, self.dtype, WeightMode::Constants)?;
            let exe = self.backend.compile(&graph)?;
            self.prefill.insert(len, (graph, exe));
        }
        let (graph, exe) = self
            .prefill
            .get(&len)
            .ok_or_else(|| ModelError::Usage(format!("no prefill program for {len} tokens")))?;
        let inputs = self.model.bind(graph, vec![("tokens", tokens)])?;
        let outputs = exe.run(&inputs)?;
        let logits = store_step_outputs(graph, &outputs, cache, self.model.config().n_layers)?;
        cache.advance(len)?;
        // Copied into the cache: the buffers go back to the CPU backend's pool, so the next
        // prefill's outputs need no fresh pages.
        outputs.into_iter().for_each(orion_core::cpu::recycle);
        Ok(logits)
    }

    /// Feeds `token` at position `cache.len()`; stores its keys/values; returns its logits.
    ///
    /// `inputs` holds the inputs of the decode program for the cache's current size from one step
    /// to the next: the first step of a size binds them all; later steps replace each data input.
    /// The cache inputs share the cache's storage (no copy) and are released right after the run
    /// (see [`release_cache_inputs`]), so the cache is again the only owner of its tensors and
    /// stores the step's new rows (or grows) in place.
    fn decode_step(&mut self, token: u32, cache: &mut KvCache, inputs: &mut StepInputs) -> Result<Vec<f32>> {
        let position = cache.len();
        cache.reserve(position + 1)?;
        let rows = cache.rows();
        self.compile_decode(rows)?;
        let pos = i32::try_from(position).map_err(|_| ModelError::Usage(format!("position {position} too large")))?;
        let vocab = self.model.config().vocab_size;
        let (graph, exe) = self
            .decode
            .get(&rows)
            .ok_or_else(|| ModelError::Usage(format!("no decode program for a cache of {rows} rows")))?;
        if inputs.rows != rows || inputs.tensors.is_empty() {
            let mut data = vec![
                ("token".to_string(), token_tensor(&[token], vocab)?),
                ("position".to_string(), Tensor::i32([1], vec![pos])),
                ("mask".to_string(), decode_mask(rows, position, self.dtype)?),
            ];
            data.extend(cache.inputs()?);
            let (names, tensors): (Vec<String>, Vec<Tensor>) = data.into_iter().unzip();
            let named = names.iter().map(String::as_str).zip(tensors).collect();
            *inputs = StepInputs {
                rows,
                tensors: self.model.bind(graph, named)?,
            };
        } else {
            for (slot, (name, _, _)) in inputs.tensors.iter_mut().zip(graph.inputs()) {
                *slot = match name {
                    "token" => token_tensor(&[token], vocab)?,
                    "position" => Tensor::i32([1], vec![pos]),
                    "mask" => decode_mask(rows, position, self.dtype)?,
                    cache_input if cache_input.starts_with("cache.") => cache.input(cache_input)?,
                    _ => continue, // a weight: unchanged
                };
            }
        }
        let outputs = exe.run(&inputs.tensors);
        release_cache_inputs(graph, &mut inputs.tensors);
        let outputs = outputs?;
        let logits = store_step_outputs(graph, &outputs, cache, self.model.config().n_layers)?;
        cache.advance(1)?;
        Ok(logits)
    }
}

/// The bound inputs of the decode program for a cache of `rows` rows.
#[derive(Default)]
struct StepInputs {
    rows: usize,
    tensors: Vec<Tensor>,
}

/// Replaces the `cache.*` tensors among a decode step's `inputs` by empty placeholders, dropping
/// the step's references to the cache's storage (the next step puts fresh references back).
fn release_cache_inputs(graph: &Graph, inputs: &mut [Tensor]) {
    for (slot, (name, _, _)) in inputs.iter_mut().zip(graph.inputs()) {
        if name.starts_with("cache.") {
            *slot = Tensor::f32([0], Vec::new());
        }
    }
}

/// Writes a prefill/decode run's `k.{i}`/`v.{i}` outputs into the cache; returns the logits row.
fn store_step_outputs(graph: &Graph, outputs: &[Tensor], cache: &mut KvCache, layers: usize) -> Result<Vec<f32>> {
    let by_name: HashMap<&str, &Tensor> = graph
        .outputs()
        .iter()
        .map(|o| o.name.as_str())
        .zip(outputs.iter())
        .collect();
    let get = |name: &str| {
        by_name
            .get(name)
            .copied()
            .ok_or_else(|| ModelError::Usage(format!("graph {} has no output {name:?}", graph.name())))
    };
    for layer in 0..layers {
        cache.write(layer, get(&format!("k.{layer}"))?, get(&format!("v.{layer}"))?)?;
    }
    let logits = get("logits")?;
    let vocab = logits.shape().dims().last().copied().unwrap_or(0);
    let all = logits
        .as_f32()
        .ok_or_else(|| ModelError::Usage("the step's logits are not a float tensor".into()))?;
    Ok(all[all.len().saturating_sub(vocab)..].to_vec())
}

/// Greedy generation without a cache: the full forward graph on the growing sequence at every
/// step (weights as inputs, one compilation per length). Slow; the reference for the cached path.
pub fn reforward_greedy(model: &Model, backend: &dyn Backend, prompt: &[u32], steps: usize) -> Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    for _ in 0..steps {
        let logits = forward_logits(model, backend, &seq)?;
        let vocab = model.config().vocab_size;
        let last = logits.to_f32_vec();
        seq.push(argmax(&last[last.len().saturating_sub(vocab)..])?);
    }
    Ok(seq[prompt.len()..].to_vec())
}

/// Logits `[T, V]` of `tokens` from the forward graph in f32 (weights bound as inputs).
pub fn forward_logits(model: &Model, backend: &dyn Backend, tokens: &[u32]) -> Result<Tensor> {
    let graph = model.forward_graph(tokens.len(), DType::F32, WeightMode::Inputs)?;
    let exe = backend.compile(&graph)?;
    let inputs = model.bind(
        &graph,
        vec![("tokens", token_tensor(tokens, model.config().vocab_size)?)],
    )?;
    let mut outputs = exe.run(&inputs)?;
    outputs
        .pop()
        .ok_or_else(|| ModelError::Usage("the forward graph returned no logits".into()))
}

/// One `generate` call of a [`Generator`]: its cache and the decode step's reused input tensors.
struct CpuSession<'a, 'm> {
    generator: &'a mut Generator<'m>,
    cache: KvCache,
    inputs: StepInputs,
}

impl stepper::TokenStepper for CpuSession<'_, '_> {
    fn capacity(&self) -> usize {
        self.generator.capacity
    }

    fn len(&self) -> usize {
        self.cache.len()
    }

    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.cache.clear();
        let tokens = token_tensor(prompt, self.generator.model.config().vocab_size)?;
        self.generator.prefill(tokens, &mut self.cache)
    }

    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.generator.decode_step(token, &mut self.cache, &mut self.inputs)
    }
}
