//! The pass pipeline: a named table of passes, a driver that verifies after each, and analyses.
//!
//! A pass is a function `Graph -> Graph` (graphs are values; a pass builds a new graph). Every
//! pass keeps the graph's interface: the input list (names, order, types) and the output list
//! (names, order, types) are unchanged; the driver checks that after every pass and, when
//! `PipelineOptions::verify` is set, also runs the verifier on the input graph and after every pass.
//! Analyses (`memory`, `io_plan`) run after the passes and only report; they never change a graph.

mod cast_fusion;
mod cse;
mod dce;
mod fold;
mod identity;
mod io_plan;
mod memory;
mod rebuild;

pub use cast_fusion::{cast_fusion, preserves_values};
pub use cse::{bitwise_identical, cse, same_op};
pub use dce::dce;
pub use fold::{fold, FOLD_LIMIT};
pub use identity::{first_match, identity, Rewrite, Rule, RuleFn, RULES};
pub use io_plan::{io_plan, IoPlan, IoPlanOptions, IoSlot};
pub use memory::{memory_report, MemoryReport};

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::types::TensorType;
use std::time::{Duration, Instant};

/// Settings a pass may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassContext {
    /// `fold` leaves a node alone when one of its results has more elements than this.
    pub fold_limit: usize,
}

impl Default for PassContext {
    fn default() -> PassContext {
        PassContext { fold_limit: FOLD_LIMIT }
    }
}

/// A pass: builds the rewritten graph.
pub type PassFn = fn(&Graph, &PassContext) -> Result<Graph>;

/// The passes in the order `optimise` runs them. Names may repeat (a final `dce` removes what the
/// rewrites left unused).
pub const PIPELINE: &[(&str, PassFn)] = &[
    ("dce", dce),
    ("identity", identity),
    ("cast-fusion", cast_fusion),
    ("cse", cse),
    ("fold", fold),
    // Folding exposes new identities (a folded constant 1) and duplicate constants.
    ("identity", identity),
    ("cse", cse),
    ("dce", dce),
];

/// Default memory budget of the memory analysis: 32 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 32 << 20;

/// How `optimise` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Run the verifier on the input and after every pass (default: in debug builds).
    pub verify: bool,
    /// Keep the printed IR after every run of the pass with this name.
    pub print_after: Option<String>,
    /// Budget of the memory analysis.
    pub budget_bytes: u64,
    /// Options of the I/O planning analysis.
    pub io: IoPlanOptions,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            verify: cfg!(debug_assertions),
            print_after: None,
            budget_bytes: DEFAULT_BUDGET_BYTES,
            io: IoPlanOptions::default(),
        }
    }
}

/// The optimised graph and everything learned on the way.
#[derive(Clone, Debug)]
pub struct Optimised {
    pub graph: Graph,
    pub memory: MemoryReport,
    pub io: IoPlan,
    /// Time of every pass run and analysis, in order.
    pub timings: Vec<(String, Duration)>,
    /// `(pass name, printed IR after it)` for every run of `PipelineOptions::print_after`.
    pub printed: Vec<(String, String)>,
}

/// The distinct pass names of [`PIPELINE`], in pipeline order.
pub fn pass_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in PIPELINE {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

fn find_pass(name: &str) -> Result<PassFn> {
    PIPELINE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, pass)| *pass)
        .ok_or_else(|| CoreError::Pass {
            pass: name.to_string(),
            message: format!("unknown pass; valid names: {}", pass_names().join(", ")),
        })
}

/// Runs one pass by name, checking that it kept the graph's interface (no verification).
pub fn run_pass(name: &str, g: &Graph, ctx: &PassContext) -> Result<Graph> {
    let pass = find_pass(name)?;
    let out = pass(g, ctx)?;
    check_interface(name, g, &out)?;
    Ok(out)
}

/// Runs every pass of [`PIPELINE`] on `g`, then the memory and I/O analyses.
pub fn optimise(g: &Graph, options: &PipelineOptions) -> Result<Optimised> {
    if let Some(name) = &options.print_after {
        find_pass(name)?;
    }
    if options.verify {
        crate::verify::verify(g)?;
    }
    let ctx = PassContext::default();
    let mut graph = g.clone();
    let mut timings = Vec::with_capacity(PIPELINE.len() + 2);
    let mut printed = Vec::new();
    for (name, pass) in PIPELINE {
        let start = Instant::now();
        let next = pass(&graph, &ctx)?;
        timings.push((name.to_string(), start.elapsed()));
        check_interface(name, &graph, &next)?;
        if options.verify {
            crate::verify::verify(&next).map_err(|e| CoreError::Pass {
                pass: name.to_string(),
                message: format!("produced an invalid graph: {e}"),
            })?;
        }
        if options.print_after.as_deref() == Some(*name) {
            printed.push((name.to_string(), crate::text::print(&next)));
        }
        graph = next;
    }
    let start = Instant::now();
    let memory = memory_report(&graph, options.budget_bytes);
    timings.push(("memory".to_string(), start.elapsed()));
    let start = Instant::now();
    let io = io_plan(&graph, &options.io)?;
    timings.push(("io-plan".to_string(), start.elapsed()));
    Ok(Optimised {
        graph,
        memory,
        io,
        timings,
        printed,
    })
}

