//! Derived storage of constant weights — transposed, half precision, both, or transposed and
//! packed into the AVX-512 kernel's strips — shared by every CPU plan built from the same tensor
//! storage.
//!
//! A generator compiles one prefill program per prompt length, and each used to transpose (and,
//! with half weights, convert) every weight matrix again: about 220 ms and, for GPT-2 in f32,
//! 340 MB more memory per length. Here a derivation is looked up by the source storage (a
//! [`Weak`] handle from [`Tensor::downgrade_storage`]), its shape and its form, and shared.
//!
//! Invariants: the registry holds only weak handles, so a derived copy lives exactly as long as
//! some plan uses it, and an entry whose source has been dropped is discarded; a source changed in
//! place (`Tensor::as_f32_mut` detaches weak handles) never matches an old entry, so a derivation
//! always reflects the current values. Two threads deriving the same form at once may both
//! compute it (both results are equal); the registry keeps the later one.

use super::gemm_kernel::PackedRight;
use crate::error::Result;
use crate::interp::exec_error;
use crate::tensor::{Tensor, TensorData};
use half::f16;
use std::sync::{Arc, Mutex, Weak};

/// How a weight is stored for the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// The `[cols, rows]` transpose of a `[rows, cols]` matrix, f32.
    Transposed,
    /// Every value rounded to half precision, same layout.
    Half,
    /// The transpose, rounded to half precision.
    HalfTransposed,
    /// The transpose `[cols, rows]` as the right operand of a product, in the AVX-512 kernel's
    /// strips ([`PackedRight`]), f32.
    PackedTransposed,
    /// As `PackedTransposed`, rounded to bfloat16 pairs for the kernel of `ProductPrecision::Bf16`
    /// (where the CPU has it).
    PackedTransposedBf16,
}

/// A derived weight, shared.
#[derive(Clone, Debug)]
pub(crate) enum Derived {
    F32(Arc<Tensor>),
    Half(Arc<[f16]>),
    Packed(Arc<PackedRight>),
}

/// What the registry remembers of a derived weight: weak handles only.
enum Held {
    F32(Weak<Tensor>),
    Half(Weak<[f16]>),
    Packed(Weak<PackedRight>),
}

impl Held {
    fn of(derived: &Derived) -> Held {
        match derived {
            Derived::F32(t) => Held::F32(Arc::downgrade(t)),
            Derived::Half(h) => Held::Half(Arc::downgrade(h)),
            Derived::Packed(p) => Held::Packed(Arc::downgrade(p)),
        }
    }

    fn upgrade(&self) -> Option<Derived> {
        match self {
            Held::F32(t) => t.upgrade().map(Derived::F32),
            Held::Half(h) => h.upgrade().map(Derived::Half),
            Held::Packed(p) => p.upgrade().map(Derived::Packed),
        }
    }

    fn alive(&self) -> bool {
        match self {
            Held::F32(t) => t.strong_count() > 0,
            Held::Half(h) => h.strong_count() > 0,
            Held::Packed(p) => p.strong_count() > 0,
        }
    }
}

