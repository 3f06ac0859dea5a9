//! Lowerings that work around what the device rejects or runs badly (ane.md §5 "Auto" column):
//!
//! - linear layers with a baked weight → 1×1 `conv` with the weight as `[N, K, 1, 1]` when the profile's
//!   `ops.baked_linear_as_conv` says so (C41: ≈3× faster than matmul); `conv` never gets `bias=` (C13: biases stay separate `add`s, as the IR has them);
//!   a layer with ≥ 32,000 input channels stays a matmul (C27);
//! - matmul contraction extents not a multiple of `limits.ops.matmul_inner_multiple` are zero-padded on
//!   both operands (C23): constants are padded in their data, runtime operands by a `pad` op;
//! - `concat` where the chip rejects it (C09) becomes `Σ pad(piece_i)`: each piece is zero-padded to the
//!   full extent at its offset along the axis and the pieces are added. Exact (x + 0 = x) and general
//!   (any axis, any number of pieces), e.g. RoPE's rotate_half;
//! - `broadcast` (MIL has no broadcast_to the project's MIL reader runs) becomes `x + zeros` where the
//!   zeros constant has the target extent on every expanded axis and 1 elsewhere — usually a vector.
//!
//! Extents beyond the chip's caps fail with an error naming the limit (C26); callers chunk.

use std::sync::Arc;

use orion_core::{DType, Node, Op, Tensor, ValueId};

use super::emit::var;
use super::layout::{axis_shift, internal_shape};
use super::ops::Cx;
use super::weights::{fp16_exact, INLINE_MAX_ELEMENTS};
use super::WeightMode;
use crate::mil::{Argument, MilDType};

/// C27: Orion saw a 32,000-input-channel classifier conv rejected.
const CONV_MAX_INPUT_CHANNELS: usize = 32_000;
/// Swaps the last two axes.
const SWAP_LAST: [usize; 4] = [0, 1, 3, 2];

/// `pad(x)` with constant `value` and 8 widths (before/after per axis); nothing when all are 0.
pub(super) fn pad_op(
    cx: &mut Cx<'_>,
    x: &str,
    widths: &[usize; 8],
    value: f32,
    out: &[usize],
) -> Result<String, String> {
    if widths.iter().all(|&w| w == 0) {
        return Ok(x.to_string());
    }
    let widths_const = cx.em.int_vec("pad", widths);
    let mode = cx.em.string("mode", "constant");
    let fill = cx.em.fp16_scalar("pad_value", f64::from(fp16_exact(&[value])[0]));
    let args = vec![
        var("constant_val", &fill),
        var("mode", &mode),
        var("pad", &widths_const),
        var("x", x),
    ];
    cx.em.op("pad", args, MilDType::Fp16, out)
}

/// The constant tensor behind `v` when it is baked into the program: float constants, except (with
/// `WeightMode::Inputs`) the large ones, which are program inputs.
fn baked_const(cx: &Cx<'_>, v: ValueId) -> Option<Arc<Tensor>> {
    let Op::Const { value } = &cx.graph.producer(v).op else {
        return None;
    };
    let is_input = cx.mode == WeightMode::Inputs && value.numel() > INLINE_MAX_ELEMENTS;
    (value.dtype().is_float() && !is_input).then(|| Arc::clone(value))
}

/// IR `MatMul`: a 1×1 conv for a linear layer with a baked weight, else a MIL matmul with the
/// contraction padded to the chip's multiple.
pub(super) fn matmul(cx: &mut Cx<'_>, node: &Node, ta: bool, tb: bool) -> Result<String, String> {
    let (a, b) = (node.inputs[0], node.inputs[1]);
    let out = cx.shape_of(node.outputs[0])?;
    if let Some(weight) = linear_weight(cx, a, b, tb) {
        let stem = if tb {
            format!("const{}", b.0)
        } else {
            format!("const{}_t", b.0)
        };
        return linear_as_conv(cx, a, ta, &weight, &stem, out);
    }
    let mut x = cx.operand(a, false)?;
    let mut y = cx.operand(b, false)?;
    let (mut tx, mut ty) = (ta, tb);
    if tx && cx.em.transpose_is_free(&x, SWAP_LAST) {
        x = cx.em.transpose(&x, SWAP_LAST)?;
        tx = false;
    }
    if ty && cx.em.transpose_is_free(&y, SWAP_LAST) {
        y = cx.em.transpose(&y, SWAP_LAST)?;
        ty = false;
    }
    let xs = cx.em.shape4(&x)?;
    let k = if tx { xs[2] } else { xs[3] };
    let multiple = cx.profile.limits.ops.matmul_inner_multiple.max(1);
    let padded = k.div_ceil(multiple) * multiple;
    check_contraction(cx, "matmul", padded)?;
    if padded != k {
        x = pad_axis(cx, a, &x, if tx { 2 } else { 3 }, padded)?;
        y = pad_axis(cx, b, &y, if ty { 3 } else { 2 }, padded)?;
    }
    let flag_x = cx.em.bool_scalar("transpose_x", tx);
    let flag_y = cx.em.bool_scalar("transpose_y", ty);
    let args = vec![
        var("transpose_x", &flag_x),
        var("transpose_y", &flag_y),
        var("x", &x),
        var("y", &y),
    ];
    cx.em.op("matmul", args, MilDType::Fp16, &out)
}

