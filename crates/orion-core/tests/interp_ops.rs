//! Tests of the reference interpreter: every op against an obvious loop written here, the
//! F16Rounding mode against a by-hand fp16 emulation, input checking, runtime errors, and the
//! tolerance comparison.

use orion_core::interp::tolerance::{assert_close, compare, Tolerance};
use orion_core::interp::{eval_op, interpret, interpret_all, Precision};
use orion_core::{BinaryOp, CompareOp, CoreError, DType, Graph, Op, ReduceOp, Tensor, TensorType, UnaryOp};
use std::sync::Arc;

#[path = "common/cpu.rs"]
mod cpu;

use cpu::values;

/// Runs one op in f32 precision, expecting success.
fn run(op: Op, operands: &[&Tensor]) -> Vec<Tensor> {
    match eval_op(&op, operands, Precision::F32) {
        Ok(results) => results,
        Err(e) => panic!("{} failed: {e}", op.name()),
    }
}

fn run1(op: Op, operands: &[&Tensor]) -> Tensor {
    run(op, operands).remove(0)
}

fn matmul_op(transpose_a: bool, transpose_b: bool) -> Op {
    Op::MatMul {
        transpose_a,
        transpose_b,
    }
}

fn reduce_op(op: ReduceOp, axes: &[usize], keep_dims: bool) -> Op {
    Op::Reduce {
        op,
        axes: axes.to_vec(),
        keep_dims,
    }
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("float tensor").to_vec()
}

/// erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt by Simpson's rule in f64.
fn erf_by_integration(x: f32) -> f32 {
    let (x, n) = (f64::from(x), 2000);
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut sum = f(0.0) + f(x);
    for i in 1..n {
        sum += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    (sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()) as f32
}

#[test]
fn unary_ops_match_std_math() {
    let raw = values(24, 1);
    for op in UnaryOp::ALL {
        let needs_positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt);
        let xs: Vec<f32> = raw
            .iter()
            .map(|&v| if needs_positive { v.abs() + 0.1 } else { v })
            .collect();
        let x = Tensor::f32([2, 3, 4], xs.clone());
        let expected: Vec<f32> = xs
            .iter()
            .map(|&v| match op {
                UnaryOp::Neg => -v,
                UnaryOp::Exp => v.exp(),
                UnaryOp::Log => v.ln(),
                UnaryOp::Sqrt => v.sqrt(),
                UnaryOp::Rsqrt => 1.0 / v.sqrt(),
                UnaryOp::Reciprocal => 1.0 / v,
                UnaryOp::Tanh => v.tanh(),
                UnaryOp::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                UnaryOp::Relu => v.max(0.0),
                UnaryOp::Erf => erf_by_integration(v),
                UnaryOp::Sin => f64::from(v).sin() as f32,
                UnaryOp::Cos => f64::from(v).cos() as f32,
            })
            .collect();
        let y = run1(Op::Unary(op), &[&x]);
        assert_close(&y, &Tensor::f32([2, 3, 4], expected), Tolerance::F32);
    }
}

