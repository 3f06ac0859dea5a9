//! One probe run's state and its access to the device: compiling (and loading) a probe program in the
//! dialect found so far, building request surfaces from what has been measured so far, evaluating,
//! checking outputs against the reference interpreter, timing by the device's clock, and recording
//! experiments and what each field of the profile was set from.
//!
//! Invariants: every device failure becomes a value (an observation), never a panic; a compile the
//! device refuses for its budget (C06) halts the run's compiling experiments ([`Halt::Budget`]) and
//! records how many compiles the device had accepted; surfaces are always sized by [`SurfacePlan`]
//! unless an experiment passes explicit sizes; the profile under construction keeps the reference
//! value of every field that no experiment has set.

use std::collections::BTreeMap;

use orion_core::interp::tolerance::Tolerance;

use super::programs::{IoSpec, ProbeProgram};
use super::{Experiment, ExperimentStatus, ProbeOptions};
use crate::device::{AneDevice, DeviceError, EvalReport, ProgramId, Surface};
use crate::mil::Dialect;
use crate::profile::{ChipProfile, IoBindingOrder};
use crate::surfaces::{binding_permutation, decode, encode_exact};

/// Surface size used before the minimum has been measured: above every reported minimum (C21).
pub(super) const GENEROUS_SURFACE: usize = 256 * 1024;

/// Why the run stops compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Halt {
    /// The device refused a compile for its per-process budget (C06).
    Budget,
}

/// Result of a step that may have to stop compiling.
pub(super) type Step<T> = Result<T, Halt>;

/// How request surfaces are sized and ordered, from what the probe has measured so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SurfacePlan {
    pub min_bytes: usize,
    pub alignment: usize,
    pub uniform: bool,
    pub order: IoBindingOrder,
}

impl SurfacePlan {
    /// Allocation sizes of one side: dense size raised to the minimum, rounded up to the alignment, and
    /// the side's largest for every surface when sizes must be uniform (C18, C21).
    pub fn sizes(&self, specs: &[IoSpec]) -> Vec<usize> {
        let align = self.alignment.max(1);
        let sized: Vec<usize> = specs
            .iter()
            .map(|s| s.dense_bytes().max(self.min_bytes).div_ceil(align) * align)
            .collect();
        if self.uniform {
            let largest = sized.iter().copied().max().unwrap_or(0);
            vec![largest; sized.len()]
        } else {
            sized
        }
    }
}

/// A compile (or the load after it) that did not produce a loaded program.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refusal {
    /// The device's error as it displays it: program, stage, message and the catalogue rule it names.
    pub message: String,
}

impl Refusal {
    /// What the device said ("compile of program#12 failed (C09): …").
    pub fn describe(&self) -> String {
        self.message.clone()
    }
}

/// The state of one run.
#[derive(Debug)]
pub(super) struct Session<'a> {
    pub device: &'a dyn AneDevice,
    pub options: &'a ProbeOptions,
    /// Where the values of unmeasured fields come from.
    pub reference: ChipProfile,
    /// The profile under construction.
    pub profile: ChipProfile,
    probed: BTreeMap<String, String>,
    not_probed: BTreeMap<String, String>,
    pub experiments: Vec<Experiment>,
    pub plan: SurfacePlan,
    pub dialect: Dialect,
    /// Device compile count at the first compile refused for the budget.
    pub budget_refused_at: Option<u32>,
    /// `(non-const operations, compile ms)` of every compile whose time the device reported.
    pub compile_times: Vec<(usize, f64)>,
    /// Compiles attempted through this session.
    pub compiles: u32,
    /// The compiled and loaded `x + x` program of the dialect experiment, reused wherever only the
    /// device's handling of a request matters.
    pub basic: Option<(ProgramId, ProbeProgram)>,
}

