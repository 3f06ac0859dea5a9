//! Chip profiles: what one ANE generation accepts (limits, accepted ops, MIL dialect) and what it costs
//! (the simulator's cost model, ane.md §8).
//!
//! Invariants: a [`ChipProfile`] obtained from [`ChipProfile::builtin`] or [`ChipProfile::from_json`] has
//! passed [`ChipProfile::validate`] — its arch string matches its chip, every extent, alignment and budget
//! is positive (alignments are powers of two), every cost parameter is finite and in range, and every key
//! of `sources` names a real field. Built-in profiles additionally carry a source for every field
//! (catalogue id and ane.md section); where sources disagree (`[C]` items) they hold the conservative
//! setting, the one that still works if the pessimistic report is the true one.

mod builtin;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One Apple silicon generation; the profile covers its base, Pro, Max and Ultra variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChipId {
    M1,
    M2,
    M3,
    M4,
    M5,
}

impl ChipId {
    pub const ALL: [ChipId; 5] = [ChipId::M1, ChipId::M2, ChipId::M3, ChipId::M4, ChipId::M5];

    /// The lowercase id used in JSON and on the command line ("m1".."m5").
    pub fn as_str(self) -> &'static str {
        match self {
            ChipId::M1 => "m1",
            ChipId::M2 => "m2",
            ChipId::M3 => "m3",
            ChipId::M4 => "m4",
            ChipId::M5 => "m5",
        }
    }

    /// Parses "m1".."m5" (case-insensitive).
    pub fn parse(text: &str) -> Option<ChipId> {
        ChipId::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(text))
    }

    /// ANE arch strings reported for this generation: M(n) ↔ H(n+12) (ane.md §8); base M5 was reported as
    /// both h16 (maderix `m5result.md`) and h17 (ANEForge) [C], so both are accepted, h17 first.
    pub fn arch_ids(self) -> &'static [&'static str] {
        match self {
            ChipId::M1 => &["h13"],
            ChipId::M2 => &["h14"],
            ChipId::M3 => &["h15"],
            ChipId::M4 => &["h16"],
            ChipId::M5 => &["h17", "h16"],
        }
    }
}

impl std::fmt::Display for ChipId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In which order the device binds request surfaces to MIL inputs and outputs (catalogue C19, ane.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoBindingOrder {
    /// Ascending byte order of the MIL variable names.
    Alphabetical,
    /// Parameter declaration order / return tuple order.
    Declaration,
}

/// The MIL text dialect to emit (catalogue C15, ane.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilDialect {
    /// `program(1.3)`, `func main<ios18>`, shorthand scalar types.
    Ios18Program13,
    /// `program(1.0)`, `func main<ios16>`, verbose `tensor<T, []>` scalar types.
    Ios16Program10,
}

/// Ops and features the device is assumed to accept; `false` means "lower around it".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpSupport {
    /// `concat` compiles (C09).
    pub concat: bool,
    /// `gelu` compiles (C10); otherwise the tanh form is emitted.
    pub gelu: bool,
    /// `scaled_dot_product_attention` honours `attn_mask` (C11).
    pub sdpa_mask_honoured: bool,
    /// `conv` accepts `bias=` (C13).
    pub conv_bias: bool,
    /// fp32 surfaces with an in-program `cast` work (C16).
    pub fp32_io_cast: bool,
    /// A weight file may hold several records (C17).
    pub multi_record_blobs: bool,
    /// Matmul contraction extents are padded to a multiple of this (C23); 1 = no padding.
    pub matmul_inner_multiple: usize,
    /// `sin` / `cos` run natively (C31).
    pub sin_cos: bool,
    /// `layer_norm` may be emitted (C28).
    pub layer_norm: bool,
    /// Overwriting weight files and unload/load changes the output (C07).
    pub weights_reload_takes_effect: bool,
    /// Linear layers with baked weights are emitted as 1×1 `conv` rather than `matmul` (C41).
    pub baked_linear_as_conv: bool,
}

/// Numeric behaviours of the chip's fp16 datapath (ane.md §5 C35, C36); the simulator reproduces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numerics {
    /// Matmul/conv results beyond ±32,752 become ±inf (C35).
    pub matmul_overflow_to_inf: bool,
    /// A slice at a non-zero last-axis offset applies a ×16 gain internally, so |x| > 4,094 becomes ±inf (C36).
    pub width_offset_slice_gain: bool,
}