#[test]
fn erf_is_accurate_far_from_zero_and_odd() {
    for &x in &[0.01f32, 0.3, 0.9, 1.7, 2.6, 3.4, 4.5] {
        let y = orion_core::interp::erf(x);
        assert!(
            (y - erf_by_integration(x)).abs() <= 2.0 * f32::EPSILON,
            "erf({x}) = {y}"
        );
        assert_eq!(orion_core::interp::erf(-x), -y);
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    // a [2,3,4] with b [3,1]: out[n][i][j] = f(a[n][i][j], b[i][0]).
    let a_vals = values(24, 2);
    let b_vals: Vec<f32> = values(3, 3).iter().map(|v| v.abs() + 0.5).collect();
    for op in BinaryOp::ALL {
        let av: Vec<f32> = if op == BinaryOp::Pow {
            a_vals.iter().map(|v| v.abs() + 0.1).collect()
        } else {
            a_vals.clone()
        };
        let f = |x: f32, y: f32| match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
            BinaryOp::Pow => x.powf(y),
        };
        let mut expected = Vec::new();
        for n in 0..2 {
            for i in 0..3 {
                for j in 0..4 {
                    expected.push(f(av[(n * 3 + i) * 4 + j], b_vals[i]));
                }
            }
        }
        let a = Tensor::f32([2, 3, 4], av.clone());
        let b = Tensor::f32([3, 1], b_vals.clone());
        let y = run1(Op::Binary(op), &[&a, &b]);
        assert_close(&y, &Tensor::f32([2, 3, 4], expected.clone()), Tolerance::F32);
        // Swapped operands broadcast the other way: out[n][i][j] = f(b[i][0], a[n][i][j]).
        let swapped = run1(Op::Binary(op), &[&b, &a]);
        let mut expected_swapped = Vec::new();
        for n in 0..2 {
            for i in 0..3 {
                for j in 0..4 {
                    expected_swapped.push(f(b_vals[i], av[(n * 3 + i) * 4 + j]));
                }
            }
        }
        assert_close(&swapped, &Tensor::f32([2, 3, 4], expected_swapped), Tolerance::F32);
    }
}

#[test]
fn maximum_and_minimum_propagate_nan() {
    let a = Tensor::f32([3], vec![f32::NAN, 1.0, 2.0]);
    let b = Tensor::f32([3], vec![0.0, f32::NAN, 3.0]);
    for op in [BinaryOp::Maximum, BinaryOp::Minimum] {
        let y = floats(&run1(Op::Binary(op), &[&a, &b]));
        assert!(y[0].is_nan() && y[1].is_nan(), "{op:?}: {y:?}");
        assert_eq!(y[2], if op == BinaryOp::Maximum { 3.0 } else { 2.0 });
    }
}

#[test]
fn i32_arithmetic_wraps_and_broadcasts() {
    // a [2,1] with b [3]: out[i][j] = f(a[i], b[j]).
    let (av, bv) = (vec![i32::MAX, -7], vec![1, -3, 40000]);
    let a = Tensor::i32([2, 1], av.clone());
    let b = Tensor::i32([3], bv.clone());
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ] {
        let mut expected = Vec::new();
        for &x in &av {
            for &y in &bv {
                expected.push(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Maximum => x.max(y),
                    _ => x.min(y),
                });
            }
        }
        let y = run1(Op::Binary(op), &[&a, &b]);
        assert_eq!(y, Tensor::i32([2, 3], expected), "{op:?}");
    }
    assert_eq!(
        run1(Op::Binary(BinaryOp::Add), &[&a, &b]).as_i32().unwrap()[0],
        i32::MIN,
        "i32::MAX + 1 wraps"
    );
}

#[test]
fn compare_ops_broadcast_for_floats_and_i32() {
    // a [2,3] with b [3]: out[i][j] = a[i][j] op b[j].
    let av = vec![1.0, -2.0, 3.0, 0.5, 0.5, f32::NAN];
    let bv = vec![1.0, 0.5, f32::NAN];
    let ai: Vec<i32> = vec![1, -2, 3, 0, 5, 6];
    let bi: Vec<i32> = vec![1, 0, 6];
    for op in CompareOp::ALL {
        let holds_f = |x: f32, y: f32| match op {
            CompareOp::Equal => x == y,
            CompareOp::Less => x < y,
            CompareOp::LessEqual => x <= y,
            CompareOp::Greater => x > y,
            CompareOp::GreaterEqual => x >= y,
        };
        let holds_i = |x: i32, y: i32| holds_f(x as f32, y as f32);
        let (mut expected_f, mut expected_i) = (Vec::new(), Vec::new());
        for i in 0..2 {
            for j in 0..3 {
                expected_f.push(holds_f(av[i * 3 + j], bv[j]));
                expected_i.push(holds_i(ai[i * 3 + j], bi[j]));
            }
        }
        let y = run1(
            Op::Compare(op),
            &[&Tensor::f32([2, 3], av.clone()), &Tensor::f32([3], bv.clone())],
        );
        assert_eq!(y, Tensor::bool([2, 3], expected_f), "{op:?} f32");
        let y = run1(
            Op::Compare(op),
            &[&Tensor::i32([2, 3], ai.clone()), &Tensor::i32([3], bi.clone())],
        );
        assert_eq!(y, Tensor::bool([2, 3], expected_i), "{op:?} i32");
    }
}