impl<'a> Session<'a> {
    pub fn new(device: &'a dyn AneDevice, options: &'a ProbeOptions, reference: ChipProfile) -> Session<'a> {
        let mut profile = reference.clone();
        let own = device.profile();
        profile.id = own.id;
        profile.arch = own.arch.clone();
        profile.name = own.name.clone();
        Session {
            device,
            options,
            reference,
            profile,
            probed: BTreeMap::new(),
            not_probed: BTreeMap::new(),
            experiments: Vec::new(),
            plan: SurfacePlan {
                min_bytes: GENEROUS_SURFACE,
                alignment: 64,
                uniform: true,
                order: IoBindingOrder::Alphabetical,
            },
            dialect: Dialect::Ios18,
            budget_refused_at: None,
            compile_times: Vec::new(),
            compiles: 0,
            basic: None,
        }
    }

    // ---- compiling -----------------------------------------------------------------------------------

    /// Compiles `program` in the current dialect and loads it.
    pub fn compile(&mut self, program: &ProbeProgram) -> Step<Result<ProgramId, Refusal>> {
        self.compile_in(program, self.dialect)
    }

    /// Compiles `program` in `dialect` and loads it; a budget refusal halts the run.
    pub fn compile_in(&mut self, program: &ProbeProgram, dialect: Dialect) -> Step<Result<ProgramId, Refusal>> {
        if self.budget_refused_at.is_some() {
            return Err(Halt::Budget);
        }
        let before = self.device.compile_count();
        self.compiles += 1;
        let text = program.text(dialect);
        let id = match self.device.compile(text.as_bytes(), &program.weights) {
            Ok(id) => id,
            Err(DeviceError::BudgetExhausted { .. }) => {
                self.budget_refused_at = Some(before);
                return Err(Halt::Budget);
            }
            Err(e) => return Ok(Err(refusal(&e))),
        };
        if let Some(ms) = self.device.compile_ms(id) {
            self.compile_times.push((program.op_count(), ms));
        }
        Ok(self.device.load(id).map(|()| id).map_err(|e| refusal(&e)))
    }

    /// Unloads a program the run no longer needs (C05); a failure changes nothing the probe measures.
    pub fn release(&self, id: ProgramId) {
        let _ = self.device.unload(id);
    }

    // ---- evaluating ----------------------------------------------------------------------------------

    /// Evaluates with surfaces sized by the plan; outputs in return order.
    pub fn eval(&self, id: ProgramId, program: &ProbeProgram, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
        let sizes = (self.plan.sizes(&program.inputs), self.plan.sizes(&program.outputs));
        self.eval_sized(id, program, inputs, &sizes, false)
            .map(|(outputs, _)| outputs)
    }

    /// Evaluates with explicit allocation sizes (declaration order per side), surfaces ordered by the
    /// plan's binding order; `isolated` asks for an evaluation on an idle engine.
    pub fn eval_sized(
        &self,
        id: ProgramId,
        program: &ProbeProgram,
        inputs: &[Vec<f32>],
        sizes: &(Vec<usize>, Vec<usize>),
        isolated: bool,
    ) -> Result<(Vec<Vec<f32>>, EvalReport), String> {
        let order = self.plan.order;
        let in_perm = binding_permutation(&names(&program.inputs), order);
        let out_perm = binding_permutation(&names(&program.outputs), order);
        let mut surfaces = Vec::with_capacity(in_perm.len());
        for &i in &in_perm {
            let (spec, size) = (&program.inputs[i], sizes.0.get(i).copied().unwrap_or(0));
            let mut surface = Surface::zeroed(size);
            // A surface smaller than its data is sent as it is (zero filled): the device refuses it.
            if let Some(values) = inputs.get(i).filter(|_| size >= spec.dense_bytes()) {
                encode_exact(values, spec.dtype, surface.bytes_mut())?;
            }
            surfaces.push(surface);
        }
        let mut outs: Vec<Surface> = out_perm
            .iter()
            .map(|&i| Surface::zeroed(sizes.1.get(i).copied().unwrap_or(0)))
            .collect();
        let report = if isolated {
            self.device.evaluate_isolated(id, &surfaces, &mut outs)
        } else {
            self.device.evaluate(id, &surfaces, &mut outs)
        }
        .map_err(|e| e.to_string())?;
        let mut decoded = vec![Vec::new(); program.outputs.len()];
        for (k, &i) in out_perm.iter().enumerate() {
            let spec = &program.outputs[i];
            decoded[i] = decode(outs[k].bytes(), spec.dtype, spec.numel())?;
        }
        Ok((decoded, report))
    }

    /// Evaluates with request surfaces exactly as given (no ordering, no sizing); the output surfaces.
    pub fn eval_raw(&self, id: ProgramId, inputs: &[Surface], out_sizes: &[usize]) -> Result<Vec<Surface>, String> {
        let mut outs: Vec<Surface> = out_sizes.iter().map(|&n| Surface::zeroed(n)).collect();
        self.device.evaluate(id, inputs, &mut outs).map_err(|e| e.to_string())?;
        Ok(outs)
    }

    /// Evaluates and compares with the reference interpreter: `Ok` when every output agrees within
    /// the fp16 tolerance, else what differs.
    pub fn eval_checked(&self, id: ProgramId, program: &ProbeProgram, inputs: &[Vec<f32>]) -> Result<(), String> {
        let outputs = self.eval(id, program, inputs)?;
        agree(program, inputs, &outputs)
    }

    /// The device's time of one evaluation with zero inputs and the given sizes, ms: the median of
    /// `options.repeats` after one warm-up when repeats > 1.
    pub fn time(
        &self,
        id: ProgramId,
        program: &ProbeProgram,
        sizes: &(Vec<usize>, Vec<usize>),
        isolated: bool,
    ) -> Result<f64, String> {
        let zeros: Vec<Vec<f32>> = program.inputs.iter().map(|s| vec![0.0; s.numel()]).collect();
        let once = || {
            self.eval_sized(id, program, &zeros, sizes, isolated)
                .map(|(_, r)| r.estimated_ms)
        };
        if self.options.repeats <= 1 {
            return once();
        }
        once()?;
        let mut times = (0..self.options.repeats)
            .map(|_| once())
            .collect::<Result<Vec<f64>, _>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    // ---- findings ------------------------------------------------------------------------------------

    /// Records that `field` (a dotted profile path) was set by an experiment.
    pub fn probed(&mut self, field: &str, how: String) {
        self.not_probed.remove(field);
        self.probed.insert(field.to_string(), format!("probed: {how}"));
    }

    /// Records why `field` keeps its reference value.
    pub fn not_probed(&mut self, field: &str, why: String) {
        if !self.probed.contains_key(field) {
            self.not_probed.insert(field.to_string(), why);
        }
    }

    /// Probed sources and reasons for the others.
    pub fn findings(&self) -> (&BTreeMap<String, String>, &BTreeMap<String, String>) {
        (&self.probed, &self.not_probed)
    }

    /// Appends one experiment of `trial` to the report.
    pub fn record(
        &mut self,
        trial: &Trial,
        observed: impl Into<String>,
        conclusion: impl Into<String>,
        status: ExperimentStatus,
    ) {
        self.experiments.push(Experiment {
            rule: trial.rule,
            name: trial.name.clone(),
            ran: trial.ran.clone(),
            expected: trial.expected.clone(),
            observed: observed.into(),
            conclusion: conclusion.into(),
            status,
        });
    }
}

