//! Model hyper-parameters: the `ModelConfig` every other module reads, the built-in configurations,
//! and parsing of Hugging Face `config.json` files (GPT-2 and Llama families).
//!
//! Invariants: a `ModelConfig` returned by any constructor here has passed [`ModelConfig::validate`]:
//! every extent is non-zero, `dim` is a multiple of `n_heads`, `n_heads` a multiple of `n_kv_heads`,
//! the head dimension is even for Llama (RoPE rotates pairs), GPT-2 has `n_kv_heads == n_heads`.
//! Errors name the offending field (`ModelError::Config`).
//!
//! Built-in sizes are taken from the sources: GPT-2 124M from Hugging Face's `gpt2/config.json`
//! (n_embd 768, n_layer 12, n_head 12, n_positions 1024, vocab 50257, layer_norm_epsilon 1e-5); the
//! TinyStories Llamas from the model table of karpathy/llama2.c `README.md` (260K: 64/5/8/4 ctx 512;
//! 15M: 288/6/6/6 ctx 256; 42M: 512/8/8/8 ctx 1024; 110M: 768/12/12/12 ctx 1024, vocab 32000) and
//! `doc/stories260K.md` (vocab 512, `multiple_of=4`); hidden sizes follow llama2.c `model.py`
//! (`4·dim`, then `2/3`, rounded up to `multiple_of`: 172, 768, 1376, 2048); norm eps 1e-5, θ 10000.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Architecture family: decides the block structure and the weight names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// LayerNorm, learned positions, tanh-GELU MLP, multi-head attention.
    Gpt2,
    /// RMSNorm, RoPE (rotate-half form), SwiGLU MLP, grouped-query attention.
    Llama,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
        }
    }
}

/// Hyper-parameters of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    /// Model (residual stream) width.
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); equals `n_heads` for GPT-2.
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    /// Width of the MLP's hidden layer.
    pub hidden_dim: usize,
    /// Context length (GPT-2: rows of the position table).
    pub max_seq_len: usize,
    pub norm_eps: f32,
    /// RoPE base θ (Llama only; ignored by GPT-2).
    pub rope_theta: f32,
    /// The output head reuses the token embedding.
    pub tied_embeddings: bool,
    /// Linear layers carry biases (GPT-2: always; Llama: `attention_bias`/`mlp_bias`).
    pub biases: bool,
}

/// Names accepted by [`ModelConfig::builtin`].
pub const BUILTIN_NAMES: [&str; 5] = ["gpt2", "stories260K", "stories15M", "stories42M", "stories110M"];

