//! The program cache: compiled programs in memory (LRU) and lowered programs on disk, keyed as the design
//! says — hash of the printed optimised IR + hashes of the constants when they are baked + lowering
//! options + backend name + chip profile (its JSON) + crate version (+ a platform string, e.g. the OS
//! build on the real device, C43).
//!
//! - [`ProgramKey`]: the key, 32 hex digits (two independent 64-bit FNV-1a lanes; not cryptographic —
//!   it guards against accidental reuse, not against an adversary who can write the cache directory);
//! - [`LruCache`]: a small least-recently-used map with a capacity;
//! - [`DiskStore`]: `<dir>/<key>/model.mil`, weight files at their `@model_path` paths and
//!   `manifest.json`, written into a temporary directory and renamed into place (atomic); an entry that
//!   cannot be read back whole is ignored with a warning, never a panic;
//! - [`CachedBackend`]: an [`AneBackend`] behind both layers; counts compiles, memory hits and disk hits
//!   and refuses to compile past the device's compile budget (C06) with a clear error.
//!
//! Invariants: a memory hit returns the very executable compiled before (no device compile); a disk hit
//! skips lowering but still compiles on the device (compiled programs do not outlive the process); a
//! compile is attempted only while `device.compile_count() < profile.limits.compile_budget`.

