//! Strided index arithmetic of the CPU kernels, planned once and applied many times.
//!
//! - [`Broadcaster`]: reads any flat range of a numpy-broadcast operand into a dense buffer (the
//!   operand loads of elementwise kernels);
//! - [`StridedCopy`]: copies a strided block of a source into a strided block of a destination:
//!   transpose, slice, broadcast and pad (concat and split have row-block plans in `layout`). A
//!   large copy into a dense destination is split over rayon tasks in blocks of whole runs.
//!
//! Invariants: shapes are dense and row-major; axes of extent 1 are dropped and adjacent axes that
//! are contiguous in both source and destination are merged when planning, so the inner loop runs
//! over the longest contiguous run (a `copy_from_slice` or a `fill` when the stride is 1 or 0).
//! Every offset computed from a plan is inside the buffers the plan was made for (callers pass
//! buffers of the planned sizes; slicing checks the rest).

use crate::interp::index::strides;
use rayon::prelude::*;

/// Reads flat ranges of an operand broadcast (numpy style) to an output shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Broadcaster {
    /// Collapsed output axes, outermost first: (extent, source stride, output elements per step).
    axes: Vec<Axis>,
    /// Source and output are the same shape: a range is a plain copy.
    identity: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    extent: usize,
    stride: usize,
    /// Number of output elements one step along this axis covers (product of inner extents).
    inner: usize,
}

impl Broadcaster {
    /// Plans reads of an operand of extents `src` broadcast to extents `out` (`src` must broadcast).
    pub(crate) fn new(src: &[usize], out: &[usize]) -> Broadcaster {
        let offset = out.len().saturating_sub(src.len());
        let src_strides = strides(src);
        let mut collapsed: Vec<(usize, usize)> = Vec::new();
        for (axis, &extent) in out.iter().enumerate() {
            if extent == 1 {
                continue;
            }
            let stride = match axis.checked_sub(offset) {
                Some(s) if src[s] != 1 => src_strides[s],
                _ => 0,
            };
            push_merged(&mut collapsed, extent, stride);
        }
        let identity = src == out;
        Broadcaster {
            axes: with_inner(&collapsed),
            identity,
        }
    }

    /// True when the operand has the output's shape (output element `i` is source element `i`).
    pub(crate) fn is_identity(&self) -> bool {
        self.identity
    }

    /// Writes output elements `start..start + dst.len()` of the broadcast operand `src` to `dst`.
    pub(crate) fn gather<T: Copy>(&self, src: &[T], start: usize, dst: &mut [T]) {
        let len = dst.len();
        if len == 0 {
            return;
        }
        if self.identity {
            dst.copy_from_slice(&src[start..start + len]);
            return;
        }
        let Some(last) = self.axes.last() else {
            dst.fill(src[0]); // every axis has extent 1: a single element
            return;
        };
        let mut position = start;
        let mut written = 0;
        while written < len {
            let run = (last.extent - position % last.extent).min(len - written);
            let base: usize = self
                .axes
                .iter()
                .map(|a| (position / a.inner) % a.extent * a.stride)
                .sum();
            copy_run(src, base, last.stride, &mut dst[written..written + run]);
            position += run;
            written += run;
        }
    }
}

/// Copies `dims` elements from `src` (at `src_offset`, strides `src_strides`) to `dst` (at
/// `dst_offset`, strides `dst_strides`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StridedCopy {
    /// Collapsed axes, outermost first.
    axes: Vec<CopyAxis>,
    src_offset: usize,
    dst_offset: usize,
    numel: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct CopyAxis {
    extent: usize,
    src_stride: usize,
    dst_stride: usize,
}

impl StridedCopy {
    pub(crate) fn new(
        dims: &[usize],
        src_offset: usize,
        src_strides: &[usize],
        dst_offset: usize,
        dst_strides: &[usize],
    ) -> StridedCopy {
        let mut axes: Vec<CopyAxis> = Vec::new();
        for ((&extent, &src_stride), &dst_stride) in dims.iter().zip(src_strides).zip(dst_strides) {
            if extent == 1 {
                continue;
            }
            if let Some(outer) = axes.last_mut() {
                if outer.src_stride == src_stride * extent && outer.dst_stride == dst_stride * extent {
                    outer.extent *= extent;
                    outer.src_stride = src_stride;
                    outer.dst_stride = dst_stride;
                    continue;
                }
            }
            axes.push(CopyAxis {
                extent,
                src_stride,
                dst_stride,
            });
        }
        StridedCopy {
            axes,
            src_offset,
            dst_offset,
            numel: dims.iter().product(),
        }
    }

