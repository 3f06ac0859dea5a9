//! One forward/backward pass over a batch: the loss and the gradient of every parameter.
//!
//! Order: embed the whole batch (CPU) → every layer forward (device; one program call per
//! `StepPrograms::layer_batch` sequences; only each layer's input is kept) → head on all `B·T` rows
//! at once (CPU, f32: the final-norm program, then classifier and cross-entropy as fused kernels a
//! block of rows at a time, then the norm's backward) → layers backward from the last (device; each
//! backward program recomputes its layer's forward) → embedding backward (CPU). With a loss scale
//! `s ≠ 1` the cotangent entering the layers is multiplied by `s` and the layer and embedding
//! gradients are divided by `s` at the end, so the fp16 layer programs see gradients in a
//! representable range while the returned gradients are unscaled.
//!
//! Binding: the parameters are converted to tensors once per call (in the dtype of the programs
//! that read them; [`StepRunner::loss_and_grads_in_place`] moves the f32 ones in and back out
//! instead of copying them) and *moved* into each program's input list and back after the call, so
//! no parameter is copied per program call. Large buffers the step is done with (a layer's saved
//! activations after its backward, row copies, the head's temporaries) go to the CPU backend's
//! spare pool, so the next outputs reuse memory that is already paged in.
//!
//! The head's classifier products run in the runner's [`ProductPrecision`] (`with_products`; f32
//! unless asked); the programs compute in whatever their backends were built with.
//!
//! Invariants: parameters and gradients are keyed by canonical names, f32, row-major in
//! `weight_specs` shapes; gradients of a tensor used twice (a tied head) are summed.

use super::classifier::CLASSIFIER_BLOCK;
pub use super::classifier::{fused_classifier, fused_classifier_with};
use super::programs::{head_name, layer_weight_name, Program, StepPrograms, SAVED_PREFIX};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::weight_specs;
use orion_core::cpu::{recycle_vec, ProductPrecision};
use orion_core::{DType, Tensor, TensorData};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Parameters or gradients by canonical name.
pub type Params = BTreeMap<String, Vec<f32>>;

/// One batch: `inputs` and `targets` i32, `batch × seq_len`, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
}

/// The result of one forward/backward.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Mean cross-entropy over every target token of the batch (unscaled).
    pub loss: f32,
    /// Unscaled gradients of every parameter.
    pub grads: Params,
    /// Where the time went.
    pub timings: StepTimings,
}

/// Measured wall time of each phase of training steps, ms (summed over micro-batches). The runner
/// fills the forward/backward phases; the trainer adds data, optimiser and weight-update time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimings {
    /// Token embedding forward and backward (CPU).
    pub embed_ms: f64,
    /// Layer forward programs.
    pub forward_ms: f64,
    /// Final norm, classifier and cross-entropy, forward and backward (CPU).
    pub head_ms: f64,
    /// Layer backward programs (activation gradients; weight gradients too where they are not split).
    pub backward_ms: f64,
    /// Weight-gradient GEMMs split out of the layer backward (CPU).
    pub weight_grad_ms: f64,
    /// Batch assembly.
    pub data_ms: f64,
    /// Gradient accumulation, overflow check, clipping and AdamW.
    pub optimizer_ms: f64,
    /// Making the new weights take effect on the device (the update strategy: nothing for `dynamic`).
    pub update_ms: f64,
}

impl StepTimings {
    /// Sum of every phase.
    pub fn total_ms(&self) -> f64 {
        self.embed_ms
            + self.forward_ms
            + self.head_ms
            + self.backward_ms
            + self.weight_grad_ms
            + self.data_ms
            + self.optimizer_ms
            + self.update_ms
    }

    /// Phase-wise sum.
    pub fn add(&mut self, other: &StepTimings) {
        self.embed_ms += other.embed_ms;
        self.forward_ms += other.forward_ms;
        self.head_ms += other.head_ms;
        self.backward_ms += other.backward_ms;
        self.weight_grad_ms += other.weight_grad_ms;
        self.data_ms += other.data_ms;
        self.optimizer_ms += other.optimizer_ms;
        self.update_ms += other.update_ms;
    }
}

