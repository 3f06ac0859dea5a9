//! One forward/backward pass over a batch: the loss and the gradient of every parameter.
//!
//! Order: embed each sequence (CPU) → every layer forward per sequence (device; only each layer's
//! input is kept) → head forward+backward on all `B·T` rows at once (CPU, f32) → layers backward
//! from the last (device; each backward program recomputes its layer's forward) → embedding
//! backward (CPU). With a loss scale `s ≠ 1` the cotangent entering the layers is multiplied by `s`
//! and the layer and embedding gradients are divided by `s` at the end, so the fp16 layer programs
//! see gradients in a representable range while the returned gradients are unscaled.
//!
//! Invariants: parameters and gradients are keyed by canonical names, f32, row-major in
//! `weight_specs` shapes; gradients of a tensor used twice (a tied head) are summed.

use super::programs::{layer_weight_name, Program, StepPrograms};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::weight_specs;
use orion_core::{DType, Tensor};
use std::collections::BTreeMap;
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

/// Runs forward/backward passes for a configuration with compiled [`StepPrograms`].
#[derive(Debug)]
pub struct StepRunner {
    pub cfg: ModelConfig,
    pub seq_len: usize,
    pub batch: usize,
    pub programs: StepPrograms,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl StepRunner {
    pub fn new(cfg: ModelConfig, seq_len: usize, batch: usize, programs: StepPrograms) -> StepRunner {
        let shapes = weight_specs(&cfg).into_iter().map(|s| (s.name, s.shape)).collect();
        StepRunner {
            cfg,
            seq_len,
            batch,
            programs,
            shapes,
        }
    }

    /// Loss and gradients of `params` on `batch`, with `loss_scale` applied inside the layers.
    pub fn loss_and_grads(&self, params: &Params, batch: &Batch, loss_scale: f32) -> Result<StepOutput> {
        let (b, t, d) = (self.batch, self.seq_len, self.cfg.dim);
        let n = b * t;
        if batch.inputs.len() != n || batch.targets.len() != n {
            return Err(ModelError::Usage(format!(
                "batch holds {} inputs and {} targets, the step needs {b}×{t}",
                batch.inputs.len(),
                batch.targets.len()
            )));
        }
        self.check_tokens(batch)?;
        let mut grads = Params::new();
        let mut timings = StepTimings::default();
        let mut clock = Instant::now();
        let mut xs: Vec<Vec<Vec<f32>>> = Vec::with_capacity(self.cfg.n_layers + 1);
        let mut x: Vec<Vec<f32>> = Vec::with_capacity(b);
        for s in 0..b {
            let tokens = Tensor::i32([t], batch.inputs[s * t..(s + 1) * t].to_vec());
            let fwd = &self.programs.embed.forward;
            let out = fwd.exe.run(&self.bind(fwd, params, &[("tokens", tokens)], None)?)?;
            x.push(fwd.fetch(&out, "x")?.to_f32_vec());
        }
        timings.embed_ms += ms_since(clock);
        clock = Instant::now();
        for layer in 0..self.cfg.n_layers {
            let next = x
                .iter()
                .map(|xb| self.layer_forward(params, layer, xb))
                .collect::<Result<Vec<_>>>()?;
            xs.push(std::mem::replace(&mut x, next));
        }
        timings.forward_ms += ms_since(clock);
        clock = Instant::now();
        let (loss, mut dx) = self.head(params, &x, &batch.targets, &mut grads)?;
        timings.head_ms += ms_since(clock);
        clock = Instant::now();
        for row in dx.iter_mut() {
            row.iter_mut().for_each(|v| *v *= loss_scale);
        }
        let mut layer_grads = Params::new();
        for layer in (0..self.cfg.n_layers).rev() {
            for s in 0..b {
                dx[s] = self.layer_backward(params, layer, &xs[layer][s], &dx[s], &mut layer_grads, &mut timings)?;
            }
        }
        timings.backward_ms += ms_since(clock) - timings.weight_grad_ms;
        clock = Instant::now();
        for (s, dxs) in dx.iter().enumerate() {
            let tokens = Tensor::i32([t], batch.inputs[s * t..(s + 1) * t].to_vec());
            let cot = Tensor::f32([t, d], dxs.clone());
            let bwd = &self.programs.embed.backward;
            let inputs = self.bind(bwd, params, &[("tokens", tokens), ("grad_x", cot)], None)?;
            let out = bwd.exe.run(&inputs)?;
            collect_grads(bwd, &out, |n| n.to_string(), &mut layer_grads)?;
        }
        timings.embed_ms += ms_since(clock);
        let inv = 1.0 / loss_scale;
        for (name, g) in layer_grads {
            let acc = grads.entry(name).or_insert_with(|| vec![0.0; g.len()]);
            acc.iter_mut().zip(&g).for_each(|(a, v)| *a += v * inv);
        }
        for (name, shape) in &self.shapes {
            grads
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; shape.iter().product()]);
        }
        Ok(StepOutput { loss, grads, timings })
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

