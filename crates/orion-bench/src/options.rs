//! What the caller asks for ([`BenchOptions`], every size optional) and the resolved [`Plan`] a suite
//! runs: defaults filled per suite and device, the model configuration found, sizes checked.
//!
//! Defaults (model, batch, sequence length, iterations, iterations with `quick`):
//!
//! | suite / device | model | batch | seq | iterations | quick |
//! |---|---|---|---|---|---|
//! | kernels, cpu | stories15M | 8 | 256 | 10 | 3 |
//! | kernels, ane-sim | stories260K | 2 | 32 | 3 | 1 |
//! | inference, cpu | gpt2 | 1 | 256 (cache capacity) | 5 | 2 |
//! | inference, ane-sim | stories260K | 1 | 64 | 2 | 1 |
//! | training, cpu | stories15M | 8 | 256 | 3 | 2 |
//! | training, ane-sim | stories260K | 2 | 32 | 2 | 1 |
//! | compile | stories110M | 1 | 256 | 3 | 1 |
//!
//! The simulated ANE interprets its programs, so its defaults are small. A sequence length is capped
//! by nothing: one beyond the model's context is an error, not silently shortened.
//!
//! Invariants of a `Plan`: `seq_len` is in `1..=max_seq_len`, `batch_size` and `iterations` are positive.

use crate::error::{BenchError, Result};
use crate::result::{Device, ProductsChoice, RunConfig, Strategy, Suite, WeightsChoice};
use orion_models::config::ModelConfig;
use orion_models::Model;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A benchmark request as the command line gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    pub suite: Suite,
    pub device: Device,
    /// Chip profile for `ane-sim` and `compile` ("m1".."m5").
    pub chip: String,
    /// A built-in name, a `config.json`, or a weight file (safetensors or llama2.c `.bin`); `None`:
    /// the suite's default.
    pub model: Option<String>,
    pub weights: WeightsChoice,
    pub batch_size: Option<usize>,
    pub seq_len: Option<usize>,
    pub iterations: Option<usize>,
    pub quick: bool,
    /// CPU: back the weights decode streams with transparent huge pages (Linux).
    pub huge_pages: bool,
    /// CPU: the arithmetic of large matrix products (programs and the training head's classifier).
    pub products: ProductsChoice,
    /// Training: how layer programs get their weights.
    pub strategy: Strategy,
    /// Sleep inside every timed region (testing the regression gate only).
    pub inject_delay: Duration,
}

impl BenchOptions {
    /// The suite's defaults on the CPU, chip m4.
    pub fn new(suite: Suite) -> BenchOptions {
        BenchOptions {
            suite,
            device: Device::Cpu,
            chip: "m4".to_string(),
            model: None,
            weights: WeightsChoice::F32,
            batch_size: None,
            seq_len: None,
            iterations: None,
            quick: false,
            huge_pages: false,
            products: ProductsChoice::F32,
            strategy: Strategy::Dynamic,
            inject_delay: Duration::ZERO,
        }
    }
}

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// Random weights (seed 1) for a configuration.
    Random,
    /// Weights read from this file.
    File(PathBuf),
}

/// A resolved request.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub config: RunConfig,
    pub model_config: ModelConfig,
    pub source: ModelSource,
    pub delay: Duration,
}

/// `(model, batch, seq, iterations, quick iterations)` of a suite on a device.
fn defaults(suite: Suite, device: Device) -> (&'static str, usize, usize, usize, usize) {
    match (suite, device) {
        (Suite::Kernels, Device::Cpu) => ("stories15M", 8, 256, 10, 3),
        (Suite::Kernels, Device::AneSim) => ("stories260K", 2, 32, 3, 1),
        (Suite::Inference, Device::Cpu) => ("gpt2", 1, 256, 5, 2),
        (Suite::Inference, Device::AneSim) => ("stories260K", 1, 64, 2, 1),
        (Suite::Training, Device::Cpu) => ("stories15M", 8, 256, 3, 2),
        (Suite::Training, Device::AneSim) => ("stories260K", 2, 32, 2, 1),
        (Suite::Compile, _) => ("stories110M", 1, 256, 3, 1),
    }
}

