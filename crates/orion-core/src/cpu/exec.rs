//! Running a plan: resolving operand locations to views, dispatching each step to its kernel, and
//! rounding F16 results.
//!
//! Invariants: a step's output buffers are moved out of the arena while it runs and moved back
//! afterwards, so operands (other slots, inputs, constants) are borrowed immutably at the same time
//! without copying; the plan guarantees a step never reads a slot it writes. Every mismatch between
//! the plan and the data is a `CoreError::Execute`, never a panic.

use super::attention;
use super::attention_backward::{run_attention_backward, BackwardInputs};
use super::elementwise::{cast_float, holds, int_binary_fn, round_half_all, select, zip_broadcast};
use super::epilogue::Epilogue;
use super::lower::Kernel;
use super::matmul;
use super::plan::{ConstData, Loc, Operand, Plan, Step, Target};
use super::reduce::softmax_rows_in_place;
use super::storage::{kind_error, out_slice, typed_views, Buf, Elem, StorageKind, View};
use crate::error::{CoreError, Result};
use crate::interp::exec_error;
use crate::tensor::{Tensor, TensorData};

/// The elements of `operand`.
pub(crate) fn view<'a>(plan: &'a Plan, operand: &Operand, inputs: &'a [Tensor], arena: &'a [Buf]) -> Result<View<'a>> {
    let n = operand.numel;
    let short = || exec_error("plan", "cpu backend: operand storage is smaller than the value".into());
    match operand.loc {
        Loc::Input(i) => inputs
            .get(i)
            .ok_or_else(short)
            .and_then(|t| tensor_view(t, n).ok_or_else(short)),
        Loc::Const(c) => match plan.consts.get(c).ok_or_else(short)? {
            ConstData::Tensor(t) => tensor_view(t, n).ok_or_else(short),
            ConstData::Half(h) => h.get(..n).map(View::Half).ok_or_else(short),
            ConstData::Packed(_) => Err(exec_error(
                "plan",
                "cpu backend: a packed weight read by a step other than its product".into(),
            )),
        },
        Loc::Slot(s) => match arena.get(s).ok_or_else(short)? {
            Buf::Float(v) => v.get(..n).map(View::Float).ok_or_else(short),
            Buf::I32(v) => v.get(..n).map(View::I32).ok_or_else(short),
            Buf::Bool(v) => v.get(..n).map(View::Bool).ok_or_else(short),
        },
    }
}

fn tensor_view(t: &Tensor, n: usize) -> Option<View<'_>> {
    match t.data() {
        TensorData::Float(v) => v.get(..n).map(View::Float),
        TensorData::I32(v) => v.get(..n).map(View::I32),
        TensorData::Bool(v) => v.get(..n).map(View::Bool),
    }
}

/// Runs one step, writing its outputs into their arena slots.
pub(crate) fn run_step(plan: &Plan, step: &Step, inputs: &[Tensor], arena: &mut [Buf], threads: usize) -> Result<()> {
    let mut outs = Vec::with_capacity(step.outputs.len());
    for t in &step.outputs {
        let slot = arena
            .get_mut(t.slot)
            .ok_or_else(|| exec_error(step.op, "cpu backend: unknown slot".into()))?;
        outs.push(std::mem::take(slot));
    }
    let result = compute(plan, step, inputs, arena, &mut outs, threads);
    for (t, buf) in step.outputs.iter().zip(outs) {
        arena[t.slot] = buf;
    }
    result.map_err(|e| at_value(e, step))
}

