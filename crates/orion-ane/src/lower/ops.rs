//! The lowering driver and one emitter per IR op.
//!
//! Order of work: find the live values (nodes whose results feed no output are skipped, so a dead
//! CPU-only op does not block the program); declare the inputs (live graph inputs in declaration order,
//! then — with `WeightMode::Inputs` — every live float constant of more than a few elements), each
//! converted from its surface layout to the internal rank-4 layout; emit the nodes in graph order; name
//! the outputs after converting them back to their surface layout.
//!
//! Every `Op` variant is listed in [`emit_node`]: accepted ops emit MIL, the others fail with a message
//! saying where they run instead (C31; `docs/ANE_OPS.md`). Constants are materialised lazily at their
//! first use, so a weight only used as a 1×1-conv kernel is written once, in kernel layout.

use std::collections::BTreeMap;

use orion_core::{BinaryOp, CompareOp, DType, Graph, Node, Op, ReduceOp, TensorType, UnaryOp, ValueId};

use super::emit::{var, Caps, Emitter};
use super::layout::{
    axis_shift, index_width, internal_shape, io_desc, io_name, size_surfaces, INTERNAL_TO_SURFACE, SURFACE_TO_INTERNAL,
};
use super::weights::{bool_const, WeightStore, INLINE_MAX_ELEMENTS};
use super::{lower_error, workarounds, IoDesc, IoLayout, WeightMode};
use crate::error::AneError;
use crate::mil::{Function, MilDType};
use crate::profile::ChipProfile;

/// What [`lower_graph`] produces; `super::lower` wraps it into an `EmittedProgram`.
#[derive(Debug)]
pub(super) struct Lowered {
    pub function: Function,
    pub weights: BTreeMap<String, Vec<u8>>,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
}

/// Lowering state of one graph.
#[derive(Debug)]
pub(super) struct Cx<'a> {
    pub graph: &'a Graph,
    pub profile: &'a ChipProfile,
    pub mode: WeightMode,
    pub em: Emitter,
    pub store: WeightStore,
    /// MIL variable holding each IR value in the internal rank-4 layout, once emitted.
    vars: Vec<Option<String>>,
}

/// Lowers `graph` into one MIL function `main` with surfaces of `io_dtype` (F16 or F32).
pub(super) fn lower_graph(
    graph: &Graph,
    profile: &ChipProfile,
    mode: WeightMode,
    io_dtype: DType,
    opset: &str,
) -> Result<Lowered, AneError> {
    let caps = Caps {
        max_spatial: profile.limits.max_spatial,
        max_channels: profile.limits.max_channels,
    };
    let mut cx = Cx {
        graph,
        profile,
        mode,
        em: Emitter::new("main", opset, caps),
        store: WeightStore::default(),
        vars: vec![None; graph.values().len()],
    };
    let live = live_values(graph);
    for node in graph
        .nodes()
        .iter()
        .filter(|n| n.outputs.iter().any(|v| live[v.index()]))
    {
        refusal(graph, node).map_err(|m| node_error(graph, node, &m))?;
    }
    let mut inputs = declare_inputs(&mut cx, &live, io_dtype)?;
    for node in graph.nodes() {
        let skip = matches!(node.op, Op::Input { .. } | Op::Const { .. });
        if skip || !node.outputs.iter().any(|v| live[v.index()]) {
            continue;
        }
        let vars = emit_node(&mut cx, node).map_err(|m| node_error(graph, node, &m))?;
        for (v, name) in node.outputs.iter().zip(vars) {
            cx.vars[v.index()] = Some(name);
        }
    }
    let (mut outputs, named) = declare_outputs(&mut cx, io_dtype)?;
    let function = cx.em.finish(&named).map_err(|m| lower_error(graph, m))?;
    size_surfaces(&mut inputs, &profile.limits);
    size_surfaces(&mut outputs, &profile.limits);
    Ok(Lowered {
        function,
        weights: cx.store.into_files(),
        inputs,
        outputs,
    })
}