/// Reference batched matmul: a [2,1,M,K]-shaped logical operand (stored transposed when `ta`)
/// times b [3,K,N] (stored transposed when `tb`) -> [2,3,M,N], batches broadcast by hand.
fn matmul_reference(a: &[f32], b: &[f32], ta: bool, tb: bool, (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut out = Vec::new();
    for b0 in 0..2 {
        for b1 in 0..3 {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0f32;
                    for p in 0..k {
                        let x = if ta {
                            a[b0 * m * k + p * m + i]
                        } else {
                            a[b0 * m * k + i * k + p]
                        };
                        let y = if tb {
                            b[b1 * k * n + j * k + p]
                        } else {
                            b[b1 * k * n + p * n + j]
                        };
                        s += x * y;
                    }
                    out.push(s);
                }
            }
        }
    }
    out
}

#[test]
fn matmul_batches_broadcast_and_transposes() {
    let (m, k, n) = (3, 4, 5);
    let av = values(2 * m * k, 4);
    let bv = values(3 * k * n, 5);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a_shape = if ta { [2, 1, k, m] } else { [2, 1, m, k] };
        let b_shape = if tb { [3, n, k] } else { [3, k, n] };
        let a = Tensor::f32(a_shape, av.clone());
        let b = Tensor::f32(b_shape, bv.clone());
        let op = matmul_op(ta, tb);
        let y = run1(op, &[&a, &b]);
        let expected = Tensor::f32([2, 3, m, n], matmul_reference(&av, &bv, ta, tb, (m, k, n)));
        assert_close(&y, &expected, Tolerance::F32);
    }
}

#[test]
fn matmul_of_plain_matrices() {
    let (av, bv) = (values(6, 6), values(8, 7));
    let y = run1(
        matmul_op(false, false),
        &[&Tensor::f32([3, 2], av.clone()), &Tensor::f32([2, 4], bv.clone())],
    );
    let mut expected = vec![0.0f32; 12];
    for i in 0..3 {
        for j in 0..4 {
            for p in 0..2 {
                expected[i * 4 + j] += av[i * 2 + p] * bv[p * 4 + j];
            }
        }
    }
    assert_close(&y, &Tensor::f32([3, 4], expected), Tolerance::F32);
}

#[test]
fn conv1x1_is_a_channel_mix() {
    let (cin, cout, s) = (3, 4, 5);
    let (xv, wv) = (values(cin * s, 8), values(cout * cin, 9));
    let y = run1(
        Op::Conv1x1,
        &[
            &Tensor::f32([1, cin, 1, s], xv.clone()),
            &Tensor::f32([cout, cin, 1, 1], wv.clone()),
        ],
    );
    let mut expected = vec![0.0f32; cout * s];
    for o in 0..cout {
        for j in 0..s {
            for i in 0..cin {
                expected[o * s + j] += wv[o * cin + i] * xv[i * s + j];
            }
        }
    }
    assert_close(&y, &Tensor::f32([1, cout, 1, s], expected), Tolerance::F32);
}

#[test]
fn softmax_along_middle_and_last_axis() {
    let xv: Vec<f32> = values(24, 10).iter().map(|v| v * 10.0).collect();
    let x = Tensor::f32([2, 3, 4], xv.clone());
    // Axis 1: for each (n, j), normalise over i.
    let mut expected = vec![0.0f32; 24];
    for n in 0..2 {
        for j in 0..4 {
            let at = |i: usize| (n * 3 + i) * 4 + j;
            let max = (0..3).map(|i| xv[at(i)]).fold(f32::MIN, f32::max);
            let sum: f32 = (0..3).map(|i| (xv[at(i)] - max).exp()).sum();
            for i in 0..3 {
                expected[at(i)] = (xv[at(i)] - max).exp() / sum;
            }
        }
    }
    assert_close(
        &run1(Op::Softmax { axis: 1 }, &[&x]),
        &Tensor::f32([2, 3, 4], expected),
        Tolerance::F32,
    );
    // Last axis: each row of 4 sums to one; huge inputs must not overflow.
    let big = Tensor::f32([2, 2], vec![1000.0, 1001.0, -5.0, -5.0]);
    let e = 1.0 / (1.0 + 1.0f32.exp());
    let expected = Tensor::f32([2, 2], vec![e, 1.0 - e, 0.5, 0.5]);
    assert_close(&run1(Op::Softmax { axis: 1 }, &[&big]), &expected, Tolerance::F32);
}

