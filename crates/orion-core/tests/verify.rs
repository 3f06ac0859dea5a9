//! The verifier reports each kind of broken invariant (on graphs assembled with
//! `Graph::from_parts_unchecked`), names the node and its printed line, lists every problem at
//! once, accepts good graphs and never panics on garbage.

use orion_core::testing::{random_graph, RandomGraphOptions};
use orion_core::verify::verify;
use orion_core::{CoreError, DType, Graph, GraphOutput, Node, NodeId, Op, Tensor, TensorType, ValueId, ValueInfo};

/// `%0 = input "x" : f32[2,3]`, `%1 = const f32[3]`, `%2 = add %0, %1`, `%3, %4 = split %2`,
/// output "y" = %2.
fn good_graph() -> Graph {
    let mut g = Graph::new("good");
    let x = g.input("x", TensorType::new(DType::F32, [2, 3])).unwrap();
    let c = g.constant(Tensor::f32([3], vec![1.0, 2.0, 3.0])).unwrap();
    let sum = g.add(x, c).unwrap();
    g.split(sum, 1, &[1, 2]).unwrap();
    g.set_output("y", sum).unwrap();
    g
}

/// The parts of the good graph, to break.
struct Parts {
    nodes: Vec<Node>,
    values: Vec<ValueInfo>,
    outputs: Vec<GraphOutput>,
}

fn parts() -> Parts {
    let g = good_graph();
    Parts {
        nodes: g.nodes().to_vec(),
        values: g.values().to_vec(),
        outputs: g.outputs().to_vec(),
    }
}

