//! Weight-blob files in MIL blob storage v2, the format `BLOBFILE(path, offset)` constants point into
//! (ane.md §4).
//!
//! Layout (all integers little-endian):
//! - a 64-byte file header: u32 record count, u32 version = 2, 56 zero bytes;
//! - per record, a 64-byte metadata block at a 64-aligned offset `m`: u32 sentinel `0xDEADBEEF`, u32 dtype
//!   code, u64 data size in bytes, u64 absolute data offset (= `m + 64`), u64 padding bits, 32 zero bytes;
//! - the data at `m + 64`; the next record's metadata at the next 64-byte boundary at or after the end of
//!   the data (zero filled); the last record is not padded, so the file ends with the last data byte.
//!
//! The offset a MIL program uses to name a record is the offset `m` of its **metadata**, not of its data
//! (catalogue C03). Sub-byte types (int4, uint1/2/3/4/6) are packed least-significant bit first, element 0
//! in the lowest bits of byte 0; `padding bits` counts the unused high bits of the last byte (this is what
//! coremltools 9.0 writes; checked against its files in `tests/blob_fixtures.rs`).
//!
//! `writer` produces files, `reader` parses and validates them; this module holds the shared vocabulary:
//! [`BlobDType`], [`BlobError`] and the fp32 → fp16 weight conversion.

mod reader;
mod writer;

pub use reader::{BlobFile, BlobRecord};
pub use writer::BlobWriter;

use half::f16;

/// Size of the file header and of every record's metadata block, and the alignment of every record.
pub const BLOB_ALIGNMENT: u64 = 64;
/// The only storage version this module reads and writes.
pub const BLOB_VERSION: u32 = 2;
/// First four bytes of every record's metadata block.
pub const BLOB_SENTINEL: u32 = 0xDEAD_BEEF;
/// Largest finite fp16 magnitude; weights are clamped to it before conversion (ane.md §4, catalogue C38).
pub const FP16_MAX: f32 = 65504.0;

/// Element type of one record, with the numeric codes coremltools 9.0 writes (ane.md §4; code 5 is unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobDType {
    Fp16,
    Fp32,
    Uint8,
    Int8,
    Int16,
    Uint16,
    Int4,
    Uint1,
    Uint2,
    Uint4,
    Uint3,
    Uint6,
    Int32,
    Uint32,
}

impl BlobDType {
    /// Every dtype, in code order.
    pub const ALL: [BlobDType; 14] = [
        BlobDType::Fp16,
        BlobDType::Fp32,
        BlobDType::Uint8,
        BlobDType::Int8,
        BlobDType::Int16,
        BlobDType::Uint16,
        BlobDType::Int4,
        BlobDType::Uint1,
        BlobDType::Uint2,
        BlobDType::Uint4,
        BlobDType::Uint3,
        BlobDType::Uint6,
        BlobDType::Int32,
        BlobDType::Uint32,
    ];

    /// The code stored in the metadata block.
    pub fn code(self) -> u32 {
        match self {
            BlobDType::Fp16 => 1,
            BlobDType::Fp32 => 2,
            BlobDType::Uint8 => 3,
            BlobDType::Int8 => 4,
            BlobDType::Int16 => 6,
            BlobDType::Uint16 => 7,
            BlobDType::Int4 => 8,
            BlobDType::Uint1 => 9,
            BlobDType::Uint2 => 10,
            BlobDType::Uint4 => 11,
            BlobDType::Uint3 => 12,
            BlobDType::Uint6 => 13,
            BlobDType::Int32 => 14,
            BlobDType::Uint32 => 15,
        }
    }

    /// The dtype stored under `code`, if any.
    pub fn from_code(code: u32) -> Option<BlobDType> {
        BlobDType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bits per element.
    pub fn bits(self) -> u32 {
        match self {
            BlobDType::Uint1 => 1,
            BlobDType::Uint2 => 2,
            BlobDType::Uint3 => 3,
            BlobDType::Int4 | BlobDType::Uint4 => 4,
            BlobDType::Uint6 => 6,
            BlobDType::Uint8 | BlobDType::Int8 => 8,
            BlobDType::Fp16 | BlobDType::Int16 | BlobDType::Uint16 => 16,
            BlobDType::Fp32 | BlobDType::Int32 | BlobDType::Uint32 => 32,
        }
    }

    /// True for the packed types narrower than a byte.
    pub fn is_sub_byte(self) -> bool {
        self.bits() < 8
    }

    /// The MIL spelling of the dtype (`fp16`, `uint4`, …).
    pub fn name(self) -> &'static str {
        match self {
            BlobDType::Fp16 => "fp16",
            BlobDType::Fp32 => "fp32",
            BlobDType::Uint8 => "uint8",
            BlobDType::Int8 => "int8",
            BlobDType::Int16 => "int16",
            BlobDType::Uint16 => "uint16",
            BlobDType::Int4 => "int4",
            BlobDType::Uint1 => "uint1",
            BlobDType::Uint2 => "uint2",
            BlobDType::Uint4 => "uint4",
            BlobDType::Uint3 => "uint3",
            BlobDType::Uint6 => "uint6",
            BlobDType::Int32 => "int32",
            BlobDType::Uint32 => "uint32",
        }
    }
}

