//! What the two hand-written GEMMs (`gemm_kernel`, f32; `gemm_bf16`, bfloat16 products) share:
//! how a product's destination is split across rayon tasks, and the lane masks of a tile's last,
//! partial strip.
//!
//! Invariants: the parts [`split_destination`] hands out are non-empty, disjoint and cover the
//! destination, and each starts on a whole panel of rows or strip of columns, so a kernel's tiles
//! never straddle two tasks.

/// Calls `run(rows, columns)` — half-open ranges — for each part of an `m × n` destination, on up
/// to `tasks` rayon tasks (in place when `tasks` is 1). Splits by whole `nr`-column strips when
/// the left operand is the smaller one (`m < n`) and there are enough strips (each task then reads
/// all of `A` and its own columns of `B`), by whole `mr`-row panels otherwise (each reads all of `B`).
pub(crate) fn split_destination(
    (m, n): (usize, usize),
    tasks: usize,
    (mr, nr): (usize, usize),
    run: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    let strips = n.div_ceil(nr);
    if tasks <= 1 {
        run((0, m), (0, n));
    } else if m < n && strips >= tasks {
        let per_task = strips.div_ceil(tasks) * nr;
        rayon::scope(|s| {
            for t in 0..tasks {
                let (j0, j1) = ((t * per_task).min(n), ((t + 1) * per_task).min(n));
                let run = &run;
                if j0 < j1 {
                    s.spawn(move |_| run((0, m), (j0, j1)));
                }
            }
        });
    } else {
        let per_task = m.div_ceil(tasks).div_ceil(mr) * mr;
        rayon::scope(|s| {
            for t in 0..tasks {
                let (i0, i1) = ((t * per_task).min(m), ((t + 1) * per_task).min(m));
                let run = &run;
                if i0 < i1 {
                    s.spawn(move |_| run((i0, i1), (0, n)));
                }
            }
        });
    }
}

/// Lane masks of the `VECS` 16-lane vectors of a strip `nr` columns wide (`1 ≤ nr ≤ 16·VECS`).
pub(crate) fn lane_masks<const VECS: usize>(nr: usize) -> [u16; VECS] {
    std::array::from_fn(|v| {
        let lanes = nr.saturating_sub(v * 16);
        if lanes >= 16 {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every element is handed out exactly once; parts are non-empty and start on whole panels or
    /// strips.
    #[test]
    fn parts_cover_the_destination_once_on_whole_panels_and_strips() {
        for (m, n, tasks) in [
            (300, 64, 2),
            (40, 700, 2),
            (40, 700, 3),
            (7, 20, 2),
            (1, 1, 1),
            (13, 33, 5),
        ] {
            let seen = Mutex::new(vec![0u8; m * n]);
            split_destination((m, n), tasks, (12, 32), |(i0, i1), (j0, j1)| {
                assert!(
                    i0 % 12 == 0 && j0 % 32 == 0 && i0 < i1 && j0 < j1,
                    "part at ({i0}, {j0})"
                );
                let mut seen = seen.lock().unwrap();
                for i in i0..i1 {
                    for j in j0..j1 {
                        seen[i * n + j] += 1;
                    }
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "{m}×{n} on {tasks}");
        }
    }

    #[test]
    fn masks_cover_the_strip_width() {
        assert_eq!(lane_masks::<2>(32), [u16::MAX, u16::MAX]);
        assert_eq!(lane_masks::<2>(17), [u16::MAX, 1]);
        assert_eq!(lane_masks::<2>(3), [0b111, 0]);
    }
}