/// Hard limits and layout rules of one chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest spatial (last-axis) extent of a tensor (C26).
    pub max_spatial: usize,
    /// Largest contraction extent of a matmul / conv input-channel count (C26).
    pub max_contraction: usize,
    /// Largest channel extent (C26).
    pub max_channels: usize,
    /// Every I/O surface is allocated at least this many bytes (C21).
    pub min_surface_bytes: usize,
    /// Surface allocation sizes are rounded up to a multiple of this (ane.md §2).
    pub surface_alignment_bytes: usize,
    /// The last axis of every I/O tensor is padded so that its byte length is a multiple of this (C20, C22).
    pub last_axis_alignment_bytes: usize,
    /// All input surfaces share one allocation size, and all output surfaces another (C18).
    pub uniform_io_sizes: bool,
    /// Order in which surfaces bind to MIL names (C19).
    pub io_binding_order: IoBindingOrder,
    /// Compiles allowed per process before the runtime must restart (C06).
    pub compile_budget: u32,
    /// Bytes of weights plus live activations one program should stay under (C39).
    pub sram_budget_bytes: u64,
    /// MIL dialect to emit (C15).
    pub dialect: MilDialect,
    /// Accepted ops and features.
    pub ops: OpSupport,
    /// Numeric behaviours of the fp16 datapath that the simulator reproduces.
    pub numerics: Numerics,
}

/// Parameters of the per-program cost model (ane.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// Fixed cost of one evaluation issued back to back with others, ms (`t_floor`, C40).
    pub dispatch_floor_ms: f64,
    /// Latency of one isolated evaluation, ms (C40).
    pub isolated_eval_ms: f64,
    /// Effective fp16 throughput at S ≥ `shape_ref_spatial`, C ≥ `shape_ref_channels`, TFLOPS (`P_eff`).
    pub effective_tflops: f64,
    /// Engine streaming bandwidth for surfaces and weights, GB/s (`BW`, 10⁹ bytes/s).
    pub bandwidth_gb_s: f64,
    /// Working set beyond which throughput degrades, bytes (`K_sram`, C39).
    pub sram_knee_bytes: u64,
    /// Exponent of the SRAM spill penalty `(K_sram / W)^spill_exponent`.
    pub spill_exponent: f64,
    /// Spatial extent at which the shape factor saturates (2048).
    pub shape_ref_spatial: usize,
    /// Channel extent at which the shape factor saturates (512).
    pub shape_ref_channels: usize,
    /// Exponent of the spatial shape factor (0.15 fitted; 0 = no shape effect).
    pub spatial_exponent: f64,
    /// Exponent of the channel shape factor (0.85 fitted; 0 = no shape effect).
    pub channel_exponent: f64,
    /// Compile time of one training-sized kernel, ms (C42).
    pub compile_ms_per_kernel: f64,
}

/// Everything Orion assumes about one chip generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipProfile {
    pub id: ChipId,
    /// ANE arch string as the device reports it ("h13".."h17").
    pub arch: String,
    /// Human-readable name.
    pub name: String,
    pub limits: Limits,
    pub cost: CostModel,
    /// Field path (e.g. `limits.max_spatial`) → where the value comes from (catalogue id, ane.md section).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

/// A profile that could not be read or makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Malformed JSON, a missing or unknown field, an unknown chip id or enum value.
    #[error("invalid profile JSON: {message}")]
    Json { message: String },
    /// A field holds a value no chip can have.
    #[error("profile {chip}: {field}: {message}")]
    Invalid {
        chip: String,
        field: String,
        message: String,
    },
}

/// Breakdown of one evaluation's estimated time (ane.md §8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalEstimate {
    pub floor_ms: f64,
    pub compute_ms: f64,
    pub bandwidth_ms: f64,
    /// `floor_ms + max(compute_ms, bandwidth_ms)`.
    pub total_ms: f64,
    /// `e_shape` in (0, 1].
    pub shape_efficiency: f64,
    /// `e_sram` in (0, 1].
    pub sram_efficiency: f64,
}

impl ChipProfile {
    /// The built-in profile of chip `id` ("m1".."m5"), if there is one.
    pub fn builtin(id: &str) -> Option<ChipProfile> {
        ChipId::parse(id).map(builtin::profile)
    }

