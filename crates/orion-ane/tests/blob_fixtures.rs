//! Weight blobs against coremltools 9.0: our writer must produce byte-identical files for the same
//! values, and our reader must read coremltools' files back to the same offsets and values. Fixtures
//! come from `tools/blob_fixtures.py`; float values in the JSON sidecar are bit patterns. Also checks the
//! ane.md §4 example layout field by field from the numbers in the reference.

use orion_ane::blob::{BlobDType, BlobFile, BlobWriter};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Sidecar {
    files: Vec<FixtureFile>,
}

#[derive(Debug, Deserialize)]
struct FixtureFile {
    name: String,
    length: usize,
    records: Vec<FixtureRecord>,
}

#[derive(Debug, Deserialize)]
struct FixtureRecord {
    dtype: String,
    offset: u64,
    /// Stored values; fp16 and fp32 as bit patterns.
    values: Vec<i64>,
    /// For fp16 records converted from fp32 by the fixture script: the fp32 inputs' bit patterns.
    source_f32_bits: Option<Vec<u32>>,
}

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/blob");

fn sidecar() -> Sidecar {
    let text = std::fs::read_to_string(format!("{FIXTURE_DIR}/blob_fixtures.json")).expect("sidecar JSON");
    serde_json::from_str(&text).expect("sidecar parses")
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURE_DIR}/{name}")).expect("fixture file")
}

fn dtype_named(name: &str) -> BlobDType {
    BlobDType::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("unknown dtype {name}"))
}

fn narrow<T: TryFrom<i64>>(values: &[i64]) -> Vec<T> {
    values
        .iter()
        .map(|&v| T::try_from(v).unwrap_or_else(|_| panic!("value {v} out of range")))
        .collect()
}

/// Appends one fixture record with our writer; returns its offset.
fn write_record(writer: &mut BlobWriter, record: &FixtureRecord) -> u64 {
    let dtype = dtype_named(&record.dtype);
    let values = &record.values;
    let result = match dtype {
        BlobDType::Fp16 => match &record.source_f32_bits {
            Some(source) => {
                let source: Vec<f32> = source.iter().map(|&b| f32::from_bits(b)).collect();
                let (offset, converted) = writer.write_fp16_from_f32(&source).expect("write fp16");
                assert_eq!(
                    converted.bits,
                    narrow::<u16>(values),
                    "our fp16 conversion differs from numpy's"
                );
                Ok(offset)
            }
            None => writer.write_fp16_bits(&narrow::<u16>(values)),
        },
        BlobDType::Fp32 => writer.write_fp32(
            &narrow::<u32>(values)
                .into_iter()
                .map(f32::from_bits)
                .collect::<Vec<_>>(),
        ),
        BlobDType::Uint8 => writer.write_u8(&narrow(values)),
        BlobDType::Int8 => writer.write_i8(&narrow(values)),
        BlobDType::Int16 => writer.write_i16(&narrow(values)),
        BlobDType::Uint16 => writer.write_u16(&narrow(values)),
        BlobDType::Int32 => writer.write_i32(&narrow(values)),
        BlobDType::Uint32 => writer.write_u32(&narrow(values)),
        BlobDType::Int4 => writer.write_i4(&narrow(values)),
        BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => {
            writer.write_packed_unsigned(dtype, &narrow(values))
        }
    };
    result.expect("write record")
}

