//! Generation: KV-cache decoding equals full re-forward equals the PyTorch fixture (also after an
//! earlier generation on the same generator, and across the growing cache's sizes); the decode-step
//! graph's logits equal the forward graph's row by row; sampling is seeded and well-behaved.

use orion_core::backend::{Backend, ReferenceBackend};
use orion_core::cpu::CpuBackend;
use orion_core::interp::Precision;
use orion_core::{DType, Tensor};
use orion_models::generate::kv_cache::{cache_row_sizes, FIRST_ROWS};
use orion_models::generate::{
    forward_logits, reforward_greedy, GenerateOptions, Generator, KvCache, Sampler, SamplingOptions, StopReason,
};
use orion_models::model::{decode_mask, token_tensor};
use orion_models::{Model, ModelConfig, ModelError, WeightMode};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(rel)
}

fn expected_tokens(model: &str) -> (Vec<u32>, Vec<u32>) {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let ids = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    (ids(&json[model]["prompt"]), ids(&json[model]["greedy"]))
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    }
}

#[test]
fn cached_greedy_equals_reforward_and_pytorch() {
    let reference = ReferenceBackend {
        precision: Precision::F32,
    };
    let cpu = CpuBackend::default();
    for (name, path) in [
        ("gpt2_tiny", "gpt2_tiny"),
        ("llama_tiny", "llama_tiny"),
        ("llama_tiny", "llama_tiny/llama2c_v0.bin"),
    ] {
        let model = Model::load(&fixture(path), None).unwrap();
        let (prompt, want) = expected_tokens(name);
        let backends: [&dyn Backend; 2] = [&reference, &cpu];
        for backend in backends {
            let mut generator = Generator::new(&model, backend).unwrap();
            // A generation on another prompt first: its rows stay in the cache the generator
            // reuses, and must not leak into the next one.
            let other: Vec<u32> = prompt.iter().rev().copied().collect();
            generator.generate(&other, &greedy(3), &mut |_| true).unwrap();
            let mut streamed = Vec::new();
            let out = generator
                .generate(&prompt, &greedy(want.len()), &mut |t| {
                    streamed.push(t);
                    true
                })
                .unwrap();
            assert_eq!(
                out.tokens,
                want,
                "{path} on {}: cached greedy vs PyTorch",
                backend.name()
            );
            assert_eq!(streamed, want, "the callback sees every token in order");
            assert_eq!(out.stop, StopReason::MaxTokens);
            assert_eq!(out.timing.decode_steps, want.len() - 1);
            assert_eq!(out.timing.prompt_tokens, prompt.len());
            assert!(out.timing.prefill_ms > 0.0);
        }
        let slow = reforward_greedy(&model, &cpu, &prompt, want.len()).unwrap();
        assert_eq!(slow, want, "{path}: re-forward greedy");
    }
}

/// Drives prefill + decode steps by hand and compares every step's logits with the forward
/// graph's row for that position.
fn check_decode_logits(model: &Model, backend: &dyn Backend, tokens: &[u32], prefix: usize, capacity: usize) {
    let vocab = model.config().vocab_size;
    let full = forward_logits(model, backend, tokens).unwrap().to_f32_vec();
    let prefill = model.prefill_graph(prefix, DType::F32, WeightMode::Inputs).unwrap();
    let outputs = backend
        .compile(&prefill)
        .unwrap()
        .run(
            &model
                .bind(
                    &prefill,
                    vec![("tokens", token_tensor(&tokens[..prefix], vocab).unwrap())],
                )
                .unwrap(),
        )
        .unwrap();
    let mut cache = KvCache::new(model.config(), capacity, DType::F32);
    let store = |cache: &mut KvCache, graph: &orion_core::Graph, outputs: &[Tensor]| -> Vec<f32> {
        let get = |n: &str| &outputs[graph.outputs().iter().position(|o| o.name == n).unwrap()];
        for layer in 0..model.config().n_layers {
            cache
                .write(layer, get(&format!("k.{layer}")), get(&format!("v.{layer}")))
                .unwrap();
        }
        get("logits").to_f32_vec()
    };
    let first = store(&mut cache, &prefill, &outputs);
    cache.advance(prefix).unwrap();
    let close = |a: &[f32], row: usize| {
        let e = &full[row * vocab..(row + 1) * vocab];
        for (x, y) in a.iter().zip(e) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "position {row}: {x} vs {y}");
        }
    };
    close(&first, prefix - 1);
    let decode = model.decode_graph(capacity, DType::F32, WeightMode::Constants).unwrap();
    let exe = backend.compile(&decode).unwrap();
    for (pos, &token) in tokens.iter().enumerate().skip(prefix) {
        let mut data = vec![
            ("token".to_string(), token_tensor(&[token], vocab).unwrap()),
            ("position".to_string(), Tensor::i32([1], vec![pos as i32])),
            ("mask".to_string(), decode_mask(capacity, pos, DType::F32).unwrap()),
        ];
        data.extend(cache.inputs().unwrap());
        let inputs = model
            .bind(&decode, data.iter().map(|(n, t)| (n.as_str(), t.clone())).collect())
            .unwrap();
        let outputs = exe.run(&inputs).unwrap();
        let logits = store(&mut cache, &decode, &outputs);
        cache.advance(1).unwrap();
        close(&logits, pos);
    }
}