    /// Every built-in profile, M1 first.
    pub fn all_builtin() -> Vec<ChipProfile> {
        ChipId::ALL.into_iter().map(builtin::profile).collect()
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Cannot fail: every field is a string, number, bool, unit enum or string-keyed map (serde_json
        // writes a non-finite float as `null`, which `from_json` then rejects with a clear message).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and validates a profile. Missing, unknown and mistyped fields are reported by their dotted
    /// path (checked against the shape of a built-in profile before deserialising).
    pub fn from_json(text: &str) -> Result<ChipProfile, ProfileError> {
        let json_error = |message: String| ProfileError::Json { message };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(e.to_string()))?;
        let schema = serde_json::to_value(builtin::profile(ChipId::M1)).map_err(|e| json_error(e.to_string()))?;
        check_json_shape(&schema, &value, "").map_err(json_error)?;
        let profile: ChipProfile = serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    /// Dotted paths of every leaf field except `id`, `arch`, `name` and `sources` — the keys `sources` uses.
    pub fn field_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (key, value) in map {
                if !matches!(key.as_str(), "id" | "arch" | "name" | "sources") {
                    collect_leaf_paths(&key, &value, &mut paths);
                }
            }
        }
        paths
    }

    /// Checks every invariant listed in the module header.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |field: &str, message: String| ProfileError::Invalid {
            chip: self.id.to_string(),
            field: field.to_string(),
            message,
        };
        if !self.id.arch_ids().contains(&self.arch.as_str()) {
            return Err(invalid(
                "arch",
                format!(
                    "{:?} is not an arch of {} (expected {:?})",
                    self.arch,
                    self.id,
                    self.id.arch_ids()
                ),
            ));
        }
        self.validate_limits()
            .map_err(|(field, message)| invalid(field, message))?;
        self.validate_cost()
            .map_err(|(field, message)| invalid(field, message))?;
        let known = self.field_paths();
        if let Some(key) = self.sources.keys().find(|k| !known.contains(k)) {
            return Err(invalid("sources", format!("{key:?} names no field of a chip profile")));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), (&'static str, String)> {
        let l = &self.limits;
        let positive = [
            ("limits.max_spatial", l.max_spatial),
            ("limits.max_contraction", l.max_contraction),
            ("limits.max_channels", l.max_channels),
            ("limits.min_surface_bytes", l.min_surface_bytes),
            ("limits.ops.matmul_inner_multiple", l.ops.matmul_inner_multiple),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be positive".to_string()));
            }
        }
        for (field, value) in [
            ("limits.surface_alignment_bytes", l.surface_alignment_bytes),
            ("limits.last_axis_alignment_bytes", l.last_axis_alignment_bytes),
        ] {
            if !value.is_power_of_two() {
                return Err((field, format!("{value} is not a positive power of two")));
            }
        }
        if !l.min_surface_bytes.is_multiple_of(l.surface_alignment_bytes) {
            return Err((
                "limits.min_surface_bytes",
                format!(
                    "{} is not a multiple of the surface alignment {}",
                    l.min_surface_bytes, l.surface_alignment_bytes
                ),
            ));
        }
        if l.compile_budget == 0 {
            return Err(("limits.compile_budget", "must be positive".to_string()));
        }
        if l.sram_budget_bytes == 0 {
            return Err(("limits.sram_budget_bytes", "must be positive".to_string()));
        }
        Ok(())
    }

    fn validate_cost(&self) -> Result<(), (&'static str, String)> {
        let c = &self.cost;
        let checks: [(&'static str, f64, bool); 8] = [
            (
                "cost.dispatch_floor_ms",
                c.dispatch_floor_ms,
                c.dispatch_floor_ms >= 0.0,
            ),
            ("cost.isolated_eval_ms", c.isolated_eval_ms, c.isolated_eval_ms >= 0.0),
            ("cost.effective_tflops", c.effective_tflops, c.effective_tflops > 0.0),
            ("cost.bandwidth_gb_s", c.bandwidth_gb_s, c.bandwidth_gb_s > 0.0),
            ("cost.spill_exponent", c.spill_exponent, c.spill_exponent > 0.0),
            ("cost.spatial_exponent", c.spatial_exponent, c.spatial_exponent >= 0.0),
            ("cost.channel_exponent", c.channel_exponent, c.channel_exponent >= 0.0),
            (
                "cost.compile_ms_per_kernel",
                c.compile_ms_per_kernel,
                c.compile_ms_per_kernel >= 0.0,
            ),
        ];
        for (field, value, in_range) in checks {
            if !value.is_finite() || !in_range {
                return Err((field, format!("{value} is out of range")));
            }
        }
        if c.sram_knee_bytes == 0 {
            return Err(("cost.sram_knee_bytes", "must be positive".to_string()));
        }
        for (field, value) in [
            ("cost.shape_ref_spatial", c.shape_ref_spatial),
            ("cost.shape_ref_channels", c.shape_ref_channels),
        ] {
            if value == 0 {
                return Err((field, "must be positive".to_string()));
            }
        }
        Ok(())
    }

    /// Estimated time of one evaluation of a program (ane.md §8):
    ///
    /// `t = t_floor + max(F / (P_eff · e_shape · e_sram), B / BW)` with `B = bytes + weight_bytes`,
    /// `e_shape = min(1, S/S_ref)^a · min(1, C/C_ref)^b` and `e_sram = min(1, K_sram / W)^spill`.
    ///
    /// - `flops`: F, `2·M·N·K` per conv/matmul plus one per element of elementwise/reduce ops;
    /// - `bytes`: input plus output surface bytes; `weight_bytes`: weights streamed per evaluation;
    /// - `spatial`, `channels`: the program's typical S and C (0 is treated as 1).
    ///
    /// The working set `W` is `weight_bytes + bytes`: the reference defines it with the largest live
    /// activation, which this signature does not carry; the I/O bytes are an upper bound of it.
    /// Negative or NaN inputs count as 0.
    pub fn estimate_eval(
        &self,
        flops: f64,
        bytes: f64,
        weight_bytes: f64,
        spatial: usize,
        channels: usize,
    ) -> EvalEstimate {
        let c = &self.cost;
        let (flops, bytes, weight_bytes) = (flops.max(0.0), bytes.max(0.0), weight_bytes.max(0.0));
        let s_ratio = (spatial.max(1) as f64 / c.shape_ref_spatial as f64).min(1.0);
        let c_ratio = (channels.max(1) as f64 / c.shape_ref_channels as f64).min(1.0);
        let shape_efficiency = s_ratio.powf(c.spatial_exponent) * c_ratio.powf(c.channel_exponent);
        let working_set = weight_bytes + bytes;
        let knee = c.sram_knee_bytes as f64;
        let sram_efficiency = if working_set <= knee {
            1.0
        } else {
            (knee / working_set).powf(c.spill_exponent)
        };
        let compute_ms = flops / (c.effective_tflops * 1e12 * shape_efficiency * sram_efficiency) * 1e3;
        let bandwidth_ms = (bytes + weight_bytes) / (c.bandwidth_gb_s * 1e9) * 1e3;
        EvalEstimate {
            floor_ms: c.dispatch_floor_ms,
            compute_ms,
            bandwidth_ms,
            total_ms: c.dispatch_floor_ms + compute_ms.max(bandwidth_ms),
            shape_efficiency,
            sram_efficiency,
        }
    }

    /// [`ChipProfile::estimate_eval`]'s total, in ms.
    pub fn estimate_eval_ms(&self, flops: f64, bytes: f64, weight_bytes: f64, spatial: usize, channels: usize) -> f64 {
        self.estimate_eval(flops, bytes, weight_bytes, spatial, channels)
            .total_ms
    }
}

