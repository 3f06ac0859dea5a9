//! Random graph generator for property tests (text round trip, pass soundness, backends).
//!
//! `random_graph(seed, options)` is deterministic (ChaCha8 seeded with `seed`) and always returns a
//! graph that verifies. Over many seeds it uses every op of the closed set, with attributes chosen
//! to fit the operand shapes, and it deliberately produces the patterns passes look for: `x * 1`,
//! `x + 0`, cast round trips, reshapes to the same shape, identity transposes and slices,
//! single-piece splits, duplicate subexpressions, unused (dead) nodes and several outputs.
//!
//! Numerical tameness (so interpreters and backends can be compared): every value carries a bound
//! on its magnitude; an operand whose bound exceeds `LIMIT` is squashed with `tanh` before any
//! arithmetic or cast; `exp` only ever sees `tanh(x)`; `log`, `sqrt`, `rsqrt`, `reciprocal`, the
//! divisor of `div` and the base of `pow` are always `sigmoid(x) + 0.5` or `exp(tanh(x))` (within
//! [0.36, 2.72]); `pow` exponents are small constants or `tanh(x)`. Constants are finite.
//!
//! Index convention: i32 index values (for `gather` and `scatter_add_rows`) are constants or graph
//! inputs named `idx_<rows>_<n>`; [`random_inputs`] fills such an input with values in `[0, rows)`,
//! any other i32 input with zeros (valid for every gather), floats with values in [-2, 2], bools at
//! random.

use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::infer::{broadcast_shapes, last_two};
use crate::op::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
use crate::tensor::{Tensor, TensorData};
use crate::types::{DType, Shape, TensorType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::sync::Arc;

// The data-movement steps and the generator's tests.
mod layout;

/// What the generator may produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomGraphOptions {
    /// Soft cap on the node count: no step starts once it is reached (a step adds 1 to ~5 nodes).
    pub max_nodes: usize,
    /// The graph has between 1 and this many float inputs (plus index inputs, see the module doc).
    pub max_inputs: usize,
    /// The graph has between 1 and this many outputs.
    pub max_outputs: usize,
    /// Allow f16 values: f16 inputs and casts to f16.
    pub allow_f16: bool,
    /// Allow i32 and bool values: casts to them, comparisons, select, gather and scatter indices.
    pub allow_non_float: bool,
}

impl Default for RandomGraphOptions {
    fn default() -> RandomGraphOptions {
        RandomGraphOptions {
            max_nodes: 30,
            max_inputs: 3,
            max_outputs: 3,
            allow_f16: true,
            allow_non_float: true,
        }
    }
}

/// Magnitude above which a value is squashed with `tanh` before arithmetic.
const LIMIT: f32 = 8.0;
/// Largest extent that concat, pad and broadcast may produce.
const MAX_GROWN_EXTENT: usize = 12;
/// Largest element count of a value picked to combine with another.
const MAX_NUMEL: usize = 1024;

/// A deterministic random graph that passes `verify`.
///
/// # Panics
/// Only on a bug in the generator itself (it built an op that shape inference rejects).
pub fn random_graph(seed: u64, options: &RandomGraphOptions) -> Graph {
    match Generator::new(seed, options).run() {
        Ok(g) => g,
        Err(e) => panic!("random_graph: generator bug for seed {seed}: {e}"),
    }
}

/// Input tensors for `g` in input declaration order (see the module doc for the value ranges).
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    g.inputs()
        .map(|(name, _, ty)| random_tensor(&mut rng, name, ty))
        .collect()
}

/// The set of op names used by the graphs of `seeds`.
pub fn op_coverage(seeds: impl IntoIterator<Item = u64>, options: &RandomGraphOptions) -> BTreeSet<&'static str> {
    let mut names = BTreeSet::new();
    for seed in seeds {
        names.extend(random_graph(seed, options).nodes().iter().map(|n| n.op.name()));
    }
    names
}

/// `rows` of an input named `idx_<rows>_<n>`.
fn index_rows(name: &str) -> Option<usize> {
    let rows = name.strip_prefix("idx_")?.split('_').next()?.parse::<usize>().ok()?;
    (1..=i32::MAX as usize).contains(&rows).then_some(rows)
}

