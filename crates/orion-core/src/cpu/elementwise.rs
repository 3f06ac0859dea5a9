//! Elementwise kernels of the CPU backend: the fused float program (a small register bytecode run
//! over blocks of the output), and the non-float elementwise ops (i32 arithmetic, comparisons,
//! select, casts).
//!
//! A [`FusedProgram`] evaluates a tree of float unary/binary ops and f32→f16 casts as one loop:
//! for each block of `BLOCK` output elements it loads every leaf operand (broadcast as needed)
//! into a register, runs the instructions register to register, and stores the last register.
//! Registers are in SSA order: leaves first, then one per instruction, so an instruction only reads
//! registers below the one it writes.
//!
//! Invariants: every formula is the interpreter's (same NaN rules; the same f32 functions except
//! `exp`, `tanh` and `sigmoid`, which use the vectorised [`super::vmath`] versions, within a few ulp),
//! so a fused program gives bit-identical results to the unfused ops; an instruction whose op has dtype F16
//! rounds its register to half, as the interpreter rounds an F16 result. Large outputs are split
//! into chunks of whole blocks across rayon tasks; each output element is computed by one task.

use super::strided::Broadcaster;
use super::vmath::{self, Func};
use crate::interp::erf;
use crate::op::{BinaryOp, CompareOp, UnaryOp};
use crate::types::DType;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Output elements processed per register block.
pub(crate) const BLOCK: usize = 256;
/// Output elements from which a fused program is split across threads.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// One instruction of a fused program; operands and results are register numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Instr {
    Unary {
        op: UnaryOp,
        src: usize,
        round: bool,
    },
    Binary {
        op: BinaryOp,
        a: usize,
        b: usize,
        round: bool,
    },
    /// An f32 → f16 cast: rounds to half.
    RoundHalf {
        src: usize,
    },
}

/// A fused chain of float elementwise ops over an output of `numel` elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FusedProgram {
    /// How each leaf operand (register `i` for leaf `i`) is read.
    pub leaves: Vec<Broadcaster>,
    /// Instruction `j` writes register `leaves.len() + j`; the last one is the result.
    pub instrs: Vec<Instr>,
    pub numel: usize,
}

impl FusedProgram {
    /// Evaluates the program on leaf data `leaves` into `out` (`numel` elements).
    pub(crate) fn run(&self, leaves: &[&[f32]], out: &mut [f32], threads: usize) {
        if threads > 1 && out.len() >= PAR_MIN_ELEMENTS {
            let blocks = out.len().div_ceil(BLOCK);
            let chunk = blocks.div_ceil(threads * 4) * BLOCK;
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(c, o)| self.run_range(leaves, c * chunk, o));
        } else {
            self.run_range(leaves, 0, out);
        }
    }

    /// Output elements `start..start + out.len()`. A leaf with the output's shape is read in place
    /// (not copied into its register) and the last instruction writes straight into `out`.
    fn run_range(&self, leaves: &[&[f32]], start: usize, out: &mut [f32]) {
        let registers = self.leaves.len() + self.instrs.len();
        let mut regs = vec![0.0f32; registers * BLOCK];
        let mut halves = vec![f16::ZERO; BLOCK];
        let in_place: Vec<bool> = match self.instrs.is_empty() {
            true => vec![false; self.leaves.len()],
            false => self.leaves.iter().map(Broadcaster::is_identity).collect(),
        };
        for (b, out_block) in out.chunks_mut(BLOCK).enumerate() {
            let position = start + b * BLOCK;
            let len = out_block.len();
            for (i, (reader, data)) in self.leaves.iter().zip(leaves).enumerate() {
                if !in_place[i] {
                    reader.gather(data, position, &mut regs[i * BLOCK..i * BLOCK + len]);
                }
            }
            for (j, instr) in self.instrs.iter().enumerate() {
                let dst = self.leaves.len() + j;
                let (below, above) = regs.split_at_mut(dst * BLOCK);
                let result: &mut [f32] = match dst + 1 == registers {
                    true => &mut out_block[..],
                    false => &mut above[..len],
                };
                let reg = |r: usize| match in_place.get(r) {
                    Some(true) => &leaves[r][position..position + len],
                    _ => &below[r * BLOCK..r * BLOCK + len],
                };
                run_instr(*instr, reg, result, &mut halves);
            }
            if self.instrs.is_empty() {
                let last = registers - 1;
                out_block.copy_from_slice(&regs[last * BLOCK..last * BLOCK + len]);
            }
        }
    }
}

