//! Composite layers built from primitive ops: norms, activations, attention, RoPE and losses.
//!
//! None of these is an `Op`: each is a function that appends primitives to a graph, so every
//! pass, the interpreter, autodiff and every backend handle them without special cases.
//! Conventions: features on the last axis; linear weights in `nn.Linear` layout `[out, in]`
//! (so `y = x · Wᵀ`); attention tensors `[heads, T, head_dim]`; constants take the dtype of the
//! tensor they combine with.

use crate::builder::composite_error;
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::op::{CompareOp, ReduceOp, UnaryOp};
use crate::tensor::Tensor;
use crate::types::{DType, TensorType};

/// Additive mask value above the diagonal. Large enough that `exp` underflows to exactly 0 in f32
/// and f16 after max subtraction, small enough to stay finite in f16 (|x| ≤ 65504) when scores are
/// added to it (ane.md §4 uses −1e4 in Orion's masks).
pub const MASK_VALUE: f32 = -1.0e4;

/// `√(2/π)`, the tanh-GELU constant.
const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh-GELU approximation.
const GELU_TANH_CUBIC: f32 = 0.044_715;

/// LayerNorm over the last axis: `(x − mean) / √(var + eps) · gamma + beta`, biased variance.
pub fn layer_norm(g: &mut Graph, x: ValueId, gamma: ValueId, beta: ValueId, eps: f32) -> Result<ValueId> {
    let mean = g.reduce(ReduceOp::Mean, x, &[-1], true)?;
    let centred = g.sub(x, mean)?;
    let squared = g.mul(centred, centred)?;
    let var = g.reduce(ReduceOp::Mean, squared, &[-1], true)?;
    let var_eps = g.add_scalar(var, eps)?;
    let inv_std = g.unary(UnaryOp::Rsqrt, var_eps)?;
    let normed = g.mul(centred, inv_std)?;
    let scaled = g.mul(normed, gamma)?;
    g.add(scaled, beta)
}

/// RMSNorm over the last axis: `x / √(mean(x²) + eps) · weight`.
pub fn rms_norm(g: &mut Graph, x: ValueId, weight: ValueId, eps: f32) -> Result<ValueId> {
    let squared = g.mul(x, x)?;
    let mean_sq = g.reduce(ReduceOp::Mean, squared, &[-1], true)?;
    let mean_sq_eps = g.add_scalar(mean_sq, eps)?;
    let inv_rms = g.unary(UnaryOp::Rsqrt, mean_sq_eps)?;
    let normed = g.mul(x, inv_rms)?;
    g.mul(normed, weight)
}

/// GELU, tanh form (GPT-2's "gelu_new"): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(g: &mut Graph, x: ValueId) -> Result<ValueId> {
    let x2 = g.mul(x, x)?;
    let x3 = g.mul(x2, x)?;
    let cubic = g.mul_scalar(x3, GELU_TANH_CUBIC)?;
    let inner = g.add(x, cubic)?;
    let scaled = g.mul_scalar(inner, GELU_TANH_SCALE)?;
    let t = g.unary(UnaryOp::Tanh, scaled)?;
    let one_plus = g.add_scalar(t, 1.0)?;
    let half_x = g.mul_scalar(x, 0.5)?;
    g.mul(half_x, one_plus)
}

/// Exact GELU: `0.5·x·(1 + erf(x/√2))`.
pub fn gelu_exact(g: &mut Graph, x: ValueId) -> Result<ValueId> {
    let scaled = g.mul_scalar(x, std::f32::consts::FRAC_1_SQRT_2)?;
    let e = g.unary(UnaryOp::Erf, scaled)?;
    let one_plus = g.add_scalar(e, 1.0)?;
    let half_x = g.mul_scalar(x, 0.5)?;
    g.mul(half_x, one_plus)
}

/// SiLU (swish): `x · sigmoid(x)`.
pub fn silu(g: &mut Graph, x: ValueId) -> Result<ValueId> {
    let s = g.unary(UnaryOp::Sigmoid, x)?;
    g.mul(x, s)
}

/// `x · Wᵀ` for `x [.., in]` and `W [out, in]`.
pub fn linear(g: &mut Graph, x: ValueId, weight: ValueId) -> Result<ValueId> {
    let dims = g.dims(x);
    if dims.len() == 2 {
        return g.matmul(x, weight, false, true);
    }
    let inner = *dims
        .last()
        .ok_or_else(|| composite_error("linear", "input must have rank >= 1".into()))?;
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let flat = g.reshape(x, &[rows, inner])?;
    let y = g.matmul(flat, weight, false, true)?;
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(g.dims(weight)[0]);
    g.reshape(y, &out_dims)
}

