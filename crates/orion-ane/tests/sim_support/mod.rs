//! Helpers shared by the rule tests (`sim_rules.rs`, `sim_rules_limits.rs`): MIL programs built as
//! ASTs and printed in a chip's dialect, fp16 surfaces, the simulated device and the lowering.
//!
//! Each test crate uses a subset, hence `dead_code` is allowed here.

#![allow(dead_code)]

use half::f16;
use orion_ane::backend::AneBackend;
use orion_ane::blob::BlobWriter;
use orion_ane::device::{AneDevice, DeviceError, ProgramId, SimulatedAne, Surface, WeightDict};
use orion_ane::lint::has_errors;
use orion_ane::lower::{lower, profile_dialect, EmittedProgram, LowerOptions, WeightMode};
use orion_ane::mil::{print_program, var_arg, Argument, Function, Literal, MilDType, MilType, Operation, Param};
use orion_ane::profile::ChipProfile;
use orion_core::backend::{Backend, ReferenceBackend};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::Precision;
use orion_core::{DType, Graph, Tensor, TensorType};

pub const MIN: usize = 49_152;

// ---- helpers -----------------------------------------------------------------------------------------

pub fn profile(chip: &str) -> ChipProfile {
    ChipProfile::builtin(chip).expect("built-in chip")
}

pub fn sim(chip: &str) -> SimulatedAne {
    SimulatedAne::new(profile(chip))
}

pub fn t16(dims: &[usize]) -> MilType {
    MilType::tensor(MilDType::Fp16, dims)
}

/// A MIL `main` function built statement by statement.
pub struct Mil(pub Function);

impl Mil {
    pub fn new(params: &[(&str, MilType)]) -> Mil {
        let mut f = Function::new("main", "ios18");
        f.params = params
            .iter()
            .map(|(name, ty)| Param {
                name: name.to_string(),
                ty: ty.clone(),
            })
            .collect();
        Mil(f)
    }

    pub fn konst(mut self, name: &str, value: Literal) -> Mil {
        self.0.operations.push(Operation::constant(name, value));
        self
    }

    pub fn op(self, result: &str, ty: MilType, op: &str, args: &[(&str, &str)]) -> Mil {
        let args = args.iter().map(|(a, v)| var_arg(a, v)).collect();
        self.op_args(result, ty, op, args)
    }

    pub fn op_args(mut self, result: &str, ty: MilType, op: &str, args: Vec<(String, Argument)>) -> Mil {
        self.0.operations.push(Operation::new(result, ty, op, args));
        self
    }

    pub fn ret(mut self, names: &[&str]) -> Mil {
        self.0.outputs = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The program text in the dialect `chip` compiles.
    pub fn text(&self, chip: &str) -> String {
        let dialect = profile_dialect(&profile(chip));
        let mut function = self.0.clone();
        function.opset = dialect.opset().to_string();
        let mut program = dialect.empty_program();
        program.functions.push(function);
        print_program(&program, dialect)
    }
}

/// `z00_y = x + x` over `[1, 4, 1, 32]`.
pub fn doubling() -> Mil {
    Mil::new(&[("a00_x", t16(&[1, 4, 1, 32]))])
        .op("z00_y", t16(&[1, 4, 1, 32]), "add", &[("x", "a00_x"), ("y", "a00_x")])
        .ret(&["z00_y"])
}

/// A conv of `a00_x [1, 32, 1, 32]` with an `[8, 32, 1, 1]` BLOBFILE weight at `path`/`offset`.
pub fn conv_mil(path: &str, offset: u64, extra: Option<(&str, &str)>) -> Mil {
    let mut args = vec![
        ("dilations", "c_dl"),
        ("groups", "c_gr"),
        ("pad", "c_pd"),
        ("pad_type", "c_pt"),
        ("strides", "c_st"),
        ("weight", "w"),
        ("x", "a00_x"),
    ];
    args.extend(extra);
    let mut mil = Mil::new(&[("a00_x", t16(&[1, 32, 1, 32]))])
        .konst("c_pt", Literal::string("valid"))
        .konst("c_st", Literal::int32_vec(&[1, 1]))
        .konst("c_pd", Literal::int32_vec(&[0, 0, 0, 0]))
        .konst("c_dl", Literal::int32_vec(&[1, 1]))
        .konst("c_gr", Literal::int32(1))
        .konst("w", Literal::blob(t16(&[8, 32, 1, 1]), path, offset));
    if extra.is_some() {
        mil = mil.konst("bias", Literal::blob(t16(&[8]), "@model_path/weights/b.bin", 64));
    }
    mil.op("z00_y", t16(&[1, 8, 1, 32]), "conv", &args).ret(&["z00_y"])
}

pub fn blob(values: &[f32]) -> Vec<u8> {
    let mut writer = BlobWriter::new();
    writer.write_fp16_from_f32(values).expect("small blob");
    writer.finish()
}

pub fn conv_weights() -> WeightDict {
    WeightDict::from([
        ("@model_path/weights/w.bin".to_string(), blob(&[0.25; 256])),
        ("@model_path/weights/b.bin".to_string(), blob(&[1.0; 8])),
    ])
}

/// The rule id of a failed compile.
pub fn compile_rule(chip: &str, text: &str, weights: &WeightDict) -> Option<&'static str> {
    match sim(chip).compile(text.as_bytes(), weights) {
        Ok(_) => panic!("compiled, but should break a rule:\n{text}"),
        Err(DeviceError::Compile { rule, .. }) => rule,
        Err(other) => panic!("not a compile error: {other}"),
    }
}