#[test]
fn decode_step_logits_equal_forward_rows() {
    let cpu = CpuBackend::default();
    let tokens: Vec<u32> = vec![3, 9, 27, 17, 51, 12, 40, 2, 63, 5];
    for path in ["gpt2_tiny", "llama_tiny"] {
        let model = Model::load(&fixture(path), None).unwrap();
        check_decode_logits(&model, &cpu, &tokens, 1, 12);
        check_decode_logits(&model, &cpu, &tokens, 4, 32);
    }
    // A random model with wider GQA groups (8 query heads on 2 key/value heads), tied head.
    let cfg = ModelConfig {
        n_heads: 8,
        n_kv_heads: 2,
        ..ModelConfig::builtin("stories260K").unwrap()
    };
    let model = Model::random(cfg, 3).unwrap();
    let reference = ReferenceBackend {
        precision: Precision::F32,
    };
    check_decode_logits(&model, &reference, &tokens[..6], 2, 8);
}

#[test]
fn sampling_is_deterministic_per_seed_and_top_k_1_is_greedy() {
    let model = Model::load(&fixture("llama_tiny"), None).unwrap();
    let cpu = CpuBackend::default();
    let mut generator = Generator::new(&model, &cpu).unwrap();
    let (prompt, want) = expected_tokens("llama_tiny");
    let sampled = |seed: u64, sampling: SamplingOptions, generator: &mut Generator<'_>| {
        let options = GenerateOptions {
            max_new_tokens: 12,
            sampling,
            seed,
            stop_tokens: vec![],
        };
        generator.generate(&prompt, &options, &mut |_| true).unwrap().tokens
    };
    let hot = SamplingOptions {
        temperature: 1.5,
        top_k: 0,
        top_p: 1.0,
    };
    let a = sampled(7, hot.clone(), &mut generator);
    assert_eq!(a, sampled(7, hot.clone(), &mut generator), "same seed, same tokens");
    let others: Vec<Vec<u32>> = (8..12).map(|s| sampled(s, hot.clone(), &mut generator)).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds explore different tokens"
    );
    let top1 = SamplingOptions {
        temperature: 1.5,
        top_k: 1,
        top_p: 1.0,
    };
    let top1_tokens = sampled(99, top1, &mut generator);
    assert_eq!(&top1_tokens[..want.len()], want.as_slice(), "top-k 1 is greedy");
}

