//! Surface planning and packing: how host tensors become the flat byte buffers a device reads, and back
//! (ane.md §1, §2). Shared by the simulator, the backend, the CLI and, later, the real device.
//!
//! - sizing: every surface of a side gets one allocation size, at least the chip's minimum and a multiple
//!   of its alignment (C18, C21) — [`uniform_surface_sizes`];
//! - ordering: surfaces bind to MIL names in the chip's binding order (C19) — [`binding_permutation`];
//! - layout: an IR `[rows, cols]` value travels channel-major as MIL `[1, cols, 1, rows]`, element
//!   (c, s) at `c·rows + s` (ane.md §2); a `Flat` value keeps its row-major order — [`to_mil_layout`],
//!   [`from_mil_layout`];
//! - element codec: fp16 (IEEE binary16) or fp32, little-endian, packed from offset 0 with no stride
//!   (C20); the rest of a larger surface is zero on the way in and ignored on the way out.
//!   Host → device uses the blob module's safe fp16 conversion (round to nearest even, NaN → 0,
//!   saturation at ±65504, both counted: C38); device → host widens exactly.
//! - [`pack_inputs`] / [`unpack_outputs`]: all of the above for a lowered program's I/O descriptions.
//!
//! Invariants: packing never truncates (a surface too small for its dense data is an error); a tensor
//! must have exactly the IR type of its description; surfaces come out in the order of the descriptions,
//! which the lowering emits in binding order.

use crate::blob::{fp16_bits_to_f32, fp32_to_fp16_weights};
use crate::device::{DeviceError, Surface};
use crate::lower::{IoDesc, IoLayout};
use crate::profile::{IoBindingOrder, Limits};
use half::f16;
use orion_core::{DType, Tensor, TensorData};

/// What the host → device conversion had to repair (C38), summed over the packed tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundaryStats {
    /// NaN inputs written as +0.
    pub nan_count: usize,
    /// Inputs beyond the fp16 range written as ±65504.
    pub clamped_count: usize,
}

impl BoundaryStats {
    fn add(&mut self, other: BoundaryStats) {
        self.nan_count += other.nan_count;
        self.clamped_count += other.clamped_count;
    }
}

/// Bytes of one element on a surface: 2 for F16, 4 for F32; other types have no surface format (C31).
pub fn element_bytes(dtype: DType) -> Result<usize, String> {
    match dtype {
        DType::F16 => Ok(2),
        DType::F32 => Ok(4),
        DType::I32 | DType::Bool => Err(format!("{dtype} has no ANE surface format (C31: fp16 or fp32 only)")),
    }
}

/// One allocation size per surface of a side (ane.md §2): each at least its dense size and the chip's
/// minimum (C21), rounded up to the surface alignment; with `uniform_io_sizes` (C18) every surface gets
/// the largest of these. `None` when a size overflows.
pub fn uniform_surface_sizes(dense_bytes: &[usize], limits: &Limits) -> Option<Vec<usize>> {
    let align = limits.surface_alignment_bytes.max(1);
    let sized = dense_bytes
        .iter()
        .map(|&d| d.max(limits.min_surface_bytes).checked_next_multiple_of(align))
        .collect::<Option<Vec<usize>>>()?;
    if limits.uniform_io_sizes {
        let largest = sized.iter().copied().max().unwrap_or(0);
        Some(vec![largest; sized.len()])
    } else {
        Some(sized)
    }
}

/// `perm` such that request slot `k` binds to `names[perm[k]]` under `order` (C19): ascending byte order
/// of the names, or declaration order.
pub fn binding_permutation<S: AsRef<str>>(names: &[S], order: IoBindingOrder) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..names.len()).collect();
    match order {
        IoBindingOrder::Alphabetical => {
            perm.sort_by(|&a, &b| names[a].as_ref().as_bytes().cmp(names[b].as_ref().as_bytes()))
        }
        IoBindingOrder::Declaration => {}
    }
    perm
}

/// Row-major IR elements → the order of the MIL tensor (`ChannelMajor`: transpose `[rows, cols]` to
/// `[cols, rows]`; `Flat`: unchanged).
pub fn to_mil_layout(values: &[f32], layout: &IoLayout) -> Vec<f32> {
    match *layout {
        IoLayout::ChannelMajor { rows, cols } => transpose2(values, rows, cols),
        IoLayout::Flat => values.to_vec(),
    }
}

/// MIL tensor elements → row-major IR order (the inverse of [`to_mil_layout`]).
pub fn from_mil_layout(values: &[f32], layout: &IoLayout) -> Vec<f32> {
    match *layout {
        IoLayout::ChannelMajor { rows, cols } => transpose2(values, cols, rows),
        IoLayout::Flat => values.to_vec(),
    }
}

/// `[r, c]` row-major → `[c, r]` row-major. `values.len()` must be `r·c` (callers check).
fn transpose2(values: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = values[i * c + j];
        }
    }
    out
}