    /// A dense copy of a whole source of extents `dims` read with source strides `src_strides`
    /// (transpose, broadcast) starting at `src_offset` (slice, split) into a dense destination.
    pub(crate) fn gather(dims: &[usize], src_offset: usize, src_strides: &[usize]) -> StridedCopy {
        StridedCopy::new(dims, src_offset, src_strides, 0, &strides(dims))
    }

    /// A dense source of extents `dims` written into a destination of extents `dst_dims` at
    /// `dst_offset` (concat, pad).
    pub(crate) fn scatter(dims: &[usize], dst_offset: usize, dst_dims: &[usize]) -> StridedCopy {
        StridedCopy::new(dims, 0, &strides(dims), dst_offset, &strides(dst_dims))
    }

    pub(crate) fn apply<T: Copy>(&self, src: &[T], dst: &mut [T]) {
        if self.numel == 0 {
            return;
        }
        let Some((last, outer)) = self.axes.split_last() else {
            dst[self.dst_offset] = src[self.src_offset]; // a single element
            return;
        };
        let runs: usize = outer.iter().map(|a| a.extent).product();
        for run in 0..runs {
            let (s, d) = self.run_origin(run);
            let out = &mut dst[d..];
            if last.dst_stride == 1 {
                copy_run(src, s, last.src_stride, &mut out[..last.extent]);
            } else {
                for j in 0..last.extent {
                    out[j * last.dst_stride] = src[s + j * last.src_stride];
                }
            }
        }
    }

    /// Source and destination offsets of the first element of run `run` (runs are the innermost
    /// collapsed axis; outer axes are walked as an odometer, last fastest).
    fn run_origin(&self, run: usize) -> (usize, usize) {
        let (mut s, mut d, mut rest) = (self.src_offset, self.dst_offset, run);
        let outer = &self.axes[..self.axes.len().saturating_sub(1)];
        for a in outer.iter().rev() {
            let i = rest % a.extent;
            rest /= a.extent;
            s += i * a.src_stride;
            d += i * a.dst_stride;
        }
        (s, d)
    }

    /// Whether the copy writes `dst[dst_offset .. dst_offset + numel]` densely, run after run in
    /// order (every gather plan: transpose, slice, split piece, broadcast).
    fn dense_destination(&self) -> bool {
        let mut inner = 1;
        for a in self.axes.iter().rev() {
            if a.dst_stride != inner {
                return false;
            }
            inner *= a.extent;
        }
        true
    }

    /// As [`StridedCopy::apply`], with a copy of at least [`PAR_MIN_ELEMENTS`] into a dense
    /// destination split into blocks of whole runs over up to `threads` rayon tasks (a copy at
    /// memory speed: one core does not saturate the bandwidth). The same elements land in the
    /// same places.
    pub(crate) fn apply_parallel<T: Copy + Send + Sync>(&self, src: &[T], dst: &mut [T], threads: usize) {
        let Some(last) = self.axes.last() else {
            return self.apply(src, dst);
        };
        if threads < 2 || self.numel < PAR_MIN_ELEMENTS || !self.dense_destination() {
            return self.apply(src, dst);
        }
        let run_len = last.extent;
        let runs_per_task = (self.numel / (threads * TASKS_PER_THREAD)).div_ceil(run_len).max(1);
        let region = &mut dst[self.dst_offset..self.dst_offset + self.numel];
        region
            .par_chunks_mut(runs_per_task * run_len)
            .enumerate()
            .for_each(|(task, block)| {
                for (j, out) in block.chunks_mut(run_len).enumerate() {
                    let (s, _) = self.run_origin(task * runs_per_task + j);
                    copy_run(src, s, last.src_stride, out);
                }
            });
    }
}

/// Elements from which a data-movement kernel is split across rayon tasks.
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 15;
/// Tasks per thread of a parallel copy (a few, so a descheduled thread does not hold up the rest).
pub(crate) const TASKS_PER_THREAD: usize = 4;