pub fn compile_load(device: &SimulatedAne, text: &str, weights: &WeightDict) -> ProgramId {
    let id = device
        .compile(text.as_bytes(), weights)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    device.load(id).unwrap();
    id
}

pub fn f16_surface(values: &[f32], len: usize) -> Surface {
    let mut bytes = vec![0u8; len];
    for (i, v) in values.iter().enumerate() {
        bytes[2 * i..2 * i + 2].copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
    Surface::from_bytes(bytes)
}

pub fn read_f16(surface: &Surface, n: usize) -> Vec<f32> {
    let b = surface.bytes();
    (0..n)
        .map(|i| f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32())
        .collect()
}

/// Evaluates with fp16 surfaces of `MIN` bytes; returns the first `n` values of each output.
pub fn eval(device: &SimulatedAne, id: ProgramId, inputs: &[Vec<f32>], outputs: usize, n: usize) -> Vec<Vec<f32>> {
    let surfaces: Vec<Surface> = inputs.iter().map(|v| f16_surface(v, MIN)).collect();
    let mut outs: Vec<Surface> = (0..outputs).map(|_| Surface::zeroed(MIN)).collect();
    device.evaluate(id, &surfaces, &mut outs).unwrap();
    outs.iter().map(|s| read_f16(s, n)).collect()
}

pub fn round16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| round16(((i % 17) as f32 - 8.0) * scale)).collect()
}

pub fn options(weights: WeightMode) -> LowerOptions {
    LowerOptions {
        weights,
        ..LowerOptions::default()
    }
}

pub fn emit(graph: &Graph, chip: &str, weights: WeightMode) -> EmittedProgram {
    lower(graph, &profile(chip), &options(weights)).unwrap_or_else(|e| panic!("{chip}: {e}"))
}

/// The emitted program passes lint, and the simulator compiles and loads it.
pub fn assert_accepted(emitted: &EmittedProgram, chip: &str) {
    assert!(!has_errors(&emitted.lint), "{chip}: {:?}", emitted.lint);
    compile_load(&sim(chip), &emitted.mil_text, &emitted.weights);
}

pub fn rules_found(emitted: &EmittedProgram, rule: &str) -> usize {
    emitted.lint.iter().filter(|v| v.rule == rule).count()
}

pub fn op_names(emitted: &EmittedProgram) -> Vec<String> {
    emitted.program.functions[0]
        .operations
        .iter()
        .map(|op| op.op.clone())
        .collect()
}

/// `y = x · Wᵀ` with `x [t, k]` an input and `W [n, k]` a constant.
pub fn linear_graph(t: usize, k: usize, n: usize) -> Graph {
    let mut g = Graph::new("linear");
    let x = g.input("x", TensorType::new(DType::F32, [t, k])).unwrap();
    let w = g.constant(Tensor::f32([n, k], ramp(n * k, 0.01))).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// The simulated backend on `chip` agrees with the fp16 reference on `graph`.
pub fn assert_backend_agrees(graph: &Graph, inputs: &[Tensor], chip: &str, weights: WeightMode) {
    let reference = ReferenceBackend {
        precision: Precision::F16Rounding,
    };
    let expected = reference.compile(graph).unwrap().run(inputs).unwrap();
    let backend = AneBackend::simulated(chip, options(weights)).unwrap();
    let actual = backend.compile(graph).unwrap().run(inputs).unwrap();
    for (a, e) in actual.iter().zip(&expected) {
        compare(a, e, Tolerance::F16).unwrap_or_else(|m| panic!("{chip}: {m}"));
    }
}

pub fn input(dims: &[usize], scale: f32) -> Tensor {
    Tensor::f32(dims.to_vec(), ramp(dims.iter().product(), scale))
}
