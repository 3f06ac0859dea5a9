//! What the two hand-written GEMMs (`gemm_kernel`, f32; `gemm_bf16`, bfloat16 products) share:
//! how a product's destination is split across rayon tasks, and the lane masks of a tile's last,
//! partial strip.
//!
//! Invariants: the parts [`split_destination`] hands out are non-empty, disjoint and cover the
//! destination, and each starts on a whole panel of rows or strip of columns, so a kernel's tiles
//! never straddle two tasks. It returns once every part is done; a part's panic is propagated.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    let parts: Vec<Part> = if tasks <= 1 {
        vec![((0, m), (0, n))]
    } else if m < n && strips >= tasks {
        let per_task = strips.div_ceil(tasks) * nr;
        (0..tasks)
            .map(|t| ((t * per_task).min(n), ((t + 1) * per_task).min(n)))
            .filter(|(j0, j1)| j0 < j1)
            .map(|columns| ((0, m), columns))
            .collect()
    } else {
        let per_task = m.div_ceil(tasks).div_ceil(mr) * mr;
        (0..tasks)
            .map(|t| ((t * per_task).min(m), ((t + 1) * per_task).min(m)))
            .filter(|(i0, i1)| i0 < i1)
            .map(|rows| (rows, (0, n)))
            .collect()
    };
    run_parts(&parts, &|(rows, columns)| run(rows, columns));
}

/// Rows and columns (half-open ranges) of one part of a destination.
type Part = ((usize, usize), (usize, usize));

/// Runs the first part on the calling thread and the others as rayon tasks, then waits for them
/// spinning (running any pending task of the pool meanwhile) rather than in `rayon::scope`'s wait:
/// a thread that finished its part a little early went to sleep there, and waking it took about
/// 60 µs after the last part ended — per product, 48 times in GPT-2's prefill.
fn run_parts(parts: &[Part], run: &(dyn Fn(Part) + Sync)) {
    let Some((&own, others)) = parts.split_first() else {
        return;
    };
    if others.is_empty() {
        run(own);
        return;
    }
    let pending = AtomicUsize::new(others.len());
    rayon::scope(|s| {
        for &part in others {
            let pending = &pending;
            s.spawn(move |_| {
                // Counts the part done even if it panics, so the wait below ends (the scope then
                // propagates the panic).
                let _done = Done(pending);
                run(part);
            });
        }
        run(own);
        while pending.load(Ordering::Acquire) > 0 {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
    });
}

/// Counts one part done when dropped.
struct Done<'a>(&'a AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
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

    /// A part that panics ends the call with that panic (after the other parts), never a hang.
    #[test]
    fn a_panicking_part_propagates_and_the_others_finish() {
        for panicking in [0, 1] {
            let finished = AtomicUsize::new(0);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                split_destination((40, 700), 2, (12, 32), |_, (j0, _)| {
                    if (j0 > 0) == (panicking == 1) {
                        panic!("part at column {j0}");
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                })
            }));
            assert!(result.is_err(), "part {panicking} panicked, the call returned normally");
            assert_eq!(finished.load(Ordering::SeqCst), 1, "part {panicking} panicked");
        }
    }

    #[test]
    fn masks_cover_the_strip_width() {
        assert_eq!(lane_masks::<2>(32), [u16::MAX, u16::MAX]);
        assert_eq!(lane_masks::<2>(17), [u16::MAX, 1]);
        assert_eq!(lane_masks::<2>(3), [0b111, 0]);
    }
}
