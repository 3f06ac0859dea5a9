//! Test support shared by the crate's tests and downstream crates: random graphs, reference blocks.
pub mod blocks;
pub mod random_graph;

pub use random_graph::{op_coverage, random_graph, random_inputs, RandomGraphOptions};