/// Milliseconds since `start`.
pub(crate) fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// Parameters as program inputs, by canonical name (moved out for a program call and back).
type WeightTensors = HashMap<String, Tensor>;

/// Named tensors handed to a program as data inputs (and handed back after the call).
type NamedTensors = Vec<(String, Tensor)>;

/// What a layer's backward needs from its forward: the layer's input and its saved activations.
type Kept = (Tensor, NamedTensors);

/// Runs forward/backward passes for a configuration with compiled [`StepPrograms`].
#[derive(Debug)]
pub struct StepRunner {
    pub cfg: ModelConfig,
    pub seq_len: usize,
    pub batch: usize,
    pub programs: StepPrograms,
    shapes: BTreeMap<String, Vec<usize>>,
    /// Parameters read by the layer programs (bound in the layer dtype; the rest in f32).
    layer_params: HashSet<String>,
    /// The arithmetic of the head's classifier products.
    products: ProductPrecision,
}

impl StepRunner {
    pub fn new(cfg: ModelConfig, seq_len: usize, batch: usize, programs: StepPrograms) -> StepRunner {
        let shapes = weight_specs(&cfg).into_iter().map(|s| (s.name, s.shape)).collect();
        let layer_params = (0..cfg.n_layers)
            .flat_map(|l| programs.layer_weights.iter().map(move |w| (l, w)))
            .map(|(l, w)| layer_weight_name(&cfg, w, l))
            .collect();
        StepRunner {
            cfg,
            seq_len,
            batch,
            programs,
            shapes,
            layer_params,
            products: ProductPrecision::F32,
        }
    }

    /// The runner with the head's classifier products in `products` (f32 by default). The programs
    /// keep the precision of the backends they were compiled by: build those with the same
    /// `CpuOptions::products` for a step in one arithmetic.
    pub fn with_products(mut self, products: ProductPrecision) -> StepRunner {
        self.products = products;
        self
    }

    /// The arithmetic of the head's classifier products.
    pub fn products(&self) -> ProductPrecision {
        self.products
    }

    /// Loss and gradients of `params` on `batch`, with `loss_scale` applied inside the layers.
    pub fn loss_and_grads(&self, params: &Params, batch: &Batch, loss_scale: f32) -> Result<StepOutput> {
        self.check_batch(batch)?;
        let mut weights = self.weight_tensors(params)?;
        self.step(&mut weights, batch, loss_scale)
    }

    /// As [`StepRunner::loss_and_grads`], without copying the parameters: those the programs read
    /// in f32 are moved into the program inputs for the call and back into `params` afterwards
    /// (also when the step fails), so `params` holds the same values after the call.
    pub fn loss_and_grads_in_place(&self, params: &mut Params, batch: &Batch, loss_scale: f32) -> Result<StepOutput> {
        self.check_batch(batch)?;
        let (mut weights, moved) = self.take_weight_tensors(params)?;
        let out = self.step(&mut weights, batch, loss_scale);
        let restored = restore_params(params, weights, &moved);
        let out = out?;
        restored?;
        Ok(out)
    }

    /// The batch's sizes and token ids, checked against the step's shape and vocabulary.
    fn check_batch(&self, batch: &Batch) -> Result<()> {
        let n = self.batch * self.seq_len;
        if batch.inputs.len() != n || batch.targets.len() != n || n == 0 {
            return Err(ModelError::Usage(format!(
                "batch holds {} inputs and {} targets, the step needs {}×{}",
                batch.inputs.len(),
                batch.targets.len(),
                self.batch,
                self.seq_len
            )));
        }
        self.check_tokens(batch)
    }

