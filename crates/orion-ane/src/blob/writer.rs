//! Writes MIL blob storage v2 files byte for byte as coremltools 9.0 does (ane.md §4).
//!
//! Invariants of the bytes held by a [`BlobWriter`]: the header's count equals the number of records
//! appended; every record's metadata starts at a 64-aligned offset with its data right after it; the
//! gap between one record's data and the next metadata block is zero filled; nothing follows the last
//! record's data. Each `write_*` returns the record's MIL offset (its metadata offset, catalogue C03).

use super::{align_up, fp32_to_fp16_weights, BlobDType, BlobError, Fp16Weights, BLOB_ALIGNMENT, BLOB_SENTINEL};
use super::{BLOB_VERSION, FP16_MAX};

/// Builds one blob file in memory.
#[derive(Debug, Clone)]
pub struct BlobWriter {
    bytes: Vec<u8>,
    count: u32,
}

impl Default for BlobWriter {
    fn default() -> Self {
        BlobWriter::new()
    }
}

impl BlobWriter {
    /// An empty file: just the 64-byte header with count 0.
    pub fn new() -> BlobWriter {
        let mut bytes = vec![0u8; BLOB_ALIGNMENT as usize];
        bytes[4..8].copy_from_slice(&BLOB_VERSION.to_le_bytes());
        BlobWriter { bytes, count: 0 }
    }

    /// Number of records appended so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// The finished file.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// Appends fp16 values given as IEEE binary16 bit patterns.
    pub fn write_fp16_bits(&mut self, bits: &[u16]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Fp16, &le_bytes(bits, |v| v.to_le_bytes()), 0)
    }

    /// Converts fp32 weights to fp16 with [`fp32_to_fp16_weights`] (round to nearest even, saturate at
    /// ±65504, NaN → 0) and appends them; returns the MIL offset and the conversion's repair counts.
    pub fn write_fp16_from_f32(&mut self, values: &[f32]) -> Result<(u64, Fp16Weights), BlobError> {
        let converted = fp32_to_fp16_weights(values);
        let offset = self.write_fp16_bits(&converted.bits)?;
        Ok((offset, converted))
    }

    /// Appends fp32 values unchanged (NaN and infinities included: fp32 records are not weights the
    /// device multiplies in fp16 without a `cast`; callers that want the fp16 repairs apply them).
    pub fn write_fp32(&mut self, values: &[f32]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Fp32, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    /// Appends fp32 values after saturating them to the fp16 range and mapping NaN to 0, for fp32
    /// records that the program casts to fp16 (C38).
    pub fn write_fp32_fp16_safe(&mut self, values: &[f32]) -> Result<u64, BlobError> {
        let repaired: Vec<f32> = values
            .iter()
            .map(|&x| if x.is_nan() { 0.0 } else { x.clamp(-FP16_MAX, FP16_MAX) })
            .collect();
        self.write_fp32(&repaired)
    }

    pub fn write_u8(&mut self, values: &[u8]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Uint8, values, 0)
    }

    pub fn write_i8(&mut self, values: &[i8]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Int8, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    pub fn write_i16(&mut self, values: &[i16]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Int16, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    pub fn write_u16(&mut self, values: &[u16]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Uint16, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    pub fn write_i32(&mut self, values: &[i32]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Int32, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    pub fn write_u32(&mut self, values: &[u32]) -> Result<u64, BlobError> {
        self.push_record(BlobDType::Uint32, &le_bytes(values, |v| v.to_le_bytes()), 0)
    }

    /// Appends values of a packed unsigned sub-byte dtype (uint1, uint2, uint3, uint4, uint6), one value
    /// per input byte; each must fit the dtype's width.
    pub fn write_packed_unsigned(&mut self, dtype: BlobDType, values: &[u8]) -> Result<u64, BlobError> {
        let bits = match dtype {
            BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => {
                dtype.bits()
            }
            BlobDType::Fp16
            | BlobDType::Fp32
            | BlobDType::Uint8
            | BlobDType::Int8
            | BlobDType::Int16
            | BlobDType::Uint16
            | BlobDType::Int4
            | BlobDType::Int32
            | BlobDType::Uint32 => {
                return Err(BlobError::UnsupportedDType {
                    dtype,
                    operation: "write_packed_unsigned",
                })
            }
        };
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, &v)| u32::from(v) >= 1 << bits) {
            return Err(BlobError::ValueOutOfRange {
                dtype,
                index,
                value: i64::from(value),
            });
        }
        self.push_packed(dtype, values)
    }

    /// Appends int4 values (−8..=7), stored as two's-complement nibbles.
    pub fn write_i4(&mut self, values: &[i8]) -> Result<u64, BlobError> {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, &v)| !(-8..=7).contains(&v)) {
            return Err(BlobError::ValueOutOfRange {
                dtype: BlobDType::Int4,
                index,
                value: i64::from(value),
            });
        }
        let codes: Vec<u8> = values.iter().map(|&v| (v as u8) & 0x0F).collect();
        self.push_packed(BlobDType::Int4, &codes)
    }

    /// Offset the next record's metadata will get.
    fn next_offset(&self) -> u64 {
        align_up(self.bytes.len() as u64).unwrap_or(u64::MAX)
    }

    /// Packs `codes` (each already within `dtype.bits()` bits) least-significant bit first.
    fn push_packed(&mut self, dtype: BlobDType, codes: &[u8]) -> Result<u64, BlobError> {
        let width = dtype.bits() as usize;
        let total_bits = codes.len() * width;
        let mut packed = vec![0u8; total_bits.div_ceil(8)];
        for (index, &code) in codes.iter().enumerate() {
            for bit in 0..width {
                if (code >> bit) & 1 == 1 {
                    let position = index * width + bit;
                    packed[position / 8] |= 1 << (position % 8);
                }
            }
        }
        let padding_bits = (packed.len() * 8 - total_bits) as u64;
        self.push_record(dtype, &packed, padding_bits)
    }

    /// Appends one record: zero fill to the next 64-byte boundary, metadata block, data.
    fn push_record(&mut self, dtype: BlobDType, data: &[u8], padding_bits: u64) -> Result<u64, BlobError> {
        let count = self.count.checked_add(1).ok_or(BlobError::TooLarge {
            what: "record count",
            value: u64::from(self.count) + 1,
            limit: "u32 count",
        })?;
        let offset = self.next_offset();
        let data_offset = offset + BLOB_ALIGNMENT;
        let mut metadata = [0u8; BLOB_ALIGNMENT as usize];
        metadata[0..4].copy_from_slice(&BLOB_SENTINEL.to_le_bytes());
        metadata[4..8].copy_from_slice(&dtype.code().to_le_bytes());
        metadata[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        metadata[16..24].copy_from_slice(&data_offset.to_le_bytes());
        metadata[24..32].copy_from_slice(&padding_bits.to_le_bytes());
        self.bytes.resize(offset as usize, 0);
        self.bytes.extend_from_slice(&metadata);
        self.bytes.extend_from_slice(data);
        self.count = count;
        self.bytes[0..4].copy_from_slice(&count.to_le_bytes());
        Ok(offset)
    }
}

