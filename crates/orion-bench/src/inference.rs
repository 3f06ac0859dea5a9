//! The inference suite: what a user of `orion generate` waits for, measured through the same
//! generators: [`Generator`] (whole-model programs) on the CPU, [`LayeredGenerator`] (one fp16 program
//! per layer, embedding and classifier on the CPU, weights baked) on the simulated ANE.
//!
//! - prefill at 16, 64 and 128 tokens (those that fit the cache): the generator's own prefill timing
//!   (prompt forward and choosing the first token), after one warm-up call per length compiled it;
//! - time to first token: the whole `generate` call for a 16-token prompt up to the first token, warm
//!   (programs compiled; gated) and cold (from creating the generator, which compiles the decode
//!   programs, including compiling the prefill programs; shown, not gated — it is measured once);
//! - decode: tokens per second over the decode steps of a greedy generation after that prompt; on the
//!   CPU each step runs the KV-cache program of the cache's current size (the positions stored
//!   rounded up to a multiple of 64, at most the capacity `seq_len`), so a step's
//!   attention cost follows its position.
//!
//! On `ane-sim` the layer programs' cost-model estimates are summed over each call (`est` figures);
//! the measured times there are the simulator's. Prompts are fixed pseudo-random ids; sampling is
//! greedy; weights are random unless a file is given.

use crate::error::Result;
use crate::kernels::streamed_weight_bytes;
use crate::measure::{ane_backend, cpu_backend, median, ms_since, time_iterations, Instrumented};
use crate::options::Plan;
use crate::result::{BenchRun, Better, Device, Row};
use orion_ane::lower::WeightMode as AneWeightMode;
use orion_core::flops::GraphCost;
use orion_core::DType;
use orion_models::generate::kv_cache::cache_rows_for;
use orion_models::generate::layered::{LayeredGenerator, LayeredOptions};
use orion_models::generate::{GenerateOptions, Generation, Generator};
use orion_models::Model;
use std::time::{Duration, Instant};

/// Prompt lengths of the prefill rows (those longer than the cache are skipped).
pub const PREFILL_LENGTHS: [usize; 3] = [16, 64, 128];
/// Prompt length of the time-to-first-token and decode rows (at most half the cache).
pub const SHORT_PROMPT: usize = 16;

/// A fixed prompt of `n` ids below `vocab`.
fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab.max(1)) as u32).collect()
}

/// Either generator.
enum Gen<'m> {
    Whole(Generator<'m>),
    Layered(LayeredGenerator<'m>),
}

/// The generator under test and the backends it compiled on (`device` holds the layer programs on
/// the simulated ANE; on the CPU it is the same backend as `host`).
struct Bench<'m> {
    gen: Gen<'m>,
    host: &'m Instrumented,
    device: &'m Instrumented,
}

impl Bench<'_> {
    /// Greedy generation of `new_tokens` after `tokens`; returns it and the cost-model ms it took.
    fn generate(&mut self, tokens: &[u32], new_tokens: usize) -> Result<(Generation, f64)> {
        let options = GenerateOptions {
            max_new_tokens: new_tokens,
            ..GenerateOptions::default()
        };
        let before = self.device.estimated_ms();
        let g = match &mut self.gen {
            Gen::Whole(g) => g.generate(tokens, &options, &mut |_| true)?,
            Gen::Layered(g) => g.generate(tokens, &options, &mut |_| true)?,
        };
        Ok((g, self.device.estimated_ms() - before))
    }

    /// FLOPs of the whole-model program whose name contains `kind` and ends with `_{len}` (CPU only).
    fn program_flops(&self, kind: &str, len: Option<usize>) -> f64 {
        self.host
            .programs()
            .iter()
            .find(|p| p.name().contains(kind) && len.is_none_or(|l| p.name().ends_with(&format!("_{l}"))))
            .map_or(f64::NAN, |p| GraphCost::of(&p.graph).flops)
    }
}

