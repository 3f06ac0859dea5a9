//! Parses and validates MIL blob storage v2 files (ane.md §4) without ever panicking on bad bytes.
//!
//! [`BlobFile::parse`] accepts exactly the layout coremltools 9.0 writes: header count = number of
//! records, version 2, records in order from offset 64, each record's data right after its metadata,
//! the next record at the next 64-byte boundary, and nothing after the last record. Every deviation is a
//! [`BlobError`] naming the record and offset. Reserved (zero) bytes are not checked, so that a future
//! writer that uses them still reads. Sizes are checked against the file length before anything is
//! allocated, so a forged count or size cannot make the reader allocate more than the file's size.

use super::{align_up, fp16_bits_to_f32, BlobDType, BlobError, BLOB_ALIGNMENT, BLOB_SENTINEL, BLOB_VERSION};

/// One validated record of a blob file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord<'a> {
    /// Offset of the metadata block: the value a MIL `BLOBFILE(offset = …)` names (C03).
    pub offset: u64,
    pub dtype: BlobDType,
    /// Absolute offset of the data (always `offset + 64` in a valid file).
    pub data_offset: u64,
    /// Unused high bits of the last data byte (sub-byte dtypes only; 0 otherwise).
    pub padding_bits: u64,
    /// The record's data bytes.
    pub data: &'a [u8],
}

impl BlobRecord<'_> {
    /// Number of elements stored.
    pub fn element_count(&self) -> u64 {
        (self.data.len() as u64 * 8).saturating_sub(self.padding_bits) / u64::from(self.dtype.bits())
    }
}

/// A parsed blob file: its records in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile<'a> {
    records: Vec<BlobRecord<'a>>,
}

impl<'a> BlobFile<'a> {
    /// Parses and validates a whole file.
    pub fn parse(bytes: &'a [u8]) -> Result<BlobFile<'a>, BlobError> {
        let len = bytes.len();
        if len < BLOB_ALIGNMENT as usize {
            return Err(BlobError::ShortHeader { len });
        }
        let count = read_u32(bytes, 0);
        let version = read_u32(bytes, 4);
        if version != BLOB_VERSION {
            return Err(BlobError::BadVersion { found: version });
        }
        // Every record needs at least its 64-byte metadata block after the header.
        let max = (len as u64 - BLOB_ALIGNMENT) / BLOB_ALIGNMENT;
        if u64::from(count) > max {
            return Err(BlobError::CountTooLarge { count, len, max });
        }
        let mut records = Vec::with_capacity(count as usize);
        let mut offset = BLOB_ALIGNMENT;
        let mut end = BLOB_ALIGNMENT;
        for index in 0..count as usize {
            let record = parse_record(bytes, index, offset)?;
            end = record.data_offset + record.data.len() as u64;
            offset = align_up(end).unwrap_or(u64::MAX);
            records.push(record);
        }
        if end != len as u64 {
            return Err(BlobError::TrailingBytes {
                count,
                extra: len as u64 - end,
            });
        }
        Ok(BlobFile { records })
    }

    /// All records in file order.
    pub fn records(&self) -> &[BlobRecord<'a>] {
        &self.records
    }

    /// The record whose metadata starts at `offset` (a MIL offset).
    pub fn record(&self, offset: u64) -> Result<&BlobRecord<'a>, BlobError> {
        if !offset.is_multiple_of(BLOB_ALIGNMENT) {
            return Err(BlobError::Misaligned { offset });
        }
        match self.records.binary_search_by_key(&offset, |r| r.offset) {
            Ok(index) => Ok(&self.records[index]),
            Err(_) => Err(BlobError::NoRecordAt {
                offset,
                available: self.records.iter().take(8).map(|r| r.offset).collect(),
            }),
        }
    }

