//! Exporting a `Model` to a canonical safetensors file, written atomically.
//!
//! The file holds every tensor of `weight_specs` under its canonical name as little-endian F32, and
//! in `__metadata__`: `format = pt` (what other tools expect), `orion.format = canonical` and
//! `orion.config` (the `ModelConfig` as JSON), so `Model::load` needs no separate config file.
//!
//! Invariant: the target path either keeps its old content or holds the complete new file. The bytes
//! go to a temporary file in the same directory, which is flushed to disk (`fsync`) and then renamed
//! over the target; the directory is synced afterwards so the rename itself is durable.

use super::safetensors::{CANONICAL_FORMAT, CONFIG_KEY, FORMAT_KEY};
use crate::error::{ModelError, Result};
use crate::model::Model;
use ::safetensors::tensor::TensorView;
use ::safetensors::Dtype;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `model` to `path` as canonical safetensors (atomically).
pub fn export_safetensors(model: &Model, path: &Path) -> Result<()> {
    let bytes = safetensors_bytes(model, path)?;
    write_atomically(path, &bytes)
}

/// The safetensors encoding of `model` (canonical names, F32, config in the metadata).
pub fn safetensors_bytes(model: &Model, path: &Path) -> Result<Vec<u8>> {
    let weights = model.weights();
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(name, t)| {
            let bytes = t.to_f32_vec().iter().flat_map(|x| x.to_le_bytes()).collect();
            (name.clone(), bytes, t.shape().dims().to_vec())
        })
        .collect();
    let mut views = Vec::with_capacity(data.len());
    for (name, bytes, shape) in &data {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| ModelError::format(path, format!("tensor {name:?}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let config = serde_json::to_string(model.config())
        .map_err(|e| ModelError::format(path, format!("cannot encode the config: {e}")))?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (FORMAT_KEY.to_string(), CANONICAL_FORMAT.to_string()),
        (CONFIG_KEY.to_string(), config),
    ]);
    ::safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::format(path, format!("cannot encode: {e}")))
}

/// Replaces `path` by `bytes` via a synced temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| ModelError::format(path, "the export target has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let written =
        write_and_sync(&temp, bytes).and_then(|()| std::fs::rename(&temp, path).map_err(|e| ModelError::io(path, e)));
    if let Err(e) = written {
        // Best effort: the temporary file is garbage now; the original error is what matters.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename durable. Some platforms cannot open directories for syncing; not fatal there.
    if let Ok(d) = File::open(&dir) {
        d.sync_all().map_err(|e| ModelError::io(&dir, e))?;
    }
    Ok(())
}

fn write_and_sync(temp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(temp).map_err(|e| ModelError::io(temp, e))?;
    file.write_all(bytes).map_err(|e| ModelError::io(temp, e))?;
    file.sync_all().map_err(|e| ModelError::io(temp, e))
}