/// One instruction on one block: `reg(r)` reads register `r`, the result goes to `result`.
fn run_instr<'a>(instr: Instr, reg: impl Fn(usize) -> &'a [f32], result: &mut [f32], halves: &mut [f16]) {
    match instr {
        Instr::Unary { op, src, round } => {
            unary(op, reg(src), result);
            if round {
                round_half(result, halves);
            }
        }
        Instr::Binary { op, a, b, round } => {
            binary(op, reg(a), reg(b), result);
            if round {
                round_half(result, halves);
            }
        }
        Instr::RoundHalf { src } => {
            result.copy_from_slice(reg(src));
            round_half(result, halves);
        }
    }
}

/// Rounds every element to the nearest half value (ties to even), using `scratch` for the halves.
pub(crate) fn round_half(values: &mut [f32], scratch: &mut [f16]) {
    if scratch.is_empty() {
        values.iter_mut().for_each(|v| *v = crate::tensor::round_to_f16(*v));
        return;
    }
    for chunk in values.chunks_mut(scratch.len()) {
        let halves = &mut scratch[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        halves.convert_to_f32_slice(chunk);
    }
}

/// Rounds a whole output to half (for F16 results of non-fused kernels).
pub(crate) fn round_half_all(values: &mut [f32]) {
    let mut scratch = vec![f16::ZERO; BLOCK.min(values.len()).max(1)];
    round_half(values, &mut scratch);
}

fn map(src: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

fn zip(a: &[f32], b: &[f32], dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for (d, (&x, &y)) in dst.iter_mut().zip(a.iter().zip(b)) {
        *d = f(x, y);
    }
}

/// The interpreter's unary formulas, one monomorphic loop each; `exp`, `tanh` and `sigmoid` through
/// the vectorised functions of [`super::vmath`] (within a few ulp of the interpreter's).
fn unary(op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    match op {
        UnaryOp::Neg => map(src, dst, |x| -x),
        UnaryOp::Exp => vmath::map(Func::Exp, src, dst),
        UnaryOp::Log => map(src, dst, f32::ln),
        UnaryOp::Sqrt => map(src, dst, f32::sqrt),
        UnaryOp::Rsqrt => map(src, dst, |x| 1.0 / x.sqrt()),
        UnaryOp::Reciprocal => map(src, dst, |x| 1.0 / x),
        UnaryOp::Tanh => vmath::map(Func::Tanh, src, dst),
        UnaryOp::Sigmoid => vmath::map(Func::Sigmoid, src, dst),
        UnaryOp::Relu => map(src, dst, |x| if x < 0.0 { 0.0 } else { x }),
        UnaryOp::Erf => map(src, dst, erf),
        UnaryOp::Sin => map(src, dst, f32::sin),
        UnaryOp::Cos => map(src, dst, f32::cos),
    }
}

/// The interpreter's binary formulas (maximum/minimum propagate NaN).
fn binary(op: BinaryOp, a: &[f32], b: &[f32], dst: &mut [f32]) {
    match op {
        BinaryOp::Add => zip(a, b, dst, |x, y| x + y),
        BinaryOp::Sub => zip(a, b, dst, |x, y| x - y),
        BinaryOp::Mul => zip(a, b, dst, |x, y| x * y),
        BinaryOp::Div => zip(a, b, dst, |x, y| x / y),
        BinaryOp::Maximum => zip(a, b, dst, max_nan),
        BinaryOp::Minimum => zip(a, b, dst, min_nan),
        BinaryOp::Pow => zip(a, b, dst, f32::powf),
    }
}

/// The larger of two floats; NaN if either is NaN.
pub(crate) fn max_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// The smaller of two floats; NaN if either is NaN.
fn min_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.min(y)
    }
}

/// The i32 form of `op` (wrapping arithmetic), or `None` where shape inference forbids i32.
pub(crate) fn int_binary_fn(op: BinaryOp) -> Option<fn(i32, i32) -> i32> {
    match op {
        BinaryOp::Add => Some(i32::wrapping_add),
        BinaryOp::Sub => Some(i32::wrapping_sub),
        BinaryOp::Mul => Some(i32::wrapping_mul),
        BinaryOp::Maximum => Some(|x, y| x.max(y)),
        BinaryOp::Minimum => Some(|x, y| x.min(y)),
        BinaryOp::Div | BinaryOp::Pow => None,
    }
}

