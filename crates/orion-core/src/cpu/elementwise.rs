//! Elementwise kernels of the CPU backend: the fused float program (a small register bytecode run
//! over blocks of the output), and the non-float elementwise ops (i32 arithmetic, comparisons,
//! select, casts).
//!
//! A [`FusedProgram`] evaluates a tree of float unary/binary ops and f32→f16 casts as one loop
//! over blocks of at most `FUSED_BLOCK` output elements, running each instruction over the whole
//! block. Registers are in SSA order (leaves first, then one per instruction, so an instruction
//! only reads registers below the one it writes); per block a register is a slice read in place
//! (a leaf of the output's shape, or a repeated row vector while the block stays in one row), a
//! scalar (a one-element leaf, or a keep-dims reduction's value while the block stays in one run),
//! or a scratch slot (gathered leaves and intermediates; slots are reused after a register's last
//! use). Blocks end at multiples of the shortest row/run period (≥ `MIN_PERIOD`), so those leaves
//! are rarely gathered. An instruction whose operands are all scalars yields a scalar, computed by
//! the same loop on one element. The whole block loop runs inside [`vmath::with_wide_vectors`], so
//! it uses AVX-512 (or AVX2) registers when the CPU has them.
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

/// Elements per block of the non-fused broadcast kernels (`zip_broadcast`, `select`) and of the
/// half-rounding scratch.
pub(crate) const BLOCK: usize = 256;
/// Output elements per block of a fused program, at most (blocks also end at a broadcast period).
const FUSED_BLOCK: usize = 1024;
/// Output elements from which a fused program is split across threads.
const PAR_MIN_ELEMENTS: usize = 1 << 15;
/// Elements [`FusedProgram::run_rows`] evaluates before handing them on (whole rows; 32 KB, so a
/// block is still in the core's cache when it is finished).
const ROW_BLOCK: usize = 1 << 13;
/// Shortest broadcast period (the length of a repeated row vector, or the run of output elements
/// sharing one value of a keep-dims reduction) along which blocks are cut so the leaf is read in
/// place or as a scalar; leaves with shorter periods are gathered.
const MIN_PERIOD: usize = 256;

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

impl Instr {
    /// The registers the instruction reads (a repeated operand twice).
    pub(crate) fn sources(&self) -> [Option<usize>; 2] {
        match *self {
            Instr::Unary { src, .. } | Instr::RoundHalf { src } => [Some(src), None],
            Instr::Binary { a, b, .. } => [Some(a), Some(b)],
        }
    }
}

/// A leaf read with the halves of its last axis swapped, each optionally negated: element `j` of a
/// row of `2·half` is `±x[j + half]` for `j < half` and `±x[j − half]` after. RoPE's
/// `rotate_half` (`concat(−x₂, x₁)`) and the transpose its backward applies (`concat(x₂, −x₁)`),
/// read straight from `x` instead of from the split, negated and concatenated copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HalfRotation {
    pub half: usize,
    pub negate_first: bool,
    pub negate_second: bool,
}

impl HalfRotation {
    /// Elements `start..start + dst.len()` of the rotated `x` (same shape as the output).
    #[inline(always)]
    fn gather(self, x: &[f32], start: usize, dst: &mut [f32]) {
        let row = 2 * self.half;
        let mut written = 0;
        while written < dst.len() {
            let position = start + written;
            let j = position % row;
            let (from, negate, end) = if j < self.half {
                (position + self.half, self.negate_first, self.half)
            } else {
                (position - self.half, self.negate_second, row)
            };
            let run = (end - j).min(dst.len() - written);
            let out = &mut dst[written..written + run];
            let src = &x[from..from + run];
            if negate {
                out.iter_mut().zip(src).for_each(|(o, &v)| *o = -v);
            } else {
                out.copy_from_slice(src);
            }
            written += run;
        }
    }
}