use crate::backend::{AneBackend, AneExecutable};
use crate::device::workdir::{planned_files, weight_file_relative_path, write_files, MODEL_FILE};
use crate::device::DeviceError;
use crate::error::AneError;
use crate::lint::lint;
use crate::lower::{lower, EmittedProgram, IoDesc, IoLayout, LowerOptions, WeightMode};
use crate::mil::{parse_program, Dialect};
use orion_core::backend::{Backend, Executable};
use orion_core::passes::{optimise, PipelineOptions};
use orion_core::{CoreError, DType, Graph, Op, Tensor, TensorData, TensorType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Version of the on-disk manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
const MANIFEST_FILE: &str = "manifest.json";

/// Two-lane FNV-1a: lane one is the standard 64-bit FNV-1a, lane two starts from another basis and
/// hashes every byte complemented.
#[derive(Debug, Clone)]
struct KeyHasher {
    a: u64,
    b: u64,
}

impl KeyHasher {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> KeyHasher {
        KeyHasher {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x6c62_272e_07bb_0142,
        }
    }

    /// Hashes a length-prefixed field, so that field boundaries are part of the key.
    fn field(&mut self, bytes: &[u8]) {
        self.raw(&(bytes.len() as u64).to_le_bytes());
        self.raw(bytes);
    }

    fn raw(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.a = (self.a ^ u64::from(byte)).wrapping_mul(Self::PRIME);
            self.b = (self.b ^ u64::from(!byte)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> String {
        format!("{:016x}{:016x}", self.a, self.b)
    }
}

/// The cache key of one program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramKey(pub String);

impl std::fmt::Display for ProgramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ProgramKey {
    /// The key of `optimised` (an already optimised graph) lowered with `options` for `backend` on
    /// `profile`; `platform` distinguishes OS builds (C43), empty when it does not matter.
    pub fn new(
        optimised: &Graph,
        options: &LowerOptions,
        backend: &str,
        profile: &crate::profile::ChipProfile,
        platform: &str,
    ) -> ProgramKey {
        let mut h = KeyHasher::new();
        h.field(b"orion-program-key");
        h.field(orion_core::text::print(optimised).as_bytes());
        if options.weights == WeightMode::Baked {
            for node in optimised.nodes() {
                if let Op::Const { value } = &node.op {
                    h.field(&tensor_bytes(value));
                }
            }
        }
        h.field(format!("{options:?}").as_bytes());
        h.field(backend.as_bytes());
        h.field(profile.to_json().as_bytes());
        h.field(env!("CARGO_PKG_VERSION").as_bytes());
        h.field(platform.as_bytes());
        ProgramKey(h.finish())
    }
}

/// The element bytes of a tensor with its type, for hashing.
fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = t.ty().to_string().into_bytes();
    match t.data() {
        TensorData::Float(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
    }
    out
}

/// A least-recently-used map with a fixed capacity (at least 1).
#[derive(Debug)]
pub struct LruCache<K, V> {
    capacity: usize,
    /// Most recently used last.
    entries: VecDeque<(K, V)>,
}

impl<K: PartialEq + Clone, V: Clone> LruCache<K, V> {
    pub fn new(capacity: usize) -> LruCache<K, V> {
        LruCache {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
        }
    }

    /// The value of `key`, marking it most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at)?;
        let value = entry.1.clone();
        self.entries.push_back(entry);
        Some(value)
    }

    /// Inserts (or replaces) `key`; returns the evicted least-recently-used entry, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries.remove(at);
        }
        self.entries.push_back((key, value));
        if self.entries.len() > self.capacity {
            self.entries.pop_front()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys from least to most recently used.
    pub fn keys(&self) -> Vec<K> {
        self.entries.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// One I/O description as stored in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredIo {
    ir_name: String,
    mil_name: String,
    ir_dtype: String,
    ir_dims: Vec<usize>,
    mil_shape: [usize; 4],
    surface_dtype: String,
    /// `[rows, cols]` for channel-major, absent for flat.
    channel_major: Option<[usize; 2]>,
    dense_bytes: usize,
    surface_bytes: usize,
}

/// `manifest.json` of one disk entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    key: String,
    name: String,
    dialect: String,
    backend: String,
    chip: String,
    crate_version: String,
    weights: Vec<String>,
    inputs: Vec<StoredIo>,
    outputs: Vec<StoredIo>,
}

fn store_io(d: &IoDesc) -> StoredIo {
    StoredIo {
        ir_name: d.ir_name.clone(),
        mil_name: d.mil_name.clone(),
        ir_dtype: d.ir_type.dtype.name().to_string(),
        ir_dims: d.ir_type.shape.dims().to_vec(),
        mil_shape: d.mil_shape,
        surface_dtype: d.surface_dtype.name().to_string(),
        channel_major: match d.layout {
            IoLayout::ChannelMajor { rows, cols } => Some([rows, cols]),
            IoLayout::Flat => None,
        },
        dense_bytes: d.dense_bytes,
        surface_bytes: d.surface_bytes,
    }
}

fn load_io(s: &StoredIo) -> Result<IoDesc, String> {
    let dtype = |name: &str| DType::from_name(name).ok_or_else(|| format!("unknown dtype {name:?}"));
    Ok(IoDesc {
        ir_name: s.ir_name.clone(),
        mil_name: s.mil_name.clone(),
        ir_type: TensorType::new(dtype(&s.ir_dtype)?, s.ir_dims.clone()),
        mil_shape: s.mil_shape,
        surface_dtype: dtype(&s.surface_dtype)?,
        layout: match s.channel_major {
            Some([rows, cols]) => IoLayout::ChannelMajor { rows, cols },
            None => IoLayout::Flat,
        },
        dense_bytes: s.dense_bytes,
        surface_bytes: s.surface_bytes,
    })
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Ios18 => "ios18",
        Dialect::Ios16 => "ios16",
    }
}

/// Lowered programs on disk, one directory per key.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    pub fn new(dir: impl Into<PathBuf>) -> DiskStore {
        DiskStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the entry of `key` atomically: into `<dir>/.tmp-<key>-<pid>` first, then renamed to
    /// `<dir>/<key>`. An existing entry is left as it is (equal keys mean equal content).
    pub fn put(&self, key: &ProgramKey, emitted: &EmittedProgram, backend: &str, chip: &str) -> Result<(), String> {
        let target = self.dir.join(&key.0);
        if target.join(MANIFEST_FILE).is_file() {
            return Ok(());
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            key: key.0.clone(),
            name: emitted.name.clone(),
            dialect: dialect_name(emitted.dialect).to_string(),
            backend: backend.to_string(),
            chip: chip.to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            weights: emitted.weights.keys().cloned().collect(),
            inputs: emitted.inputs.iter().map(store_io).collect(),
            outputs: emitted.outputs.iter().map(store_io).collect(),
        };
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
        let mut files = planned_files(emitted.mil_text.as_bytes(), &emitted.weights)?;
        files.push((PathBuf::from(MANIFEST_FILE), json.as_bytes()));
        let temp = self.dir.join(format!(".tmp-{}-{}", key.0, std::process::id()));
        let _ = std::fs::remove_dir_all(&temp);
        let written = std::fs::create_dir_all(&temp).and_then(|()| write_files(&temp, &files));
        let renamed = written.and_then(|()| std::fs::rename(&temp, &target));
        if let Err(e) = renamed {
            let _ = std::fs::remove_dir_all(&temp);
            if target.join(MANIFEST_FILE).is_file() {
                return Ok(()); // another process stored the same entry first
            }
            return Err(format!("cannot store {}: {e}", target.display()));
        }
        Ok(())
    }

    /// The stored lowering of `key`, re-linted for `profile`; `Ok(None)` when there is no entry;
    /// `Err(reason)` when the entry is corrupt (the caller warns and ignores it).
    pub fn get(
        &self,
        key: &ProgramKey,
        profile: &crate::profile::ChipProfile,
    ) -> Result<Option<EmittedProgram>, String> {
        let entry = self.dir.join(&key.0);
        let manifest_path = entry.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Ok(None);
        }
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let manifest: Manifest =
            serde_json::from_slice(&read(&manifest_path)?).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        if manifest.format != MANIFEST_FORMAT || manifest.key != key.0 {
            return Err(format!("{}: format or key does not match", manifest_path.display()));
        }
        let mil_text = String::from_utf8(read(&entry.join(MODEL_FILE))?).map_err(|e| format!("model.mil: {e}"))?;
        let mut weights = BTreeMap::new();
        for mil_path in &manifest.weights {
            let relative = weight_file_relative_path(mil_path)?;
            weights.insert(mil_path.clone(), read(&entry.join(relative))?);
        }
        let program = parse_program(&mil_text).map_err(|e| format!("model.mil: {e}"))?;
        let dialect = match manifest.dialect.as_str() {
            "ios18" => Dialect::Ios18,
            "ios16" => Dialect::Ios16,
            other => return Err(format!("unknown dialect {other:?}")),
        };
        let inputs = manifest.inputs.iter().map(load_io).collect::<Result<Vec<_>, _>>()?;
        let outputs = manifest.outputs.iter().map(load_io).collect::<Result<Vec<_>, _>>()?;
        let findings = lint(&program, &weights, profile);
        Ok(Some(EmittedProgram {
            name: manifest.name,
            dialect,
            program,
            mil_text,
            weights,
            inputs,
            outputs,
            lint: findings,
        }))
    }
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Device compiles this cache asked for.
    pub compiles: u32,
    pub memory_hits: u32,
    pub disk_hits: u32,
    /// Disk entries ignored because they could not be read back.
    pub corrupt_entries: u32,
}

