//! Element storage of the CPU backend: arena buffers, read-only views of operands, and the `Elem`
//! trait that lets data-movement kernels be written once for every storage kind.
//!
//! Invariants: a buffer's kind is fixed by the plan (f32 storage for both float dtypes, i32, bool);
//! a view is exactly as long as the value it shows (a buffer may be longer: slots are reused by
//! values of different sizes). Half-precision storage exists only for constant weights
//! (`View::Half`), which only the matmul kernels read. The spare pool ([`recycle`], [`spare_buffer`])
//! holds at most `SPARE_MAX_BYTES` of large f32 buffers given back for reuse; a buffer taken from
//! it has unspecified (initialised) values, which its taker overwrites.

use crate::error::Result;
use crate::interp::exec_error;
use crate::tensor::{Tensor, TensorData};
use crate::types::DType;
use half::f16;
use std::sync::Mutex;

/// Storage kind of a value: which buffer variant holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StorageKind {
    Float,
    I32,
    Bool,
}

impl StorageKind {
    pub(crate) fn of(dtype: DType) -> StorageKind {
        match dtype {
            DType::F32 | DType::F16 => StorageKind::Float,
            DType::I32 => StorageKind::I32,
            DType::Bool => StorageKind::Bool,
        }
    }

    /// Bytes per element in an arena buffer.
    pub(crate) fn size_bytes(self) -> usize {
        match self {
            StorageKind::Float | StorageKind::I32 => 4,
            StorageKind::Bool => 1,
        }
    }
}

/// One arena slot: an owned buffer, at least as long as every value the plan puts in it.
#[derive(Clone, Debug)]
pub(crate) enum Buf {
    Float(Vec<f32>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl Default for Buf {
    fn default() -> Buf {
        Buf::Float(Vec::new())
    }
}

impl Buf {
    /// A zero-filled buffer of `len` elements of `kind`.
    pub(crate) fn zeroed(kind: StorageKind, len: usize) -> Buf {
        match kind {
            StorageKind::Float => Buf::Float(vec![0.0; len]),
            StorageKind::I32 => Buf::I32(vec![0; len]),
            StorageKind::Bool => Buf::Bool(vec![false; len]),
        }
    }
}

/// f32 buffers at least this long are kept for reuse by [`recycle_vec`] (shorter ones the
/// allocator reuses without system calls).
const SPARE_MIN_LEN: usize = 1 << 16;
/// Most bytes the spare pool holds; buffers given back beyond it are freed.
const SPARE_MAX_BYTES: usize = 1 << 31;

/// Large f32 buffers given back by their users for reuse as new output buffers: the run that
/// hands over an output (see `CpuExecutable::run`) then writes into memory that is already paged
/// in, instead of the allocator mapping fresh pages that fault in on first write and unmapping
/// them when the output is dropped.
struct Spare {
    buffers: Vec<Vec<f32>>,
    bytes: usize,
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    buffers: Vec::new(),
    bytes: 0,
});

fn spare_pool() -> std::sync::MutexGuard<'static, Spare> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives a float tensor's storage to the spare pool when it is large and no other tensor shares
/// it (a shared one is only dropped: pooling a copy would cost what the pool saves).
pub fn recycle(tensor: Tensor) {
    if tensor.numel() < SPARE_MIN_LEN || tensor.as_f32().is_none() {
        return;
    }
    if let Some(TensorData::Float(values)) = tensor.into_sole_data() {
        recycle_vec(values);
    }
}

/// Gives a buffer to the spare pool when it is large and the pool has room (else frees it).
pub fn recycle_vec(values: Vec<f32>) {
    let bytes = values.capacity() * std::mem::size_of::<f32>();
    if values.capacity() < SPARE_MIN_LEN {
        return;
    }
    let mut pool = spare_pool();
    if pool.bytes + bytes <= SPARE_MAX_BYTES {
        pool.bytes += bytes;
        pool.buffers.push(values);
    }
}

/// A buffer of `len` f32 values: a spare one (the smallest holding `len` to `2·len` elements,
/// with whatever values it held) or, when none fits, a new zero-filled one. Callers overwrite it.
pub fn spare_buffer(len: usize) -> Vec<f32> {
    if len >= SPARE_MIN_LEN {
        let mut pool = spare_pool();
        let best = (pool.buffers.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len && b.capacity() <= 2 * len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let mut values = pool.buffers.swap_remove(i);
            pool.bytes -= values.capacity() * std::mem::size_of::<f32>();
            drop(pool);
            values.resize(len, 0.0);
            return values;
        }
    }
    vec![0.0; len]
}

/// A read-only view of an operand's elements.
#[derive(Clone, Copy, Debug)]
pub(crate) enum View<'a> {
    Float(&'a [f32]),
    /// A constant weight stored in half precision (only matmul and conv1x1 read these).
    Half(&'a [f16]),
    I32(&'a [i32]),
    Bool(&'a [bool]),
}

impl<'a> View<'a> {
    /// The f32 elements, or an error naming `op` when the view holds another kind.
    pub(crate) fn float(self, op: &str) -> Result<&'a [f32]> {
        match self {
            View::Float(v) => Ok(v),
            View::Half(_) | View::I32(_) | View::Bool(_) => Err(kind_error(op, "f32 storage")),
        }
    }

    pub(crate) fn i32(self, op: &str) -> Result<&'a [i32]> {
        match self {
            View::I32(v) => Ok(v),
            View::Float(_) | View::Half(_) | View::Bool(_) => Err(kind_error(op, "i32 storage")),
        }
    }

    pub(crate) fn bool(self, op: &str) -> Result<&'a [bool]> {
        match self {
            View::Bool(v) => Ok(v),
            View::Float(_) | View::Half(_) | View::I32(_) => Err(kind_error(op, "bool storage")),
        }
    }
}

/// The error for an operand whose storage kind the plan did not expect (a backend bug, reported
/// rather than panicking).
pub(crate) fn kind_error(op: &str, expected: &str) -> crate::error::CoreError {
    exec_error(op, format!("cpu backend: operand does not have {expected}"))
}

/// An element type of arena storage; lets data-movement kernels be generic over the kind.
pub(crate) trait Elem: Copy + Default + PartialEq + Send + Sync + 'static {
    /// This type's elements in `view`, if it holds them.
    fn from_view<'a>(view: View<'a>) -> Option<&'a [Self]>;
    /// This type's buffer, if `buf` holds it.
    fn from_buf(buf: &mut Buf) -> Option<&mut Vec<Self>>;
    /// The pad value converted to this type (as `Tensor::full` converts).
    fn from_f32(value: f32) -> Self;
}

