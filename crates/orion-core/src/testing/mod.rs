//! Test support shared by the crate's tests and downstream crates: random graphs, reference blocks.
pub mod blocks;
pub mod random_graph;

pub use random_graph::{op_coverage, random_graph, random_inputs, RandomGraphOptions};

/// The mnemonic of every op of the closed set, written out by hand (not derived from `Op`), so that
/// coverage tests notice an op that a generator or a hand-built graph forgets.
pub const ALL_OP_NAMES: [&str; 44] = [
    "input",
    "const",
    "matmul",
    "conv1x1",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "tanh",
    "sigmoid",
    "relu",
    "erf",
    "sin",
    "cos",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "pow",
    "equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "softmax",
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reshape",
    "transpose",
    "slice",
    "concat",
    "split",
    "pad",
    "gather",
    "scatter_add_rows",
    "broadcast",
    "cast",
    "select",
    "identity",
];