/// `(name, type)` of every input, in declaration order.
fn input_signature(g: &Graph) -> Vec<(String, TensorType)> {
    g.inputs().map(|(name, _, ty)| (name.to_string(), ty.clone())).collect()
}

/// `(name, type)` of every output, in order.
fn output_signature(g: &Graph) -> Result<Vec<(String, TensorType)>> {
    g.outputs()
        .iter()
        .map(|o| Ok((o.name.clone(), g.try_ty(o.value)?.clone())))
        .collect()
}

/// Fails unless `after` has exactly the inputs and outputs (names, order, types) of `before`.
fn check_interface(pass: &str, before: &Graph, after: &Graph) -> Result<()> {
    let fail = |what: &str| CoreError::Pass {
        pass: pass.to_string(),
        message: format!("changed the graph's {what}"),
    };
    if input_signature(before) != input_signature(after) {
        return Err(fail("inputs"));
    }
    if output_signature(before)? != output_signature(after)? {
        return Err(fail("outputs"));
    }
    if before.name() != after.name() {
        return Err(fail("name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UnaryOp;
    use crate::types::DType;

    /// Two inputs (one unused), dead code, an `x*1`, and two outputs in a deliberate order.
    fn sample() -> Graph {
        let mut g = Graph::new("sample");
        let x = g.input("x", TensorType::new(DType::F32, [2, 3])).unwrap();
        let _unused = g.input("unused", TensorType::new(DType::F16, [5])).unwrap();
        let one = g.mul_scalar(x, 1.0).unwrap();
        let _dead = g.unary(UnaryOp::Exp, one).unwrap();
        let t = g.unary(UnaryOp::Tanh, one).unwrap();
        g.set_output("second", t).unwrap();
        g.set_output("first", x).unwrap();
        g
    }

    fn verifying() -> PipelineOptions {
        PipelineOptions {
            verify: true,
            ..PipelineOptions::default()
        }
    }

    #[test]
    fn optimise_keeps_the_interface_and_removes_work() {
        let g = sample();
        let out = optimise(&g, &verifying()).unwrap();
        assert_eq!(input_signature(&out.graph), input_signature(&g));
        assert_eq!(output_signature(&out.graph).unwrap(), output_signature(&g).unwrap());
        // input, input, tanh: the multiply by one and the dead exp are gone.
        let ops: Vec<&str> = out.graph.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, vec!["input", "input", "tanh"]);
    }

    #[test]
    fn timings_cover_every_pass_run_and_both_analyses() {
        let out = optimise(&sample(), &verifying()).unwrap();
        let names: Vec<&str> = out.timings.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected: Vec<&str> = PIPELINE.iter().map(|(n, _)| *n).collect();
        expected.extend(["memory", "io-plan"]);
        assert_eq!(names, expected);
    }

    #[test]
    fn print_after_keeps_one_text_per_run_of_the_pass() {
        let options = PipelineOptions {
            print_after: Some("dce".to_string()),
            ..verifying()
        };
        let out = optimise(&sample(), &options).unwrap();
        let runs = PIPELINE.iter().filter(|(n, _)| *n == "dce").count();
        assert_eq!(out.printed.len(), runs);
        let last = &out.printed[runs - 1].1;
        assert_eq!(last, &crate::text::print(&out.graph));
    }

    #[test]
    fn unknown_print_after_lists_the_valid_names() {
        let options = PipelineOptions {
            print_after: Some("fuse-everything".to_string()),
            ..verifying()
        };
        let err = optimise(&sample(), &options).unwrap_err().to_string();
        assert!(err.contains("fuse-everything"), "{err}");
        for name in pass_names() {
            assert!(err.contains(name), "{err} lacks {name}");
        }
    }

    #[test]
    fn pass_names_are_distinct_and_cover_the_pipeline() {
        let names = pass_names();
        assert_eq!(names, vec!["dce", "identity", "cast-fusion", "cse", "fold"]);
        assert!(PIPELINE.iter().all(|(n, _)| names.contains(n)));
    }

    #[test]
    fn a_changed_interface_is_caught() {
        let g = sample();
        let mut renamed = Graph::new("sample");
        let x = renamed.input("x", TensorType::new(DType::F32, [2, 3])).unwrap();
        let _u = renamed.input("other", TensorType::new(DType::F16, [5])).unwrap();
        renamed.set_output("second", x).unwrap();
        renamed.set_output("first", x).unwrap();
        assert!(check_interface("test", &g, &renamed).is_err());
        let mut reordered = g.clone();
        let mut outs = reordered.outputs().to_vec();
        outs.reverse();
        reordered.replace_outputs(outs).unwrap();
        assert!(check_interface("test", &g, &reordered).is_err());
        assert!(check_interface("test", &g, &g.clone()).is_ok());
    }
}