    /// fp16 record as IEEE binary16 bit patterns.
    pub fn read_fp16_bits(&self, offset: u64) -> Result<Vec<u16>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Fp16)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// fp16 record widened to f32 exactly (NaN stays NaN).
    pub fn read_fp16(&self, offset: u64) -> Result<Vec<f32>, BlobError> {
        Ok(fp16_bits_to_f32(&self.read_fp16_bits(offset)?))
    }

    pub fn read_fp32(&self, offset: u64) -> Result<Vec<f32>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Fp32)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(quad(c)))
            .collect())
    }

    pub fn read_u8(&self, offset: u64) -> Result<Vec<u8>, BlobError> {
        Ok(self.typed(offset, BlobDType::Uint8)?.to_vec())
    }

    pub fn read_i8(&self, offset: u64) -> Result<Vec<i8>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Int8)?
            .iter()
            .map(|&b| i8::from_le_bytes([b]))
            .collect())
    }

    pub fn read_i16(&self, offset: u64) -> Result<Vec<i16>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Int16)?
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    pub fn read_u16(&self, offset: u64) -> Result<Vec<u16>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Uint16)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    pub fn read_i32(&self, offset: u64) -> Result<Vec<i32>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Int32)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(quad(c)))
            .collect())
    }

    pub fn read_u32(&self, offset: u64) -> Result<Vec<u32>, BlobError> {
        Ok(self
            .typed(offset, BlobDType::Uint32)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(quad(c)))
            .collect())
    }

    /// A packed unsigned sub-byte record (uint1/2/3/4/6), one value per output byte.
    pub fn read_packed_unsigned(&self, offset: u64, dtype: BlobDType) -> Result<Vec<u8>, BlobError> {
        match dtype {
            BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => {}
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
                    operation: "read_packed_unsigned",
                })
            }
        }
        let record = self.record(offset)?;
        check_dtype(record, dtype)?;
        Ok(unpack(record))
    }

    /// An int4 record, sign-extended to i8.
    pub fn read_i4(&self, offset: u64) -> Result<Vec<i8>, BlobError> {
        let record = self.record(offset)?;
        check_dtype(record, BlobDType::Int4)?;
        Ok(unpack(record)
            .into_iter()
            .map(|nibble| ((nibble << 4) as i8) >> 4)
            .collect())
    }

    /// Data bytes of the record at `offset`, which must hold `dtype`.
    fn typed(&self, offset: u64, dtype: BlobDType) -> Result<&'a [u8], BlobError> {
        let record = self.record(offset)?;
        check_dtype(record, dtype)?;
        Ok(record.data)
    }
}

fn check_dtype(record: &BlobRecord<'_>, expected: BlobDType) -> Result<(), BlobError> {
    if record.dtype == expected {
        Ok(())
    } else {
        Err(BlobError::WrongDType {
            offset: record.offset,
            expected,
            found: record.dtype,
        })
    }
}

/// Unpacks a sub-byte record least-significant bit first.
fn unpack(record: &BlobRecord<'_>) -> Vec<u8> {
    let width = record.dtype.bits() as usize;
    let count = record.element_count() as usize;
    (0..count)
        .map(|index| {
            (0..width).fold(0u8, |value, bit| {
                let position = index * width + bit;
                value | ((record.data[position / 8] >> (position % 8)) & 1) << bit
            })
        })
        .collect()
}

