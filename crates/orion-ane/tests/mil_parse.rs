//! MIL printer and parser: the four programs of ane.md §3 print to exactly the reference text, texts
//! parse back to the same program in both dialects, CoreML-written spellings parse, and no input makes
//! the parser (or the conversion after it) panic.

use orion_ane::mil::{
    parse_program, print_program, to_graph, var_arg, Argument, Dialect, Dim, Function, InMemoryResolver, Literal,
    MilDType, MilType, Operation, Param, Program, Value, MAX_NESTING,
};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/mil/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fp16(dims: &[usize]) -> MilType {
    MilType::tensor(MilDType::Fp16, dims)
}

fn program_with(dialect: Dialect, function: Function) -> Program {
    let mut program = dialect.empty_program();
    program.functions.push(function);
    program
}

/// Examples 1 and 3 of ane.md §3, built in memory: a 1x1 conv with a BLOBFILE weight.
fn conv_example(dialect: Dialect) -> Program {
    let mut f = Function::new("main", dialect.opset());
    f.params.push(Param {
        name: "a00_x".into(),
        ty: fp16(&[1, 64, 1, 64]),
    });
    f.operations = vec![
        Operation::constant("c_pt", Literal::string("valid")),
        Operation::constant("c_st", Literal::int32_vec(&[1, 1])),
        Operation::constant("c_pd", Literal::int32_vec(&[0, 0, 0, 0])),
        Operation::constant("c_dl", Literal::int32_vec(&[1, 1])),
        Operation::constant("c_gr", Literal::int32(1)),
        Operation::constant(
            "w",
            Literal::blob(fp16(&[128, 64, 1, 1]), "@model_path/weights/w.bin", 64),
        ),
        Operation::new(
            "z00_y",
            fp16(&[1, 128, 1, 64]),
            "conv",
            vec![
                var_arg("dilations", "c_dl"),
                var_arg("groups", "c_gr"),
                var_arg("pad", "c_pd"),
                var_arg("pad_type", "c_pt"),
                var_arg("strides", "c_st"),
                var_arg("weight", "w"),
                var_arg("x", "a00_x"),
            ],
        ),
    ];
    f.outputs = vec!["z00_y".into()];
    program_with(dialect, f)
}

/// Examples 2 and 4 of ane.md §3: a two-input matmul.
fn matmul_example(dialect: Dialect) -> Program {
    let mut f = Function::new("main", dialect.opset());
    f.params = vec![
        Param {
            name: "a00_x".into(),
            ty: fp16(&[1, 1, 256, 128]),
        },
        Param {
            name: "a01_w".into(),
            ty: fp16(&[1, 1, 128, 256]),
        },
    ];
    f.operations = vec![
        Operation::constant("mm_tx", Literal::bool(false)),
        Operation::constant("mm_ty", Literal::bool(false)),
        Operation::new(
            "z00_y",
            fp16(&[1, 1, 256, 256]),
            "matmul",
            vec![
                var_arg("transpose_x", "mm_tx"),
                var_arg("transpose_y", "mm_ty"),
                var_arg("x", "a00_x"),
                var_arg("y", "a01_w"),
            ],
        ),
    ];
    f.outputs = vec!["z00_y".into()];
    program_with(dialect, f)
}

fn reference_examples() -> Vec<(&'static str, Dialect, Program)> {
    vec![
        ("example1_ios18_conv.mil", Dialect::Ios18, conv_example(Dialect::Ios18)),
        (
            "example2_ios18_matmul.mil",
            Dialect::Ios18,
            matmul_example(Dialect::Ios18),
        ),
        ("example3_ios16_conv.mil", Dialect::Ios16, conv_example(Dialect::Ios16)),
        (
            "example4_ios16_matmul.mil",
            Dialect::Ios16,
            matmul_example(Dialect::Ios16),
        ),
    ]
}

#[test]
fn reference_examples_print_exactly() {
    for (name, dialect, program) in reference_examples() {
        assert_eq!(print_program(&program, dialect), fixture(name), "{name}");
    }
}

#[test]
fn reference_examples_parse_to_the_same_program_and_print_back() {
    for (name, dialect, program) in reference_examples() {
        let text = fixture(name);
        let parsed = parse_program(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, program, "{name}");
        assert_eq!(print_program(&parsed, dialect), text, "{name}");
    }
}

