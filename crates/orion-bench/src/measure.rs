//! Measuring: repeated timing with a median, and [`Instrumented`], a backend wrapper that keeps every
//! program it compiles (graph and executable) so suites can time each program type, count its FLOPs
//! and read the simulated ANE's cost-model estimate.
//!
//! The artificial slowdown lives here: an `Instrumented` backend sleeps for its `delay` inside every
//! program run, and [`time_iterations`] inside every timed iteration, so a benchmark made slower on
//! purpose is slower in exactly the regions it times (the regression gate's test uses this).
//!
//! Invariants: a sample is the wall time of one complete iteration, ms; the median of an even count
//! is the mean of the two middle samples; statistics of a program cover only runs through it.

use crate::error::{BenchError, Result};
use crate::result::{Device, ProductsChoice, WeightsChoice};
use orion_ane::backend::{AneBackend, AneExecutable};
use orion_ane::device::EvalReport;
use orion_ane::lower::{LowerOptions, WeightMode as AneWeightMode};
use orion_ane::profile::ChipProfile;
use orion_core::backend::{Backend, Executable};
use orion_core::cpu::{CpuBackend, CpuOptions, WeightFormat};
use orion_core::{DType, Graph, Tensor};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Milliseconds since `start`.
pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// The median of `samples` (NaN for none).
pub fn median(samples: &[f64]) -> f64 {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

/// Runs `f` `warmup` times untimed, then `iterations` times timed (each sleeping `delay` inside its
/// timed region); returns the timed samples in ms.
pub fn time_iterations(
    warmup: usize,
    iterations: usize,
    delay: Duration,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        f()?;
        samples.push(ms_since(start));
    }
    Ok(samples)
}

/// What one compiled program has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunStats {
    pub runs: u64,
    /// Wall time of all runs, ms.
    pub wall_ms: f64,
    /// The cost model's estimate summed over all runs, ms (simulated ANE only).
    pub estimated_ms: f64,
    /// The cost report of the latest run (simulated ANE only).
    pub last_report: Option<EvalReport>,
}

#[derive(Debug)]
enum Compiled {
    Plain(Box<dyn Executable>),
    Ane(Box<AneExecutable>),
}

/// A program compiled through an [`Instrumented`] backend.
#[derive(Debug)]
pub struct CompiledProgram {
    /// The graph as the backend received it.
    pub graph: Graph,
    exe: Compiled,
    delay: Duration,
    stats: Mutex<RunStats>,
}

impl CompiledProgram {
    /// Runs the program (sleeping the backend's delay first) and records the run.
    pub fn run(&self, inputs: &[Tensor]) -> orion_core::Result<Vec<Tensor>> {
        let start = Instant::now();
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let (outputs, report) = match &self.exe {
            Compiled::Plain(exe) => (exe.run(inputs)?, None),
            Compiled::Ane(exe) => (Executable::run(exe.as_ref(), inputs)?, exe.last_report()),
        };
        let wall = ms_since(start);
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.runs += 1;
        stats.wall_ms += wall;
        if let Some(r) = report {
            stats.estimated_ms += r.estimated_ms;
            stats.last_report = Some(r);
        }
        Ok(outputs)
    }

    pub fn stats(&self) -> RunStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        self.graph.name()
    }
}

/// The executable handed to callers: runs through the shared record.
#[derive(Debug)]
struct Handle(Arc<CompiledProgram>);

impl Executable for Handle {
    fn run(&self, inputs: &[Tensor]) -> orion_core::Result<Vec<Tensor>> {
        self.0.run(inputs)
    }

    fn reload_constants(&self, graph: &Graph) -> orion_core::Result<bool> {
        match &self.0.exe {
            Compiled::Plain(exe) => exe.reload_constants(graph),
            Compiled::Ane(exe) => Executable::reload_constants(exe.as_ref(), graph),
        }
    }
}

#[derive(Debug)]
enum Inner {
    Plain(Box<dyn Backend>),
    Ane(AneBackend),
}

/// A backend that records every program it compiles and can slow every run down on purpose.
#[derive(Debug)]
pub struct Instrumented {
    inner: Inner,
    delay: Duration,
    /// Where programs run, for tables (`cpu`, `ane-sim m4`).
    pub label: String,
    compiled: Mutex<Vec<Arc<CompiledProgram>>>,
}

impl Instrumented {
    /// Wraps any backend.
    pub fn plain(backend: Box<dyn Backend>, label: impl Into<String>, delay: Duration) -> Instrumented {
        Instrumented {
            inner: Inner::Plain(backend),
            delay,
            label: label.into(),
            compiled: Mutex::new(Vec::new()),
        }
    }

    /// Wraps an ANE backend, keeping its cost reports.
    pub fn ane(backend: AneBackend, label: impl Into<String>, delay: Duration) -> Instrumented {
        Instrumented {
            inner: Inner::Ane(backend),
            delay,
            label: label.into(),
            compiled: Mutex::new(Vec::new()),
        }
    }