    /// The forward/backward pass on a checked `batch` with the parameters bound as `weights`.
    fn step(&self, weights: &mut WeightTensors, batch: &Batch, loss_scale: f32) -> Result<StepOutput> {
        let (n, d) = (batch.inputs.len(), self.cfg.dim);
        let mut grads = Params::new();
        let mut timings = StepTimings::default();
        let mut clock = Instant::now();
        let tokens = Tensor::i32([n], batch.inputs.clone());
        let embed = &self.programs.embed;
        let out = self.run(&embed.forward, vec![("tokens", tokens.clone())], weights, None)?;
        let x = into_f32_vec(take_output(&embed.forward, out, "x")?);
        timings.embed_ms += ms_since(clock);
        clock = Instant::now();
        let (x, kept) = self.layers_forward(weights, x)?;
        timings.forward_ms += ms_since(clock);
        clock = Instant::now();
        let (loss, mut dx) = self.head(weights, x, &batch.targets, &mut grads)?;
        timings.head_ms += ms_since(clock);
        clock = Instant::now();
        if loss_scale != 1.0 {
            dx.iter_mut().for_each(|v| *v *= loss_scale);
        }
        let mut layer_grads = Params::new();
        let dx = self.layers_backward(weights, kept, dx, &mut layer_grads, &mut timings)?;
        timings.backward_ms += ms_since(clock) - timings.weight_grad_ms;
        clock = Instant::now();
        let cot = Tensor::f32([n, d], dx);
        let data = vec![("tokens", tokens), ("grad_x", cot)];
        let data = data.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        let (mut out, data) = self.run_with(&embed.backward, data, weights, None)?;
        data.into_iter().for_each(|(_, t)| orion_core::cpu::recycle(t));
        collect_grads(&embed.backward, &mut out, |n| n.to_string(), &mut layer_grads)?;
        timings.embed_ms += ms_since(clock);
        merge_layer_grads(&mut grads, layer_grads, 1.0 / loss_scale);
        for (name, shape) in &self.shapes {
            grads
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; shape.iter().product()]);
        }
        Ok(StepOutput { loss, grads, timings })
    }

    /// Rows of `x` `[B·T, D]` as the layer programs take them (`layer_batch` sequences per call).
    fn layer_chunks(&self, x: Vec<f32>) -> Vec<Tensor> {
        let rows = self.programs.layer_batch.clamp(1, self.batch) * self.seq_len;
        split_rows(x, rows * self.cfg.dim, [rows, self.cfg.dim], self.programs.layer_dtype)
    }

    /// Every layer forward on `x` `[B·T, D]`; returns the last layer's output (f32) and, per layer
    /// and chunk, the layer's input and the activations its backward takes.
    fn layers_forward(&self, weights: &mut WeightTensors, x: Vec<f32>) -> Result<(Vec<f32>, Vec<Vec<Kept>>)> {
        let mut x = self.layer_chunks(x);
        let mut kept = Vec::with_capacity(self.cfg.n_layers);
        for layer in 0..self.cfg.n_layers {
            let mut layer_kept = Vec::with_capacity(x.len());
            for xc in &mut x {
                let (y, saved) = self.layer_forward(weights, layer, xc.clone())?;
                layer_kept.push((std::mem::replace(xc, y), saved));
            }
            kept.push(layer_kept);
        }
        Ok((join_rows(x), kept))
    }

    /// Every layer backward from the last, with `dx` `[B·T, D]` the gradient of the last output;
    /// adds the weight gradients to `grads`; returns the gradient of the first layer's input.
    fn layers_backward(
        &self,
        weights: &mut WeightTensors,
        mut kept: Vec<Vec<Kept>>,
        dx: Vec<f32>,
        grads: &mut Params,
        timings: &mut StepTimings,
    ) -> Result<Vec<f32>> {
        let mut dx = self.layer_chunks(dx);
        for layer in (0..self.cfg.n_layers).rev() {
            let inputs = kept.pop().unwrap_or_default();
            dx = inputs
                .into_iter()
                .zip(dx)
                .map(|(xc, dy)| self.layer_backward(weights, layer, xc, dy, grads, timings))
                .collect::<Result<Vec<_>>>()?;
        }
        Ok(join_rows(dx))
    }

    fn check_tokens(&self, batch: &Batch) -> Result<()> {
        let vocab = self.cfg.vocab_size as i32;
        match batch
            .inputs
            .iter()
            .chain(&batch.targets)
            .find(|&&id| id < 0 || id >= vocab)
        {
            Some(id) => Err(ModelError::Usage(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Every parameter as a tensor of its spec shape, in the dtype of the programs that read it.
    fn weight_tensors(&self, params: &Params) -> Result<WeightTensors> {
        let mut out = HashMap::with_capacity(params.len());
        for (name, values) in params {
            if let Some((shape, dtype)) = self.binding(name, values.len())? {
                out.insert(name.clone(), float_tensor(dtype, shape, values.clone()));
            }
        }
        Ok(out)
    }

    /// As [`StepRunner::weight_tensors`], moving the values of parameters bound in f32 out of
    /// `params` (left empty; their names are returned) instead of copying them.
    fn take_weight_tensors(&self, params: &mut Params) -> Result<(WeightTensors, Vec<String>)> {
        let mut out = HashMap::with_capacity(params.len());
        let mut moved = Vec::new();
        let bindings = params
            .iter()
            .map(|(name, values)| self.binding(name, values.len()))
            .collect::<Result<Vec<_>>>()?;
        for ((name, values), binding) in params.iter_mut().zip(bindings) {
            let Some((shape, dtype)) = binding else {
                continue;
            };
            let values = match dtype {
                DType::F32 => {
                    moved.push(name.clone());
                    std::mem::take(values)
                }
                _ => values.clone(),
            };
            out.insert(name.clone(), float_tensor(dtype, shape, values));
        }
        Ok((out, moved))
    }

    /// The spec shape and program dtype parameter `name` of `len` values is bound with (`None` for
    /// a name the model does not have; an error for a wrong size).
    fn binding(&self, name: &str, len: usize) -> Result<Option<(&[usize], DType)>> {
        let Some(shape) = self.shapes.get(name) else {
            return Ok(None);
        };
        if len != shape.iter().product::<usize>() {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.clone(),
                found: vec![len],
            });
        }
        let dtype = match self.layer_params.contains(name) {
            true => self.programs.layer_dtype,
            false => DType::F32,
        };
        Ok(Some((shape, dtype)))
    }

    /// Runs `program`: inputs named in `data` are taken from it; every other input is the weight of
    /// that name (renamed for `layer`), moved out of `weights` for the call and back afterwards.
    fn run(
        &self,
        program: &Program,
        data: Vec<(&str, Tensor)>,
        weights: &mut WeightTensors,
        layer: Option<usize>,
    ) -> Result<Vec<Tensor>> {
        let data = data.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        Ok(self.run_with(program, data, weights, layer)?.0)
    }

    /// As [`StepRunner::run`], also handing the `data` tensors back after the call.
    fn run_with(
        &self,
        program: &Program,
        mut data: NamedTensors,
        weights: &mut WeightTensors,
        layer: Option<usize>,
    ) -> Result<(Vec<Tensor>, NamedTensors)> {
        let mut inputs = Vec::with_capacity(program.inputs.len());
        // Where each input came from: `Ok(index into data)` or `Err(weight name)`.
        let mut source: Vec<std::result::Result<usize, String>> = Vec::with_capacity(program.inputs.len());
        let mut missing = None;
        for name in &program.inputs {
            if let Some(at) = data.iter().position(|(n, _)| n == name) {
                inputs.push(std::mem::replace(&mut data[at].1, placeholder()));
                source.push(Ok(at));
                continue;
            }
            let canonical = match layer {
                Some(l) => layer_weight_name(&self.cfg, name, l),
                None => name.clone(),
            };
            match weights.remove(&canonical) {
                Some(tensor) => {
                    inputs.push(tensor);
                    source.push(Err(canonical));
                }
                None => {
                    missing = Some(canonical);
                    break;
                }
            }
        }
        let result = match missing {
            None => program.exe.run(&inputs).map_err(ModelError::from),
            Some(name) => Err(ModelError::MissingTensor { name, expected: vec![] }),
        };
        for (tensor, from) in inputs.into_iter().zip(source) {
            match from {
                Ok(at) => data[at].1 = tensor,
                Err(name) => {
                    weights.insert(name, tensor);
                }
            }
        }
        Ok((result?, data))
    }

    /// Runs the layer forward; returns `y` and the activations the backward takes (if it saves them).
    fn layer_forward(&self, weights: &mut WeightTensors, layer: usize, x: Tensor) -> Result<(Tensor, NamedTensors)> {
        let fwd = &self.programs.layer_pair(layer)?.forward;
        let mut out = self.run(fwd, vec![("x", x)], weights, Some(layer))?;
        let saved = self
            .programs
            .saved_activations()
            .iter()
            .map(|name| Ok((name.clone(), take_named(fwd, &mut out, name)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((take_named(fwd, &mut out, "y")?, saved))
    }

    /// Runs the layer backward; adds the weight gradients to `grads`, returns `grad_x`.
    fn layer_backward(
        &self,
        weights: &mut WeightTensors,
        layer: usize,
        (x, saved): Kept,
        dy: Tensor,
        grads: &mut Params,
        timings: &mut StepTimings,
    ) -> Result<Tensor> {
        let bwd = &self.programs.layer_pair(layer)?.backward;
        let mut data = vec![("x".to_string(), x), ("grad_y".to_string(), dy)];
        data.extend(saved);
        let (mut out, mut data) = self.run_with(bwd, data, weights, Some(layer))?;
        collect_grads(bwd, &mut out, |n| layer_weight_name(&self.cfg, n, layer), grads)?;
        let mut spent = Vec::new();
        if let Some(dw) = &self.programs.layer_dw {
            let start = Instant::now();
            let operands = dw
                .program
                .inputs
                .iter()
                .map(|name| to_dtype(dw_operand(bwd, &mut out, &mut data, name)?, DType::F32))
                .collect::<Result<Vec<_>>>()?;
            let mut grads_out = dw.program.exe.run(&operands)?;
            collect_grads(
                &dw.program,
                &mut grads_out,
                |n| layer_weight_name(&self.cfg, n, layer),
                grads,
            )?;
            spent = operands;
            timings.weight_grad_ms += ms_since(start);
        }
        let dx = take_named(bwd, &mut out, "grad_x")?;
        // The activations, their gradients and the weight-gradient operands are done with: their
        // storage goes to the CPU backend's spare pool for the next step's outputs.
        let done = out.into_iter().chain(data.into_iter().map(|(_, t)| t)).chain(spent);
        recycle_distinct(done.collect());
        Ok(dx)
    }

    /// The head on all rows: final norm, classifier and cross-entropy, and their backward; adds the
    /// head's weight gradients to `grads`; returns (mean loss, grad_x `[N·D]`).
    fn head(
        &self,
        weights: &mut WeightTensors,
        x: Vec<f32>,
        targets: &[i32],
        grads: &mut Params,
    ) -> Result<(f32, Vec<f32>)> {
        let (n, d) = (targets.len(), self.cfg.dim);
        let norm = &self.programs.head;
        let x = Tensor::f32([n, d], x);
        let out = self.run(&norm.forward, vec![("x", x.clone())], weights, None)?;
        let x_norm = into_f32_vec(take_output(&norm.forward, out, "x_norm")?);
        let (loss, d_norm) = self.classifier(weights, &x_norm, targets, grads)?;
        recycle_vec(x_norm);
        let data = vec![
            ("x".to_string(), x),
            ("grad_x_norm".to_string(), Tensor::f32([n, d], d_norm)),
        ];
        let (mut out, data) = self.run_with(&norm.backward, data, weights, None)?;
        data.into_iter().for_each(|(_, t)| orion_core::cpu::recycle(t));
        collect_grads(&norm.backward, &mut out, |n| n.to_string(), grads)?;
        Ok((loss, into_f32_vec(take_output(&norm.backward, out, "grad_x")?)))
    }

    /// Classifier and mean cross-entropy of `x_norm [N, D]` ([`fused_classifier_with`] in the
    /// runner's precision); adds the classifier's gradient to `grads`. Returns (loss, grad x_norm).
    fn classifier(
        &self,
        weights: &WeightTensors,
        x_norm: &[f32],
        targets: &[i32],
        grads: &mut Params,
    ) -> Result<(f32, Vec<f32>)> {
        let name = head_name(&self.cfg);
        let w = weights
            .get(name)
            .and_then(Tensor::as_f32)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                expected: vec![],
            })?;
        let block = CLASSIFIER_BLOCK / self.cfg.vocab_size.max(1);
        let (loss, dx, dw) = fused_classifier_with(self.products, w, self.cfg.dim, x_norm, targets, block)?;
        add_grad(grads, name, dw)?;
        Ok((loss, dx))
    }
}

/// A zero-element stand-in for a tensor moved out of a list.
fn placeholder() -> Tensor {
    Tensor::f32([0], Vec::new())
}

/// The output `name` of a run of `program`, moved out of `outputs`.
fn take_output(program: &Program, mut outputs: Vec<Tensor>, name: &str) -> Result<Tensor> {
    take_named(program, &mut outputs, name)
}

/// The output `name` of a run of `program`, moved out of `outputs` (a placeholder stays behind).
fn take_named(program: &Program, outputs: &mut [Tensor], name: &str) -> Result<Tensor> {
    let at = program.output(name)?;
    outputs
        .get_mut(at)
        .map(|t| std::mem::replace(t, placeholder()))
        .ok_or_else(|| ModelError::Usage(format!("program returned no tensor for output {name:?}")))
}

/// The weight-gradient operand `name` (`dw_in.<id>`): an output of the backward run, or, when the
/// backward takes that activation as the saved input `saved.<id>`, that input.
fn dw_operand(bwd: &Program, out: &mut [Tensor], data: &mut [(String, Tensor)], name: &str) -> Result<Tensor> {
    if bwd.outputs.iter().any(|o| o == name) {
        return take_named(bwd, out, name);
    }
    let saved = name.strip_prefix("dw_in.").map(|id| format!("{SAVED_PREFIX}{id}"));
    data.iter_mut()
        .find(|(n, _)| Some(n) == saved.as_ref())
        .map(|(_, t)| std::mem::replace(t, placeholder()))
        .ok_or_else(|| ModelError::Usage(format!("no tensor for the weight-gradient operand {name:?}")))
}

/// `values` (`len` a multiple of `chunk`) as tensors of `dims` in `dtype`, one per chunk (f32 values
/// in one chunk are moved, not copied; copied ones go to the spare pool).
fn split_rows(values: Vec<f32>, chunk: usize, dims: [usize; 2], dtype: DType) -> Vec<Tensor> {
    if values.len() == chunk && dtype == DType::F32 {
        return vec![float_tensor(dtype, &dims, values)];
    }
    let tensors = values
        .chunks(chunk.max(1))
        .map(|c| float_tensor(dtype, &dims, c.to_vec()))
        .collect();
    recycle_vec(values);
    tensors
}

/// The rows of `chunks` one after another, as f32 (a single f32 chunk is moved, not copied;
/// copied chunks go to the spare pool).
fn join_rows(mut chunks: Vec<Tensor>) -> Vec<f32> {
    if chunks.len() == 1 && chunks[0].dtype() == DType::F32 {
        return chunks.pop().map(into_f32_vec).unwrap_or_default();
    }
    let mut out = Vec::with_capacity(chunks.iter().map(Tensor::numel).sum());
    for c in chunks {
        match c.as_f32() {
            Some(v) => out.extend_from_slice(v),
            None => out.extend(c.to_f32_vec()),
        }
        orion_core::cpu::recycle(c);
    }
    out
}

/// Adds `values` to the gradient `key` (inserting it, without a copy, when absent).
fn add_grad(grads: &mut Params, key: &str, values: Vec<f32>) -> Result<()> {
    match grads.get_mut(key) {
        Some(acc) if acc.len() == values.len() => {
            acc.iter_mut().zip(&values).for_each(|(a, v)| *a += v);
            Ok(())
        }
        Some(acc) => Err(ModelError::Usage(format!(
            "gradient {key} has {} values, expected {}",
            values.len(),
            acc.len()
        ))),
        None => {
            grads.insert(key.to_string(), values);
            Ok(())
        }
    }
}

/// Gives the storage of `tensors` to the CPU backend's spare pool, each storage once: a tensor
/// sharing its storage with a later one in the list (a program output that is one of its inputs)
/// is dropped instead, so the pool never receives a copy.
fn recycle_distinct(mut tensors: Vec<Tensor>) {
    while let Some(t) = tensors.pop() {
        if !tensors.iter().any(|other| other.shares_storage_with(&t)) {
            orion_core::cpu::recycle(t);
        }
    }
}

/// Puts the values of the `moved` parameters (see `take_weight_tensors`) back into `params` from
/// their tensors in `weights` (without a copy when a tensor holds the only reference).
fn restore_params(params: &mut Params, mut weights: WeightTensors, moved: &[String]) -> Result<()> {
    let mut lost = None;
    for name in moved {
        match (params.get_mut(name), weights.remove(name)) {
            (Some(slot), Some(tensor)) => *slot = into_f32_vec(tensor),
            _ => lost = Some(name.clone()),
        }
    }
    match lost {
        None => Ok(()),
        Some(name) => Err(ModelError::MissingTensor { name, expected: vec![] }),
    }
}

/// Adds the layer and embedding gradients (computed under the loss scale) to `grads`, each
/// multiplied by `inv` (`1 / scale`); a gradient not yet in `grads` is moved in.
fn merge_layer_grads(grads: &mut Params, layer_grads: Params, inv: f32) {
    for (name, mut g) in layer_grads {
        match grads.get_mut(&name) {
            Some(acc) => {
                acc.iter_mut().zip(&g).for_each(|(a, v)| *a += v * inv);
                recycle_vec(g);
            }
            None => {
                if inv != 1.0 {
                    g.iter_mut().for_each(|v| *v *= inv);
                }
                grads.insert(name, g);
            }
        }
    }
}

/// Moves every `grad_<weight>` output of `program` (all but `grad_x`) out of `out` (a placeholder
/// stays behind) and adds it to `grads`, named by `rename`.
fn collect_grads(
    program: &Program,
    out: &mut [Tensor],
    rename: impl Fn(&str) -> String,
    grads: &mut Params,
) -> Result<()> {
    for (name, tensor) in program.outputs.iter().zip(out.iter_mut()) {
        let Some(input) = name.strip_prefix("grad_") else {
            continue;
        };
        if input == "x" {
            continue;
        }
        let values = into_f32_vec(std::mem::replace(tensor, placeholder()));
        add_grad(grads, &rename(input), values)?;
    }
    Ok(())
}

/// The elements of `t` as f32, without a copy when `t` holds the only reference to float storage.
fn into_f32_vec(t: Tensor) -> Vec<f32> {
    match t.into_data() {
        TensorData::Float(v) => v,
        TensorData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
        TensorData::Bool(v) => v.into_iter().map(|x| if x { 1.0 } else { 0.0 }).collect(),
    }
}

/// `t` converted to the float `dtype` (rounded to half for f16); integer tensors unchanged.
fn to_dtype(t: Tensor, dtype: DType) -> Result<Tensor> {
    if !t.dtype().is_float() || t.dtype() == dtype {
        return Ok(t);
    }
    Ok(float_tensor(dtype, t.shape().dims(), t.to_f32_vec()))
}

/// A float tensor of `dtype` (f16 values rounded to half by the constructor).
fn float_tensor(dtype: DType, shape: &[usize], values: Vec<f32>) -> Tensor {
    match dtype {
        DType::F16 => Tensor::f16(shape.to_vec(), values),
        _ => Tensor::f32(shape.to_vec(), values),
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
