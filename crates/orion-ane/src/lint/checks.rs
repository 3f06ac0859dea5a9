//! The individual lint checks, one function per concern, each tagged with the catalogue ids it covers.
//!
//! Program-level: dialect (C15), weight files (C17 one record per file). Per function: I/O names in
//! byte order (C19, warning), I/O element types (C16 fp32 without cast support, C31 int/bool/bf16
//! surfaces), last-axis alignment of I/O (C22, warning), extents of parameters (C26), return names
//! (C14). Per operation: inline non-tensor arguments (C12), op availability (C09 concat, C10 gelu,
//! C11 SDPA, C13 conv bias, C16 cast to/from fp32, C28 layer_norm, C31 missing ops and int32
//! compute), conv settings (C24 runtime-weight groups, C27 input channels, C32 kernel width), extents
//! of results (C26) and matmul contraction (C23), BLOBFILE references (C03 offset = record metadata
//! offset; C04 file present).
//!
//! Invariants: no check panics or indexes without a bound check; types come only from declarations (the
//! lint never infers), so a check that needs an unknown type skips silently.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Severity, Violation};
use crate::blob::{BlobDType, BlobFile};
use crate::mil::{Argument, Function, Literal, MilDType, Operation, Program, Value};
use crate::profile::{ChipId, ChipProfile, MilDialect};

/// C27: a 32,000-input-channel conv was rejected (Orion, M4 Max).
const CONV_MAX_INPUT_CHANNELS: usize = 32_000;
/// C31: ops with no ANE path on any chip (ANEForge op catalogue) or none in Orion's lowering.
const NEVER_ON_ANE: &[&str] = &[
    "cumsum",
    "reduce_prod",
    "non_zero",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
    "gather",
    "gather_nd",
    "gather_along_axis",
    "scatter",
    "scatter_nd",
    "scatter_along_axis",
];
/// C31: ops rejected on M1.
const NOT_ON_M1: &[&str] = &["topk", "sort", "dynamic_slice"];

type Types<'a> = HashMap<&'a str, (MilDType, Vec<usize>)>;

/// Runs every check.
pub(super) fn run(program: &Program, weights: &BTreeMap<String, Vec<u8>>, profile: &ChipProfile) -> Vec<Violation> {
    let mut out = Vec::new();
    dialect(program, profile, &mut out);
    for f in &program.functions {
        let types = declared_types(f);
        let consts: HashMap<&str, &Literal> = f
            .operations
            .iter()
            .filter(|op| op.op == "const")
            .filter_map(|op| Some((op.results.first()?.0.as_str(), op.attribute("val")?)))
            .collect();
        io_names(f, &mut out);
        io_types(f, &types, profile, &mut out);
        returns(f, &types, &mut out);
        let mut defined: HashSet<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
        for op in &f.operations {
            let cx = OpCx {
                f,
                op,
                types: &types,
                consts: &consts,
                profile,
            };
            inline_args(&cx, &defined, &mut out);
            defined.extend(op.results.iter().map(|(n, _)| n.as_str()));
            availability(&cx, &mut out);
            conv_settings(&cx, &mut out);
            extents(&cx, &mut out);
            blob_refs(&cx, weights, &mut out);
        }
    }
    weight_files(weights, profile, &mut out);
    out
}

fn push(out: &mut Vec<Violation>, rule: &'static str, severity: Severity, location: String, message: String) {
    out.push(Violation {
        rule,
        severity,
        location,
        message,
    });
}

/// Declared element type and extents of every parameter and result with a known tensor type.
fn declared_types(f: &Function) -> Types<'_> {
    let mut types = HashMap::new();
    for p in &f.params {
        if let Some(t) = p.ty.known_tensor() {
            types.insert(p.name.as_str(), t);
        }
    }
    for op in &f.operations {
        for (name, ty) in &op.results {
            if let Some(t) = ty.known_tensor() {
                types.insert(name.as_str(), t);
            }
        }
    }
    types
}

/// One operation and what the checks need around it.
struct OpCx<'a> {
    f: &'a Function,
    op: &'a Operation,
    types: &'a Types<'a>,
    consts: &'a HashMap<&'a str, &'a Literal>,
    profile: &'a ChipProfile,
}

