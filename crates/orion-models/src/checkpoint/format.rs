//! The byte layout of a checkpoint file, and the CRC-32 that guards it.
//!
//! ```text
//! "ORIONCK1"                  8 bytes, magic (the trailing digit is the format version)
//! payload                     a complete safetensors file:
//!                               weight/<name>   F32, the weight's shape
//!                               adam_m/<name>   F32, [len]   AdamW first moment
//!                               adam_v/<name>   F32, [len]   AdamW second moment
//!                             and in __metadata__ `orion.checkpoint` = the JSON manifest (step,
//!                             config, optimiser step and no-decay set, loss scaler, RNG, products
//!                             precision — absent in older files: f32 —, data, extra)
//! payload length              u64 little-endian
//! CRC-32 (IEEE)               u32 little-endian, of every byte before it
//! ```
//! Invariant: decoding checks magic, length and CRC before looking at the payload, so any truncation
//! or flipped byte is reported as a format error on the path; f32 values are copied as raw bits.

use super::{Checkpoint, RngState};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::optim::{AdamWState, LossScalerState};
use ::safetensors::tensor::TensorView;
use ::safetensors::{Dtype, SafeTensors};
use orion_core::cpu::ProductPrecision;
use orion_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// First bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"ORIONCK1";
const MANIFEST_KEY: &str = "orion.checkpoint";
const TRAILER_LEN: usize = 8 + 4;
const WEIGHT_PREFIX: &str = "weight/";
const M_PREFIX: &str = "adam_m/";
const V_PREFIX: &str = "adam_v/";

/// The JSON part of a checkpoint (everything but the tensors).
#[derive(Serialize, Deserialize)]
struct Manifest {
    step: u64,
    config: ModelConfig,
    optimizer_step: u64,
    no_decay: BTreeSet<String>,
    loss_scaler: LossScalerState,
    rng: RngManifest,
    /// Absent in checkpoints written before the precision was recorded (all f32).
    #[serde(default)]
    products: ProductsManifest,
    data: serde_json::Value,
    extra: serde_json::Value,
}

/// [`ProductPrecision`] as the manifest spells it (`"f32"`, `"bf16"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProductsManifest {
    #[default]
    F32,
    Bf16,
}

impl From<ProductPrecision> for ProductsManifest {
    fn from(p: ProductPrecision) -> ProductsManifest {
        match p {
            ProductPrecision::F32 => ProductsManifest::F32,
            ProductPrecision::Bf16 => ProductsManifest::Bf16,
        }
    }
}

impl From<ProductsManifest> for ProductPrecision {
    fn from(p: ProductsManifest) -> ProductPrecision {
        match p {
            ProductsManifest::F32 => ProductPrecision::F32,
            ProductsManifest::Bf16 => ProductPrecision::Bf16,
        }
    }
}

/// [`RngState`] with the 128-bit word position as a decimal string (JSON numbers stop at 64 bits).
#[derive(Serialize, Deserialize)]
struct RngManifest {
    seed: [u8; 32],
    stream: u64,
    word_pos: String,
}

/// CRC-32 (IEEE 802.3, as used by zip and PNG) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Continues a CRC-32 computed over earlier bytes (`crc32_update(crc32(a), b) == crc32(a ++ b)`).
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc);
    hasher.update(bytes);
    hasher.finalize()
}