#[test]
fn stop_tokens_callbacks_and_context_limits_end_generation() {
    let model = Model::load(&fixture("gpt2_tiny"), None).unwrap();
    let cpu = CpuBackend::default();
    let (prompt, want) = expected_tokens("gpt2_tiny");
    let mut generator = Generator::new(&model, &cpu).unwrap();
    // Stop at the first occurrence of the 6th greedy token.
    let stop = want[5];
    let first = want.iter().position(|&t| t == stop).unwrap();
    let options = GenerateOptions {
        stop_tokens: vec![stop],
        ..greedy(8)
    };
    let out = generator.generate(&prompt, &options, &mut |_| true).unwrap();
    assert_eq!(out.tokens, want[..=first].to_vec());
    assert_eq!(out.stop, StopReason::StopToken(stop));

    let mut seen = 0;
    let out = generator
        .generate(&prompt, &greedy(8), &mut |_| {
            seen += 1;
            seen < 3
        })
        .unwrap();
    assert_eq!((out.tokens.len(), out.stop), (3, StopReason::Callback));

    // Capacity 10 holds the 8 prompt positions and 2 fed tokens: 3 tokens come out.
    let mut small = Generator::with_capacity(&model, &cpu, 10, DType::F32).unwrap();
    let out = small.generate(&prompt, &greedy(8), &mut |_| true).unwrap();
    assert_eq!(out.tokens, want[..3].to_vec());
    assert_eq!(out.stop, StopReason::ContextFull);

    let empty = small.generate(&[], &greedy(2), &mut |_| true).unwrap_err();
    assert!(matches!(empty, ModelError::Usage(_)), "{empty}");
    let too_long = small
        .generate(&[1; 11], &greedy(2), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(too_long.contains("11"), "{too_long}");
    let bad_token = small
        .generate(&[64], &greedy(2), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(bad_token.contains("64"), "{bad_token}");
    let none = small.generate(&prompt, &greedy(0), &mut |_| true).unwrap();
    assert!(none.tokens.is_empty());
}

#[test]
fn top_k_and_top_p_restrict_the_candidates() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1.
    let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    let draws = |options: SamplingOptions| {
        let mut sampler = Sampler::new(options, 1).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[sampler.sample(&logits).unwrap() as usize] += 1;
        }
        counts
    };
    let plain = draws(SamplingOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    });
    for (count, p) in plain.iter().zip([0.5, 0.3, 0.15, 0.05]) {
        let freq = *count as f64 / 4000.0;
        assert!((freq - p).abs() < 0.03, "frequency {freq} for probability {p}");
    }
    let top2 = draws(SamplingOptions {
        temperature: 1.0,
        top_k: 2,
        top_p: 1.0,
    });
    assert_eq!((top2[2], top2[3]), (0, 0));
    assert!(
        (top2[0] as f64 / 4000.0 - 0.625).abs() < 0.03,
        "renormalised 0.5/0.8: {top2:?}"
    );
    let nucleus = draws(SamplingOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.75,
    });
    assert_eq!((nucleus[2], nucleus[3]), (0, 0), "0.5 + 0.3 reaches 0.75: {nucleus:?}");
    let tiny_p = draws(SamplingOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.1,
    });
    assert_eq!(tiny_p[0], 4000);
    // Near-zero temperature sharpens towards the maximum; exactly zero is argmax.
    let cold = draws(SamplingOptions {
        temperature: 0.05,
        top_k: 0,
        top_p: 1.0,
    });
    assert!(cold[0] > 3990, "{cold:?}");
    let mut greedy = Sampler::new(SamplingOptions::greedy(), 0).unwrap();
    assert_eq!(greedy.sample(&[1.0, 3.0, 3.0, -1.0]).unwrap(), 1, "first maximum");
    assert!(greedy.sample(&[1.0, f32::NAN]).is_err());
    assert!(greedy.sample(&[]).is_err());
    assert!(Sampler::new(
        SamplingOptions {
            temperature: -1.0,
            ..SamplingOptions::greedy()
        },
        0
    )
    .is_err());
    assert!(Sampler::new(
        SamplingOptions {
            top_p: 0.0,
            ..SamplingOptions::greedy()
        },
        0
    )
    .is_err());
}