    /// The input tensors of `program`: data by name, weights from `params` (renamed for `layer`).
    fn bind(
        &self,
        program: &Program,
        params: &Params,
        data: &[(&str, Tensor)],
        layer: Option<usize>,
    ) -> Result<Vec<Tensor>> {
        let dtype = match layer {
            Some(_) => self.programs.layer_dtype,
            None => DType::F32,
        };
        let mut out = Vec::with_capacity(program.inputs.len());
        for name in &program.inputs {
            if let Some((_, t)) = data.iter().find(|(n, _)| n == name) {
                out.push(to_dtype(t.clone(), dtype)?);
                continue;
            }
            let canonical = match layer {
                Some(l) => layer_weight_name(&self.cfg, name, l),
                None => name.clone(),
            };
            let (values, shape) = match (params.get(&canonical), self.shapes.get(&canonical)) {
                (Some(v), Some(s)) => (v, s),
                _ => {
                    return Err(ModelError::MissingTensor {
                        name: canonical,
                        expected: vec![],
                    })
                }
            };
            if values.len() != shape.iter().product::<usize>() {
                return Err(ModelError::TensorShape {
                    name: canonical,
                    expected: shape.clone(),
                    found: vec![values.len()],
                });
            }
            out.push(float_tensor(dtype, shape, values.clone()));
        }
        Ok(out)
    }

    fn layer_forward(&self, params: &Params, layer: usize, x: &[f32]) -> Result<Vec<f32>> {
        let fwd = &self.programs.layer_pair(layer)?.forward;
        let xt = Tensor::f32([self.seq_len, self.cfg.dim], x.to_vec());
        let out = fwd.exe.run(&self.bind(fwd, params, &[("x", xt)], Some(layer))?)?;
        Ok(fwd.fetch(&out, "y")?.to_f32_vec())
    }

    /// Runs the layer backward; adds the weight gradients to `grads`, returns `grad_x`.
    fn layer_backward(
        &self,
        params: &Params,
        layer: usize,
        x: &[f32],
        dy: &[f32],
        grads: &mut Params,
        timings: &mut StepTimings,
    ) -> Result<Vec<f32>> {
        let bwd = &self.programs.layer_pair(layer)?.backward;
        let dims = [self.seq_len, self.cfg.dim];
        let data = [
            ("x", Tensor::f32(dims, x.to_vec())),
            ("grad_y", Tensor::f32(dims, dy.to_vec())),
        ];
        let out = bwd.exe.run(&self.bind(bwd, params, &data, Some(layer))?)?;
        collect_grads(bwd, &out, |n| layer_weight_name(&self.cfg, n, layer), grads)?;
        if let Some(dw) = &self.programs.layer_dw {
            let start = Instant::now();
            let operands = dw
                .program
                .inputs
                .iter()
                .map(|name| to_dtype(bwd.fetch(&out, name)?.clone(), DType::F32))
                .collect::<Result<Vec<_>>>()?;
            let grads_out = dw.program.exe.run(&operands)?;
            collect_grads(
                &dw.program,
                &grads_out,
                |n| layer_weight_name(&self.cfg, n, layer),
                grads,
            )?;
            timings.weight_grad_ms += ms_since(start);
        }
        Ok(bwd.fetch(&out, "grad_x")?.to_f32_vec())
    }

    /// Head forward+backward on all rows; adds its weight gradients; returns (loss, grad_x per sequence).
    fn head(
        &self,
        params: &Params,
        x: &[Vec<f32>],
        targets: &[i32],
        grads: &mut Params,
    ) -> Result<(f32, Vec<Vec<f32>>)> {
        let (t, d) = (self.seq_len, self.cfg.dim);
        let rows: Vec<f32> = x.iter().flatten().copied().collect();
        let data = [
            ("x", Tensor::f32([x.len() * t, d], rows)),
            ("labels", Tensor::i32([targets.len()], targets.to_vec())),
        ];
        let bwd = &self.programs.head.backward;
        let out = bwd.exe.run(&self.bind(bwd, params, &data, None)?)?;
        let loss = bwd
            .fetch(&out, "loss")?
            .to_f32_vec()
            .first()
            .copied()
            .unwrap_or(f32::NAN);
        collect_grads(bwd, &out, |n| n.to_string(), grads)?;
        let dx = bwd.fetch(&out, "grad_x")?.to_f32_vec();
        Ok((loss, dx.chunks(t * d).map(<[f32]>::to_vec).collect()))
    }
}

/// Adds every `grad_<weight>` output of `program` (all but `grad_x`) to `grads`, named by `rename`.
fn collect_grads(program: &Program, out: &[Tensor], rename: impl Fn(&str) -> String, grads: &mut Params) -> Result<()> {
    for (name, tensor) in program.outputs.iter().zip(out) {
        let Some(input) = name.strip_prefix("grad_") else {
            continue;
        };
        if input == "x" {
            continue;
        }
        let key = rename(input);
        let values = tensor.to_f32_vec();
        match grads.get_mut(&key) {
            Some(acc) if acc.len() == values.len() => acc.iter_mut().zip(&values).for_each(|(a, v)| *a += v),
            Some(acc) => {
                return Err(ModelError::Usage(format!(
                    "gradient {key} has {} values, expected {}",
                    values.len(),
                    acc.len()
                )))
            }
            None => {
                grads.insert(key, values);
            }
        }
    }
    Ok(())
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