/// `live[v]`: value `v` feeds some graph output.
fn live_values(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.values().len()];
    for o in graph.outputs() {
        live[o.value.index()] = true;
    }
    for node in graph.nodes().iter().rev() {
        if node.outputs.iter().any(|v| live[v.index()]) {
            for v in &node.inputs {
                live[v.index()] = true;
            }
        }
    }
    live
}

/// The MIL element type of a surface.
fn surface_mil_dtype(io_dtype: DType) -> MilDType {
    match io_dtype {
        DType::F32 => MilDType::Fp32,
        DType::F16 | DType::I32 | DType::Bool => MilDType::Fp16,
    }
}

/// Fails unless an I/O tensor can live on a surface (float, rank ≤ 4, not empty).
fn check_io_type(graph: &Graph, what: &str, name: &str, ty: &TensorType) -> Result<(), AneError> {
    let problem = if !ty.dtype.is_float() {
        Some(format!(
            "{} surfaces are not supported (C31: no int32/bool I/O); the ops using it run on the CPU instead",
            ty.dtype.name()
        ))
    } else if ty.shape.numel() == 0 {
        Some("empty tensors have no surface".to_string())
    } else {
        internal_shape(ty.shape.dims()).err()
    };
    match problem {
        Some(p) => Err(lower_error(graph, format!("{what} {name:?} ({ty}): {p}"))),
        None => Ok(()),
    }
}

fn declare_inputs(cx: &mut Cx<'_>, live: &[bool], io_dtype: DType) -> Result<Vec<IoDesc>, AneError> {
    let graph = cx.graph;
    let mut entries: Vec<(String, ValueId, TensorType)> = graph
        .inputs()
        .filter(|(_, v, _)| live[v.index()])
        .map(|(name, v, ty)| (name.to_string(), v, ty.clone()))
        .collect();
    if cx.mode == WeightMode::Inputs {
        for node in graph.nodes() {
            if let Op::Const { value } = &node.op {
                let v = node.outputs[0];
                if live[v.index()] && value.dtype().is_float() && value.numel() > INLINE_MAX_ELEMENTS {
                    entries.push((format!("{v}"), v, value.ty()));
                }
            }
        }
    }
    let width = index_width(entries.len());
    let mut descs = Vec::with_capacity(entries.len());
    for (index, (ir_name, v, ty)) in entries.into_iter().enumerate() {
        check_io_type(graph, "input", &ir_name, &ty)?;
        let label = match ir_name.strip_prefix('%') {
            Some(id) => format!("const{id}"),
            None => ir_name.clone(),
        };
        let desc = io_desc(&ir_name, &io_name('a', index, width, &label), &ty, io_dtype);
        let internal = bind_input(cx, &desc).map_err(|m| lower_error(graph, format!("input {ir_name:?}: {m}")))?;
        cx.vars[v.index()] = Some(internal);
        descs.push(desc);
    }
    Ok(descs)
}

/// Declares the parameter of `desc` and returns the variable holding it in the internal layout.
fn bind_input(cx: &mut Cx<'_>, desc: &IoDesc) -> Result<String, String> {
    let param = cx
        .em
        .param(&desc.mil_name, surface_mil_dtype(desc.surface_dtype), &desc.mil_shape)?;
    let fp16 = if desc.surface_dtype == DType::F32 {
        cast(cx, &param, "fp16", MilDType::Fp16)?
    } else {
        param
    };
    match desc.layout {
        IoLayout::ChannelMajor { .. } => cx.em.transpose(&fp16, SURFACE_TO_INTERNAL),
        IoLayout::Flat => cx.em.reshape(&fp16, &internal_shape(desc.ir_type.shape.dims())?),
    }
}

/// `cast(x, dtype)` to the named MIL type.
fn cast(cx: &mut Cx<'_>, x: &str, dtype_name: &str, dtype: MilDType) -> Result<String, String> {
    let d = cx.em.string("dtype", dtype_name);
    let shape = cx.em.shape(x);
    cx.em.op("cast", vec![var("dtype", &d), var("x", x)], dtype, &shape)
}

/// `(variable, output name)` pairs for [`Emitter::finish`].
type NamedOutputs = Vec<(String, String)>;

