//! `orion compile`, `orion lint` and `orion sim`: the ANE target's face for users.
//!
//! - `compile FILE.ir --chip m4 [--weights baked|inputs] --out DIR`: optimises text IR, lowers it for the
//!   chip and writes `DIR/model.mil` plus every weight file at its `@model_path`-relative path (the layout
//!   of the device's compile directory, ane.md §1); prints the I/O description and the lint findings.
//! - `lint FILE.mil --chip m1 [--weights DIR]`: prints every violation; exits non-zero on any error.
//! - `sim FILE.mil --chip m4 [--weights DIR] [--input NAME=FILE.npy ...] [--seed N] [--out DIR]`: runs a
//!   MIL program on the simulated ANE; parameters are fed by MIL name from `.npy` files (f32 or f16,
//!   shape exactly the declared one) or with seeded random values in [-1, 1); every output is written
//!   as `DIR/<name>.npy` in its MIL element type; prints a summary with the cost estimate.
//!
//! BLOBFILE paths `@model_path/REL` resolve to `DIR/REL`, DIR being `--weights` or the MIL file's
//! folder; a path that would leave DIR is refused. `--profile FILE` (each command; excludes `--chip`)
//! takes the chip profile from a JSON file — one `orion probe` wrote, or a hand-written one — validated
//! before use. Every bad input is an error naming what is wrong.

use super::npy::{self, NpyDType};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use orion_ane::device::{AneDevice, ProgramId, SimulatedAne, Surface, WeightDict};
use orion_ane::lint::{has_errors, lint, Violation};
use orion_ane::lower::{lower, IoDesc, IoLayout, LowerOptions, WeightMode};
use orion_ane::mil::{parse_program, Argument, MilDType, Program, Value};
use orion_ane::profile::ChipProfile;
use orion_ane::surfaces::{binding_permutation, decode, encode_safe, uniform_surface_sizes};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum AneCommand {
    /// Lower a text IR program to MIL text and weight files for a chip.
    Compile(CompileArgs),
    /// Check a MIL program against a chip's rules (the constraint catalogue).
    Lint(LintArgs),
    /// Run a MIL program on the simulated ANE.
    Sim(SimArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WeightChoice {
    /// Constants become BLOBFILE weights compiled into the program.
    Baked,
    /// Constants become extra program inputs.
    Inputs,
}

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// Text IR file.
    file: PathBuf,
    /// Chip profile: m1, m2, m3, m4 or m5.
    #[arg(long, default_value = "m4")]
    chip: String,
    /// A chip profile JSON (written by `orion probe`, or by hand) instead of a built-in chip.
    #[arg(long, value_name = "FILE", conflicts_with = "chip")]
    profile: Option<PathBuf>,
    /// How constants reach the device.
    #[arg(long, value_enum, default_value = "baked")]
    weights: WeightChoice,
    /// Directory for model.mil and the weight files (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// MIL text file.
    file: PathBuf,
    /// Chip profile: m1, m2, m3, m4 or m5.
    #[arg(long, default_value = "m4")]
    chip: String,
    /// A chip profile JSON (written by `orion probe`, or by hand) instead of a built-in chip.
    #[arg(long, value_name = "FILE", conflicts_with = "chip")]
    profile: Option<PathBuf>,
    /// Directory BLOBFILE `@model_path/…` paths resolve under (default: the MIL file's folder).
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// MIL text file.
    file: PathBuf,
    /// Chip profile: m1, m2, m3, m4 or m5.
    #[arg(long, default_value = "m4")]
    chip: String,
    /// A chip profile JSON (written by `orion probe`, or by hand) instead of a built-in chip.
    #[arg(long, value_name = "FILE", conflicts_with = "chip")]
    profile: Option<PathBuf>,
    /// Directory BLOBFILE `@model_path/…` paths resolve under (default: the MIL file's folder).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// An input as NAME=FILE.npy (NAME = MIL parameter name); repeat for several.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Seed of the random values of inputs not given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for one `<output name>.npy` per output (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: AneCommand) -> Result<()> {
    match cmd {
        AneCommand::Compile(args) => run_compile(args),
        AneCommand::Lint(args) => run_lint(args),
        AneCommand::Sim(args) => run_sim(args),
    }
}

/// The profile `--profile FILE` names (read and validated), else the built-in profile of `--chip`.
fn chip_profile(chip: &str, profile: &Option<PathBuf>) -> Result<ChipProfile> {
    match profile {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read profile {}", path.display()))?;
            ChipProfile::from_json(&text).map_err(|e| anyhow!("profile {}: {e}", path.display()))
        }
        None => ChipProfile::builtin(chip)
            .ok_or_else(|| anyhow!("unknown chip {chip:?} (expected one of m1, m2, m3, m4, m5)")),
    }
}

