//! The text form is complete and canonical: `parse(print(g)) == g` for random graphs and for a
//! hand-built graph using every op; `print(parse(text)) == text` for printer-format text; parse
//! errors carry the right line and column; the parser never panics on mutated or hostile text.

use orion_core::op::{BinaryOp, CompareOp, ReduceOp, UnaryOp};
use orion_core::testing::ALL_OP_NAMES;
use orion_core::testing::{random_graph, RandomGraphOptions};
use orion_core::text::{parse, print};
use orion_core::verify::verify;
use orion_core::{CoreError, DType, Graph, Tensor, TensorType};
use proptest::prelude::*;

fn f32_type(dims: &[usize]) -> TensorType {
    TensorType::new(DType::F32, dims)
}

/// A graph with one node per op variant, every unary, binary, compare and reduce kind, constants of
/// every dtype (including a scalar and awkward floats) and an output name that needs escapes.
fn every_op_graph() -> Graph {
    let mut g = Graph::new("every_op");
    let x = g.input("x", f32_type(&[2, 3])).unwrap();
    let ids = g.input("ids", TensorType::new(DType::I32, [4])).unwrap();
    let row = g.constant(Tensor::f32([3], vec![1.0, -2.5, 1e-7])).unwrap();
    let _awkward = g
        .constant(Tensor::f32([4], vec![-0.0, f32::MAX, 1e-45, f32::NEG_INFINITY]))
        .unwrap();
    let _half = g.constant(Tensor::f16([2], vec![0.1, 65504.0])).unwrap();
    let _ints = g.constant(Tensor::i32([2, 2], vec![-1, 0, 7, i32::MAX])).unwrap();
    let _bools = g.constant(Tensor::bool([3], vec![true, false, true])).unwrap();
    let _scalar = g.scalar(0.5, DType::F32).unwrap();
    let w = g
        .constant(Tensor::f32([3, 4], (0..12).map(|i| i as f32 / 8.0).collect()))
        .unwrap();
    g.matmul(x, w, false, false).unwrap();
    g.matmul(x, x, true, false).unwrap();
    g.matmul(x, x, false, true).unwrap();
    let image = g.reshape(x, &[1, 3, 1, 2]).unwrap();
    let kernel = g.constant(Tensor::f32([4, 3, 1, 1], vec![0.25; 12])).unwrap();
    g.conv1x1(image, kernel).unwrap();
    for op in UnaryOp::ALL {
        g.unary(op, x).unwrap();
    }
    for op in BinaryOp::ALL {
        g.binary(op, x, row).unwrap();
    }
    let mut conditions = Vec::new();
    for op in CompareOp::ALL {
        conditions.push(g.compare(op, x, row).unwrap());
    }
    g.softmax(x, -1).unwrap();
    for op in ReduceOp::ALL {
        g.reduce(op, x, &[0, 1], false).unwrap();
        g.reduce(op, x, &[1], true).unwrap();
    }
    let t = g.transpose(x, &[1, 0]).unwrap();
    g.slice(t, &[1, 0], &[3, 1]).unwrap();
    g.concat(&[x, x, x], 0).unwrap();
    let pieces = g.split(x, 1, &[1, 2]).unwrap();
    let padded = g.pad(pieces[1], &[0, 1], &[2, 0], -1.5).unwrap();
    let table = g
        .constant(Tensor::f32([5, 3], (0..15).map(|i| i as f32).collect()))
        .unwrap();
    let rows = g.gather(table, ids).unwrap();
    g.scatter_add_rows(ids, rows, 5).unwrap();
    let wide = g.broadcast(row, &[2, 2, 3]).unwrap();
    for dtype in DType::ALL {
        g.cast(x, dtype).unwrap();
    }
    let chosen = g.select(conditions[0], x, wide).unwrap();
    let same = g.identity(chosen).unwrap();
    g.set_output("y", same).unwrap();
    g.set_output("padded \"p\" \\ q", padded).unwrap();
    g.set_output("rows", rows).unwrap();
    g
}

