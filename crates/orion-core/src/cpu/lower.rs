//! Kernel selection: turns one graph node (or one fused group) into the [`Kernel`] that computes
//! it, with every shape-dependent decision (strides, batch offsets, GEMV vs GEMM, reduction
//! layout) taken here, once, from the inferred types.
//!
//! Invariants: `lower` is only called for nodes that need a step (not inputs, constants, aliases
//! or nodes absorbed into a fused group) and only on verified graphs, so operand counts and shapes
//! are the ones shape inference accepted. Conv1x1 is planned as the product `W [Cout, Cin] ·
//! x [Cin, S]`, so its step reads the weight first.

use super::attention::ScoresSoftmaxPlan;
use super::attention_backward::AttentionBackwardPlan;
use super::elementwise::FusedProgram;
use super::epilogue::EpiloguePlan;
use super::fusion::FusedGroup;
use super::layout::{ConcatPlan, PadPlan, RowsPlan, SplitPlan};
use super::matmul::{Layout, MatMulPlan, Method};
use super::reduce::{ReducePlan, SoftmaxPlan};
use super::strided::{Broadcaster, StridedCopy};
use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::infer::last_two;
use crate::interp::exec_error;
use crate::interp::index::{broadcast_map, strides};
use crate::op::{BinaryOp, CompareOp, Op};
use crate::types::DType;

/// How a step computes its results.
#[derive(Clone, Debug)]
pub(crate) enum Kernel {
    Fused(FusedProgram),
    /// A last-axis softmax of a fused group's value, evaluated and normalised a block of rows at a
    /// time (the group's value is never materialised).
    FusedSoftmax(FusedProgram, SoftmaxPlan),
    /// A reduction over the trailing axes (rows of `ReducePlan::count` elements) of a fused group's
    /// value, evaluated and reduced a block of rows at a time.
    FusedReduce(FusedProgram, ReducePlan),
    /// A last-axis softmax of scaled, masked attention scores, with the scores product inside
    /// (never materialised; hidden keys skipped), see [`super::attention`].
    ScoresSoftmax(ScoresSoftmaxPlan),
    /// Attention's backward from `dO` to `dQ`, `dK`, `dV` (products, row sums and the softmax
    /// backward in one step; zero probabilities skipped), see [`super::attention_backward`].
    AttentionBackward(Box<AttentionBackwardPlan>),
    MatMul(MatMulPlan),
    /// A product with a packed constant weight (or one row times a constant weight, as a
    /// matrix-vector product) and the fused group that reads its result, applied to each row part
    /// as the kernel finishes it, see [`super::epilogue`].
    MatMulEpilogue(Box<EpiloguePlan>),
    IntBinary {
        op: BinaryOp,
        a: Broadcaster,
        b: Broadcaster,
    },
    Compare {
        op: CompareOp,
        a: Broadcaster,
        b: Broadcaster,
    },
    Select {
        cond: Broadcaster,
        a: Broadcaster,
        b: Broadcaster,
    },
    /// Element conversion to the output's storage (same shape).
    Cast,
    Softmax(SoftmaxPlan),
    Reduce(ReducePlan),
    /// Transpose, slice and broadcast.
    Copy(StridedCopy),
    Concat(ConcatPlan),
    Split(SplitPlan),
    Pad(PadPlan),
    Gather(RowsPlan),
    ScatterAddRows(RowsPlan),
}

