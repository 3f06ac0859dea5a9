//! `AneBackend`: runs Orion graphs on an ANE device (simulated or real) behind the core crate's
//! `Backend` / `Executable` interface.
//!
//! compile(graph) = optimise (the core pass pipeline) → [`lower`] for the device's chip → lint (any
//! `Error` aborts: the device would reject the program or compute wrong data) → device compile + load.
//! run(inputs) = pack (IR tensors in graph input order, plus the stored constants of weights lowered as
//! inputs) → evaluate → unpack, outputs in graph output order with the graph's output types.
//!
//! Invariants: surfaces are ordered by the chip's binding order (C19) computed here from the MIL names,
//! not trusted from the description order; every surface has the description's size, uniform per side
//! (C18, C21); the program is unloaded when the executable is dropped (C05); host → device conversion
//! repairs are counted (C38) and readable from the executable.

use crate::device::{AneDevice, EvalReport, ProgramId, SimulatedAne};
use crate::error::AneError;
use crate::lint::Severity;
use crate::lower::{const_input_value, lower, EmittedProgram, IoDesc, LowerOptions};
use crate::surfaces::{binding_permutation, output_surfaces, pack_inputs_counted, unpack_outputs, BoundaryStats};
use orion_core::backend::{Backend, Executable};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::{CoreError, Graph, Op, Tensor, TensorType};
use std::sync::{Arc, Mutex};

/// A backend that compiles graphs for, and runs them on, one ANE device.
#[derive(Debug, Clone)]
pub struct AneBackend {
    pub device: Arc<dyn AneDevice>,
    pub options: LowerOptions,
}

impl AneBackend {
    pub fn new(device: Arc<dyn AneDevice>, options: LowerOptions) -> AneBackend {
        AneBackend { device, options }
    }

    /// A backend over a fresh simulator of a built-in chip ("m1".."m5").
    pub fn simulated(chip: &str, options: LowerOptions) -> Option<AneBackend> {
        let device = SimulatedAne::builtin(chip)?;
        Some(AneBackend::new(Arc::new(device), options))
    }

    /// [`Backend::compile`] with the concrete executable and the crate's error type.
    pub fn compile_program(&self, graph: &Graph) -> Result<AneExecutable, AneError> {
        let optimised = optimise(graph, &PipelineOptions::default())?.graph;
        let emitted = lower(&optimised, self.device.profile(), &self.options)?;
        self.compile_lowered(&optimised, emitted)
    }

    /// The device half of [`AneBackend::compile_program`]: `emitted` must be the lowering of the already
    /// optimised `optimised` for this device (the program cache stores and reuses lowerings).
    pub fn compile_lowered(&self, optimised: &Graph, emitted: EmittedProgram) -> Result<AneExecutable, AneError> {
        let errors: Vec<String> = emitted
            .lint
            .iter()
            .filter(|v| v.severity == Severity::Error)
            .map(|v| v.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(AneError::Lower {
                program: emitted.name.clone(),
                message: format!("the emitted program breaks device rules: {}", errors.join("; ")),
            });
        }
        let plan = IoPlan::new(optimised, &emitted, self.device.profile().limits.io_binding_order)?;
        let id = self.device.compile(emitted.mil_text.as_bytes(), &emitted.weights)?;
        if let Err(e) = self.device.load(id) {
            return Err(e.into());
        }
        Ok(AneExecutable {
            device: Arc::clone(&self.device),
            options: self.options,
            id,
            emitted,
            plan,
            last_report: Mutex::new(None),
            stats: Mutex::new(BoundaryStats::default()),
        })
    }
}

impl Backend for AneBackend {
    fn name(&self) -> &str {
        self.device.name()
    }

    fn compile(&self, graph: &Graph) -> orion_core::Result<Box<dyn Executable>> {
        match self.compile_program(graph) {
            Ok(exe) => Ok(Box::new(exe)),
            Err(e) => Err(to_core("compile", e)),
        }
    }
}

/// Where the tensor of one input surface comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The graph input at this position.
    GraphInput(usize),
    /// A constant of the lowered graph passed as an input (`WeightMode::Inputs`).
    Constant(Tensor),
}

