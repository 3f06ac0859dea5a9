//! One module per command group of the `orion` binary.

pub mod ir;
