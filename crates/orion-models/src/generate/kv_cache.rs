//! The host-side key/value cache of the decode-step graph.
//!
//! Layout per layer and for keys and values alike: `[n_kv, rows, head_dim]` row-major, the shape of
//! the decode graph's `cache.k.{i}`/`cache.v.{i}` inputs for a cache of `rows` positions. Invariant:
//! rows `0..len` hold the keys/values of positions `0..len`; rows from `len` on are stale or zero
//! and are masked out by the decode mask (`model::decode_mask(rows, len)`), so they never affect
//! results.
//!
//! A cache made with [`KvCache::growing`] holds only as many rows as its positions need, rounded up
//! to a multiple of [`FIRST_ROWS`] — of a sixteenth of the next power of two past 1024 positions —
//! at most the capacity ([`cache_rows_for`]): a decode step's attention reads every row it is
//! given, so a step at position 40 of a 1024-position context reads 64 rows, not 1024, and one at
//! position 600 reads 640. Rounding up to a power of two, as first built, read 1024 rows there.
//! GPT-2's decode step at position 600, the 1024- and 640-row programs alternated in one process
//! (medians of 12–16 steps a round): f32 weights 15.3 → 13.2 ms (6 of 6 rounds) and 18.2 → 16.9 (7
//! of 8); half weights 11.0 → 9.5 (8 of 8) and 11.4 → 10.9 (6 of 8); Stories110M 17.4 → 16.1 (5 of
//! 6). At position 700 (1024 → 768 rows) 22.9 → 22.3 (6 of 8) and 11.9 → 11.5 (7 of 8); at 300
//! (512 → 320) no difference showed. Creating a generator for 1024 positions compiles 16 programs
//! instead of 5: GPT-2 13 → 23 ms (f32, warm), 92–103 → 101–110 ms (half weights).
//! When a write needs more rows, every layer's tensors grow
//! to the next size in place — each head's stored rows move to their new offsets inside the same
//! allocation, which was reserved for the whole capacity up front (address space only: pages are
//! touched as rows are used) — and [`KvCache::clear`] shrinks them back without freeing, so a
//! reused cache faults in no fresh pages. [`KvCache::new`] keeps all `capacity` rows from the start
//! (one decode program for every position).
//!
//! Each layer's keys and values are kept as the very tensors fed to the graph: [`KvCache::input`]
//! hands out a clone that shares the storage (O(1), no copy), and [`KvCache::write`] stores new rows
//! in place when no such clone is alive any more (copy-on-write otherwise, so a tensor handed out
//! earlier never changes). A decode loop that drops its input tensors after each run therefore
//! moves no cache data at all beyond the new rows.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use orion_core::{DType, Tensor, TensorData, TensorType};

/// Fewest rows a growing cache holds.
pub const FIRST_ROWS: usize = 64;

/// Sizes a growing cache takes between two powers of two, past `16 × FIRST_ROWS` positions.
const SIZES_PER_DOUBLING: usize = 16;

/// Rows a growing cache of `capacity` positions holds for `positions` stored positions: `positions`
/// rounded up to a multiple of [`FIRST_ROWS`], or of a sixteenth of the next power of two when
/// that is larger (so a context of `c` positions has at most `16 + 8·log2(c / 1024)` sizes, and a
/// step past the first 512 positions reads less than an eighth more rows than it needs); at least
/// `FIRST_ROWS`, at most `capacity`.
pub fn cache_rows_for(positions: usize, capacity: usize) -> usize {
    let step = (positions.next_power_of_two() / SIZES_PER_DOUBLING).max(FIRST_ROWS);
    positions.div_ceil(step).max(1).saturating_mul(step).min(capacity)
}

/// Every row count a growing cache of `capacity` positions takes, smallest first.
pub fn cache_row_sizes(capacity: usize) -> Vec<usize> {
    let mut sizes = vec![cache_rows_for(0, capacity)];
    while let Some(&last) = sizes.last().filter(|&&rows| rows < capacity) {
        sizes.push(cache_rows_for(last + 1, capacity));
    }
    sizes
}