#[derive(Debug)]
struct CacheState {
    memory: LruCache<ProgramKey, Arc<AneExecutable>>,
    stats: CacheStats,
    warnings: Vec<String>,
}

/// An [`AneBackend`] behind the program cache.
#[derive(Debug)]
pub struct CachedBackend {
    backend: AneBackend,
    disk: Option<DiskStore>,
    platform: String,
    state: Mutex<CacheState>,
}

impl CachedBackend {
    /// `capacity` compiled programs stay in memory (each stays loaded on the device, C05 on eviction);
    /// `disk`: where lowered programs persist across processes, if anywhere.
    pub fn new(backend: AneBackend, capacity: usize, disk: Option<DiskStore>) -> CachedBackend {
        CachedBackend {
            backend,
            disk,
            platform: String::new(),
            state: Mutex::new(CacheState {
                memory: LruCache::new(capacity),
                stats: CacheStats::default(),
                warnings: Vec::new(),
            }),
        }
    }

    /// Sets the platform string that becomes part of every key (the OS build on the real device, C43).
    pub fn with_platform(mut self, platform: impl Into<String>) -> CachedBackend {
        self.platform = platform.into();
        self
    }

    pub fn backend(&self) -> &AneBackend {
        &self.backend
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// Warnings about ignored disk entries, oldest first.
    pub fn warnings(&self) -> Vec<String> {
        self.lock().warnings.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `graph` would have.
    pub fn key_of(&self, graph: &Graph) -> Result<ProgramKey, AneError> {
        let optimised = optimise(graph, &PipelineOptions::default())?.graph;
        Ok(self.key_of_optimised(&optimised))
    }

    fn key_of_optimised(&self, optimised: &Graph) -> ProgramKey {
        let device = &self.backend.device;
        ProgramKey::new(
            optimised,
            &self.backend.options,
            device.name(),
            device.profile(),
            &self.platform,
        )
    }

    /// The executable of `graph`: from memory, else compiled (from the disk's lowering when there is one).
    pub fn compile_cached(&self, graph: &Graph) -> Result<Arc<AneExecutable>, AneError> {
        let optimised = optimise(graph, &PipelineOptions::default())?.graph;
        let key = self.key_of_optimised(&optimised);
        let mut state = self.lock();
        if let Some(exe) = state.memory.get(&key) {
            state.stats.memory_hits += 1;
            return Ok(exe);
        }
        let device = &self.backend.device;
        let budget = device.profile().limits.compile_budget;
        let used = device.compile_count();
        if used >= budget {
            return Err(AneError::Device(DeviceError::BudgetExhausted { used, budget }));
        }
        let stored = match &self.disk {
            Some(disk) => match disk.get(&key, device.profile()) {
                Ok(found) => found,
                Err(reason) => {
                    state.stats.corrupt_entries += 1;
                    state.warnings.push(format!("ignoring cache entry {key}: {reason}"));
                    None
                }
            },
            None => None,
        };
        let from_disk = stored.is_some();
        let emitted = match stored {
            Some(e) => e,
            None => lower(&optimised, device.profile(), &self.backend.options)?,
        };
        if let (Some(disk), false) = (&self.disk, from_disk) {
            if let Err(reason) = disk.put(&key, &emitted, device.name(), device.profile().id.as_str()) {
                state.warnings.push(format!("cannot store cache entry {key}: {reason}"));
            }
        }
        state.stats.compiles += 1;
        if from_disk {
            state.stats.disk_hits += 1;
        }
        let exe = Arc::new(self.backend.compile_lowered(&optimised, emitted)?);
        // An evicted executable unloads its program when its last user drops it (C05).
        state.memory.insert(key, Arc::clone(&exe));
        Ok(exe)
    }
}

/// A cached executable shared between callers.
#[derive(Debug)]
struct SharedExecutable(Arc<AneExecutable>);

impl Executable for SharedExecutable {
    fn run(&self, inputs: &[Tensor]) -> orion_core::Result<Vec<Tensor>> {
        self.0.run(inputs)
    }
}

impl Backend for CachedBackend {
    fn name(&self) -> &str {
        self.backend.device.name()
    }

    fn compile(&self, graph: &Graph) -> orion_core::Result<Box<dyn Executable>> {
        match self.compile_cached(graph) {
            Ok(exe) => Ok(Box::new(SharedExecutable(exe))),
            Err(AneError::Core(e)) => Err(e),
            Err(other) => Err(CoreError::Execute {
                op: "ane-compile".to_string(),
                message: other.to_string(),
            }),
        }
    }
}
