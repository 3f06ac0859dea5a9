//! Shapes and names at the IR ↔ MIL boundary: the rank-4 internal shape of an IR value, the surface
//! shape and layout of an I/O tensor, the I/O names, and surface sizing.
//!
//! Invariants:
//! - internal shape: IR dims with 4 − r leading 1s (IR axis i is MIL axis i + 4 − r); rank > 4 is refused;
//! - surface shape: rank-2 IR `[rows, cols]` → `[1, cols, 1, rows]` ([`IoLayout::ChannelMajor`]); any
//!   other rank with N elements → `[1, 1, 1, N]` ([`IoLayout::Flat`]);
//! - I/O names: `<prefix><index>_<sanitised IR name>` with the index zero-padded to one width per
//!   program (at least 2 digits), sanitised to `[a-z0-9_]`, so byte order = declaration order (C19);
//! - surface sizes: `max(dense, min_surface_bytes)` rounded up to `surface_alignment_bytes`, and the
//!   largest of a side for every surface of that side when `uniform_io_sizes` (C18, C21).

use orion_core::{DType, TensorType};

use super::{IoDesc, IoLayout};
use crate::profile::Limits;

/// IR dims padded with leading 1s to rank 4.
pub(super) fn internal_shape(dims: &[usize]) -> Result<[usize; 4], String> {
    if dims.len() > 4 {
        return Err(format!(
            "rank {} (shape {dims:?}) exceeds the ANE's rank 4; reshape to at most 4 axes first",
            dims.len()
        ));
    }
    let mut shape = [1usize; 4];
    shape[4 - dims.len()..].copy_from_slice(dims);
    Ok(shape)
}

/// Offset of IR axes inside the rank-4 internal shape.
pub(super) fn axis_shift(rank: usize) -> usize {
    4usize.saturating_sub(rank)
}

/// The surface layout and MIL shape of an I/O tensor of type `ty`.
pub(super) fn io_layout(ty: &TensorType) -> (IoLayout, [usize; 4]) {
    let dims = ty.shape.dims();
    match dims {
        [rows, cols] => (
            IoLayout::ChannelMajor {
                rows: *rows,
                cols: *cols,
            },
            [1, *cols, 1, *rows],
        ),
        _ => (IoLayout::Flat, [1, 1, 1, ty.shape.numel()]),
    }
}

/// The permutation taking a channel-major surface `[1, cols, 1, rows]` to the internal `[1, 1, rows, cols]`.
pub(super) const SURFACE_TO_INTERNAL: [usize; 4] = [0, 2, 3, 1];
/// The permutation taking the internal `[1, 1, rows, cols]` to a channel-major surface `[1, cols, 1, rows]`.
pub(super) const INTERNAL_TO_SURFACE: [usize; 4] = [0, 3, 1, 2];

/// `[a-z0-9_]` version of an IR name (uppercase folded, everything else `_`, never empty).
pub(super) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            l @ ('a'..='z' | '0'..='9' | '_') => l,
            _ => '_',
        })
        .collect();
    if s.is_empty() {
        "v".to_string()
    } else {
        s
    }
}

/// Digits of the I/O index for `count` names on one side (at least 2).
pub(super) fn index_width(count: usize) -> usize {
    count.saturating_sub(1).to_string().len().max(2)
}

/// `a03_x`, `z00_loss`.
pub(super) fn io_name(prefix: char, index: usize, width: usize, ir_name: &str) -> String {
    format!("{prefix}{index:0width$}_{}", sanitize(ir_name))
}

/// An I/O description with `surface_bytes` = `dense_bytes` (see [`size_surfaces`]).
pub(super) fn io_desc(ir_name: &str, mil_name: &str, ty: &TensorType, surface_dtype: DType) -> IoDesc {
    let (layout, mil_shape) = io_layout(ty);
    let dense_bytes = mil_shape.iter().product::<usize>() * surface_dtype.size_bytes();
    IoDesc {
        ir_name: ir_name.to_string(),
        mil_name: mil_name.to_string(),
        ir_type: ty.clone(),
        mil_shape,
        surface_dtype,
        layout,
        dense_bytes,
        surface_bytes: dense_bytes,
    }
}

/// Sets `surface_bytes` of one side's descriptions (C18, C21, ane.md §2).
pub(super) fn size_surfaces(descs: &mut [IoDesc], limits: &Limits) {
    let align = limits.surface_alignment_bytes.max(1);
    let size = |dense: usize| dense.max(limits.min_surface_bytes).div_ceil(align) * align;
    let largest = descs.iter().map(|d| size(d.dense_bytes)).max().unwrap_or(0);
    for d in descs {
        d.surface_bytes = if limits.uniform_io_sizes {
            largest
        } else {
            size(d.dense_bytes)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_shapes_get_leading_ones() {
        assert_eq!(internal_shape(&[3, 5]).unwrap(), [1, 1, 3, 5]);
        assert_eq!(internal_shape(&[]).unwrap(), [1, 1, 1, 1]);
        assert!(internal_shape(&[1, 2, 3, 4, 5]).unwrap_err().contains("rank 5"));
    }

    #[test]
    fn names_sort_in_declaration_order() {
        let width = index_width(120);
        assert_eq!(width, 3);
        let names: Vec<String> = (0..120).map(|i| io_name('a', i, width, "W.q")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[7], "a007_w_q");
        assert_eq!(io_name('z', 3, index_width(4), "Out"), "z03_out");
    }

    #[test]
    fn layouts_follow_rank() {
        let t = TensorType::new(DType::F32, vec![4, 8]);
        assert_eq!(
            io_layout(&t),
            (IoLayout::ChannelMajor { rows: 4, cols: 8 }, [1, 8, 1, 4])
        );
        let t = TensorType::new(DType::F32, vec![2, 3, 4]);
        assert_eq!(io_layout(&t), (IoLayout::Flat, [1, 1, 1, 24]));
    }
}