#[test]
fn reductions_over_several_axes_with_and_without_keep_dims() {
    let xv = values(24, 11);
    let x = Tensor::f32([2, 3, 4], xv.clone());
    let at = |n: usize, i: usize, j: usize| xv[(n * 3 + i) * 4 + j];
    for op in ReduceOp::ALL {
        // Axes [0, 2]: one result per i.
        let mut expected = Vec::new();
        for i in 0..3 {
            let mut items = Vec::new();
            for n in 0..2 {
                for j in 0..4 {
                    items.push(at(n, i, j));
                }
            }
            expected.push(match op {
                ReduceOp::Sum => items.iter().sum(),
                ReduceOp::Mean => items.iter().sum::<f32>() / items.len() as f32,
                ReduceOp::Max => items.iter().copied().fold(f32::MIN, f32::max),
            });
        }
        for keep_dims in [false, true] {
            let reduce = reduce_op(op, &[0, 2], keep_dims);
            let shape = if keep_dims { vec![1, 3, 1] } else { vec![3] };
            assert_close(
                &run1(reduce, &[&x]),
                &Tensor::f32(shape, expected.clone()),
                Tolerance::F32,
            );
        }
        // Axis [1] alone, kept: one result per (n, j).
        let mut expected = Vec::new();
        for n in 0..2 {
            for j in 0..4 {
                let items: Vec<f32> = (0..3).map(|i| at(n, i, j)).collect();
                expected.push(match op {
                    ReduceOp::Sum => items.iter().sum(),
                    ReduceOp::Mean => items.iter().sum::<f32>() / 3.0,
                    ReduceOp::Max => items.iter().copied().fold(f32::MIN, f32::max),
                });
            }
        }
        let reduce = reduce_op(op, &[1], true);
        assert_close(&run1(reduce, &[&x]), &Tensor::f32([2, 1, 4], expected), Tolerance::F32);
    }
}

#[test]
fn i32_reductions_and_nan_in_reduce_max() {
    let x = Tensor::i32([2, 2], vec![i32::MAX, 1, -4, 9]);
    let sum = run1(reduce_op(ReduceOp::Sum, &[1], false), &[&x]);
    assert_eq!(sum, Tensor::i32([2], vec![i32::MAX.wrapping_add(1), 5]));
    let max = run1(reduce_op(ReduceOp::Max, &[0, 1], false), &[&x]);
    assert_eq!(max, Tensor::i32(vec![], vec![i32::MAX]));
    let with_nan = Tensor::f32([3], vec![1.0, f32::NAN, 2.0]);
    let max = run1(reduce_op(ReduceOp::Max, &[0], false), &[&with_nan]);
    assert!(floats(&max)[0].is_nan());
}

#[test]
fn reshape_keeps_elements_and_transpose_permutes_axes() {
    let xv = values(24, 12);
    let x = Tensor::f32([2, 3, 4], xv.clone());
    let r = run1(Op::Reshape { shape: vec![4, 6] }, &[&x]);
    assert_eq!(r, Tensor::f32([4, 6], xv.clone()));
    // perm [2,0,1]: out[k][n][i] = x[n][i][k], out shape [4,2,3].
    let t = run1(Op::Transpose { perm: vec![2, 0, 1] }, &[&x]);
    let mut expected = Vec::new();
    for k in 0..4 {
        for n in 0..2 {
            for i in 0..3 {
                expected.push(xv[(n * 3 + i) * 4 + k]);
            }
        }
    }
    assert_eq!(t, Tensor::f32([4, 2, 3], expected));
}