#[test]
fn parsed_statements_remember_their_lines() {
    let parsed = parse_program(&fixture("example1_ios18_conv.mil")).unwrap();
    let main = &parsed.functions[0];
    assert_eq!(main.line, 4);
    let lines: Vec<usize> = main.operations.iter().map(|op| op.line).collect();
    assert_eq!(lines, vec![5, 6, 7, 8, 9, 10, 11]);
}

/// The statements of `feature_rich_program`'s main function.
fn feature_rich_operations() -> Vec<Operation> {
    let split = Operation {
        results: vec![
            ("a".into(), MilType::tensor(MilDType::Fp32, &[2, 3])),
            ("b".into(), MilType::tensor(MilDType::Fp32, &[2, 3])),
        ],
        op: "split".into(),
        args: vec![
            var_arg("axis", "ax"),
            ("split_sizes".into(), Argument::Literal(Literal::int32_vec(&[3, 3]))),
            var_arg("x", "x"),
        ],
        attributes: vec![("name".into(), Literal::string("sp"))],
        line: 0,
    };
    let table = Literal {
        ty: MilType::tensor(MilDType::Fp32, &[2, 2]),
        value: Value::List(vec![
            Value::List(vec![Value::Float(-0.5), Value::Float(1e-5)]),
            Value::List(vec![Value::Float(65504.0), Value::Float(f64::NEG_INFINITY)]),
        ]),
    };
    vec![
        Operation::constant("ax", Literal::int32(-1)),
        Operation::constant("eps", Literal::float(MilDType::Fp16, 1e-5)),
        Operation::constant("note", Literal::string("quote \" backslash \\ newline \n tab \t")),
        Operation::constant("table", table),
        split,
        Operation::new(
            "c",
            MilType::tensor(MilDType::Fp32, &[2, 6]),
            "concat",
            vec![
                ("values".into(), Argument::Tuple(vec!["b".into(), "a".into()])),
                var_arg("axis", "ax"),
            ],
        ),
        Operation {
            results: vec![("unnamed".into(), MilType::scalar(MilDType::Uint64))],
            op: "const".into(),
            args: vec![],
            attributes: vec![(
                "val".into(),
                Literal {
                    ty: MilType::scalar(MilDType::Uint64),
                    value: Value::Int(i64::MAX),
                },
            )],
            line: 0,
        },
    ]
}

/// A program that uses every construct of the model: several functions, multi-result operations, tuple
/// and inline-literal arguments, nested lists, floats, escaped strings, dicts, tuples, `?` extents,
/// `state<…>` and function attributes.
fn feature_rich_program() -> Program {
    let mut main = Function::new("main", "ios18");
    main.params = vec![
        Param {
            name: "x".into(),
            ty: MilType::tensor(MilDType::Fp32, &[2, 6]),
        },
        Param {
            name: "cache".into(),
            ty: MilType::State(Box::new(MilType::Tensor {
                dtype: MilDType::Fp16,
                shape: vec![Dim::Known(1), Dim::Unknown],
            })),
        },
    ];
    main.attributes = vec![(
        "FlexibleShapeInformation".into(),
        Literal {
            ty: MilType::Tuple(vec![MilType::scalar(MilDType::String), MilType::string_dict()]),
            value: Value::Tuple(vec![
                Value::Str("DefaultShapes".into()),
                Value::Dict(vec![(Value::Str("x".into()), Value::Str("[2, 6]".into()))]),
            ]),
        },
    )];
    main.operations = feature_rich_operations();
    main.outputs = vec!["c".into(), "a".into()];
    let mut second = Function::new("decode", "ios18");
    second.params.push(Param {
        name: "t".into(),
        ty: MilType::tensor(MilDType::Int32, &[1]),
    });
    second.operations.push(Operation::new(
        "u",
        MilType::tensor(MilDType::Int32, &[1]),
        "identity",
        vec![var_arg("x", "t")],
    ));
    second.outputs = vec!["u".into()];
    let mut empty = Function::new("nothing", "CoreML8");
    empty.outputs = vec![];
    Program {
        version: "1.3".into(),
        build_info: vec![("key with \"quotes\"".into(), "".into())],
        functions: vec![main, second, empty],
    }
}

