//! One module per command group of the `orion` binary.

pub mod ane;
pub mod bench;
pub mod device;
pub mod generate;
pub mod ir;
pub mod npy;
pub mod probe;
pub mod products;
pub mod train;