fn compute(plan: &Plan, step: &Step, inputs: &[Tensor], arena: &[Buf], outs: &mut [Buf], threads: usize) -> Result<()> {
    let views = step
        .operands
        .iter()
        .map(|o| view(plan, o, inputs, arena))
        .collect::<Result<Vec<_>>>()?;
    let op = step.op;
    let first = step
        .outputs
        .first()
        .ok_or_else(|| exec_error(op, "cpu backend: step without outputs".into()))?;
    let operand = |i: usize| views.get(i).copied().ok_or_else(|| kind_error(op, "an operand"));
    match &step.kernel {
        Kernel::Fused(program) => {
            let leaves = typed_views::<f32>(&views, op)?;
            program.run(&leaves, out_slice(&mut outs[0], first.numel, op)?, threads);
        }
        Kernel::FusedSoftmax(program, plan) => {
            let leaves = typed_views::<f32>(&views, op)?;
            let out = out_slice(&mut outs[0], first.numel, op)?;
            // Inlined into `run_rows`' wide-vector body, so the row softmax runs at its width.
            program.run_rows(
                &leaves,
                out,
                plan.len,
                threads,
                #[inline(always)]
                |rows: &mut [f32]| softmax_rows_in_place(rows, plan.len),
            );
        }
        Kernel::FusedReduce(program, plan) => {
            let leaves = typed_views::<f32>(&views, op)?;
            let out = out_slice(&mut outs[0], first.numel, op)?;
            program.run_reduced(
                &leaves,
                plan.count,
                out,
                threads,
                #[inline(always)]
                |values: &[f32], rows: &mut [f32]| plan.reduce_rows_f32(values, rows),
            );
        }
        Kernel::ScoresSoftmax(p) => attention::run_scores_softmax(
            p,
            operand(0)?.float(op)?,
            operand(1)?.float(op)?,
            out_slice(&mut outs[0], first.numel, op)?,
            threads,
        )?,
        Kernel::AttentionBackward(p) => {
            let float = |i: usize| operand(i).and_then(|v| v.float(op));
            let inputs = BackwardInputs {
                d_o: float(0)?,
                v: float(1)?,
                p: float(2)?,
                k: float(3)?,
                q: float(4)?,
            };
            let numel = |i: usize| step.outputs.get(i).map_or(0, |t| t.numel);
            let [dq, dk, dv] = outs else {
                return Err(kind_error(op, "three outputs"));
            };
            let outputs = (
                out_slice(dq, numel(0), op)?,
                out_slice(dk, numel(1), op)?,
                out_slice(dv, numel(2), op)?,
            );
            run_attention_backward(p, &inputs, outputs, threads)?
        }
        Kernel::MatMul(p) if p.method == matmul::Method::PackedRight => {
            matmul::run_packed(p, operand(0)?, out_slice(&mut outs[0], first.numel, op)?, threads, None)?
        }
        Kernel::MatMulEpilogue(p) => {
            // Operands: the product's left operand (and its weight, unless packed), then the
            // program's leaves but the product.
            let by_gemv = p.product.packed.is_none();
            let mut others = views.iter().skip(if by_gemv { 2 } else { 1 });
            let leaves = (0..p.program.leaves.len())
                .map(|i| match i == p.primary {
                    true => Ok(&[][..]),
                    false => others.next().ok_or_else(|| kind_error(op, "an operand"))?.float(op),
                })
                .collect::<Result<Vec<_>>>()?;
            let epilogue = Epilogue::new(&p.program, leaves, p.primary);
            let out = out_slice(&mut outs[0], first.numel, op)?;
            if by_gemv {
                matmul::run_gemv_epilogue(&p.product, (operand(0)?, operand(1)?), out, threads, &epilogue)?
            } else {
                matmul::run_packed(&p.product, operand(0)?, out, threads, Some(&epilogue))?
            }
        }
        Kernel::MatMul(p) => matmul::run(
            p,
            operand(0)?,
            operand(1)?,
            out_slice(&mut outs[0], first.numel, op)?,
            threads,
        )?,
        Kernel::IntBinary { op: bop, a, b } => {
            let f = int_binary_fn(*bop).ok_or_else(|| exec_error(op, "is not defined on i32 operands".into()))?;
            let (x, y) = (operand(0)?.i32(op)?, operand(1)?.i32(op)?);
            zip_broadcast((x, a), (y, b), out_slice(&mut outs[0], first.numel, op)?, f);
        }
        Kernel::Compare { op: cop, a, b } => {
            let out = out_slice::<bool>(&mut outs[0], first.numel, op)?;
            match (operand(0)?, operand(1)?) {
                (View::Float(x), View::Float(y)) => zip_broadcast((x, a), (y, b), out, |p, q| holds(*cop, p, q)),
                (View::I32(x), View::I32(y)) => zip_broadcast((x, a), (y, b), out, |p, q| holds(*cop, p, q)),
                _ => return Err(kind_error(op, "float or i32 storage on both sides")),
            }
        }
        Kernel::Cast => cast(operand(0)?, &mut outs[0], first.numel, op)?,
        Kernel::Softmax(p) => p.run(
            operand(0)?.float(op)?,
            out_slice(&mut outs[0], first.numel, op)?,
            threads,
        ),
        Kernel::Reduce(p) => match operand(0)? {
            View::Float(x) => p.run(x, out_slice::<f32>(&mut outs[0], first.numel, op)?, threads),
            View::I32(x) => p.run(x, out_slice::<i32>(&mut outs[0], first.numel, op)?, threads),
            View::Half(_) | View::Bool(_) => return Err(kind_error(op, "float or i32 storage")),
        },
        Kernel::ScatterAddRows(p) => {
            let (indices, updates) = (operand(0)?.i32(op)?, operand(1)?.float(op)?);
            p.scatter_add(indices, updates, out_slice(&mut outs[0], first.numel, op)?)?;
        }
        Kernel::Select { .. }
        | Kernel::Copy(_)
        | Kernel::Concat(_)
        | Kernel::Split(_)
        | Kernel::Pad(_)
        | Kernel::Gather(_) => match kind_of(&outs[0]) {
            StorageKind::Float => movement::<f32>(step, &views, outs, threads)?,
            StorageKind::I32 => movement::<i32>(step, &views, outs, threads)?,
            StorageKind::Bool => movement::<bool>(step, &views, outs, threads)?,
        },
    }
    for (t, buf) in step.outputs.iter().zip(outs.iter_mut()) {
        if t.round_half {
            round_half_all(out_slice(buf, t.numel, op)?);
        }
    }
    Ok(())
}

