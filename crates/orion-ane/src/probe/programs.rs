//! The probe's programs: MIL functions built statement by statement, printed in whichever dialect the
//! probe has found to work, with their weight files, their I/O signature, their FLOPs and bytes as the
//! cost model counts them (`orion_core::flops`), and their expected outputs computed on the CPU by the
//! reference interpreter (fp16 rounding).
//!
//! Invariants: every program has one function `main`; parameters are named `a00_…`, `a01_…` and
//! returned variables `z00_…`, `z01_…` unless an experiment needs otherwise (the binding experiment), so
//! declaration order, byte order and any collation agree (C19); every non-tensor argument is a named
//! const (C12); every weight tensor lives in its own BLOBFILE at offset 64 (C03, C17) unless an
//! experiment asks for several records in one file; nothing here panics on any input.

use std::collections::HashMap;

use orion_core::flops::GraphCost;
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorData};

use crate::blob::BlobWriter;
use crate::device::WeightDict;
use crate::mil::{self, var_arg, Argument, BlobDictResolver, Dialect, Function, Literal, MilDType, MilType, Operation};
use crate::mil::{print_program, Param};

/// One parameter or returned variable of `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IoSpec {
    pub name: String,
    /// `DType::F16` or `DType::F32`.
    pub dtype: DType,
    pub dims: Vec<usize>,
}

impl IoSpec {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn dense_bytes(&self) -> usize {
        self.numel() * self.dtype.size_bytes()
    }
}

/// A program the probe compiles: `main`, its weight files and its signature.
#[derive(Debug, Clone)]
pub(super) struct ProbeProgram {
    /// Short name for reports ("concat", "extent spatial 65536").
    pub label: String,
    function: Function,
    pub weights: WeightDict,
    /// In declaration order.
    pub inputs: Vec<IoSpec>,
    /// In return-tuple order.
    pub outputs: Vec<IoSpec>,
}

impl ProbeProgram {
    /// The MIL text in `dialect` (its program version, opset and scalar spelling).
    pub fn text(&self, dialect: Dialect) -> String {
        print_program(&self.program(dialect), dialect)
    }

    fn program(&self, dialect: Dialect) -> mil::Program {
        let mut function = self.function.clone();
        function.opset = dialect.opset().to_string();
        let mut program = dialect.empty_program();
        program.functions.push(function);
        program
    }

    /// Operations other than `const` (the size measure of compile time, C42).
    pub fn op_count(&self) -> usize {
        self.function.operations.iter().filter(|op| op.op != "const").count()
    }

    /// `main` as an IR graph with the weights resolved from the program's own files.
    pub fn graph(&self) -> Result<Graph, String> {
        let files: HashMap<String, Vec<u8>> = self.weights.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let resolver = BlobDictResolver::new(files);
        mil::to_graph(&self.program(Dialect::Ios18), "main", &resolver).map_err(|e| e.to_string())
    }

    /// FLOPs and constant bytes as the cost model counts them (ane.md §8, `orion_core::flops`).
    pub fn cost(&self) -> Result<GraphCost, String> {
        self.graph().map(|g| GraphCost::of(&g))
    }

    /// The outputs (return order) the reference interpreter computes in fp16 rounding for `inputs`
    /// (declaration order).
    pub fn reference(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
        let graph = self.graph()?;
        if inputs.len() != self.inputs.len() {
            return Err(format!(
                "{} input(s) for {} parameter(s)",
                inputs.len(),
                self.inputs.len()
            ));
        }
        let tensors = self
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, values)| {
                Tensor::new(spec.dtype, spec.dims.clone(), TensorData::Float(values.clone())).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = interpret(&graph, &tensors, Precision::F16Rounding).map_err(|e| e.to_string())?;
        Ok(outputs.iter().map(Tensor::to_f32_vec).collect())
    }
}

/// Builds a [`ProbeProgram`]; a failure (a weight that cannot be written, an output that names no
/// variable) is kept and reported by [`Builder::build`].
#[derive(Debug)]
pub(super) struct Builder {
    function: Function,
    weights: WeightDict,
    inputs: Vec<IoSpec>,
    types: HashMap<String, IoSpec>,
    outputs: Vec<IoSpec>,
    error: Option<String>,
}

