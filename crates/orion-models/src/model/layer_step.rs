//! One-layer inference programs for devices that run a model layer by layer (the ANE): the embedding,
//! final norm and classifier stay on the CPU, each layer is its own program.
//!
//! - **layer prefill** `[T]`: input `x [T, D]`; outputs `y [T, D]` and the layer's keys (after RoPE)
//!   and values `k`, `v` `[T, kv_dim]`. Causal, so rows past the prompt (bucket padding) never change
//!   the prompt's rows.
//! - **layer decode** (cache `L`, surface bucket `S`): inputs `x [S, D]` with the token in row 0 and
//!   zeros elsewhere, (Llama) `cos`, `sin` `[S, head_dim]` with the token's RoPE row in row 0,
//!   `mask [S, L]` (row 0 as [`super::decode_mask`]), `cache.k`, `cache.v` `[L, kv_dim]`; outputs
//!   `y [S, D]`, `k`, `v` `[S, kv_dim]`, all meaningful in row 0 only. `S` is the smallest row count
//!   whose last axis satisfies the device's surface rules (ane.md §2, C21/C22: fp16 S = 32), which is
//!   why a single token travels in a bucket.
//!
//! Every I/O tensor is rank 2 with the sequence as its last surface axis (`[rows, features]` →
//! channel-major `[1, features, 1, rows]` on the device), so the caches need no host transposes.
//! The bucket rows past row 0 compute on zeros: every norm of a zero row is zero (ε > 0), so they stay
//! finite and never reach row 0 (the attention reads row 0 of the queries only).

use super::{build_layer_graph, GraphKind};
use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use orion_core::composite::{merge_heads, rope_tables, split_heads};
use orion_core::{DType, Graph, Tensor, TensorData, TensorType, ValueId};

/// Data inputs of a layer graph besides `x`, as declared by [`declare_inputs`].
#[derive(Debug, Default)]
pub(crate) struct LayerStepInputs {
    pub mask: Option<ValueId>,
    /// `(cache.k, cache.v)` for layer decode.
    pub caches: Vec<(ValueId, ValueId)>,
    pub rope: Option<(ValueId, ValueId)>,
}

/// Declares the data inputs of `kind` after `x`: nothing for `Layer`/`LayerPrefill`; for
/// `LayerDecode`: (Llama) `cos`, `sin`, then `mask`, `cache.k`, `cache.v`.
pub(crate) fn declare_inputs(
    g: &mut Graph,
    cfg: &ModelConfig,
    kind: GraphKind,
    dtype: DType,
) -> Result<LayerStepInputs> {
    let GraphKind::LayerDecode { cache_len, bucket } = kind else {
        return Ok(LayerStepInputs::default());
    };
    let kv_dim = cfg.n_kv_heads * cfg.head_dim();
    let rope = match cfg.family {
        Family::Llama => {
            let ty = TensorType::new(dtype, [bucket, cfg.head_dim()]);
            Some((g.input("cos", ty.clone())?, g.input("sin", ty)?))
        }
        Family::Gpt2 => None,
    };
    let mask = g.input("mask", TensorType::new(dtype, [bucket, cache_len]))?;
    let cache_ty = TensorType::new(dtype, [cache_len, kv_dim]);
    let k = g.input("cache.k", cache_ty.clone())?;
    let v = g.input("cache.v", cache_ty)?;
    Ok(LayerStepInputs {
        mask: Some(mask),
        caches: vec![(k, v)],
        rope,
    })
}

/// Decode attention inside a bucket: records `k`, `v` `[S, kv_dim]` as outputs, attends row 0 of
/// `q [H, S, d]` to the cache rows plus row 0 of `k`, `v` `[n_kv, S, d]`, and returns `[H, S, d]` with
/// the result in row 0 and zeros below.
pub(crate) fn attend_decode(
    g: &mut Graph,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    cache: (ValueId, ValueId),
    mask: ValueId,
) -> Result<ValueId> {
    let (k_rows, v_rows) = (merge_heads(g, k)?, merge_heads(g, v)?);
    g.set_output("k", k_rows)?;
    g.set_output("v", v_rows)?;
    let bucket = g.dims(q)[1];
    let kv_heads = g.dims(k)[0];
    let q0 = g.slice_axis(q, 1, 0, 1)?;
    let k0 = g.slice_axis(k, 1, 0, 1)?;
    let v0 = g.slice_axis(v, 1, 0, 1)?;
    let cache_k = split_heads(g, cache.0, kv_heads)?;
    let cache_v = split_heads(g, cache.1, kv_heads)?;
    let mask0 = g.slice_axis(mask, 0, 0, 1)?;
    let out = super::cached_attention(g, q0, k0, v0, (cache_k, cache_v), mask0)?;
    Ok(g.pad(out, &[0, 0, 0], &[0, bucket - 1, 0], 0.0)?)
}

/// Layer `layer` on a prompt bucket of `seq_len` rows, returning `y`, `k`, `v` (weights as inputs).
pub fn build_layer_prefill(cfg: &ModelConfig, layer: usize, seq_len: usize, dtype: DType) -> Result<Graph> {
    build_layer_graph(cfg, layer, GraphKind::LayerPrefill { seq_len }, dtype)
}

/// Layer `layer`'s decode step in a bucket of `bucket` rows against a cache of `cache_len` rows.
pub fn build_layer_decode(
    cfg: &ModelConfig,
    layer: usize,
    cache_len: usize,
    bucket: usize,
    dtype: DType,
) -> Result<Graph> {
    if bucket == 0 {
        return Err(ModelError::Usage("a decode bucket has at least one row".into()));
    }
    build_layer_graph(cfg, layer, GraphKind::LayerDecode { cache_len, bucket }, dtype)
}

/// `row` (length `width`) in row 0 of a zero `[bucket, width]` tensor of `dtype`.
pub fn bucket_rows(row: &[f32], bucket: usize, dtype: DType) -> Result<Tensor> {
    let mut values = vec![0.0; bucket * row.len()];
    values[..row.len()].copy_from_slice(row);
    float_tensor(dtype, vec![bucket, row.len()], values)
}

/// The RoPE rows of `position` for a layer decode: `(cos, sin)` `[bucket, head_dim]`, row 0 only.
pub fn decode_rope_rows(cfg: &ModelConfig, position: usize, bucket: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
    let (cos, sin) = rope_tables(cfg.rope_theta, position..position + 1, cfg.head_dim());
    Ok((
        bucket_rows(&cos.to_f32_vec(), bucket, dtype)?,
        bucket_rows(&sin.to_f32_vec(), bucket, dtype)?,
    ))
}

/// The layer-decode mask `[bucket, cache_len]`: row 0 is [`super::decode_mask`] at `position`.
pub fn decode_mask_rows(cache_len: usize, position: usize, bucket: usize, dtype: DType) -> Result<Tensor> {
    let row = super::decode_mask(cache_len, position, DType::F32)?.to_f32_vec();
    bucket_rows(&row, bucket, dtype)
}

fn float_tensor(dtype: DType, dims: Vec<usize>, values: Vec<f32>) -> Result<Tensor> {
    Ok(Tensor::new(dtype, dims, TensorData::Float(values)).map_err(orion_core::CoreError::from)?)
}
