//! `orion doctor`: what this machine offers — platform, chip, OS version, whether
//! AppleNeuralEngine.framework is usable, and which devices (`cpu`, `ane-sim`, `ane`) can run programs.
//! On a machine without an ANE it says so plainly and succeeds (exit 0).
//!
//! Also where every command turns `--device auto|cpu|ane-sim|ane` into a device ([`ane_device`]): `auto`
//! takes the real ANE when this machine has a usable one, else the CPU; `ane` without one is an error,
//! never a silent fallback.

use super::generate::DeviceChoice;
use anyhow::{Context, Result};
use clap::Args;
use orion_ane::device::host::{FrameworkStatus, HostInfo};
use orion_ane::device::{AneDevice, SimulatedAne};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct DoctorArgs {}

/// The host as the platform reports it.
fn host() -> HostInfo {
    #[cfg(target_vendor = "apple")]
    {
        orion_ane::device::macos::host_info()
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        HostInfo::basic()
    }
}

/// The report `orion doctor` prints, one fact per line.
pub fn doctor_report(host: &HostInfo) -> Vec<String> {
    let unknown = || "unknown".to_string();
    let mut lines = vec![
        format!("platform: {} {}", host.os, host.arch),
        format!("os version: {}", host.os_version.clone().unwrap_or_else(unknown)),
        format!("cpu: {}", host.cpu_brand.clone().unwrap_or_else(unknown)),
        format!("hardware model: {}", host.hw_model.clone().unwrap_or_else(unknown)),
        format!(
            "chip profile: {}",
            host.chip()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none (not an Apple M-series chip)".to_string())
        ),
    ];
    let ane_usable = match &host.framework {
        FrameworkStatus::NotApplicable => {
            lines.push("AppleNeuralEngine.framework: not applicable (not macOS)".to_string());
            lines.push("no ANE is present on this machine; use --device ane-sim to simulate one".to_string());
            false
        }
        FrameworkStatus::Present => {
            lines.push("AppleNeuralEngine.framework: present (all four classes resolved)".to_string());
            host.chip().is_some()
        }
        FrameworkStatus::Unusable(reason) => {
            lines.push(format!("AppleNeuralEngine.framework: unusable: {reason}"));
            false
        }
    };
    lines.push("device cpu: usable".to_string());
    lines.push(format!(
        "cpu --products bf16: {}",
        orion_core::cpu::kernels::bf16_product_kernel()
    ));
    lines.push(format!(
        "cpu matrix-vector products: {}",
        orion_core::cpu::kernels::gemv_kernel()
    ));
    lines.push("device ane-sim: usable (chips m1, m2, m3, m4, m5)".to_string());
    lines.push(format!(
        "device ane: {}",
        if ane_usable { "usable" } else { "not usable" }
    ));
    lines
}

pub fn run_doctor(_args: DoctorArgs) -> Result<()> {
    for line in doctor_report(&host()) {
        println!("{line}");
    }
    Ok(())
}

/// The simulated chip of `--device ane-sim`.
pub const SIM_CHIP: &str = "m4";

/// The ANE device `choice` asks for (`None`: run on the CPU).
pub fn ane_device(choice: DeviceChoice) -> Result<Option<Arc<dyn AneDevice>>> {
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::AneSim => {
            let sim = SimulatedAne::builtin(SIM_CHIP).context("no simulated chip profile")?;
            Ok(Some(Arc::new(sim)))
        }
        DeviceChoice::Ane => open_real_ane().map(Some),
        DeviceChoice::Auto => Ok(open_real_ane().ok()),
    }
}

/// The real ANE of this machine, with the built-in profile of its chip.
#[cfg(target_vendor = "apple")]
fn open_real_ane() -> Result<Arc<dyn AneDevice>> {
    let host = host();
    let chip = host
        .chip()
        .context("this Mac's chip is not a known M-series chip; run `orion doctor`")?;
    let profile = orion_ane::profile::ChipProfile::builtin(chip.as_str())
        .with_context(|| format!("no built-in profile for chip {chip}"))?;
    let device = orion_ane::device::macos::RealAne::open(profile).context("opening the ANE")?;
    Ok(Arc::new(device))
}

#[cfg(not(target_vendor = "apple"))]
fn open_real_ane() -> Result<Arc<dyn AneDevice>> {
    let host = host();
    anyhow::bail!(
        "no ANE on this machine ({} {}): use --device ane-sim to simulate one, or --device cpu",
        host.os,
        host.arch
    )
}