/// Prefill rows: median of the generator's prefill time per length.
fn prefill_rows(bench: &mut Bench, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let vocab = plan.model_config.vocab_size;
    for len in PREFILL_LENGTHS.into_iter().filter(|&l| l <= plan.config.seq_len) {
        let tokens = prompt(len, vocab);
        bench.generate(&tokens, 1)?;
        let (mut samples, mut estimates) = (Vec::new(), Vec::new());
        time_iterations(0, plan.config.iterations, Duration::ZERO, || {
            let (g, est) = bench.generate(&tokens, 1)?;
            samples.push(g.timing.prefill_ms);
            estimates.push(est);
            Ok(())
        })?;
        let ms = median(&samples);
        let mut row = Row::new(format!("prefill {len}"), &bench.device.label)
            .with("ms", ms, "ms", Better::Lower)
            .with("prompt tok/s", len as f64 / ms * 1e3, "tok/s", Better::Info);
        row = match plan.config.device {
            Device::Cpu => {
                let flops = bench.program_flops("_prefill_", Some(len));
                row.with("GFLOP/s", flops / (ms * 1e6), "GFLOP/s", Better::Info)
            }
            Device::AneSim => row.with("est ms", median(&estimates), "ms", Better::Info),
        };
        rows.push(row);
    }
    Ok(())
}

/// Tokens a decode row generates.
fn decode_tokens(plan: &Plan, prompt_len: usize) -> usize {
    let wanted = if plan.config.quick { 8 } else { 32 };
    wanted.min(plan.config.seq_len.saturating_sub(prompt_len)).max(2)
}

/// Cache rows of the decode program the decode row's last step runs.
fn decode_rows(plan: &Plan, prompt_len: usize) -> usize {
    // Steps run at positions prompt_len..prompt_len + new - 1; the last reserves one row more.
    cache_rows_for(prompt_len + decode_tokens(plan, prompt_len) - 1, plan.config.seq_len)
}

/// The decode row: median tokens/s, and the weight streaming and FLOP rates that implies.
fn decode_row(bench: &mut Bench, plan: &Plan, prompt_len: usize) -> Result<Row> {
    let new_tokens = decode_tokens(plan, prompt_len);
    let tokens = prompt(prompt_len, plan.model_config.vocab_size);
    let (_, prefill_estimate) = bench.generate(&tokens, 1)?;
    bench.generate(&tokens, new_tokens)?;
    let (mut rates, mut estimates) = (Vec::new(), Vec::new());
    time_iterations(0, plan.config.iterations, Duration::ZERO, || {
        let (g, est) = bench.generate(&tokens, new_tokens)?;
        rates.push(g.timing.decode_tokens_per_s());
        estimates.push((est - prefill_estimate) / g.timing.decode_steps.max(1) as f64);
        Ok(())
    })?;
    // No decode step fits a context of one position: no rate rather than a rate of 0.
    let rate = Some(median(&rates)).filter(|r| *r > 0.0).unwrap_or(f64::NAN);
    let row = Row::new("decode", &bench.device.label)
        .with("tok/s", rate, "tok/s", Better::Higher)
        .with("ms/token", 1e3 / rate, "ms", Better::Info);
    if plan.config.device == Device::AneSim {
        let est = median(&estimates);
        return Ok(row.with("est ms/token", est, "ms", Better::Info).with(
            "est tok/s",
            1e3 / est,
            "tok/s",
            Better::Info,
        ));
    }
    let decode = bench
        .host
        .programs()
        .into_iter()
        .find(|p| p.name().contains("_decode_"));
    let weight_bytes = decode.map_or(f64::NAN, |p| streamed_weight_bytes(&p.graph, plan.config.weights));
    let flops = bench.program_flops("_decode_", Some(decode_rows(plan, prompt_len)));
    Ok(row.with("GFLOP/s", flops * rate / 1e9, "GFLOP/s", Better::Info).with(
        "weights GB/s",
        weight_bytes * rate / 1e9,
        "GB/s",
        Better::Info,
    ))
}

