//! Lowering: Orion IR `Graph` → one MIL program (text + weight blobs + I/O description) for a chip.
//!
//! The public surface is [`lower`] and the types describing its result. The work is split by concern:
//! - `layout`: rank-4 internal shapes, I/O surface shapes ([`IoLayout`]), names, surface sizing;
//! - `emit`: the MIL function under construction (fresh names, named consts, view folding, DCE);
//! - `weights`: IR `Const` tensors → inline literals, BLOBFILE records (one per file) or extra inputs;
//! - `ops`: one emitter per IR op (the match lists every `Op` variant);
//! - `workarounds`: rewrites the device needs (concat without `concat`, contraction padding, linears
//!   as 1×1 conv).
//!
//! Invariants of every [`EmittedProgram`]:
//! - every MIL tensor inside the function is rank 4 (IR rank r < 4 gets 4 − r leading 1s) and fp16;
//!   fp32 appears only at the I/O boundary when fp32 surfaces were asked for and the chip allows them;
//! - inputs are named `a00_<ir name>`, outputs `z00_<ir name>` (sanitised to `[a-z0-9_]`, index width
//!   fixed per program), so declaration order = byte order = binding order (C19); `inputs`/`outputs`
//!   list them in that order;
//! - every non-tensor argument is a named const (C12); the return tuple names live variables only (C14);
//!   the same graph, profile and options give byte-identical text and weights;
//! - `mil_text == print_program(&program, dialect)`; `lint` holds [`crate::lint::lint`]'s findings.

mod emit;
mod layout;
mod ops;
mod weights;
mod workarounds;

use std::collections::BTreeMap;

use orion_core::{DType, Graph, TensorType, ValueId};

use crate::error::AneError;
use crate::lint::Violation;
use crate::mil::{self, Dialect};
use crate::profile::{ChipProfile, MilDialect};

/// How IR `Const` tensors (weights) reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightMode {
    /// Constants bigger than a few elements become BLOBFILE constants, one tensor per file (C17).
    #[default]
    Baked,
    /// Constants bigger than a few elements become extra function inputs, so one compiled program
    /// serves any weights (ane.md §6 "separate parameters").
    Inputs,
}

/// Element type of the I/O surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IoDType {
    /// fp16 surfaces (works on every chip).
    #[default]
    F16,
    /// fp32 surfaces with an in-program `cast` (only where `limits.ops.fp32_io_cast`, C16).
    F32,
}

/// What the caller asks of the lowering; `None` = the profile's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LowerOptions {
    pub weights: WeightMode,
    /// `None`: `profile.limits.dialect`.
    pub dialect: Option<Dialect>,
    /// `None`: fp16. `Some(F32)` on a chip without `fp32_io_cast` is an error.
    pub io_dtype: Option<IoDType>,
}

/// How one IR tensor is laid out in its surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoLayout {
    /// IR `[rows, cols]` (e.g. `[T, D]`) ↔ MIL `[1, cols, 1, rows]`: IR element (r, c) sits at flat index
    /// `c·rows + r` of the surface (channel-major, ane.md §2). The host transposes.
    ChannelMajor { rows: usize, cols: usize },
    /// IR tensor of any other rank with N elements ↔ MIL `[1, 1, 1, N]`: the IR row-major order is the
    /// surface order (the host copies). One channel row, so packed and 64-byte-strided reads agree (C20)
    /// and a single row needs no per-channel padding (ane.md §2 minimum-size hypothesis).
    Flat,
}

/// One function input or output and its surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDesc {
    /// Graph input/output name; for a constant turned input (`WeightMode::Inputs`), `"%N"` where N is
    /// the `ValueId` of the `Const` in the lowered graph (see [`const_input_value`]).
    pub ir_name: String,
    /// MIL parameter or returned variable name (`a00_x`, `z00_y`).
    pub mil_name: String,
    pub ir_type: TensorType,
    /// The declared MIL shape, `[1, C, 1, S]`.
    pub mil_shape: [usize; 4],
    /// `DType::F16` or `DType::F32`.
    pub surface_dtype: DType,
    pub layout: IoLayout,
    /// Bytes of the declared MIL tensor.
    pub dense_bytes: usize,
    /// Bytes to allocate: at least `dense_bytes` and the chip's minimum (C21), rounded to the surface
    /// alignment, and equal across the side when the chip wants uniform sizes (C18).
    pub surface_bytes: usize,
}

/// The MIL program for one graph, ready for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedProgram {
    /// The graph's name.
    pub name: String,
    pub dialect: Dialect,
    pub program: mil::Program,
    /// `print_program(&program, dialect)`.
    pub mil_text: String,
    /// MIL path (`@model_path/weights/….bin`) → whole blob file; empty when nothing is baked.
    pub weights: BTreeMap<String, Vec<u8>>,
    /// In device binding order (= declaration order = name order).
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    /// What [`crate::lint::lint`] says about the program on this chip.
    pub lint: Vec<Violation>,
}

/// The `ValueId` of the constant an input stands for, when `desc` is a constant turned input
/// (`ir_name` `"%N"`); `None` for graph inputs.
pub fn const_input_value(desc: &IoDesc) -> Option<ValueId> {
    desc.ir_name.strip_prefix('%')?.parse::<u32>().ok().map(ValueId)
}

/// The MIL dialect a profile asks for.
pub fn profile_dialect(profile: &ChipProfile) -> Dialect {
    match profile.limits.dialect {
        MilDialect::Ios18Program13 => Dialect::Ios18,
        MilDialect::Ios16Program10 => Dialect::Ios16,
    }
}

/// Lowers `graph` to a MIL program for `profile`. Fails with [`AneError::Lower`] naming the op, value or
/// limit when the graph cannot run on the device (ops the ANE lacks run on the CPU instead, see
/// `docs/ANE_OPS.md`; extents beyond the chip's caps must be chunked by the caller).
pub fn lower(graph: &Graph, profile: &ChipProfile, options: &LowerOptions) -> Result<EmittedProgram, AneError> {
    let dialect = options.dialect.unwrap_or_else(|| profile_dialect(profile));
    let io_dtype = match options.io_dtype.unwrap_or_default() {
        IoDType::F16 => DType::F16,
        IoDType::F32 if profile.limits.ops.fp32_io_cast => DType::F32,
        IoDType::F32 => {
            return Err(lower_error(
                graph,
                format!(
                    "fp32 I/O needs an in-program cast, which {} does not run (C16); use fp16 I/O",
                    profile.id
                ),
            ))
        }
    };
    let lowered = ops::lower_graph(graph, profile, options.weights, io_dtype, dialect.opset())?;
    let mut program = dialect.empty_program();
    program.functions.push(lowered.function);
    let mil_text = mil::print_program(&program, dialect);
    let lint = crate::lint::lint(&program, &lowered.weights, profile);
    Ok(EmittedProgram {
        name: graph.name().to_string(),
        dialect,
        program,
        mil_text,
        weights: lowered.weights,
        inputs: lowered.inputs,
        outputs: lowered.outputs,
        lint,
    })
}

/// An [`AneError::Lower`] about `graph`.
pub(crate) fn lower_error(graph: &Graph, message: String) -> AneError {
    AneError::Lower {
        program: graph.name().to_string(),
        message,
    }
}