#[test]
fn feature_rich_program_round_trips_in_both_dialects() {
    let program = feature_rich_program();
    for dialect in [Dialect::Ios18, Dialect::Ios16] {
        let text = print_program(&program, dialect);
        let parsed = parse_program(&text).unwrap_or_else(|e| panic!("{dialect:?}: {e}\n{text}"));
        assert_eq!(parsed, program, "{dialect:?}\n{text}");
        assert_eq!(print_program(&parsed, dialect), text);
    }
}

#[test]
fn dialects_differ_only_in_scalar_spellings() {
    let program = feature_rich_program();
    let ios18 = print_program(&program, Dialect::Ios18);
    let ios16 = print_program(&program, Dialect::Ios16);
    assert!(
        ios18.contains("int32 ax = const()[name = string(\"ax\"), val = int32(-1)];"),
        "{ios18}"
    );
    assert!(ios16
        .contains("tensor<int32, []> ax = const()[name = tensor<string, []>(\"ax\"), val = tensor<int32, []>(-1)];"));
    assert!(ios18.contains("fp16 eps = const()[name = string(\"eps\"), val = fp16(1e-5)];"));
    assert!(ios18.contains("tensor<fp32, [2, 3]> a, tensor<fp32, [2, 3]> b = split("));
    assert!(ios18.contains("values = (b, a)"));
    assert!(ios16.contains("[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"));
}