/// A fused chain of float elementwise ops over an output of `numel` elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FusedProgram {
    /// How each leaf operand (register `i` for leaf `i`) is read.
    pub leaves: Vec<Broadcaster>,
    /// Per leaf: read with its last axis half-rotated (its broadcaster is then the identity).
    pub rotations: Vec<Option<HalfRotation>>,
    /// Instruction `j` writes register `leaves.len() + j`; the last one is the result.
    pub instrs: Vec<Instr>,
    pub numel: usize,
}

/// How a leaf is read for a block, decided once per run from its broadcast pattern; `slot` is the
/// scratch register it is gathered into when it cannot be read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeafRead {
    /// The output's shape: read in place.
    Dense,
    /// One element: a scalar operand.
    Scalar,
    /// A vector of `period` elements repeated along the output: read in place while a block stays
    /// inside one period.
    Rows { period: usize, slot: usize },
    /// One value per run of `period` output elements (a keep-dims reduction): a scalar while a block
    /// stays inside one run.
    Columns { period: usize, slot: usize },
    /// Anything else: gathered.
    Gather { slot: usize },
    /// Half-rotated along the last axis: gathered.
    Rotated { rotation: HalfRotation, slot: usize },
}

/// Per run: how leaves are read, where every intermediate lives, and where blocks are cut.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Layout {
    reads: Vec<LeafRead>,
    /// Scratch slot of each instruction's result (`None` for the last, written to the output).
    results: Vec<Option<usize>>,
    slot_count: usize,
    /// Blocks end at multiples of this (the shortest row or column period of the leaves).
    period: Option<usize>,
}

/// The value of a register within one block.
#[derive(Clone, Copy, Debug)]
enum Val<'a> {
    /// Leaf elements read in place.
    Data(&'a [f32]),
    /// One value for every element of the block.
    Scalar(f32),
    /// Held in scratch slot `s`.
    Slot(usize),
}

/// One operand of an instruction on a block.
#[derive(Clone, Copy, Debug)]
enum Operand<'b> {
    Vector(&'b [f32]),
    Scalar(f32),
}

impl FusedProgram {
    /// Evaluates the program on leaf data `leaves` into `out` (`numel` elements).
    pub(crate) fn run(&self, leaves: &[&[f32]], out: &mut [f32], threads: usize) {
        let layout = self.layout(&lengths(leaves));
        let work = out.len();
        in_parts(out, FUSED_BLOCK, work, threads, |start, o| {
            vmath::with_wide_vectors(
                #[inline(always)]
                || self.run_range(&layout, leaves, start, o, None),
            )
        });
    }

    /// Evaluates the program into `out` a block of whole `row`-element rows at a time and applies
    /// `finish` to each block as soon as it is written, while it is still in cache (the fused
    /// softmax normalises its rows this way). Every element gets the value [`FusedProgram::run`]
    /// writes (the program is elementwise); only where the work is cut differs.
    pub(crate) fn run_rows(
        &self,
        leaves: &[&[f32]],
        out: &mut [f32],
        row: usize,
        threads: usize,
        finish: impl Fn(&mut [f32]) + Sync,
    ) {
        if row == 0 || out.is_empty() {
            return;
        }
        let layout = self.layout(&lengths(leaves));
        let block = (ROW_BLOCK / row).max(1) * row;
        let work = out.len();
        in_parts(out, block, work, threads, |start, o| {
            vmath::with_wide_vectors(
                #[inline(always)]
                || {
                    for (i, b) in o.chunks_mut(block).enumerate() {
                        self.run_range(&layout, leaves, start + i * block, b, None);
                        finish(b);
                    }
                },
            )
        });
    }