/// Converts every graph output to its surface layout; returns the descriptions and the names.
fn declare_outputs(cx: &mut Cx<'_>, io_dtype: DType) -> Result<(Vec<IoDesc>, NamedOutputs), AneError> {
    let graph = cx.graph;
    let width = index_width(graph.outputs().len());
    let mut descs = Vec::new();
    let mut named = Vec::new();
    for (index, out) in graph.outputs().iter().enumerate() {
        let ty = graph.ty(out.value).clone();
        check_io_type(graph, "output", &out.name, &ty)?;
        let desc = io_desc(&out.name, &io_name('z', index, width, &out.name), &ty, io_dtype);
        let at = |m: String| lower_error(graph, format!("output {:?}: {m}", out.name));
        let internal = cx.operand(out.value, false).map_err(at)?;
        let surface = match desc.layout {
            IoLayout::ChannelMajor { .. } => cx.em.transpose(&internal, INTERNAL_TO_SURFACE),
            IoLayout::Flat => cx.em.reshape(&internal, &desc.mil_shape),
        }
        .map_err(at)?;
        let surface = if io_dtype == DType::F32 {
            cast(cx, &surface, "fp32", MilDType::Fp32).map_err(at)?
        } else {
            surface
        };
        named.push((surface, desc.mil_name.clone()));
        descs.push(desc);
    }
    Ok((descs, named))
}

impl Cx<'_> {
    /// The MIL variable of IR value `v` in the internal layout; constants are materialised here (as an
    /// fp16/bool scalar when `scalar_ok` and the constant has one element, which broadcasts exactly
    /// like its rank-4 form against a rank-4 operand).
    pub fn operand(&mut self, v: ValueId, scalar_ok: bool) -> Result<String, String> {
        if let Some(name) = &self.vars[v.index()] {
            return Ok(name.clone());
        }
        let graph = self.graph;
        let Op::Const { value } = &graph.producer(v).op else {
            return Err(format!("internal: {v} is used before it is lowered"));
        };
        let shape = internal_shape(value.shape().dims())?;
        let stem = format!("const{}", v.0);
        let scalar = scalar_ok && value.numel() == 1;
        let name = match value.dtype() {
            DType::F32 | DType::F16 => {
                self.store
                    .float_const(&mut self.em, &stem, &shape, &value.to_f32_vec(), scalar)?
            }
            DType::Bool => bool_const(&mut self.em, &stem, &shape, value.as_bool().unwrap_or(&[]), scalar)?,
            DType::I32 => return Err(cpu_only("an int32 constant", "the ANE has no int32 compute")),
        };
        if !scalar {
            self.vars[v.index()] = Some(name.clone());
        }
        Ok(name)
    }

    /// True when `v` is a constant with exactly one element.
    pub fn is_scalar_const(&self, v: ValueId) -> bool {
        matches!(&self.graph.producer(v).op, Op::Const { value } if value.numel() == 1)
    }

    /// The internal rank-4 shape of IR value `v`.
    pub fn shape_of(&self, v: ValueId) -> Result<[usize; 4], String> {
        internal_shape(self.graph.ty(v).shape.dims())
    }
}

/// The message for an op the ANE cannot run.
pub(super) fn cpu_only(what: &str, why: &str) -> String {
    format!(
        "{what} cannot run on the ANE ({why}, C31); it runs on the CPU instead — partition it out of \
         the ANE program (docs/ANE_OPS.md)"
    )
}

/// An error about `node`, naming its result, op and operand types.
fn node_error(graph: &Graph, node: &Node, message: &str) -> AneError {
    let operands: Vec<String> = node.inputs.iter().map(|v| format!("{v}: {}", graph.ty(*v))).collect();
    let results: Vec<String> = node.outputs.iter().map(|v| v.to_string()).collect();
    lower_error(
        graph,
        format!(
            "{} = {}({}): {message}",
            results.join(", "),
            node.op.name(),
            operands.join(", ")
        ),
    )
}

