//! Process-wide settings of the C allocator, applied once at start-up by the `orion` binary.
//!
//! Why: glibc's `malloc` serves blocks above a (dynamic) threshold with their own `mmap` and gives
//! them back with `munmap` when freed, and trims the heap top above 128 KiB. A training step or a
//! prefill frees and re-allocates the same large activations every run (the saved activations
//! leave each layer program with their buffers), so each run faulted its working set in again:
//! 1.5 million page faults and about half the wall time in the kernel for a Stories110M run of
//! `orion bench training`. Serving blocks up to 32 MiB from the heap (`M_MMAP_THRESHOLD`, glibc's
//! largest allowed value) and keeping up to 2 GiB of freed heap (`M_TRIM_THRESHOLD`) lets freed
//! buffers be reused without faults: Stories110M training +8 % (interleaved rounds, 2026-11-27;
//! docs/BENCHMARKS.md). `M_TOP_PAD` was measured too and left alone: it made the cold first token
//! of GPT-2 40 % slower.
//!
//! Only on Linux with glibc; elsewhere (macOS's allocator, musl) nothing is changed. A user's own
//! `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES` setting wins: then this
//! module changes nothing.

/// What [`tune`] did, for the benchmark notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Whether the settings were applied.
    pub applied: bool,
    /// The settings when applied; otherwise why the allocator was left as it was.
    pub detail: &'static str,
}

impl Tuning {
    fn untouched(why: &'static str) -> Tuning {
        Tuning {
            applied: false,
            detail: why,
        }
    }

    /// One line for a report.
    pub fn describe(&self) -> String {
        if self.applied {
            format!("allocator: {}", self.detail)
        } else {
            format!("allocator: unchanged ({})", self.detail)
        }
    }
}

/// Largest block glibc's heap serves before using `mmap` (its maximum on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Freed memory at the heap top kept for reuse before glibc returns it (`c_int`'s maximum).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

/// Environment variables through which a user sets these allocator parameters themselves.
const USER_SETTINGS: [&str; 3] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"];

/// Applies the settings (once, before any large allocation) unless the user set their own.
pub fn tune() -> Tuning {
    if USER_SETTINGS.iter().any(|name| std::env::var_os(name).is_some()) {
        return Tuning::untouched("the environment sets malloc parameters");
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> Tuning {
    // SAFETY: `mallopt` takes two integers and changes allocator parameters under malloc's own
    // lock; it touches no memory of ours, and both values are within the ranges glibc documents
    // (it returns 0 and changes nothing for a value out of range).
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if applied {
        Tuning {
            applied: true,
            detail: "glibc malloc, blocks up to 32 MiB from the heap, freed heap kept up to 2 GiB",
        }
    } else {
        Tuning::untouched("glibc refused the parameters")
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::untouched("not glibc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        // Run only where the test's own environment leaves malloc alone.
        if USER_SETTINGS.iter().all(|name| std::env::var_os(name).is_none()) {
            let tuning = tune();
            assert!(tuning.applied, "{tuning:?}");
            // Allocation still works across the new threshold, at and above it.
            for len in [(32 << 20) - 64, 32 << 20, (32 << 20) + 4096] {
                let block = vec![7u8; len];
                assert_eq!(block[len - 1], 7);
            }
        }
    }

    #[test]
    fn describe_names_the_allocator() {
        let applied = Tuning {
            applied: true,
            detail: "x",
        };
        assert_eq!(applied.describe(), "allocator: x");
        assert_eq!(Tuning::untouched("y").describe(), "allocator: unchanged (y)");
    }
}