    /// Evaluates the program a block of whole `row`-element rows at a time into a scratch block and
    /// hands each block with its rows' outputs (`out` holds one element per row) to `reduce`, while
    /// the block is still in cache (the fused reduction). Every element gets the value
    /// [`FusedProgram::run`] writes.
    pub(crate) fn run_reduced(
        &self,
        leaves: &[&[f32]],
        row: usize,
        out: &mut [f32],
        threads: usize,
        reduce: impl Fn(&[f32], &mut [f32]) + Sync,
    ) {
        if row == 0 || out.is_empty() {
            return;
        }
        let layout = self.layout(&lengths(leaves));
        let rows_per_block = (ROW_BLOCK / row).max(1);
        let work = out.len() * row;
        in_parts(out, rows_per_block, work, threads, |first_row, o| {
            let mut scratch = vec![0.0f32; rows_per_block.min(o.len()) * row];
            vmath::with_wide_vectors(
                #[inline(always)]
                || {
                    for (i, rows) in o.chunks_mut(rows_per_block).enumerate() {
                        let values = &mut scratch[..rows.len() * row];
                        self.run_range(&layout, leaves, (first_row + i * rows_per_block) * row, values, None);
                        reduce(values, rows);
                    }
                },
            )
        });
    }

    /// Classifies the leaves (of `lengths` elements each) and assigns scratch slots: every leaf
    /// that may need gathering gets its own; an instruction's result takes a free slot before its
    /// operands' slots are released (after their last use), so a result never shares a slot with
    /// an operand.
    pub(super) fn layout(&self, lengths: &[usize]) -> Layout {
        let mut slot_count = 0;
        let mut free: Vec<usize> = Vec::new();
        let mut take = |free: &mut Vec<usize>| {
            free.pop().unwrap_or_else(|| {
                slot_count += 1;
                slot_count - 1
            })
        };
        let reads: Vec<LeafRead> = self
            .leaves
            .iter()
            .zip(lengths)
            .zip(&self.rotations)
            .map(|((reader, &len), rotation)| match rotation {
                Some(rotation) if rotation.half > 0 && len >= self.numel => LeafRead::Rotated {
                    rotation: *rotation,
                    slot: take(&mut free),
                },
                _ => classify(reader, len, self.numel, || take(&mut free)),
            })
            .collect();
        let period = reads
            .iter()
            .filter_map(|r| match *r {
                LeafRead::Rows { period, .. } | LeafRead::Columns { period, .. } => Some(period),
                LeafRead::Dense | LeafRead::Scalar | LeafRead::Gather { .. } | LeafRead::Rotated { .. } => None,
            })
            .min();
        let registers = self.leaves.len() + self.instrs.len();
        let mut last_use = vec![usize::MAX; registers];
        for (j, instr) in self.instrs.iter().enumerate() {
            instr.sources().into_iter().flatten().for_each(|r| last_use[r] = j);
        }
        let mut slot_of: Vec<Option<usize>> = reads
            .iter()
            .map(|r| match *r {
                LeafRead::Rows { slot, .. }
                | LeafRead::Columns { slot, .. }
                | LeafRead::Gather { slot }
                | LeafRead::Rotated { slot, .. } => Some(slot),
                LeafRead::Dense | LeafRead::Scalar => None,
            })
            .collect();
        for (j, instr) in self.instrs.iter().enumerate() {
            let result = (j + 1 < self.instrs.len()).then(|| take(&mut free));
            slot_of.push(result);
            let [a, b] = instr.sources();
            for r in [a, b.filter(|&b| Some(b) != a)].into_iter().flatten() {
                if let (true, Some(s)) = (last_use[r] == j, slot_of[r]) {
                    free.push(s);
                }
            }
        }
        Layout {
            reads,
            results: slot_of.split_off(self.leaves.len()),
            slot_count,
            period,
        }
    }

