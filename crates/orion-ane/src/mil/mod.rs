//! MIL, the text program format the ANE compiler consumes (ane.md §3): the program model, the printer
//! for both dialects, the parser, and the conversion of a MIL function back into an Orion `Graph`.
//!
//! - `ast`: the dialect-free program model ([`Program`], [`Function`], [`Operation`], [`MilType`], …);
//! - `print`: [`print_program`], deterministic text in the exact layout of ane.md §3;
//! - `lexer` + `parse`: [`parse_program`], liberal about whitespace, comments and CoreML-written
//!   spellings, never panicking and bounded in nesting depth;
//! - `to_graph` (+ `ops`, `shape_ops`): [`to_graph`], MIL → IR for the op subset Orion emits and CoreML commonly
//!   writes, so that the simulator can run exactly the text the device would receive;
//! - `resolver`: [`WeightResolver`] and its in-memory and blob-dictionary implementations.
//!
//! MIL vocabulary (operation, const, BLOBFILE, opset, dialect) stays inside this module; outside it the
//! project speaks of Graph, Node, Op and Tensor.

mod ast;
mod error;
mod lexer;
mod ops;
mod parse;
mod print;
mod resolver;
mod shape_ops;
mod to_graph;

pub use ast::{var_arg, Argument, Dim, Function, Literal, MilDType, MilType, Operation, Param, Program, Value};
pub use error::MilError;
pub use parse::{parse_program, MAX_NESTING};
pub use print::print_program;
pub use resolver::{BlobDictResolver, InMemoryResolver, WeightResolver};
pub use to_graph::to_graph;

/// The two spellings of MIL text (ane.md §3, catalogue C15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `program(1.3)`, `func main<ios18>`, scalar shorthand: `fp16 eps = …`, `name = string("x")`.
    Ios18,
    /// `program(1.0)`, `func main<ios16>`, verbose: `tensor<fp16, []> eps = …`,
    /// `name = tensor<string, []>("x")`.
    Ios16,
}

impl Dialect {
    /// The `program(…)` version this dialect is used with.
    pub fn program_version(self) -> &'static str {
        match self {
            Dialect::Ios18 => "1.3",
            Dialect::Ios16 => "1.0",
        }
    }

    /// The function opset this dialect is used with.
    pub fn opset(self) -> &'static str {
        match self {
            Dialect::Ios18 => "ios18",
            Dialect::Ios16 => "ios16",
        }
    }

    /// The buildInfo entries peers use with this dialect, verbatim from ane.md §3.
    pub fn build_info(self) -> Vec<(String, String)> {
        let entries: &[(&str, &str)] = match self {
            Dialect::Ios18 => &[
                ("coremlc-component-MIL", "3510.2.1"),
                ("coremlc-version", "3505.4.1"),
                ("coremltools-component-milinternal", ""),
                ("coremltools-version", "9.0"),
            ],
            Dialect::Ios16 => &[("coremlc-version", "3505.4.1")],
        };
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A program with this dialect's version and buildInfo and no functions yet.
    pub fn empty_program(self) -> Program {
        Program {
            version: self.program_version().to_string(),
            build_info: self.build_info(),
            functions: Vec::new(),
        }
    }
}
