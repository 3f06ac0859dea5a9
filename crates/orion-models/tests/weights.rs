//! Weight files: Hugging Face → canonical conversion, llama2.c formats and the RoPE permutation,
//! f16/bf16 widening, canonical export round trips, and clear errors on bad files.

use orion_core::Tensor;
use orion_models::weights::export::export_safetensors;
use orion_models::weights::llama2c::rotate_half_rows;
use orion_models::weights::safetensors::{parse_safetensors, read_safetensors};
use orion_models::{Model, ModelConfig, ModelError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(rel)
}

fn values(model: &Model, name: &str) -> Vec<f32> {
    model.weight(name).unwrap_or_else(|| panic!("no {name}")).to_f32_vec()
}

#[test]
fn gpt2_conv1d_weights_are_transposed_and_c_attn_split() {
    let raw = read_safetensors(&fixture("gpt2_tiny/model.safetensors"))
        .unwrap()
        .tensors;
    let model = Model::load(&fixture("gpt2_tiny"), None).unwrap();
    let d = 32;
    let c_attn = raw["transformer.h.1.attn.c_attn.weight"].to_f32_vec(); // [in = d, out = 3d]
    let c_attn_b = raw["transformer.h.1.attn.c_attn.bias"].to_f32_vec();
    for (part, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let w = values(&model, &format!("h.1.attn.{proj}.weight")); // [out, in]
        let b = values(&model, &format!("h.1.attn.{proj}.bias"));
        for o in 0..d {
            for i in 0..d {
                assert_eq!(w[o * d + i], c_attn[i * 3 * d + part * d + o], "{proj}[{o}][{i}]");
            }
            assert_eq!(b[o], c_attn_b[part * d + o]);
        }
    }
    let fc = raw["transformer.h.0.mlp.c_fc.weight"].to_f32_vec(); // [d, 4d]
    let ours = values(&model, "h.0.mlp.c_fc.weight"); // [4d, d]
    assert_eq!(model.weight("h.0.mlp.c_fc.weight").unwrap().shape().dims(), &[128, 32]);
    for o in 0..128 {
        for i in 0..d {
            assert_eq!(ours[o * d + i], fc[i * 128 + o]);
        }
    }
    assert_eq!(values(&model, "wte.weight"), raw["transformer.wte.weight"].to_f32_vec());
}

#[test]
fn llama2c_files_hold_the_hf_weights_after_the_rope_permutation() {
    let hf = Model::load(&fixture("llama_tiny"), None).unwrap();
    for file in ["llama2c_v0.bin", "llama2c_v1.bin"] {
        let c = Model::load(&fixture(&format!("llama_tiny/{file}")), None).unwrap();
        assert_eq!(c.config().n_kv_heads, 2, "{file}");
        for (name, tensor) in hf.weights() {
            assert_eq!(values(&c, &name), tensor.to_f32_vec(), "{file}: {name}");
        }
    }
}

/// Rotation of llama2.c/Meta: pairs (x[2i], x[2i+1]) by angle pos·θ^(−2i/d).
fn rope_interleaved(x: &mut [f32], pos: usize, theta: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let a = pos as f64 * theta.powf(-2.0 * i as f64 / d as f64);
        let (c, s) = (a.cos() as f32, a.sin() as f32);
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x0 * s + x1 * c;
    }
}

/// Rotation of Hugging Face: pairs (x[i], x[i + d/2]) by the same angles.
fn rope_rotate_half(x: &mut [f32], pos: usize, theta: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let a = pos as f64 * theta.powf(-2.0 * i as f64 / d as f64);
        let (c, s) = (a.cos() as f32, a.sin() as f32);
        let (x0, x1) = (x[i], x[i + d / 2]);
        x[i] = x0 * c - x1 * s;
        x[i + d / 2] = x0 * s + x1 * c;
    }
}