/// Keys and values of every layer for up to `capacity` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions each tensor has rows for (`capacity` unless the cache grows).
    rows: usize,
    growing: bool,
    dtype: DType,
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `cfg` with all `capacity` rows, zero tensors of `dtype` (a float type:
    /// [`KvCache::write`] refuses to write integer or bool tensors).
    pub fn new(cfg: &ModelConfig, capacity: usize, dtype: DType) -> KvCache {
        KvCache::with_rows(cfg, capacity, dtype, capacity, false)
    }

    /// An empty cache for up to `capacity` positions whose tensors hold [`cache_rows_for`] rows
    /// and grow as positions are written.
    pub fn growing(cfg: &ModelConfig, capacity: usize, dtype: DType) -> KvCache {
        KvCache::with_rows(cfg, capacity, dtype, cache_rows_for(0, capacity), true)
    }

    fn with_rows(cfg: &ModelConfig, capacity: usize, dtype: DType, rows: usize, growing: bool) -> KvCache {
        KvCache {
            n_kv: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            capacity,
            rows,
            growing,
            dtype,
            keys: Vec::new(),
            values: Vec::new(),
            len: 0,
        }
        .refilled(cfg.n_layers, rows)
    }

    /// This cache's settings with `layers` layers of zero keys and values of `rows` rows, empty.
    fn refilled(&self, layers: usize, rows: usize) -> KvCache {
        KvCache {
            rows,
            keys: (0..layers).map(|_| self.zero_tensor(rows)).collect(),
            values: (0..layers).map(|_| self.zero_tensor(rows)).collect(),
            len: 0,
            ..*self
        }
    }

    /// Zero keys or values of `rows` rows, with room reserved for the whole capacity.
    fn zero_tensor(&self, rows: usize) -> Tensor {
        let (n_kv, hd) = (self.n_kv, self.head_dim);
        let mut values = Vec::with_capacity(n_kv * self.capacity.max(rows) * hd);
        values.resize(n_kv * rows * hd, 0.0);
        Tensor::new(self.dtype, [n_kv, rows, hd], TensorData::Float(values))
            .unwrap_or_else(|_| Tensor::zeros(&TensorType::new(self.dtype, [n_kv, rows, hd])))
    }

    /// Number of positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows of every cache tensor now: the `cache_len` of the decode graph that reads them.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Forgets every position (the data is overwritten by later writes); a growing cache shrinks
    /// back to its first size, keeping its allocations. Tensors found not of the cache's size are
    /// replaced by fresh zeros.
    pub fn clear(&mut self) {
        self.len = 0;
        let first = if self.growing {
            cache_rows_for(0, self.capacity)
        } else {
            self.rows
        };
        if self.resize_rows(first).is_err() {
            // Nothing stored is lost: start again from zero tensors of the first size.
            *self = self.refilled(self.keys.len(), first);
        }
    }

    /// Makes room for `positions` positions now: a growing cache grows to [`cache_rows_for`] them
    /// (a decode step at position `p` reserves `p + 1`, since its program's tables, such as the
    /// position embeddings, have one row per cache row); an error beyond the capacity.
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        if positions > self.capacity {
            return Err(ModelError::Usage(format!(
                "KV cache full: {positions} positions exceed the capacity {}",
                self.capacity
            )));
        }
        if positions > self.rows {
            self.resize_rows(cache_rows_for(positions, self.capacity))?;
        }
        Ok(())
    }

    /// Gives every tensor `rows` rows (at least `len`), keeping rows `0..len` of each head: in
    /// place when the cache is a tensor's only owner (its allocation was reserved for the whole
    /// capacity), after one copy otherwise.
    fn resize_rows(&mut self, rows: usize) -> Result<()> {
        let (hd, n_kv, dtype) = (self.head_dim, self.n_kv, self.dtype);
        // Checked before anything moves, so a refused resize changes nothing.
        let held = n_kv * self.rows * hd;
        let float_of_size = |t: &Tensor| t.as_f32().is_some_and(|v| v.len() == held);
        if !self.keys.iter().chain(&self.values).all(float_of_size) {
            return Err(ModelError::Usage("the KV cache's tensors are not of its size".into()));
        }
        if rows == self.rows {
            return Ok(());
        }
        let layout = HeadRows {
            heads: n_kv,
            old_rows: self.rows,
            new_rows: rows,
            kept: self.len.min(rows) * hd,
            row_len: hd,
        };
        for tensor in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let mut taken = std::mem::replace(tensor, Tensor::f32([0], Vec::new()));
            // Copies the storage only if a tensor handed out still shares it.
            taken.as_f32_mut();
            let Some(TensorData::Float(mut values)) = taken.into_sole_data() else {
                return Err(ModelError::Usage(
                    "the KV cache holds float keys and values only".into(),
                ));
            };
            layout.move_rows(&mut values);
            *tensor =
                Tensor::new(dtype, [n_kv, rows, hd], TensorData::Float(values)).map_err(orion_core::CoreError::from)?;
        }
        self.rows = rows;
        Ok(())
    }

    /// Stores `k`, `v` of shape `[n_kv, T, head_dim]` for `layer` at positions `len..len+T`.
    /// Call for every layer, then [`KvCache::advance`] by `T`. In place unless a tensor returned by
    /// [`KvCache::input`] for this layer is still alive.
    pub fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let dims = k.shape().dims().to_vec();
        let rows = match dims.as_slice() {
            [n, t, d] if *n == self.n_kv && *d == self.head_dim && v.shape().dims() == dims.as_slice() => *t,
            _ => {
                return Err(ModelError::Usage(format!(
                    "cache rows must be [{}, T, {}], got {:?} and {:?}",
                    self.n_kv,
                    self.head_dim,
                    dims,
                    v.shape().dims()
                )))
            }
        };
        if self.len + rows > self.capacity {
            return Err(ModelError::Usage(format!(
                "KV cache full: {} + {rows} positions exceed the capacity {}",
                self.len, self.capacity
            )));
        }
        self.reserve(self.len + rows)?;
        let (Some(keys), Some(values)) = (self.keys.get_mut(layer), self.values.get_mut(layer)) else {
            return Err(ModelError::Usage(format!("the KV cache has no layer {layer}")));
        };
        let (hd, cap, start) = (self.head_dim, self.rows, self.len);
        for (dst, src) in [(keys, k), (values, v)] {
            let not_float = || ModelError::Usage("the KV cache holds float keys and values only".into());
            let src = src.as_f32().ok_or_else(not_float)?;
            let dst = dst.as_f32_mut().ok_or_else(not_float)?;
            for h in 0..self.n_kv {
                let from = h * rows * hd;
                let to = (h * cap + start) * hd;
                dst[to..to + rows * hd].copy_from_slice(&src[from..from + rows * hd]);
            }
        }
        Ok(())
    }

    /// Marks `rows` more positions as stored (after writing them for every layer).
    pub fn advance(&mut self, rows: usize) -> Result<()> {
        if self.len + rows > self.capacity {
            return Err(ModelError::Usage(format!(
                "KV cache full: {} + {rows} positions exceed the capacity {}",
                self.len, self.capacity
            )));
        }
        self.len += rows;
        Ok(())
    }

    /// The decode graph's cache input called `name` (`cache.k.{i}` or `cache.v.{i}`): that layer's
    /// keys or values, sharing the cache's storage (no copy; later writes do not change it).
    pub fn input(&self, name: &str) -> Result<Tensor> {
        let parsed = name.strip_prefix("cache.").and_then(|rest| {
            let (kind, layer) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            match kind {
                "k" => self.keys.get(layer),
                "v" => self.values.get(layer),
                _ => None,
            }
        });
        parsed
            .cloned()
            .ok_or_else(|| ModelError::Usage(format!("the KV cache has no input {name:?}")))
    }

    /// The decode graph's cache inputs: (`cache.k.{i}`, tensor) and (`cache.v.{i}`, tensor) per layer,
    /// sharing storage as [`KvCache::input`] does.
    pub fn inputs(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.keys.len());
        for (i, (k, v)) in self.keys.iter().zip(&self.values).enumerate() {
            out.push((format!("cache.k.{i}"), k.clone()));
            out.push((format!("cache.v.{i}"), v.clone()));
        }
        Ok(out)
    }
}