fn check_contraction(cx: &Cx<'_>, what: &str, k: usize) -> Result<(), String> {
    let cap = cx.profile.limits.max_contraction;
    if k > cap {
        return Err(format!(
            "{what} contraction extent {k} exceeds the chip's cap of {cap} (limits.max_contraction, C26); \
             split the contraction into chunks"
        ));
    }
    Ok(())
}

/// The `[N, K]` weight of a linear layer `a · Wᵀ` that should become a 1×1 conv: baked weights only,
/// when the profile prefers conv for them (C41), `a` without batch axes, fewer than 32,000 input
/// channels (C27).
fn linear_weight(cx: &Cx<'_>, a: ValueId, b: ValueId, tb: bool) -> Option<Tensor> {
    if cx.mode != WeightMode::Baked || !cx.profile.limits.ops.baked_linear_as_conv {
        return None;
    }
    let weight = baked_const(cx, b)?;
    let dims = weight.shape().dims().to_vec();
    let a_dims = cx.graph.dims(a);
    if dims.len() != 2 || a_dims.len() < 2 || a_dims[..a_dims.len() - 2].iter().any(|&d| d != 1) {
        return None;
    }
    let (n, k) = if tb { (dims[0], dims[1]) } else { (dims[1], dims[0]) };
    if k >= CONV_MAX_INPUT_CHANNELS {
        return None;
    }
    let values = weight.to_f32_vec();
    let mut kernel = vec![0.0f32; n * k];
    for (o, row) in kernel.chunks_exact_mut(k.max(1)).enumerate() {
        for (i, slot) in row.iter_mut().enumerate() {
            *slot = if tb { values[o * k + i] } else { values[i * n + o] };
        }
    }
    Some(Tensor::f32([n, k], kernel))
}

/// `a · Wᵀ` as conv: internal `[1,1,M,K]` → `[1,K,1,M]` → conv `[N,K,1,1]` → `[1,N,1,M]` → `[1,1,M,N]`.
fn linear_as_conv(
    cx: &mut Cx<'_>,
    a: ValueId,
    ta: bool,
    weight: &Tensor,
    stem: &str,
    out: [usize; 4],
) -> Result<String, String> {
    let dims = weight.shape().dims();
    let (n, k) = (dims[0], dims[1]);
    check_contraction(cx, "conv", k)?;
    let x = cx.operand(a, false)?;
    let to_channels = if ta { [0, 2, 1, 3] } else { [0, 3, 1, 2] };
    let x = cx.em.transpose(&x, to_channels)?;
    let m = cx.em.shape4(&x)?[3];
    let kernel = cx
        .store
        .float_const(&mut cx.em, stem, &[n, k, 1, 1], &weight.to_f32_vec(), false)?;
    let y = conv(cx, &x, &kernel, [1, n, 1, m])?;
    let y = cx.em.transpose(&y, [0, 2, 3, 1])?;
    cx.em.reshape(&y, &out)
}

/// MIL `conv` with the 1×1 settings of ane.md §3 (arguments in alphabetical order, no bias, C13).
fn conv(cx: &mut Cx<'_>, x: &str, weight: &str, out: [usize; 4]) -> Result<String, String> {
    let dilations = cx.em.int_vec("dilations", &[1, 1]);
    let groups = cx.em.int_scalar("groups", 1);
    let pad = cx.em.int_vec("pad", &[0, 0, 0, 0]);
    let pad_type = cx.em.string("pad_type", "valid");
    let strides = cx.em.int_vec("strides", &[1, 1]);
    let args = vec![
        var("dilations", &dilations),
        var("groups", &groups),
        var("pad", &pad),
        var("pad_type", &pad_type),
        var("strides", &strides),
        var("weight", weight),
        var("x", x),
    ];
    cx.em.op("conv", args, MilDType::Fp16, &out)
}