/// `x · Wᵀ + b` for `x [.., in]`, `W [out, in]`, `b [out]`.
pub fn linear_bias(g: &mut Graph, x: ValueId, weight: ValueId, bias: ValueId) -> Result<ValueId> {
    let y = linear(g, x, weight)?;
    g.add(y, bias)
}

/// SwiGLU feed-forward: `(silu(x·W_gateᵀ) ⊙ (x·W_upᵀ)) · W_downᵀ`, `x [T, D]`, gate/up `[H, D]`, down `[D, H]`.
pub fn swiglu(g: &mut Graph, x: ValueId, w_gate: ValueId, w_up: ValueId, w_down: ValueId) -> Result<ValueId> {
    let gate = linear(g, x, w_gate)?;
    let gate = silu(g, gate)?;
    let up = linear(g, x, w_up)?;
    let hidden = g.mul(gate, up)?;
    linear(g, hidden, w_down)
}

/// The additive causal mask `[t, t]`: 0 where key ≤ query, [`MASK_VALUE`] above the diagonal.
pub fn causal_mask(g: &mut Graph, t: usize, dtype: DType) -> Result<ValueId> {
    let mut values = vec![0.0f32; t * t];
    for query in 0..t {
        for key in query + 1..t {
            values[query * t + key] = MASK_VALUE;
        }
    }
    let data = match dtype {
        DType::F16 => Tensor::f16([t, t], values),
        _ => Tensor::f32([t, t], values),
    };
    g.constant(data)
}

/// Causal scaled dot-product attention, decomposed: `softmax(q·kᵀ/√d + mask)·v`.
///
/// `q [H, T, d]`, `k, v [H_kv, T, d]` with `H` a multiple of `H_kv` (grouped-query attention:
/// query head `h` reads key/value head `h / (H / H_kv)`, the Hugging Face `repeat_kv` order).
/// Grouped heads are handled by folding the group into the query rows, so K and V are never copied.
pub fn causal_attention(g: &mut Graph, q: ValueId, k: ValueId, v: ValueId) -> Result<ValueId> {
    let qd = g.dims(q);
    let kd = g.dims(k);
    if qd.len() != 3 || kd.len() != 3 || g.dims(v) != kd || qd[1] != kd[1] || qd[2] != kd[2] {
        return Err(composite_error(
            "causal_attention",
            format!(
                "need q [H,T,d] and k, v [H_kv,T,d]; got {:?}, {:?}, {:?}",
                qd,
                kd,
                g.dims(v)
            ),
        ));
    }
    let (heads, t, head_dim, kv_heads) = (qd[0], qd[1], qd[2], kd[0]);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(composite_error(
            "causal_attention",
            format!("{heads} query heads are not a multiple of {kv_heads} key/value heads"),
        ));
    }
    let group = heads / kv_heads;
    let q_grouped = g.reshape(q, &[kv_heads, group * t, head_dim])?;
    let scores = g.matmul(q_grouped, k, false, true)?;
    let scores = g.mul_scalar(scores, 1.0 / (head_dim as f32).sqrt())?;
    let scores = g.reshape(scores, &[kv_heads, group, t, t])?;
    let mask = causal_mask(g, t, g.dtype(q))?;
    let masked = g.add(scores, mask)?;
    let probs = g.softmax(masked, -1)?;
    let probs = g.reshape(probs, &[kv_heads, group * t, t])?;
    let out = g.matmul(probs, v, false, false)?;
    g.reshape(out, &[heads, t, head_dim])
}

/// `[T, H·d] → [H, T, d]`.
pub fn split_heads(g: &mut Graph, x: ValueId, heads: usize) -> Result<ValueId> {
    let d = g.dims(x);
    if d.len() != 2 || heads == 0 || !d[1].is_multiple_of(heads) {
        return Err(composite_error(
            "split_heads",
            format!("cannot split {d:?} into {heads} heads"),
        ));
    }
    let r = g.reshape(x, &[d[0], heads, d[1] / heads])?;
    g.transpose(r, &[1, 0, 2])
}

