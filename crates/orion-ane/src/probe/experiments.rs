//! Experiments whose outcome is a choice: the MIL dialect (C15), binding order and uniform sizes (C19,
//! C18), weight reload (C07) and the numeric behaviours of `limits.numerics` (C35, C36). The op switches
//! are in `switches`.
//!
//! Each compiles one small program, evaluates it with distinct test values and compares the outputs
//! with the reference interpreter in fp16 rounding or with the prediction of each hypothesis. A refused
//! compile, a failed evaluation and wrong numbers are all observations, recorded as such. Invariant:
//! every experiment records exactly one [`super::Experiment`].

use super::programs::{conv_program, doubling, ramp, weight_path, Builder, ProbeProgram};
use super::session::{agree, Session, Step, Trial};
use super::ExperimentStatus::{Inconclusive, Measured};
use crate::device::{ProgramId, Surface};
use crate::mil::Dialect;
use crate::profile::{IoBindingOrder, MilDialect};
use crate::surfaces::{decode, encode_exact};
use orion_core::interp::tolerance::Tolerance;
use orion_core::DType;

const NOT_MEASURED: &str = "not measured";

// ---- C15: dialect --------------------------------------------------------------------------------------

/// Compiles `x + x` in both dialects; the first that compiles and computes right is the chip's. `false`
/// when neither does (the device is unusable).
pub(super) fn dialect(s: &mut Session<'_>) -> Step<bool> {
    let trial = Trial::new(
        "C15",
        "dialect",
        "x + x over fp16 [1,1,1,64], printed as program(1.3) <ios18> and as program(1.0) <ios16>",
        "the dialect the chip reads compiles and doubles the input",
    );
    let program = match doubling(64) {
        Ok(p) => p,
        Err(e) => {
            s.record(&trial, e, NOT_MEASURED, Inconclusive);
            return Ok(false);
        }
    };
    let x = vec![ramp(64, 0.5)];
    let mut working = Vec::new();
    let mut seen = Vec::new();
    for dialect in [Dialect::Ios18, Dialect::Ios16] {
        let outcome = match s.compile_in(&program, dialect)? {
            Err(refusal) => refusal.describe(),
            Ok(id) => match s.eval_checked(id, &program, &x) {
                Ok(()) => {
                    working.push((dialect, id));
                    "compiles, right numbers".to_string()
                }
                Err(e) => {
                    s.release(id);
                    format!("compiles; evaluation: {e}")
                }
            },
        };
        seen.push(format!("{}: {outcome}", dialect_name(dialect)));
    }
    let seen = seen.join("; ");
    let Some(&(chosen, id)) = working.first() else {
        s.record(&trial, seen, "neither dialect works", Inconclusive);
        return Ok(false);
    };
    for &(_, other) in working.iter().skip(1) {
        s.release(other);
    }
    s.dialect = chosen;
    s.profile.limits.dialect = match chosen {
        Dialect::Ios18 => MilDialect::Ios18Program13,
        Dialect::Ios16 => MilDialect::Ios16Program10,
    };
    s.probed("limits.dialect", format!("C15 dialect: {seen}"));
    s.record(
        &trial,
        seen,
        format!("limits.dialect = {}", dialect_name(chosen)),
        Measured,
    );
    s.basic = Some((id, program));
    Ok(true)
}

fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Ios18 => "ios18 (program 1.3)",
        Dialect::Ios16 => "ios16 (program 1.0)",
    }
}

// ---- C19, C18: binding order and uniform sizes ---------------------------------------------------------

/// Outputs `(surface 0, surface 1)` predicted when inputs and outputs bind alphabetically or not, for
/// input surfaces holding 1 and 2: `out_d = in_b − in_a`, `out_c = 4·in_b`.
fn predicted(inputs_by_name: bool, outputs_by_name: bool) -> (f32, f32) {
    let (s0, s1) = (1.0, 2.0);
    let (b, a) = if inputs_by_name { (s1, s0) } else { (s0, s1) };
    let (d, c) = (b - a, 4.0 * b);
    if outputs_by_name {
        (c, d)
    } else {
        (d, c)
    }
}

