//! The fast CPU backend: compiles a graph once into an execution plan and runs it with
//! vectorised, multi-threaded kernels (`gemm` for matrix products, a hand-written GEMV for
//! single-row products, fused elementwise loops, row loops for softmax and reductions).
//!
//! Modules: `plan` (values → homes and arena slots, steps), `fusion` (elementwise groups, and the
//! groups a row-wise softmax or reduction evaluates inside its own step), `attention` (attention
//! scores computed inside their softmax step, skipping the keys a causal mask hides),
//! `attention_backward` (attention's backward from `dO` to `dQ`, `dK`, `dV` in one step, skipping
//! zero probabilities), `tile_product` (their small in-cache products), `lower`
//! (kernel choice per step), `exec` (running steps), `hot_workers` (the pool's other workers kept awake during a
//! run, so short parallel steps do not wait for a sleeping thread), and the kernels: `matmul` (the
//! `gemm` wrapper), `gemm_kernel` (AVX-512 GEMM for products of fewer than 128 rows), `gemm_bf16`
//! (the bfloat16-product GEMM of `ProductPrecision::Bf16`, AVX512_BF16) with `bf16_pack` (its operands
//! rounded and packed in pairs) and `gemm_amx` (its tiles on AMX where the CPU has it), `gemm_shared` (how both GEMMs split a product across tasks), `gemv`
//! (AVX2/AVX-512 matrix-vector kernel for one-token decode), `gemv_rows` (the same for a short
//! prompt's few rows at once, reading the weights in place), `vmath` (vectorised `exp`, `tanh`,
//! `sigmoid`), `loss` (fused softmax cross-entropy, used by the training head), `elementwise`,
//! `reduce`, `layout`, `strided`; `storage` holds buffers and views; `weight_forms` the derived
//! (transposed, half) weights; `huge_pages` the opt-in huge-page backing of decode weights. `matmul`, `gemm_kernel`, `gemm_bf16`, `gemm_amx`, `bf16_pack`, `gemv`, `vmath` and `huge_pages` are the
//! crate's unsafe modules (the `gemm` call; SIMD intrinsics behind run-time feature checks; AMX
//! inline assembly and one `arch_prctl`; one `madvise`), each unsafe block with its safety argument.
//!
//! Invariants: `compile` verifies the graph and does all planning; `run` checks inputs, then only
//! executes steps, reusing arena buffers between runs (a `Mutex`-guarded pool, so concurrent runs
//! each get their own arena; a graph output alone in its slot leaves with its buffer, which the
//! arena replaces), on the worker threads of [`install`]'s pool (or the options' own
//! pool). Results match the reference interpreter in `Precision::F32` within `Tolerance::F32`
//! (data movement and reductions bit for bit; elementwise ops bit for bit except `exp`, `tanh` and
//! `sigmoid`, within a few ulp; softmax and matrix products up to summation order); F16-typed
//! values are rounded to half after every op, as the interpreter does. With `WeightFormat::F16`,
//! float constants used as matmul/conv1x1 weights are stored in half precision (a constant also
//! used otherwise, like a tied embedding table, keeps its f32 values for those uses), so results
//! then match the interpreter run on half-rounded weights.

mod attention;
mod attention_backward;
mod bf16_pack;
mod elementwise;
mod epilogue;
mod exec;
mod fusion;
mod gemm_amx;
mod gemm_bf16;
mod gemm_kernel;
mod gemm_shared;
mod gemv;
mod gemv_reading;
mod gemv_rows;
mod hot_workers;
mod huge_pages;
mod layout;
mod loss;
mod lower;
mod matmul;
mod plan;
mod reduce;
mod storage;
mod strided;
mod tile_product;
mod vmath;
mod weight_forms;

pub use plan::PlanSummary;
pub use storage::{recycle, recycle_vec, spare_buffer};

use crate::backend::{Backend, Executable};
use crate::error::Result;
use crate::graph::Graph;
use crate::interp::exec_error;
use crate::tensor::{Tensor, TensorData};
use plan::Plan;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use storage::{Buf, View};

