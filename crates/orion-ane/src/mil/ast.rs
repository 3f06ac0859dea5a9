//! The MIL program model: what a MIL text says, independent of how it is spelled.
//!
//! Invariants and conventions:
//! - The model is dialect-free. A rank-0 tensor type is the one representation of MIL's scalar types:
//!   `fp16` (ios18 shorthand) and `tensor<fp16, []>` (ios16 verbose) both parse to
//!   `MilType::Tensor { dtype: Fp16, shape: [] }`, and the printer picks the spelling from a
//!   [`Dialect`](super::Dialect). Likewise `string("x")` and `tensor<string, []>("x")` are one literal.
//! - Everything is stored in source order (parameters, operations, arguments, attributes, buildInfo
//!   entries), so printing is deterministic and a parsed program prints back in the same order.
//! - Source lines (`Operation::line`, `Function::line`) locate diagnostics only; they do not take part in
//!   equality, so `parse(print(p)) == p` holds for programs built in memory (line 0 = not from text).
//! - Floats are kept as `f64` (every fp16/fp32 value is exact in it); integers as `i64`.

use std::fmt;

/// An element type as MIL names it (`fp16`, `int32`, `string`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MilDType {
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    Int4,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint1,
    Uint2,
    Uint3,
    Uint4,
    Uint6,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Bool,
    String,
}

impl MilDType {
    /// Every element type, in the order used by generators and tables.
    pub const ALL: [MilDType; 20] = [
        MilDType::Fp16,
        MilDType::Fp32,
        MilDType::Fp64,
        MilDType::Bf16,
        MilDType::Int4,
        MilDType::Int8,
        MilDType::Int16,
        MilDType::Int32,
        MilDType::Int64,
        MilDType::Uint1,
        MilDType::Uint2,
        MilDType::Uint3,
        MilDType::Uint4,
        MilDType::Uint6,
        MilDType::Uint8,
        MilDType::Uint16,
        MilDType::Uint32,
        MilDType::Uint64,
        MilDType::Bool,
        MilDType::String,
    ];

    /// The MIL spelling.
    pub fn name(self) -> &'static str {
        match self {
            MilDType::Fp16 => "fp16",
            MilDType::Fp32 => "fp32",
            MilDType::Fp64 => "fp64",
            MilDType::Bf16 => "bf16",
            MilDType::Int4 => "int4",
            MilDType::Int8 => "int8",
            MilDType::Int16 => "int16",
            MilDType::Int32 => "int32",
            MilDType::Int64 => "int64",
            MilDType::Uint1 => "uint1",
            MilDType::Uint2 => "uint2",
            MilDType::Uint3 => "uint3",
            MilDType::Uint4 => "uint4",
            MilDType::Uint6 => "uint6",
            MilDType::Uint8 => "uint8",
            MilDType::Uint16 => "uint16",
            MilDType::Uint32 => "uint32",
            MilDType::Uint64 => "uint64",
            MilDType::Bool => "bool",
            MilDType::String => "string",
        }
    }

    /// Parses a name written by [`MilDType::name`].
    pub fn from_name(name: &str) -> Option<MilDType> {
        MilDType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, MilDType::Fp16 | MilDType::Fp32 | MilDType::Fp64 | MilDType::Bf16)
    }

    /// True for the signed and unsigned integer types.
    pub fn is_integer(self) -> bool {
        !self.is_float() && !matches!(self, MilDType::Bool | MilDType::String)
    }
}

impl fmt::Display for MilDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One extent of a tensor type: a number, or `?` for a dimension fixed only at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Unknown,
}

/// The type of a MIL value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MilType {
    /// `tensor<dtype, [d0, d1, …]>`; rank 0 is a scalar (`fp16` in the ios18 shorthand).
    Tensor { dtype: MilDType, shape: Vec<Dim> },
    /// `dict<K, V>` (buildInfo and function attributes).
    Dict { key: Box<MilType>, value: Box<MilType> },
    /// `tuple<A, B, …>` (function attributes such as `FlexibleShapeInformation`).
    Tuple(Vec<MilType>),
    /// `state<T>` (ios18 stateful parameters such as KV caches).
    State(Box<MilType>),
}