fn order_name(by_name: bool) -> &'static str {
    if by_name {
        "alphabetical"
    } else {
        "declaration"
    }
}

/// Inputs and outputs declared against name order: `in_b, in_a` → `(out_d, out_c)`.
fn binding_program() -> Result<ProbeProgram, String> {
    Builder::new()
        .input("in_b", &[1, 1, 1, 64])
        .input("in_a", &[1, 1, 1, 64])
        .scalar("four", 4.0)
        .op("out_d", &[1, 1, 1, 64], "sub", &[("x", "in_b"), ("y", "in_a")])
        .op("out_c", &[1, 1, 1, 64], "mul", &[("x", "in_b"), ("y", "four")])
        .output("out_d")
        .output("out_c")
        .build("binding")
}

/// The first value of each output surface when the two input surfaces hold 1 and 2 (request order).
fn binding_observation(s: &Session<'_>, id: ProgramId, size: usize) -> Result<(f32, f32), String> {
    let filled = |v: f32| {
        let mut surface = Surface::zeroed(size);
        encode_exact(&[v; 64], DType::F16, surface.bytes_mut()).map(|()| surface)
    };
    let outs = s.eval_raw(id, &[filled(1.0)?, filled(2.0)?], &[size, size])?;
    let first = |k: usize| decode(outs[k].bytes(), DType::F16, 1).map(|v| v[0]);
    Ok((first(0)?, first(1)?))
}

