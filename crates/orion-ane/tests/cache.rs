//! The program cache: key composition, LRU eviction, memory and disk hits, corrupt-entry tolerance and
//! the compile budget (C06), over the simulated device.

use orion_ane::backend::AneBackend;
use orion_ane::cache::{CachedBackend, DiskStore, LruCache, ProgramKey};
use orion_ane::device::{AneDevice, SimulatedAne};
use orion_ane::lower::{LowerOptions, WeightMode};
use orion_ane::profile::ChipProfile;
use orion_core::backend::Backend;
use orion_core::{DType, Graph, Tensor, TensorType};
use std::path::PathBuf;
use std::sync::Arc;

/// `y = x @ w + x @ w` style program: x [32, 64] input, w [64, 32] constant scaled by `scale`.
fn graph(scale: f32) -> Graph {
    let mut g = Graph::new("linear");
    let x = g.input("x", TensorType::new(DType::F32, vec![32, 64])).unwrap();
    let values: Vec<f32> = (0..64 * 32).map(|i| scale * ((i % 7) as f32 - 3.0) / 8.0).collect();
    let w = g.constant(Tensor::f32(vec![64, 32], values)).unwrap();
    let y = g.matmul(x, w, false, false).unwrap();
    g.set_output("y", y).unwrap();
    g
}

fn input() -> Tensor {
    Tensor::f32(
        vec![32, 64],
        (0..32 * 64).map(|i| ((i % 11) as f32 - 5.0) / 16.0).collect(),
    )
}

/// x @ w computed by an obvious loop, for the expected values.
fn expected(scale: f32) -> Vec<f32> {
    let x = input().to_f32_vec();
    let mut y = vec![0.0f32; 32 * 32];
    for r in 0..32 {
        for c in 0..32 {
            for k in 0..64 {
                y[r * 32 + c] += x[r * 64 + k] * scale * ((((k * 32 + c) % 7) as f32) - 3.0) / 8.0;
            }
        }
    }
    y
}

fn cached(
    chip: &str,
    capacity: usize,
    disk: Option<DiskStore>,
    budget: Option<u32>,
) -> (CachedBackend, Arc<SimulatedAne>) {
    let mut profile = ChipProfile::builtin(chip).unwrap();
    if let Some(b) = budget {
        profile.limits.compile_budget = b;
    }
    let device = Arc::new(SimulatedAne::new(profile));
    let backend = AneBackend::new(device.clone(), LowerOptions::default());
    (CachedBackend::new(backend, capacity, disk), device)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orion-cache-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 0.02 + 0.01 * e.abs(), "element {i}: {a} vs {e}");
    }
}

#[test]
fn keys_change_with_ir_constants_options_backend_profile_and_platform() {
    let m4 = ChipProfile::builtin("m4").unwrap();
    let m1 = ChipProfile::builtin("m1").unwrap();
    let baked = LowerOptions::default();
    let inputs = LowerOptions {
        weights: WeightMode::Inputs,
        ..LowerOptions::default()
    };
    let g = graph(1.0);
    let base = ProgramKey::new(&g, &baked, "sim", &m4, "");
    assert_eq!(
        base,
        ProgramKey::new(&graph(1.0), &baked, "sim", &m4, ""),
        "keys are deterministic"
    );
    assert_eq!(base.0.len(), 32);
    let others = [
        ProgramKey::new(&graph(2.0), &baked, "sim", &m4, ""),
        ProgramKey::new(&g, &inputs, "sim", &m4, ""),
        ProgramKey::new(&g, &baked, "ane-h16", &m4, ""),
        ProgramKey::new(&g, &baked, "sim", &m1, ""),
        ProgramKey::new(&g, &baked, "sim", &m4, "15.3 (24D70)"),
    ];
    for (k, other) in others.iter().enumerate() {
        assert_ne!(&base, other, "variation {k} did not change the key");
    }
}