impl MilType {
    /// A tensor type with known extents.
    pub fn tensor(dtype: MilDType, dims: &[usize]) -> MilType {
        MilType::Tensor {
            dtype,
            shape: dims.iter().map(|&d| Dim::Known(d)).collect(),
        }
    }

    /// A scalar (rank-0 tensor) type.
    pub fn scalar(dtype: MilDType) -> MilType {
        MilType::Tensor {
            dtype,
            shape: Vec::new(),
        }
    }

    /// The dict type of `buildInfo`: `dict<string, string>`.
    pub fn string_dict() -> MilType {
        MilType::Dict {
            key: Box::new(MilType::scalar(MilDType::String)),
            value: Box::new(MilType::scalar(MilDType::String)),
        }
    }

    /// Element type and known extents of a tensor type; `None` for other types or a `?` extent.
    pub fn known_tensor(&self) -> Option<(MilDType, Vec<usize>)> {
        match self {
            MilType::Tensor { dtype, shape } => {
                let dims = shape
                    .iter()
                    .map(|d| match d {
                        Dim::Known(n) => Some(*n),
                        Dim::Unknown => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some((*dtype, dims))
            }
            MilType::Dict { .. } | MilType::Tuple(_) | MilType::State(_) => None,
        }
    }
}

/// The payload of a typed literal, written inside `TYPE( … )`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    /// An integer written without a decimal point or exponent.
    Int(i64),
    /// A number written with a decimal point, exponent, in hex-float form, or `inf`/`nan`.
    Float(f64),
    Str(String),
    /// `[a, b, …]`, possibly nested (`[[0, 1], [2, 3]]`).
    List(Vec<Value>),
    /// `(a, b, …)`.
    Tuple(Vec<Value>),
    /// `{{k, v}, …}`.
    Dict(Vec<(Value, Value)>),
    /// `BLOBFILE(path = string("…"), offset = uint64(N))`: `offset` is the record's metadata offset.
    Blob {
        path: String,
        offset: u64,
    },
}

/// A typed literal such as `int32(-1)`, `tensor<int32, [2]>([1, 1])` or a BLOBFILE weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub ty: MilType,
    pub value: Value,
}

impl Literal {
    /// A string scalar (`string("x")`).
    pub fn string(s: impl Into<String>) -> Literal {
        Literal {
            ty: MilType::scalar(MilDType::String),
            value: Value::Str(s.into()),
        }
    }

    /// A bool scalar.
    pub fn bool(b: bool) -> Literal {
        Literal {
            ty: MilType::scalar(MilDType::Bool),
            value: Value::Bool(b),
        }
    }

    /// An int32 scalar.
    pub fn int32(v: i32) -> Literal {
        Literal {
            ty: MilType::scalar(MilDType::Int32),
            value: Value::Int(i64::from(v)),
        }
    }

    /// A float scalar of the given float dtype.
    pub fn float(dtype: MilDType, v: f64) -> Literal {
        Literal {
            ty: MilType::scalar(dtype),
            value: Value::Float(v),
        }
    }

    /// A rank-1 int32 tensor (`tensor<int32, [n]>([…])`).
    pub fn int32_vec(values: &[i64]) -> Literal {
        Literal {
            ty: MilType::tensor(MilDType::Int32, &[values.len()]),
            value: Value::List(values.iter().map(|&v| Value::Int(v)).collect()),
        }
    }

    /// A rank-1 bool tensor.
    pub fn bool_vec(values: &[bool]) -> Literal {
        Literal {
            ty: MilType::tensor(MilDType::Bool, &[values.len()]),
            value: Value::List(values.iter().map(|&v| Value::Bool(v)).collect()),
        }
    }

    /// A tensor stored in a weight blob.
    pub fn blob(ty: MilType, path: impl Into<String>, offset: u64) -> Literal {
        Literal {
            ty,
            value: Value::Blob {
                path: path.into(),
                offset,
            },
        }
    }
}

