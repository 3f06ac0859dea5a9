//! The one error type of the models crate: every failure names the file, tensor or field involved.

use std::path::PathBuf;

/// Everything that can go wrong while loading, building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the format it claims to be (truncated, bad header, bad JSON, …).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A model configuration is missing a field or has an impossible value.
    #[error("model config: {0}")]
    Config(String),
    /// A weight file lacks a tensor the model needs.
    #[error("weights: missing tensor {name:?} (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },
    /// A weight file has a tensor the model does not use.
    #[error("weights: unexpected tensor {name:?} with shape {found:?}")]
    UnexpectedTensor { name: String, found: Vec<usize> },
    /// A tensor exists but with the wrong shape or dtype.
    #[error("weights: tensor {name:?} has shape {found:?}, the model needs {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad arguments to generation or training (empty prompt, too many tokens for the context, …).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Core(#[from] orion_core::CoreError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> ModelError {
        ModelError::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