/// Parses and validates record `index` whose metadata block should start at `offset`.
fn parse_record(bytes: &[u8], index: usize, offset: u64) -> Result<BlobRecord<'_>, BlobError> {
    let len = bytes.len();
    let in_file = offset.checked_add(BLOB_ALIGNMENT).is_some_and(|end| end <= len as u64);
    if !in_file {
        return Err(BlobError::MetadataBeyondEnd {
            record: index,
            offset,
            len,
        });
    }
    let at = offset as usize;
    let sentinel = read_u32(bytes, at);
    if sentinel != BLOB_SENTINEL {
        return Err(BlobError::BadSentinel {
            record: index,
            offset,
            found: sentinel,
        });
    }
    let code = read_u32(bytes, at + 4);
    let dtype = BlobDType::from_code(code).ok_or(BlobError::UnknownDType {
        record: index,
        offset,
        code,
    })?;
    let size = read_u64(bytes, at + 8);
    let data_offset = read_u64(bytes, at + 16);
    let padding_bits = read_u64(bytes, at + 24);
    let expected = offset + BLOB_ALIGNMENT;
    if data_offset < expected {
        return Err(BlobError::Overlap {
            record: index,
            offset,
            data_offset,
        });
    }
    if data_offset > expected {
        return Err(BlobError::DataGap {
            record: index,
            offset,
            data_offset,
            expected,
        });
    }
    let fits = data_offset.checked_add(size).is_some_and(|end| end <= len as u64);
    if !fits {
        return Err(BlobError::DataBeyondEnd {
            record: index,
            offset,
            data_offset,
            size,
            len,
        });
    }
    check_size(index, offset, dtype, size, padding_bits)?;
    let data = &bytes[data_offset as usize..(data_offset + size) as usize];
    Ok(BlobRecord {
        offset,
        dtype,
        data_offset,
        padding_bits,
        data,
    })
}

/// Checks that `size` bytes with `padding_bits` unused bits hold a whole number of `dtype` elements.
fn check_size(record: usize, offset: u64, dtype: BlobDType, size: u64, padding_bits: u64) -> Result<(), BlobError> {
    let bits = u64::from(dtype.bits());
    if dtype.is_sub_byte() {
        // Minimal packing leaves fewer than 8 unused bits; an empty record has none.
        let valid = padding_bits < 8 && padding_bits <= size * 8 && (size * 8 - padding_bits).is_multiple_of(bits);
        if !valid {
            return Err(BlobError::BadPadding {
                record,
                offset,
                dtype,
                size,
                padding_bits,
            });
        }
        return Ok(());
    }
    if !size.is_multiple_of(bits / 8) {
        return Err(BlobError::SizeNotMultiple {
            record,
            offset,
            dtype,
            size,
        });
    }
    if padding_bits != 0 {
        return Err(BlobError::BadPadding {
            record,
            offset,
            dtype,
            size,
            padding_bits,
        });
    }
    Ok(())
}

/// Little-endian u32 at `at`; callers guarantee `at + 4 <= bytes.len()`.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(quad(&bytes[at..at + 4]))
}