fn random_tensor(rng: &mut ChaCha8Rng, name: &str, ty: &TensorType) -> Tensor {
    let n = ty.shape.numel();
    let data = match ty.dtype {
        DType::F32 | DType::F16 => TensorData::Float((0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()),
        DType::I32 => {
            let rows = index_rows(name).unwrap_or(1) as i32;
            TensorData::I32((0..n).map(|_| rng.gen_range(0..rows)).collect())
        }
        DType::Bool => TensorData::Bool((0..n).map(|_| rng.gen_bool(0.5)).collect()),
    };
    Tensor::new(ty.dtype, ty.shape.clone(), data).unwrap_or_else(|_| Tensor::zeros(ty))
}

/// A value the generator may use, with a bound on its magnitude and, for index values, the row
/// count all its elements stay below.
#[derive(Clone, Copy, Debug)]
struct Entry {
    v: ValueId,
    bound: f32,
    rows: Option<usize>,
}

/// One kind of generation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Unary,
    ExpOfTanh,
    OfPositive,
    Binary,
    Neutral,
    Div,
    Pow,
    Compare,
    Select,
    MatMul,
    Conv1x1,
    Softmax,
    Reduce,
    Reshape,
    Transpose,
    Slice,
    Concat,
    Split,
    Pad,
    Gather,
    ScatterAddRows,
    Broadcast,
    Cast,
    Identity,
    Duplicate,
}

const STEPS: [Step; 25] = [
    Step::Unary,
    Step::ExpOfTanh,
    Step::OfPositive,
    Step::Binary,
    Step::Neutral,
    Step::Div,
    Step::Pow,
    Step::Compare,
    Step::Select,
    Step::MatMul,
    Step::Conv1x1,
    Step::Softmax,
    Step::Reduce,
    Step::Reshape,
    Step::Transpose,
    Step::Slice,
    Step::Concat,
    Step::Split,
    Step::Pad,
    Step::Gather,
    Step::ScatterAddRows,
    Step::Broadcast,
    Step::Cast,
    Step::Identity,
    Step::Duplicate,
];

struct Generator<'o> {
    g: Graph,
    rng: ChaCha8Rng,
    options: &'o RandomGraphOptions,
    pool: Vec<Entry>,
    /// Per value id: does the value depend on a graph input (rather than on constants only)?
    varies: Vec<bool>,
    /// Every non-input node added: (op, operands, results), for duplicate subexpressions.
    history: Vec<(Op, Vec<ValueId>, Vec<Entry>)>,
    index_inputs: usize,
}

fn is_float(t: &TensorType) -> bool {
    t.dtype.is_float()
}

fn is_numeric(t: &TensorType) -> bool {
    t.dtype != DType::Bool
}

