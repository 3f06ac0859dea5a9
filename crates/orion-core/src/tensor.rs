//! Dense host tensors: the values that flow into and out of every executor.
//!
//! Invariants: `data.len() == shape.numel()`; the storage variant matches the dtype (`F32` and `F16`
//! are stored as `f32`, `I32` as `i32`, `Bool` as `bool`); an `F16` tensor only ever holds values
//! that are exactly representable in IEEE half precision (constructors round to nearest even).
//!
//! The storage is shared: cloning or reshaping a tensor is O(1) and copies no elements. Mutation
//! goes through [`Tensor::as_f32_mut`], which copies the storage first only if another tensor
//! still shares it (copy on write), so a holder of the only reference (a KV cache, an optimiser's
//! parameters) updates in place.

use crate::types::{DType, Shape, TensorType};
use std::fmt;
use std::sync::{Arc, Weak};

/// Element storage of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `F32` or `F16` elements (F16 values are f32 numbers exactly representable in half).
    Float(Vec<f32>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    fn kind(&self) -> &'static str {
        match self {
            TensorData::Float(_) => "float",
            TensorData::I32(_) => "i32",
            TensorData::Bool(_) => "bool",
        }
    }
}

/// A dense, row-major tensor with shared, copy-on-write storage.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    data: Arc<TensorData>,
}

/// Rounds an f32 to the nearest IEEE half value (ties to even), returned as f32.
pub fn round_to_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Error for a tensor whose data does not fit its shape or dtype.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tensor data of {len} elements ({kind}) does not fit {ty}")]
pub struct TensorDataError {
    pub len: usize,
    pub kind: &'static str,
    pub ty: TensorType,
}

impl Tensor {
    /// Builds a tensor, checking that `data` fits `dtype` and `shape`; rounds F16 data to half.
    pub fn new(dtype: DType, shape: impl Into<Shape>, data: TensorData) -> Result<Tensor, TensorDataError> {
        let shape = shape.into();
        let (len, fits) = match &data {
            TensorData::Float(v) => (v.len(), dtype.is_float()),
            TensorData::I32(v) => (v.len(), dtype == DType::I32),
            TensorData::Bool(v) => (v.len(), dtype == DType::Bool),
        };
        let kind = data.kind();
        if !fits || len != shape.numel() {
            return Err(TensorDataError {
                len,
                kind,
                ty: TensorType { dtype, shape },
            });
        }
        let data = match (dtype, data) {
            (DType::F16, TensorData::Float(v)) => TensorData::Float(v.into_iter().map(round_to_f16).collect()),
            (_, d) => d,
        };
        Ok(Tensor {
            dtype,
            shape,
            data: Arc::new(data),
        })
    }

    /// An f32 tensor. Panics if `values.len()` differs from the shape's element count, which is
    /// a programming error at the call site (use [`Tensor::new`] for untrusted data).
    pub fn f32(shape: impl Into<Shape>, values: Vec<f32>) -> Tensor {
        Self::expect_fit(Tensor::new(DType::F32, shape, TensorData::Float(values)))
    }

    /// An f16 tensor from f32 values (rounded to half). Panics on a length mismatch, as [`Tensor::f32`].
    pub fn f16(shape: impl Into<Shape>, values: Vec<f32>) -> Tensor {
        Self::expect_fit(Tensor::new(DType::F16, shape, TensorData::Float(values)))
    }

    /// An i32 tensor. Panics on a length mismatch, as [`Tensor::f32`].
    pub fn i32(shape: impl Into<Shape>, values: Vec<i32>) -> Tensor {
        Self::expect_fit(Tensor::new(DType::I32, shape, TensorData::I32(values)))
    }

    /// A bool tensor. Panics on a length mismatch, as [`Tensor::f32`].
    pub fn bool(shape: impl Into<Shape>, values: Vec<bool>) -> Tensor {
        Self::expect_fit(Tensor::new(DType::Bool, shape, TensorData::Bool(values)))
    }

    /// A rank-0 f32 tensor.
    pub fn scalar_f32(value: f32) -> Tensor {
        Tensor::f32(Shape::scalar(), vec![value])
    }

    /// A tensor of the given type with every element zero (false for bool).
    pub fn zeros(ty: &TensorType) -> Tensor {
        Tensor::full(ty, 0.0)
    }

    /// A tensor of the given type with every element `value` (converted to the dtype).
    pub fn full(ty: &TensorType, value: f32) -> Tensor {
        let n = ty.shape.numel();
        let data = match ty.dtype {
            DType::F32 => TensorData::Float(vec![value; n]),
            DType::F16 => TensorData::Float(vec![round_to_f16(value); n]),
            DType::I32 => TensorData::I32(vec![value as i32; n]),
            DType::Bool => TensorData::Bool(vec![value != 0.0; n]),
        };
        Tensor {
            dtype: ty.dtype,
            shape: ty.shape.clone(),
            data: Arc::new(data),
        }
    }