#[test]
fn lru_evicts_the_least_recently_used() {
    let mut lru = LruCache::new(2);
    assert_eq!(lru.insert("a", 1), None);
    assert_eq!(lru.insert("b", 2), None);
    assert_eq!(lru.get(&"a"), Some(1)); // a is now the most recent
    assert_eq!(lru.insert("c", 3), Some(("b", 2)));
    assert_eq!(lru.keys(), vec!["a", "c"]);
    assert_eq!(lru.get(&"b"), None);
    assert_eq!(lru.insert("a", 10), None, "replacing does not evict");
    assert_eq!(lru.get(&"a"), Some(10));
    assert_eq!(lru.len(), 2);
}

#[test]
fn memory_hits_skip_the_device_compile_and_give_correct_results() {
    let (cache, device) = cached("m4", 4, None, None);
    let first = cache.compile(&graph(1.0)).unwrap();
    let second = cache.compile(&graph(1.0)).unwrap();
    assert_eq!(device.compile_count(), 1);
    let stats = cache.stats();
    assert_eq!((stats.compiles, stats.memory_hits, stats.disk_hits), (1, 1, 0));
    for exe in [first, second] {
        let out = exe.run(&[input()]).unwrap();
        assert_close(&out[0].to_f32_vec(), &expected(1.0));
    }
    cache.compile(&graph(2.0)).unwrap();
    assert_eq!(device.compile_count(), 2, "a different constant is a different program");
}

#[test]
fn eviction_recompiles_and_unloads() {
    let (cache, device) = cached("m4", 1, None, None);
    cache.compile_cached(&graph(1.0)).unwrap();
    cache.compile_cached(&graph(2.0)).unwrap(); // evicts graph(1.0), whose last user is gone
    assert_eq!(device.loaded_count(), 1, "the evicted program was not unloaded (C05)");
    cache.compile_cached(&graph(1.0)).unwrap();
    assert_eq!(device.compile_count(), 3);
}

#[test]
fn disk_entries_survive_the_process_and_skip_lowering() {
    let dir = temp_dir("disk");
    let (first, _) = cached("m4", 4, Some(DiskStore::new(&dir)), None);
    let key = first.key_of(&graph(1.0)).unwrap();
    first.compile_cached(&graph(1.0)).unwrap();
    let entry = dir.join(&key.0);
    assert!(entry.join("model.mil").is_file() && entry.join("manifest.json").is_file());
    assert!(std::fs::read_dir(entry.join("weights")).unwrap().count() >= 1);
    // A new "process": fresh device and memory, same disk.
    let (second, device) = cached("m4", 4, Some(DiskStore::new(&dir)), None);
    let exe = second.compile_cached(&graph(1.0)).unwrap();
    assert_eq!(second.stats().disk_hits, 1);
    assert_eq!(device.compile_count(), 1, "a disk hit still compiles on the device");
    let out = exe.run_with_report(&[input()]).unwrap().0;
    assert_close(&out[0].to_f32_vec(), &expected(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_disk_entries_are_ignored_with_a_warning() {
    let dir = temp_dir("corrupt");
    let (first, _) = cached("m4", 4, Some(DiskStore::new(&dir)), None);
    let key = first.key_of(&graph(1.0)).unwrap();
    first.compile_cached(&graph(1.0)).unwrap();
    std::fs::write(dir.join(&key.0).join("manifest.json"), b"{ not json").unwrap();
    let (second, _) = cached("m4", 4, Some(DiskStore::new(&dir)), None);
    let exe = second.compile_cached(&graph(1.0)).unwrap();
    let stats = second.stats();
    assert_eq!((stats.disk_hits, stats.corrupt_entries), (0, 1));
    assert!(second.warnings()[0].contains(&key.0));
    let out = exe.run_with_report(&[input()]).unwrap().0;
    assert_close(&out[0].to_f32_vec(), &expected(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compiles_past_the_budget_are_refused_with_c06_but_hits_still_work() {
    let (cache, device) = cached("m4", 8, None, Some(2));
    cache.compile_cached(&graph(1.0)).unwrap();
    cache.compile_cached(&graph(2.0)).unwrap();
    let err = cache.compile_cached(&graph(3.0)).unwrap_err();
    assert!(err.to_string().contains("C06"), "{err}");
    assert_eq!(
        device.compile_count(),
        2,
        "the refused compile never reached the device"
    );
    assert!(
        cache.compile_cached(&graph(1.0)).is_ok(),
        "a memory hit needs no compile"
    );
}