impl Kernel {
    /// The name reported by the plan summary.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kernel::Fused(_) => "fused",
            Kernel::FusedSoftmax(..) => "fused_softmax",
            Kernel::FusedReduce(..) => "fused_reduce",
            Kernel::ScoresSoftmax(_) => "scores_softmax",
            Kernel::AttentionBackward(_) => "attention_backward",
            Kernel::MatMul(p) => match p.method {
                Method::Gemm => "gemm",
                Method::Bf16Gemm => "gemm_bf16",
                Method::GemvRight | Method::GemvLeft => "gemv",
                Method::GemvRows => "gemv_rows",
                Method::RowCombination => "row_combination",
                Method::SplitColumns | Method::SplitRows => "gemm_split",
                Method::Ordered => "matmul_ordered",
                Method::PackedRight => "gemm_packed",
            },
            Kernel::MatMulEpilogue(p) if p.product.packed.is_none() => "gemv_epilogue",
            Kernel::MatMulEpilogue(_) => "gemm_packed_epilogue",
            Kernel::IntBinary { .. } => "int_binary",
            Kernel::Compare { .. } => "compare",
            Kernel::Select { .. } => "select",
            Kernel::Cast => "cast",
            Kernel::Softmax(_) => "softmax",
            Kernel::Reduce(_) => "reduce",
            Kernel::Copy(_) => "copy",
            Kernel::Concat(_) => "concat",
            Kernel::Split(_) => "split",
            Kernel::Pad(_) => "pad",
            Kernel::Gather(_) => "gather",
            Kernel::ScatterAddRows(_) => "scatter_add_rows",
        }
    }

    /// True when the kernel computes new float values (which an F16 result must round), false when
    /// it only moves existing elements or rounds by itself (fused programs).
    pub(crate) fn computes_values(&self) -> bool {
        match self {
            Kernel::MatMul(_)
            | Kernel::MatMulEpilogue(_)
            | Kernel::Softmax(_)
            | Kernel::FusedSoftmax(..)
            | Kernel::FusedReduce(..)
            | Kernel::ScoresSoftmax(_)
            | Kernel::AttentionBackward(_)
            | Kernel::Reduce(_)
            | Kernel::ScatterAddRows(_)
            | Kernel::Cast => true,
            Kernel::Fused(_)
            | Kernel::IntBinary { .. }
            | Kernel::Compare { .. }
            | Kernel::Select { .. }
            | Kernel::Copy(_)
            | Kernel::Concat(_)
            | Kernel::Split(_)
            | Kernel::Pad(_)
            | Kernel::Gather(_) => false,
        }
    }
}

/// The kernel of `node`, or of the fused group it roots.
pub(crate) fn lower(g: &Graph, node: &Node, group: Option<&FusedGroup>) -> Result<Kernel> {
    let dims = |i: usize| g.ty(node.inputs[i]).shape.dims();
    let out = g.ty(node.outputs[0]).shape.dims();
    if let Some(group) = group {
        // A prologue computes its consumer's operand; any other group computes the node's output.
        let computed = match &node.op {
            Op::Softmax { .. } | Op::Reduce { .. } => dims(0),
            _ => out,
        };
        let program = FusedProgram {
            leaves: group
                .leaves
                .iter()
                .map(|&v| Broadcaster::new(g.ty(v).shape.dims(), computed))
                .collect(),
            rotations: group.rotations.clone(),
            instrs: group.instrs.clone(),
            numel: computed.iter().product(),
        };
        return Ok(match &node.op {
            Op::Softmax { axis } => Kernel::FusedSoftmax(program, SoftmaxPlan::new(computed, *axis)),
            Op::Reduce { op, axes, .. } => Kernel::FusedReduce(program, ReducePlan::new(*op, computed, axes)),
            _ => Kernel::Fused(program),
        });
    }
    let not_a_step = || exec_error(node.op.name(), "cpu backend: this op is not planned as a step".into());
    Ok(match &node.op {
        Op::Input { .. } | Op::Const { .. } | Op::Reshape { .. } | Op::Identity => return Err(not_a_step()),
        // Float elementwise ops always come with a group; i32 binary ops get their own kernel.
        Op::Unary(_) => return Err(not_a_step()),
        Op::Binary(op) => Kernel::IntBinary {
            op: *op,
            a: Broadcaster::new(dims(0), out),
            b: Broadcaster::new(dims(1), out),
        },
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => Kernel::MatMul(matmul_plan(g, node, *transpose_a, *transpose_b)),
        Op::Conv1x1 => Kernel::MatMul(conv1x1_plan(g, node)),
        Op::Compare(op) => Kernel::Compare {
            op: *op,
            a: Broadcaster::new(dims(0), out),
            b: Broadcaster::new(dims(1), out),
        },
        Op::Softmax { axis } => Kernel::Softmax(SoftmaxPlan::new(dims(0), *axis)),
        Op::Reduce { op, axes, .. } => Kernel::Reduce(ReducePlan::new(*op, dims(0), axes)),
        Op::Transpose { perm } => {
            let in_strides = strides(dims(0));
            Kernel::Copy(StridedCopy::gather(
                out,
                0,
                &perm.iter().map(|&p| in_strides[p]).collect::<Vec<_>>(),
            ))
        }
        Op::Slice { begin, .. } => {
            let in_strides = strides(dims(0));
            let offset = begin.iter().zip(&in_strides).map(|(b, s)| b * s).sum();
            Kernel::Copy(StridedCopy::gather(out, offset, &in_strides))
        }
        Op::Concat { axis } => {
            let parts: Vec<&[usize]> = (0..node.inputs.len()).map(dims).collect();
            Kernel::Concat(ConcatPlan::new(&parts, *axis, out))
        }
        Op::Split { axis, .. } => {
            let pieces: Vec<&[usize]> = node.outputs.iter().map(|&v| g.ty(v).shape.dims()).collect();
            Kernel::Split(SplitPlan::new(dims(0), *axis, &pieces))
        }
        Op::Pad { before, value, .. } => Kernel::Pad(PadPlan::new(dims(0), before, out, *value)),
        Op::Gather => Kernel::Gather(RowsPlan {
            rows: dims(0)[0],
            width: dims(0)[1],
            index_dims: dims(1).to_vec(),
        }),
        Op::ScatterAddRows { rows } => Kernel::ScatterAddRows(RowsPlan {
            rows: *rows,
            width: out[1],
            index_dims: dims(0).to_vec(),
        }),
        Op::Broadcast { .. } => Kernel::Copy(StridedCopy::gather(out, 0, &broadcast_strides(dims(0), out))),
        Op::Cast { .. } => Kernel::Cast,
        Op::Select => Kernel::Select {
            cond: Broadcaster::new(dims(0), out),
            a: Broadcaster::new(dims(1), out),
            b: Broadcaster::new(dims(2), out),
        },
    })
}