/// `op` on two values; IEEE semantics for floats (anything compared with NaN is false).
pub(crate) fn holds<T: PartialOrd>(op: CompareOp, x: T, y: T) -> bool {
    match op {
        CompareOp::Equal => x == y,
        CompareOp::Less => x < y,
        CompareOp::LessEqual => x <= y,
        CompareOp::Greater => x > y,
        CompareOp::GreaterEqual => x >= y,
    }
}

/// `out[i] = f(a[i], b[i])` over broadcast operands, in blocks.
pub(crate) fn zip_broadcast<A: Copy + Default, B: Copy + Default, R>(
    (a, a_reader): (&[A], &Broadcaster),
    (b, b_reader): (&[B], &Broadcaster),
    out: &mut [R],
    f: impl Fn(A, B) -> R,
) {
    let mut ab = [A::default(); BLOCK];
    let mut bb = [B::default(); BLOCK];
    for (i, block) in out.chunks_mut(BLOCK).enumerate() {
        let (start, len) = (i * BLOCK, block.len());
        a_reader.gather(a, start, &mut ab[..len]);
        b_reader.gather(b, start, &mut bb[..len]);
        for (o, (&x, &y)) in block.iter_mut().zip(ab.iter().zip(&bb)) {
            *o = f(x, y);
        }
    }
}

/// `out[i] = cond[i] ? a[i] : b[i]` over broadcast operands, in blocks.
pub(crate) fn select<T: Copy + Default>(
    (cond, c_reader): (&[bool], &Broadcaster),
    (a, a_reader): (&[T], &Broadcaster),
    (b, b_reader): (&[T], &Broadcaster),
    out: &mut [T],
) {
    let mut cb = [false; BLOCK];
    let mut ab = [T::default(); BLOCK];
    let mut bb = [T::default(); BLOCK];
    for (i, block) in out.chunks_mut(BLOCK).enumerate() {
        let (start, len) = (i * BLOCK, block.len());
        c_reader.gather(cond, start, &mut cb[..len]);
        a_reader.gather(a, start, &mut ab[..len]);
        b_reader.gather(b, start, &mut bb[..len]);
        for (j, o) in block.iter_mut().enumerate() {
            *o = if cb[j] { ab[j] } else { bb[j] };
        }
    }
}

/// Float elements cast to `to`'s storage (the interpreter's rules).
pub(crate) fn cast_float<R>(src: &[f32], out: &mut [R], f: impl Fn(f32) -> R) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = f(x);
    }
}

/// True when a cast from `from` to `to` leaves every element's value unchanged (an alias).
pub(crate) fn cast_is_alias(from: DType, to: DType) -> bool {
    match (from, to) {
        (DType::F32, DType::F32) | (DType::F16, DType::F16 | DType::F32) => true,
        (DType::I32, DType::I32) | (DType::Bool, DType::Bool) => true,
        (DType::F32, DType::F16 | DType::I32 | DType::Bool)
        | (DType::F16, DType::I32 | DType::Bool)
        | (DType::I32, DType::F32 | DType::F16 | DType::Bool)
        | (DType::Bool, DType::F32 | DType::F16 | DType::I32) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_program_evaluates_in_ssa_order_with_broadcast_leaves() {
        // (x + c) * x with x [2, 3] and c [3]: registers 0 = x, 1 = c, 2 = x + c, 3 = (x + c) * x.
        let program = FusedProgram {
            leaves: vec![Broadcaster::new(&[2, 3], &[2, 3]), Broadcaster::new(&[3], &[2, 3])],
            instrs: vec![
                Instr::Binary {
                    op: BinaryOp::Add,
                    a: 0,
                    b: 1,
                    round: false,
                },
                Instr::Binary {
                    op: BinaryOp::Mul,
                    a: 2,
                    b: 0,
                    round: false,
                },
            ],
            numel: 6,
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let c = [10.0, 20.0, 30.0];
        let mut out = [0.0; 6];
        program.run(&[&x, &c], &mut out, 1);
        let expected: Vec<f32> = (0..6).map(|i| (x[i] + c[i % 3]) * x[i]).collect();
        assert_eq!(out.to_vec(), expected);
    }

    #[test]
    fn round_half_rounds_to_nearest_even() {
        let mut v = [1.0 + 1.0 / 4096.0, 70000.0, 0.1];
        round_half_all(&mut v);
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_infinite());
        assert_eq!(v[2], f16::from_f32(0.1).to_f32());
    }
}
