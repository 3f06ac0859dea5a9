//! The execution plan of the CPU backend, built once per graph: where every value lives, which
//! kernel computes each step, and which arena slot each intermediate occupies.
//!
//! Building a plan: (1) fusion groups float elementwise trees ([`super::fusion`]); (2) every value
//! gets a home: a graph input, a constant (stored as f16 when it is only ever a matmul/conv1x1
//! weight and the options ask for it; stored transposed, in either precision, when it is only ever
//! the transposed right operand of multi-row f32 products, whose plans then read it untransposed), an alias of another
//! value (reshape, identity and casts that keep every element, which copy nothing), nothing
//! (absorbed into a fused group), or the output of a step; (3) each step gets its kernel from the
//! inferred shapes ([`super::lower`]); (4) slots are
//! assigned in step order: a step's outputs take free slots of their storage kind (best fit), and
//! a value's slot is freed after the last step that reads it or any alias of it.
//!
//! Invariants: steps are in graph order restricted to materialised nodes; an operand is always
//! defined by an earlier step, an input or a constant; a step never writes a slot it reads (its
//! outputs are allocated before its operands are freed); graph outputs keep their slots to the end.

use super::attention::plan_scores_softmax;
use super::attention_backward::plan_attention_backward;
use super::epilogue::{plan_epilogues, EpiloguePlan};
use super::fusion::plan_fusion;
use super::gemm_kernel::PackedRight;
use super::lower::{lower, Kernel};
use super::matmul::{Layout, MatMulPlan, Method, PackedWeight};
use super::storage::StorageKind;
use super::weight_forms::{derive, Derived, Form};
use super::{ProductPrecision, WeightFormat};
use crate::error::Result;
use crate::graph::{Graph, Node, ValueId};
use crate::interp::exec_error;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{DType, TensorType};
use half::f16;
use std::fmt;
use std::sync::Arc;

/// Where an operand's elements are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    Input(usize),
    Const(usize),
    Slot(usize),
}

/// An operand of a step (or a graph output): its location and element count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Operand {
    pub loc: Loc,
    pub numel: usize,
}

/// A result of a step: the slot it is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub slot: usize,
    pub numel: usize,
    /// Round the result to half after the kernel (an F16 value computed by a non-fused kernel).
    pub round_half: bool,
}

/// A constant as the plan stores it.
#[derive(Clone, Debug)]
pub(crate) enum ConstData {
    Tensor(Arc<Tensor>),
    /// A matmul/conv1x1 weight kept in half precision (`WeightFormat::F16`).
    Half(Arc<[f16]>),
    /// A matmul's right operand packed for the AVX-512 kernel; only the plan of that matmul
    /// reads it (its step does not list it as an operand).
    Packed(Arc<PackedRight>),
}

/// One kernel invocation.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kernel: Kernel,
    /// Name of the op (the root op for a fused group), for error messages.
    pub op: &'static str,
    /// The first value the step defines, for error messages.
    pub value: ValueId,
    pub operands: Vec<Operand>,
    pub outputs: Vec<Target>,
}

/// What the plan of a graph looks like; for tests, reports and tuning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// Kernel invocations per run.
    pub steps: usize,
    /// Kernel name of each step, in order (`fused`, `gemm`, `gemm_split`, `softmax`, `copy`, ...).
    pub kernels: Vec<&'static str>,
    /// Fused steps that evaluate two or more graph ops.
    pub fused_groups: usize,
    /// Graph ops evaluated inside those multi-op fused steps.
    pub fused_ops: usize,
    /// Ops in the largest fused step.
    pub largest_fused_group: usize,
    /// Values that share another value's storage (reshape, identity, value-preserving casts).
    pub aliases: usize,
    /// Constants stored in half precision.
    pub half_weights: usize,
    /// Constants (f32 or half) read only as the transposed right operand of multi-row products,
    /// stored transposed (`[k, n]`, rows contiguous) so `gemm` and the small-row kernel read them
    /// without a strided packing pass.
    pub transposed_weights: usize,
    /// Of those, f32 constants stored packed for the AVX-512 kernel (where the CPU has it): the
    /// products reading them pack only their left operand.
    pub packed_weights: usize,
    /// Of those, the ones packed as bfloat16 pairs (`ProductPrecision::Bf16`): every product
    /// reading them runs on the bfloat16 kernel.
    pub bf16_packed_weights: usize,
    /// Arena slots and their total size in bytes.
    pub slots: usize,
    pub arena_bytes: usize,
    /// Bytes of streamed (matrix-vector) weights collapsed onto huge pages when the plan was
    /// built (`CpuOptions::huge_pages`; 0 when not asked for or not granted).
    pub huge_page_bytes: usize,
}

