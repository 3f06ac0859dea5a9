//! Tests of the matrix-vector kernels (`super`): every kernel and both AVX-512 readings against
//! an f64 loop, bit-identity across groups and tasks, half widening, and refused lengths.

use super::*;

/// Deterministic values that are exact in half precision (multiples of 1/8 in [-1, 1)).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + seed * 13) % 17) as f32 - 8.0) / 8.0)
        .collect()
}

/// `y[r] = Σ_k m[r·stride + k]·x[k]` in f64, the independent reference.
fn reference(m: &[f32], stride: usize, x: &[f32], rows: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| {
            (0..x.len())
                .map(|c| m[r * stride + c] as f64 * x[c] as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    for (r, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{what} row {r}: {a} vs {e}");
    }
}

#[test]
fn every_kernel_matches_a_plain_loop_on_odd_sizes_tails_and_strides() {
    for (rows, k, pad) in [
        (1, 1, 0),
        (3, 7, 0),
        (4, 8, 1),
        (5, 9, 3),
        (7, 16, 0),
        (9, 33, 2),
        (13, 300, 5),
        (6, 15, 1),
        (11, 47, 0),
        (8, 64, 16),
        (4, 100, 2),
        (3, 129, 0),
    ] {
        let stride = k + pad;
        let m = values((rows - 1) * stride + k, rows);
        let halves: Vec<f16> = m.iter().map(|&v| f16::from_f32(v)).collect();
        let x = values(k, k);
        let expected = reference(&m, stride, &x, rows);
        let mut y = vec![f32::NAN; rows];
        portable_rows_f32(&m, stride, &x, &mut y);
        assert_close(&y, &expected, "portable f32");
        portable_rows_f16(&halves, stride, &x, &mut y);
        assert_close(&y, &expected, "portable f16");
        for threads in [1, 3] {
            gemv(MatrixRows::F32(&m), stride, &x, &mut y, threads).unwrap();
            assert_close(&y, &expected, "dispatched f32");
            gemv(MatrixRows::F16(&halves), stride, &x, &mut y, threads).unwrap();
            assert_close(&y, &expected, "dispatched f16");
        }
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2_fma() && x86::has_f16c() {
            // SAFETY: features checked; `m` holds (rows - 1)·stride + k elements.
            unsafe { x86::dot_rows_f32(&m, stride, &x, &mut y) };
            assert_close(&y, &expected, "avx2 f32");
            // SAFETY: as above, for the halves.
            unsafe { x86::dot_rows_f16(&halves, stride, &x, &mut y) };
            assert_close(&y, &expected, "avx2 f16");
        }
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            y.fill(f32::NAN);
            // SAFETY: features checked; `m` holds (rows - 1)·stride + k elements.
            unsafe { avx512::dot_rows_f32(&m, stride, &x, &mut y) };
            assert_close(&y, &expected, "avx512 f32");
            y.fill(f32::NAN);
            // SAFETY: as above, for the halves.
            unsafe { avx512::dot_rows_f16(&halves, stride, &x, &mut y) };
            assert_close(&y, &expected, "avx512 f16");
        }
    }
}

/// Both readings of the AVX-512 kernel (whichever this CPU uses) against the f64 loop, on
/// values whose sums round (so summation order shows), and a row's bits the same whether it
/// is computed alone, in a group, or after an odd number of rows.
#[cfg(target_arch = "x86_64")]
#[test]
fn both_avx512_readings_match_a_plain_loop_and_give_a_row_the_same_bits_in_any_group() {
    if !avx512::available() {
        return;
    }
    let inexact = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 31 + seed * 17) as f32 * 0.618_034).sin() * 0.9)
            .collect()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (rows, k, pad) in [
        (1, 1, 0),
        (3, 7, 0),
        (4, 16, 1),
        (5, 33, 3),
        (9, 300, 2),
        (13, 47, 0),
        (8, 1000, 16),
    ] {
        let stride = k + pad;
        let m = inexact((rows - 1) * stride + k, rows);
        let halves: Vec<f16> = m.iter().map(|&v| f16::from_f32(v)).collect();
        let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        let x = inexact(k, k);
        for reading in [GemvReading::RowStreams, GemvReading::RowGroups] {
            let run = |first: usize, y: &mut [f32], half: bool| {
                let from = first * stride;
                // SAFETY: features checked; rows first..first + y.len() lie inside the matrix.
                unsafe {
                    if half {
                        avx512::dot_rows_f16_reading(reading, &halves[from..], stride, &x, y)
                    } else {
                        avx512::dot_rows_f32_reading(reading, &m[from..], stride, &x, y)
                    }
                }
            };
            for (half, values) in [(false, &m), (true, &widened)] {
                let what = format!("{reading:?} half {half} rows {rows} k {k}");
                let mut all = vec![f32::NAN; rows];
                run(0, &mut all, half);
                let expected = reference(values, stride, &x, rows);
                for (r, (a, e)) in all.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + e.abs()),
                        "{what} row {r}: {a} vs {e}"
                    );
                }
                for (r, value) in all.iter().enumerate() {
                    let mut alone = [f32::NAN];
                    run(r, &mut alone, half);
                    assert_eq!(alone[0].to_bits(), value.to_bits(), "{what}: row {r} alone");
                }
                let mut later = vec![f32::NAN; rows - 1];
                run(1, &mut later, half);
                assert_eq!(bits(&later), bits(&all[1..]), "{what}: from row 1");
            }
        }
    }
}

#[test]
fn widened_halves_match_the_half_crate_bit_for_bit() {
    let specials = [
        0.0,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        6.0e-8,
        -6.1e-5,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for len in [0, 1, 15, 16, 17, 100] {
        let mut halves: Vec<f16> = values(len, len).iter().map(|&v| f16::from_f32(v * 300.0)).collect();
        for (h, &v) in halves.iter_mut().zip(&specials) {
            *h = f16::from_f32(v);
        }
        if len > specials.len() {
            halves[specials.len()] = f16::NAN;
        }
        let mut expected = vec![0.0f32; len];
        halves.convert_to_f32_slice(&mut expected);
        let mut got = vec![f32::NAN; len + 3];
        widen_halves(&halves, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[..len]), bits(&expected), "length {len}");
        assert!(
            got[len..].iter().all(|v| v.is_nan()),
            "wrote past the source at length {len}"
        );
    }
}

#[test]
fn large_products_split_across_tasks_give_the_single_task_result() {
    let (rows, k) = (301, 300); // not multiples of any chunk size; large enough to split
    let m = values(rows * k, 1);
    let x = values(k, 2);
    let mut one = vec![0.0; rows];
    let mut many = vec![0.0; rows];
    gemv(MatrixRows::F32(&m), k, &x, &mut one, 1).unwrap();
    gemv(MatrixRows::F32(&m), k, &x, &mut many, 4).unwrap();
    assert_eq!(one, many);
    assert_close(&one, &reference(&m, k, &x, rows), "split");
}

#[test]
fn short_matrices_are_refused() {
    let m = [1.0f32; 10];
    let mut y = [0.0; 3];
    assert!(gemv(MatrixRows::F32(&m), 4, &[1.0; 4], &mut y, 1).is_err()); // needs 12
    assert!(gemv(MatrixRows::F32(&m), 3, &[1.0; 4], &mut y, 1).is_err()); // stride < k
    assert!(gemv(MatrixRows::F32(&m), 3, &[1.0; 3], &mut y, 1).is_ok());
    assert_eq!(y, [3.0; 3]);
}