impl std::fmt::Display for BlobDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with a blob file, or with a request to write or read one.
///
/// `record` is the 0-based index of the record, `offset` the offset of its metadata block (the MIL offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob file is {len} bytes, shorter than the {BLOB_ALIGNMENT}-byte header")]
    ShortHeader { len: usize },
    #[error("blob file has storage version {found}, only version {BLOB_VERSION} is supported")]
    BadVersion { found: u32 },
    #[error("blob header claims {count} records, but a {len}-byte file holds at most {max}")]
    CountTooLarge { count: u32, len: usize, max: u64 },
    #[error("record {record} at offset {offset}: metadata block runs past the end of the {len}-byte file")]
    MetadataBeyondEnd { record: usize, offset: u64, len: usize },
    #[error("record {record} at offset {offset}: sentinel is {found:#010x}, expected {BLOB_SENTINEL:#010x}")]
    BadSentinel { record: usize, offset: u64, found: u32 },
    #[error("record {record} at offset {offset}: unknown dtype code {code}")]
    UnknownDType { record: usize, offset: u64, code: u32 },
    #[error(
        "record {record} at offset {offset}: data offset {data_offset} overlaps its metadata or an earlier record"
    )]
    Overlap {
        record: usize,
        offset: u64,
        data_offset: u64,
    },
    #[error("record {record} at offset {offset}: data offset {data_offset} leaves a gap, expected {expected}")]
    DataGap {
        record: usize,
        offset: u64,
        data_offset: u64,
        expected: u64,
    },
    #[error(
        "record {record} at offset {offset}: {size} data bytes at {data_offset} run past the end of the {len}-byte file"
    )]
    DataBeyondEnd {
        record: usize,
        offset: u64,
        data_offset: u64,
        size: u64,
        len: usize,
    },
    #[error("record {record} at offset {offset}: {size} bytes is not a whole number of {dtype} elements")]
    SizeNotMultiple {
        record: usize,
        offset: u64,
        dtype: BlobDType,
        size: u64,
    },
    #[error("record {record} at offset {offset}: {padding_bits} padding bits are invalid for {size} bytes of {dtype}")]
    BadPadding {
        record: usize,
        offset: u64,
        dtype: BlobDType,
        size: u64,
        padding_bits: u64,
    },
    #[error("blob file has {extra} bytes after its last record (header count {count} too small?)")]
    TrailingBytes { count: u32, extra: u64 },
    #[error("offset {offset} is not {BLOB_ALIGNMENT}-byte aligned; MIL offsets name record metadata blocks")]
    Misaligned { offset: u64 },
    #[error("no record starts at offset {offset} (records start at {available:?})")]
    NoRecordAt { offset: u64, available: Vec<u64> },
    #[error("record at offset {offset} holds {found}, not the requested {expected}")]
    WrongDType {
        offset: u64,
        expected: BlobDType,
        found: BlobDType,
    },
    #[error("{operation} does not handle {dtype} records")]
    UnsupportedDType { dtype: BlobDType, operation: &'static str },
    #[error("element {index} of a {dtype} record is {value}, outside the range of {dtype}")]
    ValueOutOfRange { dtype: BlobDType, index: usize, value: i64 },
    #[error("{what} of {value} does not fit the blob format's {limit} field")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: &'static str,
    },
}

/// fp16 bit patterns of a weight tensor together with what the conversion had to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fp16Weights {
    /// IEEE binary16 bit patterns, one per input value.
    pub bits: Vec<u16>,
    /// Inputs that were NaN and were stored as +0.
    pub nan_count: usize,
    /// Inputs that would have rounded to ±infinity (|x| ≥ 65520, or infinite) and were stored as ±65504.
    pub clamped_count: usize,
}

/// Converts fp32 weights to fp16 the way the device must receive them (ane.md §4, catalogue C38).
///
/// - Round to nearest, ties to even (IEEE default; matches numpy's `astype(float16)` and coremltools).
/// - Magnitudes above 65504 — including ±infinity — saturate to ±65504. The device computes in fp16 and
///   NaN/Inf propagate through every later op (C38), so one infinite weight would poison a whole program's
///   output; a saturated weight stays finite. (Values below 65520 round to 65504 anyway; from 65520 on,
///   round-to-nearest would give infinity, so those are the ones replaced and counted.)
/// - NaN becomes +0, which removes the weight's contribution instead of spreading NaN (Orion's training
///   writer does the same). The reverse mapping NaN → 65504 seen in one peer's reader is a bug (§4).
/// - fp16 subnormals are kept; flushing them is the device's business (C34), not the file's.
///
/// Both repairs are counted so that callers can fail loudly instead of training on repaired weights.
pub fn fp32_to_fp16_weights(values: &[f32]) -> Fp16Weights {
    let mut nan_count = 0;
    let mut clamped_count = 0;
    let bits = values
        .iter()
        .map(|&x| {
            if x.is_nan() {
                nan_count += 1;
                return 0;
            }
            let half = f16::from_f32(x);
            if half.is_infinite() {
                clamped_count += 1;
                return f16::from_f32(FP16_MAX.copysign(x)).to_bits();
            }
            half.to_bits()
        })
        .collect();
    Fp16Weights {
        bits,
        nan_count,
        clamped_count,
    }
}