    /// Output elements `start..start + out.len()`, block by block; a block ends at `FUSED_BLOCK`
    /// elements or at a multiple of the layout's period, whichever comes first.
    ///
    /// With `window = Some((leaf, values))`, that leaf (read densely) takes its elements from
    /// `values`, which holds the leaf's elements `start..start + out.len()` (a product's epilogue:
    /// the product's rows, see [`super::epilogue`]); its entry in `leaves` is not read.
    #[inline(always)]
    pub(super) fn run_range(
        &self,
        layout: &Layout,
        leaves: &[&[f32]],
        start: usize,
        out: &mut [f32],
        window: Option<(usize, &[f32])>,
    ) {
        // The thread's scratch blocks, reused between calls (a product's epilogue calls this once
        // per row part, where allocating them each time cost more than the work).
        let (mut slots, mut halves) = RANGE_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        slots.resize_with(layout.slot_count, || vec![0.0f32; FUSED_BLOCK]);
        halves.resize(FUSED_BLOCK, f16::ZERO);
        let mut vals: Vec<Val<'_>> = Vec::with_capacity(self.leaves.len() + self.instrs.len());
        let mut done = 0;
        while done < out.len() {
            let position = start + done;
            let mut len = (out.len() - done).min(FUSED_BLOCK);
            if let Some(period) = layout.period {
                len = len.min(period - position % period);
            }
            let block = &mut out[done..done + len];
            vals.clear();
            for (i, ((reader, &data), read)) in self.leaves.iter().zip(leaves).zip(&layout.reads).enumerate() {
                vals.push(match window {
                    Some((leaf, values)) if leaf == i => Val::Data(&values[done..done + len]),
                    _ => leaf_value(reader, data, *read, position, len, &mut slots),
                });
            }
            for (instr, result) in self.instrs.iter().zip(&layout.results) {
                let value = match *result {
                    Some(s) => {
                        let mut buf = std::mem::take(&mut slots[s]);
                        let value = eval(*instr, &vals, &slots, &mut buf[..len], &mut halves);
                        slots[s] = buf;
                        value.map_or(Val::Slot(s), Val::Scalar)
                    }
                    None => match eval(*instr, &vals, &slots, block, &mut halves) {
                        Some(v) => {
                            block.fill(v);
                            Val::Scalar(v)
                        }
                        None => Val::Scalar(0.0), // the result is in the output; never read again
                    },
                };
                vals.push(value);
            }
            if self.instrs.is_empty() {
                match vals.first() {
                    Some(&v) => match operand(v, &slots, len) {
                        Operand::Vector(v) => block.copy_from_slice(v),
                        Operand::Scalar(x) => block.fill(x),
                    },
                    None => block.fill(0.0),
                }
            }
            done += len;
        }
        RANGE_SCRATCH.with(|s| *s.borrow_mut() = (slots, halves));
    }
}

