//! Tests of the AVX-512 GEMM (`gemm_kernel.rs`): products against f64 loops across tile, strip and
//! block edges, packed against row-major operands bit for bit, refused operands.

use super::*;

fn reference(a: &[f32], lda: usize, b: &[f32], ldb: usize, (m, n, k): (usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * lda + p] as f64 * b[p * ldb + j] as f64).sum();
        }
    }
    out
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 31 + seed * 17) % 97) as f32 - 48.0) / 32.0)
        .collect()
}

/// Every tile height, strip tails and the block edges (`KC`, `MC`) against an f64 loop, with
/// padded leading dimensions, on one and two tasks, accumulating and not.
#[test]
fn products_match_a_plain_loop_across_tile_and_block_edges() {
    if !available() {
        return;
    }
    let shapes = [
        (1, 1, 1),
        (5, 7, 3),
        (12, 32, 16),
        (13, 33, 257),
        (30, 70, 40),
        (150, 45, 300),
        (301, 40, 64),
        (7, 200, 520),
    ];
    for &(m, n, k) in &shapes {
        let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
        let a = values(m * lda, 1);
        let b = values(k * ldb, 2);
        let expected = reference(&a, lda, &b, ldb, (m, n, k));
        for threads in [1, 2] {
            for accumulate in [false, true] {
                let mut c = values(m * ldc, 3);
                let before = c.clone();
                let done = gemm_row_major(
                    &mut c,
                    ldc,
                    &a,
                    lda,
                    RightRows::F32(&b),
                    ldb,
                    (m, n, k),
                    accumulate,
                    threads,
                )
                .unwrap();
                assert!(done);
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j >= n {
                            assert_eq!(got, before[i * ldc + j], "padding written at ({i}, {j})");
                            continue;
                        }
                        let base = if accumulate { before[i * ldc + j] as f64 } else { 0.0 };
                        let want = base + expected[i * n + j];
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{m}x{n}x{k} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn half_right_operands_match_the_f32_product_of_their_values() {
    if !available() {
        return;
    }
    let (m, n, k) = (14, 37, 300);
    let a = values(m * k, 4);
    let b = values(k * n, 5);
    let b_half: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
    let b_rounded: Vec<f32> = b_half.iter().map(|h| h.to_f32()).collect();
    let expected = reference(&a, k, &b_rounded, n, (m, n, k));
    let mut c = vec![0.0f32; m * n];
    assert!(gemm_row_major(&mut c, n, &a, k, RightRows::F16(&b_half), n, (m, n, k), false, 2).unwrap());
    for (got, want) in c.iter().zip(&expected) {
        assert!(
            (*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    if !available() {
        return;
    }
    for &(m, n, k) in &[(40, 300, 64), (300, 40, 64)] {
        let (a, b) = (values(m * k, 6), values(k * n, 7));
        let run = |threads| {
            let mut c = vec![0.0f32; m * n];
            gemm_row_major(&mut c, n, &a, k, RightRows::F32(&b), n, (m, n, k), false, threads).unwrap();
            c
        };
        assert_eq!(run(1), run(2));
    }
}

#[test]
fn short_slices_and_overlapping_rows_are_refused() {
    if !available() {
        return;
    }
    let a = vec![1.0f32; 12];
    let b = vec![1.0f32; 12];
    let mut c = vec![0.0f32; 12];
    // [3, 4]·[4, 3]: fits.
    assert!(gemm_row_major(&mut c, 3, &a, 4, RightRows::F32(&b), 3, (3, 3, 4), false, 1).unwrap());
    assert_eq!(c[..9], [4.0; 9]);
    // A needs 4·4 elements for 4 rows.
    assert!(gemm_row_major(&mut c, 3, &a, 4, RightRows::F32(&b), 3, (4, 3, 4), false, 1).is_err());
    // ldc < n would make rows overlap.
    assert!(gemm_row_major(&mut c, 2, &a, 4, RightRows::F32(&b), 3, (3, 3, 4), false, 1).is_err());
    // B needs 5 rows of 3.
    assert!(gemm_row_major(&mut c, 3, &a, 4, RightRows::F32(&b), 3, (2, 3, 5), false, 1).is_err());
}

/// Packed right operands give the row-major kernel's bits (same order of fused
/// multiply-adds) and match an f64 loop, with row-major and transposed left operands,
/// accumulating or not, on one and two tasks, across tile, strip and block edges.
#[test]
fn packed_products_match_the_row_major_kernel_and_a_plain_loop() {
    if !available() {
        return;
    }
    for &(m, n, k) in &[
        (1, 1, 1),
        (5, 45, 3),
        (13, 70, 300),
        (150, 33, 257),
        (30, 200, 520),
        (301, 40, 64),
    ] {
        let b = values(k * n, 8);
        let packed = PackedRight::pack(&b, (n, 1), (k, n)).unwrap();
        assert_eq!(packed.dims(), (k, n));
        // B read through the transpose of a stored [n, k] matrix packs to the same strips.
        let stored_t: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let packed_t = PackedRight::pack(&stored_t, (1, k), (k, n)).unwrap();
        let a = values(m * k, 9);
        let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let expected = reference(&a, k, &b, n, (m, n, k));
        for threads in [1, 2] {
            for accumulate in [false, true] {
                let start = values(m * n, 10);
                let mut want = start.clone();
                let right = RightRows::F32(&b);
                assert!(gemm_row_major(&mut want, n, &a, k, right, n, (m, n, k), accumulate, threads).unwrap());
                for (left, strides, right) in [(&a, (k, 1), &packed), (&a_t, (1, m), &packed_t)] {
                    let mut got = start.clone();
                    assert!(gemm_packed(&mut got, n, left, strides, right, m, (accumulate, threads), None).unwrap());
                    assert_eq!(got, want, "{m}x{n}x{k}, strides {strides:?}, {threads} task(s)");
                }
                for (i, (got, e)) in want.iter().zip(&expected).enumerate() {
                    let e = e + if accumulate { start[i] as f64 } else { 0.0 };
                    let tol = 1e-5 * (k as f64).sqrt() * (1.0 + e.abs());
                    assert!((*got as f64 - e).abs() <= tol, "{m}x{n}x{k} [{i}]: {got} vs {e}");
                }
            }
        }
    }
}

#[test]
fn packing_and_packed_products_refuse_operands_that_do_not_fit() {
    if !available() {
        return;
    }
    let b = vec![1.0f32; 12];
    assert!(PackedRight::pack(&b, (3, 1), (4, 3)).is_ok());
    assert!(PackedRight::pack(&b, (3, 1), (5, 3)).is_err());
    assert!(PackedRight::pack(&b, (3, 1), (0, 3)).is_err());
    assert!(PackedRight::pack(&b, (1, 4), (4, 4)).is_err());
    let packed = PackedRight::pack(&b, (3, 1), (4, 3)).unwrap();
    let a = vec![1.0f32; 8];
    let mut c = vec![0.0f32; 6];
    // [2, 4]·[4, 3] fits.
    assert!(gemm_packed(&mut c, 3, &a, (4, 1), &packed, 2, (false, 1), None).unwrap());
    assert_eq!(c, [4.0; 6]);
    // Three rows of A need 12 elements; of C, 9.
    assert!(gemm_packed(&mut c, 3, &a, (4, 1), &packed, 3, (false, 1), None).is_err());
    let long_a = vec![1.0f32; 12];
    assert!(gemm_packed(&mut c, 3, &long_a, (4, 1), &packed, 3, (false, 1), None).is_err());
    // Rows of C closer than n overlap.
    assert!(gemm_packed(&mut c, 2, &a, (4, 1), &packed, 2, (false, 1), None).is_err());
}

/// A left operand stored transposed (`rs = 1`) or with both strides padded gives the bits of its
/// row-major copy, across tile heights, strip tails and the `KC` block edge.
#[test]
fn strided_left_operands_match_their_row_major_copy_bit_for_bit() {
    if !available() {
        return;
    }
    for &(m, n, k) in &[(1, 5, 3), (13, 33, 40), (37, 48, 32), (256, 48, 32), (25, 70, 300)] {
        let b = values(k * n, 4);
        let row_major = values(m * k, 5);
        let transposed: Vec<f32> = (0..k * m).map(|x| row_major[(x % m) * k + x / m]).collect();
        let padded: Vec<f32> = (0..m * (k + 2) * 2)
            .map(|x| {
                if x % 2 == 0 && (x / 2) % (k + 2) < k {
                    row_major[(x / 2) / (k + 2) * k + (x / 2) % (k + 2)]
                } else {
                    f32::NAN
                }
            })
            .collect();
        for accumulate in [false, true] {
            let start = values(m * n, 6);
            let mut want = start.clone();
            let reference = gemm_row_major(
                &mut want,
                n,
                &row_major,
                k,
                RightRows::F32(&b),
                n,
                (m, n, k),
                accumulate,
                1,
            );
            assert!(matches!(reference, Ok(true)));
            for (left, strides) in [(&transposed, (1, m)), (&padded, (2 * (k + 2), 2))] {
                let mut got = start.clone();
                let right = RightRows::F32(&b);
                let done = gemm_strided_left(&mut got, n, left, strides, right, n, (m, n, k), accumulate, 2);
                assert!(matches!(done, Ok(true)));
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(
                    same,
                    "[{m}, {k}]·[{k}, {n}] strides {strides:?} accumulate {accumulate}"
                );
            }
        }
    }
    // A left operand too short for its strides is refused.
    let short = vec![1.0; 7];
    let with_step = |cs: usize| {
        let mut c = vec![0.0; 4];
        gemm_strided_left(
            &mut c,
            2,
            &short,
            (1, cs),
            RightRows::F32(&[1.0; 4]),
            2,
            (2, 2, 2),
            false,
            1,
        )
    };
    assert!(with_step(4).is_ok());
    assert!(with_step(8).is_err());
}
