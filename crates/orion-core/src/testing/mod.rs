//! Test support shared by the crate's tests and downstream crates: random graphs, reference blocks.
