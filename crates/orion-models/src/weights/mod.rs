//! Weight files: loading a `Model` from safetensors (Hugging Face or canonical) or llama2.c `.bin`
//! files, and exporting to canonical safetensors.
//!
//! - `mmap`: read-only memory maps (the crate's one `unsafe` module);
//! - `safetensors`: safetensors parsing, dtype widening, Hugging Face → canonical names;
//! - `llama2c`: llama2.c legacy and version-1 checkpoints (with the RoPE row permutation);
//! - `export`: canonical safetensors written atomically.
//!
//! The format is recognised from the content (llama2.c magic, safetensors header), falling back to
//! the `.bin` extension for legacy llama2.c files, which have no magic. Invariant: every path that
//! reads user bytes returns `ModelError` (never panics); a file with missing, extra or mis-shaped
//! tensors is refused with an error naming the tensor and both shapes.

pub mod export;
pub mod llama2c;
pub mod mmap;
pub mod safetensors;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Model;
use mmap::MappedFile;
use orion_core::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// The kinds of weight file `Model::load` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFileFormat {
    Safetensors,
    /// llama2.c `.bin`, legacy or versioned (the header says which).
    Llama2c,
}

/// Recognises a weight file from its first bytes (and, for legacy llama2.c files, its extension).
pub fn detect_format(bytes: &[u8], path: &Path) -> Result<WeightFileFormat> {
    if llama2c::has_magic(bytes) {
        return Ok(WeightFileFormat::Llama2c);
    }
    let json_header = bytes.len() > 8 && bytes[8] == b'{';
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match (json_header, extension) {
        (true, _) | (false, "safetensors") => Ok(WeightFileFormat::Safetensors),
        (false, "bin") => Ok(WeightFileFormat::Llama2c),
        _ => Err(ModelError::format(
            path,
            "unrecognised weight file (expected a .safetensors file or a llama2.c .bin checkpoint)",
        )),
    }
}

impl Model {
    /// Loads a model from a weight file or a directory holding `model.safetensors`.
    ///
    /// The configuration comes from `config_path` when given (a Hugging Face `config.json` or a
    /// serialised `ModelConfig`), else from the file itself (llama2.c header, or the config stored
    /// by `export`), else from `config.json` next to the weights.
    pub fn load(weights_path: &Path, config_path: Option<&Path>) -> Result<Model> {
        let (file_path, sibling_config) = if weights_path.is_dir() {
            (weights_path.join("model.safetensors"), weights_path.join("config.json"))
        } else {
            let dir = weights_path.parent().map(Path::to_path_buf).unwrap_or_default();
            (weights_path.to_path_buf(), dir.join("config.json"))
        };
        let mapped = MappedFile::open(&file_path)?;
        let bytes = mapped.bytes();
        match detect_format(bytes, &file_path)? {
            WeightFileFormat::Llama2c => {
                let (header_cfg, tensors) = llama2c::parse_llama2c(bytes, &file_path)?;
                let cfg = match config_path {
                    Some(p) => ModelConfig::from_file(p)?,
                    None => header_cfg,
                };
                Model::new(cfg, tensors)
            }
            WeightFileFormat::Safetensors => {
                let file = safetensors::parse_safetensors(bytes, &file_path)?;
                drop(mapped);
                let cfg = match (config_path, file.stored_config(&file_path)?) {
                    (Some(p), _) => ModelConfig::from_file(p)?,
                    (None, Some(stored)) => stored,
                    (None, None) if sibling_config.is_file() => ModelConfig::from_file(&sibling_config)?,
                    (None, None) => {
                        return Err(ModelError::format(
                            &file_path,
                            format!(
                                "no model configuration: pass one, or put config.json at {}",
                                sibling_config.display()
                            ),
                        ))
                    }
                };
                let tensors = if file.is_canonical() {
                    file.tensors
                } else {
                    safetensors::hf_to_canonical(&cfg, file.tensors, &file_path)?
                };
                Model::new(cfg, tensors)
            }
        }
    }
}

/// Tensors read from a file, handed out one by one with shape checks; leftovers are an error.
#[derive(Debug)]
pub(crate) struct TensorMap<'p> {
    tensors: BTreeMap<String, Tensor>,
    path: &'p Path,
}

impl<'p> TensorMap<'p> {
    pub(crate) fn new(tensors: BTreeMap<String, Tensor>, path: &'p Path) -> TensorMap<'p> {
        TensorMap { tensors, path }
    }

    /// Removes and returns tensor `name`, which must have shape `expected`.
    pub(crate) fn take(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let tensor = self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: expected.to_vec(),
        })?;
        if tensor.shape().dims() != expected {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: tensor.shape().dims().to_vec(),
            });
        }
        Ok(tensor)
    }

    /// Fails on the first tensor that nobody took.
    pub(crate) fn finish(self) -> Result<()> {
        match self.tensors.into_iter().next() {
            None => Ok(()),
            Some((name, t)) => Err(ModelError::UnexpectedTensor {
                name: format!("{name} (in {})", self.path.display()),
                found: t.shape().dims().to_vec(),
            }),
        }
    }
}
