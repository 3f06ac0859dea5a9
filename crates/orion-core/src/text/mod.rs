//! Text form of the IR: a deterministic printer and a parser (`parse(print(g)) == g`).
//!
//! One node per line, result types always written, attributes as `key=value` in a fixed order per
//! op; see `parse` for the grammar. The printer's output is the canonical form: it is what golden
//! tests compare and what program keys hash.

mod lexer;
mod parse;
mod print;

pub use parse::parse;
pub(crate) use print::node_line;
pub use print::{print, print_node, quote};
