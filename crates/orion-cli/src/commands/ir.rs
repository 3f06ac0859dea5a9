//! `orion ir opt` and `orion ir grad`: the compiler core's face for users.
//!
//! Both read text IR from a file (or a built-in example block), report parse errors as
//! `FILE:LINE:COLUMN: message`, and print IR in the text form on stdout; reports go to stdout after
//! the IR, each section introduced by a `#` comment line so the output stays parseable as IR text.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use orion_core::autodiff::{grad, Seed};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::testing::blocks::{gpt2_block, llama_block, BlockConfig};
use orion_core::text::{parse, print};
use orion_core::{CoreError, Graph};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum IrCommand {
    /// Run the pass pipeline and print the optimised IR, the memory report and pass timings.
    Opt(OptArgs),
    /// Print the backward graph of a program.
    Grad(GradArgs),
}

/// Where the IR comes from.
#[derive(Args, Debug)]
pub struct Source {
    /// Text IR file to read.
    #[arg(required_unless_present = "builtin")]
    file: Option<PathBuf>,
    /// Use a built-in example block instead of a file.
    #[arg(long, value_enum, conflicts_with = "file")]
    builtin: Option<BuiltinBlock>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum BuiltinBlock {
    Gpt2Block,
    LlamaBlock,
}

#[derive(Args, Debug)]
pub struct OptArgs {
    #[command(flatten)]
    source: Source,
    /// Also print the IR right after this pass.
    #[arg(long, value_name = "PASS")]
    print_after: Option<String>,
    /// Memory budget for the live-bytes analysis.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024 * 1024)]
    budget: u64,
}

#[derive(Args, Debug)]
pub struct GradArgs {
    #[command(flatten)]
    source: Source,
    /// Comma-separated input names to differentiate with respect to.
    #[arg(long, value_delimiter = ',', required = true)]
    wrt: Vec<String>,
    /// Name of a scalar output to use as the loss; without it, one cotangent input per output.
    #[arg(long)]
    loss: Option<String>,
}

pub fn run(cmd: IrCommand) -> Result<()> {
    match cmd {
        IrCommand::Opt(args) => run_opt(args),
        IrCommand::Grad(args) => run_grad(args),
    }
}

fn run_opt(args: OptArgs) -> Result<()> {
    let graph = load(&args.source)?;
    let options = PipelineOptions {
        verify: true,
        print_after: args.print_after,
        budget_bytes: args.budget,
        ..PipelineOptions::default()
    };
    let optimised = optimise(&graph, &options)?;
    for (pass, text) in &optimised.printed {
        println!("# IR after pass {pass}");
        print!("{text}");
    }
    println!("# optimised IR");
    print!("{}", print(&optimised.graph));
    println!("# memory");
    print_commented(&optimised.memory.to_string());
    println!("# I/O plan");
    print_commented(&optimised.io.to_string());
    println!("# pass timings");
    for (pass, time) in &optimised.timings {
        println!("#   {pass:<12} {:>9.3} ms", time.as_secs_f64() * 1e3);
    }
    Ok(())
}

fn run_grad(args: GradArgs) -> Result<()> {
    let graph = load(&args.source)?;
    let wrt: Vec<&str> = args.wrt.iter().map(String::as_str).collect();
    let seed = match args.loss {
        Some(name) => Seed::Loss(name),
        None => Seed::Cotangents,
    };
    let backward = grad(&graph, &wrt, seed)?;
    print!("{}", print(&backward));
    Ok(())
}

fn print_commented(report: &str) {
    for line in report.lines() {
        println!("#   {line}");
    }
}

fn load(source: &Source) -> Result<Graph> {
    match (&source.file, source.builtin) {
        (_, Some(block)) => {
            let cfg = BlockConfig::tiny();
            Ok(match block {
                BuiltinBlock::Gpt2Block => gpt2_block(&cfg)?,
                BuiltinBlock::LlamaBlock => llama_block(&cfg)?,
            })
        }
        (Some(path), None) => load_file(path),
        (None, None) => bail!("give an IR file or --builtin"),
    }
}

fn load_file(path: &Path) -> Result<Graph> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).map_err(|err| match err {
        CoreError::Parse { line, column, message } => {
            anyhow::anyhow!("{}:{line}:{column}: {message}", path.display())
        }
        other => anyhow::Error::new(other).context(format!("in {}", path.display())),
    })
}
