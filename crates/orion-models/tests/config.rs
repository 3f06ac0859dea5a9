//! Model configurations: built-in sizes, Hugging Face `config.json` parsing, and errors naming fields.

use orion_models::config::{ModelConfig, BUILTIN_NAMES};
use orion_models::{Family, ModelError};
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(rel)
}

/// llama2.c `model.py`: hidden = 4·dim, then 2/3 of it, rounded up to a multiple of `multiple_of`.
fn llama2c_hidden(dim: usize, multiple_of: usize) -> usize {
    let h = 2 * (4 * dim) / 3;
    h.div_ceil(multiple_of) * multiple_of
}

#[test]
fn builtin_sizes_match_the_published_tables() {
    // (name, dim, layers, heads, kv heads, vocab, ctx, multiple_of) from llama2.c README / docs.
    let table = [
        ("stories260K", 64, 5, 8, 4, 512, 512, 4),
        ("stories15M", 288, 6, 6, 6, 32000, 256, 32),
        ("stories42M", 512, 8, 8, 8, 32000, 1024, 32),
        ("stories110M", 768, 12, 12, 12, 32000, 1024, 32),
    ];
    for (name, dim, layers, heads, kv, vocab, ctx, multiple_of) in table {
        let cfg = ModelConfig::builtin(name).unwrap();
        assert_eq!(cfg.family, Family::Llama, "{name}");
        assert_eq!(
            (
                cfg.dim,
                cfg.n_layers,
                cfg.n_heads,
                cfg.n_kv_heads,
                cfg.vocab_size,
                cfg.max_seq_len
            ),
            (dim, layers, heads, kv, vocab, ctx),
            "{name}"
        );
        assert_eq!(cfg.hidden_dim, llama2c_hidden(dim, multiple_of), "{name}");
        assert!(cfg.tied_embeddings && !cfg.biases, "{name}");
    }
    let gpt2 = ModelConfig::builtin("gpt2").unwrap();
    assert_eq!(
        (
            gpt2.dim,
            gpt2.n_layers,
            gpt2.n_heads,
            gpt2.vocab_size,
            gpt2.max_seq_len,
            gpt2.hidden_dim
        ),
        (768, 12, 12, 50257, 1024, 3072)
    );
    assert!(gpt2.tied_embeddings && gpt2.biases);
    for name in BUILTIN_NAMES {
        assert!(ModelConfig::builtin(name).is_ok(), "{name}");
    }
    let err = ModelConfig::builtin("stories1B").unwrap_err().to_string();
    assert!(err.contains("stories1B") && err.contains("stories15M"), "{err}");
}

#[test]
fn hf_fixture_configs_parse() {
    let gpt2 = ModelConfig::from_file(&fixture("gpt2_tiny/config.json")).unwrap();
    assert_eq!(gpt2.family, Family::Gpt2);
    assert_eq!((gpt2.dim, gpt2.n_layers, gpt2.n_heads, gpt2.vocab_size), (32, 2, 4, 64));
    assert_eq!(
        (gpt2.hidden_dim, gpt2.max_seq_len),
        (128, 32),
        "n_inner null means 4·n_embd"
    );
    assert_eq!(gpt2.norm_eps, 1e-5);

    let llama = ModelConfig::from_file(&fixture("llama_tiny/config.json")).unwrap();
    assert_eq!(llama.family, Family::Llama);
    assert_eq!(
        (llama.dim, llama.n_heads, llama.n_kv_heads, llama.hidden_dim),
        (32, 4, 2, 64)
    );
    assert_eq!(llama.rope_theta, 10000.0, "from rope_parameters (transformers 5)");
    assert!(!llama.tied_embeddings && !llama.biases);
    assert_eq!(llama.kv_dim(), 16);
}

#[test]
fn transformers4_llama_config_with_top_level_rope_theta() {
    let json = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
        "vocab_size": 100, "tie_word_embeddings": true, "rope_scaling": null}"#;
    let cfg = ModelConfig::from_hf_json(json).unwrap();
    assert_eq!(cfg.rope_theta, 500000.0);
    assert_eq!(cfg.norm_eps, 1e-6);
    assert!(cfg.tied_embeddings);
    assert_eq!(cfg.head_dim(), 8);
}

fn config_error(json: &str) -> String {
    match ModelConfig::from_json(json) {
        Err(ModelError::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    let missing =
        config_error(r#"{"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_positions": 8, "vocab_size": 9}"#);
    assert!(missing.contains("n_embd") && missing.contains("missing"), "{missing}");
    let wrong_type = config_error(
        r#"{"model_type": "gpt2", "n_embd": "big", "n_layer": 2, "n_head": 2, "n_positions": 8, "vocab_size": 9}"#,
    );
    assert!(wrong_type.contains("n_embd"), "{wrong_type}");
    let family = config_error(r#"{"model_type": "bert"}"#);
    assert!(family.contains("model_type") && family.contains("bert"), "{family}");
    let no_type = config_error(r#"{"hidden_size": 3}"#);
    assert!(no_type.contains("model_type"), "{no_type}");
    let scaling = config_error(
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 8, "max_position_embeddings": 128, "vocab_size": 100,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0}}"#,
    );
    assert!(
        scaling.contains("rope_scaling") && scaling.contains("linear"),
        "{scaling}"
    );
    let gqa = config_error(
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 3, "max_position_embeddings": 128, "vocab_size": 100}"#,
    );
    assert!(gqa.contains("n_kv_heads"), "{gqa}");
    assert!(config_error("not json").contains("JSON"));
}

#[test]
fn file_errors_name_the_file() {
    let missing = ModelConfig::from_file(&fixture("nowhere/config.json")).unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
    assert!(missing.to_string().contains("nowhere"));
}

#[test]
fn serialised_config_round_trips() {
    let cfg = ModelConfig::builtin("stories260K").unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains("\"family\":\"llama\""), "{json}");
    assert_eq!(ModelConfig::from_json(&json).unwrap(), cfg);
    let mut bad = cfg.clone();
    bad.dim = 63;
    let err = ModelConfig::from_json(&serde_json::to_string(&bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dim") && err.contains("n_heads"), "{err}");
}