#[test]
fn slice_and_split_take_blocks() {
    let xv = values(24, 13);
    let x = Tensor::f32([2, 3, 4], xv.clone());
    let at = |n: usize, i: usize, j: usize| xv[(n * 3 + i) * 4 + j];
    let s = run1(
        Op::Slice {
            begin: vec![1, 1, 1],
            end: vec![2, 3, 4],
        },
        &[&x],
    );
    let mut expected = Vec::new();
    for i in 1..3 {
        for j in 1..4 {
            expected.push(at(1, i, j));
        }
    }
    assert_eq!(s, Tensor::f32([1, 2, 3], expected));
    let pieces = run(
        Op::Split {
            axis: 2,
            sizes: vec![1, 3],
        },
        &[&x],
    );
    assert_eq!(pieces.len(), 2);
    for (piece, (from, to)) in pieces.iter().zip([(0, 1), (1, 4)]) {
        let mut expected = Vec::new();
        for n in 0..2 {
            for i in 0..3 {
                for j in from..to {
                    expected.push(at(n, i, j));
                }
            }
        }
        assert_eq!(*piece, Tensor::f32([2, 3, to - from], expected));
    }
}

#[test]
fn concat_joins_along_an_axis_including_empty_operands() {
    let (av, bv) = (values(6, 14), values(12, 15));
    let a = Tensor::f32([2, 1, 3], av.clone());
    let empty = Tensor::f32([2, 0, 3], vec![]);
    let b = Tensor::f32([2, 2, 3], bv.clone());
    let y = run1(Op::Concat { axis: 1 }, &[&a, &empty, &b]);
    let mut expected = Vec::new();
    for n in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                expected.push(if i == 0 {
                    av[n * 3 + j]
                } else {
                    bv[(n * 2 + i - 1) * 3 + j]
                });
            }
        }
    }
    assert_eq!(y, Tensor::f32([2, 3, 3], expected));
    let ints = run1(
        Op::Concat { axis: 0 },
        &[&Tensor::i32([1], vec![4]), &Tensor::i32([2], vec![5, 6])],
    );
    assert_eq!(ints, Tensor::i32([3], vec![4, 5, 6]));
}

#[test]
fn pad_surrounds_with_a_constant() {
    let xv = values(6, 16);
    let y = run1(
        Op::Pad {
            before: vec![1, 0],
            after: vec![0, 2],
            value: -1.5,
        },
        &[&Tensor::f32([2, 3], xv.clone())],
    );
    let mut expected = Vec::new();
    for i in 0..3 {
        for j in 0..5 {
            let inside = i >= 1 && j < 3;
            expected.push(if inside { xv[(i - 1) * 3 + j] } else { -1.5 });
        }
    }
    assert_eq!(y, Tensor::f32([3, 5], expected));
    let ints = run1(
        Op::Pad {
            before: vec![1],
            after: vec![1],
            value: 7.0,
        },
        &[&Tensor::i32([1], vec![3])],
    );
    assert_eq!(ints, Tensor::i32([3], vec![7, 3, 7]));
}

#[test]
fn gather_picks_rows_and_rejects_out_of_range() {
    let table_vals = values(15, 17);
    let table = Tensor::f32([5, 3], table_vals.clone());
    let idx = vec![4, 0, 2, 4];
    let y = run1(Op::Gather, &[&table, &Tensor::i32([2, 2], idx.clone())]);
    let mut expected = Vec::new();
    for &r in &idx {
        for d in 0..3 {
            expected.push(table_vals[r as usize * 3 + d]);
        }
    }
    assert_eq!(y, Tensor::f32([2, 2, 3], expected));
    for bad in [5, -1] {
        let result = eval_op(&Op::Gather, &[&table, &Tensor::i32([2], vec![0, bad])], Precision::F32);
        match result {
            Err(CoreError::Execute { op, message }) => {
                assert_eq!(op, "gather");
                assert!(message.contains(&bad.to_string()), "{message}");
            }
            other => panic!("expected an execution error for index {bad}, got {other:?}"),
        }
    }
}

