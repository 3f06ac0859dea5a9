//! The simulated device's mechanics through the `AneDevice` interface: programs written by hand in MIL
//! text run to the values an obvious loop computes in fp16; surfaces bind by name order; the lifecycle
//! (compile → load → evaluate → unload) is enforced; weights are baked; the cost report counts what the
//! program does. Rule-by-rule behaviour lives in `sim_rules.rs`.

use half::f16;
use orion_ane::blob::BlobWriter;
use orion_ane::device::{AneDevice, DeviceError, ProgramId, SimOptions, SimulatedAne, Surface, WeightDict};
use orion_ane::profile::{ChipProfile, IoBindingOrder};

/// Every built-in chip allocates surfaces at least this large (C21).
const MIN: usize = 49_152;

/// A one-function ios18 program.
fn program(params: &str, body: &str, outputs: &str) -> String {
    format!("program(1.3)\n{{\n    func main<ios18>({params}) {{\n{body}\n    }} -> ({outputs});\n}}\n")
}

fn m4() -> ChipProfile {
    ChipProfile::builtin("m4").expect("m4 is built in")
}

/// A surface of `len` bytes holding `values` as packed little-endian fp16 from offset 0.
fn f16_surface(values: &[f32], len: usize) -> Surface {
    let mut bytes = vec![0u8; len];
    for (i, v) in values.iter().enumerate() {
        bytes[2 * i..2 * i + 2].copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
    Surface::from_bytes(bytes)
}

fn read_f16(surface: &Surface, n: usize) -> Vec<f32> {
    let b = surface.bytes();
    (0..n)
        .map(|i| f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32())
        .collect()
}

fn round16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Deterministic values in [-2, 2), rounded to fp16.
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            round16((state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0)
        })
        .collect()
}

fn compile_and_load(device: &SimulatedAne, text: &str, weights: &WeightDict) -> ProgramId {
    let id = device
        .compile(text.as_bytes(), weights)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    device.load(id).expect("a compiled program loads");
    id
}

const ADD: &str = "        tensor<fp16, [1, 4, 1, 32]> z00_y = add(x = a00_x, y = a01_w)[name = string(\"z00_y\")];";

fn add_program() -> String {
    program(
        "tensor<fp16, [1, 4, 1, 32]> a00_x, tensor<fp16, [1, 4, 1, 32]> a01_w",
        ADD,
        "z00_y",
    )
}