fn mil_dtype(dtype: DType) -> MilDType {
    match dtype {
        DType::F32 => MilDType::Fp32,
        _ => MilDType::Fp16,
    }
}

/// The MIL path of weight file `name`.
pub(super) fn weight_path(name: &str) -> String {
    format!("@model_path/weights/{name}.bin")
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            function: Function::new("main", Dialect::Ios18.opset()),
            weights: WeightDict::new(),
            inputs: Vec::new(),
            types: HashMap::new(),
            outputs: Vec::new(),
            error: None,
        }
    }

    /// An fp16 parameter.
    pub fn input(&mut self, name: &str, dims: &[usize]) -> &mut Builder {
        self.input_typed(name, DType::F16, dims)
    }

    /// A parameter of element type `dtype` (fp16 or fp32).
    pub fn input_typed(&mut self, name: &str, dtype: DType, dims: &[usize]) -> &mut Builder {
        self.function.params.push(Param {
            name: name.to_string(),
            ty: MilType::tensor(mil_dtype(dtype), dims),
        });
        let spec = IoSpec {
            name: name.to_string(),
            dtype,
            dims: dims.to_vec(),
        };
        self.types.insert(name.to_string(), spec.clone());
        self.inputs.push(spec);
        self
    }

    fn konst(&mut self, name: &str, value: Literal) -> &mut Builder {
        self.function.operations.push(Operation::constant(name, value));
        self
    }

    pub fn int(&mut self, name: &str, value: i32) -> &mut Builder {
        self.konst(name, Literal::int32(value))
    }

    pub fn ints(&mut self, name: &str, values: &[i64]) -> &mut Builder {
        self.konst(name, Literal::int32_vec(values))
    }

    pub fn boolean(&mut self, name: &str, value: bool) -> &mut Builder {
        self.konst(name, Literal::bool(value))
    }

    pub fn string(&mut self, name: &str, value: &str) -> &mut Builder {
        self.konst(name, Literal::string(value))
    }

    /// An fp16 scalar const.
    pub fn scalar(&mut self, name: &str, value: f64) -> &mut Builder {
        self.konst(name, Literal::float(MilDType::Fp16, value))
    }

    /// An fp16 weight tensor in its own file `@model_path/weights/<name>.bin` (one record, C17).
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> &mut Builder {
        self.weight_file(name, &[(name, dims, values)])
    }

    /// Several fp16 weight tensors as consecutive records of one file (`file`, C17).
    pub fn weight_file(&mut self, file: &str, tensors: &[(&str, &[usize], &[f32])]) -> &mut Builder {
        let path = weight_path(file);
        let mut writer = BlobWriter::new();
        for (name, dims, values) in tensors {
            match writer.write_fp16_from_f32(values) {
                Ok((offset, _)) => {
                    let ty = MilType::tensor(MilDType::Fp16, dims);
                    self.konst(name, Literal::blob(ty, path.clone(), offset));
                    self.types.insert(
                        name.to_string(),
                        IoSpec {
                            name: name.to_string(),
                            dtype: DType::F16,
                            dims: dims.to_vec(),
                        },
                    );
                }
                Err(e) => self.error = Some(format!("weight {name}: {e}")),
            }
        }
        self.weights.insert(path, writer.finish());
        self
    }

    /// `name = op(args)` with an fp16 result of extents `dims`; `args` pairs parameter and variable.
    pub fn op(&mut self, name: &str, dims: &[usize], op: &str, args: &[(&str, &str)]) -> &mut Builder {
        self.op_typed(name, DType::F16, dims, op, args)
    }

    /// `name = op(args)` with a result of element type `dtype`.
    pub fn op_typed(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[usize],
        op: &str,
        args: &[(&str, &str)],
    ) -> &mut Builder {
        let args = args.iter().map(|(a, v)| var_arg(a, v)).collect();
        self.push_op(name, dtype, dims, op, args)
    }

    /// `name = op(args, tuple = (vars…))` (concat's `values`).
    pub fn op_with_tuple(
        &mut self,
        name: &str,
        dims: &[usize],
        op: &str,
        tuple: (&str, &[&str]),
        args: &[(&str, &str)],
    ) -> &mut Builder {
        let mut all: Vec<(String, Argument)> = vec![(
            tuple.0.to_string(),
            Argument::Tuple(tuple.1.iter().map(|v| v.to_string()).collect()),
        )];
        all.extend(args.iter().map(|(a, v)| var_arg(a, v)));
        self.push_op(name, DType::F16, dims, op, all)
    }

    fn push_op(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[usize],
        op: &str,
        args: Vec<(String, Argument)>,
    ) -> &mut Builder {
        let ty = MilType::tensor(mil_dtype(dtype), dims);
        self.function.operations.push(Operation::new(name, ty, op, args));
        self.types.insert(
            name.to_string(),
            IoSpec {
                name: name.to_string(),
                dtype,
                dims: dims.to_vec(),
            },
        );
        self
    }

    /// Appends `name` to the returned tuple.
    pub fn output(&mut self, name: &str) -> &mut Builder {
        match self.types.get(name) {
            Some(spec) => {
                self.function.outputs.push(name.to_string());
                self.outputs.push(spec.clone());
            }
            None => self.error = Some(format!("output {name:?} names no variable")),
        }
        self
    }

    /// The finished program called `label`.
    pub fn build(&mut self, label: &str) -> Result<ProbeProgram, String> {
        if let Some(e) = self.error.take() {
            return Err(format!("{label}: {e}"));
        }
        Ok(ProbeProgram {
            label: label.to_string(),
            function: self.function.clone(),
            weights: self.weights.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        })
    }
}