impl PlanSummary {
    /// Number of steps whose kernel is called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.kernels.iter().filter(|k| **k == name).count()
    }
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} steps ({} fused groups of {} ops, largest {}), {} aliases, {} half weights, {} packed weights, {} slots / {} bytes",
            self.steps,
            self.fused_groups,
            self.fused_ops,
            self.largest_fused_group,
            self.aliases,
            self.half_weights,
            self.packed_weights,
            self.slots,
            self.arena_bytes
        )
    }
}

/// A compiled graph.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub inputs: Vec<(String, TensorType)>,
    pub consts: Vec<ConstData>,
    /// Storage kind and length of each arena slot.
    pub slots: Vec<(StorageKind, usize)>,
    pub steps: Vec<Step>,
    pub outputs: Vec<(Operand, TensorType)>,
    pub summary: PlanSummary,
}

/// Where a value's own storage lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    Input(usize),
    Const(usize),
    /// Written by a step.
    Step,
    /// Absorbed into a fused group: never materialised.
    Nowhere,
}

/// A step before slot assignment: kernel and the values it reads and defines.
struct Pending {
    kernel: Kernel,
    op: &'static str,
    reads: Vec<ValueId>,
    defines: Vec<ValueId>,
    /// The positions in `reads` of the weights a product reads from their half-precision copies
    /// when they have one.
    weight_reads: std::ops::Range<usize>,
}

impl Plan {
    /// Plans `g` (which must verify) for execution with constant weights in `weights` format and
    /// large products in `products` precision.
    pub(crate) fn build(g: &Graph, weights: WeightFormat, products: ProductPrecision) -> Result<Plan> {
        let Walk {
            root,
            home,
            half_copy,
            inputs,
            consts,
            pending,
            mut summary,
        } = walk(g, weights, products)?;
        let slot_of = assign_slots(g, &pending, &root, &home);
        let loc = |v: ValueId| -> Result<Operand> { locate(g, v, (&root, &home), &slot_of.value_slot) };
        let weight_loc = |v: ValueId| -> Result<Operand> {
            match half_copy[root[v.index()].index()] {
                Some(c) => Ok(Operand {
                    loc: Loc::Const(c),
                    numel: g.ty(v).shape.numel(),
                }),
                None => loc(v),
            }
        };
        let mut steps = Vec::with_capacity(pending.len());
        for p in pending {
            let operands = p
                .reads
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if p.weight_reads.contains(&i) {
                        weight_loc(v)
                    } else {
                        loc(v)
                    }
                })
                .collect::<Result<_>>()?;
            let outputs = p
                .defines
                .iter()
                .map(|&v| Target {
                    slot: slot_of.value_slot[v.index()],
                    numel: g.ty(v).shape.numel(),
                    round_half: g.ty(v).dtype == DType::F16 && p.kernel.computes_values(),
                })
                .collect();
            steps.push(Step {
                op: p.op,
                value: p.defines[0],
                operands,
                outputs,
                kernel: p.kernel,
            });
        }
        let outputs = g
            .outputs()
            .iter()
            .map(|o| Ok((loc(o.value)?, g.ty(o.value).clone())))
            .collect::<Result<_>>()?;
        if products == ProductPrecision::Bf16 {
            for step in &mut steps {
                if let Kernel::MatMul(product) = &mut step.kernel {
                    product.in_bf16();
                }
            }
        }
        summary.steps = steps.len();
        summary.kernels = steps.iter().map(|s| s.kernel.name()).collect();
        summary.slots = slot_of.slots.len();
        summary.arena_bytes = slot_of.slots.iter().map(|(k, n)| k.size_bytes() * n).sum();
        Ok(Plan {
            inputs,
            consts,
            slots: slot_of.slots,
            steps,
            outputs,
            summary,
        })
    }
}

/// Where value `v` is read from: its root's input, constant or arena slot.
fn locate(g: &Graph, v: ValueId, (root, home): (&[ValueId], &[Home]), value_slot: &[usize]) -> Result<Operand> {
    let r = root[v.index()];
    let loc = match home[r.index()] {
        Home::Input(i) => Loc::Input(i),
        Home::Const(c) => Loc::Const(c),
        Home::Step => Loc::Slot(value_slot[r.index()]),
        Home::Nowhere => {
            let message = format!("cpu backend: {v} is read but never materialised");
            return Err(exec_error("plan", message));
        }
    };
    Ok(Operand {
        loc,
        numel: g.ty(v).shape.numel(),
    })
}