/// Concatenates the little-endian encodings of `values`.
fn le_bytes<T: Copy, const N: usize>(values: &[T], encode: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &value in values {
        out.extend_from_slice(&encode(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn empty_writer_is_a_bare_header() {
        let bytes = BlobWriter::new().finish();
        assert_eq!(bytes.len(), 64);
        assert_eq!(u32_at(&bytes, 0), 0);
        assert_eq!(u32_at(&bytes, 4), 2);
        assert!(bytes[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn uint4_packs_low_nibble_first() {
        // coremltools 9.0 writes [1, 2, 3] as bytes 0x21 0x03 with 4 padding bits.
        let mut writer = BlobWriter::new();
        assert_eq!(writer.write_packed_unsigned(BlobDType::Uint4, &[1, 2, 3]), Ok(64));
        let bytes = writer.finish();
        assert_eq!(&bytes[128..], &[0x21, 0x03]);
        assert_eq!(u32_at(&bytes, 64 + 24), 4);
    }

    #[test]
    fn sub_byte_values_out_of_range_are_rejected() {
        let mut writer = BlobWriter::new();
        let err = writer.write_packed_unsigned(BlobDType::Uint3, &[7, 8]);
        assert!(matches!(
            err,
            Err(BlobError::ValueOutOfRange { index: 1, value: 8, .. })
        ));
        let err = writer.write_i4(&[7, -9]);
        assert!(matches!(
            err,
            Err(BlobError::ValueOutOfRange {
                index: 1,
                value: -9,
                ..
            })
        ));
        let err = writer.write_packed_unsigned(BlobDType::Int8, &[1]);
        assert!(matches!(err, Err(BlobError::UnsupportedDType { .. })));
        assert_eq!(writer.record_count(), 0);
    }

    #[test]
    fn empty_record_shares_its_data_offset_with_the_next_metadata() {
        // coremltools 9.0: an empty fp16 record at 64 (data offset 128, size 0), the next record at 128.
        let mut writer = BlobWriter::new();
        assert_eq!(writer.write_fp16_bits(&[]), Ok(64));
        assert_eq!(writer.write_fp32(&[1.5]), Ok(128));
        assert_eq!(writer.finish().len(), 128 + 64 + 4);
    }
}