fn kind_of(buf: &Buf) -> StorageKind {
    match buf {
        Buf::Float(_) => StorageKind::Float,
        Buf::I32(_) => StorageKind::I32,
        Buf::Bool(_) => StorageKind::Bool,
    }
}

/// Kernels that move elements of any kind `T` (plus select, which picks them); large copies, concats
/// and splits use up to `threads` rayon tasks.
fn movement<T: Elem>(step: &Step, views: &[View<'_>], outs: &mut [Buf], threads: usize) -> Result<()> {
    let op = step.op;
    let target = |i: usize| -> Result<&Target> { step.outputs.get(i).ok_or_else(|| kind_error(op, "an output")) };
    if let Kernel::Split(p) = &step.kernel {
        let src = typed_views::<T>(views, op)?;
        let src = src.first().ok_or_else(|| kind_error(op, "an operand"))?;
        for (i, buf) in outs.iter_mut().enumerate() {
            p.run_piece(i, src, out_slice::<T>(buf, target(i)?.numel, op)?, threads);
        }
        return Ok(());
    }
    let out = out_slice::<T>(&mut outs[0], target(0)?.numel, op)?;
    let typed = |i: usize| -> Result<&[T]> {
        views
            .get(i)
            .and_then(|&v| T::from_view(v))
            .ok_or_else(|| kind_error(op, "the planned kind"))
    };
    match &step.kernel {
        Kernel::Copy(c) => c.apply_parallel(typed(0)?, out, threads),
        Kernel::Concat(p) => p.run(&typed_views::<T>(views, op)?, out, threads),
        Kernel::Pad(p) => p.run(typed(0)?, out),
        Kernel::Gather(p) => {
            let indices = views.get(1).ok_or_else(|| kind_error(op, "indices"))?.i32(op)?;
            p.gather(typed(0)?, indices, out)?;
        }
        Kernel::Select { cond, a, b } => {
            let flags = views.first().ok_or_else(|| kind_error(op, "a condition"))?.bool(op)?;
            select((flags, cond), (typed(1)?, a), (typed(2)?, b), out);
        }
        Kernel::Split(_)
        | Kernel::Fused(_)
        | Kernel::MatMul(_)
        | Kernel::MatMulEpilogue(_)
        | Kernel::IntBinary { .. }
        | Kernel::Compare { .. }
        | Kernel::Cast
        | Kernel::Softmax(_)
        | Kernel::FusedSoftmax(..)
        | Kernel::FusedReduce(..)
        | Kernel::ScoresSoftmax(_)
        | Kernel::AttentionBackward(_)
        | Kernel::Reduce(_)
        | Kernel::ScatterAddRows(_) => return Err(kind_error(op, "a data-movement kernel")),
    }
    Ok(())
}

/// Element type conversion by the interpreter's rules (float -> i32 truncates and saturates,
/// NaN -> 0; anything -> bool is `x != 0`; bool -> number is 0/1).
fn cast(src: View<'_>, out: &mut Buf, numel: usize, op: &str) -> Result<()> {
    match (src, kind_of(out)) {
        (View::Float(v), StorageKind::Float) => out_slice::<f32>(out, numel, op)?.copy_from_slice(v),
        (View::Float(v), StorageKind::I32) => cast_float(v, out_slice::<i32>(out, numel, op)?, |x| x as i32),
        (View::Float(v), StorageKind::Bool) => cast_float(v, out_slice::<bool>(out, numel, op)?, |x| x != 0.0),
        (View::I32(v), _) => convert(v, out, numel, op, (|x| x as f32, |x| x, |x| x != 0))?,
        (View::Bool(v), _) => convert(v, out, numel, op, (|x| f32::from(u8::from(x)), i32::from, |x| x))?,
        (View::Half(_), _) => return Err(kind_error(op, "tensor storage")),
    }
    Ok(())
}

/// Converts `src` into `out`'s kind with the conversion to float, i32 or bool.
fn convert<S: Copy, F: Fn(S) -> f32, I: Fn(S) -> i32, B: Fn(S) -> bool>(
    src: &[S],
    out: &mut Buf,
    numel: usize,
    op: &str,
    (to_float, to_i32, to_bool): (F, I, B),
) -> Result<()> {
    fn apply<S: Copy, R>(src: &[S], out: &mut [R], f: impl Fn(S) -> R) {
        for (o, &x) in out.iter_mut().zip(src) {
            *o = f(x);
        }
    }
    match kind_of(out) {
        StorageKind::Float => apply(src, out_slice::<f32>(out, numel, op)?, to_float),
        StorageKind::I32 => apply(src, out_slice::<i32>(out, numel, op)?, to_i32),
        StorageKind::Bool => apply(src, out_slice::<bool>(out, numel, op)?, to_bool),
    }
    Ok(())
}

/// Adds the step's first value to an execution error, as the interpreter does.
fn at_value(error: CoreError, step: &Step) -> CoreError {
    match error {
        CoreError::Execute { op, message } => CoreError::Execute {
            op,
            message: format!("at {}: {message}", step.value),
        },
        other => other,
    }
}