/// The complete file content for `ckpt`; `path` only names errors.
pub fn encode(ckpt: &Checkpoint, path: &Path) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &ckpt.weights {
        let values = match (t.dtype(), t.as_f32()) {
            (DType::F32, Some(v)) => v,
            _ => {
                return Err(ModelError::format(
                    path,
                    format!("weight {name:?} is {}, checkpoints hold f32 weights", t.dtype()),
                ))
            }
        };
        tensors.push((
            format!("{WEIGHT_PREFIX}{name}"),
            t.shape().dims().to_vec(),
            f32_bytes(values),
        ));
    }
    for (prefix, moments) in [(M_PREFIX, &ckpt.optimizer.m), (V_PREFIX, &ckpt.optimizer.v)] {
        for (name, values) in moments {
            tensors.push((format!("{prefix}{name}"), vec![values.len()], f32_bytes(values)));
        }
    }
    let manifest = Manifest {
        step: ckpt.step,
        config: ckpt.config.clone(),
        optimizer_step: ckpt.optimizer.step,
        no_decay: ckpt.optimizer.no_decay.clone(),
        loss_scaler: ckpt.loss_scaler.clone(),
        rng: RngManifest {
            seed: ckpt.rng.seed,
            stream: ckpt.rng.stream,
            word_pos: ckpt.rng.word_pos.to_string(),
        },
        products: ckpt.products.into(),
        data: ckpt.data.clone(),
        extra: ckpt.extra.clone(),
    };
    let manifest = serde_json::to_string(&manifest)
        .map_err(|e| ModelError::format(path, format!("cannot encode the manifest: {e}")))?;
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, bytes) in &tensors {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| ModelError::format(path, format!("tensor {name:?}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([
        ("format".to_string(), "orion-checkpoint".to_string()),
        (MANIFEST_KEY.to_string(), manifest),
    ]);
    let payload = ::safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::format(path, format!("cannot encode the tensors: {e}")))?;
    let mut out = Vec::with_capacity(MAGIC.len() + payload.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Verifies and decodes a checkpoint file's content; errors name `path`.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let payload = verified_payload(bytes, path)?;
    let bad = |message: String| ModelError::format(path, message);
    let (_, header) = SafeTensors::read_metadata(payload).map_err(|e| bad(format!("bad tensor header: {e}")))?;
    let manifest_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MANIFEST_KEY))
        .ok_or_else(|| bad(format!("no {MANIFEST_KEY:?} manifest in the tensor header")))?;
    let manifest: Manifest =
        serde_json::from_str(manifest_json).map_err(|e| bad(format!("bad checkpoint manifest: {e}")))?;
    let word_pos = manifest
        .rng
        .word_pos
        .parse::<u128>()
        .map_err(|e| bad(format!("bad RNG word position {:?}: {e}", manifest.rng.word_pos)))?;
    let parsed = SafeTensors::deserialize(payload).map_err(|e| bad(format!("bad tensor data: {e}")))?;
    let mut weights = BTreeMap::new();
    let mut m = BTreeMap::new();
    let mut v = BTreeMap::new();
    for (full_name, view) in parsed.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {full_name:?} is {:?}, expected F32", view.dtype())));
        }
        let values = f32_values(view.data());
        if let Some(name) = full_name.strip_prefix(WEIGHT_PREFIX) {
            let tensor = Tensor::new(DType::F32, view.shape().to_vec(), orion_core::TensorData::Float(values))
                .map_err(|e| bad(format!("tensor {full_name:?}: {e}")))?;
            weights.insert(name.to_string(), tensor);
        } else if let Some(name) = full_name.strip_prefix(M_PREFIX) {
            m.insert(name.to_string(), values);
        } else if let Some(name) = full_name.strip_prefix(V_PREFIX) {
            v.insert(name.to_string(), values);
        } else {
            return Err(bad(format!("unexpected tensor {full_name:?}")));
        }
    }
    Ok(Checkpoint {
        step: manifest.step,
        config: manifest.config,
        weights,
        optimizer: AdamWState {
            step: manifest.optimizer_step,
            m,
            v,
            no_decay: manifest.no_decay,
        },
        loss_scaler: manifest.loss_scaler,
        rng: RngState {
            seed: manifest.rng.seed,
            stream: manifest.rng.stream,
            word_pos,
        },
        products: manifest.products.into(),
        data: manifest.data,
        extra: manifest.extra,
    })
}

/// Checks magic, length and CRC; returns the safetensors payload.
fn verified_payload<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    let min_len = MAGIC.len() + TRAILER_LEN;
    if bytes.len() < min_len || &bytes[..MAGIC.len()] != MAGIC {
        let what = if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
            "not an Orion checkpoint (bad magic)".to_string()
        } else {
            format!("truncated checkpoint ({} bytes)", bytes.len())
        };
        return Err(ModelError::format(path, what));
    }
    let crc_at = bytes.len() - 4;
    let len_at = crc_at - 8;
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[len_at..crc_at]);
    let stated = u64::from_le_bytes(len_bytes);
    let actual = (len_at - MAGIC.len()) as u64;
    if stated != actual {
        return Err(ModelError::format(
            path,
            format!("truncated or damaged checkpoint: payload of {actual} bytes, the trailer says {stated}"),
        ));
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[crc_at..]);
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = crc32(&bytes[..crc_at]);
    if stored != computed {
        return Err(ModelError::format(
            path,
            format!("checkpoint is corrupt: CRC-32 {computed:08x} does not match the stored {stored:08x}"),
        ));
    }
    Ok(&bytes[MAGIC.len()..len_at])
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_products_precision_is_spelled_in_lowercase_and_f32_when_absent() {
        let manifest = Manifest {
            step: 1,
            config: ModelConfig::builtin("stories260K").unwrap(),
            optimizer_step: 1,
            no_decay: BTreeSet::new(),
            loss_scaler: crate::optim::LossScaler::new(crate::optim::LossScalerConfig::f32())
                .unwrap()
                .state(),
            rng: RngManifest {
                seed: [0; 32],
                stream: 0,
                word_pos: "0".into(),
            },
            products: ProductPrecision::Bf16.into(),
            data: serde_json::Value::Null,
            extra: serde_json::Value::Null,
        };
        let mut json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["products"], "bf16");
        // A manifest written before the field existed.
        json.as_object_mut().unwrap().remove("products");
        let old: Manifest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(ProductPrecision::from(old.products), ProductPrecision::F32);
        json["products"] = "fp8".into();
        assert!(serde_json::from_value::<Manifest>(json).is_err());
    }
}
