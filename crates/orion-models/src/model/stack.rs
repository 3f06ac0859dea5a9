//! Stacking weight tensors along their first axis into one constant (the q/k/v and gate/up
//! projections of `Builder::projections`), copied on every core.
//!
//! Why parallel: a generator's first graphs stack about half of a model's bytes (Stories110M: 236
//! MB of q/k/v and gate/up rows), all into fresh pages. Copied on one thread, growing the vector as
//! it went, this was most of the 170–220 ms that creating a generator took on the EPYC; the copy
//! and its page faults now run on the CPU pool, into a vector of the final size.

use crate::error::Result;
use orion_core::{DType, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::Arc;

/// Elements one task copies at a time (256 KiB of f32).
const COPY_CHUNK: usize = 1 << 16;

/// `parts` stacked along axis 0 as one `dtype` tensor, or `None` unless every part is a float
/// tensor with at least one axis and the same trailing dimensions.
pub(super) fn stack_rows(parts: &[Arc<Tensor>], dtype: DType) -> Result<Option<Tensor>> {
    let mut sources = Vec::with_capacity(parts.len());
    let mut rows = 0;
    let mut tail: Option<&[usize]> = None;
    for part in parts {
        let dims = part.shape().dims();
        let (Some(&first), Some(values)) = (dims.first(), part.as_f32()) else {
            return Ok(None);
        };
        if *tail.get_or_insert(&dims[1..]) != &dims[1..] {
            return Ok(None);
        }
        rows += first;
        sources.push(values);
    }
    let mut dims = vec![rows];
    dims.extend_from_slice(tail.unwrap_or_default());
    let data = concatenated(&sources);
    Ok(Some(
        Tensor::new(dtype, dims, TensorData::Float(data)).map_err(orion_core::CoreError::from)?,
    ))
}

/// The slices one after another in one vector, the copy split into chunks across the CPU pool.
fn concatenated(sources: &[&[f32]]) -> Vec<f32> {
    let total = sources.iter().map(|s| s.len()).sum();
    let mut data = vec![0.0f32; total];
    let mut pairs = Vec::new();
    let mut rest = data.as_mut_slice();
    for source in sources {
        let (head, tail) = rest.split_at_mut(source.len());
        pairs.extend(head.chunks_mut(COPY_CHUNK).zip(source.chunks(COPY_CHUNK)));
        rest = tail;
    }
    orion_core::cpu::install(|| {
        pairs.into_par_iter().for_each(|(to, from)| to.copy_from_slice(from));
    });
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: &[usize], start: f32) -> Arc<Tensor> {
        let n = dims.iter().product();
        Arc::new(Tensor::f32(dims.to_vec(), (0..n).map(|i| start + i as f32).collect()))
    }

    #[test]
    fn stacks_rows_in_order_across_many_chunks() {
        // Large enough that each part spans several copy chunks, with uneven row counts.
        let a = ramp(&[3 * COPY_CHUNK / 64 + 5, 64], 0.0);
        let b = ramp(&[7, 64], 1e7);
        let c = ramp(&[COPY_CHUNK / 64 + 1, 64], -5e6);
        let stacked = stack_rows(&[a.clone(), b.clone(), c.clone()], DType::F32)
            .unwrap()
            .unwrap();
        let rows = a.shape().dims()[0] + 7 + c.shape().dims()[0];
        assert_eq!(stacked.shape().dims(), &[rows, 64]);
        let expected: Vec<f32> = [&a, &b, &c].iter().flat_map(|t| t.as_f32().unwrap().to_vec()).collect();
        assert_eq!(stacked.as_f32().unwrap(), expected.as_slice());
    }

    #[test]
    fn refuses_parts_whose_trailing_dimensions_differ_or_that_have_no_axis() {
        assert!(stack_rows(&[ramp(&[2, 3], 0.0), ramp(&[2, 4], 0.0)], DType::F32)
            .unwrap()
            .is_none());
        let scalar = Arc::new(Tensor::f32(vec![], vec![1.0]));
        assert!(stack_rows(&[scalar], DType::F32).unwrap().is_none());
    }
}
