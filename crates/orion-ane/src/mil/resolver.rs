//! Where `BLOBFILE(path, offset)` constants get their tensors from during MIL → IR conversion.
//!
//! [`WeightResolver`] is the seam: [`InMemoryResolver`] maps (path, offset) to tensors prepared by a
//! test or a caller; [`BlobDictResolver`] reads the weight dictionary the device receives (key = the
//! MIL path string, value = the whole blob file, ane.md §1) with the validating reader of
//! `crate::blob`, so the simulator sees exactly the device's bytes.
//!
//! Invariants: a resolver never panics on bad bytes; the tensor it returns has the element type and
//! shape of the requested MIL type (fp16 → F16, fp32 → F32, int32 → I32), or it returns an error.

use super::ast::{MilDType, MilType};
use crate::blob::BlobFile;
use orion_core::{DType, Tensor, TensorData};
use std::collections::HashMap;

/// Supplies the tensor a `BLOBFILE(path = …, offset = …)` literal of type `ty` refers to.
pub trait WeightResolver {
    /// The tensor stored at `offset` (a record's metadata offset, catalogue C03) of the file `path`.
    fn resolve(&self, path: &str, offset: u64, ty: &MilType) -> Result<Tensor, String>;
}

/// Tensors keyed by (path, offset), for tests and for callers that already hold the weights.
#[derive(Clone, Debug, Default)]
pub struct InMemoryResolver {
    entries: HashMap<(String, u64), Tensor>,
}

impl InMemoryResolver {
    /// A resolver that knows no weights (for programs without BLOBFILE constants).
    pub fn new() -> InMemoryResolver {
        InMemoryResolver::default()
    }

    /// Registers `tensor` as the content of (`path`, `offset`), replacing any earlier entry.
    pub fn insert(&mut self, path: impl Into<String>, offset: u64, tensor: Tensor) {
        self.entries.insert((path.into(), offset), tensor);
    }

    /// Builder form of [`InMemoryResolver::insert`].
    pub fn with(mut self, path: impl Into<String>, offset: u64, tensor: Tensor) -> InMemoryResolver {
        self.insert(path, offset, tensor);
        self
    }
}

impl WeightResolver for InMemoryResolver {
    fn resolve(&self, path: &str, offset: u64, ty: &MilType) -> Result<Tensor, String> {
        let tensor = self
            .entries
            .get(&(path.to_string(), offset))
            .ok_or_else(|| format!("no weight registered for {path:?} at offset {offset}"))?;
        let (dtype, dims) = expected_type(ty)?;
        if tensor.dtype() != dtype || tensor.shape().dims() != dims.as_slice() {
            return Err(format!(
                "weight {path:?} at offset {offset} is {}, the program declares {}",
                tensor.ty(),
                describe(dtype, &dims)
            ));
        }
        Ok(tensor.clone())
    }
}

/// The device's weight dictionary: MIL path (e.g. `@model_path/weights/w.bin`) → whole blob file.
#[derive(Clone, Debug, Default)]
pub struct BlobDictResolver {
    files: HashMap<String, Vec<u8>>,
}

impl BlobDictResolver {
    pub fn new(files: HashMap<String, Vec<u8>>) -> BlobDictResolver {
        BlobDictResolver { files }
    }

    /// Adds or replaces one file.
    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(path.into(), bytes);
    }
}

impl WeightResolver for BlobDictResolver {
    fn resolve(&self, path: &str, offset: u64, ty: &MilType) -> Result<Tensor, String> {
        let bytes = self
            .files
            .get(path)
            .ok_or_else(|| format!("weight dictionary has no file {path:?}"))?;
        let file = BlobFile::parse(bytes).map_err(|e| format!("{path}: {e}"))?;
        let (dtype, dims) = expected_type(ty)?;
        let in_file = |e: crate::blob::BlobError| format!("{path}: {e}");
        let data = match dtype {
            DType::F16 => TensorData::Float(file.read_fp16(offset).map_err(in_file)?),
            DType::F32 => TensorData::Float(file.read_fp32(offset).map_err(in_file)?),
            DType::I32 => TensorData::I32(file.read_i32(offset).map_err(in_file)?),
            DType::Bool => return Err(format!("{path}: bool weights are not stored in blob files")),
        };
        Tensor::new(dtype, dims, data)
            .map_err(|e| format!("{path} at offset {offset}: record does not match the declared type: {e}"))
    }
}

/// The IR element type and extents a resolver must produce for `ty`.
fn expected_type(ty: &MilType) -> Result<(DType, Vec<usize>), String> {
    let (dtype, dims) = ty
        .known_tensor()
        .ok_or_else(|| "a BLOBFILE constant needs a tensor type with known extents".to_string())?;
    let dtype = match dtype {
        MilDType::Fp16 => DType::F16,
        MilDType::Fp32 => DType::F32,
        MilDType::Int32 => DType::I32,
        other => return Err(format!("BLOBFILE constants of {other} are not supported")),
    };
    Ok((dtype, dims))
}

fn describe(dtype: DType, dims: &[usize]) -> String {
    orion_core::TensorType::new(dtype, dims.to_vec()).to_string()
}
