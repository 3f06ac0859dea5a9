//! The crate's one error type, [`AneError`], wrapping the detailed error of each file format the crate
//! reads ([`BlobError`] for weight blobs, [`ProfileError`] for chip profiles).
//!
//! The detailed enums live next to their formats so that each names records, offsets and fields in its
//! own terms; callers that mix formats use `AneError` and `?`.

use crate::blob::BlobError;
use crate::profile::ProfileError;

/// Everything that can go wrong in the ANE crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AneError {
    #[error("weight blob: {0}")]
    Blob(#[from] BlobError),
    #[error("chip profile: {0}")]
    Profile(#[from] ProfileError),
}