/// The homes of all values and the steps, before slot assignment.
struct Walk {
    /// The value owning each value's storage (itself unless it is an alias).
    root: Vec<ValueId>,
    home: Vec<Home>,
    /// For a constant that matmul/conv1x1 steps read in half precision while other steps need its
    /// f32 values (a tied embedding table): the index of its half copy.
    half_copy: Vec<Option<usize>>,
    inputs: Vec<(String, TensorType)>,
    consts: Vec<ConstData>,
    pending: Vec<Pending>,
    summary: PlanSummary,
}

/// Walks the nodes in order, giving every value a home and every materialised node a step.
fn walk(g: &Graph, weights: WeightFormat, products: ProductPrecision) -> Result<Walk> {
    let fusion = plan_fusion(g);
    let mut scores = plan_scores_softmax(g, &fusion);
    let mut backward = plan_attention_backward(g, &fusion);
    let half_ok = half_weight_values(g, weights);
    let store_transposed = transposed_weight_values(g, &half_ok);
    // Transposed f32 weights are packed for the AVX-512 kernel where the CPU has it.
    let pack = super::gemm_kernel::available();
    // With bfloat16 products they are packed as bfloat16 pairs, where the CPU has that kernel.
    let packed_form = if products == ProductPrecision::Bf16 && super::gemm_bf16::available() {
        Form::PackedTransposedBf16
    } else {
        Form::PackedTransposed
    };
    let packed: Vec<bool> = (0..g.values().len())
        .map(|v| pack && store_transposed[v] && half_ok[v] == HalfUse::No)
        .collect();
    let epilogues = plan_epilogues(g, &fusion, |product| {
        let right = product.inputs[1];
        let constant = matches!(g.producer(right).op, Op::Const { .. });
        packed[right.index()] || (constant && !store_transposed[right.index()] && runs_as_one_gemv(g, product))
    });
    let values = g.values().len();
    let mut w = Walk {
        root: (0..values).map(|v| ValueId(v as u32)).collect(),
        home: vec![Home::Nowhere; values],
        half_copy: vec![None; values],
        inputs: Vec::new(),
        consts: Vec::new(),
        pending: Vec::new(),
        summary: PlanSummary::default(),
    };
    for (index, node) in g.nodes().iter().enumerate() {
        let out = node.outputs[0];
        if let Op::Input { name, ty } = &node.op {
            w.home[out.index()] = Home::Input(w.inputs.len());
            w.inputs.push((name.clone(), ty.clone()));
        } else if let Op::Const { value } = &node.op {
            w.home[out.index()] = Home::Const(w.consts.len());
            let stored = |form| -> Result<ConstData> {
                Ok(match derive(value, form)? {
                    Derived::F32(t) => ConstData::Tensor(t),
                    Derived::Half(h) => ConstData::Half(h),
                    Derived::Packed(p) => ConstData::Packed(p),
                })
            };
            let transposed = store_transposed[out.index()];
            if transposed {
                w.summary.transposed_weights += 1;
            }
            match half_ok[out.index()] {
                HalfUse::Only => {
                    w.summary.half_weights += 1;
                    w.consts
                        .push(stored(if transposed { Form::HalfTransposed } else { Form::Half })?);
                }
                HalfUse::AlsoF32 => {
                    w.summary.half_weights += 1;
                    w.consts.push(ConstData::Tensor(Arc::clone(value)));
                    w.half_copy[out.index()] = Some(w.consts.len());
                    w.consts.push(stored(Form::Half)?);
                }
                HalfUse::No if transposed && pack => {
                    w.summary.packed_weights += 1;
                    if packed_form == Form::PackedTransposedBf16 {
                        w.summary.bf16_packed_weights += 1;
                    }
                    w.consts.push(stored(packed_form)?);
                }
                HalfUse::No if transposed => w.consts.push(stored(Form::Transposed)?),
                HalfUse::No => w.consts.push(ConstData::Tensor(Arc::clone(value))),
            }
        } else if is_alias(g, &node.op, node.inputs.first().copied()) {
            w.root[out.index()] = w.root[node.inputs[0].index()];
            w.summary.aliases += 1;
        } else if backward.absorbed[index] {
            // Computed by the attention backward step placed at the first of its nodes.
            if let Some((plan, reads, defines)) = backward.steps[index].take() {
                for &v in &defines {
                    w.home[v.index()] = Home::Step;
                }
                w.pending.push(Pending {
                    weight_reads: 0..0,
                    kernel: Kernel::AttentionBackward(Box::new(plan)),
                    op: node.op.name(),
                    reads,
                    defines,
                });
            }
        } else if scores.absorbed[index] {
            // A scores product computed inside the softmax step that reads it.
        } else if let Some((plan, operands)) = scores.plans[index].take() {
            for &v in &node.outputs {
                w.home[v.index()] = Home::Step;
            }
            w.pending.push(Pending {
                weight_reads: 0..0,
                kernel: Kernel::ScoresSoftmax(plan),
                op: node.op.name(),
                reads: operands.to_vec(),
                defines: node.outputs.clone(),
            });
        } else if epilogues.absorbed[index] {
            // A product computed inside the step of the group that reads its result.
        } else if let (Some((product, primary)), Some(group)) =
            (epilogues.product_of[index], fusion.roots[index].as_ref())
        {
            let product_node = &g.nodes()[product];
            let (Kernel::Fused(program), Kernel::MatMul(mut plan)) =
                (lower(g, node, Some(group))?, lower(g, product_node, None)?)
            else {
                return Err(exec_error(
                    "plan",
                    "cpu backend: an epilogue without its product".into(),
                ));
            };
            // A packed product reads only its left operand; a matrix-vector product also its weight.
            let packed = place_right_operand(&w, product_node, &store_transposed, &mut plan);
            let mut reads = vec![product_node.inputs[0]];
            if !packed {
                if plan.method != Method::GemvRight || plan.batches.len() != 1 {
                    return Err(exec_error(
                        "plan",
                        "cpu backend: an epilogue of a product that cannot run one".into(),
                    ));
                }
                reads.push(product_node.inputs[1]);
            }
            let weight_reads = 1..reads.len();
            reads.extend(
                group
                    .leaves
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != primary)
                    .map(|(_, &v)| v),
            );
            for &v in &node.outputs {
                w.home[v.index()] = Home::Step;
            }
            let kernel = Kernel::MatMulEpilogue(Box::new(EpiloguePlan {
                product: plan,
                program,
                primary,
            }));
            count_fusion(&mut w.summary, &kernel);
            w.pending.push(Pending {
                weight_reads,
                kernel,
                op: node.op.name(),
                reads,
                defines: node.outputs.clone(),
            });
        } else if !fusion.absorbed[index] {
            let group = fusion.roots[index].as_ref();
            let mut kernel = lower(g, node, group)?;
            let mut packed_right = false;
            if let (Kernel::MatMul(plan), Op::MatMul { .. }) = (&mut kernel, &node.op) {
                packed_right = place_right_operand(&w, node, &store_transposed, plan);
            }
            let reads = match (&node.op, group) {
                (Op::MatMul { .. }, None) if packed_right => vec![node.inputs[0]],
                (_, Some(group)) => group.leaves.clone(),
                (Op::Conv1x1, None) => vec![node.inputs[1], node.inputs[0]], // weight is the left matrix
                (_, None) => node.inputs.clone(),
            };
            for &v in &node.outputs {
                w.home[v.index()] = Home::Step;
            }
            count_fusion(&mut w.summary, &kernel);
            w.pending.push(Pending {
                weight_reads: if matches!(kernel, Kernel::MatMul(_)) {
                    0..reads.len()
                } else {
                    0..0
                },
                kernel,
                op: node.op.name(),
                reads,
                defines: node.outputs.clone(),
            });
        }
    }
    Ok(w)
}

