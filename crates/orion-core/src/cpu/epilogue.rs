//! Product epilogues of the CPU backend: an elementwise group that reads the result of a product
//! with a packed constant weight (prefill's bias adds, GELU, residual adds) runs inside that
//! product's step, on each row part of the result as soon as the AVX-512 kernel has finished it
//! (still in cache), instead of as a step of its own that reads the whole result back (often
//! half of it from the other core's cache) and writes a fresh buffer. Measured on GPT-2's
//! 128-token prefill (plans with and without epilogues, interleaved in one process, 8 rounds):
//! median 101.6 → 97.4 ms.
//!
//! The same holds for a decode step's projections (one row times a constant weight, a
//! matrix-vector product in `super::gemv`): each task applies the program to its part of the
//! result. Measured on the decode step of GPT-2 with a 64-row cache (plans with and without,
//! alternated run by run in one process, 600 pairs, twice): f32 weights 18.08 → 17.73 and 18.55
//! → 18.27 ms median (0.31 ms median difference; faster in 17–18 of 20 rounds of 16 steps); with
//! half weights and on Stories110M no difference showed (median differences 0.02–0.09 ms, within
//! the noise).
//!
//! Rule ([`plan_epilogues`]): a plain fused group (not a softmax or reduction prologue) with an
//! f32 result absorbs the product behind one of its leaves when that leaf is the f32 result of a
//! matmul `x · Wᵀ` whose right operand is a packed constant or, for a single row without batches,
//! any constant; has the group's shape (read densely, not rotated); and is read by the group
//! alone. The group's step then computes the product into its own output and applies the program
//! there.
//!
//! Invariants: every element gets exactly the bits of the two separate steps — the kernel's sums
//! are unchanged, and the program evaluates the same instructions on the same values (only where
//! its blocks are cut differs, which an elementwise program does not see); the product's value is
//! never materialised.

use super::elementwise::{FusedProgram, Layout as ProgramLayout};
use super::fusion::{fusible, Fusion};
use super::matmul::MatMulPlan;
use super::vmath;
use crate::graph::{Graph, Node};
use crate::op::Op;
use crate::types::DType;
use std::cell::RefCell;

/// A product and the fused group that reads its result, as one step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EpiloguePlan {
    pub product: MatMulPlan,
    pub program: FusedProgram,
    /// The program's leaf that is the product's result.
    pub primary: usize,
}

/// What [`plan_epilogues`] found, per node: for a product, that a group absorbs it; for a group's
/// root, the product node it absorbs and the leaf that product's result is.
#[derive(Clone, Debug, Default)]
pub(crate) struct Epilogues {
    pub absorbed: Vec<bool>,
    pub product_of: Vec<Option<(usize, usize)>>,
}

/// Finds the groups that become epilogues of their product (see the module header);
/// `takes_epilogue(product)` tells whether a matmul's step can run one (a packed constant right
/// operand, or a matrix-vector product with a constant weight).
pub(crate) fn plan_epilogues(g: &Graph, fusion: &Fusion, takes_epilogue: impl Fn(&Node) -> bool) -> Epilogues {
    let nodes = g.nodes();
    let uses = g.use_counts();
    let mut found = Epilogues {
        absorbed: vec![false; nodes.len()],
        product_of: vec![None; nodes.len()],
    };
    for (root, node) in nodes.iter().enumerate() {
        let Some(group) = fusion.roots[root].as_ref() else {
            continue;
        };
        let out = g.ty(node.outputs[0]);
        if fusible(g, node).is_none() || out.dtype != DType::F32 {
            continue;
        }
        let registers_read = |leaf: usize| {
            let sources = group
                .instrs
                .iter()
                .flat_map(|instr| instr.sources().into_iter().flatten());
            sources.filter(|&r| r == leaf).count()
        };
        let product = group.leaves.iter().enumerate().find_map(|(leaf, &v)| {
            let producer = g.producer(v);
            let index = g.values()[v.index()].node.index();
            let packed_product = matches!(producer.op, Op::MatMul { transpose_b: true, .. })
                && takes_epilogue(producer)
                && g.ty(v).dtype == DType::F32
                && g.ty(v).shape == out.shape
                && group.rotations[leaf].is_none()
                && uses[v.index()] == registers_read(leaf)
                && !found.absorbed[index];
            packed_product.then_some((index, leaf))
        });
        if let Some((index, leaf)) = product {
            found.absorbed[index] = true;
            found.product_of[root] = Some((index, leaf));
        }
    }
    found
}

thread_local! {
    /// A copy of the row part an epilogue replaces (its primary leaf's values).
    static ROW_COPY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A program ready to run on row parts of a product.
pub(crate) struct Epilogue<'a> {
    program: &'a FusedProgram,
    layout: ProgramLayout,
    leaves: Vec<&'a [f32]>,
    primary: usize,
}

impl<'a> Epilogue<'a> {
    /// `leaves`: the program's leaf values, the primary's entry aside (it is never read).
    pub(crate) fn new(program: &'a FusedProgram, leaves: Vec<&'a [f32]>, primary: usize) -> Epilogue<'a> {
        let lengths: Vec<usize> = leaves
            .iter()
            .enumerate()
            .map(|(i, l)| if i == primary { program.numel } else { l.len() })
            .collect();
        let layout = program.layout(&lengths);
        Epilogue {
            program,
            layout,
            leaves,
            primary,
        }
    }

    /// Replaces `values` — the product's elements `start..start + values.len()` — by the
    /// program's values there.
    pub(crate) fn apply(&self, start: usize, values: &mut [f32]) {
        ROW_COPY.with(|copy| {
            let mut copy = copy.borrow_mut();
            copy.clear();
            copy.extend_from_slice(values);
            let window = Some((self.primary, copy.as_slice()));
            vmath::with_wide_vectors(
                #[inline(always)]
                || {
                    self.program
                        .run_range(&self.layout, &self.leaves, start, values, window)
                },
            );
        });
    }
}