/// The kernels, public for benchmarks and for host code that runs them directly (the training
/// head): `gemm_f32`/`gemm_f32_strided` (through `gemm`, or the AVX-512 kernel below 128 rows),
/// `gemm_f32_crate` (always `gemm`: the baseline), `gemv` (single-row products) and the
/// fused `softmax_cross_entropy`; `avx512_gemm_available` tells whether this CPU runs the AVX-512
/// kernel (and so whether plans pack their constant weights), `bf16_product_kernel` which kernel
/// `ProductPrecision::Bf16` runs on it.
pub mod kernels {
    pub use super::gemm_bf16::available as bf16_products_available;
    pub use super::gemm_bf16::kernel_description as bf16_product_kernel;
    pub use super::gemm_kernel::available as avx512_gemm_available;
    pub use super::gemv::{gemv, kernel_description as gemv_kernel, many_rows_kernel_available, MatrixRows};
    pub use super::gemv_reading::{gemv_reading, GemvReading};
    pub use super::loss::softmax_cross_entropy;
    pub use super::matmul::{gemm_f32, gemm_f32_crate, gemm_f32_strided, gemm_with, MatRef};
}

/// Runs `op` on a worker of the process-wide CPU pool (one worker per core, created on first use)
/// and returns its result; inside a rayon worker it runs in place. Every parallel kernel `op`
/// starts then runs in that pool while the calling thread sleeps, so a caller outside the pool is
/// not one more busy thread competing with the workers for the cores. Falls back to the calling
/// thread if the pool cannot be started.
pub fn install<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if rayon::current_thread_index().is_some() {
        return op();
    }
    let pool = POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("orion-cpu-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(op),
        None => op(),
    }
}

/// Storage format of constant matmul/conv1x1 weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// As given (f32 values).
    #[default]
    F32,
    /// Rounded to half precision and stored in 16 bits; converted to f32 inside the kernels.
    F16,
}

/// The arithmetic of the CPU backend's large matrix products (and of the training head's, which
/// calls [`kernels::gemm_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProductPrecision {
    /// f32 operands and f32 multiply-adds: the interpreter's definition, within `Tolerance::F32`.
    #[default]
    F32,
    /// Mixed precision: both operands of a large product are rounded to bfloat16 (nearest even)
    /// and their products summed in f32 (`vdpbf16ps`, see `gemm_bf16`), twice the f32
    /// multiply-add rate where the CPU has AVX512_BF16. Results then match the interpreter run on
    /// bfloat16-rounded operands, up to summation order. On CPUs without it, the same as `F32`.
    Bf16,
}

impl ProductPrecision {
    /// `f32` or `bf16`, as the command line, checkpoints and benchmark records spell it.
    pub fn name(self) -> &'static str {
        match self {
            ProductPrecision::F32 => "f32",
            ProductPrecision::Bf16 => "bf16",
        }
    }
}

/// Options of the CPU backend (read once, at the edge, by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuOptions {
    /// Worker threads: `None` (or 0) uses the process-wide pool of [`install`] (one worker per
    /// core), `Some(n)` a dedicated pool of `n`.
    pub threads: Option<usize>,
    pub weights: WeightFormat,
    /// Ask Linux to back the weights that matrix-vector (decode) steps stream with transparent
    /// huge pages when a plan is built (see `huge_pages`): faster decode, a one-time cost per
    /// process. Ignored elsewhere.
    pub huge_pages: bool,
    /// The arithmetic of large matrix products (f32 unless asked).
    pub products: ProductPrecision,
}

/// The CPU backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuBackend {
    pub options: CpuOptions,
}

impl CpuBackend {
    pub fn new(options: CpuOptions) -> CpuBackend {
        CpuBackend { options }
    }

