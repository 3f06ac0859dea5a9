//! The `orion` command line: parses arguments and dispatches to one module per command group.
//!
//! Library crates return typed errors; this binary turns them into messages and a non-zero exit.

mod allocator;
mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "orion",
    version,
    about = "Train and run small transformers on Apple's Neural Engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with text IR: optimise it or differentiate it.
    #[command(subcommand)]
    Ir(commands::ir::IrCommand),
    #[command(flatten)]
    Ane(commands::ane::AneCommand),
    /// Report the platform, chip, OS version and which devices (cpu, ane-sim, ane) are usable.
    Doctor(commands::device::DoctorArgs),
    /// Measure the chip behind a device (each catalogue rule an experiment) and write its profile JSON.
    Probe(commands::probe::ProbeArgs),
    /// Generate text with a GPT-2 or Llama model (safetensors or llama2.c weights).
    Generate(commands::generate::GenerateArgs),
    /// Write every position's logits for a token sequence to a .npy file.
    Logits(commands::generate::LogitsArgs),
    /// Train a model (built-in story corpus by default) and export it.
    Train(commands::train::TrainArgs),
    /// Measure kernels, inference, training or compile time; compare with a saved baseline.
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let tuning = allocator::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ir(cmd) => commands::ir::run(cmd),
        Command::Ane(cmd) => commands::ane::run(cmd),
        Command::Doctor(args) => commands::device::run_doctor(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Generate(args) => commands::generate::run_generate(args),
        Command::Logits(args) => commands::generate::run_logits(args),
        Command::Train(args) => commands::train::run_train(args),
        Command::Bench(args) => commands::bench::run_bench(args, &tuning),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already holds
/// (error types that print their source themselves would otherwise repeat it).
fn error_message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let repeated = anyhow::Error::new(io)
            .context("ckpt: no such file")
            .context("cannot resume");
        assert_eq!(error_message(&repeated), "cannot resume: ckpt: no such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let distinct = anyhow::Error::new(io).context("cannot read ckpt");
        assert_eq!(error_message(&distinct), "cannot read ckpt: no such file");
    }
}