/// Source strides of an operand of extents `src` broadcast to `out` (0 on repeated axes).
fn broadcast_strides(src: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - src.len();
    let src_strides = strides(src);
    (0..out.len())
        .map(|axis| match axis.checked_sub(offset) {
            Some(s) if src[s] != 1 => src_strides[s],
            _ => 0,
        })
        .collect()
}

/// Conv1x1 as the product `W [Cout, Cin] · x [Cin, S]` (the step reads the weight first).
fn conv1x1_plan(g: &Graph, node: &Node) -> MatMulPlan {
    let x = g.ty(node.inputs[0]).shape.dims();
    let (cin, s, cout) = (x[1], x[3], g.ty(node.inputs[1]).shape.dims()[0]);
    let half_result = g.ty(node.outputs[0]).dtype == DType::F16;
    MatMulPlan {
        m: cout,
        n: s,
        k: cin,
        a: Layout::of(cin, false),
        b: Layout::of(s, false),
        batches: vec![(0, 0)],
        method: MatMulPlan::choose_method(
            cout,
            s,
            cin,
            (Layout::of(cin, false), Layout::of(s, false)),
            half_result,
        ),
        packed: None,
    }
}

/// Batch offsets, layouts and method of a MatMul node.
fn matmul_plan(g: &Graph, node: &Node, ta: bool, tb: bool) -> MatMulPlan {
    let (at, bt) = (&g.ty(node.inputs[0]).shape, &g.ty(node.inputs[1]).shape);
    let out = g.ty(node.outputs[0]).shape.dims();
    let (m, k) = last_two(at, ta);
    let (_, n) = last_two(bt, tb);
    let (ad, bd) = (at.dims(), bt.dims());
    let batch_out = &out[..out.len() - 2];
    let a_batches = broadcast_map(&ad[..ad.len() - 2], batch_out);
    let b_batches = broadcast_map(&bd[..bd.len() - 2], batch_out);
    let a = Layout::of(ad[ad.len() - 1], ta);
    let b = Layout::of(bd[bd.len() - 1], tb);
    MatMulPlan {
        m,
        n,
        k,
        a,
        b,
        batches: a_batches
            .iter()
            .zip(&b_batches)
            .map(|(&i, &j)| (i * m * k, j * k * n))
            .collect(),
        method: MatMulPlan::choose_method(m, n, k, (a, b), g.ty(node.outputs[0]).dtype == DType::F16),
        packed: None,
    }
}
