//! Tests of the bfloat16 GEMM (`gemm_bf16.rs`): products against f64 sums of the operands rounded
//! by the `half` crate, across tile, strip, pair and block edges and every operand layout; the
//! same bits on any thread count; refused operands.

use super::*;
use half::bf16;

/// Values with a full mantissa (so rounding to bfloat16 moves nearly all of them).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rounded(v: f32) -> f64 {
    f64::from(bf16::from_f32(v).to_f32())
}

/// `(sum, sum of magnitudes)` over p of `a(i, p) · b(p, j)`, each operand rounded to bfloat16 by
/// the `half` crate (nearest even, as the hardware does for normal values), or not.
fn reference(a: MatRef<'_>, b: MatRef<'_>, (i, j, k): (usize, usize, usize), round: bool) -> (f64, f64) {
    let value = |v: f32| if round { rounded(v) } else { f64::from(v) };
    (0..k).fold((0.0, 0.0), |(sum, size), p| {
        let product = value(a.data[i * a.rs + p * a.cs]) * value(b.data[p * b.rs + j * b.cs]);
        (sum + product, size + product.abs())
    })
}

/// Runs the product into a copy of `c`; `None` when this CPU has no kernel.
fn product(
    c: &[f32],
    ldc: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) -> Option<Vec<f32>> {
    let mut out = c.to_vec();
    gemm_bf16(&mut out, ldc, a, b, dims, accumulate, threads)
        .expect("valid operands")
        .then_some(out)
}

/// Each layout of `A` (rows, transposed, both strides padded) and `B` (rows, transposed), every
/// tile height, strip tails, odd `k`, and more than one block of pairs (`KP`), rows (`MC`) and
/// columns (`NC`), accumulating and not: within f32 rounding of the f64 sums of rounded operands.
#[test]
fn products_match_f64_sums_of_rounded_operands() {
    if !available() {
        eprintln!("no AVX512_BF16 here: the kernel is not run");
        return;
    }
    let shapes = [
        (1, 1, 1),
        (5, 7, 3),
        (12, 32, 16),
        (13, 33, 257),
        (200, 45, 300),
        (7, 1100, 520),
        (37, 70, 2),
        // More than `NC` columns a task: `A` packed whole first.
        (5, 2100, 300),
        // Whole chunks of 16 pairs: the AMX kernel where the CPU has it (edge tiles, two blocks
        // of pairs, `A` packed whole).
        (13, 33, 288),
        (70, 45, 64),
        (200, 70, 320),
        (33, 40, 32),
        (5, 2100, 256),
    ];
    eprintln!("AMX kernel: {}", gemm_amx::available());
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        let ldc = n + 3;
        let seed = case as u64 * 10;
        // Storage big enough for any of the layouts below.
        let a_store = values((m + 2) * (k + 5), seed + 1);
        let b_store = values((k + 2) * (n + 5) + n * (k + 3), seed + 2);
        let lefts = [
            MatRef {
                data: &a_store,
                rs: k + 1,
                cs: 1,
            },
            MatRef {
                data: &a_store,
                rs: 1,
                cs: m + 1,
            },
            MatRef {
                data: &a_store,
                rs: 2 * (k + 1),
                cs: 2,
            },
        ];
        let rights = [
            MatRef {
                data: &b_store,
                rs: n + 2,
                cs: 1,
            },
            MatRef {
                data: &b_store,
                rs: 1,
                cs: k + 3,
            },
        ];
        for (l, a) in lefts.iter().enumerate() {
            if (m - 1) * a.rs + (k - 1) * a.cs >= a.data.len() {
                continue;
            }
            for b in &rights {
                for accumulate in [false, true] {
                    let c = values(m * ldc, seed + 3);
                    let Some(out) = product(&c, ldc, *a, *b, (m, n, k), accumulate, 2) else {
                        return;
                    };
                    for i in 0..m {
                        for j in 0..n {
                            let (mut sum, mut size) = reference(*a, *b, (i, j, k), true);
                            if accumulate {
                                sum += f64::from(c[i * ldc + j]);
                                size += f64::from(c[i * ldc + j]).abs();
                            }
                            let got = f64::from(out[i * ldc + j]);
                            let bound = 2.0 * (k as f64 + 2.0) * f64::from(f32::EPSILON) * size + 1e-30;
                            assert!(
                                (got - sum).abs() <= bound,
                                "[{m},{k}]·[{k},{n}] left layout {l} b.rs {} accumulate {accumulate}: ({i},{j}) {got} against {sum}",
                                b.rs
                            );
                        }
                    }
                    // Elements outside the rows' first n columns are left alone.
                    for i in 0..m {
                        assert_eq!(
                            &out[i * ldc + n..(i * ldc + ldc).min(out.len())],
                            &c[i * ldc + n..(i * ldc + ldc).min(c.len())]
                        );
                    }
                }
            }
        }
    }
}

