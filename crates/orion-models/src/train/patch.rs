//! The `patch` weight-update strategy's update and its self-check.
//!
//! After an optimiser step every layer's baked forward and backward programs receive their new weights
//! through `Executable::reload_constants` (on the ANE: overwrite the weight files in the compile
//! directory, unload, load — the published Orion's delta path, ane.md §6). Whether a chip then computes
//! with the new weights is exactly what ANE rule C07 doubts, so every patch is checked: layer 0's forward
//! program runs on a fixed probe input and its output is compared with the reference interpreter's on the
//! same program with the *new* weights (tolerance of the program's precision) and with the *old* ones.
//! The patch is verified only when the output matches the new reference and is clearly closer to it than
//! to the old (root-mean-square distance less than half) — so a program still running its old weights
//! never passes, and an update too small to tell apart is not trusted either. Anything else is a
//! mismatch, and the caller falls back to recompiling.

use super::programs::StepPrograms;
use super::step::Params;
use super::strategy::baked_layer_graphs;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seed of the probe input (any fixed value: the check must be reproducible).
const PROBE_SEED: u64 = 0x0A7E_C4EC;

/// The outcome of one patch.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchVerdict {
    pub verified: bool,
    /// Why it was or was not verified.
    pub reason: String,
    /// Root-mean-square distance of the device output from the reference with the new weights.
    pub rms_to_new: f32,
    /// … and from the reference with the weights the program had before the patch.
    pub rms_to_old: f32,
}

/// The probe input and the reference output of the weights the programs currently hold.
#[derive(Debug)]
pub struct PatchCheck {
    probe: Tensor,
    precision: Precision,
    expected: Tensor,
}

impl PatchCheck {
    /// A check for `programs`, whose baked programs hold `params`.
    pub fn new(cfg: &ModelConfig, programs: &StepPrograms, params: &Params) -> Result<PatchCheck> {
        let (_, _, ty) = programs
            .layer_graphs
            .0
            .inputs()
            .find(|(name, _, _)| *name == "x")
            .ok_or_else(|| ModelError::Usage("the layer forward graph has no input x".into()))?;
        let mut rng = ChaCha8Rng::seed_from_u64(PROBE_SEED);
        let values = (0..ty.shape.numel()).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let probe =
            Tensor::new(ty.dtype, ty.shape.clone(), TensorData::Float(values)).map_err(orion_core::CoreError::from)?;
        let precision = match programs.layer_dtype {
            DType::F16 => Precision::F16Rounding,
            _ => Precision::F32,
        };
        let mut check = PatchCheck {
            probe,
            precision,
            expected: Tensor::f32([0], vec![]),
        };
        check.expected = check.reference(cfg, programs, params)?;
        Ok(check)
    }

    /// Sends `params` into every baked layer program and checks layer 0's forward.
    pub fn patch_and_verify(
        &mut self,
        programs: &StepPrograms,
        cfg: &ModelConfig,
        params: &Params,
    ) -> Result<PatchVerdict> {
        let graphs = (&programs.layer_graphs.0, &programs.layer_graphs.1);
        for layer in 0..cfg.n_layers {
            let (forward, backward) = baked_layer_graphs(cfg, graphs, params, layer)?;
            let pair = programs.layer_pair(layer)?;
            let sent = pair.forward.exe.reload_constants(&forward)? && pair.backward.exe.reload_constants(&backward)?;
            if !sent {
                return Ok(PatchVerdict {
                    verified: false,
                    reason: "the training device has no weight-reload path for these programs".into(),
                    rms_to_new: f32::NAN,
                    rms_to_old: f32::NAN,
                });
            }
        }
        let expected = self.reference(cfg, programs, params)?;
        let program = &programs.layer_pair(0)?.forward;
        let outputs = program.exe.run(std::slice::from_ref(&self.probe))?;
        let got = program.fetch(&outputs, "y")?;
        let verdict = judge(got, &expected, &self.expected, self.precision);
        if verdict.verified {
            self.expected = expected;
        }
        Ok(verdict)
    }

    /// Layer 0's forward output on the probe with `params`, by the reference interpreter.
    fn reference(&self, cfg: &ModelConfig, programs: &StepPrograms, params: &Params) -> Result<Tensor> {
        let graphs = (&programs.layer_graphs.0, &programs.layer_graphs.1);
        let (forward, _) = baked_layer_graphs(cfg, graphs, params, 0)?;
        output_y(&forward, &self.probe, self.precision)
    }
}

fn output_y(graph: &Graph, probe: &Tensor, precision: Precision) -> Result<Tensor> {
    let index = graph
        .outputs()
        .iter()
        .position(|o| o.name == "y")
        .ok_or_else(|| ModelError::Usage("the layer forward graph has no output y".into()))?;
    let mut outputs = interpret(graph, std::slice::from_ref(probe), precision)?;
    Ok(outputs.swap_remove(index))
}

/// The verdict on a device output `got` given the references with the new and the old weights.
pub fn judge(got: &Tensor, new: &Tensor, old: &Tensor, precision: Precision) -> PatchVerdict {
    let (rms_to_new, rms_to_old) = (rms_distance(got, new), rms_distance(got, old));
    let (verified, reason) = match compare(got, new, Tolerance::for_precision(precision)) {
        Err(message) if rms_to_old <= rms_to_new => (
            false,
            format!(
                "after the reload layer 0 still computes with its old weights (rms distance {rms_to_old:.2e} \
                 from the old reference, {rms_to_new:.2e} from the new): the chip ignores reloaded weight files \
                 (ANE rule C07); {message}"
            ),
        ),
        Err(message) => (
            false,
            format!("after the reload layer 0 differs from the CPU reference: {message}"),
        ),
        Ok(()) if rms_to_new * 2.0 < rms_to_old => (true, "the device output matches the new weights".into()),
        Ok(()) => (
            false,
            format!(
                "the update moved layer 0's output less than the check can resolve (rms {rms_to_new:.2e} from the \
                 new reference, {rms_to_old:.2e} from the old): not trusting an unverified patch"
            ),
        ),
    };
    PatchVerdict {
        verified,
        reason,
        rms_to_new,
        rms_to_old,
    }
}

/// Root-mean-square of `a − b` (infinite when the shapes differ).
fn rms_distance(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    if a.len() != b.len() || a.is_empty() {
        return f32::INFINITY;
    }
    let sum: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sum / a.len() as f64).sqrt() as f32
}
