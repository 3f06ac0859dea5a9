//! `orion doctor`: what this machine offers — platform, chip, OS version, whether
//! AppleNeuralEngine.framework is usable, and which devices (`cpu`, `ane-sim`, `ane`) can run programs.
//! On a machine without an ANE it says so plainly and succeeds (exit 0).
//!
//! (`orion probe` is not written yet; see docs/DEVICE.md.)

use anyhow::Result;
use clap::Args;
use orion_ane::device::host::{FrameworkStatus, HostInfo};

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