struct Entry {
    source: Weak<TensorData>,
    dims: Vec<usize>,
    form: Form,
    held: Held,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `value` (a float constant; rank 2 for the transposed forms) in `form`: the copy another plan
/// already uses when there is one, else a new one.
pub(crate) fn derive(value: &Tensor, form: Form) -> Result<Derived> {
    let source = value.downgrade_storage();
    let dims = value.shape().dims().to_vec();
    {
        let mut entries = registry();
        entries.retain(|e| e.source.strong_count() > 0 && e.held.alive());
        let found = entries
            .iter()
            .find(|e| e.form == form && e.dims == dims && e.source.ptr_eq(&source))
            .and_then(|e| e.held.upgrade());
        if let Some(derived) = found {
            return Ok(derived);
        }
    }
    let derived = make(value, form)?;
    registry().push(Entry {
        source,
        dims,
        form,
        held: Held::of(&derived),
    });
    Ok(derived)
}

/// Computes `value` in `form`.
fn make(value: &Tensor, form: Form) -> Result<Derived> {
    let data = value.as_f32().filter(|_| value.dtype().is_float()).ok_or_else(|| {
        exec_error(
            "plan",
            "cpu backend: only float constants are stored transposed or in half".into(),
        )
    })?;
    let dims = value.shape().dims();
    let matrix = || match dims {
        &[rows, cols] => Ok((rows, cols)),
        _ => Err(exec_error(
            "plan",
            format!("cpu backend: transposing a constant of shape {dims:?}"),
        )),
    };
    Ok(match form {
        Form::Half => Derived::Half(halves(data)),
        Form::HalfTransposed => Derived::Half(halves(&transposed_values(matrix()?, data))),
        Form::PackedTransposed => {
            // Element (p, j) of the transpose is `data[j·cols + p]`.
            let (rows, cols) = matrix()?;
            Derived::Packed(Arc::new(PackedRight::pack(data, (1, cols), (cols, rows))?))
        }
        Form::PackedTransposedBf16 => {
            let (rows, cols) = matrix()?;
            Derived::Packed(Arc::new(PackedRight::pack_bf16(data, (1, cols), (cols, rows))?))
        }
        Form::Transposed => {
            let (rows, cols) = matrix()?;
            let t = Tensor::new(
                value.dtype(),
                vec![cols, rows],
                TensorData::Float(transposed_values((rows, cols), data)),
            )
            .map_err(|e| exec_error("plan", format!("cpu backend: transposing a weight: {e}")))?;
            Derived::F32(Arc::new(t))
        }
    })
}

/// `values` rounded to half precision (to nearest, ties to even, as `f16::from_f32`), in blocks
/// across the CPU pool through the `half` crate's slice conversion (F16C's `vcvtps2ph` where the CPU
/// has it), written straight into the shared allocation. Converting one value at a time took most
/// of the ~400 ms GPT-2's half weights cost to derive.
fn halves(values: &[f32]) -> Arc<[f16]> {
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 16;
    let mut out: Arc<[f16]> = std::iter::repeat_n(f16::ZERO, values.len()).collect();
    match Arc::get_mut(&mut out) {
        Some(dst) => super::install(|| {
            dst.par_chunks_mut(BLOCK)
                .zip(values.par_chunks(BLOCK))
                .for_each(|(dst, src)| dst.convert_from_f32_slice(src))
        }),
        // A fresh `Arc` has no other owner; kept total rather than assumed.
        None => out = values.iter().map(|&x| f16::from_f32(x)).collect(),
    }
    out
}

/// The values of the `[cols, rows]` transpose of a row-major `[rows, cols]` matrix, in square
/// tiles (both sides touched a cache line at a time), bands of output rows split across the CPU
/// pool.
fn transposed_values((rows, cols): (usize, usize), data: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0.0f32; data.len()];
    if rows > 0 && cols > 0 {
        super::install(|| {
            out.par_chunks_mut(TILE * rows).enumerate().for_each(|(band, block)| {
                let c0 = band * TILE;
                for r0 in (0..rows).step_by(TILE) {
                    for (i, line) in block.chunks_mut(rows).enumerate() {
                        let c = c0 + i;
                        for r in r0..(r0 + TILE).min(rows) {
                            line[r] = data[r * cols + c];
                        }
                    }
                }
            })
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Tensor {
        Tensor::f32(
            [rows, cols],
            (0..rows * cols).map(|i| ((i * 7 + seed) % 23) as f32 - 11.0).collect(),
        )
    }

    fn f32_of(d: &Derived) -> Arc<Tensor> {
        match d {
            Derived::F32(t) => Arc::clone(t),
            Derived::Half(_) | Derived::Packed(_) => panic!("expected an f32 form"),
        }
    }

    #[test]
    fn transposes_match_a_plain_loop_including_partial_tiles() {
        let (rows, cols) = (45, 70);
        let w = matrix(rows, cols, 1);
        let t = f32_of(&derive(&w, Form::Transposed).unwrap());
        assert_eq!(t.shape().dims(), &[cols, rows]);
        let (src, dst) = (w.as_f32().unwrap(), t.as_f32().unwrap());
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c]);
            }
        }
        let Derived::Half(h) = derive(&w, Form::HalfTransposed).unwrap() else {
            panic!("expected a half form")
        };
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(h[c * rows + r], f16::from_f32(src[r * cols + c]));
            }
        }
    }

    #[test]
    fn halves_round_every_value_as_one_at_a_time_conversion_does() {
        // More than two blocks; ties, subnormals, values beyond the half range, infinities, NaN.
        let special = [
            0.0,
            -0.0,
            1.0 + f32::EPSILON,
            1.000_488_3,
            1.000_976_6,
            5.96e-8,
            2.98e-8,
            1e-10,
            65504.0,
            65520.0,
            1e6,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let values: Vec<f32> = (0..(1 << 17) + 77)
            .map(|i| match i % 97 {
                j if j < special.len() => special[j],
                _ => ((i * 7919) % 20011) as f32 * 0.37 - 3700.0,
            })
            .collect();
        let got = halves(&values);
        assert_eq!(got.len(), values.len());
        for (i, (h, &v)) in got.iter().zip(&values).enumerate() {
            assert_eq!(h.to_bits(), f16::from_f32(v).to_bits(), "value {i}: {v}");
        }
    }

    #[test]
    fn plans_of_one_storage_share_a_derivation_while_it_is_in_use() {
        let w = matrix(8, 5, 2);
        let same_storage = w.clone();
        let first = f32_of(&derive(&w, Form::Transposed).unwrap());
        let second = f32_of(&derive(&same_storage, Form::Transposed).unwrap());
        assert!(Arc::ptr_eq(&first, &second));
        // Another storage with equal values, or another form, is derived on its own.
        let other = matrix(8, 5, 2);
        assert!(!Arc::ptr_eq(
            &first,
            &f32_of(&derive(&other, Form::Transposed).unwrap())
        ));
        assert!(matches!(derive(&w, Form::Half).unwrap(), Derived::Half(_)));
        // Once no plan holds it, the copy is freed and a later derivation makes a new one.
        let weak = Arc::downgrade(&first);
        drop((first, second));
        assert!(weak.upgrade().is_none());
        assert_eq!(f32_of(&derive(&w, Form::Transposed).unwrap()).shape().dims(), &[5, 8]);
        // Packed transposes are shared the same way; the packing is of the transpose `[5, 8]`.
        let packed = |t: &Tensor| match derive(t, Form::PackedTransposed).unwrap() {
            Derived::Packed(p) => p,
            Derived::F32(_) | Derived::Half(_) => panic!("expected a packed form"),
        };
        let (first, second) = (packed(&w), packed(&same_storage));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.dims(), (5, 8));
        assert!(!Arc::ptr_eq(&first, &packed(&other)));
    }

    #[test]
    fn a_source_changed_in_place_is_derived_again() {
        let mut w = matrix(3, 4, 3);
        let before = f32_of(&derive(&w, Form::Transposed).unwrap());
        // `w` holds the only strong reference: the write happens in place.
        w.as_f32_mut().unwrap()[0] = 100.0;
        let after = f32_of(&derive(&w, Form::Transposed).unwrap());
        assert_eq!(after.as_f32().unwrap()[0], 100.0);
        assert_eq!(before.as_f32().unwrap()[0], -11.0 + 3.0);
    }

    #[test]
    fn non_matrices_and_non_f32_constants_are_refused() {
        assert!(derive(&Tensor::f32([2, 2, 2], vec![0.0; 8]), Form::Transposed).is_err());
        assert!(derive(&Tensor::i32([2, 2], vec![0; 4]), Form::Half).is_err());
    }
}