/// Widens fp16 bit patterns to f32 exactly (NaN stays NaN, infinities stay infinite).
pub fn fp16_bits_to_f32(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| f16::from_bits(b).to_f32()).collect()
}

/// Rounds `value` up to the next multiple of [`BLOB_ALIGNMENT`], or `None` on overflow.
pub(crate) fn align_up(value: u64) -> Option<u64> {
    value.checked_add(BLOB_ALIGNMENT - 1).map(|v| v & !(BLOB_ALIGNMENT - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip_and_match_reference_table() {
        // ane.md §4: 1 fp16, 2 fp32, 3 uint8, 4 int8, 6 int16, 7 uint16, 8 int4, 9 uint1, 10 uint2,
        // 11 uint4, 12 uint3, 13 uint6, 14 int32, 15 uint32.
        let table = [
            (1, "fp16"),
            (2, "fp32"),
            (3, "uint8"),
            (4, "int8"),
            (6, "int16"),
            (7, "uint16"),
            (8, "int4"),
            (9, "uint1"),
            (10, "uint2"),
            (11, "uint4"),
            (12, "uint3"),
            (13, "uint6"),
            (14, "int32"),
            (15, "uint32"),
        ];
        for (code, name) in table {
            let dtype = BlobDType::from_code(code);
            assert_eq!(dtype.map(BlobDType::name), Some(name), "code {code}");
        }
        assert_eq!(BlobDType::from_code(5), None);
        assert_eq!(BlobDType::from_code(0), None);
        assert_eq!(BlobDType::from_code(16), None);
    }

    #[test]
    fn fp16_conversion_rounds_to_nearest_even() {
        // Bit patterns worked out by hand: 1.0 = 0x3C00, one fp16 ulp at 1.0 is 2^-10.
        let halfway_down = 1.0 + f32::powi(2.0, -11); // tie between 0x3C00 (even) and 0x3C01
        let halfway_up = 1.0 + 3.0 * f32::powi(2.0, -11); // tie between 0x3C01 and 0x3C02 (even)
        let just_above_tie = 1.0 + f32::powi(2.0, -11) + f32::powi(2.0, -20);
        let got = fp32_to_fp16_weights(&[1.0, halfway_down, halfway_up, just_above_tie, -2.0, 0.5]);
        assert_eq!(got.bits, vec![0x3C00, 0x3C00, 0x3C02, 0x3C01, 0xC000, 0x3800]);
        assert_eq!((got.nan_count, got.clamped_count), (0, 0));
    }

    #[test]
    fn fp16_conversion_saturates_and_zeroes_nan() {
        let values = [
            65504.0,
            65519.0,
            65520.0,
            1.0e6,
            f32::INFINITY,
            -1.0e9,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
        ];
        let got = fp32_to_fp16_weights(&values);
        // 65519 rounds down to 65504 (not counted); from 65520 on rounding gives inf, replaced by 0x7BFF/0xFBFF.
        assert_eq!(
            got.bits,
            vec![0x7BFF, 0x7BFF, 0x7BFF, 0x7BFF, 0x7BFF, 0xFBFF, 0xFBFF, 0x0000, 0x8000]
        );
        assert_eq!(got.nan_count, 1);
        assert_eq!(got.clamped_count, 5);
    }

    #[test]
    fn fp16_conversion_keeps_subnormals() {
        // Smallest fp16 subnormal is 2^-24 (bits 0x0001); 2^-25 is a tie between 0 and it, rounding to 0 (even).
        let got = fp32_to_fp16_weights(&[f32::powi(2.0, -24), f32::powi(2.0, -25), 3.0 * f32::powi(2.0, -25)]);
        assert_eq!(got.bits, vec![0x0001, 0x0000, 0x0002]);
    }

    #[test]
    fn fp16_widening_keeps_nan_and_infinity() {
        let wide = fp16_bits_to_f32(&[0x7E00, 0x7C00, 0xFC00, 0x7BFF]);
        assert!(wide[0].is_nan());
        assert_eq!(&wide[1..], &[f32::INFINITY, f32::NEG_INFINITY, 65504.0]);
    }

    #[test]
    fn align_up_rounds_to_64() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(64));
        assert_eq!(align_up(64), Some(64));
        assert_eq!(align_up(144), Some(192));
        assert_eq!(align_up(u64::MAX), None);
    }
}