/// What an experiment is, before it runs: its rule, name, what it runs and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Trial {
    pub rule: &'static str,
    pub name: String,
    pub ran: String,
    pub expected: String,
}

impl Trial {
    pub fn new(rule: &'static str, name: &str, ran: impl Into<String>, expected: impl Into<String>) -> Trial {
        Trial {
            rule,
            name: name.to_string(),
            ran: ran.into(),
            expected: expected.into(),
        }
    }
}

fn names(specs: &[IoSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

fn refusal(e: &DeviceError) -> Refusal {
    Refusal { message: e.to_string() }
}

/// `Ok` when `outputs` agree with the reference interpreter's outputs of `program` for `inputs`.
pub(super) fn agree(program: &ProbeProgram, inputs: &[Vec<f32>], outputs: &[Vec<f32>]) -> Result<(), String> {
    let expected = program
        .reference(inputs)
        .map_err(|e| format!("reference interpreter: {e}"))?;
    for (k, (got, want)) in outputs.iter().zip(&expected).enumerate() {
        if got.len() != want.len() {
            return Err(format!("output {k}: {} values, expected {}", got.len(), want.len()));
        }
        if let Some((i, (g, w))) = got
            .iter()
            .zip(want)
            .enumerate()
            .find(|(_, (g, w))| !Tolerance::F16.accepts(**g, **w))
        {
            return Err(format!("output {} [{i}] = {g}, expected {w}", program.outputs[k].name));
        }
    }
    Ok(())
}