/// `tensor<fp16, [8, 32, 1, 1]> w` from a blob file at `path`, and a conv of `a00_x` with it.
fn conv_program(path: &str) -> String {
    let body = format!(
        "        string c_pt = const()[name = string(\"c_pt\"), val = string(\"valid\")];
        tensor<int32, [2]> c_st = const()[name = string(\"c_st\"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> c_pd = const()[name = string(\"c_pd\"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> c_dl = const()[name = string(\"c_dl\"), val = tensor<int32, [2]>([1, 1])];
        int32 c_gr = const()[name = string(\"c_gr\"), val = int32(1)];
        tensor<fp16, [8, 32, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp16, [8, 32, 1, 1]>(BLOBFILE(path = string(\"{path}\"), offset = uint64(64)))];
        tensor<fp16, [1, 8, 1, 32]> z00_y = conv(dilations = c_dl, groups = c_gr, pad = c_pd, pad_type = c_pt, strides = c_st, weight = w, x = a00_x)[name = string(\"z00_y\")];"
    );
    program("tensor<fp16, [1, 32, 1, 32]> a00_x", &body, "z00_y")
}

const W_PATH: &str = "@model_path/weights/w.bin";

fn blob(values: &[f32]) -> Vec<u8> {
    let mut writer = BlobWriter::new();
    writer.write_fp16_from_f32(values).expect("small blob");
    writer.finish()
}

/// y[o, s] = Σ_i w[o, i]·x[i, s] for w [8, 32], x [32, 32], accumulated in f64 and rounded once.
fn conv_reference(w: &[f32], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; 8 * 32];
    for o in 0..8 {
        for s in 0..32 {
            let sum: f64 = (0..32)
                .map(|i| f64::from(w[o * 32 + i]) * f64::from(x[i * 32 + s]))
                .sum();
            y[o * 32 + s] = round16(sum as f32);
        }
    }
    y
}

fn assert_close(actual: &[f32], expected: &[f32], rel: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-3 + rel * e.abs(), "element {i}: {a} vs {e}");
    }
}

#[test]
fn add_runs_with_fp16_semantics() {
    let device = SimulatedAne::new(m4());
    let id = compile_and_load(&device, &add_program(), &WeightDict::new());
    let (x, w) = (data(128, 1), data(128, 2));
    let inputs = [f16_surface(&x, MIN), f16_surface(&w, MIN)];
    let mut outputs = [Surface::zeroed(MIN)];
    device.evaluate(id, &inputs, &mut outputs).expect("evaluates");
    // The sum of two fp16 values rounded once to fp16: exact, so compare bit for bit.
    let expected: Vec<f32> = x.iter().zip(&w).map(|(a, b)| round16(a + b)).collect();
    assert_eq!(read_f16(&outputs[0], 128), expected);
    assert!(
        outputs[0].bytes()[256..].iter().all(|&b| b == 0),
        "nothing is written past the packed data"
    );
}

#[test]
fn conv_with_a_baked_blob_weight_matches_a_loop() {
    let device = SimulatedAne::new(m4());
    let w = data(8 * 32, 3);
    let weights = WeightDict::from([(W_PATH.to_string(), blob(&w))]);
    let id = compile_and_load(&device, &conv_program(W_PATH), &weights);
    let x = data(32 * 32, 4);
    let mut outputs = [Surface::zeroed(MIN)];
    device
        .evaluate(id, &[f16_surface(&x, MIN)], &mut outputs)
        .expect("evaluates");
    // One f32 accumulation rounded once vs an f64 sum rounded once: at most one fp16 ulp apart.
    assert_close(&read_f16(&outputs[0], 256), &conv_reference(&w, &x), 1e-3);
}

/// `(z_b = x·2, z_a = x + 1)` returned in that tuple order.
fn two_output_program() -> String {
    let body = "        fp16 two = const()[name = string(\"two\"), val = fp16(2)];
        fp16 one = const()[name = string(\"one\"), val = fp16(1)];
        tensor<fp16, [1, 4, 1, 32]> z_b = mul(x = x, y = two)[name = string(\"z_b\")];
        tensor<fp16, [1, 4, 1, 32]> z_a = add(x = x, y = one)[name = string(\"z_a\")];";
    program("tensor<fp16, [1, 4, 1, 32]> x", body, "z_b, z_a")
}

#[test]
fn outputs_bind_in_name_order_not_tuple_order() {
    let device = SimulatedAne::new(m4());
    let id = compile_and_load(&device, &two_output_program(), &WeightDict::new());
    let x = data(128, 5);
    let mut outputs = [Surface::zeroed(MIN), Surface::zeroed(MIN)];
    device
        .evaluate(id, &[f16_surface(&x, MIN)], &mut outputs)
        .expect("evaluates");
    let plus_one: Vec<f32> = x.iter().map(|v| round16(v + 1.0)).collect();
    let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    assert_eq!(read_f16(&outputs[0], 128), plus_one, "slot 0 is z_a");
    assert_eq!(read_f16(&outputs[1], 128), doubled, "slot 1 is z_b");
}

#[test]
fn a_declaration_order_profile_binds_positionally() {
    let mut profile = m4();
    profile.limits.io_binding_order = IoBindingOrder::Declaration;
    let device = SimulatedAne::new(profile);
    let id = compile_and_load(&device, &two_output_program(), &WeightDict::new());
    let x = data(128, 6);
    let mut outputs = [Surface::zeroed(MIN), Surface::zeroed(MIN)];
    device
        .evaluate(id, &[f16_surface(&x, MIN)], &mut outputs)
        .expect("evaluates");
    let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    assert_eq!(read_f16(&outputs[0], 128), doubled, "slot 0 is z_b, the first returned");
}

#[test]
fn surface_count_and_room_are_checked() {
    let mut profile = m4();
    profile.limits.min_surface_bytes = 64;
    let device = SimulatedAne::new(profile);
    let id = compile_and_load(&device, &add_program(), &WeightDict::new());
    let x = data(128, 7);
    let one_input = [f16_surface(&x, 256)];
    let err = device
        .evaluate(id, &one_input, &mut [Surface::zeroed(256)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Evaluate {
                status: 0x1d,
                rule: None,
                ..
            }
        ),
        "{err}"
    );
    // 128 fp16 values need 256 bytes; 128-byte surfaces of equal size cannot hold them.
    let small = [f16_surface(&x[..64], 128), f16_surface(&x[..64], 128)];
    let err = device.evaluate(id, &small, &mut [Surface::zeroed(128)]).unwrap_err();
    assert!(matches!(err, DeviceError::Evaluate { status: 0x1d, .. }), "{err}");
    assert!(err.to_string().contains("needs 256"), "{err}");
}

#[test]
fn lifecycle_is_enforced() {
    let device = SimulatedAne::new(m4());
    let id = device.compile(add_program().as_bytes(), &WeightDict::new()).unwrap();
    let inputs = [f16_surface(&[1.0], MIN), f16_surface(&[2.0], MIN)];
    let mut outputs = [Surface::zeroed(MIN)];
    assert!(device.evaluate(id, &inputs, &mut outputs).is_err(), "not loaded yet");
    assert!(matches!(device.unload(id), Err(DeviceError::Unload { .. })));
    device.load(id).unwrap();
    assert!(
        matches!(device.load(id), Err(DeviceError::Load { .. })),
        "already loaded"
    );
    assert_eq!(device.loaded_count(), 1);
    device.evaluate(id, &inputs, &mut outputs).unwrap();
    assert_eq!(read_f16(&outputs[0], 1), vec![3.0]);
    device.unload(id).unwrap();
    assert_eq!(device.loaded_count(), 0);
    assert!(device.evaluate(id, &inputs, &mut outputs).is_err(), "unloaded");
    device.load(id).expect("a compiled program can be loaded again");
    let missing = ProgramId(999);
    assert!(matches!(device.load(missing), Err(DeviceError::UnknownProgram { .. })));
    assert!(matches!(
        device.evaluate(missing, &inputs, &mut outputs),
        Err(DeviceError::UnknownProgram { .. })
    ));
}

#[test]
fn failed_compiles_count_against_the_budget() {
    let mut profile = m4();
    profile.limits.compile_budget = 3;
    let device = SimulatedAne::new(profile);
    let empty = WeightDict::new();
    device.compile(add_program().as_bytes(), &empty).unwrap();
    assert!(device.compile(b"program(1.3) {", &empty).is_err());
    device.compile(add_program().as_bytes(), &empty).unwrap();
    assert_eq!(device.compile_count(), 3);
    let err = device.compile(add_program().as_bytes(), &empty).unwrap_err();
    assert_eq!(err, DeviceError::BudgetExhausted { used: 3, budget: 3 });
    assert_eq!(err.rule(), Some("C06"));
    assert_eq!(device.compile_count(), 3, "refused compiles are not attempts");
}

#[test]
fn weights_are_copied_at_compile_and_reload_does_not_change_them() {
    let (w_old, w_new) = (data(256, 8), data(256, 9));
    let x = data(1024, 10);
    let run = |device: &SimulatedAne, id: ProgramId| {
        let mut outputs = [Surface::zeroed(MIN)];
        device.evaluate(id, &[f16_surface(&x, MIN)], &mut outputs).unwrap();
        read_f16(&outputs[0], 256)
    };
    let baked = SimulatedAne::new(m4());
    let mut weights = WeightDict::from([(W_PATH.to_string(), blob(&w_old))]);
    let id = compile_and_load(&baked, &conv_program(W_PATH), &weights);
    let before = run(&baked, id);
    weights.insert(W_PATH.to_string(), blob(&w_new)); // the caller's copy changes: no effect
    baked.overwrite_weight_file(id, W_PATH, &blob(&w_new)).unwrap();
    baked.unload(id).unwrap();
    baked.load(id).unwrap();
    assert_eq!(run(&baked, id), before, "C07: the compiled program keeps its weights");
    assert!(baked.overwrite_weight_file(id, "@model_path/other.bin", &[]).is_err());

    let mut profile = m4();
    profile.limits.ops.weights_reload_takes_effect = true;
    let reloading = SimulatedAne::new(profile);
    let id = compile_and_load(&reloading, &conv_program(W_PATH), &weights);
    reloading.overwrite_weight_file(id, W_PATH, &blob(&w_old)).unwrap();
    assert_close(&run(&reloading, id), &conv_reference(&w_new, &x), 1e-3); // no effect before the reload
    reloading.unload(id).unwrap();
    reloading.load(id).unwrap();
    assert_close(&run(&reloading, id), &conv_reference(&w_old, &x), 1e-3);
}

#[test]
fn large_matmul_results_become_infinite() {
    // Every weight 1000 and every input 2 over 32 channels: 64,000 > 32,752 (C35), finite in fp16.
    let weights = WeightDict::from([(W_PATH.to_string(), blob(&[1000.0; 256]))]);
    let x = vec![2.0; 1024];
    for (options, expected) in [
        (SimOptions::for_profile(&m4()), f32::INFINITY),
        (
            SimOptions {
                matmul_overflow_to_inf: false,
                width_offset_slice_gain: false,
            },
            64_000.0,
        ),
    ] {
        let device = SimulatedAne::with_options(m4(), options);
        let id = compile_and_load(&device, &conv_program(W_PATH), &weights);
        let mut outputs = [Surface::zeroed(MIN)];
        device.evaluate(id, &[f16_surface(&x, MIN)], &mut outputs).unwrap();
        assert!(read_f16(&outputs[0], 256).iter().all(|&v| v == expected), "{options:?}");
    }
}

#[test]
fn fp32_surfaces_enter_the_fp16_datapath_rounded() {
    let body = "        string to16 = const()[name = string(\"to16\"), val = string(\"fp16\")];
        string to32 = const()[name = string(\"to32\"), val = string(\"fp32\")];
        tensor<fp16, [1, 4, 1, 16]> h = cast(dtype = to16, x = a00_x)[name = string(\"h\")];
        tensor<fp16, [1, 4, 1, 16]> d = add(x = h, y = h)[name = string(\"d\")];
        tensor<fp32, [1, 4, 1, 16]> z00_y = cast(dtype = to32, x = d)[name = string(\"z00_y\")];";
    let text = program("tensor<fp32, [1, 4, 1, 16]> a00_x", body, "z00_y");
    let device = SimulatedAne::new(m4());
    let id = compile_and_load(&device, &text, &WeightDict::new());
    let x: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 1.0e-4).collect();
    let mut input = vec![0u8; MIN];
    for (i, v) in x.iter().enumerate() {
        input[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    let mut outputs = [Surface::zeroed(MIN)];
    device
        .evaluate(id, &[Surface::from_bytes(input)], &mut outputs)
        .unwrap();
    let b = outputs[0].bytes();
    let got: Vec<f32> = (0..64)
        .map(|i| f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
        .collect();
    let expected: Vec<f32> = x.iter().map(|&v| round16(2.0 * round16(v))).collect();
    assert_eq!(got, expected);
}

#[test]
fn the_report_counts_flops_bytes_and_weights() {
    let profile = m4();
    let device = SimulatedAne::new(profile.clone());
    let weights = WeightDict::from([(W_PATH.to_string(), blob(&data(256, 11)))]);
    let id = compile_and_load(&device, &conv_program(W_PATH), &weights);
    let mut outputs = [Surface::zeroed(MIN)];
    let report = device
        .evaluate(id, &[f16_surface(&data(1024, 12), MIN)], &mut outputs)
        .unwrap();
    // conv [8, 32] over S = 32: 2·8·32·32 flops; two 49,152-byte surfaces; 256 fp16 weights.
    assert_eq!(report.flops, 2.0 * 8.0 * 32.0 * 32.0);
    assert_eq!(report.io_bytes, 2.0 * MIN as f64);
    assert_eq!(report.weight_bytes, 512.0);
    assert_eq!(report.layout_efficiency, 1.0);
    // The largest I/O tensor is the input [1, 32, 1, 32]: S = 32, C = 32.
    let expected = profile.estimate_eval(report.flops, report.io_bytes, report.weight_bytes, 32, 32);
    assert_eq!(report.estimate, expected);
    assert!(report.estimated_ms >= profile.cost.dispatch_floor_ms);
}

#[test]
fn the_device_is_shared_between_threads() {
    let device = std::sync::Arc::new(SimulatedAne::new(m4()));
    let id = compile_and_load(&device, &add_program(), &WeightDict::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let device = std::sync::Arc::clone(&device);
            std::thread::spawn(move || {
                let v = t as f32;
                let mut outputs = [Surface::zeroed(MIN)];
                let inputs = [f16_surface(&[v], MIN), f16_surface(&[1.0], MIN)];
                device.evaluate(id, &inputs, &mut outputs).unwrap();
                read_f16(&outputs[0], 1)[0]
            })
        })
        .collect();
    let results: Vec<f32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, vec![1.0, 2.0, 3.0, 4.0]);
}