/// IR `Conv1x1`: x `[1, Cin, 1, S]`, weight `[Cout, Cin, 1, 1]` (baked, or a runtime weight with
/// groups = 1, which C24 allows).
pub(super) fn conv1x1(cx: &mut Cx<'_>, node: &Node) -> Result<String, String> {
    let (x, w) = (node.inputs[0], node.inputs[1]);
    let out = cx.shape_of(node.outputs[0])?;
    let w_dims = cx.shape_of(w)?;
    check_contraction(cx, "conv", w_dims[1])?;
    let x = cx.operand(x, false)?;
    let weight = match baked_const(cx, w) {
        Some(t) => {
            let stem = format!("const{}", w.0);
            cx.store
                .float_const(&mut cx.em, &stem, &w_dims, &t.to_f32_vec(), false)?
        }
        None => cx.operand(w, false)?,
    };
    conv(cx, &x, &weight, out)
}

/// Zero-pads internal axis `axis` of operand `v` (MIL variable `current`) to `extent`: constants in
/// their data, runtime values with a `pad` op.
fn pad_axis(cx: &mut Cx<'_>, v: ValueId, current: &str, axis: usize, extent: usize) -> Result<String, String> {
    let from = cx.em.shape4(current)?;
    let mut to = from;
    to[axis] = extent;
    if let Some(t) = baked_const(cx, v).filter(|_| cx.em.shape4(current).ok() == cx.shape_of(v).ok()) {
        let values = t.to_f32_vec();
        let mut padded = vec![0.0f32; to.iter().product()];
        let inner: usize = from[axis + 1..].iter().product();
        let outer: usize = from[..axis].iter().product();
        for o in 0..outer {
            for i in 0..from[axis] * inner {
                padded[o * extent * inner + i] = values[o * from[axis] * inner + i];
            }
        }
        let stem = format!("const{}_k{extent}", v.0);
        return cx.store.float_const(&mut cx.em, &stem, &to, &padded, false);
    }
    let mut widths = [0usize; 8];
    widths[2 * axis + 1] = extent - from[axis];
    pad_op(cx, current, &widths, 0.0, &to)
}

/// IR `Concat`: MIL `concat` where the chip accepts it, else the pad-and-add rewrite (C09).
pub(super) fn concat(cx: &mut Cx<'_>, node: &Node, axis: usize) -> Result<String, String> {
    let out = cx.shape_of(node.outputs[0])?;
    let shift = axis_shift(cx.graph.rank(node.outputs[0]));
    let axis = axis + shift;
    let mut pieces = Vec::with_capacity(node.inputs.len());
    for &v in &node.inputs {
        pieces.push(cx.operand(v, false)?);
    }
    if pieces.len() == 1 {
        return Ok(pieces.remove(0));
    }
    let dtype = cx.em.dtype(&pieces[0]);
    if cx.profile.limits.ops.concat {
        let axis_const = cx.em.int_scalar("axis", axis);
        let interleave = cx.em.bool_scalar("interleave", false);
        let args = vec![
            var("axis", &axis_const),
            var("interleave", &interleave),
            ("values".to_string(), Argument::Tuple(pieces)),
        ];
        return cx.em.op("concat", args, dtype, &out);
    }
    if cx.graph.dtype(node.outputs[0]) == DType::Bool {
        return Err("concat of bool values on a chip without concat (C09) is not lowered".to_string());
    }
    let mut offset = 0;
    let mut sum: Option<String> = None;
    for piece in pieces {
        let extent = cx.em.shape4(&piece)?[axis];
        let mut widths = [0usize; 8];
        widths[2 * axis] = offset;
        widths[2 * axis + 1] = out[axis] - offset - extent;
        offset += extent;
        let padded = pad_op(cx, &piece, &widths, 0.0, &out)?;
        sum = Some(match sum {
            None => padded,
            Some(acc) => cx
                .em
                .op("add", vec![var("x", &acc), var("y", &padded)], MilDType::Fp16, &out)?,
        });
    }
    sum.ok_or_else(|| "concat of nothing".to_string())
}

/// IR `Broadcast`: `x + zeros`, the zeros shaped by the expanded axes only.
pub(super) fn broadcast(cx: &mut Cx<'_>, node: &Node) -> Result<String, String> {
    if cx.graph.dtype(node.inputs[0]) == DType::Bool {
        return Err("broadcast of bool values is not lowered (compare after broadcasting)".to_string());
    }
    let x = cx.operand(node.inputs[0], false)?;
    let from = cx.em.shape4(&x)?;
    let to = internal_shape(&cx.graph.dims(node.outputs[0]))?;
    let zeros_shape: Vec<usize> = (0..4)
        .map(|i| if from[i] == 1 && to[i] != 1 { to[i] } else { 1 })
        .collect();
    if zeros_shape.iter().all(|&d| d == 1) {
        return cx.em.reshape(&x, &to);
    }
    let count = zeros_shape.iter().product();
    let zeros = cx
        .store
        .float_const(&mut cx.em, "zeros", &zeros_shape, &vec![0.0; count], false)?;
    cx.em
        .op("add", vec![var("x", &x), var("y", &zeros)], MilDType::Fp16, &to)
}