    /// Every program compiled so far, in compile order.
    pub fn programs(&self) -> Vec<Arc<CompiledProgram>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The chip profile of an ANE backend.
    pub fn profile(&self) -> Option<&ChipProfile> {
        match &self.inner {
            Inner::Ane(b) => Some(b.device.profile()),
            Inner::Plain(_) => None,
        }
    }

    /// Forgets programs nobody else holds any more (baked programs replaced by a recompile).
    pub fn release_unused(&self) {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| Arc::strong_count(p) > 1);
    }

    /// Estimated ms summed over every run of every program still held (0 off the ANE).
    pub fn estimated_ms(&self) -> f64 {
        self.programs().iter().map(|p| p.stats().estimated_ms).sum()
    }

    /// Compiles `graph` and returns the shared record (for running and statistics).
    pub fn compile_program(&self, graph: &Graph) -> orion_core::Result<Arc<CompiledProgram>> {
        let exe = match &self.inner {
            Inner::Plain(b) => Compiled::Plain(b.compile(graph)?),
            Inner::Ane(b) => Compiled::Ane(Box::new(b.compile_program(graph).map_err(|e| {
                orion_core::CoreError::Execute {
                    op: "ane-compile".into(),
                    message: e.to_string(),
                }
            })?)),
        };
        let record = Arc::new(CompiledProgram {
            graph: graph.clone(),
            exe,
            delay: self.delay,
            stats: Mutex::new(RunStats::default()),
        });
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&record));
        Ok(record)
    }
}

impl Backend for Instrumented {
    fn name(&self) -> &str {
        match &self.inner {
            Inner::Plain(b) => b.name(),
            Inner::Ane(b) => b.name(),
        }
    }

    fn compile(&self, graph: &Graph) -> orion_core::Result<Box<dyn Executable>> {
        Ok(Box::new(Handle(self.compile_program(graph)?)))
    }
}

/// The CPU backend with `weights` as the storage of constant matmul weights (and the weights decode
/// streams on huge pages if `huge_pages`), its large products in `products`, instrumented.
pub fn cpu_backend(
    weights: WeightsChoice,
    huge_pages: bool,
    products: ProductsChoice,
    delay: Duration,
) -> Instrumented {
    let weights = match weights {
        WeightsChoice::F32 => WeightFormat::F32,
        WeightsChoice::F16 => WeightFormat::F16,
    };
    let options = CpuOptions {
        threads: None,
        weights,
        huge_pages,
        products: products.precision(),
    };
    Instrumented::plain(Box::new(CpuBackend::new(options)), "cpu", delay)
}

/// The simulated ANE of `chip` lowering constants as `weights` (BLOBFILE weight files or inputs),
/// instrumented.
pub fn ane_backend(chip: &str, weights: AneWeightMode, delay: Duration) -> Result<Instrumented> {
    let options = LowerOptions {
        weights,
        ..LowerOptions::default()
    };
    let backend = AneBackend::simulated(chip, options)
        .ok_or_else(|| BenchError::Usage(format!("no built-in chip profile {chip:?}")))?;
    Ok(Instrumented::ane(backend, format!("ane-sim {chip}"), delay))
}

/// The backend of training layer programs on `device` and their dtype: the CPU in f32 (its products
/// in `products`), or the simulated `chip` in fp16 lowering constants as `weights` (as `orion train`
/// builds them: weight files for the baked strategies, inputs for `dynamic`).
pub fn layer_backend(
    device: Device,
    chip: &str,
    weights: AneWeightMode,
    products: ProductsChoice,
    delay: Duration,
) -> Result<(Instrumented, DType)> {
    match device {
        Device::Cpu => Ok((cpu_backend(WeightsChoice::F32, false, products, delay), DType::F32)),
        Device::AneSim => Ok((ane_backend(chip, weights, delay)?, DType::F16)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orion_core::TensorType;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn instrumented_backend_records_programs_and_runs_and_sleeps() {
        let backend = Instrumented::plain(Box::new(CpuBackend::default()), "cpu", Duration::from_millis(20));
        let mut g = Graph::new("double");
        let x = g.input("x", TensorType::new(DType::F32, [2])).unwrap();
        let y = g.add(x, x).unwrap();
        g.set_output("y", y).unwrap();
        let exe = backend.compile(&g).unwrap();
        let out = exe.run(&[Tensor::f32([2], vec![1.0, -2.0])]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![2.0, -4.0]);
        let programs = backend.programs();
        assert_eq!(programs.len(), 1);
        assert_eq!(programs[0].name(), "double");
        let stats = programs[0].stats();
        assert_eq!(stats.runs, 1);
        // The injected delay is inside the recorded run.
        assert!(stats.wall_ms >= 20.0, "{}", stats.wall_ms);
        assert!(stats.last_report.is_none());
    }
}
