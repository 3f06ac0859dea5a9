//! The probe: measures the chip behind any [`AneDevice`] and writes what it finds as a [`ChipProfile`]
//! the compiler then uses (`orion probe`, `--profile FILE`).
//!
//! Every catalogue rule that the profile encodes ([C] and [S] items of ane.md §5, and the cost model of
//! §8) is an experiment: a small MIL program with a known expected result (the reference interpreter in
//! fp16 rounding, or a CPU formula where the interpreter has no such op), compiled and evaluated on the
//! device; what happens — refused, evaluates, right numbers, inf where C35/C36 say — sets the field.
//! The run, in order (each step needs the ones before it):
//!
//! 1. `experiments::dialect` — C15: which MIL dialect compiles (`limits.dialect`);
//! 2. `limits::surfaces` — ane.md §2, C21: allocation sizes that evaluate (`surface_alignment_bytes`,
//!    `min_surface_bytes`);
//! 3. `experiments::binding` — C19, C18: distinct inputs and outputs (`io_binding_order`,
//!    `uniform_io_sizes`);
//! 4. `limits::inner_multiple`, `limits::extents` — C23, C26: searches over powers of two;
//! 5. `switches::ops`, `experiments::reload`, `experiments::numerics` — C09–C17, C28, C31, C07,
//!    C35, C36: one program per switch of `limits.ops` and `limits.numerics`;
//! 6. `cost_fit` (with `timing` and `penalties`) — ane.md §8, C22, C39, C40, C41, C42: timings at a
//!    few sizes, by the device's clock (the simulator's estimate, the real device's wall time), fitted
//!    to every `cost` field, the last-axis alignment, the SRAM knee and budget;
//! 7. `limits::budget` — C06, last: compiles until the device refuses. On a real device this uses up
//!    the process's compile budget; skipped with `quick`.
//!
//! Invariants: a device error is an observation, never a panic; the report lists every experiment
//! (rule, what ran, expected, observed, conclusion); the profile's `sources` say `probed: …` for every
//! field an experiment set and, for the others, why not and which reference value was kept (the
//! built-in profile of the device's chip unless [`ProbeOptions::reference`] names another) — values
//! are never copied from the device's own profile; the profile passes [`ChipProfile::validate`]. Two
//! fields combine a measurement with the reference by a stated rule: the surface alignment is the larger
//! of the observed one and the reference's (larger sizes are harmless), the SRAM budget the smaller of
//! the measured knee and the reference's (a program should stay under the knee).

mod cost_fit;
mod experiments;
mod limits;
mod penalties;
mod programs;
mod report;
mod session;
mod switches;
mod timing;

pub use report::write_profile;

use crate::device::AneDevice;
use crate::profile::ChipProfile;
use session::{Halt, Session, Step};

/// How to run the probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// Skip the compile-budget count (C06: it uses up the process's budget on a real device) and the
    /// SRAM spill sweep (C39, the slowest timing); those fields keep their reference values.
    pub quick: bool,
    /// Timed evaluations per measurement; above 1, one warm-up then the median (a real device's clock
    /// is noisy, the simulator's is exact).
    pub repeats: usize,
    /// Most compiles a run attempts: the budget experiment stops there and reports that no budget was
    /// reached (the CLI also lifts the real device's own guard to this number).
    pub max_budget_compiles: u32,
    /// Values for fields no experiment sets (and the starting point of the searches' first guesses);
    /// `None`: the built-in profile of the device's chip.
    pub reference: Option<ChipProfile>,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions {
            quick: false,
            repeats: 1,
            max_budget_compiles: 1000,
            reference: None,
        }
    }
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentStatus {
    /// It ran and its conclusion set the fields it names.
    Measured,
    /// It ran but what it saw sets nothing (the fields keep their reference values).
    Inconclusive,
    /// It did not run (quick mode, or the compile budget ran out first).
    Skipped,
}

impl ExperimentStatus {
    pub fn label(self) -> &'static str {
        match self {
            ExperimentStatus::Measured => "measured",
            ExperimentStatus::Inconclusive => "inconclusive",
            ExperimentStatus::Skipped => "skipped",
        }
    }
}

/// One experiment of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Catalogue id ("C09") or ane.md section ("§8").
    pub rule: &'static str,
    /// Short name ("concat").
    pub name: String,
    /// What was compiled and run.
    pub ran: String,
    /// What the reference (or the hypotheses) predict.
    pub expected: String,
    /// What the device did.
    pub observed: String,
    /// What the probe concludes, naming the fields set.
    pub conclusion: String,
    pub status: ExperimentStatus,
}

/// Everything a probe run found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The device's name (`ane-sim-m4`, `ane-h16`).
    pub device: String,
    /// In the order they ran.
    pub experiments: Vec<Experiment>,
    /// The probed profile (valid; `sources` say how each field was set).
    pub profile: ChipProfile,
    /// Compiles the probe attempted.
    pub compiles: u32,
}

impl ProbeReport {
    /// The first experiment called `name`.
    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    /// Dotted paths of the fields an experiment set (their source starts with `probed:`).
    pub fn probed_fields(&self) -> Vec<&str> {
        self.profile
            .sources
            .iter()
            .filter(|(_, text)| text.starts_with("probed:"))
            .map(|(field, _)| field.as_str())
            .collect()
    }

    /// A readable table of the experiments and the fields they set.
    pub fn table(&self) -> String {
        report::table(self)
    }
}

/// Why a probe could not produce a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Not even a one-operation program compiles and evaluates in either dialect.
    #[error("the device runs no probe program in either MIL dialect, so nothing can be measured: {0}")]
    Unusable(String),
    /// The profile file could not be written.
    #[error("cannot write the profile to {path}: {message}")]
    Write { path: String, message: String },
}

/// Runs every experiment against `device` and assembles the probed profile (see the module header).
pub fn run_probe(device: &dyn AneDevice, options: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    let reference = options
        .reference
        .clone()
        .or_else(|| ChipProfile::builtin(device.profile().id.as_str()))
        .unwrap_or_else(|| device.profile().clone());
    let mut session = Session::new(device, options, reference);
    match steps(&mut session) {
        Ok(true) | Err(Halt::Budget) => {}
        Ok(false) => {
            let seen: Vec<String> = session.experiments.iter().map(|e| e.observed.clone()).collect();
            return Err(ProbeError::Unusable(seen.join("; ")));
        }
    }
    limits::budget(&mut session);
    Ok(report::finish(session))
}

/// Steps 1–6; `Ok(false)` when the device runs nothing at all.
fn steps(s: &mut Session<'_>) -> Step<bool> {
    if !experiments::dialect(s)? {
        return Ok(false);
    }
    limits::surfaces(s);
    experiments::binding(s)?;
    limits::inner_multiple(s)?;
    limits::extents(s)?;
    switches::ops(s)?;
    experiments::reload(s)?;
    experiments::numerics(s)?;
    cost_fit::run(s)?;
    Ok(true)
}
