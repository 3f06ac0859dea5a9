//! llama2.c-style pretokenised shards: a file is the flat sequence of its token ids, each a
//! little-endian `u16`, with no header (what llama2.c's `pretokenize` writes with `np.uint16`).
//!
//! Invariants: a shard read is never truncated silently (an odd byte length is an error naming the
//! file); writing refuses ids that do not fit `u16` and replaces the file atomically.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::weights::export::write_atomically;

/// The ids of one shard file.
pub fn read_shard(path: &Path) -> Result<Vec<u16>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    parse_shard(&bytes, path)
}

/// The ids of a shard's bytes; `origin` names the file in errors.
pub fn parse_shard(bytes: &[u8], origin: &Path) -> Result<Vec<u16>> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ModelError::format(
            origin,
            format!(
                "a uint16 token shard must have an even byte length, this one has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Writes `ids` as a shard (atomically: temporary file, fsync, rename). Fails if an id is 65536 or more.
pub fn write_shard(path: &Path, ids: &[u32]) -> Result<()> {
    let mut bytes = Vec::with_capacity(ids.len() * 2);
    for (position, &id) in ids.iter().enumerate() {
        let id = u16::try_from(id).map_err(|_| {
            ModelError::Usage(format!(
                "{}: token {id} at position {position} does not fit a uint16 shard",
                path.display()
            ))
        })?;
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    write_atomically(path, &bytes)
}

/// The shard files `path` names: the file itself, or every `*.bin` file of a directory in name order.
pub fn shard_paths(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| ModelError::io(path, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let file = entry.map_err(|e| ModelError::io(path, e))?.path();
        if file.is_file() && file.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin")) {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelError::format(path, "the directory has no .bin token shards"));
    }
    Ok(files)
}
