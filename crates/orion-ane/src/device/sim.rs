//! The simulated ANE: receives exactly what the real device receives (MIL text bytes and a weight
//! dictionary), rejects what the device is known to reject, runs programs with fp16 semantics and
//! reports the chip cost model's time per evaluation.
//!
//! What it enforces, per [`ChipProfile`] and the constraint catalogue (ane.md §5):
//! - compile: the per-instance compile budget (C06, counted even when a compile fails); UTF-8 text (C01);
//!   MIL syntax; every `Error` of [`lint`](crate::lint::lint) (the rule id is carried in the error);
//!   every BLOBFILE path present in the dictionary (an empty dictionary is fine, C02; a missing file is
//!   a compile failure, as an incomplete compile directory is, C04); fp16/fp32 I/O only (C31);
//! - weights are baked at compile: the dictionary is copied and converted once (`mil::to_graph`);
//!   [`AneDevice::overwrite_weight_file`] followed by unload/load changes nothing unless the profile says
//!   `ops.weights_reload_takes_effect` (C07);
//! - evaluate: only loaded programs; status 0x1d for a surface below `min_surface_bytes` (C21), for
//!   unequal sizes on one side when `uniform_io_sizes` (C18), for a surface too small for its data or a
//!   wrong surface count; surfaces bind to MIL names in `io_binding_order` (C19), so a caller that
//!   orders them otherwise silently gets wrong data; a larger surface is read as packed data from
//!   offset 0 (C20) and outputs are written packed at offset 0, the rest untouched;
//! - numerics: `orion_core::interp::eval_op` node by node in `Precision::F16Rounding` (C34), fp16
//!   surface data widened exactly; matmul/conv results beyond ±32,752 become ±inf (C35, on every chip:
//!   the conservative choice); on the chips of catalogue rule C36 a slice at a non-zero last-axis offset
//!   turns |x| > 4,094 into ±inf;
//! - cost: flops and bytes counted from the graph (see [`program_cost`]) through
//!   [`ChipProfile::estimate_eval`], with two penalties the cost model lacks: C22 (an I/O last axis not
//!   a multiple of the alignment: ×0.63, H3's 2.45 vs 3.87 TF/die) and C41 (matmul with a baked weight
//!   operand costs 3× a 1×1 conv). Compile time grows superlinearly with program size (C42). An isolated
//!   evaluation (`evaluate_isolated`) pays `cost.isolated_eval_ms` instead of the dispatch floor (C40).
//!
//! Not simulated: denormal flushing (C34), value-dependent compile failures (C29, C30), OS-specific
//! breakage (C43), the M1 runtime-operand failures of C25 (contradicted; ignored as the catalogue says).

use super::{AneDevice, DeviceError, EvalReport, ProgramId, Surface, WeightDict, STATUS_PROGRAM_INFERENCE_ERROR};
use crate::lint::{lint, Severity};
use crate::mil::{self, BlobDictResolver, MilDType, Program, Value};
use crate::profile::{ChipProfile, IoBindingOrder};
use crate::surfaces::{decode, element_bytes, encode_exact};
use orion_core::interp::{eval_op, Precision};
use orion_core::{DType, Graph, Op, Tensor, TensorData};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Magnitude beyond which a matmul/conv result becomes infinite (C35: fp16_max / 2, rounded as reported).
pub const MATMUL_OVERFLOW: f32 = 32_752.0;
/// Magnitude beyond which a value read through a width-offset slice becomes infinite (C36).
pub const WIDTH_OFFSET_LIMIT: f32 = 4_094.0;
/// Throughput factor for an I/O last axis that is not alignment-sized (C22: 2.45 / 3.87 TF per die, H3).
pub const UNALIGNED_EFFICIENCY: f64 = 2.45 / 3.87;
/// Cost factor of a matmul whose operand is a baked weight, relative to a 1×1 conv (C41).
pub const MATMUL_WEIGHT_PENALTY: f64 = 3.0;
/// Program size (operations) that compiles in `cost.compile_ms_per_kernel` (a training-sized kernel).
pub const COMPILE_REFERENCE_OPS: f64 = 64.0;
/// Exponent of compile time in program size (C42: superlinear).
pub const COMPILE_EXPONENT: f64 = 1.5;

/// Simulation choices that the chip profile does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// C35: matmul/conv results beyond ±[`MATMUL_OVERFLOW`] become ±inf.
    pub matmul_overflow_to_inf: bool,
    /// C36: |x| > [`WIDTH_OFFSET_LIMIT`] read through a slice at a non-zero last-axis offset becomes ±inf.
    pub width_offset_slice_gain: bool,
}

