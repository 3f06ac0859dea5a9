//! `orion probe --device ane-sim|ane [--chip m1..m5] --out FILE [--quick] [--repeats N]`: runs the probe
//! (`orion_ane::probe`) against a device, prints the table of experiments and writes the probed chip
//! profile as JSON (atomically), for `orion compile|lint|sim --profile FILE`.
//!
//! - `ane-sim`: the simulator of a built-in chip (`--chip`, default m4);
//! - `ane`: this Mac's Neural Engine, with the built-in profile of its chip (detected, or `--chip`) as the
//!   reference; the device's own compile-budget guard is lifted to the probe's limit so that the budget
//!   experiment sees where the OS refuses. Off Apple platforms it is an error: there is no ANE here.
//!
//! A device error inside an experiment is part of the report; only a device that runs nothing at all,
//! an unknown chip or an unwritable output is an error (non-zero exit), never a panic.

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use orion_ane::device::{AneDevice, SimulatedAne};
use orion_ane::probe::{run_probe, write_profile, ProbeOptions};
use orion_ane::profile::ChipProfile;
use std::path::PathBuf;

/// Which device to probe.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeDevice {
    /// The simulated ANE of a built-in chip.
    AneSim,
    /// This Mac's Neural Engine.
    Ane,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The device to probe.
    #[arg(long, value_enum)]
    device: ProbeDevice,
    /// Chip m1..m5: the simulated chip (ane-sim, default m4) or the reference profile (ane, default:
    /// detected from the CPU).
    #[arg(long)]
    chip: Option<String>,
    /// Where to write the probed profile (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Skip the compile-budget count (it uses up the process's compiles) and the SRAM spill sweep.
    #[arg(long)]
    quick: bool,
    /// Timed evaluations per measurement, median taken (default: 1 on ane-sim, 5 on ane).
    #[arg(long)]
    repeats: Option<usize>,
}

fn builtin(chip: &str) -> Result<ChipProfile> {
    ChipProfile::builtin(chip).ok_or_else(|| anyhow!("unknown chip {chip:?} (expected one of m1, m2, m3, m4, m5)"))
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let options = ProbeOptions {
        quick: args.quick,
        repeats: args.repeats.unwrap_or(match args.device {
            ProbeDevice::AneSim => 1,
            ProbeDevice::Ane => 5,
        }),
        ..ProbeOptions::default()
    };
    if options.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    let device = open(&args, &options)?;
    if !args.quick {
        println!(
            "note: the last experiment compiles until {} refuses (C06); on a real ANE that uses up this \
             process's compile budget",
            device.name()
        );
    }
    let report = run_probe(device.as_ref(), &options).with_context(|| format!("probing {}", device.name()))?;
    print!("{}", report.table());
    write_profile(&report.profile, &args.out)?;
    println!(
        "wrote {} ({} of {} fields probed, {} compiles)",
        args.out.display(),
        report.probed_fields().len(),
        report.profile.sources.len(),
        report.compiles
    );
    Ok(())
}

/// The device `args` names.
fn open(args: &ProbeArgs, options: &ProbeOptions) -> Result<Box<dyn AneDevice>> {
    match args.device {
        ProbeDevice::AneSim => {
            let profile = builtin(args.chip.as_deref().unwrap_or("m4"))?;
            Ok(Box::new(SimulatedAne::new(profile)))
        }
        ProbeDevice::Ane => open_real(args.chip.as_deref(), options),
    }
}

#[cfg(target_vendor = "apple")]
fn open_real(chip: Option<&str>, options: &ProbeOptions) -> Result<Box<dyn AneDevice>> {
    use orion_ane::device::macos::{host_info, RealAne};
    let chip = match chip {
        Some(chip) => chip.to_string(),
        None => host_info()
            .chip()
            .map(|c| c.to_string())
            .context("this Mac's chip is not a known M-series chip; name the reference with --chip")?,
    };
    let mut profile = builtin(&chip)?;
    // The probe counts compiles until the OS refuses; the device's own guard must not stop it first.
    profile.limits.compile_budget = options.max_budget_compiles;
    let device = RealAne::open(profile).context("opening the ANE")?;
    Ok(Box::new(device))
}

#[cfg(not(target_vendor = "apple"))]
fn open_real(_chip: Option<&str>, _options: &ProbeOptions) -> Result<Box<dyn AneDevice>> {
    anyhow::bail!(
        "no ANE on this machine ({} {}): probe the simulator with --device ane-sim",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