/// Fails when `node` cannot run on the ANE at all (C31): gather, scatter, int32 compute, casts to
/// int32 or bool. Checked for every live node before anything is emitted, so the error names the op
/// rather than a surface it would need.
fn refusal(graph: &Graph, node: &Node) -> Result<(), String> {
    match &node.op {
        Op::Gather => {
            return Err(cpu_only(
                "gather (embedding lookup)",
                "the ANE has no gather on this path",
            ))
        }
        Op::ScatterAddRows { .. } => {
            return Err(cpu_only(
                "scatter_add_rows (embedding gradient)",
                "the ANE has no scatter",
            ))
        }
        Op::Cast { to } => {
            let from = graph.dtype(node.inputs[0]);
            if matches!(to, DType::I32 | DType::Bool) && from != *to || from == DType::I32 {
                return Err(cpu_only(
                    &format!("cast {} -> {}", from.name(), to.name()),
                    "the ANE computes in fp16 and has no int32 or bool casts",
                ));
            }
        }
        Op::Input { .. } | Op::Const { .. } => return Ok(()),
        Op::MatMul { .. }
        | Op::Conv1x1
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Pad { .. }
        | Op::Broadcast { .. }
        | Op::Select
        | Op::Identity => {}
    }
    let int = node
        .inputs
        .iter()
        .chain(&node.outputs)
        .any(|v| graph.ty(*v).dtype == DType::I32);
    if int {
        return Err(cpu_only(
            &format!("{} on int32 values", node.op.name()),
            "the ANE has no int32 compute",
        ));
    }
    Ok(())
}

/// Emits `node` and returns the MIL variables of its results, in order.
fn emit_node(cx: &mut Cx<'_>, node: &Node) -> Result<Vec<String>, String> {
    let graph = cx.graph;
    for v in &node.outputs {
        internal_shape(graph.ty(*v).shape.dims()).map_err(|m| format!("value {v}: {m}"))?;
    }
    let one = |r: Result<String, String>| r.map(|v| vec![v]);
    match &node.op {
        Op::Input { .. } | Op::Const { .. } => Ok(Vec::new()),
        Op::Gather => Err(cpu_only(
            "gather (embedding lookup)",
            "the ANE has no gather on this path",
        )),
        Op::ScatterAddRows { .. } => Err(cpu_only(
            "scatter_add_rows (embedding gradient)",
            "the ANE has no scatter",
        )),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => one(workarounds::matmul(cx, node, *transpose_a, *transpose_b)),
        Op::Conv1x1 => one(workarounds::conv1x1(cx, node)),
        Op::Unary(u) => one(unary(cx, node, *u)),
        Op::Binary(b) => one(binary(cx, node, binary_name(*b), MilDType::Fp16)),
        Op::Compare(c) => one(binary(cx, node, compare_name(*c), MilDType::Bool)),
        Op::Softmax { axis } => one(softmax(cx, node, *axis)),
        Op::Reduce { op, axes, .. } => {
            // Reduced with keep_dims and reshaped: the rank stays 4 inside the program.
            one(reduce(cx, node, *op, axes))
        }
        Op::Reshape { .. } => {
            let x = cx.operand(node.inputs[0], false)?;
            let shape = cx.shape_of(node.outputs[0])?;
            one(cx.em.reshape(&x, &shape))
        }
        Op::Transpose { perm } => one(transpose(cx, node, perm)),
        Op::Slice { begin, end } => {
            let x = cx.operand(node.inputs[0], false)?;
            one(slice(cx, &x, node.outputs[0], begin, end))
        }
        Op::Concat { axis } => one(workarounds::concat(cx, node, *axis)),
        Op::Split { axis, sizes } => split(cx, node, *axis, sizes),
        Op::Pad { before, after, value } => one(pad(cx, node, before, after, *value)),
        Op::Broadcast { .. } => one(workarounds::broadcast(cx, node)),
        Op::Cast { to } => one(cast_op(cx, node, *to)),
        Op::Select => one(select(cx, node)),
        Op::Identity => one(cx.operand(node.inputs[0], false)),
    }
}

fn binary_name(b: BinaryOp) -> &'static str {
    match b {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "real_div",
        BinaryOp::Maximum => "maximum",
        BinaryOp::Minimum => "minimum",
        BinaryOp::Pow => "pow",
    }
}