thread_local! {
    /// [`FusedProgram::run_range`]'s scratch slots and half-rounding buffer, kept between calls.
    static RANGE_SCRATCH: std::cell::RefCell<(Vec<Vec<f32>>, Vec<f16>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The element count of each leaf.
fn lengths(leaves: &[&[f32]]) -> Vec<usize> {
    leaves.iter().map(|l| l.len()).collect()
}

/// Calls `range(first, part)` on consecutive parts of `out` (`first`: the part's offset), cut at
/// multiples of `unit` elements: about four parts per thread, in parallel, when `threads > 1` and
/// the call computes at least `PAR_MIN_ELEMENTS` values (`work`); otherwise once, on all of `out`.
fn in_parts(out: &mut [f32], unit: usize, work: usize, threads: usize, range: impl Fn(usize, &mut [f32]) + Sync) {
    if threads > 1 && work >= PAR_MIN_ELEMENTS {
        let chunk = out.len().div_ceil(unit).div_ceil(threads * 4) * unit;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| range(c * chunk, o));
    } else {
        range(0, out);
    }
}

/// How a leaf with `len` elements read through `reader` into an output of `numel` elements is
/// read; `slot` allocates its scratch slot when it may need one.
fn classify(reader: &Broadcaster, len: usize, numel: usize, slot: impl FnOnce() -> usize) -> LeafRead {
    if reader.is_identity() {
        return LeafRead::Dense;
    }
    if len == 1 {
        return LeafRead::Scalar;
    }
    let slot = slot();
    if len == 0 || !numel.is_multiple_of(len) {
        return LeafRead::Gather { slot };
    }
    let others = numel / len;
    if len >= MIN_PERIOD && *reader == Broadcaster::new(&[len], &[others, len]) {
        LeafRead::Rows { period: len, slot }
    } else if others >= MIN_PERIOD && *reader == Broadcaster::new(&[len, 1], &[len, others]) {
        LeafRead::Columns { period: others, slot }
    } else {
        LeafRead::Gather { slot }
    }
}

/// The value of a leaf on the block `position..position + len`, gathering it into its slot when it
/// cannot be read in place.
#[inline(always)]
fn leaf_value<'a>(
    reader: &Broadcaster,
    data: &'a [f32],
    read: LeafRead,
    position: usize,
    len: usize,
    slots: &mut [Vec<f32>],
) -> Val<'a> {
    match read {
        LeafRead::Dense => Val::Data(&data[position..position + len]),
        LeafRead::Scalar => Val::Scalar(data[0]),
        LeafRead::Rows { period, .. } if position % period + len <= period => {
            Val::Data(&data[position % period..position % period + len])
        }
        LeafRead::Columns { period, .. } if position / period == (position + len - 1) / period => {
            Val::Scalar(data[position / period])
        }
        LeafRead::Rotated { rotation, slot } => {
            rotation.gather(data, position, &mut slots[slot][..len]);
            Val::Slot(slot)
        }
        LeafRead::Rows { slot, .. } | LeafRead::Columns { slot, .. } | LeafRead::Gather { slot } => {
            reader.gather(data, position, &mut slots[slot][..len]);
            Val::Slot(slot)
        }
    }
}

/// The operand a register value gives on a block of `len` elements.
#[inline(always)]
fn operand<'b>(value: Val<'b>, slots: &'b [Vec<f32>], len: usize) -> Operand<'b> {
    match value {
        Val::Data(d) => Operand::Vector(d),
        Val::Scalar(x) => Operand::Scalar(x),
        Val::Slot(s) => Operand::Vector(&slots[s][..len]),
    }
}