/// Feeds distinct constants to inputs declared against name order and reads which output lands where
/// (C19); then offers unequal sizes per side (C18).
pub(super) fn binding(s: &mut Session<'_>) -> Step<()> {
    let hypotheses = [(false, false), (true, true), (true, false), (false, true)];
    let expected = hypotheses
        .iter()
        .map(|&(i, o)| {
            format!(
                "inputs {} / outputs {}: {:?}",
                order_name(i),
                order_name(o),
                predicted(i, o)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let ran = "in_b, in_a declared in that order; returns (out_d = in_b − in_a, out_c = 4·in_b); \
               surfaces hold 1 and 2";
    let trial = Trial::new("C19", "binding order", ran, expected);
    let compiled = match binding_program() {
        Ok(program) => s.compile(&program)?.map(|id| (id, program)).map_err(|r| r.describe()),
        Err(e) => Err(e),
    };
    let (id, program) = match compiled {
        Ok(x) => x,
        Err(e) => {
            s.record(&trial, e, NOT_MEASURED, Inconclusive);
            return Ok(());
        }
    };
    let observed = binding_observation(s, id, s.plan.sizes(&program.inputs)[0]);
    let found = observed
        .as_ref()
        .ok()
        .and_then(|got| hypotheses.iter().copied().find(|&(i, o)| predicted(i, o) == *got));
    let observed = match &observed {
        Ok(got) => format!("output surfaces hold {got:?}"),
        Err(e) => format!("evaluation: {e}"),
    };
    match found {
        Some((i, o)) if i == o => {
            let order = if i {
                IoBindingOrder::Alphabetical
            } else {
                IoBindingOrder::Declaration
            };
            s.plan.order = order;
            s.profile.limits.io_binding_order = order;
            s.probed("limits.io_binding_order", format!("C19 binding order: {observed}"));
            let conclusion = format!("limits.io_binding_order = {}", order_name(i));
            s.record(&trial, observed, conclusion, Measured);
            uniform_sizes(s, id, &program);
        }
        Some((i, o)) => {
            let why = format!("inputs bind {}, outputs {}", order_name(i), order_name(o));
            s.record(&trial, observed, why, Inconclusive);
        }
        None => s.record(&trial, observed, "matches no hypothesis", Inconclusive),
    }
    s.release(id);
    Ok(())
}

/// C18: the binding program with ascending input sizes and descending output sizes (the arrangement
/// maderix #47 reports as required on M1); equal sizes already worked.
fn uniform_sizes(s: &mut Session<'_>, id: ProgramId, program: &ProbeProgram) {
    let base = s.plan.sizes(&program.inputs)[0];
    let step = s.plan.alignment.max(64);
    let sizes = (vec![base, base + step], vec![base + step, base]);
    let trial = Trial::new(
        "C18",
        "uniform sizes",
        format!(
            "the binding program with input surfaces of {:?} and output surfaces of {:?} bytes",
            sizes.0, sizes.1
        ),
        "evaluates with right numbers unless one side must share one size",
    );
    let inputs = vec![ramp(64, 0.25), ramp(64, 0.5)];
    let outcome = s
        .eval_sized(id, program, &inputs, &sizes, false)
        .and_then(|(outputs, _)| agree(program, &inputs, &outputs));
    let uniform = outcome.is_err();
    let observed = match outcome {
        Ok(()) => "evaluates with right numbers".to_string(),
        Err(e) => e,
    };
    s.plan.uniform = uniform;
    s.profile.limits.uniform_io_sizes = uniform;
    s.probed("limits.uniform_io_sizes", format!("C18 unequal sizes: {observed}"));
    s.record(
        &trial,
        observed,
        format!("limits.uniform_io_sizes = {uniform}"),
        Measured,
    );
}

// ---- C07: weight reload ----------------------------------------------------------------------------------

/// Evaluates, overwrites the weight file with `replacement`, unloads, loads and evaluates again; the
/// output after the reload.
fn reloaded(
    s: &Session<'_>,
    id: ProgramId,
    program: &ProbeProgram,
    replacement: &[u8],
) -> Result<Vec<Vec<f32>>, String> {
    let x = vec![ramp(2048, 0.125)];
    let device = s.device;
    let text = |e: crate::device::DeviceError| e.to_string();
    s.eval_checked(id, program, &x)?;
    device
        .overwrite_weight_file(id, &weight_path("w"), replacement)
        .map_err(text)?;
    device.unload(id).map_err(text)?;
    device.load(id).map_err(text)?;
    s.eval(id, program, &x)
}

/// Compiles a conv with a baked weight, overwrites the weight file, unloads and loads, and checks
/// which weights the output follows.
pub(super) fn reload(s: &mut Session<'_>) -> Step<()> {
    let trial = Trial::new(
        "C07",
        "weight reload",
        "1x1 conv with weight file w = 0.25; overwrite w with -0.5, unload, load, evaluate",
        "the output follows the new weights if reload takes effect, the old ones if not",
    );
    let (Ok(old), Ok(new)) = (conv_program(&[0.25; 256], None), conv_program(&[-0.5; 256], None)) else {
        s.record(&trial, "no program", NOT_MEASURED, Inconclusive);
        return Ok(());
    };
    let id = match s.compile(&old)? {
        Ok(id) => id,
        Err(refusal) => {
            s.record(&trial, refusal.describe(), NOT_MEASURED, Inconclusive);
            return Ok(());
        }
    };
    let replacement = new.weights.get(&weight_path("w")).cloned().unwrap_or_default();
    let outcome = reloaded(s, id, &old, &replacement);
    s.release(id);
    let x = vec![ramp(2048, 0.125)];
    let verdict = outcome.and_then(|after| {
        if agree(&new, &x, &after).is_ok() {
            Ok(true)
        } else if agree(&old, &x, &after).is_ok() {
            Ok(false)
        } else {
            Err("the output follows neither the old nor the new weights".to_string())
        }
    });
    match verdict {
        Ok(takes_effect) => {
            let observed = if takes_effect {
                "the output follows the new weights"
            } else {
                "the output is unchanged"
            };
            const FIELD: &str = "limits.ops.weights_reload_takes_effect";
            s.profile.limits.ops.weights_reload_takes_effect = takes_effect;
            s.probed(FIELD, format!("C07 weight reload: {observed}"));
            s.record(&trial, observed, format!("{FIELD} = {takes_effect}"), Measured);
        }
        Err(e) => s.record(&trial, e, NOT_MEASURED, Inconclusive),
    }
    Ok(())
}

// ---- C35, C36: numerics ----------------------------------------------------------------------------------

/// C35: a matmul whose exact results are 40,000 (beyond 32,752) and 20,000; C36: a slice at last-axis
/// offset 64 of values 5,000 (beyond 4,094) and 1,000.
pub(super) fn numerics(s: &mut Session<'_>) -> Step<()> {
    let mut x = vec![1.0; 32 * 32];
    x[..32].fill(40.0);
    x[32..64].fill(20.0);
    let y = vec![31.25; 32 * 32];
    let dims: &[usize] = &[1, 1, 32, 32];
    let args = [
        ("transpose_x", "tf"),
        ("transpose_y", "tf"),
        ("x", "a00_x"),
        ("y", "a01_y"),
    ];
    let program = Builder::new()
        .input("a00_x", dims)
        .input("a01_y", dims)
        .boolean("tf", false)
        .op("z00_z", dims, "matmul", &args)
        .output("z00_z")
        .build("matmul overflow");
    let trial = Trial::new(
        "C35",
        "matmul overflow",
        "fp16 matmul [1,1,32,32] x [1,1,32,32] whose exact results are 40,000 (row 0) and 20,000 (row 1)",
        SATURATION,
    );
    saturation(s, &trial, program, &[x, y], "limits.numerics.matmul_overflow_to_inf")?;
    let mut v = vec![0.0; 128];
    v[64..96].fill(5000.0);
    v[96..].fill(1000.0);
    let slice = [("begin", "begin"), ("size", "size"), ("x", "a00_x")];
    let program = Builder::new()
        .input("a00_x", &[1, 1, 1, 128])
        .ints("begin", &[0, 0, 0, 64])
        .ints("size", &[1, 1, 1, 64])
        .op("z00_y", &[1, 1, 1, 64], "slice_by_size", &slice)
        .output("z00_y")
        .build("width-offset slice");
    let trial = Trial::new(
        "C36",
        "width-offset slice",
        "slice_by_size at last-axis offset 64 of [1,1,1,128] holding 5,000 then 1,000",
        SATURATION,
    );
    saturation(s, &trial, program, &[v], "limits.numerics.width_offset_slice_gain")
}

const SATURATION: &str = "finite reference values; ±inf at the large one where the chip saturates";

/// Evaluates `program`; the behaviour is present when output 0 at index 0 (the large value) is infinite
/// while index 32 (the smaller one) is exact, absent when both are exact.
fn saturation(
    s: &mut Session<'_>,
    trial: &Trial,
    program: Result<ProbeProgram, String>,
    inputs: &[Vec<f32>],
    field: &str,
) -> Step<()> {
    let (big, small) = (0, 32);
    let outcome = match program {
        Err(e) => Err(e),
        Ok(program) => match s.compile(&program)? {
            Err(refusal) => Err(refusal.describe()),
            Ok(id) => {
                let out = s.eval(id, &program, inputs);
                s.release(id);
                out.and_then(|outputs| {
                    let reference = program.reference(inputs)?;
                    Ok((
                        outputs[0][big],
                        outputs[0][small],
                        reference[0][big],
                        reference[0][small],
                    ))
                })
            }
        },
    };
    let (got_big, got_small, want_big, want_small) = match outcome {
        Ok(values) => values,
        Err(e) => {
            s.record(trial, e, NOT_MEASURED, Inconclusive);
            return Ok(());
        }
    };
    let exact_small = Tolerance::F16.accepts(got_small, want_small);
    let observed = format!("{got_big} where the reference has {want_big}, {got_small} where it has {want_small}");
    let present = if got_big.is_infinite() && exact_small {
        true
    } else if Tolerance::F16.accepts(got_big, want_big) && exact_small {
        false
    } else {
        s.record(trial, observed, "neither inf nor exact", Inconclusive);
        return Ok(());
    };
    let numerics = &mut s.profile.limits.numerics;
    if field.ends_with("matmul_overflow_to_inf") {
        numerics.matmul_overflow_to_inf = present;
    } else {
        numerics.width_offset_slice_gain = present;
    }
    s.probed(field, format!("{} {}: {observed}", trial.rule, trial.name));
    s.record(trial, observed, format!("{field} = {present}"), Measured);
    Ok(())
}
