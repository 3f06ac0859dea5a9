//! The crate's one error type, [`AneError`], wrapping the detailed error of each file format the crate
//! reads ([`BlobError`] for weight blobs, [`ProfileError`] for chip profiles, [`MilError`] for MIL text), plus lowering and core failures.
//!
//! The detailed enums live next to their formats so that each names records, offsets and fields in its
//! own terms; callers that mix formats use `AneError` and `?`.

use crate::blob::BlobError;
use crate::device::DeviceError;
use crate::mil::MilError;
use crate::profile::ProfileError;

/// Everything that can go wrong in the ANE crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AneError {
    #[error("weight blob: {0}")]
    Blob(#[from] BlobError),
    #[error("chip profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("MIL: {0}")]
    Mil(#[from] MilError),
    /// The IR cannot be lowered for this chip (an op or shape the device cannot run, and no workaround).
    #[error("lowering {program}: {message}")]
    Lower { program: String, message: String },
    /// The device (simulated or real) refused or failed.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    /// A core-crate failure (shape inference, interpretation) surfaced through the ANE crate.
    #[error(transparent)]
    Core(#[from] orion_core::CoreError),
}