// ---- compile -----------------------------------------------------------------------------------------

fn run_compile(args: CompileArgs) -> Result<()> {
    let profile = chip_profile(&args.chip, &args.profile)?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let graph = orion_core::text::parse(&text).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let optimised = optimise(&graph, &PipelineOptions::default())
        .with_context(|| format!("optimising {}", args.file.display()))?
        .graph;
    let options = LowerOptions {
        weights: match args.weights {
            WeightChoice::Baked => WeightMode::Baked,
            WeightChoice::Inputs => WeightMode::Inputs,
        },
        ..LowerOptions::default()
    };
    let emitted = lower(&optimised, &profile, &options)
        .with_context(|| format!("lowering {} for {}", args.file.display(), profile.id))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mil_path = args.out.join("model.mil");
    std::fs::write(&mil_path, emitted.mil_text.as_bytes())
        .with_context(|| format!("cannot write {}", mil_path.display()))?;
    for (mil, bytes) in &emitted.weights {
        let path = weight_file_path(&args.out, mil)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let weight_bytes: usize = emitted.weights.values().map(Vec::len).sum();
    println!(
        "compiled {} for {} ({}, program({}) <{}>): {} and {} weight file(s), {weight_bytes} bytes",
        emitted.name,
        profile.id,
        profile.name,
        emitted.dialect.program_version(),
        emitted.dialect.opset(),
        mil_path.display(),
        emitted.weights.len()
    );
    print_descs("inputs", &emitted.inputs);
    print_descs("outputs", &emitted.outputs);
    print_violations(&emitted.lint);
    if has_errors(&emitted.lint) {
        bail!("the emitted program breaks device rules (see above)");
    }
    Ok(())
}

fn print_descs(side: &str, descs: &[IoDesc]) {
    println!("{side} (binding order):");
    for d in descs {
        let layout = match d.layout {
            IoLayout::ChannelMajor { rows, cols } => format!("channel-major [{rows},{cols}] -> [1,{cols},1,{rows}]"),
            IoLayout::Flat => "flat".to_string(),
        };
        println!(
            "  {:<16} {:<12} {:<14} MIL {}{:?} {layout}, {} dense bytes, surface {} bytes",
            d.mil_name,
            d.ir_name,
            d.ir_type.to_string(),
            mil_dtype_name(d.surface_dtype),
            d.mil_shape,
            d.dense_bytes,
            d.surface_bytes
        );
    }
}

/// The MIL spelling of a surface element type.
fn mil_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "fp16",
        DType::F32 => "fp32",
        DType::I32 => "int32",
        DType::Bool => "bool",
    }
}

fn print_violations(violations: &[Violation]) {
    let errors = violations
        .iter()
        .filter(|v| v.severity == orion_ane::lint::Severity::Error)
        .count();
    println!("lint: {errors} error(s), {} warning(s)", violations.len() - errors);
    for v in violations {
        println!("  {v}");
    }
}

// ---- weight files ------------------------------------------------------------------------------------

/// Where the file of MIL path `@model_path/REL` lives under `dir`; refuses paths that would leave it.
fn weight_file_path(dir: &Path, mil_path: &str) -> Result<PathBuf> {
    let rel = mil_path
        .strip_prefix("@model_path/")
        .ok_or_else(|| anyhow!("weight path {mil_path:?} does not start with @model_path/"))?;
    let rel = Path::new(rel);
    let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe || rel.as_os_str().is_empty() {
        bail!("weight path {mil_path:?} must be a plain relative path under @model_path/");
    }
    Ok(dir.join(rel))
}