impl<'o> Generator<'o> {
    fn new(seed: u64, options: &'o RandomGraphOptions) -> Generator<'o> {
        Generator {
            g: Graph::new(format!("random_{seed}")),
            rng: ChaCha8Rng::seed_from_u64(seed),
            options,
            pool: Vec::new(),
            varies: Vec::new(),
            history: Vec::new(),
            index_inputs: 0,
        }
    }

    fn run(mut self) -> Result<Graph> {
        self.add_inputs()?;
        let mut attempts = 0;
        while self.g.nodes().len() < self.options.max_nodes && attempts < 8 * self.options.max_nodes {
            attempts += 1;
            let step = STEPS[self.rng.gen_range(0..STEPS.len())];
            let needs_non_float = matches!(step, Step::Compare | Step::Select | Step::Gather | Step::ScatterAddRows);
            if needs_non_float && !self.options.allow_non_float {
                continue;
            }
            self.step(step)?;
        }
        self.add_outputs()?;
        Ok(self.g)
    }

    /// Runs one step; `Ok(false)` when the pool has nothing it applies to.
    fn step(&mut self, step: Step) -> Result<bool> {
        match step {
            Step::Unary => self.unary(),
            Step::ExpOfTanh => self.exp_of_tanh(),
            Step::OfPositive => self.of_positive(),
            Step::Binary => self.binary(),
            Step::Neutral => self.neutral(),
            Step::Div => self.div(),
            Step::Pow => self.pow(),
            Step::Compare => self.compare(),
            Step::Select => self.select(),
            Step::MatMul => self.matmul(),
            Step::Conv1x1 => self.conv1x1(),
            Step::Softmax => self.softmax(),
            Step::Reduce => self.reduce(),
            Step::Reshape => self.reshape(),
            Step::Transpose => self.transpose(),
            Step::Slice => self.slice(),
            Step::Concat => self.concat(),
            Step::Split => self.split(),
            Step::Pad => self.pad(),
            Step::Gather => self.gather(),
            Step::ScatterAddRows => self.scatter_add_rows(),
            Step::Broadcast => self.broadcast(),
            Step::Cast => self.cast(),
            Step::Identity => self.identity(),
            Step::Duplicate => self.duplicate(),
        }
    }

    // ---- plumbing ----

    fn ty(&self, e: Entry) -> TensorType {
        self.g.ty(e.v).clone()
    }

    fn is_varying(&self, v: ValueId) -> bool {
        self.varies.get(v.index()).copied().unwrap_or(false)
    }

    fn set_varying(&mut self, v: ValueId, varying: bool) {
        if self.varies.len() <= v.index() {
            self.varies.resize(v.index() + 1, false);
        }
        self.varies[v.index()] = varying;
    }

    /// A pool entry whose type satisfies `pred`, usually one that depends on an input (so that
    /// constants do not take over) and one of the most recent (to build chains).
    fn pick(&mut self, pred: impl Fn(&TensorType) -> bool) -> Option<Entry> {
        let mut matching: Vec<Entry> = self.pool.iter().filter(|e| pred(self.g.ty(e.v))).copied().collect();
        if matching.is_empty() {
            return None;
        }
        let varying: Vec<Entry> = matching.iter().filter(|e| self.is_varying(e.v)).copied().collect();
        if !varying.is_empty() && self.rng.gen_bool(0.85) {
            matching = varying;
        }
        let recent = matching.len().saturating_sub(4);
        let i = if self.rng.gen_bool(0.6) {
            self.rng.gen_range(recent..matching.len())
        } else {
            self.rng.gen_range(0..matching.len())
        };
        Some(matching[i])
    }

    /// Adds a node, records it, puts its results in the pool; returns all results.
    fn add_all(&mut self, op: Op, inputs: Vec<ValueId>, bound: f32, rows: Option<usize>) -> Result<Vec<Entry>> {
        let values = self.g.add_node(op.clone(), inputs.clone())?;
        let varying = inputs.iter().any(|&v| self.is_varying(v));
        for &v in &values {
            self.set_varying(v, varying);
        }
        let entries: Vec<Entry> = values.iter().map(|&v| Entry { v, bound, rows }).collect();
        self.pool.extend(&entries);
        self.history.push((op, inputs, entries.clone()));
        Ok(entries)
    }

    /// Adds a single-result node.
    fn add(&mut self, op: Op, inputs: Vec<ValueId>, bound: f32, rows: Option<usize>) -> Result<Entry> {
        let entries = self.add_all(op, inputs, bound, rows)?;
        Ok(entries[0])
    }

    fn unary_of(&mut self, op: UnaryOp, e: Entry, bound: f32) -> Result<Entry> {
        self.add(Op::Unary(op), vec![e.v], bound, None)
    }

    fn constant(&mut self, dtype: DType, dims: Vec<usize>, values: Vec<f32>) -> Result<Entry> {
        let bound = values.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let data = match dtype {
            DType::F32 | DType::F16 => TensorData::Float(values),
            DType::I32 => TensorData::I32(values.iter().map(|&x| x as i32).collect()),
            DType::Bool => TensorData::Bool(values.iter().map(|&x| x != 0.0).collect()),
        };
        let tensor = Tensor::new(dtype, dims, data)?;
        let rows = (dtype == DType::I32 && tensor.as_i32().is_some_and(|v| v.iter().all(|&x| x >= 0)))
            .then(|| bound as usize + 1);
        let value = Arc::new(tensor);
        self.add(Op::Const { value }, vec![], bound.max(1.0), rows)
    }

    fn scalar(&mut self, dtype: DType, value: f32) -> Result<Entry> {
        self.constant(dtype, vec![], vec![value])
    }

    /// Random element values of `dtype`: floats in [-2, 2), integers in -3..=3, bools 0/1.
    fn random_values(&mut self, dtype: DType, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match dtype {
                DType::F32 | DType::F16 => self.rng.gen_range(-2.0f32..2.0),
                DType::I32 => self.rng.gen_range(-3i32..=3) as f32,
                DType::Bool => f32::from(u8::from(self.rng.gen_bool(0.5))),
            })
            .collect()
    }