#[test]
fn permuted_rows_turn_interleaved_rope_into_rotate_half_rope() {
    let (heads, hd, cols, pos) = (3, 8, 5, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w: Vec<f32> = (0..heads * hd * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let project = |w: &[f32]| -> Vec<f32> {
        (0..heads * hd)
            .map(|r| (0..cols).map(|c| w[r * cols + c] * x[c]).sum())
            .collect()
    };
    let mut q_c = project(&w);
    let mut q_hf = project(&rotate_half_rows(&w, heads, hd, cols));
    for h in 0..heads {
        rope_interleaved(&mut q_c[h * hd..(h + 1) * hd], pos, 10000.0);
        rope_rotate_half(&mut q_hf[h * hd..(h + 1) * hd], pos, 10000.0);
    }
    // The rotated vectors agree up to the same renumbering, so every q·k score is unchanged.
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let a = q_hf[h * hd + j * hd / 2 + i];
                let b = q_c[h * hd + 2 * i + j];
                assert!((a - b).abs() < 1e-6, "head {h} pair {i}.{j}: {a} vs {b}");
            }
        }
    }
}

/// Serialises `tensors` (given as f32) with every tensor stored as `dtype`.
fn safetensors_with_dtype(tensors: &BTreeMap<String, Tensor>, dtype: Dtype) -> Vec<u8> {
    let encoded: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let v = t.to_f32_vec();
            let bytes = match dtype {
                Dtype::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                Dtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            };
            (name.clone(), bytes, t.shape().dims().to_vec())
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = encoded
        .iter()
        .map(|(n, b, s)| (n.as_str(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn f16_and_bf16_tensors_are_widened_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let raw = read_safetensors(&fixture("llama_tiny/model.safetensors"))
        .unwrap()
        .tensors;
    let config = fixture("llama_tiny/config.json");
    for (dtype, round) in [
        (Dtype::F16, (|x: f32| half::f16::from_f32(x).to_f32()) as fn(f32) -> f32),
        (Dtype::BF16, |x: f32| half::bf16::from_f32(x).to_f32()),
    ] {
        let path = dir.path().join(format!("{dtype:?}.safetensors"));
        std::fs::write(&path, safetensors_with_dtype(&raw, dtype)).unwrap();
        let model = Model::load(&path, Some(&config)).unwrap();
        for (name, tensor) in &raw {
            let expected: Vec<f32> = tensor.to_f32_vec().into_iter().map(round).collect();
            assert_eq!(values(&model, name), expected, "{dtype:?} {name}");
        }
    }
}

#[test]
fn unsupported_element_types_name_the_tensor() {
    let bytes = [0u8; 8];
    let view = TensorView::new(Dtype::I32, vec![2], &bytes).unwrap();
    let file = safetensors::serialize(vec![("model.norm.weight", view)], None).unwrap();
    let err = parse_safetensors(&file, Path::new("x.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.norm.weight") && err.contains("I32"), "{err}");
}

#[test]
fn export_round_trips_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    for source in ["gpt2_tiny", "llama_tiny/llama2c_v0.bin"] {
        let model = Model::load(&fixture(source), None).unwrap();
        let path = dir.path().join("out.safetensors");
        std::fs::write(&path, b"old content").unwrap();
        export_safetensors(&model, &path).unwrap();
        let back = Model::load(&path, None).unwrap();
        assert_eq!(back.config(), model.config(), "{source}");
        for (name, tensor) in model.weights() {
            assert_eq!(values(&back, &name), tensor.to_f32_vec(), "{source}: {name}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind: {leftovers:?}");
    }
}

#[test]
fn export_into_a_missing_directory_fails_cleanly() {
    let model = Model::random(ModelConfig::builtin("stories260K").unwrap(), 1).unwrap();
    let err = export_safetensors(&model, Path::new("/nonexistent-dir/model.safetensors")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

/// The llama fixture's tensors, edited by `edit`, saved with the fixture's config.
fn load_edited(edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = read_safetensors(&fixture("llama_tiny/model.safetensors"))
        .unwrap()
        .tensors;
    edit(&mut raw);
    let path = dir.path().join("edited.safetensors");
    std::fs::write(&path, safetensors_with_dtype(&raw, Dtype::F32)).unwrap();
    Model::load(&path, Some(&fixture("llama_tiny/config.json"))).unwrap_err()
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    match load_edited(|t| {
        t.remove("model.norm.weight");
    }) {
        ModelError::MissingTensor { name, expected } => {
            assert_eq!((name.as_str(), expected), ("model.norm.weight", vec![32]));
        }
        other => panic!("{other}"),
    }
    match load_edited(|t| {
        t.insert("model.layers.0.extra".into(), Tensor::f32([2], vec![0.0; 2]));
    }) {
        ModelError::UnexpectedTensor { name, found } => {
            assert_eq!((name.as_str(), found), ("model.layers.0.extra", vec![2]));
        }
        other => panic!("{other}"),
    }
    let err = load_edited(|t| {
        t.insert(
            "model.layers.1.self_attn.k_proj.weight".into(),
            Tensor::f32([32, 32], vec![0.0; 1024]),
        );
    });
    let message = err.to_string();
    assert!(
        message.contains("model.layers.1.self_attn.k_proj.weight")
            && message.contains("[16, 32]")
            && message.contains("[32, 32]"),
        "{message}"
    );
}

#[test]
fn hf_gpt2_shape_errors_use_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = read_safetensors(&fixture("gpt2_tiny/model.safetensors"))
        .unwrap()
        .tensors;
    raw.insert(
        "transformer.h.0.attn.c_attn.weight".into(),
        Tensor::f32([32, 32], vec![0.0; 1024]),
    );
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, safetensors_with_dtype(&raw, Dtype::F32)).unwrap();
    let err = Model::load(&path, Some(&fixture("gpt2_tiny/config.json")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("h.0.attn.c_attn.weight") && err.contains("[32, 96]"),
        "{err}"
    );
}

fn assert_format_error(bytes: &[u8], name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::copy(fixture("llama_tiny/config.json"), dir.path().join("config.json")).unwrap();
    match Model::load(&path, None) {
        Err(ModelError::Format { message, .. }) => message,
        Err(ModelError::Config(message)) => message,
        other => panic!("{name} ({} bytes): expected a format error, got {other:?}", bytes.len()),
    }
}

#[test]
fn truncated_files_are_clear_errors() {
    for file in ["llama2c_v0.bin", "llama2c_v1.bin", "model.safetensors"] {
        let bytes = std::fs::read(fixture(&format!("llama_tiny/{file}"))).unwrap();
        for cut in [0, 3, 10, 27, 100, bytes.len() / 2, bytes.len() - 4, bytes.len() - 1] {
            let message = assert_format_error(&bytes[..cut], file);
            assert!(!message.is_empty());
        }
    }
    let legacy = std::fs::read(fixture("llama_tiny/llama2c_v0.bin")).unwrap();
    let message = assert_format_error(&legacy[..legacy.len() - 8], "cut.bin");
    assert!(message.contains("truncated") && message.contains("wcls"), "{message}");
    let mut longer = legacy.clone();
    longer.extend([0u8; 12]);
    assert!(assert_format_error(&longer, "long.bin").contains("12 trailing bytes"));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for round in 0..300 {
        let len = rng.gen_range(0..400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if round % 3 == 1 && len >= 28 {
            // Plausible small header fields, garbage after: exercises the size checks.
            for (k, v) in [8i32, 16, 2, 2, 1, -16, 4].iter().enumerate() {
                bytes[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        if round % 3 == 2 && len >= 9 {
            bytes[..8].copy_from_slice(&((len as u64) - 8).to_le_bytes());
            bytes[8] = b'{';
        }
        for name in ["w.bin", "w.safetensors"] {
            assert_format_error(&bytes, name);
        }
    }
}

#[test]
fn quantized_llama2c_version_2_is_refused() {
    let mut bytes = vec![0u8; 300];
    bytes[..4].copy_from_slice(&0x616b_3432u32.to_le_bytes());
    bytes[4..8].copy_from_slice(&2i32.to_le_bytes());
    let message = assert_format_error(&bytes, "q80.bin");
    assert!(message.contains("version 2"), "{message}");
}

#[test]
fn unknown_extensions_and_missing_configs_are_reported() {
    let message = assert_format_error(b"hello world, not weights", "weights.txt");
    assert!(message.contains("unrecognised"), "{message}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::copy(fixture("llama_tiny/model.safetensors"), &path).unwrap();
    let err = Model::load(&path, None).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}
