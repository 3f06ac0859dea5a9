//! The one error type of the core crate.
//!
//! Variants carry enough context (op, operands and their types, source positions) that a user can
//! find the problem without a debugger.

use crate::tensor::TensorDataError;

/// Everything that can go wrong in the core crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// An op was given operands it cannot accept; raised by shape inference at build time.
    #[error("{op}: {message}; operands: {operands}")]
    Shape {
        op: String,
        message: String,
        operands: String,
    },
    /// Structural misuse of a graph (unknown value, duplicate name, …).
    #[error("graph {graph}: {message}")]
    Graph { graph: String, message: String },
    /// The verifier found problems; every one is listed, each with the offending node's line.
    #[error("verification of graph {graph} failed:\n{}", .problems.join("\n"))]
    Verify { graph: String, problems: Vec<String> },
    /// Text IR could not be parsed.
    #[error("{line}:{column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// A graph could not be executed (wrong inputs, bad runtime values such as an index out of range).
    #[error("execution of {op}: {message}")]
    Execute { op: String, message: String },
    /// Reverse-mode differentiation is not possible as asked.
    #[error("autodiff: {message}")]
    Autodiff { message: String },
    /// A pass failed or was asked for by an unknown name.
    #[error("pass {pass}: {message}")]
    Pass { pass: String, message: String },
    #[error(transparent)]
    TensorData(#[from] TensorDataError),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