#[test]
fn scatter_add_rows_sums_repeated_rows() {
    let idx = vec![2, 0, 2];
    let upd = values(6, 18);
    let y = run1(
        Op::ScatterAddRows { rows: 4 },
        &[&Tensor::i32([3], idx.clone()), &Tensor::f32([3, 2], upd.clone())],
    );
    let mut expected = vec![0.0f32; 8];
    for (p, &r) in idx.iter().enumerate() {
        for d in 0..2 {
            expected[r as usize * 2 + d] += upd[p * 2 + d];
        }
    }
    assert_close(&y, &Tensor::f32([4, 2], expected), Tolerance::F32);
    let bad = eval_op(
        &Op::ScatterAddRows { rows: 2 },
        &[&Tensor::i32([1], vec![2]), &Tensor::f32([1, 2], vec![1.0, 2.0])],
        Precision::F32,
    );
    assert!(matches!(bad, Err(CoreError::Execute { .. })), "{bad:?}");
}

#[test]
fn broadcast_repeats_size_one_and_leading_axes() {
    let xv = values(3, 19);
    let y = run1(
        Op::Broadcast { shape: vec![2, 3, 4] },
        &[&Tensor::f32([3, 1], xv.clone())],
    );
    let mut expected = Vec::new();
    for _n in 0..2 {
        for &v in &xv {
            for _j in 0..4 {
                expected.push(v);
            }
        }
    }
    assert_eq!(y, Tensor::f32([2, 3, 4], expected));
}

#[test]
fn cast_follows_the_conversion_rules() {
    let x = Tensor::f32([6], vec![-1.7, 2.9, 1e10, -1e10, f32::NAN, 0.0]);
    let to_i32 = run1(Op::Cast { to: DType::I32 }, &[&x]);
    assert_eq!(to_i32, Tensor::i32([6], vec![-1, 2, i32::MAX, i32::MIN, 0, 0]));
    let to_bool = run1(Op::Cast { to: DType::Bool }, &[&x]);
    assert_eq!(to_bool, Tensor::bool([6], vec![true, true, true, true, true, false]));
    let from_bool = run1(Op::Cast { to: DType::F32 }, &[&Tensor::bool([2], vec![true, false])]);
    assert_eq!(from_bool, Tensor::f32([2], vec![1.0, 0.0]));
    let bool_to_int = run1(Op::Cast { to: DType::I32 }, &[&Tensor::bool([2], vec![false, true])]);
    assert_eq!(bool_to_int, Tensor::i32([2], vec![0, 1]));
    // 2049 is not representable in half: ties-to-even gives 2048.
    let int_to_half = run1(Op::Cast { to: DType::F16 }, &[&Tensor::i32([2], vec![2049, -3])]);
    assert_eq!(floats(&int_to_half), vec![2048.0, -3.0]);
    let int_to_bool = run1(Op::Cast { to: DType::Bool }, &[&Tensor::i32([2], vec![0, -3])]);
    assert_eq!(int_to_bool, Tensor::bool([2], vec![false, true]));
    let to_half = run1(Op::Cast { to: DType::F16 }, &[&Tensor::f32([1], vec![1.0 + 1e-4])]);
    assert_eq!(to_half.dtype(), DType::F16);
    assert_eq!(floats(&to_half), vec![1.0]);
}

#[test]
fn select_broadcasts_condition_and_branches() {
    let cond = vec![true, false, true];
    let av = values(12, 20);
    let y = run1(
        Op::Select,
        &[
            &Tensor::bool([3, 1], cond.clone()),
            &Tensor::f32([3, 4], av.clone()),
            &Tensor::scalar_f32(9.0),
        ],
    );
    let mut expected = Vec::new();
    for i in 0..3 {
        for j in 0..4 {
            expected.push(if cond[i] { av[i * 4 + j] } else { 9.0 });
        }
    }
    assert_eq!(y, Tensor::f32([3, 4], expected));
}

#[test]
fn identity_and_const_return_their_value() {
    let x = Tensor::i32([2], vec![3, -4]);
    assert_eq!(run1(Op::Identity, &[&x]), x);
    let c = Tensor::f32([2], vec![0.25, 8.0]);
    assert_eq!(
        run1(
            Op::Const {
                value: Arc::new(c.clone())
            },
            &[]
        ),
        c
    );
}