/// What an operation argument refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum Argument {
    /// A named variable (function parameter, const or operation result).
    Var(String),
    /// `(a, b, …)`: several variables (concat's `values`).
    Tuple(Vec<String>),
    /// A literal written in place. CoreML's own files sometimes do this; Orion never emits it for
    /// non-tensor parameters (catalogue C12).
    Literal(Literal),
}

/// A function parameter: `tensor<fp16, [1, 64, 1, 64]> a00_x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: MilType,
}

/// One statement: `results = op(args)[attributes];`. A `const` carries its value in the `val` attribute.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Defined variables with their declared types (several for `split`).
    pub results: Vec<(String, MilType)>,
    /// The operation's name (`conv`, `const`, …).
    pub op: String,
    pub args: Vec<(String, Argument)>,
    /// `name = …`, `val = …` and whatever else the bracket list holds, in source order.
    pub attributes: Vec<(String, Literal)>,
    /// 1-based source line of the statement; 0 when not parsed from text.
    pub line: usize,
}

impl PartialEq for Operation {
    /// Equality of meaning: the source line is not compared.
    fn eq(&self, other: &Operation) -> bool {
        self.results == other.results
            && self.op == other.op
            && self.args == other.args
            && self.attributes == other.attributes
    }
}

impl Operation {
    /// An operation with one result whose `name` attribute equals the result name (the convention
    /// every peer follows, ane.md §3).
    pub fn new(result: &str, ty: MilType, op: &str, args: Vec<(String, Argument)>) -> Operation {
        Operation {
            results: vec![(result.to_string(), ty)],
            op: op.to_string(),
            args,
            attributes: vec![("name".to_string(), Literal::string(result))],
            line: 0,
        }
    }

    /// A named `const` holding `value`, declared with the literal's type.
    pub fn constant(result: &str, value: Literal) -> Operation {
        Operation {
            results: vec![(result.to_string(), value.ty.clone())],
            op: "const".to_string(),
            args: Vec::new(),
            attributes: vec![
                ("name".to_string(), Literal::string(result)),
                ("val".to_string(), value),
            ],
            line: 0,
        }
    }

    /// The argument called `name`, if present.
    pub fn arg(&self, name: &str) -> Option<&Argument> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// The attribute called `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&Literal> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, l)| l)
    }
}

/// `(arg, Argument::Var(var))` — shorthand for building operations in code.
pub fn var_arg(arg: &str, var: &str) -> (String, Argument) {
    (arg.to_string(), Argument::Var(var.to_string()))
}

/// One `func name<opset>(params) { … } -> (outputs);`.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    /// `ios16`, `ios18`, `CoreML8`, …
    pub opset: String,
    pub params: Vec<Param>,
    /// Bracketed attributes after the parameter list (e.g. `FlexibleShapeInformation`); usually empty.
    pub attributes: Vec<(String, Literal)>,
    pub operations: Vec<Operation>,
    /// Returned variable names, in tuple order.
    pub outputs: Vec<String>,
    /// 1-based source line of `func`; 0 when not parsed from text.
    pub line: usize,
}

impl PartialEq for Function {
    /// Equality of meaning: the source line is not compared.
    fn eq(&self, other: &Function) -> bool {
        self.name == other.name
            && self.opset == other.opset
            && self.params == other.params
            && self.attributes == other.attributes
            && self.operations == other.operations
            && self.outputs == other.outputs
    }
}

impl Function {
    /// An empty function with the given name and opset.
    pub fn new(name: &str, opset: &str) -> Function {
        Function {
            name: name.to_string(),
            opset: opset.to_string(),
            params: Vec::new(),
            attributes: Vec::new(),
            operations: Vec::new(),
            outputs: Vec::new(),
            line: 0,
        }
    }
}

/// A whole MIL program: `program(version) [buildInfo = …] { functions }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// As written in `program(…)`: "1.0", "1.3", "1", …
    pub version: String,
    /// `buildInfo` entries in order; empty means the program has no attribute block.
    pub build_info: Vec<(String, String)>,
    pub functions: Vec<Function>,
}

impl Program {
    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}