    fn expect_fit(result: Result<Tensor, TensorDataError>) -> Tensor {
        match result {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn ty(&self) -> TensorType {
        TensorType {
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements, without a copy when this tensor holds the only reference to its storage.
    pub fn into_data(self) -> TensorData {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The storage, when no other tensor shares it (`None` otherwise: nothing is copied).
    pub fn into_sole_data(self) -> Option<TensorData> {
        Arc::try_unwrap(self.data).ok()
    }

    /// Float elements for writing, or `None` for i32 and bool tensors. Copies the storage first
    /// only when another tensor shares it. Writes to an `F16` tensor must keep every value
    /// representable in half precision (the type's invariant); round with [`round_to_f16`].
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match Arc::make_mut(&mut self.data) {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    /// Float elements, or `None` for i32 and bool tensors.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &*self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &*self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &*self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Every element converted to f32 (bool as 0/1), whatever the dtype.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &*self.data {
            TensorData::Float(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// The same elements under another shape of equal element count (shares the storage).
    pub fn reshaped(&self, shape: impl Into<Shape>) -> Result<Tensor, TensorDataError> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(TensorDataError {
                len: self.numel(),
                kind: self.data.kind(),
                ty: TensorType {
                    dtype: self.dtype,
                    shape,
                },
            });
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data: Arc::clone(&self.data),
        })
    }

    /// A weak handle on this tensor's storage, for caches of values derived from it: it upgrades
    /// while some tensor still holds the storage, and never after an in-place write through
    /// [`Tensor::as_f32_mut`] (which moves the elements away from weak handles).
    pub fn downgrade_storage(&self) -> Weak<TensorData> {
        Arc::downgrade(&self.data)
    }

    /// Whether `self` and `other` share one storage (a clone or reshape of each other).
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// Bit-level equality that treats NaN as equal to NaN (for golden comparisons).
    pub fn bitwise_eq(&self, other: &Tensor) -> bool {
        if self.dtype != other.dtype || self.shape != other.shape {
            return false;
        }
        match (&*self.data, &*other.data) {
            (TensorData::Float(a), TensorData::Float(b)) => a
                .iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())),
            (a, b) => a == b,
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "Tensor({}", self.ty())?;
        let values = self.to_f32_vec();
        write!(f, " {:?}", &values[..values.len().min(SHOWN)])?;
        if values.len() > SHOWN {
            write!(f, "…")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_constructor_rounds_to_half() {
        let t = Tensor::f16([2], vec![1.0 + 1e-4, 70000.0]);
        assert_eq!(t.as_f32().unwrap()[0], 1.0);
        assert!(t.as_f32().unwrap()[1].is_infinite());
    }

    #[test]
    fn mismatched_data_is_an_error() {
        assert!(Tensor::new(DType::F32, [2, 2], TensorData::Float(vec![1.0; 3])).is_err());
        assert!(Tensor::new(DType::I32, [1], TensorData::Float(vec![1.0])).is_err());
    }

    #[test]
    fn clones_share_storage_until_one_is_written() {
        let a = Tensor::f32([2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let mut b = a.reshaped([4]).unwrap();
        assert!(b.shares_storage_with(&a));
        b.as_f32_mut().unwrap()[0] = 9.0;
        assert!(!b.shares_storage_with(&a));
        assert_eq!(a.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b.as_f32().unwrap(), &[9.0, 2.0, 3.0, 4.0]);
        let ptr = b.as_f32().unwrap().as_ptr();
        b.as_f32_mut().unwrap()[1] = 8.0;
        assert_eq!(b.as_f32().unwrap().as_ptr(), ptr, "a sole owner writes in place");
        assert!(a.reshaped([3]).is_err());
        assert!(Tensor::i32([1], vec![1]).as_f32_mut().is_none());
    }

    #[test]
    fn into_data_of_a_sole_owner_keeps_the_buffer() {
        let a = Tensor::f32([3], vec![1.0, 2.0, 3.0]);
        let ptr = a.as_f32().unwrap().as_ptr();
        match a.into_data() {
            TensorData::Float(v) => assert_eq!(v.as_ptr(), ptr),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sole_data_is_given_only_by_a_sole_owner() {
        let a = Tensor::f32([3], vec![1.0, 2.0, 3.0]);
        let ptr = a.as_f32().unwrap().as_ptr();
        let shared = a.clone();
        assert!(shared.into_sole_data().is_none(), "another tensor shares it");
        match a.into_sole_data() {
            Some(TensorData::Float(v)) => assert_eq!(v.as_ptr(), ptr),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bitwise_eq_treats_nan_as_equal() {
        let a = Tensor::f32([2], vec![f32::NAN, 1.0]);
        assert!(a.bitwise_eq(&a.clone()));
        assert!(!a.bitwise_eq(&Tensor::f32([2], vec![f32::NAN, 2.0])));
    }
}
