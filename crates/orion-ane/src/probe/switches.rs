//! The op switches of `limits.ops` that a program decides by compiling and computing right: concat
//! (C09), gelu (C10), the SDPA mask (C11), conv bias (C13), fp32 I/O with a cast (C16), multi-record
//! weight files (C17), sin/cos (C31) and layer_norm (C28).
//!
//! Each compiles one program that uses the feature and evaluates it with distinct test values; the
//! expected outputs come from the reference interpreter in fp16 rounding or, for the ops it lacks
//! (sin/cos, SDPA), from the same formula on the CPU. The switch is on only when the program compiles,
//! evaluates and computes right; a refusal, a failed evaluation and wrong numbers are all recorded as
//! what was observed. Invariant: every switch records exactly one experiment and sets its field.

use half::f16;

use super::programs::{conv_program, ramp, Builder, ProbeProgram};
use super::session::{agree, Session, Step, Trial};
use super::ExperimentStatus::{Inconclusive, Measured};
use crate::profile::OpSupport;
use orion_core::interp::tolerance::Tolerance;
use orion_core::DType;

/// One switch of `limits.ops`: the program that uses the feature and where its answer goes.
struct Switch {
    rule: &'static str,
    name: &'static str,
    field: &'static str,
    ran: &'static str,
    set: fn(&mut OpSupport, bool),
}

/// Compiles and evaluates `program`; the switch is on when the outputs agree with `expected` (the
/// reference interpreter's when `None`).
fn switch(
    s: &mut Session<'_>,
    sw: &Switch,
    program: Result<ProbeProgram, String>,
    inputs: &[Vec<f32>],
    expected: Option<Vec<Vec<f32>>>,
) -> Step<()> {
    let want = "compiles, evaluates, outputs agree with the reference (fp16 tolerance)";
    let trial = Trial::new(sw.rule, sw.name, sw.ran, want);
    let program = match program {
        Ok(p) => p,
        Err(e) => {
            s.record(&trial, e, "not measured", Inconclusive);
            return Ok(());
        }
    };
    let (on, observed) = match s.compile(&program)? {
        Err(refusal) => (false, refusal.describe()),
        Ok(id) => {
            let outcome = s.eval(id, &program, inputs).and_then(|outputs| match &expected {
                Some(values) => close(&program, &outputs, values),
                None => agree(&program, inputs, &outputs),
            });
            s.release(id);
            match outcome {
                Ok(()) => (true, "compiles, right numbers".to_string()),
                Err(e) => (false, format!("compiles; {e}")),
            }
        }
    };
    (sw.set)(&mut s.profile.limits.ops, on);
    s.probed(sw.field, format!("{} {}: {observed}", sw.rule, sw.name));
    s.record(&trial, observed, format!("{} = {on}", sw.field), Measured);
    Ok(())
}

/// `Ok` when every output is within the fp16 tolerance of `expected`.
fn close(program: &ProbeProgram, outputs: &[Vec<f32>], expected: &[Vec<f32>]) -> Result<(), String> {
    for (k, (got, want)) in outputs.iter().zip(expected).enumerate() {
        if let Some((i, (g, w))) = got
            .iter()
            .zip(want)
            .enumerate()
            .find(|(_, (g, w))| !Tolerance::F16.accepts(**g, **w))
        {
            return Err(format!("output {} [{i}] = {g}, expected {w}", program.outputs[k].name));
        }
    }
    Ok(())
}

