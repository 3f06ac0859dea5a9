//! Printer of the text form: one line per node, result types always written.
//!
//! Invariants: the output depends only on the graph (deterministic); it is exactly what `parse`
//! accepts, so `parse(print(g)) == g` for every graph built through `Graph::add_node`; floats are
//! written so that they parse back bit-exactly (shortest round-trip form; `nan`, `inf`, `-inf`);
//! attributes appear in a fixed order per op; printing never panics, even on a graph that fails
//! verification (an unknown value type prints as `?`).

use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::tensor::TensorData;
use crate::text::lexer::is_word_char;
use std::fmt::Write;

/// The whole graph in text form, ending with a newline.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", graph_name(g.name()));
    for node in g.nodes() {
        let _ = writeln!(out, "  {}", node_line(g, node));
    }
    for o in g.outputs() {
        let _ = writeln!(out, "  output {} = {}", quote(&o.name), o.value);
    }
    out.push_str("}\n");
    out
}

/// The line of one node, without indentation or newline. Panics if `node` is not a node of `g`,
/// like [`Graph::node`].
pub fn print_node(g: &Graph, node: NodeId) -> String {
    node_line(g, g.node(node))
}

/// The line of a node of `g`: `%3 = add %1, %2 : f32[4]`.
pub(crate) fn node_line(g: &Graph, node: &Node) -> String {
    let mut line = String::new();
    let results: Vec<String> = node.outputs.iter().map(|v| v.to_string()).collect();
    if !results.is_empty() {
        line.push_str(&results.join(", "));
        line.push_str(" = ");
    }
    line.push_str(node.op.name());
    let operands: Vec<String> = node.inputs.iter().map(|v| v.to_string()).collect();
    if !operands.is_empty() {
        line.push(' ');
        line.push_str(&operands.join(", "));
    }
    write_attributes(&mut line, &node.op);
    let types: Vec<String> = node
        .outputs
        .iter()
        .map(|v| match g.values().get(v.index()) {
            Some(info) => info.ty.to_string(),
            None => "?".to_string(),
        })
        .collect();
    if !types.is_empty() {
        line.push_str(" : ");
        line.push_str(&types.join(", "));
    }
    line
}

/// Appends ` key=value` for every attribute of `op`, in the fixed order the parser documents.
fn write_attributes(line: &mut String, op: &Op) {
    let mut attr = |key: &str, value: String| {
        let _ = write!(line, " {key}={value}");
    };
    match op {
        Op::Input { name, .. } => {
            let _ = write!(line, " {}", quote(name));
        }
        Op::Const { value } => {
            let _ = write!(line, " [{}]", const_data(value.data()));
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            attr("transpose_a", transpose_a.to_string());
            attr("transpose_b", transpose_b.to_string());
        }
        Op::Conv1x1 | Op::Unary(_) | Op::Binary(_) | Op::Compare(_) => {}
        Op::Softmax { axis } => attr("axis", axis.to_string()),
        Op::Reduce { axes, keep_dims, .. } => {
            attr("axes", list(axes));
            attr("keep_dims", keep_dims.to_string());
        }
        Op::Reshape { shape } => attr("shape", list(shape)),
        Op::Transpose { perm } => attr("perm", list(perm)),
        Op::Slice { begin, end } => {
            attr("begin", list(begin));
            attr("end", list(end));
        }
        Op::Concat { axis } => attr("axis", axis.to_string()),
        Op::Split { axis, sizes } => {
            attr("axis", axis.to_string());
            attr("sizes", list(sizes));
        }
        Op::Pad { before, after, value } => {
            attr("before", list(before));
            attr("after", list(after));
            attr("value", float(*value));
        }
        Op::Gather => {}
        Op::ScatterAddRows { rows } => attr("rows", rows.to_string()),
        Op::Broadcast { shape } => attr("shape", list(shape)),
        Op::Cast { to } => attr("to", to.name().to_string()),
        Op::Select | Op::Identity => {}
    }
}

/// `[1,2,3]`.
fn list(items: &[usize]) -> String {
    let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// Flat row-major constant elements separated by `, `.
fn const_data(data: &TensorData) -> String {
    let items: Vec<String> = match data {
        TensorData::Float(v) => v.iter().map(|&x| float(x)).collect(),
        TensorData::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    items.join(", ")
}

/// An f32 in the shortest form that parses back to the same bits (NaN payloads are not kept).
pub(crate) fn float(x: f32) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x == f32::INFINITY {
        "inf".to_string()
    } else if x == f32::NEG_INFINITY {
        "-inf".to_string()
    } else {
        format!("{x:?}")
    }
}

/// A graph name: bare when it is a non-empty identifier, quoted otherwise.
fn graph_name(name: &str) -> String {
    let bare = !name.is_empty() && name.chars().all(|c| is_word_char(c) && c != '+');
    if bare {
        name.to_string()
    } else {
        quote(name)
    }
}

/// A double-quoted string with `"`, `\` and line-breaking characters escaped (shared with the MIL
/// printer, whose string literals use the same escapes).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_in_shortest_round_trip_form() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(2.5e-8), "2.5e-8");
        assert_eq!(float(f32::NAN), "nan");
        assert_eq!(float(f32::NEG_INFINITY), "-inf");
        let x = 0.1f32 + 0.2f32;
        assert_eq!(float(x).parse::<f32>().map(f32::to_bits), Ok(x.to_bits()));
    }

    #[test]
    fn names_are_quoted_with_escapes() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(graph_name("block_0.attn-1"), "block_0.attn-1");
        assert_eq!(graph_name("my graph"), "\"my graph\"");
        assert_eq!(graph_name(""), "\"\"");
    }
}