/// Fills `dst` from `src` starting at `base` with stride `stride` (0 = repeat one element).
fn copy_run<T: Copy>(src: &[T], base: usize, stride: usize, dst: &mut [T]) {
    match stride {
        0 => dst.fill(src[base]),
        1 => dst.copy_from_slice(&src[base..base + dst.len()]),
        s => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[base + j * s];
            }
        }
    }
}

/// Appends an axis, merging it into the previous one when the two are contiguous.
fn push_merged(axes: &mut Vec<(usize, usize)>, extent: usize, stride: usize) {
    if let Some(outer) = axes.last_mut() {
        if outer.1 == stride * extent {
            outer.0 *= extent;
            outer.1 = stride;
            return;
        }
    }
    axes.push((extent, stride));
}

fn with_inner(axes: &[(usize, usize)]) -> Vec<Axis> {
    let mut inner = 1;
    let mut out: Vec<Axis> = axes
        .iter()
        .rev()
        .map(|&(extent, stride)| {
            let axis = Axis { extent, stride, inner };
            inner *= extent;
            axis
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::index::broadcast_map;

    #[test]
    fn broadcaster_matches_the_interpreter_map_on_every_range() {
        let cases: [(&[usize], &[usize]); 5] = [
            (&[3, 1], &[2, 3, 4]),
            (&[4], &[2, 3, 4]),
            (&[], &[2, 2]),
            (&[2, 1, 4], &[2, 3, 4]),
            (&[1, 3, 1], &[2, 3, 5]),
        ];
        for (src, out) in cases {
            let map = broadcast_map(src, out);
            let data: Vec<usize> = (0..src.iter().product::<usize>()).collect();
            let b = Broadcaster::new(src, out);
            for start in 0..map.len() {
                for len in 0..=map.len() - start {
                    let mut dst = vec![usize::MAX; len];
                    b.gather(&data, start, &mut dst);
                    assert_eq!(dst, map[start..start + len], "{src:?} -> {out:?} at {start}+{len}");
                }
            }
        }
    }

    #[test]
    fn parallel_copies_match_an_index_loop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        // Transpose [4, 70, 3, 40] -> [4, 3, 70, 40] (split_heads), 33,600 elements.
        let (b, t, h, d) = (4, 70, 3, 40);
        let src: Vec<u32> = (0..(b * t * h * d) as u32).collect();
        let copy = StridedCopy::gather(&[b, h, t, d], 0, &[t * h * d, d, h * d, 1]);
        let mut expected = Vec::new();
        for i in 0..b {
            for j in 0..h {
                for k in 0..t {
                    expected.extend_from_slice(&src[((i * t + k) * h + j) * d..][..d]);
                }
            }
        }
        // Broadcast [300, 1] -> [300, 120] (a keep-dims reduction spread over its rows).
        let column: Vec<u32> = (0..300).collect();
        let spread = StridedCopy::gather(&[300, 120], 0, &[1, 0]);
        let spread_expected: Vec<u32> = (0..300 * 120).map(|i| (i / 120) as u32).collect();
        for threads in [1, 3] {
            let mut out = vec![0u32; src.len()];
            pool.install(|| copy.apply_parallel(&src, &mut out, threads));
            assert_eq!(out, expected, "transpose, {threads} threads");
            let mut out = vec![0u32; 300 * 120];
            pool.install(|| spread.apply_parallel(&column, &mut out, threads));
            assert_eq!(out, spread_expected, "broadcast, {threads} threads");
        }
        // A scattered destination (not dense) falls back to the serial copy.
        let mut big = vec![9u32; 12];
        StridedCopy::scatter(&[2, 2], 5, &[3, 4]).apply_parallel(&[1, 2, 3, 4], &mut big, 3);
        assert_eq!(big, vec![9, 9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9]);
    }

    #[test]
    fn strided_copy_transposes_and_places_blocks() {
        // Transpose [2,3] -> [3,2]: output (i, j) = input (j, i).
        let src: Vec<u32> = (0..6).collect();
        let mut dst = vec![0; 6];
        StridedCopy::gather(&[3, 2], 0, &[1, 3]).apply(&src, &mut dst);
        assert_eq!(dst, vec![0, 3, 1, 4, 2, 5]);
        // A [2,2] block written at (1, 1) of a [3,4] destination.
        let mut big = vec![9u32; 12];
        StridedCopy::scatter(&[2, 2], 5, &[3, 4]).apply(&[1, 2, 3, 4], &mut big);
        assert_eq!(big, vec![9, 9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9]);
    }
}