#[test]
fn every_op_graph_round_trips() {
    let g = every_op_graph();
    for name in ALL_OP_NAMES {
        assert!(g.nodes().iter().any(|n| n.op.name() == name), "test graph lacks {name}");
    }
    let text = print(&g);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, g, "\n{text}");
    assert_eq!(print(&back), text);
}

/// Text in exactly the printer's format, including awkward floats and a multi-result node.
const SAMPLE: &str = r#"graph block {
  %0 = input "x" : f32[4,8]
  %1 = const [1.0, 2.5, -3.0, -0.0, 1e-7, -inf, 3.4028235e38, 0.5] : f32[8]
  %2 = mul %0, %1 : f32[4,8]
  %3 = matmul %0, %2 transpose_a=false transpose_b=true : f32[4,4]
  %4, %5 = split %3 axis=1 sizes=[1,3] : f32[4,1], f32[4,3]
  %6 = cast %5 to=f16 : f16[4,3]
  %7 = reduce_max %6 axes=[0,1] keep_dims=true : f16[1,1]
  %8 = pad %4 before=[0,1] after=[2,0] value=nan : f32[6,2]
  %9 = const [true, false] : bool[2]
  %10 = const [7] : i32[]
  output "y" = %3
  output "z \"w\"" = %8
}
"#;

#[test]
fn printer_format_text_prints_back_identically() {
    let g = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(print(&g), SAMPLE);
    assert_eq!((g.nodes().len(), g.values().len()), (10, 11));
    assert_eq!(g.outputs()[1].name, "z \"w\"");
}

#[test]
fn floats_parse_back_bit_exactly() {
    let g = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let constant = match &g.nodes()[1].op {
        orion_core::Op::Const { value } => value.clone(),
        other => panic!("expected a const, got {other:?}"),
    };
    let bits: Vec<u32> = constant.to_f32_vec().iter().map(|x| x.to_bits()).collect();
    let expected: Vec<u32> = [1.0f32, 2.5, -3.0, -0.0, 1e-7, f32::NEG_INFINITY, f32::MAX, 0.5]
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(bits, expected);
    match &g.nodes()[7].op {
        orion_core::Op::Pad { value, .. } => assert!(value.is_nan()),
        other => panic!("expected a pad, got {other:?}"),
    }
}

#[test]
fn comments_blank_lines_and_sparse_ids_are_accepted() {
    let text = "# leading comment\ngraph g {   # trailing\n\n   %10 = input \"a\" : f32[2]\n%3 = neg %10 : f32[2] # c\n  output \"o\" = %3 }";
    let parsed = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut expected = Graph::new("g");
    let a = expected.input("a", f32_type(&[2])).unwrap();
    let n = expected.unary(UnaryOp::Neg, a).unwrap();
    expected.set_output("o", n).unwrap();
    assert_eq!(parsed, expected);
}

#[test]
fn graph_names_that_are_not_identifiers_are_quoted() {
    for name in ["my graph", "", "a+b", "quote\"back\\slash\nnewline"] {
        let g = Graph::new(name);
        let back = parse(&print(&g)).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(back.name(), name);
    }
}