/// `x + x` over an fp16 `[1, 1, 1, n]`: the smallest program, used wherever only the device's handling
/// of a request matters (dialect, surface sizes, timing of the fixed costs, the compile budget).
pub(super) fn doubling(n: usize) -> Result<ProbeProgram, String> {
    Builder::new()
        .input("a00_x", &[1, 1, 1, n])
        .op("z00_y", &[1, 1, 1, n], "add", &[("x", "a00_x"), ("y", "a00_x")])
        .output("z00_y")
        .build("x + x")
}

/// Adds the named consts of a 1×1, stride-1, unpadded, ungrouped conv (used with [`CONV_ARGS`]).
pub(super) fn conv_consts(b: &mut Builder) -> &mut Builder {
    b.string("c_pt", "valid")
        .ints("c_st", &[1, 1])
        .ints("c_pd", &[0, 0, 0, 0])
        .ints("c_dl", &[1, 1])
        .int("c_gr", 1)
}

/// The conv arguments naming the consts of [`conv_consts`].
pub(super) const CONV_ARGS: [(&str, &str); 5] = [
    ("dilations", "c_dl"),
    ("groups", "c_gr"),
    ("pad", "c_pd"),
    ("pad_type", "c_pt"),
    ("strides", "c_st"),
];

/// A 1×1 conv of `a00_x [1, 32, 1, 64]` with an `[8, 32, 1, 1]` weight `w` (its own file) and, when
/// given, a bias `b [8]` passed as `bias=`.
pub(super) fn conv_program(weight: &[f32], bias: Option<&[f32]>) -> Result<ProbeProgram, String> {
    let mut b = Builder::new();
    b.input("a00_x", &[1, 32, 1, 64]).weight("w", &[8, 32, 1, 1], weight);
    conv_consts(&mut b);
    let mut args = CONV_ARGS.to_vec();
    args.push(("weight", "w"));
    args.push(("x", "a00_x"));
    if let Some(values) = bias {
        b.weight("b", &[8], values);
        args.push(("bias", "b"));
    }
    b.op("z00_y", &[1, 8, 1, 64], "conv", &args)
        .output("z00_y")
        .build("conv")
}

/// Deterministic, fp16-exact test values in [-scale·8, scale·8].
pub(super) fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i % 17) as f32 - 8.0) * scale).collect()
}
