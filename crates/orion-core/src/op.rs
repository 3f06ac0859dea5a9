//! The closed set of IR operations.
//!
//! Every semantic match over `Op` (shape inference, interpreter, printer, parser, autodiff,
//! lowering) lists every variant with no catch-all arm, so adding an op is a compile-error-driven
//! checklist. Attributes live in the variant; operands are the node's inputs. Axes and
//! permutations are always non-negative (the builder normalises negative axes).
//!
//! Composites (layernorm, rmsnorm, GELU, SiLU, SwiGLU, attention, RoPE, cross-entropy) are not ops:
//! they are built from these primitives in `composite`.

use crate::tensor::Tensor;
use crate::types::{DType, TensorType};
use std::sync::Arc;

/// Elementwise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Tanh,
    Sigmoid,
    Relu,
    Erf,
    /// Sine of an angle in radians (used by rotary position embeddings computed in-graph).
    Sin,
    /// Cosine of an angle in radians.
    Cos,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 12] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Erf,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Erf => "erf",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
        }
    }
}

/// Elementwise functions of two operands with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Pow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Pow => "pow",
        }
    }

    /// True when `op(a, b) == op(b, a)`, used by common-subexpression elimination.
    pub fn is_commutative(self) -> bool {
        match self {
            BinaryOp::Add | BinaryOp::Mul | BinaryOp::Maximum | BinaryOp::Minimum => true,
            BinaryOp::Sub | BinaryOp::Div | BinaryOp::Pow => false,
        }
    }
}

/// Elementwise comparisons with broadcasting; the result is `bool`. Not differentiable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Equal,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl CompareOp {
    pub const ALL: [CompareOp; 5] = [
        CompareOp::Equal,
        CompareOp::Less,
        CompareOp::LessEqual,
        CompareOp::Greater,
        CompareOp::GreaterEqual,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Equal => "equal",
            CompareOp::Less => "less",
            CompareOp::LessEqual => "less_equal",
            CompareOp::Greater => "greater",
            CompareOp::GreaterEqual => "greater_equal",
        }
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
        }
    }
}

/// One IR operation. Operand counts and meanings are documented per variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A program input (no operands). `name` is unique among the graph's inputs.
    Input {
        name: String,
        ty: TensorType,
    },
    /// A constant (no operands); shared so that copying graphs does not copy weights.
    Const {
        value: Arc<Tensor>,
    },
    /// `[.., M, K] x [.., K, N] -> [.., M, N]` (after the optional transposes of the last two axes);
    /// leading (batch) axes broadcast. Operands: a, b.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// 1x1 convolution without bias: x `[1, Cin, 1, S]`, weight `[Cout, Cin, 1, 1]` -> `[1, Cout, 1, S]`.
    Conv1x1,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CompareOp),
    /// Softmax along one axis. Operand: x.
    Softmax {
        axis: usize,
    },
    /// Reduction over `axes` (sorted, unique); removed axes are kept as 1 when `keep_dims`.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Same elements, new shape of equal element count.
    Reshape {
        shape: Vec<usize>,
    },
    /// Axis permutation: output axis i is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Contiguous sub-block `begin[i]..end[i]` on every axis.
    Slice {
        begin: Vec<usize>,
        end: Vec<usize>,
    },
    /// Joins all operands (at least one) along `axis`.
    Concat {
        axis: usize,
    },
    /// Splits along `axis` into pieces of `sizes` (summing to the extent); one output per piece.
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    /// Constant padding: `before[i]` and `after[i]` elements of `value` on every axis.
    Pad {
        before: Vec<usize>,
        after: Vec<usize>,
        value: f32,
    },
    /// Row gather (embedding lookup): table `[V, D]`, indices i32 `[..]` -> `[.., D]`.
    Gather,
    /// Adjoint of `Gather`: indices i32 `[..]`, updates `[.., D]` -> `[rows, D]`, summing rows that repeat.
    ScatterAddRows {
        rows: usize,
    },
    /// Repeats size-1 axes (and prepends axes) to reach `shape`, numpy style.
    Broadcast {
        shape: Vec<usize>,
    },
    /// Element type conversion.
    Cast {
        to: DType,
    },
    /// `cond ? a : b` elementwise with broadcasting. Operands: cond (bool), a, b.
    Select,
    /// Returns its operand unchanged.
    Identity,
}

impl Op {
    /// The mnemonic used by the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const { .. } => "const",
            Op::MatMul { .. } => "matmul",
            Op::Conv1x1 => "conv1x1",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Softmax { .. } => "softmax",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Pad { .. } => "pad",
            Op::Gather => "gather",
            Op::ScatterAddRows { .. } => "scatter_add_rows",
            Op::Broadcast { .. } => "broadcast",
            Op::Cast { .. } => "cast",
            Op::Select => "select",
            Op::Identity => "identity",
        }
    }

    /// Required operand count, or `None` for variadic ops (concat takes one or more).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input { .. } | Op::Const { .. } => Some(0),
            Op::Unary(_)
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Split { .. }
            | Op::Pad { .. }
            | Op::Broadcast { .. }
            | Op::Cast { .. }
            | Op::Identity => Some(1),
            Op::MatMul { .. }
            | Op::Conv1x1
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Gather
            | Op::ScatterAddRows { .. } => Some(2),
            Op::Select => Some(3),
            Op::Concat { .. } => None,
        }
    }

    /// Number of values the op defines.
    pub fn output_count(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            _ => 1,
        }
    }
}