impl ModelConfig {
    /// A built-in configuration by name (see [`BUILTIN_NAMES`]).
    pub fn builtin(name: &str) -> Result<ModelConfig> {
        let cfg = match name {
            "gpt2" => ModelConfig {
                family: Family::Gpt2,
                dim: 768,
                n_layers: 12,
                n_heads: 12,
                n_kv_heads: 12,
                vocab_size: 50257,
                hidden_dim: 3072,
                max_seq_len: 1024,
                norm_eps: 1e-5,
                rope_theta: 10000.0,
                tied_embeddings: true,
                biases: true,
            },
            "stories260K" => stories(64, 5, 8, 4, 512, 172, 512),
            "stories15M" => stories(288, 6, 6, 6, 32000, 768, 256),
            "stories42M" => stories(512, 8, 8, 8, 32000, 1376, 1024),
            "stories110M" => stories(768, 12, 12, 12, 32000, 2048, 1024),
            other => {
                return Err(ModelError::Config(format!(
                    "unknown built-in model {other:?}; known: {}",
                    BUILTIN_NAMES.join(", ")
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads.max(1)
    }

    /// Width of the key/value projections (`n_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Checks the invariants listed in the module header.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("hidden_dim", self.hidden_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(ModelError::Config(format!("field `{name}` must be positive")));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(ModelError::Config(format!(
                "`dim` {} is not a multiple of `n_heads` {}",
                self.dim, self.n_heads
            )));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ModelError::Config(format!(
                "`n_heads` {} is not a multiple of `n_kv_heads` {}",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(ModelError::Config(format!(
                "`norm_eps` {} must be positive",
                self.norm_eps
            )));
        }
        match self.family {
            Family::Gpt2 if self.n_kv_heads != self.n_heads => Err(ModelError::Config(format!(
                "GPT-2 has no grouped-query attention: `n_kv_heads` {} != `n_heads` {}",
                self.n_kv_heads, self.n_heads
            ))),
            Family::Llama if !self.head_dim().is_multiple_of(2) => Err(ModelError::Config(format!(
                "head dimension {} (`dim` / `n_heads`) must be even for RoPE",
                self.head_dim()
            ))),
            Family::Llama if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) => Err(ModelError::Config(
                format!("`rope_theta` {} must be greater than 1", self.rope_theta),
            )),
            Family::Gpt2 | Family::Llama => Ok(()),
        }
    }

    /// Reads a configuration file: a serialised `ModelConfig` (it has a `family` field) or a
    /// Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        ModelConfig::from_json(&text).map_err(|e| match e {
            ModelError::Config(message) => ModelError::format(path, message),
            other => other,
        })
    }

    /// Parses a serialised `ModelConfig` (with `family`) or a Hugging Face `config.json`.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| ModelError::Config(format!("config is not JSON: {e}")))?;
        if json.get("family").is_none() {
            return ModelConfig::from_hf_json(text);
        }
        let cfg: ModelConfig = serde_json::from_value(json).map_err(|e| ModelError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses the text of a Hugging Face `config.json` (family from `model_type`).
    pub fn from_hf_json(text: &str) -> Result<ModelConfig> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| ModelError::Config(format!("config.json is not JSON: {e}")))?;
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::Config("field `model_type` is missing or not a string".into()))?;
        let cfg = match model_type {
            "gpt2" => parse_hf_gpt2(&json)?,
            "llama" => parse_hf_llama(&json)?,
            other => {
                return Err(ModelError::Config(format!(
                    "field `model_type`: {other:?} is not supported (gpt2, llama)"
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A TinyStories Llama as trained by llama2.c (tied head, no biases).
fn stories(
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    vocab_size: usize,
    hidden_dim: usize,
    max_seq_len: usize,
) -> ModelConfig {
    ModelConfig {
        family: Family::Llama,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        hidden_dim,
        max_seq_len,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        tied_embeddings: true,
        biases: false,
    }
}

fn parse_hf_gpt2(json: &Value) -> Result<ModelConfig> {
    let dim = usize_field(json, "n_embd")?;
    let hidden_dim = match json.get("n_inner") {
        None | Some(Value::Null) => 4 * dim,
        Some(_) => usize_field(json, "n_inner")?,
    };
    let activation = optional_str(json, "activation_function")?.unwrap_or("gelu_new");
    if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(ModelError::Config(format!(
            "field `activation_function`: {activation:?} is not supported (gelu_new)"
        )));
    }
    let n_heads = usize_field(json, "n_head")?;
    Ok(ModelConfig {
        family: Family::Gpt2,
        dim,
        n_layers: usize_field(json, "n_layer")?,
        n_heads,
        n_kv_heads: n_heads,
        vocab_size: usize_field(json, "vocab_size")?,
        hidden_dim,
        max_seq_len: usize_field(json, "n_positions")?,
        norm_eps: optional_f32(json, "layer_norm_epsilon")?.unwrap_or(1e-5),
        rope_theta: 10000.0,
        tied_embeddings: optional_bool(json, "tie_word_embeddings")?.unwrap_or(true),
        biases: true,
    })
}

fn parse_hf_llama(json: &Value) -> Result<ModelConfig> {
    let dim = usize_field(json, "hidden_size")?;
    let n_heads = usize_field(json, "num_attention_heads")?;
    let n_kv_heads = match json.get("num_key_value_heads") {
        None | Some(Value::Null) => n_heads,
        Some(_) => usize_field(json, "num_key_value_heads")?,
    };
    if let Some(head_dim) = optional_usize(json, "head_dim")? {
        if n_heads == 0 || head_dim * n_heads != dim {
            return Err(ModelError::Config(format!(
                "field `head_dim`: {head_dim} differs from `hidden_size` / `num_attention_heads` (not supported)"
            )));
        }
    }
    let activation = optional_str(json, "hidden_act")?.unwrap_or("silu");
    if activation != "silu" {
        return Err(ModelError::Config(format!(
            "field `hidden_act`: {activation:?} is not supported (silu)"
        )));
    }
    let attention_bias = optional_bool(json, "attention_bias")?.unwrap_or(false);
    let mlp_bias = optional_bool(json, "mlp_bias")?.unwrap_or(false);
    if attention_bias != mlp_bias {
        return Err(ModelError::Config(
            "fields `attention_bias` and `mlp_bias` differ (only all or no biases are supported)".into(),
        ));
    }
    Ok(ModelConfig {
        family: Family::Llama,
        dim,
        n_layers: usize_field(json, "num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        vocab_size: usize_field(json, "vocab_size")?,
        hidden_dim: usize_field(json, "intermediate_size")?,
        max_seq_len: usize_field(json, "max_position_embeddings")?,
        norm_eps: optional_f32(json, "rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: llama_rope_theta(json)?,
        tied_embeddings: optional_bool(json, "tie_word_embeddings")?.unwrap_or(false),
        biases: attention_bias,
    })
}

/// `rope_theta` at the top level (transformers 4) or inside `rope_parameters` (transformers 5);
/// any RoPE scaling other than the default is refused.
fn llama_rope_theta(json: &Value) -> Result<f32> {
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(Value::Object(params)) = json.get(key) {
            let kind = params
                .get("rope_type")
                .or_else(|| params.get("type"))
                .and_then(Value::as_str);
            if kind.is_some_and(|k| k != "default") {
                return Err(ModelError::Config(format!(
                    "field `{key}`: rope type {:?} is not supported (default)",
                    kind.unwrap_or("")
                )));
            }
        }
    }
    if let Some(theta) = optional_f32(json, "rope_theta")? {
        return Ok(theta);
    }
    match json.get("rope_parameters").and_then(|p| p.get("rope_theta")) {
        None | Some(Value::Null) => Ok(10000.0),
        Some(v) => v
            .as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| ModelError::Config("field `rope_parameters.rope_theta` is not a number".into())),
    }
}

fn usize_field(json: &Value, name: &str) -> Result<usize> {
    optional_usize(json, name)?.ok_or_else(|| ModelError::Config(format!("field `{name}` is missing")))
}

fn optional_usize(json: &Value, name: &str) -> Result<Option<usize>> {
    match json.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| ModelError::Config(format!("field `{name}` must be a non-negative integer, got {v}"))),
    }
}

fn optional_f32(json: &Value, name: &str) -> Result<Option<f32>> {
    match json.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| ModelError::Config(format!("field `{name}` must be a number, got {v}"))),
    }
}

fn optional_bool(json: &Value, name: &str) -> Result<Option<bool>> {
    match json.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| ModelError::Config(format!("field `{name}` must be true or false, got {v}"))),
    }
}

fn optional_str<'a>(json: &'a Value, name: &str) -> Result<Option<&'a str>> {
    match json.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| ModelError::Config(format!("field `{name}` must be a string, got {v}"))),
    }
}