/// One instruction on one block. Writes `dst` and returns `None`, or, when every operand is a
/// scalar, returns the scalar result (computed by the same loop on one element) and leaves `dst`.
#[inline(always)]
fn eval(instr: Instr, vals: &[Val<'_>], slots: &[Vec<f32>], dst: &mut [f32], halves: &mut [f16]) -> Option<f32> {
    let len = dst.len();
    let reg = |r: usize| {
        vals.get(r)
            .map_or(Operand::Scalar(f32::NAN), |&v| operand(v, slots, len))
    };
    let mut one = [0.0f32];
    let (op_a, op_b) = match instr {
        Instr::Unary { src, .. } | Instr::RoundHalf { src } => (reg(src), Operand::Scalar(0.0)),
        Instr::Binary { a, b, .. } => (reg(a), reg(b)),
    };
    let scalar = matches!((op_a, op_b), (Operand::Scalar(_), Operand::Scalar(_)));
    let result: &mut [f32] = if scalar { &mut one } else { dst };
    let round = match instr {
        Instr::Unary { op, round, .. } => {
            match op_a {
                Operand::Vector(src) => unary(op, src, result),
                Operand::Scalar(x) => unary(op, &[x], result),
            }
            round
        }
        Instr::Binary { op, round, .. } => {
            binary(op, op_a, op_b, result);
            round
        }
        Instr::RoundHalf { .. } => {
            match op_a {
                Operand::Vector(src) => result.copy_from_slice(src),
                Operand::Scalar(x) => result.fill(x),
            }
            true
        }
    };
    if round {
        round_half(result, halves);
    }
    scalar.then_some(one[0])
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

#[inline(always)]
fn map(src: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

/// `dst[i] = f(a[i], b[i])` with a scalar operand standing for every element.
#[inline(always)]
fn zip(a: Operand<'_>, b: Operand<'_>, dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Operand::Vector(a), Operand::Vector(b)) => {
            for (d, (&x, &y)) in dst.iter_mut().zip(a.iter().zip(b)) {
                *d = f(x, y);
            }
        }
        (Operand::Vector(a), Operand::Scalar(y)) => {
            for (d, &x) in dst.iter_mut().zip(a) {
                *d = f(x, y);
            }
        }
        (Operand::Scalar(x), Operand::Vector(b)) => {
            for (d, &y) in dst.iter_mut().zip(b) {
                *d = f(x, y);
            }
        }
        (Operand::Scalar(x), Operand::Scalar(y)) => dst.fill(f(x, y)),
    }
}

/// The interpreter's unary formulas, one monomorphic loop each; `exp`, `tanh` and `sigmoid` through
/// the vectorised functions of [`super::vmath`] (within a few ulp of the interpreter's).
#[inline(always)]
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
#[inline(always)]
fn binary(op: BinaryOp, a: Operand<'_>, b: Operand<'_>, dst: &mut [f32]) {
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
#[inline]
pub(crate) fn max_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// The smaller of two floats; NaN if either is NaN.
#[inline]
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
    use crate::interp::index::broadcast_map;

    #[test]
    fn fused_program_evaluates_in_ssa_order_with_broadcast_leaves() {
        // (x + c) * x with x [2, 3] and c [3]: registers 0 = x, 1 = c, 2 = x + c, 3 = (x + c) * x.
        let program = FusedProgram {
            leaves: vec![Broadcaster::new(&[2, 3], &[2, 3]), Broadcaster::new(&[3], &[2, 3])],
            rotations: vec![None; 2],
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

    fn bin(op: BinaryOp, a: usize, b: usize, round: bool) -> Instr {
        Instr::Binary { op, a, b, round }
    }

    /// Leaves x (dense), row, column, scalar and one more operand; a chain that reads a register
    /// twice, rounds to half, mixes every leaf and has a step on two block-constant operands.
    fn mixed_program(out: &[usize], row: &[usize], col: &[usize], other: &[usize]) -> FusedProgram {
        let shapes: [&[usize]; 5] = [out, row, col, &[], other];
        FusedProgram {
            leaves: shapes.iter().map(|s| Broadcaster::new(s, out)).collect(),
            rotations: vec![None; shapes.len()],
            instrs: vec![
                bin(BinaryOp::Mul, 0, 1, false), // 5 = x * row
                bin(BinaryOp::Add, 5, 2, false), // 6 = 5 + col
                Instr::Unary {
                    op: UnaryOp::Tanh,
                    src: 6,
                    round: false,
                }, // 7
                bin(BinaryOp::Mul, 7, 7, false), // 8 = 7²
                bin(BinaryOp::Sub, 0, 3, false), // 9 = x - scalar
                bin(BinaryOp::Maximum, 8, 9, true), // 10, rounded to half
                bin(BinaryOp::Div, 10, 4, false), // 11 = 10 / other
                Instr::RoundHalf { src: 11 },    // 12
                bin(BinaryOp::Mul, 2, 3, false), // 13 = col * scalar
                bin(BinaryOp::Add, 12, 13, false), // 14
            ],
            numel: out.iter().product(),
        }
    }

    /// The program evaluated element by element with scalar formulas.
    fn reference(program: &FusedProgram, shapes: [&[usize]; 5], out: &[usize], data: &[Vec<f32>]) -> Vec<f32> {
        let maps: Vec<Vec<usize>> = shapes.iter().map(|s| broadcast_map(s, out)).collect();
        let half = crate::tensor::round_to_f16;
        (0..program.numel)
            .map(|i| {
                let mut r: Vec<f32> = (0..5).map(|l| data[l][maps[l][i]]).collect();
                for instr in &program.instrs {
                    let v = match *instr {
                        Instr::Unary { src, .. } => vmath::tanh(r[src]),
                        Instr::RoundHalf { src } => half(r[src]),
                        Instr::Binary { op, a, b, round } => {
                            let (x, y) = (r[a], r[b]);
                            let v = match op {
                                BinaryOp::Add => x + y,
                                BinaryOp::Sub => x - y,
                                BinaryOp::Mul => x * y,
                                BinaryOp::Div => x / y,
                                _ => max_nan(x, y),
                            };
                            if round {
                                half(v)
                            } else {
                                v
                            }
                        }
                    };
                    r.push(v);
                }
                r[r.len() - 1]
            })
            .collect()
    }

    #[test]
    fn fused_fast_paths_match_a_scalar_loop_on_every_leaf_shape_and_length() {
        // (out, row, column, other): row/column periods above and below MIN_PERIOD, periods longer
        // than a block, not dividing it, a middle-axis operand (gathered), and a parallel size.
        type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], &'a [usize]);
        let cases: [Case<'_>; 6] = [
            (&[5, 300], &[300], &[5, 1], &[5, 300]),
            (&[3, 1, 700], &[1, 700], &[3, 1, 1], &[700]),
            (&[2, 2500], &[2500], &[2, 1], &[1]),
            (&[7, 3, 40], &[40], &[7, 3, 1], &[3, 1]),
            (&[4, 260, 3], &[3], &[4, 260, 1], &[4, 1, 3]),
            (&[40, 1000], &[1000], &[40, 1], &[40, 1000]),
        ];
        for (seed, (out, row, col, other)) in cases.into_iter().enumerate() {
            let shapes: [&[usize]; 5] = [out, row, col, &[], other];
            let data: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(l, s)| {
                    let n: usize = s.iter().product();
                    (0..n)
                        .map(|i| ((i * 7919 + l * 104_729 + seed) % 2003) as f32 / 500.0 - 2.0)
                        .collect()
                })
                .collect();
            let program = mixed_program(out, row, col, other);
            let expected = reference(&program, shapes, out, &data);
            let leaves: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; program.numel];
                program.run(&leaves, &mut got, threads);
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert_eq!(g.to_bits(), e.to_bits(), "{out:?} threads {threads} at {i}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn layout_reuses_slots_after_last_use_and_classifies_leaves() {
        let out: &[usize] = &[4, 300];
        let program = mixed_program(out, &[300], &[4, 1], &[4, 300]);
        let data: Vec<Vec<f32>> = [1200, 300, 4, 1, 1200].iter().map(|&n| vec![1.0; n]).collect();
        let leaves: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let layout = program.layout(&lengths(&leaves));
        assert_eq!(layout.reads[0], LeafRead::Dense);
        assert_eq!(layout.reads[3], LeafRead::Scalar);
        assert_eq!(layout.reads[4], LeafRead::Dense);
        assert!(matches!(layout.reads[1], LeafRead::Rows { period: 300, .. }));
        assert!(matches!(layout.reads[2], LeafRead::Columns { period: 300, .. }));
        assert_eq!(layout.period, Some(300));
        // Two leaf slots plus at most three live intermediates, never ten.
        assert!(layout.slot_count <= 5, "{layout:?}");
        assert_eq!(layout.results.last(), Some(&None));
        for (j, instr) in program.instrs.iter().enumerate() {
            let dst = layout.results[j];
            for r in instr.sources().into_iter().flatten() {
                let src = match r.checked_sub(5) {
                    Some(k) => layout.results[k],
                    None => match layout.reads[r] {
                        LeafRead::Rows { slot, .. }
                        | LeafRead::Columns { slot, .. }
                        | LeafRead::Gather { slot }
                        | LeafRead::Rotated { slot, .. } => Some(slot),
                        LeafRead::Dense | LeafRead::Scalar => None,
                    },
                };
                assert!(dst.is_none() || dst != src, "instruction {j} overwrites its operand");
            }
        }
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