fn problems(p: Parts) -> Vec<String> {
    let g = Graph::from_parts_unchecked("broken".to_string(), p.nodes, p.values, p.outputs);
    match verify(&g) {
        Ok(()) => Vec::new(),
        Err(CoreError::Verify { graph, problems }) => {
            assert_eq!(graph, "broken");
            problems
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

/// Asserts that some problem contains every one of `needles`.
fn assert_reported(problems: &[String], needles: &[&str]) {
    assert!(
        problems.iter().any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem contains {needles:?}; got {problems:#?}"
    );
}

fn f32_type(dims: &[usize]) -> TensorType {
    TensorType::new(DType::F32, dims)
}

#[test]
fn good_graphs_pass() {
    assert_eq!(verify(&good_graph()), Ok(()));
    for seed in 0..50 {
        let g = random_graph(seed, &RandomGraphOptions::default());
        assert_eq!(verify(&g), Ok(()), "seed {seed}");
    }
}

#[test]
fn non_dense_ids_are_reported() {
    let mut p = parts();
    p.nodes[1].outputs = vec![ValueId(7)];
    let found = problems(p);
    assert_reported(&found, &["node 1 ", "result 0 is %7, expected %1", "dense"]);
}

#[test]
fn operand_defined_later_is_reported() {
    let mut p = parts();
    p.nodes[2].inputs = vec![ValueId(0), ValueId(3)];
    let found = problems(p);
    assert_reported(&found, &["node 2 ", "operand %3 is not defined by an earlier node"]);
}

#[test]
fn wrong_operand_count_is_reported() {
    let mut p = parts();
    p.nodes[2].inputs = vec![ValueId(0)];
    let found = problems(p);
    assert_reported(&found, &["node 2 ", "add takes 2 operand(s), but the node has 1"]);
}

#[test]
fn wrong_result_count_is_reported() {
    let mut p = parts();
    p.nodes[3].outputs = vec![ValueId(3)];
    let found = problems(p);
    assert_reported(&found, &["node 3 ", "split defines 2 value(s), but the node lists 1"]);
    // %4 is left without a defining node.
    assert_reported(&found, &["value %4", "dangling"]);
}

#[test]
fn recorded_type_differing_from_inference_is_reported() {
    let mut p = parts();
    p.values[2].ty = f32_type(&[3, 2]);
    let found = problems(p);
    assert_reported(
        &found,
        &["node 2 ", "value %2 is recorded as f32[3,2] but infers to f32[2,3]"],
    );
}

#[test]
fn problems_quote_the_printed_node_line() {
    let mut p = parts();
    p.values[2].ty = f32_type(&[3, 2]);
    let found = problems(p);
    assert_reported(&found, &["node 2 `%2 = add %0, %1 : f32[3,2]`"]);
}

#[test]
fn inconsistent_value_info_is_reported() {
    let mut p = parts();
    p.values[4].port = 0;
    let found = problems(p);
    assert_reported(
        &found,
        &[
            "node 3 ",
            "value %4 records node 3 port 0, but it is result 1 of node 3",
        ],
    );
    assert_reported(&found, &["value %4", "claims node 3 port 0", "dangling"]);
}

#[test]
fn dangling_value_is_reported() {
    let mut p = parts();
    p.values.push(ValueInfo {
        ty: f32_type(&[1]),
        node: NodeId(9),
        port: 0,
    });
    let found = problems(p);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_reported(&found, &["value %5", "claims node 9 port 0", "dangling"]);
}

#[test]
fn value_table_entry_missing_is_reported() {
    let mut p = parts();
    p.values.truncate(4);
    let found = problems(p);
    assert_reported(&found, &["node 3 ", "result %4 has no entry in the value table"]);
}

#[test]
fn duplicate_input_name_is_reported() {
    let mut p = parts();
    let ty = f32_type(&[1]);
    p.nodes.push(Node {
        op: Op::Input {
            name: "x".to_string(),
            ty: ty.clone(),
        },
        inputs: vec![],
        outputs: vec![ValueId(5)],
    });
    p.values.push(ValueInfo {
        ty,
        node: NodeId(4),
        port: 0,
    });
    let found = problems(p);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_reported(&found, &["node 4 ", "input name \"x\" is already used by node 0"]);
}

#[test]
fn duplicate_and_dangling_outputs_are_reported() {
    let mut p = parts();
    p.outputs.push(GraphOutput {
        name: "y".to_string(),
        value: ValueId(3),
    });
    p.outputs.push(GraphOutput {
        name: "z".to_string(),
        value: ValueId(42),
    });
    let found = problems(p);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_reported(&found, &["output \"y\" is declared more than once"]);
    assert_reported(&found, &["output \"z\" refers to undefined value %42"]);
}

#[test]
fn input_type_differing_from_its_value_is_reported() {
    let mut p = parts();
    p.nodes[0].op = Op::Input {
        name: "x".to_string(),
        ty: f32_type(&[9]),
    };
    let found = problems(p);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_reported(
        &found,
        &[
            "node 0 ",
            "input declares type f32[9] but its value %0 is recorded as f32[2,3]",
        ],
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut p = parts();
    p.values[2].ty = f32_type(&[3, 2]);
    p.nodes[3].inputs = vec![ValueId(0), ValueId(1)];
    p.outputs.push(GraphOutput {
        name: "z".to_string(),
        value: ValueId(42),
    });
    let found = problems(p);
    assert_reported(&found, &["node 2 ", "recorded as f32[3,2]"]);
    assert_reported(&found, &["node 3 ", "split takes 1 operand(s), but the node has 2"]);
    assert_reported(&found, &["refers to undefined value %42"]);
}

#[test]
fn garbage_graphs_do_not_panic() {
    let nodes = vec![
        Node {
            op: Op::Concat { axis: 3 },
            inputs: vec![],
            outputs: vec![ValueId(100), ValueId(100)],
        },
        Node {
            op: Op::Split { axis: 0, sizes: vec![] },
            inputs: vec![ValueId(100), ValueId(u32::MAX)],
            outputs: vec![],
        },
    ];
    let values = vec![ValueInfo {
        ty: f32_type(&[]),
        node: NodeId(u32::MAX),
        port: usize::MAX,
    }];
    let outputs = vec![GraphOutput {
        name: String::new(),
        value: ValueId(u32::MAX),
    }];
    let g = Graph::from_parts_unchecked(String::new(), nodes, values, outputs);
    match verify(&g) {
        Err(CoreError::Verify { problems, .. }) => assert!(problems.len() >= 6, "{problems:#?}"),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn sizes_that_would_overflow_shape_inference_are_reported() {
    let mut p = parts();
    p.nodes[2].op = Op::Reshape {
        shape: vec![usize::MAX, 2],
    };
    p.nodes[2].inputs = vec![ValueId(0)];
    p.values[0].ty = f32_type(&[usize::MAX, usize::MAX]);
    let found = problems(p);
    assert_reported(&found, &["node 2 ", "shape inference skipped", "too large"]);
}
