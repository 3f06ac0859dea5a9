//! Dense host tensors: the values that flow into and out of every executor.
//!
//! Invariants: `data.len() == shape.numel()`; the storage variant matches the dtype (`F32` and `F16`
//! are stored as `f32`, `I32` as `i32`, `Bool` as `bool`); an `F16` tensor only ever holds values
//! that are exactly representable in IEEE half precision (constructors round to nearest even).

use crate::types::{DType, Shape, TensorType};
use std::fmt;

/// Element storage of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `F32` or `F16` elements (F16 values are f32 numbers exactly representable in half).
    Float(Vec<f32>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

/// A dense, row-major tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    data: TensorData,
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
        let (len, kind, fits) = match &data {
            TensorData::Float(v) => (v.len(), "float", dtype.is_float()),
            TensorData::I32(v) => (v.len(), "i32", dtype == DType::I32),
            TensorData::Bool(v) => (v.len(), "bool", dtype == DType::Bool),
        };
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
        Ok(Tensor { dtype, shape, data })
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
            data,
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

    /// Float elements, or `None` for i32 and bool tensors.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Every element converted to f32 (bool as 0/1), whatever the dtype.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::Float(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// The same elements under another shape of equal element count.
    pub fn reshaped(&self, shape: impl Into<Shape>) -> Result<Tensor, TensorDataError> {
        Tensor::new(self.dtype, shape, self.data.clone())
    }

    /// Bit-level equality that treats NaN as equal to NaN (for golden comparisons).
    pub fn bitwise_eq(&self, other: &Tensor) -> bool {
        if self.dtype != other.dtype || self.shape != other.shape {
            return false;
        }
        match (&self.data, &other.data) {
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
    fn bitwise_eq_treats_nan_as_equal() {
        let a = Tensor::f32([2], vec![f32::NAN, 1.0]);
        assert!(a.bitwise_eq(&a.clone()));
        assert!(!a.bitwise_eq(&Tensor::f32([2], vec![f32::NAN, 2.0])));
    }
}
