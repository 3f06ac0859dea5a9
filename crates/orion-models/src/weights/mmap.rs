//! Read-only memory maps of weight files: the crate's one module with `unsafe` code.
//!
//! Invariants: a `MappedFile` is a read-only, private mapping of a whole regular file, alive as long
//! as the value; an empty file is represented without a mapping (mapping zero bytes is an error on
//! some systems). Callers copy what they need out of `bytes()` (the loaders convert every tensor to
//! owned f32 data), so the mapping is short-lived.

use crate::error::{ModelError, Result};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A weight file mapped into memory.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps the file at `path` read-only.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let meta = file.metadata().map_err(|e| ModelError::io(path, e))?;
        if !meta.is_file() {
            return Err(ModelError::format(path, "not a regular file"));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            Some(map_read_only(&file, path)?)
        };
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[allow(unsafe_code)]
fn map_read_only(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: `Mmap` is sound as long as the mapped file is not modified or truncated while the map
    // is alive. The map is read-only and private to this process, it lives only while a loader
    // copies the tensors out, and weight files are not written in place by this crate (exports
    // write a temporary file and rename it over the target, which leaves an existing mapping's
    // inode untouched). A file changed by another program during a load is outside what any
    // reader can defend against; the worst outcome is wrong values or SIGBUS, not memory corruption
    // of data structures, since the bytes are only ever read and converted.
    unsafe { MmapOptions::new().map(file) }.map_err(|e| ModelError::io(path, e))
}
