//! `orion generate` and `orion logits`: run a GPT-2 or Llama model from the files people already have.
//!
//! - `generate --weights FILE [--config FILE] [--tokenizer FILE] --prompt TEXT [--max-tokens N]
//!   [--temperature T] [--top-k K] [--top-p P] [--seed S] [--device auto|cpu|ane-sim|ane]`: prefill,
//!   then KV-cache decoding; tokens stream to stdout as they are chosen; timing goes to stderr at the end.
//! - `logits --weights FILE [--config FILE] --tokens 1,2,3 --out logits.npy`: every position's logits
//!   `[T, V]` as f32, for checking against another implementation; written atomically.
//!
//! Weights are Hugging Face safetensors (a file or a directory with `config.json`) or a llama2.c `.bin`.
//! The tokenizer defaults to GPT-2's for GPT-2 models and to a `tokenizer.model`/`.json`/`.bin` next to
//! the weights for Llama models. Devices: `cpu` runs the whole-model programs on the CPU backend;
//! `ane-sim` and `ane` run one fp16 program per layer on the (simulated) ANE with prompt buckets and
//! the chip's minimum decode surface, the embedding and classifier on the CPU
//! (`orion_models::generate::layered`); `auto` takes the real ANE when present, else the CPU.

use super::device::ane_device;
use super::npy::{self, NpyDType};
use super::products::ProductsArg;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use orion_ane::backend::AneBackend;
use orion_ane::device::AneDevice;
use orion_ane::lower::LowerOptions;
use orion_core::cpu::{CpuBackend, CpuOptions};
use orion_models::generate::layered::{LayeredGenerator, LayeredOptions};
use orion_models::generate::{forward_logits, GenerateOptions, Generation, Generator, SamplingOptions};
use orion_models::tokenizer::{gpt2, load_tokenizer, Tokenizer};
use orion_models::weights::export::write_atomically;
use orion_models::{Family, Model};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The ANE where one is present and supported for this job, else the CPU.
    Auto,
    Cpu,
    AneSim,
    Ane,
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Weight file: safetensors (file or directory) or llama2.c `.bin`.
    #[arg(long)]
    weights: PathBuf,
    /// Model config (Hugging Face `config.json`); default: from the weight file or beside it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokenizer file (`tokenizer.model`, `tokenizer.json` or llama2.c `tokenizer.bin`).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// New tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probability reaches P (1 = all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// CPU (Linux): put the weights each decode step streams on transparent huge pages; faster
    /// decode, about a second more before the first token for a 110M model.
    #[arg(long)]
    huge_pages: bool,
    /// CPU: the arithmetic of the prompt's products (prefill); `bf16` rounds their operands to
    /// bfloat16 (AVX512_BF16: about twice the multiply-add rate). Decode's products stay f32.
    #[arg(long, value_enum, default_value_t = ProductsArg::F32)]
    products: ProductsArg,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// Output `.npy` file (f32, shape [T, V]).
    #[arg(long)]
    out: PathBuf,
}

/// Loads the model named by `args`, with a message that names the file on failure.
fn load_model(args: &ModelArgs) -> Result<Model> {
    Model::load(&args.weights, args.config.as_deref())
        .with_context(|| format!("cannot load a model from {}", args.weights.display()))
}

/// Runs generation on `device` (the CPU when `None`, with `cpu`'s options); returns the result
/// and where it ran.
fn generate_on(
    device: Option<Arc<dyn AneDevice>>,
    cpu: CpuBackend,
    model: &Model,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Generation, String)> {
    let Some(device) = device else {
        let mut generator = Generator::new(model, &cpu)?;
        return Ok((generator.generate(prompt, options, on_token)?, "the CPU".to_string()));
    };
    let label = format!(
        "{} (one program per layer; embedding and classifier on the CPU)",
        device.name()
    );
    let alignment = device.profile().limits.last_axis_alignment_bytes;
    let backend = AneBackend::new(device, LowerOptions::default());
    let capacity = (prompt.len() + options.max_new_tokens).min(model.config().max_seq_len);
    let layered = LayeredOptions::for_alignment(capacity, alignment);
    let mut generator = LayeredGenerator::new(model, &cpu, &backend, layered)?;
    Ok((generator.generate(prompt, options, on_token)?, label))
}

fn choose_tokenizer(model: &Model, args: &GenerateArgs) -> Result<Box<dyn Tokenizer>> {
    if let Some(path) = &args.tokenizer {
        return load_tokenizer(path).with_context(|| format!("cannot load tokenizer {}", path.display()));
    }
    match model.config().family {
        Family::Gpt2 => Ok(gpt2()?),
        Family::Llama => {
            let dir = if args.model.weights.is_dir() {
                args.model.weights.clone()
            } else {
                args.model.weights.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            load_tokenizer(&dir).map_err(|e| {
                anyhow!("no tokenizer given and none usable beside the weights ({e}); pass --tokenizer FILE")
            })
        }
    }
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let device = ane_device(args.device)?;
    let model = load_model(&args.model)?;
    let tokenizer = choose_tokenizer(&model, &args)?;
    if tokenizer.vocab_size() > model.config().vocab_size {
        bail!(
            "the tokenizer has {} tokens but the model only {}: they do not belong together",
            tokenizer.vocab_size(),
            model.config().vocab_size
        );
    }
    let mut prompt: Vec<u32> = tokenizer.bos_id().into_iter().collect();
    prompt.extend(tokenizer.encode(&args.prompt));
    let options = GenerateOptions {
        max_new_tokens: args.max_tokens,
        sampling: SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        seed: args.seed,
        stop_tokens: tokenizer.eos_id().into_iter().collect(),
    };
    let cpu = CpuBackend::new(CpuOptions {
        huge_pages: args.huge_pages,
        products: args.products.precision(),
        ..CpuOptions::default()
    });
    let mut stream = Utf8Stream::default();
    print!("{}", args.prompt);
    let mut write_error = None;
    let (generation, device) = generate_on(device, cpu, &model, &prompt, &options, &mut |token| {
        let bytes = tokenizer.token_bytes(token).unwrap_or_default();
        match stream.push(&bytes) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write to stdout");
    }
    stream.finish()?;
    println!();
    let t = generation.timing;
    eprintln!(
        "{} prompt tokens, {} generated ({:?}); prefill {:.1} ms, decode {:.1} tok/s on {device}",
        t.prompt_tokens,
        generation.tokens.len(),
        generation.stop,
        t.prefill_ms,
        t.decode_tokens_per_s()
    );
    Ok(())
}

pub fn run_logits(args: LogitsArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let vocab = model.config().vocab_size;
    if let Some(bad) = args.tokens.iter().find(|&&t| t as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    let logits = forward_logits(&model, &CpuBackend::default(), &args.tokens)?;
    let values = logits
        .as_f32()
        .ok_or_else(|| anyhow!("the model produced non-float logits"))?;
    let bytes = npy::write(NpyDType::F32, logits.shape().dims(), values);
    write_atomically(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote logits {} to {}", logits.ty(), args.out.display());
    Ok(())
}

/// Writes generated bytes to stdout as soon as they form complete UTF-8 characters (a byte-level
/// token may end in the middle of one).
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_some() => self.pending.len(), // invalid, not just incomplete
            Err(e) => e.valid_up_to(),
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        std::io::stdout().lock().write_all(rest.as_bytes())
    }
}