/// The generator of the plan's device (compiling its first decode program on the CPU, every
/// per-layer program on a device).
fn generator<'m>(plan: &Plan, model: &'m Model, host: &'m Instrumented, device: &'m Instrumented) -> Result<Gen<'m>> {
    let capacity = plan.config.seq_len;
    Ok(match plan.config.device {
        Device::Cpu => Gen::Whole(Generator::with_capacity(model, host, capacity, DType::F32)?),
        Device::AneSim => {
            let alignment = device.profile().map_or(64, |p| p.limits.last_axis_alignment_bytes);
            let options = LayeredOptions::for_alignment(capacity, alignment);
            Gen::Layered(LayeredGenerator::new(model, host, device, options)?)
        }
    })
}

/// Runs the inference suite.
pub fn run_inference(plan: &Plan) -> Result<BenchRun> {
    let model = plan.model()?;
    let host = cpu_backend(
        plan.config.weights,
        plan.config.huge_pages,
        plan.config.products,
        plan.delay,
    );
    let sim = match plan.config.device {
        Device::AneSim => Some(ane_backend(plan.chip(), AneWeightMode::Baked, plan.delay)?),
        Device::Cpu => None,
    };
    let device = sim.as_ref().unwrap_or(&host);
    let capacity = plan.config.seq_len;
    let short = SHORT_PROMPT.min(capacity / 2).max(1);
    let short_prompt = prompt(short, plan.model_config.vocab_size);

    let cold_start = Instant::now();
    let gen = generator(plan, &model, &host, device)?;
    let mut bench = Bench {
        gen,
        host: &host,
        device,
    };
    bench.generate(&short_prompt, 1)?;
    let cold_ms = ms_since(cold_start);

    let mut rows = Vec::new();
    prefill_rows(&mut bench, plan, &mut rows)?;
    let warm = time_iterations(1, plan.config.iterations, Duration::ZERO, || {
        bench.generate(&short_prompt, 1)?;
        Ok(())
    })?;
    rows.push(
        Row::new(format!("first token ({short}-token prompt)"), &device.label)
            .with("ms", median(&warm), "ms", Better::Lower)
            .with("cold ms", cold_ms, "ms", Better::Info),
    );
    rows.push(decode_row(&mut bench, plan, short)?);
    Ok(BenchRun::new(
        plan.config.clone(),
        plan.model_summary(),
        rows,
        notes(plan, short, device),
    ))
}

fn notes(plan: &Plan, short: usize, device: &Instrumented) -> Vec<String> {
    let capacity = plan.config.seq_len;
    let mut notes = vec![
        format!(
            "prefill ms: the prompt's forward pass and choosing the first token, median of {} after a warm-up \
             that compiled the length's programs",
            plan.config.iterations
        ),
        "first token: the generate() call up to the first token (warm); cold ms adds creating the generator \
         (compiling its first decode program) and compiling the prefill programs, measured once"
            .to_string(),
        format!(
            "decode: {} new tokens after a {short}-token prompt, greedy; tok/s = decode steps / their wall time \
             (program runs, cache update, sampling)",
            decode_tokens(plan, short)
        ),
    ];
    match plan.config.device {
        Device::Cpu => notes.push(format!(
            "cpu: whole-model programs, weights baked as {} constants; each decode step runs the program of the \
             cache's size (positions rounded up to a multiple of 64, at most {capacity} rows: {} for these steps); \
             weights GB/s = matmul weights streamed per token × tok/s",
            plan.config.weights.name(),
            decode_rows(plan, short)
        )),
        Device::AneSim => {
            let profile = device
                .profile()
                .map_or_else(String::new, |p| format!("{} ({})", p.id, p.name));
            notes.push(format!(
                "ane-sim: one fp16 program per layer with baked weights, embedding and classifier on the CPU; \
                 measured times are the simulator's (it interprets the MIL); est = cost model of {profile} summed \
                 over the layer program evaluations"
            ));
        }
    }
    notes
}