fn compare_name(c: CompareOp) -> &'static str {
    match c {
        CompareOp::Equal => "equal",
        CompareOp::Less => "less",
        CompareOp::LessEqual => "less_equal",
        CompareOp::Greater => "greater",
        CompareOp::GreaterEqual => "greater_equal",
    }
}

/// `op(x, y)`; a one-element constant operand becomes a scalar unless the other one is one too.
fn binary(cx: &mut Cx<'_>, node: &Node, op: &str, dtype: MilDType) -> Result<String, String> {
    let (a, b) = (node.inputs[0], node.inputs[1]);
    let x = cx.operand(a, true)?;
    let y = cx.operand(b, !cx.is_scalar_const(a))?;
    let shape = cx.shape_of(node.outputs[0])?;
    cx.em.op(op, vec![var("x", &x), var("y", &y)], dtype, &shape)
}

fn unary(cx: &mut Cx<'_>, node: &Node, u: UnaryOp) -> Result<String, String> {
    let x = cx.operand(node.inputs[0], false)?;
    let shape = cx.shape_of(node.outputs[0])?;
    let native = match u {
        UnaryOp::Exp => "exp",
        UnaryOp::Log => "log",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Rsqrt => "rsqrt",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Relu => "relu",
        UnaryOp::Erf => "erf",
        // Native from M3 on; the constraint lint rejects them on earlier chips (C31).
        UnaryOp::Sin => "sin",
        UnaryOp::Cos => "cos",
        // MIL has no negation.
        UnaryOp::Neg => {
            let minus_one = cx.em.fp16_scalar("minus_one", -1.0);
            return cx
                .em
                .op("mul", vec![var("x", &x), var("y", &minus_one)], MilDType::Fp16, &shape);
        }
        // MIL `inverse` adds epsilon = 1e-4 by default; `1 / x` is exact (mil/to_graph).
        UnaryOp::Reciprocal => {
            let one = cx.em.fp16_scalar("one", 1.0);
            return cx
                .em
                .op("real_div", vec![var("x", &one), var("y", &x)], MilDType::Fp16, &shape);
        }
    };
    cx.em.op(native, vec![var("x", &x)], MilDType::Fp16, &shape)
}

fn softmax(cx: &mut Cx<'_>, node: &Node, axis: usize) -> Result<String, String> {
    let x = cx.operand(node.inputs[0], false)?;
    let shift = axis_shift(cx.graph.rank(node.inputs[0]));
    let a = cx.em.int_scalar("axis", axis + shift);
    let shape = cx.shape_of(node.outputs[0])?;
    cx.em
        .op("softmax", vec![var("axis", &a), var("x", &x)], MilDType::Fp16, &shape)
}

/// Reduces with `keep_dims = true` (rank stays 4), then reshapes to the internal result shape.
fn reduce(cx: &mut Cx<'_>, node: &Node, op: ReduceOp, axes: &[usize]) -> Result<String, String> {
    let x = cx.operand(node.inputs[0], false)?;
    if axes.is_empty() {
        return Ok(x);
    }
    let shift = axis_shift(cx.graph.rank(node.inputs[0]));
    let mut kept = cx.em.shape4(&x)?;
    let shifted: Vec<usize> = axes.iter().map(|a| a + shift).collect();
    for &a in &shifted {
        if let Some(extent) = kept.get_mut(a) {
            *extent = 1;
        }
    }
    let axes_const = cx.em.int_vec("axes", &shifted);
    let keep = cx.em.bool_scalar("keep_dims", true);
    let name = match op {
        ReduceOp::Sum => "reduce_sum",
        ReduceOp::Mean => "reduce_mean",
        ReduceOp::Max => "reduce_max",
    };
    let args = vec![var("axes", &axes_const), var("keep_dims", &keep), var("x", &x)];
    let reduced = cx.em.op(name, args, MilDType::Fp16, &kept)?;
    let shape = cx.shape_of(node.outputs[0])?;
    cx.em.reshape(&reduced, &shape)
}

fn transpose(cx: &mut Cx<'_>, node: &Node, perm: &[usize]) -> Result<String, String> {
    let x = cx.operand(node.inputs[0], false)?;
    let shift = axis_shift(perm.len());
    let mut full = [0, 1, 2, 3];
    for (i, &p) in perm.iter().enumerate() {
        full[i + shift] = p + shift;
    }
    cx.em.transpose(&x, full)
}