    /// A scalar that is often the identity of some binary op (0 or 1).
    fn special_scalar(&mut self, dtype: DType) -> f32 {
        match self.rng.gen_range(0..5) {
            0 | 1 => 0.0,
            2 | 3 => 1.0,
            _ => self.random_values(dtype, 1)[0],
        }
    }

    fn random_shape(&mut self) -> Vec<usize> {
        let rank = self.rng.gen_range(1..=4);
        (0..rank).map(|_| self.rng.gen_range(1..=5)).collect()
    }

    /// `e` when its magnitude is within `LIMIT`, `tanh(e)` for a larger float, `None` for a larger i32.
    fn tame(&mut self, e: Entry) -> Result<Option<Entry>> {
        if e.bound <= LIMIT {
            return Ok(Some(e));
        }
        match self.ty(e).dtype {
            DType::F32 | DType::F16 => Ok(Some(self.unary_of(UnaryOp::Tanh, e, 1.0)?)),
            DType::Bool => Ok(Some(e)),
            DType::I32 => Ok(None),
        }
    }

    /// A float value within [0.36, 2.72] computed from `e`: `sigmoid(e) + 0.5` or `exp(tanh(e))`.
    fn positive(&mut self, e: Entry) -> Result<Entry> {
        if self.rng.gen_bool(0.5) {
            let dtype = self.ty(e).dtype;
            let s = self.unary_of(UnaryOp::Sigmoid, e, 1.0)?;
            let half = self.scalar(dtype, 0.5)?;
            self.add(Op::Binary(BinaryOp::Add), vec![s.v, half.v], 1.5, None)
        } else {
            let t = self.unary_of(UnaryOp::Tanh, e, 1.0)?;
            self.unary_of(UnaryOp::Exp, t, std::f32::consts::E)
        }
    }

    /// A tame operand to combine elementwise with `a` (same dtype, broadcast-compatible shape): an
    /// existing value (often `a` itself), a scalar constant (often 0 or 1) or a constant whose
    /// shape broadcasts to `a`'s.
    fn partner(&mut self, a: Entry) -> Result<Entry> {
        let ta = self.ty(a);
        let choice = self.rng.gen_range(0..10);
        if choice < 4 {
            let fits = |t: &TensorType| {
                t.dtype == ta.dtype && broadcast_shapes(&[&ta.shape, &t.shape]).is_ok_and(|s| s.numel() <= MAX_NUMEL)
            };
            if let Some(b) = self.pick(fits) {
                if let Some(b) = self.tame(b)? {
                    return Ok(b);
                }
            }
        }
        if choice < 7 {
            let value = self.special_scalar(ta.dtype);
            return self.scalar(ta.dtype, value);
        }
        let dims = ta.shape.dims();
        let keep_from = self.rng.gen_range(0..=dims.len());
        let shape: Vec<usize> = dims[keep_from..]
            .iter()
            .map(|&d| if self.rng.gen_bool(0.3) { 1 } else { d })
            .collect();
        let values = self.random_values(ta.dtype, Shape::new(shape.clone()).numel());
        self.constant(ta.dtype, shape, values)
    }

    /// An i32 value of shape `dims` with every element in `[0, rows)`: a constant, a new input
    /// `idx_<rows>_<n>`, or an existing index value of that shape.
    fn indices(&mut self, rows: usize, dims: Vec<usize>) -> Result<Entry> {
        let reusable: Vec<Entry> = self
            .pool
            .iter()
            .filter(|e| e.rows.is_some_and(|r| r <= rows) && self.g.ty(e.v).shape.dims() == dims.as_slice())
            .copied()
            .collect();
        let choice = self.rng.gen_range(0..3);
        if choice == 0 && !reusable.is_empty() {
            return Ok(reusable[self.rng.gen_range(0..reusable.len())]);
        }
        if choice == 1 {
            let name = format!("idx_{rows}_{}", self.index_inputs);
            self.index_inputs += 1;
            let v = self.g.input(name, TensorType::new(DType::I32, dims))?;
            self.set_varying(v, true);
            let entry = Entry {
                v,
                bound: rows as f32,
                rows: Some(rows),
            };
            self.pool.push(entry);
            return Ok(entry);
        }
        let n = Shape::new(dims.clone()).numel();
        let values = (0..n).map(|_| self.rng.gen_range(0..rows) as f32).collect();
        let e = self.constant(DType::I32, dims, values)?;
        Ok(Entry { rows: Some(rows), ..e })
    }