/// True when the matmul `node`, its right operand read where it lies, is planned as one
/// matrix-vector product (a decode step's projection `x · Wᵀ`): the plan [`lower`] gives it, so an
/// epilogue is only planned where the step will run one.
fn runs_as_one_gemv(g: &Graph, node: &Node) -> bool {
    matches!(lower(g, node, None), Ok(Kernel::MatMul(plan)) if plan.method == Method::GemvRight && plan.batches.len() == 1)
}

/// Points the plan of a matmul `node` at its right operand's storage when that is a constant
/// stored transposed (`[k, n]`) or packed; true when packed (the step then reads only the left
/// operand).
fn place_right_operand(w: &Walk, node: &Node, store_transposed: &[bool], plan: &mut MatMulPlan) -> bool {
    let right = node.inputs[1];
    let (Home::Const(c), true) = (w.home[right.index()], store_transposed[right.index()]) else {
        return false;
    };
    plan.b = Layout { rs: plan.n, cs: 1 };
    plan.method = MatMulPlan::choose_method(plan.m, plan.n, plan.k, (plan.a, plan.b), false);
    if let Some(ConstData::Packed(p)) = w.consts.get(c) {
        plan.method = Method::PackedRight;
        plan.packed = Some(PackedWeight(Arc::clone(p)));
        return true;
    }
    false
}

