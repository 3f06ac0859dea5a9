//! The crate's one error type: what can go wrong while running a suite, reading a saved run or
//! comparing two runs.

use std::path::PathBuf;

/// Everything `orion-bench` reports as failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The request makes no sense (an unknown model, a length beyond the context, a suite that
    /// does not run on the chosen device).
    #[error("{0}")]
    Usage(String),
    /// A saved run and this run measure different things, so their figures cannot be compared.
    #[error("the baseline measured {field} {baseline}, this run measures {field} {current}; compare runs of the same configuration")]
    Mismatch {
        field: &'static str,
        baseline: String,
        current: String,
    },
    /// A saved run could not be read.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] orion_models::ModelError),
    #[error(transparent)]
    Core(#[from] orion_core::CoreError),
    #[error(transparent)]
    Ane(#[from] orion_ane::AneError),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
