//! The executor interface every backend implements, and the reference backend over the interpreter.
//!
//! `Backend::compile` turns a graph into an `Executable` once; `Executable::run` evaluates it many
//! times. Inputs are given in the order of the graph's inputs and outputs come back in the order of
//! its outputs, for every backend, so results can be compared tensor by tensor.

use crate::error::Result;
use crate::graph::Graph;
use crate::interp::{interpret, Precision};
use crate::tensor::Tensor;
use std::fmt::Debug;

/// Something that can prepare graphs for execution (the reference interpreter, the CPU, a device).
pub trait Backend: Debug {
    /// A short name for reports (`reference`, `cpu`, `ane-sim`, `ane`).
    fn name(&self) -> &str;
    /// Prepares `graph` for repeated execution.
    fn compile(&self, graph: &Graph) -> Result<Box<dyn Executable>>;
}

/// A prepared program.
pub trait Executable: Debug + Send + Sync {
    /// Runs the program on `inputs` (graph input order) and returns the outputs (graph output order).
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;

    /// Sends the constants of `graph` — the graph this program was compiled from with only constant
    /// values changed — into the compiled program without recompiling, where the backend has such a
    /// path (the ANE's weight-file reload, ane.md §6). `Ok(false)`: no such path (or the structure
    /// changed); the caller recompiles. `Ok(true)` means the values were sent, not that they took
    /// effect (ANE rule C07): callers verify the results.
    fn reload_constants(&self, graph: &Graph) -> Result<bool> {
        let _ = graph;
        Ok(false)
    }
}

/// The reference interpreter as a backend: slow, obvious, the definition of every op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceBackend {
    pub precision: Precision,
}

impl Backend for ReferenceBackend {
    fn name(&self) -> &str {
        "reference"
    }

    fn compile(&self, graph: &Graph) -> Result<Box<dyn Executable>> {
        crate::verify::verify(graph)?;
        Ok(Box::new(ReferenceExecutable {
            graph: graph.clone(),
            precision: self.precision,
        }))
    }
}

#[derive(Debug)]
struct ReferenceExecutable {
    graph: Graph,
    precision: Precision,
}

impl Executable for ReferenceExecutable {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        interpret(&self.graph, inputs, self.precision)
    }
}