/// `slice_by_index` of `x` to the block of IR value `out` given by IR `begin`/`end`.
fn slice(cx: &mut Cx<'_>, x: &str, out: ValueId, begin: &[usize], end: &[usize]) -> Result<String, String> {
    let from = cx.em.shape4(x)?;
    let shift = axis_shift(begin.len());
    let mut b = [0usize; 4];
    let mut e = from;
    if begin.len() != end.len() || shift + begin.len() != 4 {
        return Err(format!(
            "internal: slice bounds {begin:?}..{end:?} do not match rank {}",
            4 - shift
        ));
    }
    b[shift..].copy_from_slice(begin);
    e[shift..].copy_from_slice(end);
    if b == [0; 4] && e == from {
        return Ok(x.to_string());
    }
    let begin_const = cx.em.int_vec("begin", &b);
    let end_const = cx.em.int_vec("end", &e);
    let shape = cx.shape_of(out)?;
    let dtype = cx.em.dtype(x);
    let args = vec![var("begin", &begin_const), var("end", &end_const), var("x", x)];
    cx.em.op("slice_by_index", args, dtype, &shape)
}

fn split(cx: &mut Cx<'_>, node: &Node, axis: usize, sizes: &[usize]) -> Result<Vec<String>, String> {
    let x = cx.operand(node.inputs[0], false)?;
    let dims = cx.graph.dims(node.inputs[0]);
    let mut start = 0;
    let mut pieces = Vec::with_capacity(sizes.len());
    for (&size, &out) in sizes.iter().zip(&node.outputs) {
        let mut begin = vec![0; dims.len()];
        let mut end = dims.clone();
        begin[axis] = start;
        end[axis] = start + size;
        pieces.push(slice(cx, &x, out, &begin, &end)?);
        start += size;
    }
    Ok(pieces)
}

fn pad(cx: &mut Cx<'_>, node: &Node, before: &[usize], after: &[usize], value: f32) -> Result<String, String> {
    let x = cx.operand(node.inputs[0], false)?;
    let shift = axis_shift(before.len());
    let mut widths = [0usize; 8];
    for i in 0..before.len().min(after.len()) {
        widths[2 * (i + shift)] = before[i];
        widths[2 * (i + shift) + 1] = after[i];
    }
    let shape = cx.shape_of(node.outputs[0])?;
    if cx.graph.dtype(node.inputs[0]) == DType::Bool {
        return Err("padding bool values is not lowered (pad a float mask instead)".to_string());
    }
    workarounds::pad_op(cx, &x, &widths, value, &shape)
}

fn cast_op(cx: &mut Cx<'_>, node: &Node, to: DType) -> Result<String, String> {
    let from = cx.graph.dtype(node.inputs[0]);
    match (from, to) {
        (DType::F32 | DType::F16, DType::F32 | DType::F16) => cx.operand(node.inputs[0], false),
        (DType::Bool, DType::F32 | DType::F16) => {
            let x = cx.operand(node.inputs[0], false)?;
            cast(cx, &x, "fp16", MilDType::Fp16)
        }
        (DType::Bool, DType::Bool) => cx.operand(node.inputs[0], false),
        // Refused by `refusal` before emission.
        (_, DType::I32 | DType::Bool) | (DType::I32, _) => Err(format!("cast {} -> {}", from.name(), to.name())),
    }
}

fn select(cx: &mut Cx<'_>, node: &Node) -> Result<String, String> {
    let cond = cx.operand(node.inputs[0], false)?;
    let a = cx.operand(node.inputs[1], true)?;
    let b = cx.operand(node.inputs[2], true)?;
    let shape = cx.shape_of(node.outputs[0])?;
    let dtype = match cx.graph.dtype(node.outputs[0]) {
        DType::Bool => MilDType::Bool,
        DType::F32 | DType::F16 | DType::I32 => MilDType::Fp16,
    };
    let args = vec![var("a", &a), var("b", &b), var("cond", &cond)];
    cx.em.op("select", args, dtype, &shape)
}