impl OpCx<'_> {
    fn location(&self) -> String {
        let result = self.op.results.first().map(|(n, _)| n.as_str()).unwrap_or("?");
        format!("{}: {result} = {}", self.f.name, self.op.op)
    }

    fn var(&self, arg: &str) -> Option<&str> {
        match self.op.arg(arg)? {
            Argument::Var(v) => Some(v.as_str()),
            Argument::Tuple(_) | Argument::Literal(_) => None,
        }
    }

    fn arg_shape(&self, arg: &str) -> Option<&[usize]> {
        self.types.get(self.var(arg)?).map(|(_, s)| s.as_slice())
    }

    /// The value of a const argument (named const or inline literal).
    fn literal(&self, arg: &str) -> Option<&Literal> {
        match self.op.arg(arg)? {
            Argument::Var(v) => self.consts.get(v.as_str()).copied(),
            Argument::Literal(l) => Some(l),
            Argument::Tuple(_) => None,
        }
    }

    fn int_arg(&self, arg: &str) -> Option<i64> {
        match &self.literal(arg)?.value {
            Value::Int(i) => Some(*i),
            Value::List(items) if items.len() == 1 => match items.first()? {
                Value::Int(i) => Some(*i),
                _ => None,
            },
            _ => None,
        }
    }

    fn bool_arg(&self, arg: &str) -> Option<bool> {
        match &self.literal(arg)?.value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// C15: the program's version and opsets must be the profile's dialect.
fn dialect(program: &Program, profile: &ChipProfile, out: &mut Vec<Violation>) {
    let (version, opset) = match profile.limits.dialect {
        MilDialect::Ios18Program13 => ("1.3", "ios18"),
        MilDialect::Ios16Program10 => ("1.0", "ios16"),
    };
    if program.version != version {
        push(
            out,
            "C15",
            Severity::Error,
            "program".to_string(),
            format!(
                "program({}) but {} compiles program({version}) / <{opset}> (limits.dialect)",
                program.version, profile.id
            ),
        );
    }
    for f in program.functions.iter().filter(|f| f.opset != opset) {
        push(
            out,
            "C15",
            Severity::Error,
            format!("func {}", f.name),
            format!(
                "opset <{}> but {} compiles <{opset}> (limits.dialect)",
                f.opset, profile.id
            ),
        );
    }
}

/// C19: inputs and outputs bind in ascending name order; declaration order must agree with byte order
/// and with case-insensitive order (the device's collation is unknown).
fn io_names(f: &Function, out: &mut Vec<Violation>) {
    let params: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
    let outputs: Vec<&str> = f.outputs.iter().map(String::as_str).collect();
    for (side, names) in [("inputs", params), ("outputs", outputs)] {
        let sorted = names
            .windows(2)
            .all(|w| w[0] < w[1] && w[0].to_ascii_lowercase() < w[1].to_ascii_lowercase());
        if !sorted {
            push(
                out,
                "C19",
                Severity::Warning,
                format!("func {}", f.name),
                format!(
                    "{side} {names:?} are not declared in ascending (case-insensitive and byte) name order; \
                     the device may bind them by name order instead"
                ),
            );
        }
    }
}

/// C16, C31, C22 on the function's parameters and returned variables; C26 on the parameters
/// (returned variables are op results, capped where they are defined).
fn io_types(f: &Function, types: &Types<'_>, profile: &ChipProfile, out: &mut Vec<Violation>) {
    let limits = &profile.limits;
    let align = limits.last_axis_alignment_bytes.max(1);
    let params = f
        .params
        .iter()
        .map(|p| (p.name.as_str(), format!("{}({})", f.name, p.name), true));
    let returned = f
        .outputs
        .iter()
        .map(|o| (o.as_str(), format!("{} -> {o}", f.name), false));
    for (name, location, is_param) in params.chain(returned) {
        let Some((dtype, shape)) = types.get(name) else {
            continue;
        };
        if is_param {
            if let Some(message) = cap_violation(shape, limits.max_channels, limits.max_spatial) {
                push(
                    out,
                    "C26",
                    Severity::Error,
                    location.clone(),
                    format!("{name}: {message}"),
                );
            }
        }
        match dtype {
            MilDType::Fp16 => {}
            MilDType::Fp32 if profile.limits.ops.fp32_io_cast => {}
            MilDType::Fp32 => push(
                out,
                "C16",
                Severity::Error,
                location.clone(),
                format!(
                    "fp32 surface: {} only runs fp16 I/O (fp32 I/O needs a cast that fails)",
                    profile.id
                ),
            ),
            other => push(
                out,
                "C31",
                Severity::Error,
                location.clone(),
                format!("{other} surface: the ANE has no {other} I/O; use fp16"),
            ),
        }
        let elem = match dtype {
            MilDType::Fp32 => 4,
            _ => 2,
        };
        if let Some(&last) = shape.last() {
            if last.checked_mul(elem).is_none_or(|bytes| bytes % align != 0) {
                push(
                    out,
                    "C22",
                    Severity::Warning,
                    location,
                    format!(
                        "last axis {last} × {elem} B is not a multiple of {align} B (limits.last_axis_alignment_bytes): \
                         slower, and packed/strided surface layouts differ (C20)"
                    ),
                );
            }
        }
    }
}

/// C14: every returned name must be a live (defined) variable, returned once.
fn returns(f: &Function, types: &Types<'_>, out: &mut Vec<Violation>) {
    let defined: HashSet<&str> = f
        .params
        .iter()
        .map(|p| p.name.as_str())
        .chain(
            f.operations
                .iter()
                .flat_map(|op| op.results.iter().map(|(n, _)| n.as_str())),
        )
        .chain(types.keys().copied())
        .collect();
    let mut seen = HashSet::new();
    for name in &f.outputs {
        if !defined.contains(name.as_str()) {
            push(
                out,
                "C14",
                Severity::Error,
                format!("{} -> {name}", f.name),
                format!("returns '{name}', which is not a live variable of the function"),
            );
        } else if !seen.insert(name.as_str()) {
            push(
                out,
                "C14",
                Severity::Error,
                format!("{} -> {name}", f.name),
                format!("returns '{name}' more than once"),
            );
        }
    }
}

/// C12: every argument of a non-const operation must reference a defined variable: typed inline
/// literals (`transpose_x = bool(false)`) and bare words that name nothing (`transpose_x = false`) are
/// both inline literals to the device.
fn inline_args(cx: &OpCx<'_>, defined: &HashSet<&str>, out: &mut Vec<Violation>) {
    if cx.op.op == "const" {
        return;
    }
    for (name, arg) in &cx.op.args {
        let problem = match arg {
            Argument::Literal(lit) => Some(format!("an inline literal of type {}", lit.ty)),
            Argument::Var(v) if !defined.contains(v.as_str()) => {
                Some(format!("'{v}', which is not a defined variable"))
            }
            Argument::Tuple(vars) => vars
                .iter()
                .find(|v| !defined.contains(v.as_str()))
                .map(|v| format!("a tuple naming '{v}', which is not a defined variable")),
            Argument::Var(_) => None,
        };
        if let Some(problem) = problem {
            push(
                out,
                "C12",
                Severity::Error,
                cx.location(),
                format!("argument '{name}' is {problem}; arguments must reference variables and non-tensor arguments named consts"),
            );
        }
    }
}

/// Op availability on this chip: C09, C10, C11, C13, C16, C28, C31.
fn availability(cx: &OpCx<'_>, out: &mut Vec<Violation>) {
    let ops = &cx.profile.limits.ops;
    let chip = cx.profile.id;
    let name = cx.op.op.as_str();
    let mut error = |rule: &'static str, message: String| push(out, rule, Severity::Error, cx.location(), message);
    match name {
        "concat" if !ops.concat => error("C09", format!("concat is rejected on {chip}; use pad + add")),
        "gelu" if !ops.gelu => error("C10", format!("gelu is rejected on {chip}; emit the tanh form")),
        "scaled_dot_product_attention" if cx.op.arg("attn_mask").is_some() && !ops.sdpa_mask_honoured => error(
            "C11",
            "scaled_dot_product_attention ignores attn_mask (runs unmasked); use matmul, add mask, softmax, matmul"
                .to_string(),
        ),
        "conv" if cx.op.arg("bias").is_some() && !ops.conv_bias => error(
            "C13",
            "conv does not accept bias=; add a [1,C,1,1] bias separately".to_string(),
        ),
        "layer_norm" if !ops.layer_norm => error(
            "C28",
            "layer_norm fails value-dependently; decompose it (reduce_mean, sub, mul, rsqrt)".to_string(),
        ),
        "sin" | "cos" if !ops.sin_cos => error("C31", format!("{name} is not native on {chip} (from M3 on)")),
        _ if NOT_ON_M1.contains(&name) && chip == ChipId::M1 => error("C31", format!("{name} is rejected on M1")),
        _ if NEVER_ON_ANE.contains(&name) => error("C31", format!("{name} has no ANE path; run it on the CPU")),
        _ => {}
    }
    if name == "const" {
        return;
    }
    let result_types: Vec<MilDType> = cx
        .op
        .results
        .iter()
        .filter_map(|(_, ty)| ty.known_tensor().map(|(d, _)| d))
        .collect();
    if result_types.iter().any(|d| d.is_integer() || *d == MilDType::Bf16) {
        error(
            "C31",
            format!(
                "{name} computes {:?}: the ANE has no integer or bf16 compute",
                result_types
            ),
        );
    }
    if name == "cast" && !ops.fp32_io_cast {
        let input = cx.var("x").and_then(|v| cx.types.get(v)).map(|(d, _)| *d);
        if input == Some(MilDType::Fp32) || result_types.contains(&MilDType::Fp32) {
            error("C16", format!("cast to or from fp32 fails on {chip}; use fp16 I/O"));
        }
    }
}

/// Conv settings: C24 (runtime-weight grouped conv), C27 (input channels), C32 (kernel width).
fn conv_settings(cx: &OpCx<'_>, out: &mut Vec<Violation>) {
    if cx.op.op != "conv" {
        return;
    }
    let groups = cx.int_arg("groups").unwrap_or(1);
    let weight_is_const = cx.var("weight").is_some_and(|w| cx.consts.contains_key(w));
    if groups != 1 && !weight_is_const {
        push(
            out,
            "C24",
            Severity::Error,
            cx.location(),
            format!("groups = {groups} with a runtime weight fails; only groups = 1 takes runtime weights"),
        );
    }
    let Some(weight) = cx.arg_shape("weight") else {
        return;
    };
    if let Some(&cin) = weight.get(1) {
        if cin >= CONV_MAX_INPUT_CHANNELS {
            push(
                out,
                "C27",
                Severity::Error,
                cx.location(),
                format!("conv with {cin} input channels (≥ {CONV_MAX_INPUT_CHANNELS}) was rejected; chunk it or run it on the CPU"),
            );
        }
    }
    let max_width = if cx.profile.id == ChipId::M5 { 15 } else { 13 };
    let kernel = &weight[weight.len().min(2)..];
    if let Some(&widest) = kernel.iter().max() {
        if widest > max_width {
            push(
                out,
                "C32",
                Severity::Error,
                cx.location(),
                format!(
                    "kernel {kernel:?}: width {widest} exceeds {max_width} on {}",
                    cx.profile.id
                ),
            );
        } else if widest > 1 {
            push(
                out,
                "C32",
                Severity::Warning,
                cx.location(),
                format!("kernel {kernel:?} is not 1×1; Orion only emits and simulates 1×1 convs"),
            );
        }
    }
}

/// C26 (extent caps) on every result and on matmul/conv contractions; C23 (matmul inner multiple).
fn extents(cx: &OpCx<'_>, out: &mut Vec<Violation>) {
    let limits = &cx.profile.limits;
    if cx.op.op != "const" {
        for (name, ty) in &cx.op.results {
            let Some((_, shape)) = ty.known_tensor() else {
                continue;
            };
            if let Some(message) = cap_violation(&shape, limits.max_channels, limits.max_spatial) {
                push(out, "C26", Severity::Error, cx.location(), format!("{name}: {message}"));
            }
        }
    }
    let contraction = match cx.op.op.as_str() {
        "matmul" => cx.arg_shape("x").and_then(|x| {
            let transposed = cx.bool_arg("transpose_x").unwrap_or(false);
            let axis = if transposed {
                x.len().checked_sub(2)?
            } else {
                x.len().checked_sub(1)?
            };
            x.get(axis).copied()
        }),
        "conv" => cx.arg_shape("weight").and_then(|w| w.get(1).copied()),
        _ => None,
    };
    let Some(k) = contraction else {
        return;
    };
    if k > limits.max_contraction {
        push(
            out,
            "C26",
            Severity::Error,
            cx.location(),
            format!(
                "contraction {k} exceeds limits.max_contraction = {}",
                limits.max_contraction
            ),
        );
    }
    let multiple = limits.ops.matmul_inner_multiple.max(1);
    if cx.op.op == "matmul" && k % multiple != 0 {
        push(
            out,
            "C23",
            Severity::Error,
            cx.location(),
            format!(
                "matmul contraction {k} is not a multiple of {multiple}: zero-pad it (gives zeros on M1 otherwise)"
            ),
        );
    }
}

/// The C26 message for a shape over the caps (rank 4: axis 1 = channels, axes 2–3 spatial; other
/// ranks: the last axis is spatial).
fn cap_violation(shape: &[usize], max_channels: usize, max_spatial: usize) -> Option<String> {
    if shape.len() == 4 && shape[1] > max_channels {
        return Some(format!(
            "{} channels exceed limits.max_channels = {max_channels}",
            shape[1]
        ));
    }
    let spatial: &[usize] = if shape.len() == 4 {
        &shape[2..]
    } else {
        shape.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    spatial
        .iter()
        .find(|&&e| e > max_spatial)
        .map(|e| format!("extent {e} exceeds limits.max_spatial = {max_spatial}"))
}

/// C03 / C04: a BLOBFILE const must name a file of the dictionary and a record's metadata offset whose
/// dtype and element count match the declared type.
fn blob_refs(cx: &OpCx<'_>, weights: &BTreeMap<String, Vec<u8>>, out: &mut Vec<Violation>) {
    if cx.op.op != "const" {
        return;
    }
    let Some(Literal {
        ty,
        value: Value::Blob { path, offset },
    }) = cx.op.attribute("val")
    else {
        return;
    };
    let Some(bytes) = weights.get(path) else {
        let message = format!("weight file {path:?} is not in the weight dictionary (it must exist before compile)");
        push(out, "C04", Severity::Error, cx.location(), message);
        return;
    };
    let file = match BlobFile::parse(bytes) {
        Ok(file) => file,
        Err(e) => {
            push(
                out,
                "C03",
                Severity::Error,
                cx.location(),
                format!("{path}: unreadable blob file: {e}"),
            );
            return;
        }
    };
    let record = match file.record(*offset) {
        Ok(r) => r,
        Err(_) => {
            let offsets: Vec<u64> = file.records().iter().map(|r| r.offset).collect();
            let message = format!(
                "{path}: offset {offset} is not a record's metadata offset (records at {offsets:?}); \
                 a wrong offset reads garbage silently"
            );
            push(out, "C03", Severity::Error, cx.location(), message);
            return;
        }
    };
    let Some((dtype, shape)) = ty.known_tensor() else {
        return;
    };
    let expected = match dtype {
        MilDType::Fp16 => Some(BlobDType::Fp16),
        MilDType::Fp32 => Some(BlobDType::Fp32),
        MilDType::Int32 => Some(BlobDType::Int32),
        _ => None,
    };
    let count: u64 = shape.iter().map(|&d| d as u64).product();
    if expected != Some(record.dtype) || record.element_count() != count {
        let message = format!(
            "{path} at {offset}: record holds {} × {}, the const declares {ty}",
            record.element_count(),
            record.dtype
        );
        push(out, "C03", Severity::Error, cx.location(), message);
    }
}

/// C17: one record per weight file unless the chip accepts more.
fn weight_files(weights: &BTreeMap<String, Vec<u8>>, profile: &ChipProfile, out: &mut Vec<Violation>) {
    if profile.limits.ops.multi_record_blobs {
        return;
    }
    for (path, bytes) in weights {
        if let Ok(file) = BlobFile::parse(bytes) {
            let count = file.records().len();
            if count > 1 {
                push(
                    out,
                    "C17",
                    Severity::Error,
                    path.clone(),
                    format!(
                        "{count} records in one weight file; {} needs one tensor per file",
                        profile.id
                    ),
                );
            }
        }
    }
}