/// `[H, T, d] → [T, H·d]`.
pub fn merge_heads(g: &mut Graph, x: ValueId) -> Result<ValueId> {
    let d = g.dims(x);
    if d.len() != 3 {
        return Err(composite_error("merge_heads", format!("need [H,T,d], got {d:?}")));
    }
    let t = g.transpose(x, &[1, 0, 2])?;
    g.reshape(t, &[d[1], d[0] * d[2]])
}

/// Rotary position embedding, rotate-half form: `x·cos + rotate_half(x)·sin` with
/// `rotate_half([x1, x2]) = [−x2, x1]` on the last axis (the Hugging Face Llama convention; llama2.c's
/// interleaved pairs are the same rotation after a permutation of the q/k projection rows).
/// `x [.., T, d]` with even `d`; `cos, sin [T, d]` from [`rope_tables`].
pub fn rope(g: &mut Graph, x: ValueId, cos: ValueId, sin: ValueId) -> Result<ValueId> {
    let d = *g.dims(x).last().unwrap_or(&0);
    if d == 0 || !d.is_multiple_of(2) {
        return Err(composite_error(
            "rope",
            format!("head dimension {d} must be even and non-zero"),
        ));
    }
    let halves = g.split(x, -1, &[d / 2, d / 2])?;
    let neg_second = g.unary(UnaryOp::Neg, halves[1])?;
    let rotated = g.concat(&[neg_second, halves[0]], -1)?;
    let x_cos = g.mul(x, cos)?;
    let rot_sin = g.mul(rotated, sin)?;
    g.add(x_cos, rot_sin)
}

/// Cosine and sine tables `[T, d]` for [`rope`]: angle `t · θ^(−2i/d)` for `i < d/2`, repeated for
/// both halves.
pub fn rope_tables(theta: f32, positions: std::ops::Range<usize>, head_dim: usize) -> (Tensor, Tensor) {
    let half = head_dim / 2;
    let t = positions.len();
    let mut cos = Vec::with_capacity(t * head_dim);
    let mut sin = Vec::with_capacity(t * head_dim);
    for pos in positions {
        let row: Vec<f64> = (0..half)
            .map(|i| pos as f64 * (theta as f64).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|a| a.cos() as f32));
            sin.extend(row.iter().map(|a| a.sin() as f32));
        }
    }
    (Tensor::f32([t, head_dim], cos), Tensor::f32([t, head_dim], sin))
}

/// Mean cross-entropy of `logits [N, V]` against `labels` i32 `[N]` (log-softmax with max
/// subtraction). Labels outside `0..V` match no class and contribute 0: callers validate labels.
pub fn cross_entropy(g: &mut Graph, logits: ValueId, labels: ValueId) -> Result<ValueId> {
    let ld = g.dims(logits);
    if ld.len() != 2 || g.dims(labels) != [ld[0]] || g.dtype(labels) != DType::I32 {
        return Err(composite_error(
            "cross_entropy",
            format!(
                "need logits [N,V] and i32 labels [N]; got {} and {}",
                g.ty(logits),
                g.ty(labels)
            ),
        ));
    }
    let (n, vocab) = (ld[0], ld[1]);
    let max = g.reduce(ReduceOp::Max, logits, &[-1], true)?;
    let shifted = g.sub(logits, max)?;
    let exps = g.unary(UnaryOp::Exp, shifted)?;
    let sum = g.reduce(ReduceOp::Sum, exps, &[-1], true)?;
    let log_sum = g.unary(UnaryOp::Log, sum)?;
    let log_probs = g.sub(shifted, log_sum)?;
    let one_hot = one_hot(g, labels, vocab, g.dtype(logits))?;
    let picked = g.mul(log_probs, one_hot)?;
    let total = g.reduce(ReduceOp::Sum, picked, &[0, 1], false)?;
    g.mul_scalar(total, -1.0 / n as f32)
}

/// `[N] i32 → [N, V]` of 0/1 in `dtype`.
pub fn one_hot(g: &mut Graph, labels: ValueId, classes: usize, dtype: DType) -> Result<ValueId> {
    let n = g.dims(labels).iter().product::<usize>();
    let column = g.reshape(labels, &[n, 1])?;
    let iota = g.constant(Tensor::i32([1, classes], (0..classes as i32).collect()))?;
    let hits = g.compare(CompareOp::Equal, column, iota)?;
    g.cast(hits, dtype)
}

/// Declares a float input of the given shape (a convenience for block builders).
pub fn float_input(g: &mut Graph, name: &str, dtype: DType, dims: &[usize]) -> Result<ValueId> {
    g.input(name, TensorType::new(dtype, dims.to_vec()))
}