#[test]
fn f16_results_are_rounded_in_f32_mode() {
    // 1 + 2^-11 lies halfway between half values 1 and 1 + 2^-10; ties-to-even gives 1.
    let a = Tensor::f16([2], vec![1.0, 1.0]);
    let b = Tensor::f16([2], vec![2f32.powi(-11), 2f32.powi(-10)]);
    let y = run1(Op::Binary(BinaryOp::Add), &[&a, &b]);
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(floats(&y), vec![1.0, 1.0 + 2f32.powi(-10)]);
}

fn half(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

#[test]
fn f16_rounding_mode_matches_a_by_hand_emulation() {
    // Values that half cannot represent, so rounding the operands and the result changes things.
    let av: Vec<f32> = values(12, 21).iter().map(|v| v * 1.2345).collect();
    let bv: Vec<f32> = values(8, 22).iter().map(|v| v * 3.21).collect();
    let a = Tensor::f32([3, 4], av.clone());
    let b = Tensor::f32([4, 2], bv.clone());
    let op = matmul_op(false, false);
    let mut expected = Vec::new();
    for i in 0..3 {
        for j in 0..2 {
            let mut s = 0.0f32; // accumulation in f32, operands and result rounded
            for p in 0..4 {
                s += half(av[i * 4 + p]) * half(bv[p * 2 + j]);
            }
            expected.push(half(s));
        }
    }
    let rounded = eval_op(&op, &[&a, &b], Precision::F16Rounding).unwrap().remove(0);
    assert_eq!(rounded.dtype(), DType::F32, "the declared dtype is kept");
    assert_eq!(floats(&rounded), expected);
    let plain = run1(op, &[&a, &b]);
    assert_ne!(floats(&plain), expected, "F32 mode must not round");
    // Through a graph: inputs are rounded when defined, then every result.
    let mut g = Graph::new("f16_chain");
    let x = g.input("x", TensorType::new(DType::F32, [4])).unwrap();
    let e = g.unary(UnaryOp::Exp, x).unwrap();
    let y = g.mul(e, x).unwrap();
    g.set_output("y", y).unwrap();
    let xv = vec![0.1f32, -0.7, 1.3, 2.2];
    let out = interpret(&g, &[Tensor::f32([4], xv.clone())], Precision::F16Rounding).unwrap();
    let by_hand: Vec<f32> = xv.iter().map(|&v| half(half(half(v).exp()) * half(v))).collect();
    assert_eq!(floats(&out[0]), by_hand);
}

fn two_input_graph() -> Graph {
    let mut g = Graph::new("pair");
    let a = g.input("a", TensorType::new(DType::F32, [2, 3])).unwrap();
    let b = g.input("b", TensorType::new(DType::F32, [3])).unwrap();
    let s = g.add(a, b).unwrap();
    let d = g.sub(a, b).unwrap();
    g.set_output("diff", d).unwrap();
    g.set_output("sum", s).unwrap();
    g
}

#[test]
fn interpret_returns_outputs_in_declared_order_and_every_value() {
    let g = two_input_graph();
    let (av, bv) = (values(6, 23), values(3, 24));
    let inputs = [Tensor::f32([2, 3], av.clone()), Tensor::f32([3], bv.clone())];
    let out = interpret(&g, &inputs, Precision::F32).unwrap();
    let mut diff = Vec::new();
    let mut sum = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            diff.push(av[i * 3 + j] - bv[j]);
            sum.push(av[i * 3 + j] + bv[j]);
        }
    }
    assert_eq!(
        out,
        vec![Tensor::f32([2, 3], diff.clone()), Tensor::f32([2, 3], sum.clone())]
    );
    let all = interpret_all(&g, &inputs, Precision::F32).unwrap();
    assert_eq!(all.len(), g.values().len());
    assert_eq!(all[0], inputs[0]);
    assert_eq!(all[g.output_value("sum").unwrap().index()], Tensor::f32([2, 3], sum));
}

