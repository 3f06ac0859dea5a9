//! Reading `.safetensors` files (memory-mapped) and mapping Hugging Face names to canonical names.
//!
//! Invariants: every tensor comes out as an owned f32 `Tensor` (F32 copied, F16 and BF16 widened
//! exactly); any other element type is an error naming the tensor. Files written by
//! `weights::export` carry `orion.format = canonical` in their metadata and are taken by name
//! unchanged; any other file is read with the Hugging Face names of its family: GPT-2 (optional
//! `transformer.` prefix, `Conv1D` matrices `[in, out]` transposed, fused `c_attn` split into q, k,
//! v) or Llama (names already canonical). Known non-weight buffers are skipped; anything else that
//! the model does not use is an error.

use super::mmap::MappedFile;
use super::TensorMap;
use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use ::safetensors::{Dtype, SafeTensors};
use orion_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata key of the file layout written by `export` (value [`CANONICAL_FORMAT`]).
pub const FORMAT_KEY: &str = "orion.format";
/// The value of [`FORMAT_KEY`] for files in canonical names and layouts.
pub const CANONICAL_FORMAT: &str = "canonical";
/// Metadata key holding the `ModelConfig` as JSON.
pub const CONFIG_KEY: &str = "orion.config";

/// The tensors (as f32) and the `__metadata__` map of a safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl SafetensorsFile {
    /// True for files written by `weights::export` (canonical names and layouts).
    pub fn is_canonical(&self) -> bool {
        self.metadata.get(FORMAT_KEY).map(String::as_str) == Some(CANONICAL_FORMAT)
    }

    /// The configuration stored by `weights::export`, if any.
    pub fn stored_config(&self, path: &Path) -> Result<Option<ModelConfig>> {
        match self.metadata.get(CONFIG_KEY) {
            None => Ok(None),
            Some(json) => {
                let cfg: ModelConfig = serde_json::from_str(json)
                    .map_err(|e| ModelError::format(path, format!("metadata {CONFIG_KEY:?} is not a config: {e}")))?;
                cfg.validate()?;
                Ok(Some(cfg))
            }
        }
    }
}

/// Reads every tensor of the safetensors file at `path`.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsFile> {
    let file = MappedFile::open(path)?;
    parse_safetensors(file.bytes(), path)
}

/// Parses the bytes of a safetensors file (`path` only names it in errors).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<SafetensorsFile> {
    let parsed = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::format(path, format!("not a safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ModelError::format(path, format!("not a safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in parsed.iter() {
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            ModelError::format(
                path,
                format!(
                    "tensor {name:?}: element type {:?} is not supported (F32, F16, BF16)",
                    view.dtype()
                ),
            )
        })?;
        let tensor = Tensor::new(
            orion_core::DType::F32,
            view.shape().to_vec(),
            orion_core::TensorData::Float(values),
        )
        .map_err(|e| ModelError::format(path, format!("tensor {name:?}: {e}")))?;
        tensors.insert(name.to_string(), tensor);
    }
    Ok(SafetensorsFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Little-endian elements of `dtype` widened to f32, or `None` for an unsupported type.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            data.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// Renames and re-lays Hugging Face tensors of `cfg`'s family into canonical ones.
pub fn hf_to_canonical(
    cfg: &ModelConfig,
    tensors: BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    match cfg.family {
        Family::Llama => {
            let tied = cfg.tied_embeddings;
            let skip = move |name: &str| name.ends_with(".rotary_emb.inv_freq") || (tied && name == "lm_head.weight");
            Ok(tensors.into_iter().filter(|(name, _)| !skip(name)).collect())
        }
        Family::Gpt2 => gpt2_from_hf(cfg, tensors, path),
    }
}

/// GPT-2 from Hugging Face: strip `transformer.`, transpose `Conv1D` weights, split `c_attn`.
fn gpt2_from_hf(cfg: &ModelConfig, tensors: BTreeMap<String, Tensor>, path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let tied = cfg.tied_embeddings;
    let stripped = tensors
        .into_iter()
        .map(|(name, t)| (name.strip_prefix("transformer.").map(str::to_string).unwrap_or(name), t))
        .filter(|(name, _)| {
            !(name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || (tied && name == "lm_head.weight"))
        })
        .collect();
    let mut file = TensorMap::new(stripped, path);
    let (d, h, v) = (cfg.dim, cfg.hidden_dim, cfg.vocab_size);
    let mut out = BTreeMap::new();
    out.insert("wte.weight".into(), file.take("wte.weight", &[v, d])?);
    out.insert("wpe.weight".into(), file.take("wpe.weight", &[cfg.max_seq_len, d])?);
    for i in 0..cfg.n_layers {
        for name in [
            "ln_1.weight",
            "ln_1.bias",
            "ln_2.weight",
            "ln_2.bias",
            "attn.c_proj.bias",
            "mlp.c_fc.bias",
            "mlp.c_proj.bias",
        ] {
            let full = format!("h.{i}.{name}");
            let len = if name == "mlp.c_fc.bias" { h } else { d };
            out.insert(full.clone(), file.take(&full, &[len])?);
        }
        let c_attn = transpose(&file.take(&format!("h.{i}.attn.c_attn.weight"), &[d, 3 * d])?);
        let c_attn_bias = file.take(&format!("h.{i}.attn.c_attn.bias"), &[3 * d])?;
        let (w, b) = (c_attn.to_f32_vec(), c_attn_bias.to_f32_vec());
        for (part, proj) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
            let rows = w[part * d * d..(part + 1) * d * d].to_vec();
            out.insert(format!("h.{i}.attn.{proj}.weight"), Tensor::f32([d, d], rows));
            out.insert(
                format!("h.{i}.attn.{proj}.bias"),
                Tensor::f32([d], b[part * d..(part + 1) * d].to_vec()),
            );
        }
        for (name, shape) in [
            ("attn.c_proj.weight", [d, d]),
            ("mlp.c_fc.weight", [d, h]),
            ("mlp.c_proj.weight", [h, d]),
        ] {
            let full = format!("h.{i}.{name}");
            out.insert(full.clone(), transpose(&file.take(&full, &shape)?));
        }
    }
    out.insert("ln_f.weight".into(), file.take("ln_f.weight", &[d])?);
    out.insert("ln_f.bias".into(), file.take("ln_f.bias", &[d])?);
    if !tied {
        out.insert("lm_head.weight".into(), file.take("lm_head.weight", &[v, d])?);
    }
    file.finish()?;
    Ok(out)
}

/// The transpose of a matrix `[r, c]` as `[c, r]`.
pub fn transpose(t: &Tensor) -> Tensor {
    let dims = t.shape().dims();
    let (r, c) = match dims {
        [r, c] => (*r, *c),
        _ => return t.clone(),
    };
    let src = t.to_f32_vec();
    let mut out = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = src[i * c + j];
        }
    }
    Tensor::f32([c, r], out)
}