fn round16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Every switch of `limits.ops` except `matmul_inner_multiple` (a search, `limits`),
/// `weights_reload_takes_effect` ([`reload`]) and `baked_linear_as_conv` (a timing, `cost_fit`).
pub(super) fn ops(s: &mut Session<'_>) -> Step<()> {
    let v64 = ramp(64, 0.25);
    let two = |name: &str| -> Result<ProbeProgram, String> {
        Builder::new()
            .input("a00_x", &[1, 1, 1, 64])
            .input("a01_y", &[1, 1, 1, 64])
            .int("ax", 3)
            .boolean("il", false)
            .op_with_tuple(
                "z00_z",
                &[1, 1, 1, 128],
                "concat",
                ("values", &["a00_x", "a01_y"]),
                &[("axis", "ax"), ("interleave", "il")],
            )
            .output("z00_z")
            .build(name)
    };
    let concat = Switch {
        rule: "C09",
        name: "concat",
        field: "limits.ops.concat",
        ran: "concat of two fp16 [1,1,1,64] inputs on the last axis",
        set: |o, v| o.concat = v,
    };
    switch(s, &concat, two("concat"), &[v64.clone(), ramp(64, 0.5)], None)?;
    let gelu = Switch {
        rule: "C10",
        name: "gelu",
        field: "limits.ops.gelu",
        ran: "gelu(mode = EXACT) of an fp16 [1,1,1,64]",
        set: |o, v| o.gelu = v,
    };
    let program = Builder::new()
        .input("a00_x", &[1, 1, 1, 64])
        .string("mode", "EXACT")
        .op("z00_y", &[1, 1, 1, 64], "gelu", &[("mode", "mode"), ("x", "a00_x")])
        .output("z00_y")
        .build("gelu");
    switch(s, &gelu, program, std::slice::from_ref(&v64), None)?;
    sdpa(s)?;
    let bias = Switch {
        rule: "C13",
        name: "conv bias",
        field: "limits.ops.conv_bias",
        ran: "1x1 conv [1,32,1,64] -> [1,8,1,64] with a baked weight and bias=",
        set: |o, v| o.conv_bias = v,
    };
    let weight = ramp(256, 0.0625);
    let program = conv_program(&weight, Some(&ramp(8, 0.5)));
    switch(s, &bias, program, &[ramp(2048, 0.125)], None)?;
    fp32_cast(s, &v64)?;
    multi_record(s, &v64)?;
    sin_cos(s, &v64)?;
    let norm = Switch {
        rule: "C28",
        name: "layer_norm",
        field: "limits.ops.layer_norm",
        ran: "layer_norm over the last axis of an fp16 [1,1,1,64] (no gamma/beta)",
        set: |o, v| o.layer_norm = v,
    };
    let program = Builder::new()
        .input("a00_x", &[1, 1, 1, 64])
        .ints("axes", &[3])
        .scalar("eps", 1e-5)
        .op(
            "z00_y",
            &[1, 1, 1, 64],
            "layer_norm",
            &[("axes", "axes"), ("epsilon", "eps"), ("x", "a00_x")],
        )
        .output("z00_y")
        .build("layer_norm");
    switch(s, &norm, program, &[v64], None)
}

fn fp32_cast(s: &mut Session<'_>, x: &[f32]) -> Step<()> {
    let sw = Switch {
        rule: "C16",
        name: "fp32 I/O with cast",
        field: "limits.ops.fp32_io_cast",
        ran: "fp32 [1,1,1,64] in, cast to fp16, x + x, cast to fp32 out",
        set: |o, v| o.fp32_io_cast = v,
    };
    let program = Builder::new()
        .input_typed("a00_x", DType::F32, &[1, 1, 1, 64])
        .string("to16", "fp16")
        .string("to32", "fp32")
        .op("h", &[1, 1, 1, 64], "cast", &[("dtype", "to16"), ("x", "a00_x")])
        .op("h2", &[1, 1, 1, 64], "add", &[("x", "h"), ("y", "h")])
        .op_typed(
            "z00_y",
            DType::F32,
            &[1, 1, 1, 64],
            "cast",
            &[("dtype", "to32"), ("x", "h2")],
        )
        .output("z00_y")
        .build("fp32 cast");
    switch(s, &sw, program, &[x.to_vec()], None)
}

