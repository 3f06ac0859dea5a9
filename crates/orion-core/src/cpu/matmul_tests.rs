//! Tests of the matrix products' helpers (`matmul.rs`) against plain loops: row-block splitting,
//! half right operands converted in chunks, transposed destinations and refused strides.

use super::*;

#[test]
fn row_blocks_match_a_plain_loop_with_an_odd_row_count() {
    let (m, n, k) = (67, 5, 9);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    // b stored transposed ([n, k]), as prefill weights are read.
    let b: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0).collect();
    let mut out = vec![f32::NAN; m * n];
    let a_ref = MatRef { data: &a, rs: k, cs: 1 };
    let b_ref = MatRef { data: &b, rs: 1, cs: k };
    gemm_row_halves(&mut out, a_ref, b_ref, (m, n, k), 2).unwrap();
    for i in 0..m {
        for j in 0..n {
            let expected: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
            assert!(
                (out[i * n + j] - expected).abs() < 1e-3,
                "({i}, {j}): {} vs {expected}",
                out[i * n + j]
            );
        }
    }
}

#[test]
fn half_right_operands_converted_in_chunks_match_a_plain_loop() {
    let (m, k, n) = (3, 5, 7);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 11) as f32 / 4.0 - 1.0).collect(); // exact in half
    for transposed in [false, true] {
        // b as stored: [k, n] (rows are contraction steps) or [n, k] read transposed.
        let stored: Vec<f16> = if transposed {
            (0..n * k).map(|i| f16::from_f32(b[(i % k) * n + i / k])).collect()
        } else {
            b.iter().map(|&v| f16::from_f32(v)).collect()
        };
        let plan = MatMulPlan {
            m,
            n,
            k,
            a: Layout::of(k, false),
            b: if transposed {
                Layout::of(k, true)
            } else {
                Layout::of(n, false)
            },
            batches: vec![(0, 0)],
            method: Method::Gemm,
            packed: None,
        };
        let a_ref = MatRef { data: &a, rs: k, cs: 1 };
        for chunk in [1, 6, 100] {
            let mut out = vec![f32::NAN; m * n];
            gemm_half_right(&plan, a_ref, &stored, &mut out, (chunk, 2)).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let expected: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert_eq!(out[i * n + j], expected, "transposed {transposed} chunk {chunk}");
                }
            }
        }
    }
}

#[test]
fn transposed_destinations_are_written_and_overlaps_refused() {
    let a = [1.0f32, 2.0, 3.0, 4.0]; // [2, 2]
    let b = [1.0f32, 0.0, 1.0, 1.0]; // [2, 2]
    let (ar, br) = (MatRef { data: &a, rs: 2, cs: 1 }, MatRef { data: &b, rs: 2, cs: 1 });
    let mut dst = [0.0f32; 4];
    gemm_f32_strided(&mut dst, (1, 2), ar, br, (2, 2, 2), false, 1).unwrap();
    assert_eq!(dst, [3.0, 7.0, 2.0, 4.0]); // (a·b)ᵀ = [[3, 2], [7, 4]]ᵀ
    assert!(gemm_f32_strided(&mut dst, (1, 1), ar, br, (2, 2, 2), false, 1).is_err());
    // The orientation the plan picks for few rows gives the same product.
    let mut oriented = [0.0f32; 4];
    let bt = MatRef {
        data: &[1.0f32, 1.0, 0.0, 1.0],
        rs: 1,
        cs: 2,
    }; // b stored transposed
    gemm_oriented(&mut oriented, 2, ar, bt, (2, 2, 2), (false, 1), true).unwrap();
    assert_eq!(oriented, [3.0, 2.0, 7.0, 4.0]);
}

#[test]
fn gemm_f32_rejects_out_of_bounds_strides() {
    let a = [1.0f32; 4];
    let mut dst = [0.0f32; 4];
    let small = MatRef { data: &a, rs: 2, cs: 1 };
    // [3, 2] needs 6 elements of `a`: refused rather than read out of bounds.
    assert!(gemm_f32(&mut dst, 2, small, small, (3, 2, 2), false, 1).is_err());
    assert!(gemm_f32(&mut dst, 2, small, small, (2, 2, 2), false, 1).is_ok());
    assert_eq!(dst, [2.0; 4]);
}