/// Writes `values` packed at offset 0 of `dest` in `dtype`, fp16 by the safe conversion (C38).
pub fn encode_safe(values: &[f32], dtype: DType, dest: &mut [u8]) -> Result<BoundaryStats, String> {
    check_room(values.len(), dtype, dest.len())?;
    match dtype {
        DType::F16 => {
            let converted = fp32_to_fp16_weights(values);
            for (chunk, bits) in dest.chunks_exact_mut(2).zip(&converted.bits) {
                chunk.copy_from_slice(&bits.to_le_bytes());
            }
            Ok(BoundaryStats {
                nan_count: converted.nan_count,
                clamped_count: converted.clamped_count,
            })
        }
        _ => {
            encode_exact(values, dtype, dest)?;
            Ok(BoundaryStats::default())
        }
    }
}

/// Writes `values` packed at offset 0 of `dest` in `dtype` with plain IEEE conversion (fp16 overflow →
/// ±inf, NaN stays NaN): what the device itself writes.
pub fn encode_exact(values: &[f32], dtype: DType, dest: &mut [u8]) -> Result<(), String> {
    check_room(values.len(), dtype, dest.len())?;
    match dtype {
        DType::F16 => {
            for (chunk, &v) in dest.chunks_exact_mut(2).zip(values) {
                chunk.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        DType::F32 => {
            for (chunk, &v) in dest.chunks_exact_mut(4).zip(values) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
        // check_room has already refused element types without a surface format.
        DType::I32 | DType::Bool => return Err(format!("{dtype} has no ANE surface format")),
    }
    Ok(())
}

/// Reads `count` packed elements of `dtype` from offset 0 of `bytes` (C20), widening fp16 exactly.
pub fn decode(bytes: &[u8], dtype: DType, count: usize) -> Result<Vec<f32>, String> {
    let size = check_room(count, dtype, bytes.len())?;
    let used = &bytes[..size];
    Ok(match dtype {
        DType::F16 => {
            let bits: Vec<u16> = used.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            fp16_bits_to_f32(&bits)
        }
        _ => used
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// Dense bytes of `count` elements of `dtype`, checked against the room available.
fn check_room(count: usize, dtype: DType, available: usize) -> Result<usize, String> {
    let size = count
        .checked_mul(element_bytes(dtype)?)
        .ok_or_else(|| format!("{count} elements of {dtype} overflow"))?;
    if size > available {
        return Err(format!(
            "{count} elements of {dtype} need {size} bytes, the surface has {available}"
        ));
    }
    Ok(size)
}

/// Packs one tensor per description (same order) into fresh surfaces of `surface_bytes` each.
pub fn pack_inputs(descs: &[IoDesc], tensors: &[Tensor]) -> Result<Vec<Surface>, DeviceError> {
    pack_inputs_counted(descs, tensors).map(|(surfaces, _)| surfaces)
}

/// [`pack_inputs`], also returning how many NaNs and out-of-range values were repaired (C38).
pub fn pack_inputs_counted(descs: &[IoDesc], tensors: &[Tensor]) -> Result<(Vec<Surface>, BoundaryStats), DeviceError> {
    if descs.len() != tensors.len() {
        return Err(surface_error(
            "inputs",
            format!("{} tensors given for {} input descriptions", tensors.len(), descs.len()),
        ));
    }
    let mut stats = BoundaryStats::default();
    let mut surfaces = Vec::with_capacity(descs.len());
    for (desc, tensor) in descs.iter().zip(tensors) {
        let fail = |m: String| surface_error(&desc.ir_name, m);
        check_desc(desc).map_err(fail)?;
        if tensor.ty() != desc.ir_type {
            return Err(fail(format!(
                "tensor is {}, the program expects {}",
                tensor.ty(),
                desc.ir_type
            )));
        }
        let values = match tensor.data() {
            TensorData::Float(v) => to_mil_layout(v, &desc.layout),
            TensorData::I32(_) | TensorData::Bool(_) => {
                return Err(fail(format!("{} tensors cannot be packed", tensor.dtype())))
            }
        };
        let mut surface = Surface::zeroed(desc.surface_bytes);
        let repaired = encode_safe(&values, desc.surface_dtype, surface.bytes_mut()).map_err(fail)?;
        stats.add(repaired);
        surfaces.push(surface);
    }
    Ok((surfaces, stats))
}

/// Output surfaces of `surface_bytes` each, zero-filled, one per description.
pub fn output_surfaces(descs: &[IoDesc]) -> Vec<Surface> {
    descs.iter().map(|d| Surface::zeroed(d.surface_bytes)).collect()
}

/// Reads one tensor per description (same order) from the packed start of each surface, in the
/// description's IR type.
pub fn unpack_outputs(descs: &[IoDesc], surfaces: &[Surface]) -> Result<Vec<Tensor>, DeviceError> {
    if descs.len() != surfaces.len() {
        return Err(surface_error(
            "outputs",
            format!(
                "{} surfaces given for {} output descriptions",
                surfaces.len(),
                descs.len()
            ),
        ));
    }
    descs
        .iter()
        .zip(surfaces)
        .map(|(desc, surface)| {
            let fail = |m: String| surface_error(&desc.ir_name, m);
            check_desc(desc).map_err(fail)?;
            let count = desc.ir_type.shape.numel();
            let mil = decode(surface.bytes(), desc.surface_dtype, count).map_err(fail)?;
            let values = from_mil_layout(&mil, &desc.layout);
            Tensor::new(
                desc.ir_type.dtype,
                desc.ir_type.shape.clone(),
                TensorData::Float(values),
            )
            .map_err(|e| fail(e.to_string()))
        })
        .collect()
}

/// A description must be self-consistent before it is trusted with indexing.
fn check_desc(desc: &IoDesc) -> Result<(), String> {
    let count = desc.ir_type.shape.numel();
    let mil_count: usize = desc.mil_shape.iter().product();
    if mil_count != count {
        return Err(format!(
            "MIL shape {:?} holds {mil_count} elements, the IR type {} holds {count}",
            desc.mil_shape, desc.ir_type
        ));
    }
    if !desc.ir_type.dtype.is_float() {
        return Err(format!(
            "{} values cannot travel on a surface (C31)",
            desc.ir_type.dtype
        ));
    }
    if let IoLayout::ChannelMajor { rows, cols } = desc.layout {
        if rows.checked_mul(cols) != Some(count) {
            return Err(format!("layout {rows}x{cols} does not match {count} elements"));
        }
    }
    let dense = count * element_bytes(desc.surface_dtype)?;
    if desc.surface_bytes < dense {
        return Err(format!(
            "surface of {} bytes cannot hold {dense} dense bytes",
            desc.surface_bytes
        ));
    }
    Ok(())
}

fn surface_error(name: &str, message: String) -> DeviceError {
    DeviceError::Surface {
        name: name.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ChipProfile;

    #[test]
    fn channel_major_puts_element_c_s_at_c_times_rows_plus_s() {
        // IR [rows=2, cols=3] = [[0,1,2],[3,4,5]]; MIL [1,3,1,2]: (c, s) = IR (s, c) at c*2 + s.
        let ir = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let layout = IoLayout::ChannelMajor { rows: 2, cols: 3 };
        let mil = to_mil_layout(&ir, &layout);
        assert_eq!(mil, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(from_mil_layout(&mil, &layout), ir.to_vec());
        assert_eq!(to_mil_layout(&ir, &IoLayout::Flat), ir.to_vec());
    }

    #[test]
    fn codec_writes_little_endian_half_and_single() {
        let mut bytes = [0u8; 8];
        encode_exact(&[1.0, -2.0], DType::F16, &mut bytes).unwrap();
        // 1.0 = 0x3C00, -2.0 = 0xC000 (hand-computed binary16 patterns); the rest untouched.
        assert_eq!(bytes, [0x00, 0x3C, 0x00, 0xC0, 0, 0, 0, 0]);
        assert_eq!(decode(&bytes, DType::F16, 2).unwrap(), vec![1.0, -2.0]);
        let mut single = [0u8; 4];
        encode_exact(&[1.0], DType::F32, &mut single).unwrap();
        assert_eq!(single, 0x3F80_0000u32.to_le_bytes());
        assert!(decode(&single, DType::F32, 2).is_err());
    }

    #[test]
    fn safe_encoding_counts_repairs_and_exact_encoding_overflows() {
        let mut bytes = [0u8; 6];
        let stats = encode_safe(&[f32::NAN, 1.0e6, 0.5], DType::F16, &mut bytes).unwrap();
        assert_eq!(
            stats,
            BoundaryStats {
                nan_count: 1,
                clamped_count: 1
            }
        );
        assert_eq!(decode(&bytes, DType::F16, 3).unwrap(), vec![0.0, 65504.0, 0.5]);
        encode_exact(&[1.0e6], DType::F16, &mut bytes).unwrap();
        assert_eq!(decode(&bytes, DType::F16, 1).unwrap(), vec![f32::INFINITY]);
    }

    #[test]
    fn sizes_are_uniform_minimum_and_aligned() {
        let limits = ChipProfile::builtin("m4").unwrap().limits;
        let sizes = uniform_surface_sizes(&[100, 60_000, 49_152], &limits).unwrap();
        // 60,000 rounded up to a multiple of 64 is 60,032; every surface gets it (C18).
        assert_eq!(sizes, vec![60_032; 3]);
        let small = uniform_surface_sizes(&[10], &limits).unwrap();
        assert_eq!(small, vec![49_152]);
        let mut free = limits.clone();
        free.uniform_io_sizes = false;
        assert_eq!(
            uniform_surface_sizes(&[100, 60_000], &free).unwrap(),
            vec![49_152, 60_032]
        );
    }

    #[test]
    fn binding_is_byte_order_or_declaration_order() {
        let names = ["x", "lora_B", "lora_A"];
        // Byte order: uppercase sorts before lowercase, so "lora_A" < "lora_B" < "x".
        assert_eq!(binding_permutation(&names, IoBindingOrder::Alphabetical), vec![2, 1, 0]);
        assert_eq!(binding_permutation(&names, IoBindingOrder::Declaration), vec![0, 1, 2]);
    }
}