    /// Compiles `graph` into the concrete executable (for access to [`CpuExecutable::plan_summary`]).
    pub fn compile_cpu(&self, graph: &Graph) -> Result<CpuExecutable> {
        crate::verify::verify(graph)?;
        let mut plan = Plan::build(graph, self.options.weights, self.options.products)?;
        if self.options.huge_pages {
            plan.summary.huge_page_bytes = huge_pages::back_streamed_weights(&plan);
        }
        let pool = match self.options.threads.filter(|&n| n > 0) {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| exec_error("cpu", format!("cannot start {n} worker threads: {e}")))?,
            ),
            None => None,
        };
        Ok(CpuExecutable {
            graph_name: graph.name().to_string(),
            sole_output: sole_outputs(&plan),
            plan,
            pool,
            arenas: Mutex::new(Vec::new()),
        })
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn compile(&self, graph: &Graph) -> Result<Box<dyn Executable>> {
        Ok(Box::new(self.compile_cpu(graph)?))
    }
}

/// The measured time of one step of a profiled run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTime {
    /// Kernel name, as in [`PlanSummary::kernels`].
    pub kernel: &'static str,
    /// The op of the step (the root op of a fused group).
    pub op: &'static str,
    /// The first value the step defines.
    pub value: crate::graph::ValueId,
    pub ms: f64,
}

/// A graph compiled for the CPU.
#[derive(Debug)]
pub struct CpuExecutable {
    graph_name: String,
    plan: Plan,
    pool: Option<rayon::ThreadPool>,
    /// Per graph output: the only output in its slot (handed over without a copy).
    sole_output: Vec<bool>,
    /// Arenas not in use by a run; a run takes one (or makes one) and puts it back.
    arenas: Mutex<Vec<Vec<Buf>>>,
}

impl CpuExecutable {
    /// What the plan looks like (steps, kernels, fusion, memory).
    pub fn plan_summary(&self) -> &PlanSummary {
        &self.plan.summary
    }

