//! The compile directory the real device's compiler reads (ane.md §1 step 3, catalogue C04): for a model
//! whose `hexStringIdentifier` is `<hex>`, the directory `<tmp>/<hex>/` holds `model.mil` (the MIL text)
//! and every weight file at the path after `@model_path/` (`weights/w.bin`, `layer0/wq.bin`).
//!
//! This module is platform-independent (the macOS device and the program cache use it; it is tested on
//! Linux). Invariants:
//! - a weight path is accepted only as `@model_path/<relative>` where `<relative>` is non-empty, uses `/`
//!   separators and consists of plain names only: no `..`, `.`, empty component, absolute path, drive
//!   prefix or backslash — nothing can be written outside the directory;
//! - the hex identifier is a single plain name of ASCII letters, digits, `_` and `-`;
//! - [`WorkDir::create`] writes the directory completely (model.mil, every weight file, the `weights/`
//!   folder) before it returns, so a compile never sees a partial directory (C04);
//! - a [`WorkDir`] removes its directory when dropped (C05: nothing is left behind), unless it was
//!   told to [`WorkDir::keep`] it.

use super::{DeviceError, WeightDict};
use std::path::{Component, Path, PathBuf};

/// The prefix every BLOBFILE path of a weight dictionary carries.
pub const MODEL_PATH_PREFIX: &str = "@model_path/";
/// File name of the MIL text inside the compile directory.
pub const MODEL_FILE: &str = "model.mil";

/// The path, relative to the compile directory, of the weight file named `mil_path`
/// (`@model_path/weights/w.bin` → `weights/w.bin`). Rejects every path that could leave the directory.
pub fn weight_file_relative_path(mil_path: &str) -> Result<PathBuf, String> {
    let rest = mil_path
        .strip_prefix(MODEL_PATH_PREFIX)
        .ok_or_else(|| format!("weight path {mil_path:?} does not start with {MODEL_PATH_PREFIX:?}"))?;
    if rest.is_empty() {
        return Err(format!("weight path {mil_path:?} names no file"));
    }
    if rest.contains('\\') || rest.contains('\0') {
        return Err(format!("weight path {mil_path:?} contains a backslash or NUL"));
    }
    let mut relative = PathBuf::new();
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains(':') {
            return Err(format!(
                "weight path {mil_path:?} has a component {part:?} that is not a plain name"
            ));
        }
        relative.push(part);
    }
    let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || relative.is_absolute() {
        return Err(format!("weight path {mil_path:?} is not a plain relative path"));
    }
    if relative == Path::new(MODEL_FILE) {
        return Err(format!("weight path {mil_path:?} would overwrite {MODEL_FILE}"));
    }
    Ok(relative)
}

/// Checks that `hex` is usable as one directory name (the framework's `hexStringIdentifier`).
pub fn check_identifier(hex: &str) -> Result<(), String> {
    let plain =
        !hex.is_empty() && hex.len() <= 255 && hex.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        Ok(())
    } else {
        Err(format!("model identifier {hex:?} is not a plain directory name"))
    }
}

/// Every file of a compile directory as (relative path, contents): `model.mil` first, then the weight
/// files in dictionary order.
pub fn planned_files<'a>(mil_text: &'a [u8], weights: &'a WeightDict) -> Result<Vec<(PathBuf, &'a [u8])>, String> {
    let mut files = vec![(PathBuf::from(MODEL_FILE), mil_text)];
    for (mil_path, bytes) in weights {
        files.push((weight_file_relative_path(mil_path)?, bytes.as_slice()));
    }
    Ok(files)
}

/// Writes `files` (relative paths) under `dir`, creating sub-folders.
pub fn write_files(dir: &Path, files: &[(PathBuf, &[u8])]) -> std::io::Result<()> {
    for (relative, bytes) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
    }
    Ok(())
}

/// One program's compile directory, removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    program: String,
    keep: bool,
}

impl WorkDir {
    /// Creates `<root>/<hex>/` with `weights/`, `model.mil` and every weight file, completely, before
    /// returning (C04). `program` names the program in errors. An existing directory of the same
    /// identifier is overwritten file by file (ane.md §1: equal MIL text and weight paths give equal
    /// identifiers; the lowering puts a content hash into every weight file name to keep them apart).
    pub fn create(
        root: &Path,
        hex: &str,
        mil_text: &[u8],
        weights: &WeightDict,
        program: &str,
    ) -> Result<WorkDir, DeviceError> {
        let fail = |message: String| DeviceError::Compile {
            program: program.to_string(),
            message: format!("compile directory: {message}"),
            rule: Some("C04"),
        };
        check_identifier(hex).map_err(fail)?;
        let files = planned_files(mil_text, weights).map_err(fail)?;
        let path = root.join(hex);
        let dir = WorkDir {
            path,
            program: program.to_string(),
            keep: false,
        };
        std::fs::create_dir_all(dir.path.join("weights"))
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.path.display())))?;
        write_files(&dir.path, &files).map_err(|e| fail(format!("cannot write into {}: {e}", dir.path.display())))?;
        Ok(dir)
    }

    /// The directory `<root>/<hex>/`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces one weight file (Orion's reload path, ane.md §6; whether it takes effect is C07).
    pub fn overwrite_weight_file(&self, mil_path: &str, bytes: &[u8]) -> Result<(), DeviceError> {
        let fail = |message: String| DeviceError::Load {
            program: self.program.clone(),
            message,
        };
        let relative = weight_file_relative_path(mil_path).map_err(fail)?;
        let path = self.path.join(relative);
        if !path.is_file() {
            return Err(fail(format!("the compile directory has no weight file {mil_path:?}")));
        }
        std::fs::write(&path, bytes).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))
    }

    /// Leaves the directory in place when dropped (for inspection after a failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            // Removal can only fail if someone else removed or locked it; nothing to report on drop.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