/// Little-endian u64 at `at`; callers guarantee `at + 8 <= bytes.len()`.
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The first four bytes of a slice of length ≥ 4 as an array.
fn quad(chunk: &[u8]) -> [u8; 4] {
    [chunk[0], chunk[1], chunk[2], chunk[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobWriter;

    fn two_record_file() -> Vec<u8> {
        let mut writer = BlobWriter::new();
        let _ = writer.write_fp16_bits(&[0x3C00; 8]);
        let _ = writer.write_fp32(&[1.0, 2.0, 3.0, 4.0]);
        writer.finish()
    }

    fn set_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn each_structural_fault_has_its_own_error() {
        let good = two_record_file();
        assert!(BlobFile::parse(&good).is_ok());
        let check = |mutate: &dyn Fn(&mut Vec<u8>), want: &dyn Fn(&BlobError) -> bool| {
            let mut bytes = good.clone();
            mutate(&mut bytes);
            match BlobFile::parse(&bytes) {
                Err(err) => assert!(want(&err), "unexpected error {err}"),
                Ok(_) => panic!("mutated file parsed"),
            }
        };
        check(&|b| b.truncate(63), &|e| {
            matches!(e, BlobError::ShortHeader { len: 63 })
        });
        check(&|b| b[4] = 3, &|e| matches!(e, BlobError::BadVersion { found: 3 }));
        check(&|b| b[0] = 5, &|e| {
            matches!(e, BlobError::CountTooLarge { count: 5, max: 3, .. })
        });
        check(&|b| b[0] = 3, &|e| {
            matches!(
                e,
                BlobError::MetadataBeyondEnd {
                    record: 2,
                    offset: 320,
                    ..
                }
            )
        });
        check(&|b| b[192] = 0, &|e| {
            matches!(
                e,
                BlobError::BadSentinel {
                    record: 1,
                    offset: 192,
                    ..
                }
            )
        });
        check(&|b| b[68] = 5, &|e| {
            matches!(e, BlobError::UnknownDType { code: 5, .. })
        });
        check(&|b| set_u64(b, 80, 64), &|e| {
            matches!(
                e,
                BlobError::Overlap {
                    record: 0,
                    data_offset: 64,
                    ..
                }
            )
        });
        check(&|b| set_u64(b, 208, 64), &|e| {
            matches!(
                e,
                BlobError::Overlap {
                    record: 1,
                    data_offset: 64,
                    ..
                }
            )
        });
        check(&|b| set_u64(b, 80, 192), &|e| {
            matches!(e, BlobError::DataGap { expected: 128, .. })
        });
        check(&|b| b.truncate(271), &|e| {
            matches!(e, BlobError::DataBeyondEnd { record: 1, .. })
        });
        check(&|b| set_u64(b, 72, u64::MAX), &|e| {
            matches!(e, BlobError::DataBeyondEnd { record: 0, .. })
        });
        check(&|b| set_u64(b, 72, 15), &|e| {
            matches!(e, BlobError::SizeNotMultiple { size: 15, .. })
        });
        check(&|b| set_u64(b, 88, 4), &|e| {
            matches!(e, BlobError::BadPadding { padding_bits: 4, .. })
        });
        check(&|b| b.extend_from_slice(&[0; 3]), &|e| {
            matches!(e, BlobError::TrailingBytes { extra: 3, .. })
        });
        check(&|b| b[0] = 1, &|e| {
            matches!(e, BlobError::TrailingBytes { count: 1, extra: 128 })
        });
    }

    #[test]
    fn lookups_name_the_problem() {
        let bytes = two_record_file();
        let file = BlobFile::parse(&bytes).expect("valid file");
        assert_eq!(file.read_fp32(192), Ok(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(file.read_fp32(100), Err(BlobError::Misaligned { offset: 100 }));
        assert_eq!(
            file.read_fp32(128),
            Err(BlobError::NoRecordAt {
                offset: 128,
                available: vec![64, 192]
            })
        );
        assert_eq!(
            file.read_fp32(64),
            Err(BlobError::WrongDType {
                offset: 64,
                expected: BlobDType::Fp32,
                found: BlobDType::Fp16
            })
        );
        assert!(matches!(
            file.read_packed_unsigned(64, BlobDType::Fp16),
            Err(BlobError::UnsupportedDType { .. })
        ));
    }

    #[test]
    fn sub_byte_padding_is_validated() {
        let mut writer = BlobWriter::new();
        let _ = writer.write_packed_unsigned(BlobDType::Uint3, &[1, 2, 3, 7, 5]); // 15 bits in 2 bytes
        let good = writer.finish();
        let file = BlobFile::parse(&good).expect("valid file");
        assert_eq!(file.read_packed_unsigned(64, BlobDType::Uint3), Ok(vec![1, 2, 3, 7, 5]));
        for bad_padding in [0u64, 2, 8, 9] {
            let mut bytes = good.clone();
            set_u64(&mut bytes, 88, bad_padding);
            assert!(
                matches!(BlobFile::parse(&bytes), Err(BlobError::BadPadding { .. })),
                "padding {bad_padding} accepted"
            );
        }
    }

    #[test]
    fn int4_is_sign_extended() {
        let mut writer = BlobWriter::new();
        let _ = writer.write_i4(&[-1, 2, -8, 7, 0]);
        let bytes = writer.finish();
        assert_eq!(&bytes[128..], &[0x2F, 0x78, 0x00]);
        let file = BlobFile::parse(&bytes).expect("valid file");
        assert_eq!(file.read_i4(64), Ok(vec![-1, 2, -8, 7, 0]));
    }
}