    // ---- inputs and outputs ----

    fn add_inputs(&mut self) -> Result<()> {
        let count = self.rng.gen_range(1..=self.options.max_inputs.max(1));
        let first = self.random_shape();
        for i in 0..count {
            let dims = if i > 0 && self.rng.gen_bool(0.5) {
                first.clone()
            } else {
                self.random_shape()
            };
            let dtype = if self.options.allow_f16 && self.rng.gen_bool(0.2) {
                DType::F16
            } else {
                DType::F32
            };
            let v = self.g.input(format!("x{i}"), TensorType::new(dtype, dims))?;
            self.set_varying(v, true);
            self.pool.push(Entry {
                v,
                bound: 2.0,
                rows: None,
            });
        }
        Ok(())
    }

    /// One to `max_outputs` outputs, mostly late values that depend on inputs, so that earlier
    /// side chains stay dead.
    fn add_outputs(&mut self) -> Result<()> {
        let count = self.rng.gen_range(1..=self.options.max_outputs.max(1));
        let varying: Vec<ValueId> = self.pool.iter().map(|e| e.v).filter(|&v| self.is_varying(v)).collect();
        for i in 0..count {
            let candidates: Vec<ValueId> = if self.rng.gen_bool(0.9) {
                varying.clone()
            } else {
                self.pool.iter().map(|e| e.v).collect()
            };
            let len = candidates.len();
            let index = if self.rng.gen_bool(0.7) {
                self.rng.gen_range(len / 2..len)
            } else {
                self.rng.gen_range(0..len)
            };
            let v = candidates[index];
            self.g.set_output(format!("y{i}"), v)?;
        }
        Ok(())
    }

    // ---- elementwise steps ----

    fn unary(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let ops = [
            UnaryOp::Neg,
            UnaryOp::Tanh,
            UnaryOp::Sigmoid,
            UnaryOp::Relu,
            UnaryOp::Erf,
            UnaryOp::Sin,
            UnaryOp::Cos,
        ];
        let op = ops[self.rng.gen_range(0..ops.len())];
        let bound = match op {
            UnaryOp::Neg | UnaryOp::Relu => a.bound,
            _ => 1.0,
        };
        self.unary_of(op, a, bound)?;
        Ok(true)
    }

    fn exp_of_tanh(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let t = self.unary_of(UnaryOp::Tanh, a, 1.0)?;
        self.unary_of(UnaryOp::Exp, t, std::f32::consts::E)?;
        Ok(true)
    }

    /// log, sqrt, rsqrt or reciprocal of a positive value.
    fn of_positive(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let p = self.positive(a)?;
        let (op, bound) = [
            (UnaryOp::Log, 1.1),
            (UnaryOp::Sqrt, 1.7),
            (UnaryOp::Rsqrt, 1.7),
            (UnaryOp::Reciprocal, 2.8),
        ][self.rng.gen_range(0..4)];
        self.unary_of(op, p, bound)?;
        Ok(true)
    }