/// Every BLOBFILE path the program names.
fn blob_paths(program: &Program) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for function in &program.functions {
        for op in &function.operations {
            let literals = op
                .attributes
                .iter()
                .map(|(_, l)| l)
                .chain(op.args.iter().filter_map(|(_, a)| match a {
                    Argument::Literal(l) => Some(l),
                    Argument::Var(_) | Argument::Tuple(_) => None,
                }));
            for literal in literals {
                if let Value::Blob { path, .. } = &literal.value {
                    paths.insert(path.clone());
                }
            }
        }
    }
    paths
}

/// Reads the weight files of `program` from `dir`: the dictionary and the paths not found.
fn load_weights(program: &Program, dir: &Path) -> Result<(WeightDict, Vec<String>)> {
    let mut dict = WeightDict::new();
    let mut missing = Vec::new();
    for mil in blob_paths(program) {
        let path = weight_file_path(dir, &mil)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                dict.insert(mil, bytes);
            }
            Err(_) => missing.push(format!("{mil} (looked for {})", path.display())),
        }
    }
    Ok((dict, missing))
}

/// The MIL file's text (UTF-8, C01) and parsed program, errors prefixed with the file name.
fn read_mil(file: &Path) -> Result<(String, Program)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{}: MIL text must be UTF-8 (C01)", file.display()))?;
    let program = parse_program(&text).map_err(|e| anyhow!("{}:{e}", file.display()))?;
    Ok((text, program))
}