/// Reads one record with our reader, floats as bit patterns.
fn read_record(file: &BlobFile<'_>, offset: u64, dtype: BlobDType) -> Vec<i64> {
    let values: Result<Vec<i64>, _> = match dtype {
        BlobDType::Fp16 => file
            .read_fp16_bits(offset)
            .map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Fp32 => file
            .read_fp32(offset)
            .map(|v| v.into_iter().map(|x| i64::from(x.to_bits())).collect()),
        BlobDType::Uint8 => file.read_u8(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Int8 => file.read_i8(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Int16 => file.read_i16(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Uint16 => file.read_u16(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Int32 => file.read_i32(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Uint32 => file.read_u32(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Int4 => file.read_i4(offset).map(|v| v.into_iter().map(i64::from).collect()),
        BlobDType::Uint1 | BlobDType::Uint2 | BlobDType::Uint3 | BlobDType::Uint4 | BlobDType::Uint6 => file
            .read_packed_unsigned(offset, dtype)
            .map(|v| v.into_iter().map(i64::from).collect()),
    };
    values.expect("read record")
}

#[test]
fn writer_reproduces_coremltools_files_byte_for_byte() {
    let sidecar = sidecar();
    assert_eq!(sidecar.files.len(), 4, "expected the four fixture files");
    for fixture in &sidecar.files {
        let expected = fixture_bytes(&fixture.name);
        assert_eq!(expected.len(), fixture.length, "{}: length in sidecar", fixture.name);
        let mut writer = BlobWriter::new();
        for record in &fixture.records {
            let offset = write_record(&mut writer, record);
            assert_eq!(
                offset, record.offset,
                "{}: offset of a {} record",
                fixture.name, record.dtype
            );
        }
        let ours = writer.finish();
        assert_eq!(ours.len(), expected.len(), "{}: file length", fixture.name);
        let first_difference = ours.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "{}: first differing byte", fixture.name);
    }
}

#[test]
fn reader_reads_coremltools_files_back() {
    for fixture in &sidecar().files {
        let bytes = fixture_bytes(&fixture.name);
        let file = BlobFile::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        let offsets: Vec<u64> = file.records().iter().map(|r| r.offset).collect();
        let expected_offsets: Vec<u64> = fixture.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, expected_offsets, "{}", fixture.name);
        for (record, expected) in file.records().iter().zip(&fixture.records) {
            assert_eq!(
                record.dtype.name(),
                expected.dtype,
                "{} at {}",
                fixture.name,
                record.offset
            );
            assert_eq!(record.element_count(), expected.values.len() as u64);
            let values = read_record(&file, record.offset, record.dtype);
            assert_eq!(
                values, expected.values,
                "{}: {} record at {}",
                fixture.name, expected.dtype, record.offset
            );
        }
    }
}

#[test]
fn fixtures_cover_every_dtype() {
    let seen: Vec<String> = sidecar()
        .files
        .iter()
        .flat_map(|f| f.records.iter().map(|r| r.dtype.clone()))
        .collect();
    for dtype in BlobDType::ALL {
        assert!(seen.iter().any(|s| s == dtype.name()), "no fixture record of {dtype}");
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn reference_example_layout_field_by_field() {
    // ane.md §4: 8 fp16 values then 4 fp32 values -> offsets 64 and 192, file length 272.
    let mut writer = BlobWriter::new();
    let fp16 = [0x3C00u16, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800];
    let fp32 = [1.0f32, -2.0, 0.5, 1024.0];
    assert_eq!(writer.write_fp16_bits(&fp16), Ok(64));
    assert_eq!(writer.write_fp32(&fp32), Ok(192));
    let b = writer.finish();
    assert_eq!(b.len(), 272);
    // Header: count 2, version 2, zeros to 64.
    assert_eq!((u32_at(&b, 0), u32_at(&b, 4)), (2, 2));
    assert!(b[8..64].iter().all(|&x| x == 0));
    // Record 1 metadata at 64: sentinel EF BE AD DE, dtype 1, size 16, data offset 128, padding 0, zeros.
    assert_eq!(&b[64..68], &[0xEF, 0xBE, 0xAD, 0xDE]);
    assert_eq!(
        (u32_at(&b, 68), u64_at(&b, 72), u64_at(&b, 80), u64_at(&b, 88)),
        (1, 16, 128, 0)
    );
    assert!(b[96..128].iter().all(|&x| x == 0));
    // fp16 data at 128..144, zero padding to 192.
    let expected_fp16: Vec<u8> = fp16.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&b[128..144], expected_fp16.as_slice());
    assert!(b[144..192].iter().all(|&x| x == 0));
    // Record 2 metadata at 192: sentinel, dtype 2, size 16, data offset 256, padding 0, zeros.
    assert_eq!(u32_at(&b, 192), 0xDEAD_BEEF);
    assert_eq!(
        (u32_at(&b, 196), u64_at(&b, 200), u64_at(&b, 208), u64_at(&b, 216)),
        (2, 16, 256, 0)
    );
    assert!(b[224..256].iter().all(|&x| x == 0));
    // fp32 data at 256..272, no padding after the last record.
    let expected_fp32: Vec<u8> = fp32.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&b[256..272], expected_fp32.as_slice());
}
