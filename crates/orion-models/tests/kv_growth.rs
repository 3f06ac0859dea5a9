//! Generation across the growing KV cache's sizes: a greedy generation that starts in the
//! 64-row decode program and continues through the 128- and 256-row ones gives the same tokens as
//! re-running the full forward graph on the growing sequence, for both model families, also when
//! the generator is reused after a longer generation (the cache shrinks back and its stale rows
//! stay masked).

use orion_core::cpu::CpuBackend;
use orion_core::DType;
use orion_models::generate::kv_cache::{cache_row_sizes, FIRST_ROWS};
use orion_models::generate::{reforward_greedy, GenerateOptions, Generator};
use orion_models::{Model, ModelConfig};

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

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    }
}

#[test]
fn greedy_tokens_across_cache_sizes_equal_the_reforward() {
    let cpu = CpuBackend::default();
    for family in ["gpt2", "stories260K"] {
        let model = small(family);
        let capacity = 300;
        assert_eq!(cache_row_sizes(capacity), vec![64, 128, 256, 300]);
        let mut generator = Generator::with_capacity(&model, &cpu, capacity, DType::F32).unwrap();
        // Prompt inside the first size; 150 new tokens reach positions up to 209 (three sizes).
        let prompt: Vec<u32> = (0..FIRST_ROWS as u32 - 4).map(|i| (i * 37 + 5) % 96).collect();
        let long = generator.generate(&prompt, &greedy(150), &mut |_| true).unwrap();
        let want = reforward_greedy(&model, &cpu, &prompt, 150).unwrap();
        assert_eq!(long.tokens, want, "{family}: growing cache vs re-forward");
        // Reused: the cache starts from its first size again, its old rows masked.
        let short_prompt = [3, 1, 4, 1, 5];
        let short = generator.generate(&short_prompt, &greedy(70), &mut |_| true).unwrap();
        let want = reforward_greedy(&model, &cpu, &short_prompt, 70).unwrap();
        assert_eq!(short.tokens, want, "{family}: reused generator vs re-forward");
    }
}