/// Checks that `found` has the fields and JSON kinds of `expected` (a serialised built-in profile), naming
/// the first missing, unknown or mistyped field by its dotted path. The top-level `sources` map is optional
/// and its entries are free-form.
fn check_json_shape(expected: &serde_json::Value, found: &serde_json::Value, path: &str) -> Result<(), String> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (expected, found) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_child) in want {
                match have.get(key) {
                    None if path.is_empty() && key == "sources" => {}
                    None => return Err(format!("missing field `{}`", join(key))),
                    Some(_) if path.is_empty() && key == "sources" => {}
                    Some(have_child) => check_json_shape(want_child, have_child, &join(key))?,
                }
            }
            match have.keys().find(|key| !want.contains_key(*key)) {
                Some(key) => Err(format!("unknown field `{}`", join(key))),
                None => Ok(()),
            }
        }
        (Value::Number(want), Value::Number(have)) if want.is_u64() && !have.is_u64() => {
            Err(format!("`{path}` must be a non-negative integer, found {have}"))
        }
        (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::String(_), Value::String(_)) => Ok(()),
        (want, have) => Err(format!(
            "`{path}` must be {}, found {}",
            json_kind(want),
            json_kind(have)
        )),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Appends `prefix` (a leaf) or the dotted paths of every leaf under it.
fn collect_leaf_paths(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                collect_leaf_paths(&format!("{prefix}.{key}"), child, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}
