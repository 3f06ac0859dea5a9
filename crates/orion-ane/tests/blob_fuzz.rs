//! Property tests of the blob format: random files round-trip through writer and reader, and random
//! mutations or truncations of valid files never make the reader panic (they parse or return an error).

use orion_ane::blob::{BlobDType, BlobFile, BlobWriter};
use proptest::prelude::*;

/// One record to write: a dtype and raw values (interpreted per dtype, masked to its range).
#[derive(Debug, Clone)]
struct RecordSpec {
    dtype: BlobDType,
    values: Vec<u32>,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    (0..BlobDType::ALL.len(), prop::collection::vec(any::<u32>(), 0..40)).prop_map(|(index, values)| RecordSpec {
        dtype: BlobDType::ALL[index],
        values,
    })
}

/// Writes `spec` and returns the values as the reader should give them back (floats as bit patterns).
fn write(writer: &mut BlobWriter, spec: &RecordSpec) -> (u64, Vec<i64>) {
    let v = &spec.values;
    let (offset, expected): (Result<u64, _>, Vec<i64>) = match spec.dtype {
        BlobDType::Fp16 => {
            let bits: Vec<u16> = v.iter().map(|&x| x as u16).collect();
            (
                writer.write_fp16_bits(&bits),
                bits.iter().map(|&x| i64::from(x)).collect(),
            )
        }
        BlobDType::Fp32 => {
            let floats: Vec<f32> = v.iter().map(|&x| f32::from_bits(x)).collect();
            (writer.write_fp32(&floats), v.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Uint8 => {
            let xs: Vec<u8> = v.iter().map(|&x| x as u8).collect();
            (writer.write_u8(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Int8 => {
            let xs: Vec<i8> = v.iter().map(|&x| x as i8).collect();
            (writer.write_i8(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Int16 => {
            let xs: Vec<i16> = v.iter().map(|&x| x as i16).collect();
            (writer.write_i16(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Uint16 => {
            let xs: Vec<u16> = v.iter().map(|&x| x as u16).collect();
            (writer.write_u16(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Int32 => {
            let xs: Vec<i32> = v.iter().map(|&x| x as i32).collect();
            (writer.write_i32(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Uint32 => (writer.write_u32(v), v.iter().map(|&x| i64::from(x)).collect()),
        BlobDType::Int4 => {
            let xs: Vec<i8> = v.iter().map(|&x| (x % 16) as i8 - 8).collect();
            (writer.write_i4(&xs), xs.iter().map(|&x| i64::from(x)).collect())
        }
        BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => {
            let modulus = 1u32 << spec.dtype.bits();
            let xs: Vec<u8> = v.iter().map(|&x| (x % modulus) as u8).collect();
            (
                writer.write_packed_unsigned(spec.dtype, &xs),
                xs.iter().map(|&x| i64::from(x)).collect(),
            )
        }
    };
    (offset.expect("in-range values write"), expected)
}

/// Reads a record with the reader matching `dtype`; floats as bit patterns.
fn read(file: &BlobFile<'_>, offset: u64, dtype: BlobDType) -> Result<Vec<i64>, orion_ane::blob::BlobError> {
    Ok(match dtype {
        BlobDType::Fp16 => file.read_fp16_bits(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Fp32 => file
            .read_fp32(offset)?
            .into_iter()
            .map(|x| i64::from(x.to_bits()))
            .collect(),
        BlobDType::Uint8 => file.read_u8(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Int8 => file.read_i8(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Int16 => file.read_i16(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Uint16 => file.read_u16(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Int32 => file.read_i32(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Uint32 => file.read_u32(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Int4 => file.read_i4(offset)?.into_iter().map(i64::from).collect(),
        BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => file
            .read_packed_unsigned(offset, dtype)?
            .into_iter()
            .map(i64::from)
            .collect(),
    })
}

fn valid_file(specs: &[RecordSpec]) -> Vec<u8> {
    let mut writer = BlobWriter::new();
    for spec in specs {
        write(&mut writer, spec);
    }
    writer.finish()
}

/// A damage applied to a valid file.
#[derive(Debug, Clone)]
enum Mutation {
    SetByte {
        at: usize,
        value: u8,
    },
    /// Overwrites 8 bytes at an 8-aligned position: hits count, size, offset and padding fields whole.
    SetWord {
        at: usize,
        value: u64,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        (any::<usize>(), prop_oneof![any::<u64>(), 0u64..512, Just(u64::MAX)])
            .prop_map(|(at, value)| Mutation::SetWord { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..70))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::SetByte { at, value } => bytes[at % len] = *value,
        Mutation::SetWord { at, value } => {
            let start = (at % (len / 8)) * 8;
            bytes[start..start + 8].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::Truncate { len: keep } => bytes.truncate(keep % (len + 1)),
        Mutation::Insert { at, bytes: extra } => {
            let at = at % (len + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_files_round_trip(specs in prop::collection::vec(record_spec(), 0..8)) {
        let mut writer = BlobWriter::new();
        let written: Vec<(u64, BlobDType, Vec<i64>)> =
            specs.iter().map(|s| { let (o, v) = write(&mut writer, s); (o, s.dtype, v) }).collect();
        let bytes = writer.finish();
        let file = BlobFile::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(file.records().len(), specs.len());
        for (offset, dtype, expected) in written {
            prop_assert_eq!(offset % 64, 0);
            prop_assert_eq!(read(&file, offset, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?, expected);
        }
    }

    #[test]
    fn damaged_files_never_panic(
        specs in prop::collection::vec(record_spec(), 1..5),
        mutations in prop::collection::vec(mutation(), 1..4),
        probe_offsets in prop::collection::vec(any::<u64>(), 4),
    ) {
        let mut bytes = valid_file(&specs);
        for m in &mutations {
            if !bytes.is_empty() && bytes.len() >= 8 {
                apply(&mut bytes, m);
            }
        }
        if let Ok(file) = BlobFile::parse(&bytes) {
            // Whatever parsed must be inside the file and readable (or a clean error) with every reader.
            let mut offsets: Vec<u64> = file.records().iter().map(|r| r.offset).collect();
            offsets.extend(probe_offsets.iter().map(|o| o % (bytes.len() as u64 + 128)));
            for record in file.records() {
                prop_assert!(record.data_offset + record.data.len() as u64 <= bytes.len() as u64);
            }
            for offset in offsets {
                for dtype in BlobDType::ALL {
                    let _ = read(&file, offset, dtype);
                }
            }
        }
    }
}