#[test]
fn coreml_style_model_mil_parses() {
    let program = parse_program(&fixture("coreml_model.mil")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(program.version, "1.0");
    assert_eq!(program.build_info.len(), 5);
    assert_eq!(
        program.build_info[4],
        ("coremltools-version".to_string(), "8.1".to_string())
    );
    let main = program.function("main").expect("main");
    assert_eq!(main.opset, "ios17");
    let names: Vec<&str> = main.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "x"]);
    assert_eq!(main.attributes.len(), 1);
    assert_eq!(main.outputs, ["hidden", "score"]);
    // The epsilon is written as a hex float, as the CoreML compiler does.
    let eps = main
        .operations
        .iter()
        .find(|op| op.results[0].0 == "var_14_to_fp16")
        .and_then(|op| op.attribute("val"))
        .expect("epsilon const");
    assert_eq!(eps.value, Value::Float(1.3125 * 2f64.powi(-17)));
    // An unparenthesised two-result split with an inline literal argument.
    let split = main.operations.iter().find(|op| op.op == "split").expect("split");
    assert_eq!(split.results.len(), 2);
    assert_eq!(
        split.arg("split_sizes"),
        Some(&Argument::Literal(Literal::int32_vec(&[32, 32])))
    );
    // The name attribute differs from the variable name in CoreML files.
    assert_eq!(split.attribute("name"), Some(&Literal::string("op_20_cast_fp16")));
    let offsets: Vec<u64> = main
        .operations
        .iter()
        .filter_map(|op| match op.attribute("val").map(|l| &l.value) {
            Some(Value::Blob { offset, .. }) => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(offsets, [64, 1152, 1280, 1408, 3520]);
}

#[test]
fn coreml_multifunction_ios18_fixture_parses() {
    let program = parse_program(&fixture("coreml_multifunction_ios18.mil")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = program.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["main", "decode"]);
    let main = &program.functions[0];
    assert!(matches!(main.params[0].ty, MilType::State(_)));
    // The parenthesised multi-result form is accepted too.
    let split = main.operations.iter().find(|op| op.op == "split").expect("split");
    assert_eq!(split.results.len(), 2);
}

#[test]
fn liberal_spellings_are_accepted() {
    let text = "program(1.3) // header comment\n\
        {func main<ios18>(tensor<fp16,[1,768,1,32]> x){\n\
        /* block\n comment */ tensor<fp16,[1,768,1,32]> y=relu(x=x)[name=string(\"y\")];\n\
        (tensor<fp16, [1, 384, 1, 32]> a, tensor<fp16, [1, 384, 1, 32]> b) = split(axis = int32(1), num_splits = int32(2), x = y);\n\
        tensor<int32, []> k = const()[val = tensor<int32, []>(0x10)];\n\
        } -> (a, b)}";
    let program = parse_program(text).unwrap_or_else(|e| panic!("{e}"));
    let main = &program.functions[0];
    assert!(program.build_info.is_empty());
    assert_eq!(main.operations.len(), 3);
    assert_eq!(main.operations[0].line, 4);
    assert_eq!(
        main.operations[1].arg("axis"),
        Some(&Argument::Literal(Literal::int32(1)))
    );
    assert!(main.operations[1].attributes.is_empty());
    assert_eq!(main.operations[2].attribute("val"), Some(&Literal::int32(16)));
}

#[test]
fn errors_point_at_the_offending_token() {
    let cases: [(&str, usize, usize, &str); 5] = [
        (
            "program(1.3)\n{\n    func main<ios18>() {\n        fp16 y = relu(x = x)\n    } -> (y);\n}\n",
            5,
            5,
            "';'",
        ),
        (
            "program(1.3)\n{\n    func main<ios18>(fp17 x) {\n    } -> ();\n}\n",
            3,
            22,
            "unknown type 'fp17'",
        ),
        (
            "program(1.3) {\n func main<ios18>() { int32 c = const()[val = int32(1.2.3)]; } -> (c); }",
            2,
            53,
            "invalid number",
        ),
        (
            "program(1.3) { func main<ios18>() {} -> (); } extra",
            1,
            47,
            "end of input",
        ),
        (
            "program(1.3) [other = int32(1)] { }",
            1,
            14,
            "unsupported program attribute 'other'",
        ),
    ];
    for (text, line, column, needle) in cases {
        let err = parse_program(text).expect_err(text);
        assert_eq!((err.line, err.column), (line, column), "{err} for {text:?}");
        assert!(err.message.contains(needle), "{err} for {text:?}");
        assert!(err.to_string().starts_with(&format!("{line}:{column}: ")));
    }
}

#[test]
fn nesting_is_bounded_for_types_and_values() {
    let deep_type = format!("{}fp16{}", "tuple<".repeat(10_000), ">".repeat(10_000));
    let text = format!("program(1.3) {{ func main<ios18>({deep_type} x) {{ }} -> (x); }}");
    let err = parse_program(&text).unwrap_err();
    assert!(err.message.contains("nesting"), "{err}");
    let just_ok = format!("{}1{}", "[".repeat(MAX_NESTING - 1), "]".repeat(MAX_NESTING - 1));
    let text =
        format!("program(1.3) {{ func main<ios18>() {{ int32 c = const()[val = int32({just_ok})]; }} -> (c); }}");
    assert!(parse_program(&text).is_ok());
    let too_deep = format!("[{just_ok}]");
    let text =
        format!("program(1.3) {{ func main<ios18>() {{ int32 c = const()[val = int32({too_deep})]; }} -> (c); }}");
    assert!(parse_program(&text).is_err());
}

// ---- property tests ----------------------------------------------------------------------------

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,6}"
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![4 => (0usize..300).prop_map(Dim::Known), 1 => Just(Dim::Unknown)]
}

fn mil_type() -> impl Strategy<Value = MilType> {
    let dtype = proptest::sample::select(MilDType::ALL.to_vec());
    let tensor =
        (dtype, proptest::collection::vec(dim(), 0..5)).prop_map(|(dtype, shape)| MilType::Tensor { dtype, shape });
    tensor.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(k, v)| MilType::Dict {
                key: Box::new(k),
                value: Box::new(v)
            }),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(MilType::Tuple),
            inner.prop_map(|t| MilType::State(Box::new(t))),
        ]
    })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
        (any::<String>(), 0..=i64::MAX as u64).prop_map(|(path, offset)| Value::Blob { path, offset }),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Tuple),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Dict),
        ]
    })
}

fn literal() -> impl Strategy<Value = Literal> {
    (mil_type(), value()).prop_map(|(ty, value)| Literal { ty, value })
}