    fn take_arena(&self) -> Vec<Buf> {
        let reused = self.arenas.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| {
            self.plan
                .slots
                .iter()
                .map(|&(kind, len)| Buf::zeroed(kind, len))
                .collect()
        })
    }

    fn give_back(&self, arena: Vec<Buf>) {
        self.arenas.lock().unwrap_or_else(|e| e.into_inner()).push(arena);
    }

    /// Checks the count and types of `inputs` against the graph's inputs (the interpreter's errors).
    fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        let declared = &self.plan.inputs;
        if declared.len() != inputs.len() {
            let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
            return Err(exec_error(
                "input",
                format!(
                    "graph {} takes {} input(s) {names:?}, got {}",
                    self.graph_name,
                    declared.len(),
                    inputs.len()
                ),
            ));
        }
        for ((name, ty), given) in declared.iter().zip(inputs) {
            if given.ty() != *ty {
                return Err(exec_error(
                    "input",
                    format!("input {name:?} is declared {ty}, got {}", given.ty()),
                ));
            }
        }
        Ok(())
    }

    /// Runs like [`Executable::run`] and also returns the measured wall time of every step, in
    /// plan order (for benchmarks and tuning; timing adds a clock read per step).
    pub fn run_profiled(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Vec<StepTime>)> {
        self.check_inputs(inputs)?;
        let mut arena = self.take_arena();
        let mut times = Vec::with_capacity(self.plan.steps.len());
        let result = match &self.pool {
            Some(pool) => pool.install(|| self.execute(inputs, &mut arena, Some(&mut times))),
            None => install(|| self.execute(inputs, &mut arena, Some(&mut times))),
        };
        self.give_back(arena);
        Ok((result?, times))
    }

    /// Runs the steps with the pool's other workers kept awake ([`hot_workers`]).
    fn execute(&self, inputs: &[Tensor], arena: &mut [Buf], times: Option<&mut Vec<StepTime>>) -> Result<Vec<Tensor>> {
        let threads = rayon::current_num_threads();
        hot_workers::with_hot_workers(threads, || self.execute_steps(inputs, arena, times, threads))
    }

    /// The plan's steps in order, then the graph outputs (on a worker of the run's pool).
    fn execute_steps(
        &self,
        inputs: &[Tensor],
        arena: &mut [Buf],
        mut times: Option<&mut Vec<StepTime>>,
        threads: usize,
    ) -> Result<Vec<Tensor>> {
        for step in &self.plan.steps {
            let start = times.as_ref().map(|_| Instant::now());
            exec::run_step(&self.plan, step, inputs, arena, threads)?;
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times.push(StepTime {
                    kernel: step.kernel.name(),
                    op: step.op,
                    value: step.value,
                    ms: start.elapsed().as_secs_f64() * 1e3,
                });
            }
        }
        let mut outputs = Vec::with_capacity(self.plan.outputs.len());
        for (index, (operand, ty)) in self.plan.outputs.iter().enumerate() {
            outputs.push(self.output(index, operand, ty, inputs, arena)?);
        }
        Ok(outputs)
    }

    /// Graph output `index` after a run. A value alone in its slot is handed over without copying
    /// (the slot gets a buffer from the spare pool, or a fresh zeroed one, for the next run); an
    /// input or f32 constant returned whole shares its storage; any other value (several outputs in
    /// one slot, half constants, part of a buffer) is copied.
    fn output(
        &self,
        index: usize,
        operand: &plan::Operand,
        ty: &crate::types::TensorType,
        inputs: &[Tensor],
        arena: &mut [Buf],
    ) -> Result<Tensor> {
        let whole = |t: &Tensor| t.dtype() == ty.dtype && t.numel() == operand.numel;
        let shared = match operand.loc {
            plan::Loc::Input(i) => inputs.get(i).filter(|t| whole(t)).cloned(),
            plan::Loc::Const(c) => match self.plan.consts.get(c) {
                Some(plan::ConstData::Tensor(t)) if whole(t) => Some(Tensor::clone(t)),
                _ => None,
            },
            plan::Loc::Slot(_) => None,
        };
        if let Some(t) = shared {
            return Ok(t.reshaped(ty.shape.clone())?);
        }
        if let (plan::Loc::Slot(s), true) = (operand.loc, self.sole_output.get(index) == Some(&true)) {
            if let (Some(buf), Some(&(kind, len))) = (arena.get_mut(s), self.plan.slots.get(s)) {
                let fresh = match kind {
                    storage::StorageKind::Float => Buf::Float(storage::spare_buffer(len)),
                    storage::StorageKind::I32 | storage::StorageKind::Bool => Buf::zeroed(kind, len),
                };
                let n = operand.numel;
                let data = match std::mem::replace(buf, fresh) {
                    Buf::Float(v) => TensorData::Float(first(v, n)),
                    Buf::I32(v) => TensorData::I32(first(v, n)),
                    Buf::Bool(v) => TensorData::Bool(first(v, n)),
                };
                return Ok(Tensor::new(ty.dtype, ty.shape.clone(), data)?);
            }
        }
        let data = match exec::view(&self.plan, operand, inputs, arena)? {
            View::Float(v) => TensorData::Float(v.to_vec()),
            View::I32(v) => TensorData::I32(v.to_vec()),
            View::Bool(v) => TensorData::Bool(v.to_vec()),
            View::Half(v) => TensorData::Float(v.iter().map(|h| h.to_f32()).collect()),
        };
        Ok(Tensor::new(ty.dtype, ty.shape.clone(), data)?)
    }
}

/// The first `n` elements of a slot buffer (slots may be longer than the value they hold).
fn first<T>(mut values: Vec<T>, n: usize) -> Vec<T> {
    values.truncate(n);
    values
}

/// For each graph output: whether it is the only output read from its arena slot (so its buffer
/// can be handed over after a run).
fn sole_outputs(plan: &Plan) -> Vec<bool> {
    let slot_of = |o: &plan::Operand| match o.loc {
        plan::Loc::Slot(s) => Some(s),
        plan::Loc::Input(_) | plan::Loc::Const(_) => None,
    };
    plan.outputs
        .iter()
        .map(|(o, _)| {
            slot_of(o).is_some_and(|s| plan.outputs.iter().filter(|(p, _)| slot_of(p) == Some(s)).count() == 1)
        })
        .collect()
}

impl Executable for CpuExecutable {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.check_inputs(inputs)?;
        let mut arena = self.take_arena();
        let result = match &self.pool {
            Some(pool) => pool.install(|| self.execute(inputs, &mut arena, None)),
            None => install(|| self.execute(inputs, &mut arena, None)),
        };
        self.give_back(arena);
        result
    }
}