/// Where each head's rows sit when a cache tensor `[heads, old_rows, row_len]` becomes
/// `[heads, new_rows, row_len]`, keeping the first `kept` values (whole rows) of every head.
struct HeadRows {
    heads: usize,
    old_rows: usize,
    new_rows: usize,
    kept: usize,
    row_len: usize,
}

impl HeadRows {
    /// Resizes `values` and moves each head's kept rows to their new offset. Growing moves the
    /// last head first and shrinking the first head first, so no head's rows are overwritten
    /// before they move (a head's new range never reaches the old range of a head not moved yet,
    /// because `kept` fits both the old and the new rows).
    fn move_rows(&self, values: &mut Vec<f32>) {
        let (old, new) = (self.old_rows * self.row_len, self.new_rows * self.row_len);
        if new > old {
            values.resize(self.heads * new, 0.0);
            for h in (1..self.heads).rev() {
                values.copy_within(h * old..h * old + self.kept, h * new);
            }
        } else {
            for h in 1..self.heads {
                values.copy_within(h * old..h * old + self.kept, h * new);
            }
            values.truncate(self.heads * new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_input_is_the_matching_tensor_of_the_whole_list() {
        let mut cfg = ModelConfig::builtin("stories260K").unwrap();
        (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.dim) = (2, 4, 2, 16);
        let mut cache = KvCache::new(&cfg, 5, DType::F32);
        let rows = |seed: f32| Tensor::f32([2, 3, 4], (0..24).map(|i| seed + i as f32).collect());
        for layer in 0..2 {
            cache
                .write(layer, &rows(100.0 * layer as f32), &rows(-100.0 * layer as f32 - 50.0))
                .unwrap();
        }
        cache.advance(3).unwrap();
        let all = cache.inputs().unwrap();
        assert_eq!(all.len(), 4);
        for (name, tensor) in &all {
            assert!(cache.input(name).unwrap().bitwise_eq(tensor), "{name}");
        }
        // Row 1 of key head 1 in layer 1: written from element (1, 1, :) of its rows.
        let k1 = cache.input("cache.k.1").unwrap().to_f32_vec();
        assert_eq!(k1[(5 + 1) * 4..(5 + 1) * 4 + 4], [116.0, 117.0, 118.0, 119.0]);
        for bad in ["cache.k.2", "cache.q.0", "cache.k", "k.0"] {
            assert!(cache.input(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inputs_share_the_cache_and_writes_are_in_place_once_they_are_dropped() {
        let mut cfg = ModelConfig::builtin("stories260K").unwrap();
        (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.dim) = (1, 2, 1, 8);
        let mut cache = KvCache::new(&cfg, 3, DType::F32);
        let row = |seed: f32| Tensor::f32([1, 1, 4], vec![seed, seed + 1.0, seed + 2.0, seed + 3.0]);
        let held = cache.input("cache.k.0").unwrap();
        assert!(held.shares_storage_with(&cache.input("cache.k.0").unwrap()));
        // A tensor handed out earlier keeps its values (copy on write).
        cache.write(0, &row(1.0), &row(-1.0)).unwrap();
        cache.advance(1).unwrap();
        assert_eq!(held.to_f32_vec(), vec![0.0; 12]);
        drop(held);
        // With no tensor handed out alive, the next write reuses the same storage.
        let address = cache.input("cache.k.0").unwrap().as_f32().unwrap().as_ptr() as usize;
        cache.write(0, &row(5.0), &row(-5.0)).unwrap();
        let keys = cache.input("cache.k.0").unwrap();
        assert_eq!(keys.as_f32().unwrap().as_ptr() as usize, address);
        let expected = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(keys.to_f32_vec(), expected);
        let values = cache.input("cache.v.0").unwrap().to_f32_vec();
        assert_eq!(values[4..8], [-5.0, -4.0, -3.0, -2.0]);
    }

    #[test]
    fn row_sizes_step_by_the_first_then_by_a_sixteenth_and_end_at_the_capacity() {
        let by_64: Vec<usize> = (1..=16).map(|i| 64 * i).collect();
        assert_eq!(cache_row_sizes(1024), by_64);
        let by_128: Vec<usize> = (9..=16).map(|i| 128 * i).collect();
        assert_eq!(cache_row_sizes(2048), [by_64, by_128].concat());
        assert_eq!(cache_row_sizes(100), vec![64, 100]);
        assert_eq!(cache_row_sizes(64), vec![64]);
        assert_eq!(cache_row_sizes(20), vec![20]);
        assert_eq!(cache_rows_for(0, 1024), 64);
        assert_eq!(cache_rows_for(64, 1024), 64);
        assert_eq!(cache_rows_for(65, 1024), 128);
        assert_eq!(cache_rows_for(600, 1024), 640);
        assert_eq!(cache_rows_for(1000, 1024), 1024);
        assert_eq!(cache_rows_for(1025, 4096), 1152);
        // Every size holds its positions, and past 512 positions less than an eighth more.
        for positions in 1..5000 {
            let rows = cache_rows_for(positions, usize::MAX);
            assert!(
                rows >= positions && (rows - positions) * 8 < positions.max(512),
                "{positions}: {rows}"
            );
        }
    }

    /// Writes `count` single positions to both caches, each position's values distinct per layer,
    /// key/value, head and element.
    fn fill(caches: &mut [&mut KvCache], from: usize, count: usize, n_kv: usize, hd: usize) {
        for pos in from..from + count {
            for layer in 0..2 {
                let row = |sign: f32| {
                    let values = (0..n_kv * hd).map(|i| sign * (pos * 1000 + layer * 100 + i) as f32);
                    Tensor::f32([n_kv, 1, hd], values.collect())
                };
                for cache in caches.iter_mut() {
                    cache.write(layer, &row(1.0), &row(-1.0)).unwrap();
                }
            }
            for cache in caches.iter_mut() {
                cache.advance(1).unwrap();
            }
        }
    }

    /// Rows `0..len` of every head of every input, which must agree between the two caches.
    fn stored(cache: &KvCache) -> Vec<Vec<f32>> {
        let (n_kv, hd, rows, len) = (cache.n_kv, cache.head_dim, cache.rows(), cache.len());
        let mut out = Vec::new();
        for (_, tensor) in cache.inputs().unwrap() {
            assert_eq!(tensor.shape().dims(), [n_kv, rows, hd]);
            let values = tensor.to_f32_vec();
            out.push(
                (0..n_kv)
                    .flat_map(|h| values[h * rows * hd..(h * rows + len) * hd].to_vec())
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn a_growing_cache_keeps_every_head_s_rows_as_it_grows_and_shrinks_in_place() {
        let mut cfg = ModelConfig::builtin("stories260K").unwrap();
        (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.dim) = (2, 6, 3, 24);
        let (n_kv, hd, capacity) = (3, 4, 200);
        let mut fixed = KvCache::new(&cfg, capacity, DType::F32);
        let mut growing = KvCache::growing(&cfg, capacity, DType::F32);
        assert_eq!((fixed.rows(), growing.rows()), (200, 64));
        fill(&mut [&mut fixed, &mut growing], 0, 60, n_kv, hd);
        let address = growing.input("cache.v.1").unwrap().as_f32().unwrap().as_ptr() as usize;
        // A prefill-like write of 10 rows crosses 64: every tensor grows to 128, in place.
        let block = |sign: f32| Tensor::f32([n_kv, 10, hd], (0..n_kv * 10 * hd).map(|i| sign * i as f32).collect());
        for layer in 0..2 {
            for cache in [&mut fixed, &mut growing] {
                cache.write(layer, &block(0.5), &block(-0.5)).unwrap();
            }
        }
        fixed.advance(10).unwrap();
        growing.advance(10).unwrap();
        assert_eq!(growing.rows(), 128);
        assert_eq!(
            growing.input("cache.v.1").unwrap().as_f32().unwrap().as_ptr() as usize,
            address
        );
        assert_eq!(stored(&growing), stored(&fixed));
        // A tensor handed out while the cache grows keeps its shape and values (copy, not move).
        fill(&mut [&mut fixed, &mut growing], 70, 58, n_kv, hd);
        let held = growing.input("cache.k.0").unwrap();
        let before = held.to_f32_vec();
        fill(&mut [&mut fixed, &mut growing], 128, 72, n_kv, hd);
        assert_eq!((growing.rows(), growing.len()), (200, 200));
        assert_eq!(held.to_f32_vec(), before);
        assert_eq!(held.shape().dims(), [n_kv, 128, hd]);
        assert_eq!(stored(&growing), stored(&fixed));
        drop(held);
        assert!(growing
            .write(0, &block(1.0), &block(1.0))
            .unwrap_err()
            .to_string()
            .contains("full"));
        // Cleared, it is back at its first size, keeping the allocation.
        let address = growing.input("cache.k.1").unwrap().as_f32().unwrap().as_ptr() as usize;
        growing.clear();
        assert_eq!((growing.rows(), growing.len()), (64, 0));
        assert_eq!(
            growing.input("cache.k.1").unwrap().as_f32().unwrap().as_ptr() as usize,
            address
        );
        fixed.clear();
        fill(&mut [&mut fixed, &mut growing], 0, 100, n_kv, hd);
        assert_eq!(stored(&growing), stored(&fixed));
    }

    #[test]
    fn a_cache_left_inconsistent_refuses_to_grow_and_clear_rebuilds_it() {
        let mut cfg = ModelConfig::builtin("stories260K").unwrap();
        (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.dim) = (2, 4, 2, 16);
        let mut cache = KvCache::growing(&cfg, 150, DType::F32);
        // One tensor of another size (no method leaves it so; `clear` must still recover).
        cache.values[1] = Tensor::f32([0], Vec::new());
        assert!(cache.reserve(100).unwrap_err().to_string().contains("not of its size"));
        cache.clear();
        assert_eq!((cache.rows(), cache.len()), (64, 0));
        fill(&mut [&mut cache], 0, 100, 2, 4);
        assert_eq!(cache.rows(), 128);
        assert!(cache
            .inputs()
            .unwrap()
            .iter()
            .all(|(_, t)| t.shape().dims() == [2, 128, 4]));
    }
}
