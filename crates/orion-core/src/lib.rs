//! Orion's compiler core: the graph IR and everything that works on it without knowing a device.
//!
//! - `types`, `tensor`, `op`, `graph`, `infer`, `builder`: the IR and its static rules;
//! - `composite`: layers built from primitives (norms, activations, attention, RoPE, losses);
//! - `text`: the deterministic text form (print and parse); `verify`: the verifier;
//! - `passes`: the optimisation pipeline and analyses;
//! - `autodiff`: reverse-mode differentiation as a graph transform;
//! - `interp`: the reference interpreter, the executable definition of every op;
//! - `backend`: the `Backend`/`Executable` interface and the reference backend;
//! - `flops`: FLOPs and boundary bytes of a graph (the one definition the cost model and benchmarks share);
//! - `cpu`: the fast CPU backend (execution plans, gemm/GEMV, fused elementwise kernels);
//! - `testing`: random graphs and reference blocks for tests here and downstream.

pub mod autodiff;
pub mod backend;
pub mod builder;
pub mod composite;
pub mod cpu;
pub mod error;
pub mod flops;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod op;
pub mod passes;
pub mod tensor;
pub mod testing;
pub mod text;
pub mod types;
pub mod verify;

pub use error::{CoreError, Result};
pub use graph::{Graph, GraphOutput, Node, NodeId, ValueId, ValueInfo};
pub use op::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
pub use tensor::{Tensor, TensorData};
pub use types::{DType, Shape, TensorType};
