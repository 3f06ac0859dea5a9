//! The device interface: what the runtime asks of an ANE (compile / load / evaluate / unload, ane.md §1),
//! implemented by the simulator here and by the real macOS device later.
//!
//! - [`AneDevice`]: the trait; it receives exactly the bytes the real device receives — MIL text as UTF-8
//!   bytes (C01) and a weight dictionary that is always present, empty for weight-free programs (C02),
//!   keyed by the MIL path with the whole blob file as value (C03);
//! - [`Surface`]: a flat byte buffer standing for one IOSurface (`kIOSurfaceWidth = bytes`, height 1);
//!   its length is the allocation size and its meaning comes only from the MIL signature (ane.md §1, §2);
//! - [`EvalReport`]: what one evaluation cost according to the chip's cost model (ane.md §8);
//! - [`DeviceError`]: every failure, with the catalogue rule that explains it when one does;
//! - `sim`: [`SimulatedAne`], the simulated device;
//! - [`workdir`]: the compile directory the real compiler reads (C04), shared and tested on Linux;
//! - [`errors`]: known causes of device failures (status codes, messages → catalogue ids);
//! - [`host`]: host facts for `orion doctor` and chip detection from the CPU brand string;
//! - `macos` (Apple platforms only): [`RealAne`](macos::RealAne), the real device.
//!
//! Invariants: program ids are never reused within one device instance; a device counts every compile
//! it attempts against the profile's compile budget (C06) and refuses compiles past it; an evaluation
//! runs only on a loaded program.

pub mod errors;
pub mod host;
#[cfg(target_vendor = "apple")]
#[allow(unsafe_code)]
pub mod macos;
mod sim;
pub mod workdir;

pub use sim::{SimOptions, SimulatedAne};

use crate::profile::{ChipProfile, EvalEstimate};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The weight dictionary a compile receives: MIL path (`@model_path/weights/w.bin`) → whole blob file.
pub type WeightDict = BTreeMap<String, Vec<u8>>;

/// Status the device reports for a request it cannot run (`ANEProgramProcessRequestDirect() Failed
/// with status=0x1d : Program Inference error`, ane.md §2; every reported eval failure carries it).
pub const STATUS_PROGRAM_INFERENCE_ERROR: u32 = 0x1d;

/// Identifies one compiled program on one device instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(pub u64);

impl std::fmt::Display for ProgramId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "program#{}", self.0)
    }
}

/// One I/O surface: a flat byte buffer whose length is its allocation size.
#[derive(Clone, PartialEq, Eq)]
pub struct Surface {
    bytes: Vec<u8>,
}

impl Surface {
    /// A zero-filled surface of `len` bytes.
    pub fn zeroed(len: usize) -> Surface {
        Surface { bytes: vec![0; len] }
    }

    /// A surface holding exactly `bytes` (its allocation size is `bytes.len()`).
    pub fn from_bytes(bytes: Vec<u8>) -> Surface {
        Surface { bytes }
    }

    /// Allocation size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a zero-byte surface (which no device accepts).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Surface({} bytes)", self.bytes.len())
    }
}

/// What one evaluation cost according to the chip's cost model (ane.md §8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Estimated wall time of the evaluation, ms (`estimate.total_ms` after the simulator's penalties).
    pub estimated_ms: f64,
    /// The cost model's breakdown.
    pub estimate: EvalEstimate,
    /// Floating-point operations counted from the program (2·M·N·K per matmul/conv, 1 per element of
    /// elementwise and reduce ops), before penalties.
    pub flops: f64,
    /// Bytes of every input and output surface (allocation sizes).
    pub io_bytes: f64,
    /// Bytes of the program's constant tensors (weights are re-streamed per evaluation).
    pub weight_bytes: f64,
    /// Efficiency factor from layout penalties the cost model does not know (C22 unaligned last axis,
    /// C41 matmul with a baked weight operand); 1 = no penalty.
    pub layout_efficiency: f64,
}

