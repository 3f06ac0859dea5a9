//! The result model of a benchmark run: what was measured (the configuration and the machine) and
//! the figures, row by row; its JSON form, written atomically and read back with clear errors.
//!
//! Invariants: every figure value is finite (a rate over a zero time is not recorded); a figure is
//! identified by its row name and figure name, unique within a run; `better` says which direction
//! is an improvement, and only `Lower`/`Higher` figures are compared against a baseline (`Info`
//! figures — counts, bytes, estimates — are shown, never gated).

use crate::error::{BenchError, Result};
use orion_core::cpu::ProductPrecision;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The JSON format tag of a saved run.
pub const FORMAT: &str = "orion-bench/1";

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Each program type of a model: time per evaluation, GFLOP/s, bytes moved.
    Kernels,
    /// Prefill at several lengths, decode tokens/s, time to first token.
    Inference,
    /// The measured per-phase breakdown of training steps.
    Training,
    /// Lowering and emitting every program of a training step for the ANE.
    Compile,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Kernels => "kernels",
            Suite::Inference => "inference",
            Suite::Training => "training",
            Suite::Compile => "compile",
        }
    }
}

/// Where the model's programs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    Cpu,
    /// The simulated ANE: layer programs are interpreted in fp16 and timed by the chip's cost model too.
    AneSim,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::AneSim => "ane-sim",
        }
    }
}

/// Storage of constant matmul weights on the CPU backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsChoice {
    F32,
    F16,
}

impl WeightsChoice {
    pub fn name(self) -> &'static str {
        match self {
            WeightsChoice::F32 => "f32",
            WeightsChoice::F16 => "f16",
        }
    }
}

/// The arithmetic of the CPU backend's large matrix products (and the training head's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductsChoice {
    /// f32 operands and multiply-adds.
    #[default]
    F32,
    /// Both operands rounded to bfloat16, products summed in f32 (where the CPU has AVX512_BF16;
    /// elsewhere computed as f32).
    Bf16,
}

impl ProductsChoice {
    pub fn name(self) -> &'static str {
        self.precision().name()
    }

    /// The CPU backend's precision.
    pub fn precision(self) -> ProductPrecision {
        match self {
            ProductsChoice::F32 => ProductPrecision::F32,
            ProductsChoice::Bf16 => ProductPrecision::Bf16,
        }
    }
}

/// How training layer programs get their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Weights as program inputs: one compiled pair serves every layer and step.
    Dynamic,
    /// Weights baked per layer, recompiled after every update.
    Recompile,
    /// Weights baked per layer, weight files overwritten and reloaded after every update (falls back
    /// to `recompile` when the check against the CPU fails).
    Patch,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dynamic => "dynamic",
            Strategy::Recompile => "recompile",
            Strategy::Patch => "patch",
        }
    }
}

/// Which direction of a figure is an improvement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// A time: lower is better.
    Lower,
    /// A rate: higher is better.
    Higher,
    /// Shown, not compared (counts, sizes, estimates).
    Info,
}

/// One measured or counted number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Column name in the table (`ms`, `tok/s`, `GFLOP/s`, …).
    pub name: String,
    pub value: f64,
    /// Unit for messages (`ms`, `tok/s`, …).
    pub unit: String,
    pub better: Better,
}

/// One line of a suite's table: a program, a phase or a scenario, and its figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    /// Where it ran (`cpu`, `ane-sim m4`, `host`).
    pub runs_on: String,
    pub figures: Vec<Figure>,
}

impl Row {
    pub fn new(name: impl Into<String>, runs_on: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            runs_on: runs_on.into(),
            figures: Vec::new(),
        }
    }

    /// Adds a figure; a non-finite value (a rate over zero time) is left out.
    pub fn with(mut self, name: &str, value: f64, unit: &str, better: Better) -> Row {
        if value.is_finite() {
            self.figures.push(Figure {
                name: name.to_string(),
                value,
                unit: unit.to_string(),
                better,
            });
        }
        self
    }

    /// The figure called `name`.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// What a run measured: compared field by field before figures are compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub suite: Suite,
    /// Built-in name, config file or weight file name.
    pub model: String,
    pub device: Device,
    /// The chip profile of `ane-sim` runs and of `compile`.
    pub chip: Option<String>,
    pub weights: WeightsChoice,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Training only.
    pub strategy: Option<Strategy>,
    /// Timed repetitions per figure (the median is reported).
    pub iterations: usize,
    pub quick: bool,
    /// CPU decode weights on transparent huge pages (`--huge-pages`); absent in older files.
    #[serde(default)]
    pub huge_pages: bool,
    /// The CPU's matrix products (`--products`): `"f32"` or `"bf16"`; absent in older files (f32).
    #[serde(default)]
    pub products: ProductsChoice,
}

/// The machine a run was measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name (from `/proc/cpuinfo` where there is one).
    pub cpu: String,
    /// Hardware threads available to this process.
    pub threads: usize,
    pub os: String,
    pub arch: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        Machine {
            cpu,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// A complete run: configuration, machine, the figures and notes on what bounds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// [`FORMAT`].
    pub format: String,
    /// Seconds since the Unix epoch when the run finished.
    pub unix_time: u64,
    pub config: RunConfig,
    pub machine: Machine,
    /// One line about the model (shape, parameters).
    pub model_summary: String,
    pub rows: Vec<Row>,
    /// Remarks printed under the table (what a figure includes, what bounds it).
    pub notes: Vec<String>,
}

impl BenchRun {
    /// A run of `config` measured now on this machine.
    pub fn new(config: RunConfig, model_summary: String, rows: Vec<Row>, notes: Vec<String>) -> BenchRun {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        BenchRun {
            format: FORMAT.to_string(),
            unix_time,
            config,
            machine: Machine::detect(),
            model_summary,
            rows,
            notes,
        }
    }

    /// The row called `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Usage(format!("cannot encode the run as JSON: {e}")))
    }

    /// Parses a saved run; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<BenchRun> {
        let fail = |message: String| BenchError::Format {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(fail(format!("format {other:?}, expected {FORMAT:?}"))),
            None => {
                return Err(fail(format!(
                    "no \"format\" field: not a saved `orion bench` run ({FORMAT})"
                )))
            }
        }
        serde_json::from_value(value).map_err(|e| fail(format!("not a benchmark run: {e}")))
    }

    /// Writes the run as JSON to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<()> {
        orion_models::weights::export::write_atomically(path, self.to_json()?.as_bytes())?;
        Ok(())
    }

    /// Reads a run saved by [`BenchRun::save`].
    pub fn load(path: &Path) -> Result<BenchRun> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        BenchRun::from_json(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_written_in_lowercase_and_f32_when_absent() {
        let config = RunConfig {
            suite: Suite::Training,
            model: "stories15M".into(),
            device: Device::Cpu,
            chip: None,
            weights: WeightsChoice::F32,
            batch_size: 8,
            seq_len: 256,
            strategy: Some(Strategy::Dynamic),
            iterations: 3,
            quick: false,
            huge_pages: false,
            products: ProductsChoice::Bf16,
        };
        let mut json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["products"], "bf16");
        // A run saved before the field existed.
        json.as_object_mut().unwrap().remove("products");
        let old: RunConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old.products, ProductsChoice::F32);
        json["products"] = "fp8".into();
        assert!(serde_json::from_value::<RunConfig>(json).is_err());
    }
}