/// Adds a fused step to the summary's fusion counts.
fn count_fusion(summary: &mut PlanSummary, kernel: &Kernel) {
    let program = match kernel {
        Kernel::Fused(program) | Kernel::FusedSoftmax(program, _) | Kernel::FusedReduce(program, _) => Some(program),
        Kernel::MatMulEpilogue(plan) => Some(&plan.program),
        _ => None,
    };
    if let Some(program) = program {
        let ops = program.instrs.len();
        if ops > 1 {
            summary.fused_groups += 1;
            summary.fused_ops += ops;
        }
        summary.largest_fused_group = summary.largest_fused_group.max(ops);
    }
}

/// True when `op` defines a value with exactly its operand's elements (no step needed).
fn is_alias(g: &Graph, op: &Op, operand: Option<ValueId>) -> bool {
    let Some(v) = operand else {
        return false;
    };
    match op {
        Op::Reshape { .. } | Op::Identity => true,
        Op::Cast { to } => super::elementwise::cast_is_alias(g.ty(v).dtype, *to),
        Op::Input { .. }
        | Op::Const { .. }
        | Op::MatMul { .. }
        | Op::Conv1x1
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Pad { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Broadcast { .. }
        | Op::Select => false,
    }
}

/// True when an operand of type `ty` of `op` may be read from half-precision weight storage.
fn is_weight_use(op: &Op, ty: &TensorType) -> bool {
    match op {
        Op::MatMul { .. } => ty.shape.rank() == 2,
        Op::Conv1x1 => true,
        Op::Input { .. }
        | Op::Const { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Pad { .. }
        | Op::Gather
        | Op::ScatterAddRows { .. }
        | Op::Broadcast { .. }
        | Op::Cast { .. }
        | Op::Select
        | Op::Identity => false,
    }
}

/// For each value: whether it is a rank-2 f32 constant (kept in f32, or stored in half precision
/// only) that is read, and whose every use is as the transposed right operand (`transpose_b`) of a matmul with at
/// more rows than `Method::GemvRows` takes (two where it does not run) and an f32 result, and which is not a graph output. Such a weight `[n, k]` is
/// stored transposed, `[k, n]`: `gemm` packs a right operand with contiguous rows much faster than
/// one read down its columns (measured on GPT-2's prefill shapes: [128, 3072] · [768, 3072]ᵀ 2.9 ms
/// instead of 7.0 ms), and the small-row kernel (`gemm_kernel`) reads only `[k, n]` rows; where
/// that kernel runs, an f32 weight is stored packed into its strips instead (see `walk`).
/// Single-row products (decode) and products of up to `MULTI_ROW_MAX` rows (short prompts, where
/// the multi-row kernel runs) keep the stored layout, which the matrix-vector kernels want.
fn transposed_weight_values(g: &Graph, half_ok: &[HalfUse]) -> Vec<bool> {
    let values = g.values().len();
    let mut candidate = vec![false; values];
    // A constant nothing reads (such as the separate projection weights a model graph stacked into
    // one constant) gets no transposed copy.
    let mut read = vec![false; values];
    for node in g.nodes() {
        node.inputs.iter().for_each(|v| read[v.index()] = true);
    }
    for node in g.nodes() {
        if let Op::Const { value } = &node.op {
            let v = node.outputs[0].index();
            candidate[v] = read[v]
                && value.dtype() == DType::F32
                && value.shape().rank() == 2
                && matches!(half_ok[v], HalfUse::No | HalfUse::Only);
        }
    }
    for node in g.nodes() {
        let transposed_rhs = match node.op {
            Op::MatMul {
                transpose_a,
                transpose_b: true,
            } => {
                // A few rows read the stored layout directly (`Method::GemvRows`).
                let rows = crate::infer::last_two(&g.ty(node.inputs[0]).shape, transpose_a).0;
                rows > super::matmul::multi_row_limit() && g.ty(node.outputs[0]).dtype == DType::F32
            }
            _ => false,
        };
        for (position, &v) in node.inputs.iter().enumerate() {
            if !(transposed_rhs && position == 1) {
                candidate[v.index()] = false;
            }
        }
    }
    for o in g.outputs() {
        candidate[o.value.index()] = false;
    }
    candidate
}

/// How a constant may use half-precision storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HalfUse {
    /// Stays f32.
    No,
    /// Every use is as a matmul/conv1x1 weight: stored in half only.
    Only,
    /// Used as a weight and also otherwise (a gather table, a graph output): f32 for those uses
    /// plus a half copy for the weight uses.
    AlsoF32,
}

/// For each value: whether it is a float constant whose matmul/conv1x1 uses (as a rank-2 matmul
/// operand or a conv1x1 operand) may read half-precision storage, and whether it has other uses.
fn half_weight_values(g: &Graph, weights: WeightFormat) -> Vec<HalfUse> {
    let values = g.values().len();
    let mut out = vec![HalfUse::No; values];
    if weights == WeightFormat::F32 {
        return out;
    }
    let mut candidate = vec![false; values];
    for node in g.nodes() {
        if let Op::Const { value } = &node.op {
            candidate[node.outputs[0].index()] = value.dtype().is_float() && value.numel() > 0;
        }
    }
    let (mut weight_use, mut other_use) = (vec![false; values], vec![false; values]);
    for node in g.nodes() {
        for &v in &node.inputs {
            if is_weight_use(&node.op, g.ty(v)) {
                weight_use[v.index()] = true;
            } else {
                other_use[v.index()] = true;
            }
        }
    }
    for o in g.outputs() {
        other_use[o.value.index()] = true;
    }
    for v in 0..values {
        out[v] = match (candidate[v] && weight_use[v], other_use[v]) {
            (false, _) => HalfUse::No,
            (true, false) => HalfUse::Only,
            (true, true) => HalfUse::AlsoF32,
        };
    }
    out
}

/// Slot assignment result.
struct Slots {
    /// Storage kind and length of each slot.
    slots: Vec<(StorageKind, usize)>,
    /// Slot of every value a step defines (unused entries are 0).
    value_slot: Vec<usize>,
}

/// Gives every step output a slot, reusing slots after the last read of their previous value.
fn assign_slots(g: &Graph, pending: &[Pending], root: &[ValueId], home: &[Home]) -> Slots {
    let values = g.values().len();
    let mut last_read: Vec<Option<usize>> = vec![None; values];
    for (s, p) in pending.iter().enumerate() {
        for &v in &p.reads {
            last_read[root[v.index()].index()] = Some(s);
        }
    }
    let mut pinned = vec![false; values];
    for o in g.outputs() {
        pinned[root[o.value.index()].index()] = true;
    }
    let mut slots: Vec<(StorageKind, usize)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut value_slot = vec![0usize; values];
    for (s, p) in pending.iter().enumerate() {
        for &v in &p.defines {
            let ty = g.ty(v);
            let slot = take_slot(&mut slots, &mut free, StorageKind::of(ty.dtype), ty.shape.numel());
            value_slot[v.index()] = slot;
        }
        let release = |v: ValueId, free: &mut Vec<usize>| {
            let is_step_value = home[v.index()] == Home::Step;
            if is_step_value && !pinned[v.index()] && !free.contains(&value_slot[v.index()]) {
                free.push(value_slot[v.index()]);
            }
        };
        for &v in &p.reads {
            let r = root[v.index()];
            if last_read[r.index()] == Some(s) {
                release(r, &mut free);
            }
        }
        for &v in &p.defines {
            if last_read[v.index()].is_none() {
                release(v, &mut free); // defined but never read: dead after its own step
            }
        }
    }
    Slots { slots, value_slot }
}

/// A free slot of `kind` for `numel` elements (smallest that fits, else the largest, grown), or a
/// new one.
fn take_slot(slots: &mut Vec<(StorageKind, usize)>, free: &mut Vec<usize>, kind: StorageKind, numel: usize) -> usize {
    let candidates = free.iter().enumerate().filter(|(_, &s)| slots[s].0 == kind);
    let fitting = candidates
        .clone()
        .filter(|(_, &s)| slots[s].1 >= numel)
        .min_by_key(|(_, &s)| slots[s].1);
    let chosen = fitting.or_else(|| candidates.max_by_key(|(_, &s)| slots[s].1));
    match chosen.map(|(i, &s)| (i, s)) {
        Some((i, s)) => {
            free.swap_remove(i);
            slots[s].1 = slots[s].1.max(numel);
            s
        }
        None => {
            slots.push((kind, numel));
            slots.len() - 1
        }
    }
}