#[test]
fn kv_cache_places_rows_per_head_and_refuses_overflow() {
    let cfg = ModelConfig {
        n_layers: 1,
        ..ModelConfig::builtin("stories260K").unwrap()
    };
    let (n_kv, hd, cap) = (cfg.n_kv_heads, cfg.head_dim(), 5);
    let mut cache = KvCache::new(&cfg, cap, DType::F32);
    let rows = 2;
    let k: Vec<f32> = (0..n_kv * rows * hd).map(|i| i as f32).collect();
    let v: Vec<f32> = k.iter().map(|x| -x).collect();
    cache.advance(1).unwrap();
    cache
        .write(
            0,
            &Tensor::f32([n_kv, rows, hd], k.clone()),
            &Tensor::f32([n_kv, rows, hd], v),
        )
        .unwrap();
    cache.advance(rows).unwrap();
    let inputs = cache.inputs().unwrap();
    assert_eq!(inputs[0].0, "cache.k.0");
    let stored = inputs[0].1.to_f32_vec();
    for h in 0..n_kv {
        for t in 0..rows {
            for d in 0..hd {
                assert_eq!(stored[(h * cap + 1 + t) * hd + d], k[(h * rows + t) * hd + d]);
            }
        }
    }
    assert_eq!(inputs[1].1.to_f32_vec()[(cap + 1) * hd], -k[rows * hd]);
    let overflow = cache.write(
        0,
        &Tensor::f32([n_kv, 3, hd], vec![0.0; n_kv * 3 * hd]),
        &Tensor::f32([n_kv, 3, hd], vec![0.0; n_kv * 3 * hd]),
    );
    assert!(overflow.unwrap_err().to_string().contains("full"));
}

#[test]
#[ignore = "slow (a 15M-parameter random model); run: cargo test -p orion-models --test generate -- --ignored"]
fn stories15m_sized_model_generates_on_cpu() {
    let model = Model::random(ModelConfig::builtin("stories15M").unwrap(), 0).unwrap();
    let cpu = CpuBackend::default();
    let mut generator = Generator::with_capacity(&model, &cpu, 64, DType::F32).unwrap();
    let out = generator.generate(&[1, 400, 2000], &greedy(16), &mut |_| true).unwrap();
    assert_eq!(out.tokens.len(), 16);
    assert!(out.timing.decode_tokens_per_s() > 0.0);
    eprintln!("stories15M-sized: {:?}", out.timing);
}

/// A two-layer random model of `family` with a 300-position context.
fn small(family: &str) -> Model {
    let mut cfg = ModelConfig::builtin(family).unwrap();
    (
        cfg.n_layers,
        cfg.dim,
        cfg.n_heads,
        cfg.hidden_dim,
        cfg.vocab_size,
        cfg.max_seq_len,
    ) = (2, 32, 4, 64, 96, 300);
    cfg.n_kv_heads = if family == "gpt2" { 4 } else { 2 };
    Model::random(cfg, 11).unwrap()
}

/// A greedy generation that starts in the growing cache's 64-row decode program and continues
/// through the 128-, 192- and 256-row ones (each compiled when first needed) gives the re-forward's
/// tokens for both families, also when the generator is reused after a longer generation (the cache
/// shrinks back, its stale rows masked).
#[test]
fn greedy_tokens_across_cache_sizes_equal_the_reforward() {
    let cpu = CpuBackend::default();
    for family in ["gpt2", "stories260K"] {
        let model = small(family);
        let capacity = 300;
        assert_eq!(cache_row_sizes(capacity), vec![64, 128, 192, 256, 300]);
        let mut generator = Generator::with_capacity(&model, &cpu, capacity, DType::F32).unwrap();
        // Only the smallest program is compiled up front; the others when the cache first grows.
        assert_eq!(generator.compiled_decode_sizes(), vec![64], "{family}");
        // Prompt inside the first size; 150 new tokens reach positions up to 209 (four sizes).
        let prompt: Vec<u32> = (0..FIRST_ROWS as u32 - 4).map(|i| (i * 37 + 5) % 96).collect();
        let long = generator.generate(&prompt, &greedy(150), &mut |_| true).unwrap();
        let want = reforward_greedy(&model, &cpu, &prompt, 150).unwrap();
        assert_eq!(long.tokens, want, "{family}: growing cache vs re-forward");
        assert_eq!(generator.compiled_decode_sizes(), vec![64, 128, 192, 256], "{family}");
        // Reused: the cache starts from its first size again, its old rows masked.
        let short_prompt = [3, 1, 4, 1, 5];
        let short = generator.generate(&short_prompt, &greedy(70), &mut |_| true).unwrap();
        let want = reforward_greedy(&model, &cpu, &short_prompt, 70).unwrap();
        assert_eq!(short.tokens, want, "{family}: reused generator vs re-forward");
    }
}
