//! The `orion` command line.
fn main() {}