fn argument() -> impl Strategy<Value = Argument> {
    prop_oneof![
        3 => ident().prop_map(Argument::Var),
        1 => proptest::collection::vec(ident(), 0..3).prop_map(Argument::Tuple),
        1 => literal().prop_map(Argument::Literal),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    (
        proptest::collection::vec((ident(), mil_type()), 1..3),
        ident(),
        proptest::collection::vec((ident(), argument()), 0..4),
        proptest::collection::vec((ident(), literal()), 0..3),
    )
        .prop_map(|(results, op, args, attributes)| Operation {
            results,
            op,
            args,
            attributes,
            line: 0,
        })
}

fn function() -> impl Strategy<Value = Function> {
    (
        ident(),
        "ios1[5-8]|CoreML[0-9]",
        proptest::collection::vec((ident(), mil_type()), 0..3),
        proptest::collection::vec((ident(), literal()), 0..2),
        proptest::collection::vec(operation(), 0..5),
        proptest::collection::vec(ident(), 0..3),
    )
        .prop_map(|(name, opset, params, attributes, operations, outputs)| Function {
            name,
            opset,
            params: params.into_iter().map(|(name, ty)| Param { name, ty }).collect(),
            attributes,
            operations,
            outputs,
            line: 0,
        })
}

fn program() -> impl Strategy<Value = Program> {
    (
        "1|1\\.[0-9]",
        proptest::collection::vec((any::<String>(), any::<String>()), 0..3),
        proptest::collection::vec(function(), 0..3),
    )
        .prop_map(|(version, build_info, functions)| Program {
            version,
            build_info,
            functions,
        })
}

/// Text fragments that are likely to confuse a MIL parser when spliced into a program.
const SNIPPETS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    ",",
    "=",
    ";",
    "->",
    "\"",
    "\\",
    "-",
    "?",
    "0x",
    "p+",
    "1e",
    ".",
    "tensor<",
    "BLOBFILE(",
    "string(",
    "dict<",
    "tuple<",
    "state<",
    "//",
    "/*",
    "*/",
    "\n",
    " ",
    "9999999999999999999",
    "-inf",
    "nan",
    "fp16",
    "int32(",
    "[[[[",
    "]]]]",
    "é",
    "\u{0}",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, snippet: usize },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
    Swap { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, snippet)| Mutation::Insert { at, snippet }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let n = chars.len().max(1);
        match *m {
            Mutation::Delete { at, len } => {
                let start = (at % n).min(chars.len());
                let end = (start + len).min(chars.len());
                chars.drain(start..end);
            }
            Mutation::Insert { at, snippet } => {
                let start = (at % n).min(chars.len());
                chars.splice(start..start, SNIPPETS[snippet].chars());
            }
            Mutation::Duplicate { at, len } => {
                let start = (at % n).min(chars.len());
                let end = (start + len).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
            Mutation::Truncate { at } => chars.truncate(at % n),
            Mutation::Swap { a, b } => {
                if !chars.is_empty() {
                    let (a, b) = (a % chars.len(), b % chars.len());
                    chars.swap(a, b);
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn seed_texts() -> Vec<String> {
    let mut texts: Vec<String> = reference_examples()
        .into_iter()
        .map(|(name, _, _)| fixture(name))
        .collect();
    texts.push(fixture("coreml_model.mil"));
    texts.push(fixture("coreml_multifunction_ios18.mil"));
    texts.push(print_program(&feature_rich_program(), Dialect::Ios18));
    texts.push(print_program(&feature_rich_program(), Dialect::Ios16));
    texts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_programs_round_trip_in_both_dialects(program in program()) {
        for dialect in [Dialect::Ios18, Dialect::Ios16] {
            let text = print_program(&program, dialect);
            let parsed = parse_program(&text);
            prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), text);
            prop_assert_eq!(parsed.ok(), Some(program.clone()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn mutated_programs_never_panic(seed in 0usize..8, mutations in proptest::collection::vec(mutation(), 1..6)) {
        let texts = seed_texts();
        let text = apply(&texts[seed % texts.len()], &mutations);
        if let Ok(program) = parse_program(&text) {
            // Whatever parses also prints and converts without panicking (errors are fine).
            let _ = print_program(&program, Dialect::Ios16);
            for function in &program.functions {
                let _ = to_graph(&program, &function.name, &InMemoryResolver::new());
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_program(&text);
        let _ = parse_program(&format!("program(1.3) {{ func main<ios18>() {{ {text} }} -> (); }}"));
    }
}