/// Everything a device can report as failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The compiler rejected the program (`ANECCompile() FAILED`).
    #[error("compile of {program} failed{}: {message}", rule_suffix(.rule))]
    Compile {
        program: String,
        message: String,
        rule: Option<&'static str>,
    },
    /// The process has used its compile budget (C06); restart the process to compile more.
    #[error("compile budget exhausted: {used} of {budget} compiles used in this process (C06)")]
    BudgetExhausted { used: u32, budget: u32 },
    /// Loading a compiled program failed.
    #[error("load of {program} failed: {message}")]
    Load { program: String, message: String },
    /// Evaluation failed with a device status.
    #[error("evaluation of {program} failed with status {status:#x}{}: {message}", rule_suffix(.rule))]
    Evaluate {
        program: String,
        status: u32,
        message: String,
        rule: Option<&'static str>,
    },
    /// Unloading failed.
    #[error("unload of {program} failed: {message}")]
    Unload { program: String, message: String },
    /// The id names no program of this device (never compiled, or already released).
    #[error("unknown program {program}")]
    UnknownProgram { program: String },
    /// Host-side surface work failed: a tensor that does not fit its I/O description, a surface too
    /// small for its data, a count mismatch.
    #[error("surface {name}: {message}")]
    Surface { name: String, message: String },
}

impl DeviceError {
    /// The catalogue rule that explains the failure, when one does.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            DeviceError::Compile { rule, .. } | DeviceError::Evaluate { rule, .. } => *rule,
            DeviceError::BudgetExhausted { .. } => Some("C06"),
            DeviceError::Load { .. }
            | DeviceError::Unload { .. }
            | DeviceError::UnknownProgram { .. }
            | DeviceError::Surface { .. } => None,
        }
    }
}

fn rule_suffix(rule: &Option<&'static str>) -> String {
    match rule {
        Some(id) => format!(" ({id})"),
        None => String::new(),
    }
}

/// An Apple Neural Engine as the runtime sees it (ane.md §1). Implementations are shared between
/// threads; every method takes `&self`.
pub trait AneDevice: Debug + Send + Sync {
    /// A short name for reports (`ane-sim-m4`, `ane-h16`).
    fn name(&self) -> &str;
    /// The chip profile the device follows.
    fn profile(&self) -> &ChipProfile;
    /// Compiles a MIL program (UTF-8 bytes, C01) with its weight dictionary (C02). Counts against the
    /// compile budget (C06) whether or not it succeeds.
    fn compile(&self, mil_text: &[u8], weights: &WeightDict) -> Result<ProgramId, DeviceError>;
    /// Loads a compiled program so that it can be evaluated.
    fn load(&self, id: ProgramId) -> Result<(), DeviceError>;
    /// Runs a loaded program: `inputs` and `outputs` bind to the MIL parameters and returned variables
    /// in the chip's binding order (C19), not necessarily declaration order.
    fn evaluate(&self, id: ProgramId, inputs: &[Surface], outputs: &mut [Surface]) -> Result<EvalReport, DeviceError>;
    /// Unloads a loaded program (C05: every loaded program must be unloaded). It stays compiled and may
    /// be loaded again without a compile (Orion's reload path, ane.md §6).
    fn unload(&self, id: ProgramId) -> Result<(), DeviceError>;
    /// Compiles attempted so far by this device instance (the process, on the real device).
    fn compile_count(&self) -> u32;
    /// Overwrites one weight file of a compiled program in its compile directory (Orion's reload path,
    /// ane.md §6). Whether a later unload/load makes the new weights take effect is the chip's business
    /// (C07: on the chips measured it does not).
    fn overwrite_weight_file(&self, id: ProgramId, path: &str, bytes: &[u8]) -> Result<(), DeviceError>;
    /// How long compiling `id` took by the device's own clock, ms: the simulator reports its cost-model
    /// estimate (C42), the real device the measured wall time of the compile. `None` when the device
    /// keeps no such time or `id` names no program of it.
    fn compile_ms(&self, id: ProgramId) -> Option<f64> {
        let _ = id;
        None
    }
    /// [`AneDevice::evaluate`] on an idle engine rather than back to back with other evaluations: the
    /// time it reports pays the latency of an isolated evaluation (C40, `cost.isolated_eval_ms`) instead
    /// of the back-to-back dispatch floor. The default is a plain `evaluate`.
    fn evaluate_isolated(
        &self,
        id: ProgramId,
        inputs: &[Surface],
        outputs: &mut [Surface],
    ) -> Result<EvalReport, DeviceError> {
        self.evaluate(id, inputs, outputs)
    }
}