fn weights_dir(file: &Path, weights: &Option<PathBuf>) -> PathBuf {
    match weights {
        Some(dir) => dir.clone(),
        None => file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

// ---- lint --------------------------------------------------------------------------------------------

fn run_lint(args: LintArgs) -> Result<()> {
    let profile = chip_profile(&args.chip, &args.profile)?;
    let (_, program) = read_mil(&args.file)?;
    let dir = weights_dir(&args.file, &args.weights);
    let (dict, missing) = load_weights(&program, &dir)?;
    let violations = lint(&program, &dict, &profile);
    println!("{} on {} ({})", args.file.display(), profile.id, profile.name);
    for m in &missing {
        println!("  error: weight file {m} not found (C04)");
    }
    print_violations(&violations);
    if has_errors(&violations) || !missing.is_empty() {
        bail!(
            "{} breaks {} rule(s) of {}",
            args.file.display(),
            error_count(&violations, &missing),
            profile.id
        );
    }
    Ok(())
}

fn error_count(violations: &[Violation], missing: &[String]) -> usize {
    violations
        .iter()
        .filter(|v| v.severity == orion_ane::lint::Severity::Error)
        .count()
        + missing.len()
}

// ---- sim ---------------------------------------------------------------------------------------------

/// One parameter or returned variable of `main`.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    dtype: DType,
    dims: Vec<usize>,
}

impl Slot {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn dense_bytes(&self) -> usize {
        self.numel() * self.dtype.size_bytes()
    }

    fn describe(&self) -> String {
        format!("{}{:?}", mil_dtype_name(self.dtype), self.dims)
    }
}

fn slot(name: &str, ty: &orion_ane::mil::MilType) -> Result<Slot> {
    let (dtype, dims) = ty
        .known_tensor()
        .ok_or_else(|| anyhow!("{name:?} has type {ty}, not a tensor of known shape"))?;
    let dtype = match dtype {
        MilDType::Fp16 => DType::F16,
        MilDType::Fp32 => DType::F32,
        other => bail!("{name:?} is {other}: device surfaces hold fp16 or fp32 only (C31)"),
    };
    let bytes = dims
        .iter()
        .try_fold(dtype.size_bytes(), |bytes, &d| bytes.checked_mul(d))
        .filter(|&bytes| bytes <= MAX_SURFACE_BYTES);
    if bytes.is_none() {
        bail!(
            "{name:?} of shape {dims:?} needs more than {} GiB: larger than any surface the simulator makes",
            MAX_SURFACE_BYTES >> 30
        );
    }
    Ok(Slot {
        name: name.to_string(),
        dtype,
        dims,
    })
}

/// Largest input or output the `sim` command allocates (so `Slot`'s sizes cannot overflow, and a
/// hostile shape is an error rather than an allocation failure).
const MAX_SURFACE_BYTES: usize = 4 << 30;

/// `main`'s parameters and returned variables with their declared types.
fn signature(program: &Program) -> Result<(Vec<Slot>, Vec<Slot>)> {
    let main = program
        .function("main")
        .ok_or_else(|| anyhow!("the program has no function 'main'"))?;
    let inputs = main
        .params
        .iter()
        .map(|p| slot(&p.name, &p.ty))
        .collect::<Result<Vec<_>>>()?;
    let mut declared: BTreeMap<&str, &orion_ane::mil::MilType> = BTreeMap::new();
    for p in &main.params {
        declared.insert(&p.name, &p.ty);
    }
    for op in &main.operations {
        for (name, ty) in &op.results {
            declared.insert(name, ty);
        }
    }
    let outputs = main
        .outputs
        .iter()
        .map(|name| match declared.get(name.as_str()) {
            Some(ty) => slot(name, ty),
            None => bail!("returned variable {name:?} is not defined"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((inputs, outputs))
}

/// Parses the `--input NAME=FILE` list into a map, rejecting unknown and repeated names.
fn input_files(given: &[String], slots: &[Slot]) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for item in given {
        let (name, file) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--input {item:?}: expected NAME=FILE.npy"))?;
        if !slots.iter().any(|s| s.name == name) {
            let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
            bail!("--input {item:?}: the program has no parameter {name:?} (parameters: {names:?})");
        }
        if files.insert(name.to_string(), PathBuf::from(file)).is_some() {
            bail!("--input: parameter {name:?} is given twice");
        }
    }
    Ok(files)
}

/// Values of every parameter (declaration order) and where each came from.
fn input_values(args: &SimArgs, slots: &[Slot]) -> Result<Vec<(Vec<f32>, String)>> {
    let files = input_files(&args.inputs, slots)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    slots
        .iter()
        .map(|s| match files.get(&s.name) {
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                let array = npy::read(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                if array.shape != s.dims {
                    bail!(
                        "{}: shape {:?} does not match parameter {:?} of shape {:?}",
                        path.display(),
                        array.shape,
                        s.name,
                        s.dims
                    );
                }
                Ok((array.values, path.display().to_string()))
            }
            None => {
                let values = (0..s.numel()).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                Ok((values, format!("random (seed {})", args.seed)))
            }
        })
        .collect()
}

fn run_sim(args: SimArgs) -> Result<()> {
    let profile = chip_profile(&args.chip, &args.profile)?;
    let (text, program) = read_mil(&args.file)?;
    let (inputs, outputs) = signature(&program)?;
    let dir = weights_dir(&args.file, &args.weights);
    let (dict, missing) = load_weights(&program, &dir)?;
    if !missing.is_empty() {
        bail!("weight file(s) not found: {}", missing.join(", "));
    }
    // Compiled first, so a program the device would refuse (an input over the extent caps, say)
    // is an error before any input is read or made up.
    let device = SimulatedAne::new(profile.clone());
    let id = device.compile(text.as_bytes(), &dict)?;
    let values = input_values(&args, &inputs)?;
    let run = simulate(&device, id, &inputs, &outputs, &values)?;
    println!(
        "{} on the simulated {} ({})",
        args.file.display(),
        profile.id,
        profile.name
    );
    println!("inputs:");
    for (s, (_, source)) in inputs.iter().zip(&values) {
        println!("  {:<16} {:<20} {source}", s.name, s.describe());
    }
    if run.nan_count + run.clamped_count > 0 {
        println!(
            "  note: {} NaN input(s) written as 0, {} beyond the fp16 range clamped (C38)",
            run.nan_count, run.clamped_count
        );
    }
    println!("outputs:");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    for (s, data) in outputs.iter().zip(&run.outputs) {
        let written = match &args.out {
            Some(out) => {
                let path = out.join(format!("{}.npy", s.name));
                let dtype = if s.dtype == DType::F16 {
                    NpyDType::F16
                } else {
                    NpyDType::F32
                };
                std::fs::write(&path, npy::write(dtype, &s.dims, data))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                format!(" -> {}", path.display())
            }
            None => String::new(),
        };
        println!("  {:<16} {:<20} {}{written}", s.name, s.describe(), stats(data));
    }
    let (r, e) = (&run.report, &run.report.estimate);
    println!(
        "estimate: {:.4} ms per evaluation (floor {:.4}, compute {:.4}, bandwidth {:.4} ms; \
         {:.0} flops, {:.0} I/O bytes, {:.0} weight bytes)",
        r.estimated_ms, e.floor_ms, e.compute_ms, e.bandwidth_ms, r.flops, r.io_bytes, r.weight_bytes
    );
    Ok(())
}

/// What one simulated evaluation produced.
struct SimRun {
    /// Output values in declaration (return tuple) order.
    outputs: Vec<Vec<f32>>,
    report: orion_ane::device::EvalReport,
    nan_count: usize,
    clamped_count: usize,
}

/// Loads and evaluates program `id`, compiled on `device`, once; surfaces sized uniformly per side
/// (C18, C21) and ordered by the chip's binding order (C19).
fn simulate(
    device: &SimulatedAne,
    id: ProgramId,
    inputs: &[Slot],
    outputs: &[Slot],
    values: &[(Vec<f32>, String)],
) -> Result<SimRun> {
    device.load(id)?;
    let limits = &device.profile().limits;
    let sizes = |slots: &[Slot]| {
        uniform_surface_sizes(&slots.iter().map(Slot::dense_bytes).collect::<Vec<_>>(), limits)
            .ok_or_else(|| anyhow!("surfaces are too large"))
    };
    let order = |slots: &[Slot]| {
        binding_permutation(
            &slots.iter().map(|s| &s.name).collect::<Vec<_>>(),
            limits.io_binding_order,
        )
    };
    let (in_sizes, out_sizes) = (sizes(inputs)?, sizes(outputs)?);
    let (in_perm, out_perm) = (order(inputs), order(outputs));
    let mut surfaces = Vec::with_capacity(inputs.len());
    let (mut nan_count, mut clamped_count) = (0, 0);
    for &i in &in_perm {
        let mut surface = Surface::zeroed(in_sizes[i]);
        let repaired = encode_safe(&values[i].0, inputs[i].dtype, surface.bytes_mut()).map_err(|m| anyhow!(m))?;
        nan_count += repaired.nan_count;
        clamped_count += repaired.clamped_count;
        surfaces.push(surface);
    }
    let mut out_surfaces: Vec<Surface> = out_perm.iter().map(|&i| Surface::zeroed(out_sizes[i])).collect();
    let report = device.evaluate(id, &surfaces, &mut out_surfaces)?;
    device.unload(id)?;
    let mut decoded = vec![Vec::new(); outputs.len()];
    for (k, &i) in out_perm.iter().enumerate() {
        let s = &outputs[i];
        decoded[i] = decode(out_surfaces[k].bytes(), s.dtype, s.numel()).map_err(|m| anyhow!(m))?;
    }
    Ok(SimRun {
        outputs: decoded,
        report,
        nan_count,
        clamped_count,
    })
}

/// `min … max … mean …` of finite values plus the count of non-finite ones.
fn stats(values: &[f32]) -> String {
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let bad = values.len() - finite.len();
    if finite.is_empty() {
        return format!("{bad} non-finite value(s)");
    }
    let min = finite.iter().copied().fold(f32::INFINITY, f32::min);
    let max = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = finite.iter().map(|&v| f64::from(v)).sum::<f64>() / finite.len() as f64;
    format!("min {min:.4} max {max:.4} mean {mean:.4}, {bad} non-finite")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_paths_stay_inside_the_directory() {
        let dir = Path::new("/tmp/model");
        assert_eq!(
            weight_file_path(dir, "@model_path/weights/w.bin").unwrap(),
            PathBuf::from("/tmp/model/weights/w.bin")
        );
        for bad in [
            "weights/w.bin",
            "@model_path/../w.bin",
            "@model_path//etc/passwd",
            "@model_path/",
        ] {
            assert!(weight_file_path(dir, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_flags_are_checked_against_the_signature() {
        let slots = vec![Slot {
            name: "a00_x".to_string(),
            dtype: DType::F16,
            dims: vec![1, 2, 1, 2],
        }];
        assert!(input_files(&["a00_x=x.npy".to_string()], &slots).is_ok());
        assert!(input_files(&["x.npy".to_string()], &slots).is_err());
        assert!(input_files(&["b=x.npy".to_string()], &slots).is_err());
        assert!(input_files(&["a00_x=x.npy".to_string(), "a00_x=y.npy".to_string()], &slots).is_err());
    }
}