/// The rounding is real: against f64 sums of the unrounded operands, the error is far above f32
/// rounding (about 2⁻⁹ of the magnitudes), which the check above would not allow.
#[test]
fn operands_are_rounded_to_bfloat16() {
    let (m, n, k) = (24, 40, 96);
    let a_store = values(m * k, 7);
    let b_store = values(k * n, 8);
    let (a, b) = (
        MatRef {
            data: &a_store,
            rs: k,
            cs: 1,
        },
        MatRef {
            data: &b_store,
            rs: n,
            cs: 1,
        },
    );
    let Some(out) = product(&vec![0.0; m * n], n, a, b, (m, n, k), false, 1) else {
        return;
    };
    let (mut worst_rounded, mut worst_exact) = (0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..n {
            let got = f64::from(out[i * n + j]);
            let (exact, size) = reference(a, b, (i, j, k), false);
            let (bf16_sum, _) = reference(a, b, (i, j, k), true);
            worst_exact = worst_exact.max((got - exact).abs() / size);
            worst_rounded = worst_rounded.max((got - bf16_sum).abs() / size);
        }
    }
    assert!(worst_rounded < 1e-6, "{worst_rounded}");
    assert!(worst_exact > 1e-4, "{worst_exact}: the operands were not rounded");
}

/// Splitting by rows or by columns over 1–3 tasks gives the same bits (each element is summed in
/// one order).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    for (m, n, k) in [(300, 64, 200), (40, 700, 130), (300, 64, 256), (40, 700, 320)] {
        let a_store = values(m * k, 11);
        let b_store = values(k * n, 12);
        let (a, b) = (
            MatRef {
                data: &a_store,
                rs: k,
                cs: 1,
            },
            MatRef {
                data: &b_store,
                rs: 1,
                cs: k,
            },
        );
        let c = vec![0.0; m * n];
        let Some(one) = product(&c, n, a, b, (m, n, k), false, 1) else {
            return;
        };
        for threads in [2, 3] {
            let many = product(&c, n, a, b, (m, n, k), false, threads).expect("available");
            assert!(
                one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{threads} threads, [{m},{k}]·[{k},{n}]"
            );
        }
    }
}

/// Operands too short for the dimensions, or a destination whose rows overlap, are errors (where
/// the kernel exists); `k == 0` gives zeros, or leaves an accumulated destination as it was.
#[test]
fn bad_operands_are_refused_and_empty_contractions_handled() {
    if !available() {
        return;
    }
    let data = values(64, 3);
    let a = MatRef {
        data: &data,
        rs: 8,
        cs: 1,
    };
    let mut c = vec![1.0; 64];
    assert!(gemm_bf16(&mut c, 8, a, a, (8, 8, 9), false, 1).is_err());
    assert!(gemm_bf16(&mut c, 4, a, a, (8, 8, 8), false, 1).is_err());
    assert!(gemm_bf16(&mut c[..60], 8, a, a, (8, 8, 8), false, 1).is_err());
    assert_eq!(c, vec![1.0; 64]);
    assert!(gemm_bf16(&mut c, 8, a, a, (8, 8, 0), true, 1).expect("empty"));
    assert_eq!(c, vec![1.0; 64]);
    assert!(gemm_bf16(&mut c, 8, a, a, (8, 8, 0), false, 1).expect("empty"));
    assert_eq!(c, vec![0.0; 64]);
}

/// A right operand packed beforehand gives the same bits as the same operand packed during the
/// product (several blocks of pairs, more than `NC` columns, both splits), and the epilogue sees
/// every finished row part once.
#[test]
fn packed_operands_give_the_same_bits_and_run_the_epilogue() {
    if !available() {
        assert!(PackedPairs::pack(&[1.0; 4], (2, 1), (2, 2)).expect("fits").is_none());
        return;
    }
    for (m, n, k) in [(9, 1100, 600), (300, 64, 77), (1, 3, 1), (9, 1100, 640), (300, 64, 96)] {
        let a_store = values(m * k, 21);
        let b_store = values(k * n, 22);
        let a = MatRef {
            data: &a_store,
            rs: k,
            cs: 1,
        };
        let b = MatRef {
            data: &b_store,
            rs: 1,
            cs: k,
        };
        let packed = PackedPairs::pack(&b_store, (1, k), (k, n))
            .expect("fits")
            .expect("available");
        for threads in [1, 2] {
            let plain = product(&vec![0.0; m * n], n, a, b, (m, n, k), false, threads).expect("available");
            let mut out = vec![0.0; m * n];
            let seen = std::sync::Mutex::new(vec![0usize; m * n]);
            let epilogue = |i: usize, j: usize, row: &mut [f32]| {
                let mut seen = seen.lock().unwrap();
                for (jj, v) in row.iter_mut().enumerate() {
                    seen[i * n + j + jj] += 1;
                    *v = -*v;
                }
            };
            assert!(gemm_packed_pairs(&mut out, n, a, &packed, m, (false, threads), Some(&epilogue)).unwrap());
            assert!(
                out.iter().zip(&plain).all(|(x, y)| x.to_bits() == (-y).to_bits()),
                "[{m},{k}]·[{k},{n}] on {threads}"
            );
            assert!(seen.into_inner().unwrap().iter().all(|&count| count == 1));
        }
    }
    assert!(PackedPairs::pack(&[1.0; 4], (2, 1), (3, 2)).is_err());
    // No rows: nothing to do, also for a packing split into whole chunks and a rest (k = 40 on
    // AMX), and an empty left operand is not read.
    let packed = PackedPairs::pack(&values(40 * 3, 23), (3, 1), (40, 3))
        .expect("fits")
        .expect("available");
    let empty = MatRef {
        data: &[],
        rs: 40,
        cs: 1,
    };
    assert!(gemm_packed_pairs(&mut [], 3, empty, &packed, 0, (false, 2), None).unwrap());
    assert!(gemm_bf16(
        &mut [],
        3,
        empty,
        MatRef {
            data: &values(120, 24),
            rs: 3,
            cs: 1
        },
        (0, 3, 40),
        false,
        2
    )
    .unwrap());
}