fn multi_record(s: &mut Session<'_>, x: &[f32]) -> Step<()> {
    let sw = Switch {
        rule: "C17",
        name: "multi-record weight file",
        field: "limits.ops.multi_record_blobs",
        ran: "x + w1 + w2 with w1 and w2 two records of one weight file",
        set: |o, v| o.multi_record_blobs = v,
    };
    let (w1, w2) = (ramp(64, 0.125), ramp(64, -0.5));
    let dims: &[usize] = &[1, 1, 1, 64];
    let program = Builder::new()
        .input("a00_x", dims)
        .weight_file("wb", &[("w1", dims, &w1), ("w2", dims, &w2)])
        .op("h", dims, "add", &[("x", "a00_x"), ("y", "w1")])
        .op("z00_y", dims, "add", &[("x", "h"), ("y", "w2")])
        .output("z00_y")
        .build("multi-record");
    switch(s, &sw, program, &[x.to_vec()], None)
}

/// C31: `sin` and `cos`; the expected values are the host's sin/cos (libm, f32) of the fp16 inputs,
/// rounded to fp16 — computed here independently of the device and the interpreter.
fn sin_cos(s: &mut Session<'_>, x: &[f32]) -> Step<()> {
    let sw = Switch {
        rule: "C31",
        name: "sin/cos",
        field: "limits.ops.sin_cos",
        ran: "sin and cos of an fp16 [1,1,1,64]",
        set: |o, v| o.sin_cos = v,
    };
    let dims: &[usize] = &[1, 1, 1, 64];
    let program = Builder::new()
        .input("a00_x", dims)
        .op("z00_s", dims, "sin", &[("x", "a00_x")])
        .op("z01_c", dims, "cos", &[("x", "a00_x")])
        .output("z00_s")
        .output("z01_c")
        .build("sin/cos");
    let expected = vec![
        x.iter().map(|&v| round16(round16(v).sin())).collect(),
        x.iter().map(|&v| round16(round16(v).cos())).collect(),
    ];
    switch(s, &sw, program, &[x.to_vec()], Some(expected))
}

/// C11: masked attention; on when the outputs follow the mask. The expected values are the CPU's
/// softmax(q·kᵀ/√d + mask)·v.
fn sdpa(s: &mut Session<'_>) -> Step<()> {
    let sw = Switch {
        rule: "C11",
        name: "sdpa mask",
        field: "limits.ops.sdpa_mask_honoured",
        ran: "scaled_dot_product_attention of q, k, v [1,1,16,32] with a causal attn_mask",
        set: |o, v| o.sdpa_mask_honoured = v,
    };
    let (t, d) = (16usize, 32usize);
    let dims: &[usize] = &[1, 1, t, d];
    let (k, q, v) = (
        ramp(t * d, 0.0625),
        ramp(t * d + 5, 0.125)[5..].to_vec(),
        ramp(t * d + 3, 0.25)[3..].to_vec(),
    );
    let mask: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -10_000.0 } else { 0.0 })
        .collect();
    let program = Builder::new()
        .input("a00_k", dims)
        .input("a01_m", &[1, 1, t, t])
        .input("a02_q", dims)
        .input("a03_v", dims)
        .op(
            "z00_o",
            dims,
            "scaled_dot_product_attention",
            &[
                ("attn_mask", "a01_m"),
                ("key", "a00_k"),
                ("query", "a02_q"),
                ("value", "a03_v"),
            ],
        )
        .output("z00_o")
        .build("sdpa");
    let expected = attention(&q, &k, &v, &mask, t, d);
    switch(s, &sw, program, &[k, mask, q, v], Some(vec![expected]))
}

/// softmax(q·kᵀ/√d + mask)·v for `[t, d]` row-major q, k, v and a `[t, t]` mask.
fn attention(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], t: usize, d: usize) -> Vec<f32> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; t * d];
    for i in 0..t {
        let scores: Vec<f64> = (0..t)
            .map(|j| {
                let dot: f64 = (0..d).map(|c| f64::from(q[i * d + c]) * f64::from(k[j * d + c])).sum();
                dot * scale + f64::from(mask[i * t + j])
            })
            .collect();
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|x| (x - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        for c in 0..d {
            let acc: f64 = (0..t).map(|j| weights[j] * f64::from(v[j * d + c])).sum();
            out[i * d + c] = (acc / total) as f32;
        }
    }
    out
}
