//! N-d index arithmetic shared by every op of the interpreter: row-major strides, converting
//! between flat positions and multi-indices, and numpy broadcasting of an output multi-index onto
//! the (smaller or equal) shape of an operand.
//!
//! Invariants: every shape is dense and row-major; a multi-index has one entry per axis of the
//! shape it indexes, each entry below that axis's extent. Broadcasting aligns shapes at the last
//! axis and maps every size-1 source axis (and every missing leading axis) to index 0.

/// Row-major strides of `dims`, in elements (empty for a scalar).
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for axis in (0..dims.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dims[axis + 1];
    }
    strides
}

/// The multi-index of flat position `flat` in a tensor of extents `dims`.
pub fn unravel(flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut index = vec![0; dims.len()];
    let mut rest = flat;
    for axis in (0..dims.len()).rev() {
        let extent = dims[axis].max(1);
        index[axis] = rest % extent;
        rest /= extent;
    }
    index
}

/// The flat position of multi-index `index` in a tensor of extents `dims`.
pub fn ravel(index: &[usize], dims: &[usize]) -> usize {
    index.iter().zip(strides(dims)).map(|(&i, s)| i * s).sum()
}

/// Flat position, in a tensor of extents `src`, of the element that numpy broadcasting places at
/// output multi-index `out_index` (whose rank is at least `src.len()`).
pub fn broadcast_source(out_index: &[usize], src: &[usize]) -> usize {
    let offset = out_index.len() - src.len();
    let src_strides = strides(src);
    src.iter()
        .enumerate()
        .map(|(axis, &extent)| {
            if extent == 1 {
                0
            } else {
                out_index[offset + axis] * src_strides[axis]
            }
        })
        .sum()
}

/// For every flat position of a tensor of extents `out`, the flat position of the element of a
/// tensor of extents `src` that numpy broadcasting places there.
pub fn broadcast_map(src: &[usize], out: &[usize]) -> Vec<usize> {
    let count: usize = out.iter().product();
    if src == out {
        return (0..count).collect(); // the common equal-shape case, without index arithmetic
    }
    (0..count)
        .map(|flat| broadcast_source(&unravel(flat, out), src))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ravel_inverts_unravel() {
        let dims = [2, 3, 4];
        for flat in 0..24 {
            assert_eq!(ravel(&unravel(flat, &dims), &dims), flat);
        }
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
        assert_eq!(ravel(&[], &[]), 0);
    }

    #[test]
    fn broadcast_maps_size_one_and_missing_axes_to_zero() {
        // src [3,1] broadcast to [2,3,4]: element (b, i, j) comes from (i, 0).
        let map = broadcast_map(&[3, 1], &[2, 3, 4]);
        for b in 0..2 {
            for i in 0..3 {
                for j in 0..4 {
                    assert_eq!(map[(b * 3 + i) * 4 + j], i);
                }
            }
        }
        assert_eq!(broadcast_map(&[], &[2, 2]), vec![0; 4]);
    }
}