/// The configuration of `model` (built-in name, config file or weight file) and where weights come from.
fn find_model(model: &str) -> Result<(ModelConfig, ModelSource, String)> {
    let path = Path::new(model);
    let file_name = || {
        path.file_name()
            .map_or_else(|| model.to_string(), |n| n.to_string_lossy().into_owned())
    };
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "json") {
            return Ok((ModelConfig::from_file(path)?, ModelSource::Random, file_name()));
        }
        // Reads the header/config only as far as loading does; the suite loads the weights again.
        let loaded = Model::load(path, None)?;
        return Ok((
            loaded.config().clone(),
            ModelSource::File(path.to_path_buf()),
            file_name(),
        ));
    }
    if path.is_dir() {
        let loaded = Model::load(path, None)?;
        return Ok((
            loaded.config().clone(),
            ModelSource::File(path.to_path_buf()),
            file_name(),
        ));
    }
    Ok((ModelConfig::builtin(model)?, ModelSource::Random, model.to_string()))
}

fn positive(value: usize, what: &str) -> Result<usize> {
    if value == 0 {
        return Err(BenchError::Usage(format!("{what} must be at least 1")));
    }
    Ok(value)
}

impl Plan {
    /// Fills defaults and checks the request.
    pub fn resolve(options: &BenchOptions) -> Result<Plan> {
        let (model, batch, seq, iterations, quick_iterations) = defaults(options.suite, options.device);
        if orion_ane::profile::ChipId::parse(&options.chip).is_none() {
            return Err(BenchError::Usage(format!(
                "unknown chip {:?}; known: m1, m2, m3, m4, m5",
                options.chip
            )));
        }
        let name = options.model.clone().unwrap_or_else(|| model.to_string());
        let (model_config, source, model_name) = find_model(&name)?;
        if matches!(source, ModelSource::File(_)) && matches!(options.suite, Suite::Training | Suite::Compile) {
            return Err(BenchError::Usage(format!(
                "the {} suite uses random weights of a shape; pass a built-in name or a config.json, not a weight file",
                options.suite.name()
            )));
        }
        let default_seq = seq.min(model_config.max_seq_len);
        let seq_len = positive(options.seq_len.unwrap_or(default_seq), "--seq-len")?;
        if seq_len > model_config.max_seq_len {
            return Err(BenchError::Usage(format!(
                "--seq-len {seq_len} is longer than {model_name}'s context of {}",
                model_config.max_seq_len
            )));
        }
        let batch_size = match options.suite {
            Suite::Inference | Suite::Compile => 1,
            Suite::Kernels | Suite::Training => positive(options.batch_size.unwrap_or(batch), "--batch-size")?,
        };
        let default_iterations = if options.quick { quick_iterations } else { iterations };
        let iterations = positive(options.iterations.unwrap_or(default_iterations), "--iterations")?;
        let uses_chip = options.device == Device::AneSim || options.suite == Suite::Compile;
        let config = RunConfig {
            suite: options.suite,
            model: model_name,
            device: options.device,
            chip: uses_chip.then(|| options.chip.to_ascii_lowercase()),
            weights: options.weights,
            batch_size,
            seq_len,
            strategy: (options.suite == Suite::Training).then_some(options.strategy),
            iterations,
            quick: options.quick,
            huge_pages: options.huge_pages,
            products: options.products,
        };
        Ok(Plan {
            config,
            model_config,
            source,
            delay: options.inject_delay,
        })
    }

    /// The model: random weights (seed 1) or the file's.
    pub fn model(&self) -> Result<Model> {
        Ok(match &self.source {
            ModelSource::Random => Model::random(self.model_config.clone(), 1)?,
            ModelSource::File(path) => Model::load(path, None)?,
        })
    }

    /// One line about the model's shape.
    pub fn model_summary(&self) -> String {
        let c = &self.model_config;
        let params: usize = orion_models::model::weight_specs(c)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        format!(
            "{} dim {}, {} layers, {} heads / {} kv, hidden {}, vocab {}, {} parameters{}",
            c.family.name(),
            c.dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.hidden_dim,
            c.vocab_size,
            count(params),
            match &self.source {
                ModelSource::Random => ", random weights",
                ModelSource::File(_) => "",
            }
        )
    }

    /// The chip profile named by the configuration (m4 when none is).
    pub fn chip(&self) -> &str {
        self.config.chip.as_deref().unwrap_or("m4")
    }
}

/// `1234567` as `1.2M`, `12345` as `12.3K`.
fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