/// The I/O wiring of one program, fixed at compile time.
#[derive(Debug, Clone)]
struct IoPlan {
    /// Graph inputs (name, type) in declaration order: what `run` receives.
    graph_inputs: Vec<(String, TensorType)>,
    /// Input descriptions in binding order, each with its source.
    inputs: Vec<(IoDesc, Source)>,
    /// Output descriptions in binding order.
    outputs: Vec<IoDesc>,
    /// For each graph output (in order), the index into `outputs`.
    output_order: Vec<usize>,
}

impl IoPlan {
    fn new(graph: &Graph, emitted: &EmittedProgram, order: crate::profile::IoBindingOrder) -> Result<IoPlan, AneError> {
        let fail = |message: String| AneError::Lower {
            program: emitted.name.clone(),
            message,
        };
        let graph_inputs: Vec<(String, TensorType)> = graph
            .inputs()
            .map(|(name, _, ty)| (name.to_string(), ty.clone()))
            .collect();
        let in_perm = binding_permutation(&mil_names(&emitted.inputs), order);
        let mut inputs = Vec::with_capacity(in_perm.len());
        for &i in &in_perm {
            let desc = &emitted.inputs[i];
            let source = match const_input_value(desc) {
                Some(v) => match graph.try_ty(v).ok().map(|_| &graph.producer(v).op) {
                    Some(Op::Const { value }) => Source::Constant(value.as_ref().clone()),
                    _ => {
                        return Err(fail(format!(
                            "input {} names {v}, which is not a constant",
                            desc.mil_name
                        )))
                    }
                },
                None => match graph_inputs.iter().position(|(name, _)| *name == desc.ir_name) {
                    Some(k) => Source::GraphInput(k),
                    None => return Err(fail(format!("input {} names no graph input", desc.mil_name))),
                },
            };
            inputs.push((desc.clone(), source));
        }
        let out_perm = binding_permutation(&mil_names(&emitted.outputs), order);
        let outputs: Vec<IoDesc> = out_perm.iter().map(|&i| emitted.outputs[i].clone()).collect();
        let output_order = graph
            .outputs()
            .iter()
            .map(|o| {
                outputs
                    .iter()
                    .position(|d| d.ir_name == o.name)
                    .ok_or_else(|| fail(format!("graph output {:?} has no MIL output", o.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IoPlan {
            graph_inputs,
            inputs,
            outputs,
            output_order,
        })
    }
}

fn mil_names(descs: &[IoDesc]) -> Vec<&str> {
    descs.iter().map(|d| d.mil_name.as_str()).collect()
}

/// A graph compiled and loaded on a device.
#[derive(Debug)]
pub struct AneExecutable {
    device: Arc<dyn AneDevice>,
    options: LowerOptions,
    id: ProgramId,
    emitted: EmittedProgram,
    plan: IoPlan,
    last_report: Mutex<Option<EvalReport>>,
    stats: Mutex<BoundaryStats>,
}

impl AneExecutable {
    /// The program as the device received it.
    pub fn program(&self) -> &EmittedProgram {
        &self.emitted
    }

    pub fn id(&self) -> ProgramId {
        self.id
    }

    /// The cost report of the most recent successful run.
    pub fn last_report(&self) -> Option<EvalReport> {
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// NaNs and out-of-range values repaired at the host → device boundary over all runs (C38).
    pub fn boundary_stats(&self) -> BoundaryStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the program on `inputs` (graph input order); outputs in graph output order.
    pub fn run_with_report(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, EvalReport), AneError> {
        let graph_inputs = &self.plan.graph_inputs;
        if inputs.len() != graph_inputs.len() {
            return Err(surface_error(format!(
                "{} tensors given for {} graph inputs",
                inputs.len(),
                graph_inputs.len()
            )));
        }
        for (tensor, (name, ty)) in inputs.iter().zip(graph_inputs) {
            if tensor.ty() != *ty {
                return Err(surface_error(format!(
                    "input {name:?} is {}, the graph expects {ty}",
                    tensor.ty()
                )));
            }
        }
        let descs: Vec<IoDesc> = self.plan.inputs.iter().map(|(d, _)| d.clone()).collect();
        let tensors: Vec<Tensor> = self
            .plan
            .inputs
            .iter()
            .map(|(_, source)| match source {
                Source::GraphInput(k) => inputs[*k].clone(),
                Source::Constant(t) => t.clone(),
            })
            .collect();
        let (surfaces, repaired) = pack_inputs_counted(&descs, &tensors)?;
        let mut outputs = output_surfaces(&self.plan.outputs);
        let report = self.device.evaluate(self.id, &surfaces, &mut outputs)?;
        let unpacked = unpack_outputs(&self.plan.outputs, &outputs)?;
        let ordered = self.plan.output_order.iter().map(|&i| unpacked[i].clone()).collect();
        {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.nan_count += repaired.nan_count;
            stats.clamped_count += repaired.clamped_count;
        }
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        Ok((ordered, report))
    }
}

impl Executable for AneExecutable {
    fn run(&self, inputs: &[Tensor]) -> orion_core::Result<Vec<Tensor>> {
        self.run_with_report(inputs)
            .map(|(outputs, _)| outputs)
            .map_err(|e| to_core("evaluate", e))
    }

    fn reload_constants(&self, graph: &Graph) -> orion_core::Result<bool> {
        self.reload_weight_files(graph).map_err(|e| to_core("reload", e))
    }
}

impl AneExecutable {
    /// The reload path (ane.md §6): lowers `graph` again, and when only the weight files differ,
    /// overwrites this program's files with the new contents (paired by order of appearance in the
    /// MIL text; file names carry content hashes, so they change with the values) and unloads/loads
    /// the program. Whether the device then computes with the new weights is the chip's business
    /// (C07); `Ok(false)` when the program's structure or inputs changed.
    pub fn reload_weight_files(&self, graph: &Graph) -> Result<bool, AneError> {
        if self
            .plan
            .inputs
            .iter()
            .any(|(_, source)| matches!(source, Source::Constant(_)))
        {
            return Ok(false);
        }
        let optimised = optimise(graph, &PipelineOptions::default())?.graph;
        let fresh = lower(&optimised, self.device.profile(), &self.options)?;
        let (old_paths, new_paths) = (weight_paths(&self.emitted), weight_paths(&fresh));
        if old_paths.len() != new_paths.len()
            || with_placeholders(&self.emitted.mil_text, &old_paths) != with_placeholders(&fresh.mil_text, &new_paths)
        {
            return Ok(false);
        }
        for (old, new) in old_paths.iter().zip(&new_paths) {
            let bytes = fresh.weights.get(new).map(Vec::as_slice).unwrap_or_default();
            self.device.overwrite_weight_file(self.id, old, bytes)?;
        }
        self.device.unload(self.id)?;
        self.device.load(self.id)?;
        Ok(true)
    }
}

/// The program's weight-file paths in order of first appearance in its MIL text.
fn weight_paths(program: &EmittedProgram) -> Vec<String> {
    let mut paths: Vec<(usize, &String)> = program
        .weights
        .keys()
        .map(|path| (program.mil_text.find(path.as_str()).unwrap_or(usize::MAX), path))
        .collect();
    paths.sort();
    paths.into_iter().map(|(_, p)| p.clone()).collect()
}

/// `text` with each of `paths` replaced by its index, for comparing programs up to weight-file names.
fn with_placeholders(text: &str, paths: &[String]) -> String {
    paths.iter().enumerate().fold(text.to_string(), |t, (i, p)| {
        t.replace(p.as_str(), &format!("@weight{i}"))
    })
}

impl Drop for AneExecutable {
    fn drop(&mut self) {
        // Nothing sensible can be done with a failed unload while dropping; the device reports leaks.
        let _ = self.device.unload(self.id);
    }
}

fn surface_error(message: String) -> AneError {
    AneError::Device(crate::device::DeviceError::Surface {
        name: "inputs".to_string(),
        message,
    })
}

/// An ANE failure as the core crate's error: core errors pass through, others become an execution
/// error of the stage (`ane-compile`, `ane-evaluate`) carrying the full message.
fn to_core(stage: &str, e: AneError) -> CoreError {
    match e {
        AneError::Core(core) => core,
        other => CoreError::Execute {
            op: format!("ane-{stage}"),
            message: other.to_string(),
        },
    }
}