/// Parses `text` expecting an error at `(line, column)` whose message contains `needle`.
fn assert_parse_error(text: &str, line: usize, column: usize, needle: &str) {
    match parse(text) {
        Err(CoreError::Parse {
            line: l,
            column: c,
            message,
        }) => {
            assert_eq!((l, c), (line, column), "position of {message:?}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// A two-line graph prefix whose third line is `line3`.
fn with_line3(line3: &str) -> String {
    format!("graph g {{\n  %0 = input \"x\" : f32[2,3]\n{line3}\n}}\n")
}

#[test]
fn unknown_op_is_reported_at_the_mnemonic() {
    assert_parse_error(&with_line3("  %1 = foo %0 : f32[2,3]"), 3, 8, "unknown op 'foo'");
}

#[test]
fn undefined_value_is_reported_at_the_operand() {
    assert_parse_error(&with_line3("  %1 = neg %7 : f32[2,3]"), 3, 12, "undefined value %7");
}

#[test]
fn redefined_value_is_reported_at_the_result() {
    assert_parse_error(&with_line3("  %0 = neg %0 : f32[2,3]"), 3, 3, "%0 is already defined");
}

#[test]
fn type_mismatch_names_both_types() {
    let text = with_line3("  %1 = neg %0 : f32[3,2]");
    assert_parse_error(
        &text,
        3,
        17,
        "declared type f32[3,2] differs from inferred type f32[2,3]",
    );
}

#[test]
fn wrong_arity_is_a_shape_error_at_the_node() {
    assert_parse_error(
        &with_line3("  %1 = add %0 : f32[2,3]"),
        3,
        8,
        "expects 2 operand(s), got 1",
    );
}

#[test]
fn bad_attributes_are_reported() {
    let unknown = with_line3("  %1 = softmax %0 axis=1 bogus=2 : f32[2,3]");
    assert_parse_error(&unknown, 3, 26, "unknown attribute 'bogus' for softmax");
    let missing = with_line3("  %1 = softmax %0 : f32[2,3]");
    assert_parse_error(&missing, 3, 8, "softmax needs attribute 'axis'");
    let out_of_range = with_line3("  %1 = softmax %0 axis=5 : f32[2,3]");
    assert_parse_error(&out_of_range, 3, 8, "axis 5 out of range for rank 2");
    let twice = with_line3("  %1 = softmax %0 axis=1 axis=1 : f32[2,3]");
    assert_parse_error(&twice, 3, 26, "attribute 'axis' is given twice");
}

#[test]
fn bad_numbers_are_reported_at_the_number() {
    assert_parse_error(
        &with_line3("  %1 = const [1.0, 2.x] : f32[2]"),
        3,
        20,
        "bad number '2.x'",
    );
    assert_parse_error(
        &with_line3("  %1 = softmax %0 axis=-1 : f32[2,3]"),
        3,
        24,
        "bad number '-1'",
    );
    assert_parse_error(
        &with_line3("  %1 = const [1e39] : f32[1]"),
        3,
        15,
        "out of range for f32",
    );
    assert_parse_error(
        &with_line3("  %1 = const [3000000000] : i32[1]"),
        3,
        15,
        "does not fit in i32",
    );
    assert_parse_error(
        &with_line3("  %1 = const [1.0] : f32[2]"),
        3,
        14,
        "const has 1 element(s)",
    );
}

#[test]
fn duplicate_input_name_is_reported() {
    assert_parse_error(
        &with_line3("  %1 = input \"x\" : f32[1]"),
        3,
        8,
        "duplicate input name \"x\"",
    );
}

#[test]
fn duplicate_output_name_is_reported() {
    let text = with_line3("  output \"y\" = %0\n  output \"y\" = %0");
    assert_parse_error(&text, 4, 10, "duplicate output name \"y\"");
}

#[test]
fn truncated_input_is_reported_at_the_end() {
    assert_parse_error("graph g {\n  %0 = input \"x\" : f32[2,", 2, 26, "end of input");
    assert_parse_error("graph g {\n  %0 = input \"x\" : f32[2]\n", 3, 1, "end of input");
    assert_parse_error("graph g {\n  %0 = input \"x", 2, 14, "unterminated string");
    assert_parse_error("", 1, 1, "expected 'graph'");
}

#[test]
fn hostile_sizes_are_errors_not_overflows() {
    let huge = with_line3("  %1 = input \"h\" : f32[99999999999999999999]");
    assert_parse_error(&huge, 3, 24, "too large");
    let many = with_line3("  %1 = input \"h\" : f32[2147483647,2147483647,2147483647]");
    assert_parse_error(&many, 3, 8, "too large");
    let reshape = with_line3("  %1 = reshape %0 shape=[2147483647,2147483647,2147483647,2147483647] : f32[1]");
    assert_parse_error(&reshape, 3, 8, "too large");
    let doubling = "graph g {\n  %0 = input \"x\" : f32[2147483647]\n  %1 = concat %0, %0 axis=0 : f32[1]\n}";
    assert_parse_error(doubling, 3, 31, "too large");
    let pad = "graph g {\n  %0 = input \"x\" : f32[2147483647]\n  %1 = pad %0 before=[2147483647] after=[2147483647] value=0.0 : f32[1]\n}";
    assert!(matches!(parse(pad), Err(CoreError::Parse { line: 3, .. })));
    let nested = format!("graph g {{ %0 = const {} : f32[1] }}", "[".repeat(100_000));
    assert!(matches!(parse(&nested), Err(CoreError::Parse { line: 1, .. })));
}

fn roundtrip_options() -> RandomGraphOptions {
    RandomGraphOptions {
        max_nodes: 40,
        ..RandomGraphOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_round_trip(seed in any::<u64>()) {
        let g = random_graph(seed, &roundtrip_options());
        let text = print(&g);
        let back = parse(&text);
        prop_assert!(back.is_ok(), "{:?}\n{}", back, text);
        let back = back.unwrap_or_default();
        prop_assert_eq!(&back, &g);
        prop_assert_eq!(print(&back), text);
    }
}

/// One edit of a printed graph.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    InsertText(usize, &'static str),
    Delete(usize),
    Truncate(usize),
    SwapLines(usize, usize),
}

const INTERESTING: &[&str] = &[
    "%",
    "%99999999999999999999",
    "=",
    ",",
    ":",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\\",
    "#",
    "\n",
    "-",
    "nan",
    "inf",
    "1e39",
    "99999999999",
    "2147483647",
    "0",
    "f16",
    "i32",
    "bool",
    "input \"x\"",
    "output \"y\" = %0",
    "split",
    "concat",
    "[1,2]",
    "true",
    "%0, %0",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let chars = prop_oneof![
        proptest::sample::select(b"%=,:[]{}\"\\#-.0123456789aefinrstx \n".to_vec()).prop_map(char::from),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), chars.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), chars).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<usize>(), proptest::sample::select(INTERESTING)).prop_map(|(i, s)| Mutation::InsertText(i, s)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let i = at(*i, chars.len());
            chars[i] = *c;
        }
        Mutation::Insert(i, c) => chars.insert(at(*i, chars.len() + 1), *c),
        Mutation::InsertText(i, s) => {
            let i = at(*i, chars.len() + 1);
            chars.splice(i..i, s.chars());
        }
        Mutation::Delete(i) if !chars.is_empty() => {
            chars.remove(at(*i, chars.len()));
        }
        Mutation::Truncate(i) => chars.truncate(at(*i, chars.len() + 1)),
        Mutation::SwapLines(i, j) => {
            let mut lines: Vec<String> = chars.iter().collect::<String>().lines().map(String::from).collect();
            let n = lines.len();
            if n > 0 {
                lines.swap(at(*i, n), at(*j, n));
            }
            return lines.join("\n");
        }
        Mutation::Replace(..) | Mutation::Delete(_) => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Mutated printed graphs never make the parser panic; whatever still parses is a valid graph
    /// whose printed form is canonical.
    #[test]
    fn parser_never_panics_on_mutated_text(
        seed in 0u64..2000,
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let options = RandomGraphOptions { max_nodes: 12, ..RandomGraphOptions::default() };
        let mut text = print(&random_graph(seed, &options));
        for m in &mutations {
            text = apply(&text, m);
        }
        if let Ok(g) = parse(&text) {
            prop_assert!(verify(&g).is_ok(), "{:?}\n{}", verify(&g), text);
            let printed = print(&g);
            let again = parse(&printed);
            prop_assert!(again.is_ok(), "{:?}\n{}", again, printed);
            prop_assert_eq!(print(&again.unwrap_or_default()), printed);
        }
    }
}