impl SimOptions {
    /// The profile's numeric settings (`limits.numerics`, with their sources there).
    pub fn for_profile(profile: &ChipProfile) -> SimOptions {
        SimOptions {
            matmul_overflow_to_inf: profile.limits.numerics.matmul_overflow_to_inf,
            width_offset_slice_gain: profile.limits.numerics.width_offset_slice_gain,
        }
    }
}

/// One I/O tensor of a compiled program, as its MIL signature declares it.
#[derive(Debug, Clone)]
struct IoSlot {
    name: String,
    dtype: DType,
    dims: Vec<usize>,
}

impl IoSlot {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn dense_bytes(&self) -> usize {
        self.numel() * element_bytes(self.dtype).unwrap_or(0)
    }
}

/// A compiled program: its parsed text, the baked weights, the graph it runs.
#[derive(Debug)]
struct SimProgram {
    label: String,
    program: Program,
    /// The compile directory's weight files; `overwrite_weight_file` changes them.
    files: WeightDict,
    /// True when `files` changed since the graph was built.
    files_changed: bool,
    graph: Arc<Graph>,
    inputs: Vec<IoSlot>,
    outputs: Vec<IoSlot>,
    loaded: bool,
    compile_ms: f64,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    compiles: u32,
    programs: HashMap<u64, SimProgram>,
}

/// The simulated device for one chip profile.
#[derive(Debug)]
pub struct SimulatedAne {
    name: String,
    profile: ChipProfile,
    options: SimOptions,
    state: Mutex<State>,
}

impl SimulatedAne {
    /// A simulator of `profile` with [`SimOptions::for_profile`].
    pub fn new(profile: ChipProfile) -> SimulatedAne {
        let options = SimOptions::for_profile(&profile);
        SimulatedAne::with_options(profile, options)
    }

    pub fn with_options(profile: ChipProfile, options: SimOptions) -> SimulatedAne {
        SimulatedAne {
            name: format!("ane-sim-{}", profile.id),
            profile,
            options,
            state: Mutex::new(State::default()),
        }
    }

    /// The simulator of a built-in chip ("m1".."m5").
    pub fn builtin(chip: &str) -> Option<SimulatedAne> {
        ChipProfile::builtin(chip).map(SimulatedAne::new)
    }

    pub fn options(&self) -> SimOptions {
        self.options
    }

    /// Estimated compile time of a compiled program, ms (C42): `compile_ms_per_kernel ·
    /// (ops / 64)^1.5` over its non-const MIL operations.
    pub fn compile_estimate_ms(&self, id: ProgramId) -> Option<f64> {
        self.lock().programs.get(&id.0).map(|p| p.compile_ms)
    }

    /// Programs currently loaded (C05: every loaded program must be unloaded).
    pub fn loaded_count(&self) -> usize {
        self.lock().programs.values().filter(|p| p.loaded).count()
    }