#[test]
fn wrong_inputs_are_execution_errors_naming_the_input() {
    let g = two_input_graph();
    let good_a = Tensor::f32([2, 3], values(6, 25));
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (vec![good_a.clone()], "2 input"),
        (vec![good_a.clone(), Tensor::f32([4], vec![0.0; 4])], "f32[4]"),
        (vec![good_a.clone(), Tensor::f16([3], vec![0.0; 3])], "f16[3]"),
    ];
    for (inputs, needle) in cases {
        match interpret(&g, &inputs, Precision::F32) {
            Err(CoreError::Execute { message, .. }) => {
                assert!(message.contains(needle), "{message:?} should mention {needle}");
                if inputs.len() == 2 {
                    assert!(message.contains("\"b\"") && message.contains("f32[3]"), "{message}");
                }
            }
            other => panic!("expected an execution error, got {other:?}"),
        }
    }
}

#[test]
fn eval_op_rejects_malformed_operands() {
    let x = Tensor::f32([2], vec![1.0, 2.0]);
    let wrong_count = eval_op(&Op::Binary(BinaryOp::Add), &[&x], Precision::F32);
    assert!(matches!(wrong_count, Err(CoreError::Execute { .. })), "{wrong_count:?}");
    let wrong_dtype = eval_op(&Op::Unary(UnaryOp::Exp), &[&Tensor::i32([1], vec![1])], Precision::F32);
    assert!(matches!(wrong_dtype, Err(CoreError::Execute { .. })), "{wrong_dtype:?}");
    let no_value = eval_op(
        &Op::Input {
            name: "x".into(),
            ty: x.ty(),
        },
        &[],
        Precision::F32,
    );
    assert!(matches!(no_value, Err(CoreError::Execute { .. })), "{no_value:?}");
}

#[test]
fn compare_treats_nan_as_equal_only_to_nan() {
    let tol = Tolerance::F32;
    let nan = Tensor::f32([3], vec![f32::NAN, 1.0, f32::INFINITY]);
    assert_eq!(compare(&nan, &nan.clone(), tol), Ok(()));
    let number = Tensor::f32([3], vec![0.0, 1.0, f32::INFINITY]);
    let message = compare(&number, &nan, tol).unwrap_err();
    assert!(message.contains("1 of 3") && message.contains("[0]"), "{message}");
    assert!(compare(&nan, &number, tol).is_err());
    let inf = Tensor::f32([1], vec![f32::INFINITY]);
    assert!(compare(&Tensor::f32([1], vec![f32::NEG_INFINITY]), &inf, tol).is_err());
    assert!(
        compare(&Tensor::f32([1], vec![f32::MAX]), &inf, tol).is_err(),
        "finite never matches inf"
    );
}

#[test]
fn compare_applies_abs_plus_rel_and_reports_the_worst_error() {
    let tol = Tolerance { abs: 0.1, rel: 0.1 };
    let expected = Tensor::f32([2, 2], vec![0.0, 10.0, 100.0, -1.0]);
    // Bounds: 0.1, 1.1, 10.1, 0.2.
    let inside = Tensor::f32([2, 2], vec![0.09, 11.0, 90.0, -1.19]);
    assert_eq!(compare(&inside, &expected, tol), Ok(()));
    let outside = Tensor::f32([2, 2], vec![0.0, 11.2, 80.0, -1.0]);
    let message = compare(&outside, &expected, tol).unwrap_err();
    assert!(message.contains("2 of 4"), "{message}");
    assert!(message.contains("[0, 1]") && message.contains("11.2"), "{message}");
    assert!(message.contains("max abs error 20"), "{message}");
    assert!(
        compare(&Tensor::f32([4], vec![0.0; 4]), &expected, tol).is_err(),
        "shape differs"
    );
    assert!(compare(&Tensor::i32([1], vec![1]), &Tensor::i32([1], vec![2]), tol).is_err());
    assert_eq!(Tolerance::for_precision(Precision::F16Rounding), Tolerance::F16);
    assert_eq!(Tolerance::for_precision(Precision::F32), Tolerance::F32);
}