impl Elem for f32 {
    fn from_view<'a>(view: View<'a>) -> Option<&'a [f32]> {
        match view {
            View::Float(v) => Some(v),
            View::Half(_) | View::I32(_) | View::Bool(_) => None,
        }
    }
    fn from_buf(buf: &mut Buf) -> Option<&mut Vec<f32>> {
        match buf {
            Buf::Float(v) => Some(v),
            Buf::I32(_) | Buf::Bool(_) => None,
        }
    }
    fn from_f32(value: f32) -> f32 {
        value
    }
}

impl Elem for i32 {
    fn from_view<'a>(view: View<'a>) -> Option<&'a [i32]> {
        match view {
            View::I32(v) => Some(v),
            View::Float(_) | View::Half(_) | View::Bool(_) => None,
        }
    }
    fn from_buf(buf: &mut Buf) -> Option<&mut Vec<i32>> {
        match buf {
            Buf::I32(v) => Some(v),
            Buf::Float(_) | Buf::Bool(_) => None,
        }
    }
    fn from_f32(value: f32) -> i32 {
        value as i32
    }
}

impl Elem for bool {
    fn from_view<'a>(view: View<'a>) -> Option<&'a [bool]> {
        match view {
            View::Bool(v) => Some(v),
            View::Float(_) | View::Half(_) | View::I32(_) => None,
        }
    }
    fn from_buf(buf: &mut Buf) -> Option<&mut Vec<bool>> {
        match buf {
            Buf::Bool(v) => Some(v),
            Buf::Float(_) | Buf::I32(_) => None,
        }
    }
    fn from_f32(value: f32) -> bool {
        value != 0.0
    }
}

/// The first `numel` elements of `buf` as `T`, or an error naming `op`.
pub(crate) fn out_slice<'b, T: Elem>(buf: &'b mut Buf, numel: usize, op: &str) -> Result<&'b mut [T]> {
    T::from_buf(buf)
        .and_then(|v| v.get_mut(..numel))
        .ok_or_else(|| kind_error(op, "an output buffer of the planned kind and size"))
}

/// Every view of `views` as `T` slices, or an error naming `op`.
pub(crate) fn typed_views<'a, T: Elem>(views: &[View<'a>], op: &str) -> Result<Vec<&'a [T]>> {
    views
        .iter()
        .map(|&v| T::from_view(v).ok_or_else(|| kind_error(op, "the planned kind")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_are_reused_at_the_asked_length_and_not_for_much_shorter_ones() {
        // A length no other test asks for, so the pool's buffer is this test's.
        let len = SPARE_MIN_LEN * 3 + 17;
        let given: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let address = given.as_ptr();
        recycle_vec(given);
        let shorter = spare_buffer(len - 5);
        assert_eq!(shorter.len(), len - 5);
        assert_eq!(shorter.as_ptr(), address);
        assert_eq!(shorter[len - 6], (len - 6) as f32);
        // Too large a buffer for the length asked (more than twice) is not handed out; it stays
        // in the pool for a length it fits.
        recycle_vec(shorter);
        let small = spare_buffer(len / 3);
        assert_eq!(small.len(), len / 3);
        assert_ne!(small.as_ptr(), address);
        let fitting = spare_buffer(len);
        assert_eq!(fitting.as_ptr(), address);
    }
}
