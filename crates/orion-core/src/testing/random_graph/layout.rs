//! Data-movement steps of the random graph generator: reshape, transpose, slice, concat, split,
//! pad, gather, scatter_add_rows, broadcast, cast, identity and duplicate subexpressions.
//!
//! Invariants: each step only builds ops whose attributes fit the operand's type (so shape
//! inference accepts them); ops that leave element values unchanged keep the operand's magnitude
//! bound and index row count; extents grown by concat, pad and broadcast stay small.

use super::{is_float, is_numeric, Generator, MAX_GROWN_EXTENT, MAX_NUMEL};
use crate::error::Result;
use crate::op::Op;
use crate::types::{DType, Shape, TensorType};
use rand::seq::SliceRandom;
use rand::Rng;

impl Generator<'_> {
    /// Reshape to the same shape, to a flat vector or to a random factorisation.
    pub(super) fn reshape(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(false);
        };
        let ta = self.ty(a);
        let numel = ta.shape.numel();
        let shape = match self.rng.gen_range(0..10) {
            0..=2 => ta.shape.0.clone(),
            3 | 4 => vec![numel],
            _ => self.factor_dims(numel),
        };
        self.add(Op::Reshape { shape }, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// Random dims (rank 0 to 4) whose product is `numel`.
    fn factor_dims(&mut self, numel: usize) -> Vec<usize> {
        if numel == 0 {
            return vec![0];
        }
        if numel == 1 && self.rng.gen_bool(0.3) {
            return Vec::new();
        }
        let rank = self.rng.gen_range(1..=4);
        let mut dims = vec![1; rank];
        let (mut rest, mut factor) = (numel, 2);
        while rest > 1 {
            if rest % factor == 0 {
                dims[self.rng.gen_range(0..rank)] *= factor;
                rest /= factor;
            } else {
                factor += 1;
            }
        }
        dims
    }

    /// A random permutation, or the identity one.
    pub(super) fn transpose(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(false);
        };
        let mut perm: Vec<usize> = (0..self.ty(a).shape.rank()).collect();
        if self.rng.gen_bool(0.7) {
            perm.shuffle(&mut self.rng);
        }
        self.add(Op::Transpose { perm }, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// A non-empty sub-block, or the whole tensor.
    pub(super) fn slice(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| t.shape.rank() >= 1) else {
            return Ok(false);
        };
        let dims = self.ty(a).shape.0;
        let full = dims.contains(&0) || self.rng.gen_bool(0.25);
        let (mut begin, mut end) = (Vec::new(), Vec::new());
        for &d in &dims {
            let (b, e) = if full {
                (0, d)
            } else {
                let b = self.rng.gen_range(0..d);
                (b, self.rng.gen_range(b + 1..=d))
            };
            begin.push(b);
            end.push(e);
        }
        self.add(Op::Slice { begin, end }, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// One to three operands (often the same value repeated) joined along an axis.
    pub(super) fn concat(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| t.shape.rank() >= 1 && t.shape.numel() <= MAX_NUMEL) else {
            return Ok(false);
        };
        let ta = self.ty(a);
        let rank = ta.shape.rank();
        let axis = self.rng.gen_range(0..rank);
        let mut operands = vec![a];
        let mut extent = ta.shape.0[axis];
        for _ in 0..self.rng.gen_range(0..=2) {
            let same_except_axis = |t: &TensorType| {
                t.dtype == ta.dtype
                    && t.shape.rank() == rank
                    && (0..rank).all(|i| i == axis || t.shape.0[i] == ta.shape.0[i])
            };
            let next = if self.rng.gen_bool(0.5) {
                a
            } else {
                self.pick(same_except_axis).unwrap_or(a)
            };
            let grown = extent + self.ty(next).shape.0[axis];
            if grown > MAX_GROWN_EXTENT {
                break;
            }
            extent = grown;
            operands.push(next);
        }
        let bound = operands.iter().fold(0.0f32, |m, e| m.max(e.bound));
        let rows = operands.iter().try_fold(0usize, |m, e| e.rows.map(|r| m.max(r)));
        let inputs = operands.iter().map(|e| e.v).collect();
        self.add(Op::Concat { axis }, inputs, bound, rows)?;
        Ok(true)
    }

    /// One to three non-empty pieces along an axis.
    pub(super) fn split(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| t.shape.rank() >= 1) else {
            return Ok(false);
        };
        let dims = self.ty(a).shape.0;
        let axis = self.rng.gen_range(0..dims.len());
        let extent = dims[axis];
        if extent == 0 {
            return Ok(false);
        }
        let pieces = self.rng.gen_range(1..=extent.min(3));
        let mut cuts: Vec<usize> = (1..extent).collect();
        cuts.shuffle(&mut self.rng);
        cuts.truncate(pieces - 1);
        cuts.sort_unstable();
        let mut sizes = Vec::with_capacity(pieces);
        let mut previous = 0;
        for cut in cuts {
            sizes.push(cut - previous);
            previous = cut;
        }
        sizes.push(extent - previous);
        self.add_all(Op::Split { axis, sizes }, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// Constant padding of up to two elements per side (or none at all).
    pub(super) fn pad(&mut self) -> Result<bool> {
        let Some(a) = self.pick(is_numeric) else {
            return Ok(false);
        };
        let ta = self.ty(a);
        let none = self.rng.gen_bool(0.3);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for &d in ta.shape.dims() {
            let (mut b, mut e) = if none {
                (0, 0)
            } else {
                (self.rng.gen_range(0..=2), self.rng.gen_range(0..=2))
            };
            if d + b + e > MAX_GROWN_EXTENT {
                (b, e) = (0, 0);
            }
            before.push(b);
            after.push(e);
        }
        let value: f32 = if is_float(&ta) {
            [0.0, 1.0, -0.5, 2.0][self.rng.gen_range(0..4)]
        } else {
            [0.0, 1.0, -1.0][self.rng.gen_range(0..3)]
        };
        let bound = a.bound.max(value.abs());
        self.add(Op::Pad { before, after, value }, vec![a.v], bound, None)?;
        Ok(true)
    }

    /// Rows of a rank-2 table (an existing value or a constant) picked by valid indices.
    pub(super) fn gather(&mut self) -> Result<bool> {
        let table = match self.pick(|t| t.shape.rank() == 2 && !t.shape.dims().contains(&0)) {
            Some(t) if self.rng.gen_bool(0.5) => t,
            _ => {
                let (rows, width) = (self.rng.gen_range(1..=5), self.rng.gen_range(1..=5));
                let values = (0..rows * width).map(|_| self.rng.gen_range(-1.0f32..1.0)).collect();
                self.constant(DType::F32, vec![rows, width], values)?
            }
        };
        let rows = self.ty(table).shape.0[0];
        let index_rank = self.rng.gen_range(0..=2);
        let index_dims = (0..index_rank).map(|_| self.rng.gen_range(1..=4)).collect();
        let indices = self.indices(rows, index_dims)?;
        self.add(Op::Gather, vec![table.v, indices.v], table.bound, table.rows)?;
        Ok(true)
    }

    /// Sums the rows of a float value into a `[rows, width]` result at valid indices.
    pub(super) fn scatter_add_rows(&mut self) -> Result<bool> {
        let Some(updates) = self.pick(|t| is_float(t) && t.shape.rank() >= 1) else {
            return Ok(false);
        };
        let Some(updates) = self.tame(updates)? else {
            return Ok(false);
        };
        let dims = self.ty(updates).shape.0;
        let index_dims = dims[..dims.len() - 1].to_vec();
        let count = Shape::new(index_dims.clone()).numel();
        let rows = self.rng.gen_range(1..=5);
        let indices = self.indices(rows, index_dims)?;
        let bound = updates.bound * count as f32;
        self.add(Op::ScatterAddRows { rows }, vec![indices.v, updates.v], bound, None)?;
        Ok(true)
    }

    /// numpy broadcast_to: size-1 axes grown, maybe a new leading axis, or the same shape.
    pub(super) fn broadcast(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|t| t.shape.rank() <= 4) else {
            return Ok(false);
        };
        let dims = self.ty(a).shape.0;
        let mut target = dims.clone();
        if self.rng.gen_bool(0.7) {
            for d in target.iter_mut().filter(|d| **d == 1) {
                if self.rng.gen_bool(0.6) {
                    *d = self.rng.gen_range(1..=4);
                }
            }
            if target.len() < 4 && self.rng.gen_bool(0.4) {
                target.insert(0, self.rng.gen_range(1..=3));
            }
        }
        if Shape::new(target.clone()).numel() > MAX_NUMEL {
            target = dims;
        }
        self.add(Op::Broadcast { shape: target }, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// A cast to an allowed dtype, often followed by the cast back (a round trip).
    pub(super) fn cast(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(false);
        };
        let Some(a) = self.tame(a)? else {
            return Ok(false);
        };
        let from = self.ty(a).dtype;
        let mut targets = vec![DType::F32];
        if self.options.allow_f16 {
            targets.push(DType::F16);
        }
        if self.options.allow_non_float {
            targets.extend([DType::I32, DType::Bool]);
        }
        let to = targets[self.rng.gen_range(0..targets.len())];
        let bound = if to == DType::Bool { 1.0 } else { a.bound };
        let cast = self.add(Op::Cast { to }, vec![a.v], bound, None)?;
        if self.rng.gen_bool(0.35) {
            self.add(Op::Cast { to: from }, vec![cast.v], bound, None)?;
        }
        Ok(true)
    }

    pub(super) fn identity(&mut self) -> Result<bool> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(false);
        };
        self.add(Op::Identity, vec![a.v], a.bound, a.rows)?;
        Ok(true)
    }

    /// Repeats an earlier node with the same operands (a common subexpression).
    pub(super) fn duplicate(&mut self) -> Result<bool> {
        if self.history.is_empty() {
            return Ok(false);
        }
        let (op, inputs, results) = self.history[self.rng.gen_range(0..self.history.len())].clone();
        let (bound, rows) = results.first().map_or((1.0, None), |e| (e.bound, e.rows));
        self.add_all(op, inputs, bound, rows)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{op_coverage, random_graph, random_inputs, RandomGraphOptions};
    use crate::graph::Graph;
    use crate::op::{BinaryOp, Op};
    use crate::testing::ALL_OP_NAMES;
    use crate::types::DType;
    use crate::verify::verify;

    #[test]
    fn every_op_appears_over_200_seeds() {
        let seen = op_coverage(0..200, &RandomGraphOptions::default());
        let missing: Vec<&str> = ALL_OP_NAMES.iter().copied().filter(|n| !seen.contains(n)).collect();
        assert!(missing.is_empty(), "ops never generated: {missing:?}");
    }

    #[test]
    fn same_seed_same_graph_and_different_seeds_differ() {
        let options = RandomGraphOptions::default();
        assert_eq!(random_graph(11, &options), random_graph(11, &options));
        assert_ne!(random_graph(11, &options), random_graph(12, &options));
    }

    #[test]
    fn every_graph_verifies_under_every_option_set() {
        let restricted = RandomGraphOptions {
            allow_f16: false,
            allow_non_float: false,
            ..RandomGraphOptions::default()
        };
        for seed in 0..150 {
            let g = random_graph(seed, &RandomGraphOptions::default());
            assert!(verify(&g).is_ok(), "seed {seed}: {:?}", verify(&g));
            let r = random_graph(seed, &restricted);
            assert!(verify(&r).is_ok(), "seed {seed} restricted: {:?}", verify(&r));
            assert!(
                r.values().iter().all(|v| v.ty.dtype == DType::F32),
                "seed {seed}: non-f32 value"
            );
        }
    }

    /// Counts graphs (over 200 seeds) showing each pattern the passes look for.
    #[test]
    fn optimisation_patterns_appear_often() {
        let mut counts = [0usize; 5];
        for seed in 0..200 {
            let g = random_graph(seed, &RandomGraphOptions::default());
            let found = [
                has_binary_with_scalar(&g, BinaryOp::Mul, 1.0),
                has_binary_with_scalar(&g, BinaryOp::Add, 0.0),
                has_duplicate_node(&g),
                has_dead_node(&g),
                g.outputs().len() >= 2,
            ];
            for (count, hit) in counts.iter_mut().zip(found) {
                *count += usize::from(hit);
            }
        }
        assert!(
            counts.iter().all(|&c| c >= 10),
            "pattern counts (x*1, x+0, dup, dead, multi-out): {counts:?}"
        );
    }

    fn has_binary_with_scalar(g: &Graph, op: BinaryOp, value: f32) -> bool {
        g.nodes().iter().any(|n| {
            n.op == Op::Binary(op)
                && n.inputs.iter().any(|&v| match &g.producer(v).op {
                    Op::Const { value: t } => t.numel() == 1 && t.to_f32_vec()[0] == value,
                    _ => false,
                })
        })
    }

    fn has_duplicate_node(g: &Graph) -> bool {
        let nodes = g.nodes();
        nodes.iter().enumerate().any(|(i, a)| {
            !matches!(a.op, Op::Input { .. }) && nodes[i + 1..].iter().any(|b| b.op == a.op && b.inputs == a.inputs)
        })
    }

    fn has_dead_node(g: &Graph) -> bool {
        let uses = g.use_counts();
        g.nodes()
            .iter()
            .any(|n| !matches!(n.op, Op::Input { .. }) && n.outputs.iter().all(|v| uses[v.index()] == 0))
    }

    /// Every value of every graph executes (indices in range) and is finite, in both precisions.
    #[test]
    fn values_stay_finite_under_the_interpreter() {
        use crate::interp::{interpret_all, Precision};
        for seed in 0..200 {
            let g = random_graph(seed, &RandomGraphOptions::default());
            let inputs = random_inputs(&g, seed);
            for precision in [Precision::F32, Precision::F16Rounding] {
                let values =
                    interpret_all(&g, &inputs, precision).unwrap_or_else(|e| panic!("seed {seed} {precision:?}: {e}"));
                for (i, t) in values.iter().enumerate() {
                    let finite = t.to_f32_vec().iter().all(|x| x.is_finite());
                    assert!(finite, "seed {seed} {precision:?}: %{i} = {t:?} is not finite");
                }
            }
        }
    }

    #[test]
    fn random_inputs_fit_the_inputs_and_respect_index_rows() {
        let mut checked_indices = 0;
        for seed in 0..100 {
            let g = random_graph(seed, &RandomGraphOptions::default());
            let inputs = random_inputs(&g, seed);
            assert_eq!(inputs, random_inputs(&g, seed));
            assert_eq!(inputs.len(), g.inputs().count());
            for ((name, _, ty), t) in g.inputs().zip(&inputs) {
                assert_eq!(&t.ty(), ty, "seed {seed} input {name}");
                if let Some(rest) = name.strip_prefix("idx_") {
                    let rows: i32 = rest.split('_').next().and_then(|r| r.parse().ok()).unwrap_or(0);
                    let values = t.as_i32().unwrap_or_default();
                    assert!(values.iter().all(|&x| (0..rows).contains(&x)), "{name}: {values:?}");
                    checked_indices += 1;
                } else {
                    let values = t.to_f32_vec();
                    assert!(values.iter().all(|x| (-2.0..=2.0).contains(x)), "{name}: {values:?}");
                }
            }
        }
        assert!(checked_indices > 10, "only {checked_indices} index inputs generated");
    }
}