    /// MIL names of a compiled program's parameters and returned variables, in declaration order.
    pub fn signature(&self, id: ProgramId) -> Option<(Vec<String>, Vec<String>)> {
        let state = self.lock();
        let p = state.programs.get(&id.0)?;
        let names = |slots: &[IoSlot]| slots.iter().map(|s| s.name.clone()).collect();
        Some((names(&p.inputs), names(&p.outputs)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything the compiler checks, without touching the budget.
    fn build(&self, label: &str, mil_text: &[u8], weights: &WeightDict) -> Result<SimProgram, DeviceError> {
        let fail = |message: String, rule: Option<&'static str>| DeviceError::Compile {
            program: label.to_string(),
            message,
            rule,
        };
        let text =
            std::str::from_utf8(mil_text).map_err(|e| fail(format!("MIL text is not UTF-8: {e}"), Some("C01")))?;
        let program = mil::parse_program(text).map_err(|e| fail(format!("MIL syntax: {e}"), None))?;
        let errors: Vec<_> = lint(&program, weights, &self.profile)
            .into_iter()
            .filter(|v| v.severity == Severity::Error)
            .collect();
        if let Some(first) = errors.first() {
            let listed: Vec<String> = errors
                .iter()
                .map(|v| format!("{} at {}: {}", v.rule, v.location, v.message))
                .collect();
            return Err(fail(listed.join("; "), Some(first.rule)));
        }
        let files = referenced_files(&program, weights).map_err(|m| fail(m, Some("C04")))?;
        let function = program
            .function("main")
            .ok_or_else(|| fail("program has no function 'main'".to_string(), None))?;
        let inputs = function
            .params
            .iter()
            .map(|p| io_slot(&p.name, &p.ty))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| fail(m, Some("C31")))?;
        let graph = convert(&program, &files).map_err(|m| fail(m, None))?;
        let outputs = graph
            .outputs()
            .iter()
            .map(|o| {
                let ty = graph.ty(o.value);
                element_bytes(ty.dtype).map(|_| IoSlot {
                    name: o.name.clone(),
                    dtype: ty.dtype,
                    dims: ty.shape.dims().to_vec(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| fail(format!("returned value: {m}"), Some("C31")))?;
        let ops = function.operations.iter().filter(|op| op.op != "const").count() as f64;
        let compile_ms = self.profile.cost.compile_ms_per_kernel * (ops / COMPILE_REFERENCE_OPS).powf(COMPILE_EXPONENT);
        Ok(SimProgram {
            label: label.to_string(),
            program,
            files,
            files_changed: false,
            graph: Arc::new(graph),
            inputs,
            outputs,
            loaded: false,
            compile_ms,
        })
    }

    /// Checks the request's surfaces and decodes the inputs in parameter declaration order.
    fn bind_inputs(&self, p: &SimProgram, inputs: &[Surface], outputs: &[Surface]) -> Result<Vec<Tensor>, DeviceError> {
        let fail = |message: String, rule: Option<&'static str>| DeviceError::Evaluate {
            program: p.label.clone(),
            status: STATUS_PROGRAM_INFERENCE_ERROR,
            message,
            rule,
        };
        for (side, given, expected) in [("input", inputs, &p.inputs), ("output", outputs, &p.outputs)] {
            if given.len() != expected.len() {
                let m = format!("{} {side} surfaces for {} {side}s", given.len(), expected.len());
                return Err(fail(m, None));
            }
            let limits = &self.profile.limits;
            if let Some((k, s)) = given
                .iter()
                .enumerate()
                .find(|(_, s)| s.len() < limits.min_surface_bytes)
            {
                let m = format!(
                    "{side} surface {k} has {} bytes, below the minimum {}",
                    s.len(),
                    limits.min_surface_bytes
                );
                return Err(fail(m, Some("C21")));
            }
            let sizes: BTreeSet<usize> = given.iter().map(Surface::len).collect();
            if limits.uniform_io_sizes && sizes.len() > 1 {
                return Err(fail(
                    format!("{side} surfaces have unequal sizes {sizes:?}"),
                    Some("C18"),
                ));
            }
            let perm = binding_order(expected, limits.io_binding_order);
            for (k, &slot) in perm.iter().enumerate() {
                let need = expected[slot].dense_bytes();
                if given[k].len() < need {
                    let m = format!(
                        "{side} surface {k} ({} bytes) is bound to {:?}, which needs {need}",
                        given[k].len(),
                        expected[slot].name
                    );
                    return Err(fail(m, None));
                }
            }
        }
        let perm = binding_order(&p.inputs, self.profile.limits.io_binding_order);
        let mut tensors: Vec<Option<Tensor>> = vec![None; p.inputs.len()];
        for (k, &slot) in perm.iter().enumerate() {
            let s = &p.inputs[slot];
            let values = decode(inputs[k].bytes(), s.dtype, s.numel()).map_err(|m| fail(m, None))?;
            let tensor = Tensor::new(s.dtype, s.dims.clone(), TensorData::Float(values))
                .map_err(|e| fail(e.to_string(), None))?;
            tensors[slot] = Some(tensor);
        }
        Ok(tensors.into_iter().flatten().collect())
    }
}

impl AneDevice for SimulatedAne {
    fn name(&self) -> &str {
        &self.name
    }

    fn profile(&self) -> &ChipProfile {
        &self.profile
    }

    fn compile(&self, mil_text: &[u8], weights: &WeightDict) -> Result<ProgramId, DeviceError> {
        let id = {
            let mut state = self.lock();
            let budget = self.profile.limits.compile_budget;
            if state.compiles >= budget {
                return Err(DeviceError::BudgetExhausted {
                    used: state.compiles,
                    budget,
                });
            }
            state.compiles += 1;
            state.next_id += 1;
            state.next_id
        };
        let label = ProgramId(id).to_string();
        let program = self.build(&label, mil_text, weights)?;
        self.lock().programs.insert(id, program);
        Ok(ProgramId(id))
    }

    fn load(&self, id: ProgramId) -> Result<(), DeviceError> {
        let reload = self.profile.limits.ops.weights_reload_takes_effect;
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        let fail = |message: String| DeviceError::Load {
            program: p.label.clone(),
            message,
        };
        if p.loaded {
            return Err(fail("program is already loaded".to_string()));
        }
        if reload && p.files_changed {
            // The chip re-reads its compile directory (C07 when it does take effect).
            let graph = convert(&p.program, &p.files).map_err(fail)?;
            p.graph = Arc::new(graph);
            p.files_changed = false;
        }
        p.loaded = true;
        Ok(())
    }

    fn evaluate(&self, id: ProgramId, inputs: &[Surface], outputs: &mut [Surface]) -> Result<EvalReport, DeviceError> {
        let (graph, tensors, out_slots, label, io_dims) = {
            let state = self.lock();
            let p = state.programs.get(&id.0).ok_or_else(|| unknown(id))?;
            if !p.loaded {
                return Err(DeviceError::Evaluate {
                    program: p.label.clone(),
                    status: STATUS_PROGRAM_INFERENCE_ERROR,
                    message: "program is not loaded".to_string(),
                    rule: None,
                });
            }
            let tensors = self.bind_inputs(p, inputs, outputs)?;
            (
                Arc::clone(&p.graph),
                tensors,
                p.outputs.clone(),
                p.label.clone(),
                io_shapes(p),
            )
        };
        let fail = |message: String| DeviceError::Evaluate {
            program: label.clone(),
            status: STATUS_PROGRAM_INFERENCE_ERROR,
            message,
            rule: None,
        };
        let results = run_graph(&graph, tensors, self.options).map_err(|e| fail(e.to_string()))?;
        let perm = binding_order(&out_slots, self.profile.limits.io_binding_order);
        for (k, &slot) in perm.iter().enumerate() {
            let values = results[slot].to_f32_vec();
            encode_exact(&values, out_slots[slot].dtype, outputs[k].bytes_mut()).map_err(fail)?;
        }
        let io_bytes = inputs
            .iter()
            .chain(outputs.iter())
            .fold(0.0, |acc, s| acc + s.len() as f64);
        Ok(program_cost(&graph, &self.profile, io_bytes, &io_dims))
    }

    fn unload(&self, id: ProgramId) -> Result<(), DeviceError> {
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        if !p.loaded {
            return Err(DeviceError::Unload {
                program: p.label.clone(),
                message: "program is not loaded".to_string(),
            });
        }
        p.loaded = false;
        Ok(())
    }

    fn compile_count(&self) -> u32 {
        self.lock().compiles
    }

    fn overwrite_weight_file(&self, id: ProgramId, path: &str, bytes: &[u8]) -> Result<(), DeviceError> {
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        if !p.files.contains_key(path) {
            return Err(DeviceError::Load {
                program: p.label.clone(),
                message: format!("the compile directory has no weight file {path:?}"),
            });
        }
        p.files.insert(path.to_string(), bytes.to_vec());
        p.files_changed = true;
        Ok(())
    }

    fn compile_ms(&self, id: ProgramId) -> Option<f64> {
        self.compile_estimate_ms(id)
    }

    /// The back-to-back estimate with the dispatch floor replaced by `cost.isolated_eval_ms` (C40).
    fn evaluate_isolated(
        &self,
        id: ProgramId,
        inputs: &[Surface],
        outputs: &mut [Surface],
    ) -> Result<EvalReport, DeviceError> {
        let mut report = self.evaluate(id, inputs, outputs)?;
        let e = &mut report.estimate;
        e.floor_ms = self.profile.cost.isolated_eval_ms;
        e.total_ms = e.floor_ms + e.compute_ms.max(e.bandwidth_ms);
        report.estimated_ms = e.total_ms;
        Ok(report)
    }
}

fn unknown(id: ProgramId) -> DeviceError {
    DeviceError::UnknownProgram {
        program: id.to_string(),
    }
}

/// Request slot k binds to `slots[perm[k]]`.
fn binding_order(slots: &[IoSlot], order: IoBindingOrder) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..slots.len()).collect();
    if order == IoBindingOrder::Alphabetical {
        perm.sort_by(|&a, &b| slots[a].name.as_bytes().cmp(slots[b].name.as_bytes()));
    }
    perm
}

/// The I/O tensor a MIL parameter declares; only fp16 and fp32 tensors have a surface format (C31).
fn io_slot(name: &str, ty: &mil::MilType) -> Result<IoSlot, String> {
    let (dtype, dims) = ty
        .known_tensor()
        .ok_or_else(|| format!("parameter {name:?} of type {ty} has no fixed tensor shape"))?;
    let dtype = match dtype {
        MilDType::Fp16 => DType::F16,
        MilDType::Fp32 => DType::F32,
        other => {
            return Err(format!(
                "parameter {name:?} is {other}: surfaces hold fp16 or fp32 only"
            ))
        }
    };
    Ok(IoSlot {
        name: name.to_string(),
        dtype,
        dims,
    })
}

/// The weight files the program references, copied out of the dictionary (baking them, C07).
fn referenced_files(program: &Program, weights: &WeightDict) -> Result<WeightDict, String> {
    let mut files = WeightDict::new();
    for function in &program.functions {
        for op in &function.operations {
            for (_, literal) in &op.attributes {
                if let Value::Blob { path, .. } = &literal.value {
                    let bytes = weights
                        .get(path)
                        .ok_or_else(|| format!("weight file {path:?} is not in the weight dictionary"))?;
                    files.insert(path.clone(), bytes.clone());
                }
            }
        }
    }
    Ok(files)
}

/// MIL function `main` → IR graph with the weights resolved from `files`.
fn convert(program: &Program, files: &WeightDict) -> Result<Graph, String> {
    let resolver = BlobDictResolver::new(files.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    mil::to_graph(program, "main", &resolver).map_err(|e| e.to_string())
}

/// Runs `graph` node by node in fp16 rounding, applying the device effects of `options`.
fn run_graph(graph: &Graph, inputs: Vec<Tensor>, options: SimOptions) -> orion_core::Result<Vec<Tensor>> {
    let mut values: Vec<Option<Tensor>> = vec![None; graph.values().len()];
    let mut next_input = inputs.into_iter();
    for node in graph.nodes() {
        let results = if let Op::Input { name, .. } = &node.op {
            let given = next_input
                .next()
                .ok_or_else(|| exec_error(format!("no surface for input {name:?}")))?;
            vec![round_input(given)?]
        } else {
            let operands = node
                .inputs
                .iter()
                .map(|v| {
                    values[v.index()]
                        .as_ref()
                        .ok_or_else(|| exec_error(format!("value {v} not computed")))
                })
                .collect::<orion_core::Result<Vec<&Tensor>>>()?;
            let mut results = eval_op(&node.op, &operands, Precision::F16Rounding)?;
            device_effects(&node.op, &operands, &mut results, options)?;
            results
        };
        for (v, t) in node.outputs.iter().zip(results) {
            values[v.index()] = Some(t);
        }
    }
    graph
        .outputs()
        .iter()
        .map(|o| {
            values[o.value.index()]
                .clone()
                .ok_or_else(|| exec_error(format!("output {:?} not computed", o.name)))
        })
        .collect()
}

fn exec_error(message: String) -> orion_core::CoreError {
    orion_core::CoreError::Execute {
        op: "ane-sim".to_string(),
        message,
    }
}

/// An input read from an fp32 surface enters the fp16 datapath rounded (fp16 surfaces already are).
fn round_input(t: Tensor) -> orion_core::Result<Tensor> {
    match t.data() {
        TensorData::Float(v) if t.dtype() == DType::F32 => {
            let rounded = v.iter().map(|&x| orion_core::tensor::round_to_f16(x)).collect();
            Ok(Tensor::new(DType::F32, t.shape().clone(), TensorData::Float(rounded))?)
        }
        _ => Ok(t),
    }
}

/// What the device does differently from the reference interpreter for this op (C35, C36).
fn device_effects(
    op: &Op,
    operands: &[&Tensor],
    results: &mut [Tensor],
    options: SimOptions,
) -> orion_core::Result<()> {
    match op {
        Op::MatMul { .. } | Op::Conv1x1 => {
            if options.matmul_overflow_to_inf {
                for r in results.iter_mut() {
                    *r = saturate_to_inf(r, MATMUL_OVERFLOW)?;
                }
            }
        }
        Op::Slice { begin, .. } => {
            let width_offset = begin.last().is_some_and(|&b| b > 0);
            if options.width_offset_slice_gain && width_offset {
                for r in results.iter_mut() {
                    *r = saturate_to_inf(r, WIDTH_OFFSET_LIMIT)?;
                }
            }
        }
        Op::Split { axis, .. } => {
            let last_axis = operands.first().is_some_and(|x| x.shape().rank() == axis + 1);
            if options.width_offset_slice_gain && last_axis {
                for r in results.iter_mut().skip(1) {
                    *r = saturate_to_inf(r, WIDTH_OFFSET_LIMIT)?;
                }
            }
        }
        Op::Input { .. }
        | Op::Const { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Pad { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Broadcast { .. }
        | Op::Cast { .. }
        | Op::Select
        | Op::Identity => {}
    }
    Ok(())
}

/// `t` with every float element beyond ±`limit` replaced by ±inf.
fn saturate_to_inf(t: &Tensor, limit: f32) -> orion_core::Result<Tensor> {
    match t.data() {
        TensorData::Float(v) => {
            let out = v
                .iter()
                .map(|&x| if x.abs() > limit { f32::INFINITY.copysign(x) } else { x })
                .collect();
            Ok(Tensor::new(t.dtype(), t.shape().clone(), TensorData::Float(out))?)
        }
        TensorData::I32(_) | TensorData::Bool(_) => Ok(t.clone()),
    }
}

/// `(dims, dtype)` of every I/O tensor.
fn io_shapes(p: &SimProgram) -> Vec<(Vec<usize>, DType)> {
    p.inputs
        .iter()
        .chain(&p.outputs)
        .map(|s| (s.dims.clone(), s.dtype))
        .collect()
}

/// The cost model's estimate for one evaluation of `graph` (ane.md §8):
/// - flops: `2·numel(out)·K` per matmul and conv, one per output element of elementwise ops
///   (unary, binary, compare, select, cast) and softmax, one per input element of reductions; data
///   movement costs nothing; a matmul with a constant operand counts [`MATMUL_WEIGHT_PENALTY`]× (C41);
/// - bytes: the request's surfaces; weight bytes: every constant of the program;
/// - S and C: last axis and the product of the others of the largest I/O tensor;
/// - an I/O last axis whose byte length is not a multiple of `last_axis_alignment_bytes` scales throughput by
///   [`UNALIGNED_EFFICIENCY`] (C22).
fn program_cost(graph: &Graph, profile: &ChipProfile, io_bytes: f64, io: &[(Vec<usize>, DType)]) -> EvalReport {
    let alignment = profile.limits.last_axis_alignment_bytes;
    let (flops, penalised) = count_flops(graph);
    let weight_bytes: f64 = graph
        .nodes()
        .iter()
        .filter_map(|n| {
            if let Op::Const { value } = &n.op {
                Some(value.ty().size_bytes() as f64)
            } else {
                None
            }
        })
        .fold(0.0, |acc, b| acc + b);
    let largest = io.iter().max_by_key(|(dims, _)| dims.iter().product::<usize>());
    let (spatial, channels) = largest
        .map(|(dims, _)| {
            let s = dims.last().copied().unwrap_or(1);
            (s, dims.iter().product::<usize>() / s.max(1))
        })
        .unwrap_or((1, 1));
    let aligned = io.iter().all(|(dims, dtype)| {
        let row = dims.last().copied().unwrap_or(1) * element_bytes(*dtype).unwrap_or(1);
        row.is_multiple_of(alignment.max(1))
    });
    let alignment_factor = if aligned { 1.0 } else { UNALIGNED_EFFICIENCY };
    let effective = penalised / alignment_factor;
    let estimate = profile.estimate_eval(effective, io_bytes, weight_bytes, spatial, channels);
    EvalReport {
        estimated_ms: estimate.total_ms,
        estimate,
        flops,
        io_bytes,
        weight_bytes,
        layout_efficiency: if effective > 0.0 { flops / effective } else { 1.0 },
    }
}

/// `(flops, flops with the C41 penalty)` of a graph; FLOPs as `orion_core::flops` defines them.
fn count_flops(graph: &Graph) -> (f64, f64) {
    let is_const = |v: &orion_core::ValueId| matches!(graph.producer(*v).op, Op::Const { .. });
    let (mut plain, mut penalised) = (0.0, 0.0);
    for node in graph.nodes() {
        let f = orion_core::flops::node_flops(graph, node);
        if matches!(node.op, Op::MatMul { .. }) && node.inputs.iter().any(is_const) {
            penalised += f * (MATMUL_WEIGHT_PENALTY - 1.0);
        }
        plain += f;
    }
    (plain, plain + penalised)
}
