//! What `orion doctor` and the real device need to know about the host, in platform-independent form:
//! the [`HostInfo`] record and the mapping from a CPU brand string (`machdep.cpu.brand_string`, e.g.
//! "Apple M4 Pro") to the chip generation whose profile applies. Reading the values is the macOS
//! module's job; everything here is tested on Linux.
//!
//! Invariant: [`chip_from_brand`] answers only for brand strings of the form "Apple M<n>…" with a
//! built-in generation (M1..M5); anything else is `None`, never a guess.

use crate::profile::ChipId;

/// Facts about the machine, as far as the platform can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `std::env::consts::OS` / `ARCH`, e.g. "macos" / "aarch64".
    pub os: String,
    pub arch: String,
    /// OS product version and build ("15.3.1 (24D70)"), when known.
    pub os_version: Option<String>,
    /// CPU brand string ("Apple M4 Pro"), when known.
    pub cpu_brand: Option<String>,
    /// Hardware model identifier ("Mac16,7"), when known.
    pub hw_model: Option<String>,
    /// Whether AppleNeuralEngine.framework could be opened and its four classes resolved (ane.md §1).
    pub framework: FrameworkStatus,
}

/// Whether the private framework is usable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FrameworkStatus {
    /// Not an Apple platform: there is no framework to look for.
    #[default]
    NotApplicable,
    /// Opened, and every required class resolved.
    Present,
    /// Missing or incomplete: the reason (dlopen error, missing class).
    Unusable(String),
}

impl HostInfo {
    /// The host as far as the standard library knows it (no OS version, brand or framework).
    pub fn basic() -> HostInfo {
        HostInfo {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            ..HostInfo::default()
        }
    }

    /// The chip generation of the brand string, when it names one.
    pub fn chip(&self) -> Option<ChipId> {
        self.cpu_brand.as_deref().and_then(chip_from_brand)
    }
}

/// "Apple M4", "Apple M4 Pro", "Apple M1 Ultra" → the generation; anything else → `None`.
pub fn chip_from_brand(brand: &str) -> Option<ChipId> {
    let rest = brand.trim().strip_prefix("Apple M")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let after = &rest[digits.len()..];
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    ChipId::parse(&format!("m{digits}"))
}
