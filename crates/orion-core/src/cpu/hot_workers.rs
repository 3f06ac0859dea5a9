//! Keeps the pool's other workers awake while one run of a plan executes its steps.
//!
//! Why: rayon puts an idle worker to sleep soon after it finds no work, and waking it costs a
//! futex round trip. A decode step is hundreds of short steps — matrix-vector products of 0.05–0.5
//! ms with one-thread elementwise steps between them — so every parallel step waited for a sleeping
//! worker: the Stories110M decode program took 16.4–17.0 ms per token, and 15.3–15.5 with the
//! workers kept awake; `orion bench inference` decode went 57.5–58.9 → 63.0–63.9 tok/s on the
//! Stories110M file, GPT-2 48.6–51.1 → 54.4–56.0 (f32) and 78–79 → 92 (f16 weights), training
//! unchanged within noise (interleaved runs, 2026-11-27; docs/BENCHMARKS.md). llama2.c's OpenMP
//! threads spin the same way between parallel loops.
//!
//! How: [`with_hot_workers`] spawns, inside a `rayon::scope`, one job per other worker that loops
//! on `rayon::yield_now` (running any pending task of the pool, such as a stolen half of a
//! product) until the run is over. The cost is that the other cores spin during the run's
//! single-threaded steps; between runs they sleep.
//!
//! Deadlock freedom: a spinner spins only on a thread that is not inside a run of its own (a
//! thread-local count); one picked up by a run's owner — which happens while the owner waits inside
//! a parallel step, its own spinner or another concurrent run's — returns at once. Otherwise two
//! owners could each spin for the other's run while their own could not continue. So a spinning
//! thread never holds up a run beneath it on its stack, and a run only waits for its own tasks and
//! for spinners that end when their runs end. The flag is set by a drop guard, so a panicking run
//! still releases its spinners and the scope can unwind.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Runs of [`with_hot_workers`] in progress on this thread (nested through work stealing).
    static RUNS_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Marks a run in progress on this thread; when dropped (at the end of the run, or while unwinding
/// from a panic in it) unmarks it and sets the run's flag, releasing its spinners.
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    fn start(done: &'a AtomicBool) -> Running<'a> {
        RUNS_HERE.with(|runs| runs.set(runs.get() + 1));
        Running(done)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        RUNS_HERE.with(|runs| runs.set(runs.get() - 1));
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `run` on the calling thread while the other `threads - 1` workers of the current rayon pool
/// stay awake taking its parallel tasks. With one thread, or outside a pool, it just calls `run`.
pub(crate) fn with_hot_workers<R: Send>(threads: usize, run: impl FnOnce() -> R + Send) -> R {
    if threads <= 1 || rayon::current_thread_index().is_none() {
        return run();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        for _ in 1..threads {
            let done = &done;
            scope.spawn(move |_| {
                if RUNS_HERE.with(Cell::get) > 0 {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _running = Running::start(&done);
        run()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// Runs `f` on another thread and fails the test if it has not finished within a minute (a
    /// deadlock would otherwise hang the test run).
    fn finishes<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(f());
        });
        receive
            .recv_timeout(Duration::from_secs(60))
            .expect("with_hot_workers did not finish")
    }

    #[test]
    fn parallel_work_inside_gives_the_same_result() {
        let sum = finishes(|| {
            pool(2).install(|| {
                with_hot_workers(2, || {
                    (0..200)
                        .map(|round| (0..10_000u64).into_par_iter().map(|i| i * round).sum::<u64>())
                        .sum::<u64>()
                })
            })
        });
        let expected: u64 = (0..200)
            .map(|round| (0..10_000u64).map(|i| i * round).sum::<u64>())
            .sum();
        assert_eq!(sum, expected);
    }

    /// `i`, after some work the optimiser cannot remove (so owners wait inside parallel steps).
    fn slow_identity(i: u64) -> u64 {
        let mut x = i;
        for _ in 0..64 {
            x = std::hint::black_box(x);
        }
        x
    }

    #[test]
    fn concurrent_runs_in_one_pool_all_finish() {
        // More callers than workers, each run full of parallel steps: spinners of one run end up on
        // the owners of others, and on their own owner's thread, which must not spin there.
        let total = finishes(|| {
            let pool = std::sync::Arc::new(pool(2));
            let callers: Vec<_> = (0..4)
                .map(|caller| {
                    let pool = pool.clone();
                    std::thread::spawn(move || {
                        (0..50)
                            .map(|_| {
                                pool.install(|| {
                                    with_hot_workers(2, || {
                                        (0..8)
                                            .map(|_| {
                                                (0..4096u64)
                                                    .into_par_iter()
                                                    .map(|i| slow_identity(i) + caller)
                                                    .sum::<u64>()
                                            })
                                            .sum::<u64>()
                                    })
                                })
                            })
                            .sum::<u64>()
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).sum::<u64>()
        });
        let expected: u64 = (0..4u64)
            .map(|c| 50 * 8 * (0..4096u64).map(|i| i + c).sum::<u64>())
            .sum();
        assert_eq!(total, expected);
    }

    #[test]
    fn a_panicking_run_releases_the_workers() {
        let caught = finishes(|| {
            pool(2).install(|| {
                std::panic::catch_unwind(|| {
                    with_hot_workers(2, || {
                        let _ = (0..1000u32).into_par_iter().map(|i| i * 2).sum::<u32>();
                        panic!("run failed");
                    })
                })
                .is_err()
            })
        });
        assert!(caught);
    }

    #[test]
    fn outside_a_pool_or_with_one_thread_it_just_runs() {
        assert_eq!(with_hot_workers(4, || 7), 7);
        assert_eq!(pool(1).install(|| with_hot_workers(1, || 8)), 8);
    }
}
