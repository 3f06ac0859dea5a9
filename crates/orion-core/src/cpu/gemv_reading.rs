//! How the AVX-512 matrix-vector kernel of `super::gemv` reads a matrix's rows, chosen per CPU
//! vendor because the two CPUs measured disagree:
//!
//! - [`GemvReading::RowStreams`]: one row after another, each read front to back as a single
//!   stream with four accumulators, no software prefetch. On the 2-core AMD EPYC (Zen 4,
//!   2026-11-27; a decode-like sequence of 49 matrices, 438 MB of f32 or 219 MB of halves, two
//!   threads, alternated runs, median) this streamed f32 rows at 27.6–32.7 GB/s against 25.5 for
//!   row groups, half rows at 28.9–31.8 against 19.0–20.4, and software prefetch made it slower.
//! - [`GemvReading::RowGroups`]: four rows at a time, one accumulator per row sharing each load of
//!   `x`, half rows prefetched 2 KB ahead. On the 2-core Intel Xeon (AVX-512, AMX; 2026-11-29,
//!   `cargo bench -p orion-core --bench gemv_stream`, the same sequence, alternated runs) f32 rows
//!   streamed 24.9–25.2 GiB/s against 21.2–22.3 for row streams, half rows 22.1 against
//!   16.9–18.7 (with 4 KB of prefetch 20.6–21.0, without 16.3–17.0).
//!
//! So Intel CPUs read rows in groups and all others (AMD, and any CPU not measured) as streams.
//! `ORION_GEMV=streams` or `ORION_GEMV=groups` overrides the choice (for measuring one against the
//! other on a new machine); any other value is ignored.
//!
//! Invariant: either way every row's result comes from the same operations whatever rows it is
//! computed with, so results do not depend on how rows are split across tasks; the two readings
//! sum in different orders (both within `Tolerance::F32` of the sequential sum).

use std::sync::OnceLock;

/// How the AVX-512 matrix-vector kernel reads the rows of its matrix (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvReading {
    /// One row after another, each as a single stream.
    RowStreams,
    /// Four rows at a time, sharing each load of `x`.
    RowGroups,
}

impl GemvReading {
    /// A short description for `orion doctor` and benchmark notes.
    pub fn describe(self) -> &'static str {
        match self {
            GemvReading::RowStreams => "one row at a time as a single stream",
            GemvReading::RowGroups => "four rows at a time",
        }
    }
}

/// The reading this process uses: `ORION_GEMV` when it names one, else by CPU vendor.
pub fn gemv_reading() -> GemvReading {
    static CHOICE: OnceLock<GemvReading> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let requested = std::env::var("ORION_GEMV").ok();
        from_setting(requested.as_deref()).unwrap_or_else(|| for_vendor(&cpu_vendor()))
    })
}

/// The reading an `ORION_GEMV` value asks for, if it names one.
fn from_setting(value: Option<&str>) -> Option<GemvReading> {
    match value.map(str::trim) {
        Some("streams") => Some(GemvReading::RowStreams),
        Some("groups") => Some(GemvReading::RowGroups),
        _ => None,
    }
}

/// The measured choice for a CPU vendor string (`cpuid` leaf 0).
fn for_vendor(vendor: &str) -> GemvReading {
    if vendor == "GenuineIntel" {
        GemvReading::RowGroups
    } else {
        GemvReading::RowStreams
    }
}

/// The CPU vendor string (`GenuineIntel`, `AuthenticAMD`, …); empty off x86-64.
fn cpu_vendor() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: leaf 0 exists on every x86-64 CPU (the vendor in EBX, EDX, ECX) and reading it
        // has no side effect. (`__cpuid` is an `unsafe fn` up to Rust 1.90, the crate's minimum
        // is 1.89, and a safe one in later releases, hence the allowance for an unneeded block.)
        #[allow(unsafe_code, unused_unsafe)]
        let leaf = unsafe { std::arch::x86_64::__cpuid(0) };
        let bytes: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intel_reads_rows_in_groups() {
        assert_eq!(for_vendor("GenuineIntel"), GemvReading::RowGroups);
        assert_eq!(for_vendor("AuthenticAMD"), GemvReading::RowStreams);
        assert_eq!(for_vendor(""), GemvReading::RowStreams);
    }

    #[test]
    fn the_setting_overrides_only_when_it_names_a_reading() {
        assert_eq!(from_setting(Some("groups")), Some(GemvReading::RowGroups));
        assert_eq!(from_setting(Some(" streams\n")), Some(GemvReading::RowStreams));
        assert_eq!(from_setting(Some("fast")), None);
        assert_eq!(from_setting(None), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vendor_string_is_twelve_characters() {
        assert_eq!(cpu_vendor().len(), 12, "{:?}", cpu_vendor());
    }
}