    /// add, sub, mul, maximum or minimum of two tame operands, in random order.
    fn binary(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_numeric) else {
            return Ok(false);
        };
        let Some(a) = self.tame(a)? else {
            return Ok(false);
        };
        let b = self.partner(a)?;
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
        ];
        let op = ops[self.rng.gen_range(0..ops.len())];
        let bound = match op {
            BinaryOp::Add | BinaryOp::Sub => a.bound + b.bound,
            BinaryOp::Mul => a.bound * b.bound,
            BinaryOp::Maximum | BinaryOp::Minimum | BinaryOp::Div | BinaryOp::Pow => a.bound.max(b.bound),
        };
        let (x, y) = if self.rng.gen_bool(0.5) { (a, b) } else { (b, a) };
        self.add(Op::Binary(op), vec![x.v, y.v], bound, None)?;
        Ok(true)
    }

    /// `x * 1`, `1 * x`, `x + 0`, `0 + x`, `x - 0` or `x / 1` (a scalar or a same-shape constant).
    fn neutral(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_numeric) else {
            return Ok(false);
        };
        let ta = self.ty(a);
        let choices: &[(BinaryOp, f32)] = if is_float(&ta) {
            &[
                (BinaryOp::Mul, 1.0),
                (BinaryOp::Add, 0.0),
                (BinaryOp::Sub, 0.0),
                (BinaryOp::Div, 1.0),
            ]
        } else {
            &[(BinaryOp::Mul, 1.0), (BinaryOp::Add, 0.0), (BinaryOp::Sub, 0.0)]
        };
        let (op, value) = choices[self.rng.gen_range(0..choices.len())];
        let c = if self.rng.gen_bool(0.7) {
            self.scalar(ta.dtype, value)?
        } else {
            self.constant(ta.dtype, ta.shape.0.clone(), vec![value; ta.shape.numel()])?
        };
        let swap = op.is_commutative() && self.rng.gen_bool(0.5);
        let inputs = if swap { vec![c.v, a.v] } else { vec![a.v, c.v] };
        self.add(Op::Binary(op), inputs, a.bound, None)?;
        Ok(true)
    }

    fn div(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let Some(a) = self.tame(a)? else {
            return Ok(false);
        };
        let b = self.partner(a)?;
        let divisor = self.positive(b)?;
        self.add(Op::Binary(BinaryOp::Div), vec![a.v, divisor.v], a.bound * 2.8, None)?;
        Ok(true)
    }

    /// positive(a) raised to a small constant or to tanh(b).
    fn pow(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let base = self.positive(a)?;
        let dtype = self.ty(base).dtype;
        let exponent = if self.rng.gen_bool(0.5) {
            let value = [1.0, 2.0, 0.5, -1.0][self.rng.gen_range(0..4)];
            self.scalar(dtype, value)?
        } else {
            let b = self.partner(base)?;
            self.unary_of(UnaryOp::Tanh, b, 1.0)?
        };
        self.add(Op::Binary(BinaryOp::Pow), vec![base.v, exponent.v], LIMIT, None)?;
        Ok(true)
    }

    fn compare(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_numeric) else {
            return Ok(false);
        };
        let b = self.partner(a)?;
        let op = CompareOp::ALL[self.rng.gen_range(0..CompareOp::ALL.len())];
        let (x, y) = if self.rng.gen_bool(0.5) { (a, b) } else { (b, a) };
        self.add(Op::Compare(op), vec![x.v, y.v], 1.0, None)?;
        Ok(true)
    }

    fn select(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(false);
        };
        let b = self.partner(a)?;
        let (ta, tb) = (self.ty(a), self.ty(b));
        let Ok(joint) = broadcast_shapes(&[&ta.shape, &tb.shape]) else {
            return Ok(false);
        };
        let fits = |t: &TensorType| {
            t.dtype == DType::Bool && broadcast_shapes(&[&joint, &t.shape]).is_ok_and(|s| s.numel() <= MAX_NUMEL)
        };
        let cond = match self.pick(fits) {
            Some(c) if self.rng.gen_bool(0.6) => c,
            _ => {
                let values = self.random_values(DType::F32, joint.numel());
                let x = self.constant(DType::F32, joint.dims().to_vec(), values)?;
                let zero = self.scalar(DType::F32, 0.0)?;
                self.add(Op::Compare(CompareOp::Greater), vec![x.v, zero.v], 1.0, None)?
            }
        };
        let rows = a.rows.zip(b.rows).map(|(r, s)| r.max(s));
        let (x, y) = if self.rng.gen_bool(0.5) { (a, b) } else { (b, a) };
        self.add(Op::Select, vec![cond.v, x.v, y.v], a.bound.max(b.bound), rows)?;
        Ok(true)
    }

    // ---- contractions and reductions ----

    fn matmul(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| is_float(t) && t.shape.rank() >= 1) else {
            return Ok(false);
        };
        let Some(mut a) = self.tame(a)? else {
            return Ok(false);
        };
        let ta = self.ty(a);
        if ta.shape.rank() == 1 {
            let shape = vec![1, ta.shape.numel()];
            a = self.add(Op::Reshape { shape }, vec![a.v], a.bound, None)?;
        }
        let ta = self.ty(a);
        let (transpose_a, transpose_b) = (self.rng.gen_bool(0.3), self.rng.gen_bool(0.3));
        let op = Op::MatMul {
            transpose_a,
            transpose_b,
        };
        let fits =
            |t: &TensorType| crate::infer::infer_types(&op, &[&ta, t]).is_ok_and(|r| r[0].shape.numel() <= MAX_NUMEL);
        let b = match self.pick(fits) {
            Some(b) if self.rng.gen_bool(0.4) => self.tame(b)?,
            _ => None,
        };
        let b = match b {
            Some(b) => b,
            None => {
                let k = last_two(&ta.shape, transpose_a).1;
                let n = self.rng.gen_range(1..=5);
                let dims = if transpose_b { vec![n, k] } else { vec![k, n] };
                let values = (0..n * k).map(|_| self.rng.gen_range(-1.0f32..1.0)).collect();
                self.constant(ta.dtype, dims, values)?
            }
        };
        let k = last_two(&ta.shape, transpose_a).1 as f32;
        self.add(op, vec![a.v, b.v], a.bound * b.bound * k, None)?;
        Ok(true)
    }

    /// conv1x1 of a value reshaped to `[1, C, 1, S]` with a constant weight.
    fn conv1x1(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_float) else {
            return Ok(false);
        };
        let Some(mut a) = self.tame(a)? else {
            return Ok(false);
        };
        let ta = self.ty(a);
        let dims = ta.shape.dims();
        let ready = dims.len() == 4 && dims[0] == 1 && dims[2] == 1;
        if !ready {
            let s = dims.last().copied().unwrap_or(1);
            let shape = vec![1, ta.shape.numel() / s, 1, s];
            a = self.add(Op::Reshape { shape }, vec![a.v], a.bound, None)?;
        }
        let channels = self.ty(a).shape.dims()[1];
        let out_channels = self.rng.gen_range(1..=5);
        let values = (0..out_channels * channels)
            .map(|_| self.rng.gen_range(-1.0f32..1.0))
            .collect();
        let w = self.constant(ta.dtype, vec![out_channels, channels, 1, 1], values)?;
        self.add(Op::Conv1x1, vec![a.v, w.v], a.bound * channels as f32, None)?;
        Ok(true)
    }

    fn softmax(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| is_float(t) && t.shape.rank() >= 1) else {
            return Ok(false);
        };
        let axis = self.rng.gen_range(0..self.ty(a).shape.rank());
        self.add(Op::Softmax { axis }, vec![a.v], 1.0, None)?;
        Ok(true)
    }

    fn reduce(&mut self) -> Result<bool> {
        let op = ReduceOp::ALL[self.rng.gen_range(0..ReduceOp::ALL.len())];
        let wanted = |t: &TensorType| {
            t.shape.rank() >= 1
                && match op {
                    ReduceOp::Mean => is_float(t),
                    ReduceOp::Sum | ReduceOp::Max => is_numeric(t),
                }
        };
        let Some(a) = self.pick(wanted) else {
            return Ok(false);
        };
        let Some(a) = self.tame(a)? else {
            return Ok(false);
        };
        let dims = self.ty(a).shape.0;
        let mut axes: Vec<usize> = (0..dims.len()).filter(|_| self.rng.gen_bool(0.5)).collect();
        if axes.is_empty() {
            axes.push(self.rng.gen_range(0..dims.len()));
        }
        let count: usize = axes.iter().map(|&i| dims[i]).product();
        let bound = match op {
            ReduceOp::Sum => a.bound * count as f32,
            ReduceOp::Mean | ReduceOp::Max => a.bound,
        };
        let keep_dims = self.rng.gen_bool(0.5);
        self.add(Op::Reduce { op, axes, keep_dims }, vec![a.v], bound, None)?;
        Ok(true)
    }
}
