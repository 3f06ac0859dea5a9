//! A small, strict reader and writer of NumPy `.npy` files for the commands that take or write arrays: little-endian `<f4`
//! (f32) and `<f2` (f16) arrays in C order, format versions 1.0, 2.0 and 3.0.
//!
//! Invariants: the reader accepts only what it can represent exactly — anything else (big-endian or
//! other dtypes, Fortran order, a header that is not the dict NumPy writes, a data length that does not
//! match the shape) is an error naming the problem; it never panics on any bytes. The writer emits
//! version 1.0 with the header padded so that the data starts at a multiple of 64 bytes, as NumPy does.

use half::f16;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDType {
    F16,
    F32,
}

impl NpyDType {
    fn descr(self) -> &'static str {
        match self {
            NpyDType::F16 => "<f2",
            NpyDType::F32 => "<f4",
        }
    }

    fn size(self) -> usize {
        match self {
            NpyDType::F16 => 2,
            NpyDType::F32 => 4,
        }
    }
}

/// A decoded array: values widened to f32 (exactly, for f16), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub dtype: NpyDType,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Parses a whole `.npy` file.
pub fn read(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".to_string());
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10usize),
        2 | 3 if bytes.len() >= 12 => {
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(len).map_err(|_| "header too large".to_string())?, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", bytes[7])),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text".to_string())?;
    let (dtype, shape) = parse_header(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &bytes[end..];
    if Some(data.len()) != count.checked_mul(dtype.size()) {
        return Err(format!(
            "data has {} bytes, shape {shape:?} of {} needs {}",
            data.len(),
            dtype.descr(),
            count.saturating_mul(dtype.size())
        ));
    }
    let values = match dtype {
        NpyDType::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        NpyDType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    Ok(NpyArray { dtype, shape, values })
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` → dtype and shape.
fn parse_header(header: &str) -> Result<(NpyDType, Vec<usize>), String> {
    let body = header
        .trim_end()
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .ok_or_else(|| format!("header is not a dict: {header:?}"))?;
    let descr = field(body, "descr")?;
    let dtype = match descr.trim().trim_matches('\'') {
        "<f4" => NpyDType::F32,
        "<f2" => NpyDType::F16,
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (use float32 '<f4' or float16 '<f2')"
            ))
        }
    };
    match field(body, "fortran_order")?.trim() {
        "False" => {}
        "True" => return Err("Fortran-order arrays are not supported (save in C order)".to_string()),
        other => return Err(format!("bad fortran_order {other:?}")),
    }
    let shape_text = field(body, "shape")?.trim();
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape {shape_text:?}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad extent {s:?} in shape {shape_text}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

/// The text of `'key': VALUE` up to the next top-level comma (commas inside parentheses belong to
/// the value).
fn field<'a>(body: &'a str, key: &str) -> Result<&'a str, String> {
    let quoted = format!("'{key}':");
    let at = body.find(&quoted).ok_or_else(|| format!("header has no '{key}'"))?;
    let rest = &body[at + quoted.len()..];
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    Ok(rest)
}

/// A version 1.0 `.npy` file holding `values` (row-major, `shape`) as `dtype`.
pub fn write(dtype: NpyDType, shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        dtype.descr()
    );
    // Pad with spaces so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * dtype.size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in values {
        match dtype {
            NpyDType::F16 => out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
            NpyDType::F32 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_as_numpy_writes_it() {
        // np.save of np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), header written out by hand.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header:<117}\n");
        bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        bytes.extend_from_slice(padded.as_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let array = read(&bytes).unwrap();
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(array.dtype, NpyDType::F32);
        assert_eq!(array.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn writes_aligned_files_that_read_back() {
        for (dtype, shape) in [
            (NpyDType::F16, vec![4]),
            (NpyDType::F32, vec![1, 2, 1, 2]),
            (NpyDType::F32, vec![]),
        ] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let bytes = write(dtype, &shape, &values);
            let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!((10 + header_len) % 64, 0);
            let back = read(&bytes).unwrap();
            assert_eq!((back.dtype, back.shape, back.values), (dtype, shape, values));
        }
    }

    #[test]
    fn rejects_what_it_cannot_represent() {
        let good = write(NpyDType::F32, &[2], &[1.0, 2.0]);
        let swap = |from: &str, to: &str| {
            let mut bytes = good.clone();
            let at = good.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
            bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
            bytes
        };
        assert!(read(&swap("<f4", ">f4")).unwrap_err().contains("not supported"));
        assert!(read(&swap("<f4", "<i4")).unwrap_err().contains("not supported"));
        assert!(read(&swap("False", "True ")).unwrap_err().contains("Fortran"));
        assert!(read(&good[..good.len() - 1]).unwrap_err().contains("needs 8"));
        assert!(read(b"\x93NUMPY").is_err());
        assert!(read(&[]).is_err());
    }
}
