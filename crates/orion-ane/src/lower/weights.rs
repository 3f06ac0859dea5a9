//! Constant data in the emitted program: inline literals for small tensors, BLOBFILE constants for the
//! rest (WeightMode::Baked), and the weight dictionary they live in.
//!
//! Invariants:
//! - tensors of at most [`INLINE_MAX_ELEMENTS`] elements are inline literals; larger float tensors are
//!   BLOBFILE constants with ONE record per file (C17) at offset 64, the record's metadata offset as
//!   the blob writer returns it (C03);
//! - every value is converted to fp16 by the blob module's safe conversion (round to nearest even,
//!   saturate at ±65504, NaN → 0; C38), inline literals included, so both forms hold the same numbers;
//! - a file is named `@model_path/weights/<stem>-<first 12 hex digits of its content hash>.bin`: the
//!   hash keeps the device's temp directories of programs with equal text but different weights apart
//!   (ane.md §1, `hexStringIdentifier`); equal content under an equal stem is stored once.
//!
//! Bool tensors (masks of `select`) are inline literals whatever their size (no blob dtype holds them),
//! up to [`BOOL_INLINE_MAX_ELEMENTS`].

use std::collections::BTreeMap;

use super::emit::Emitter;
use super::layout::sanitize;
use crate::blob::{fp16_bits_to_f32, fp32_to_fp16_weights, BlobWriter};
use crate::mil::{Literal, MilDType, MilType, Value};

/// Largest tensor written inline in the MIL text ("a few elements").
pub(super) const INLINE_MAX_ELEMENTS: usize = 8;
/// Largest bool constant the lowering writes (inline).
pub(super) const BOOL_INLINE_MAX_ELEMENTS: usize = 4096;

/// The weight dictionary being built: MIL path → whole blob file.
#[derive(Debug, Default)]
pub(super) struct WeightStore {
    files: BTreeMap<String, Vec<u8>>,
}

impl WeightStore {
    pub fn into_files(self) -> BTreeMap<String, Vec<u8>> {
        self.files
    }

    /// A BLOBFILE const of `values` (rounded to fp16) with MIL shape `shape`, in a file of its own.
    pub fn blob(&mut self, em: &mut Emitter, stem: &str, shape: &[usize], values: &[f32]) -> Result<String, String> {
        let mut writer = BlobWriter::new();
        let (offset, _) = writer
            .write_fp16_from_f32(values)
            .map_err(|e| format!("weight {stem}: {e}"))?;
        let bytes = writer.finish();
        let hash = format!("{:016x}", fnv1a64(&bytes));
        let path = format!("@model_path/weights/{}-{}.bin", sanitize(stem), &hash[..12]);
        self.files.entry(path.clone()).or_insert(bytes);
        let literal = Literal::blob(MilType::tensor(MilDType::Fp16, shape), path, offset);
        Ok(em.constant(stem, literal))
    }

    /// A float const: an fp16 scalar when `scalar` (one value), an inline tensor when small, else a blob.
    pub fn float_const(
        &mut self,
        em: &mut Emitter,
        stem: &str,
        shape: &[usize],
        values: &[f32],
        scalar: bool,
    ) -> Result<String, String> {
        let rounded = fp16_exact(values);
        if scalar && rounded.len() == 1 {
            return Ok(em.fp16_scalar(stem, f64::from(rounded[0])));
        }
        if rounded.len() <= INLINE_MAX_ELEMENTS {
            let literal = Literal {
                ty: MilType::tensor(MilDType::Fp16, shape),
                value: Value::List(rounded.iter().map(|&v| Value::Float(f64::from(v))).collect()),
            };
            return Ok(em.constant(stem, literal));
        }
        self.blob(em, stem, shape, values)
    }
}

/// A bool const (inline), a scalar when `scalar` and one value.
pub(super) fn bool_const(
    em: &mut Emitter,
    stem: &str,
    shape: &[usize],
    values: &[bool],
    scalar: bool,
) -> Result<String, String> {
    if scalar && values.len() == 1 {
        return Ok(em.bool_scalar(stem, values[0]));
    }
    if values.len() > BOOL_INLINE_MAX_ELEMENTS {
        return Err(format!(
            "bool constant of {} elements: the lowering writes bool constants inline, at most {} elements",
            values.len(),
            BOOL_INLINE_MAX_ELEMENTS
        ));
    }
    let literal = Literal {
        ty: MilType::tensor(MilDType::Bool, shape),
        value: Value::List(values.iter().map(|&b| Value::Bool(b)).collect()),
    };
    Ok(em.constant(stem, literal))
}

/// `values` as the device receives them: fp16 via the blob module's safe conversion, widened back.
pub(super) fn fp16_exact(values: &[f32]) -> Vec<f32> {
    fp16_bits_to_f32(&fp32_to_fp16_weights(values).bits)
}

/// 64-bit FNV-1a of `bytes`: a stable content hash for file names (not a security measure).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors from the FNV reference (Fowler/Noll/Vo): "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn conversion_saturates_and_zeroes_nan() {
        assert_eq!(fp16_exact(&[1e6, f32::NAN, 0.1]), vec![65504.0, 0.0, 0.099_975_586]);
    }
}
