//! The host-side key/value cache of the decode-step graph.
//!
//! Layout per layer and for keys and values alike: `[n_kv, capacity, head_dim]` row-major, the
//! shape of the decode graph's `cache.k.{i}`/`cache.v.{i}` inputs. Invariant: rows `0..len` hold the
//! keys/values of positions `0..len`; rows from `len` on are stale or zero and are masked out by the
//! decode mask (`model::decode_mask(capacity, len)`), so they never affect results.
//!
//! Each layer's keys and values are kept as the very tensors fed to the graph: [`KvCache::input`]
//! hands out a clone that shares the storage (O(1), no copy), and [`KvCache::write`] stores new rows
//! in place when no such clone is alive any more (copy-on-write otherwise, so a tensor handed out
//! earlier never changes). A decode loop that drops its input tensors after each run therefore
//! moves no cache data at all beyond the new rows.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use orion_core::{DType, Tensor, TensorType};

/// Keys and values of every layer for up to `capacity` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `cfg` with room for `capacity` positions, zero tensors of `dtype` (a float
    /// type: [`KvCache::write`] refuses to write integer or bool tensors).
    pub fn new(cfg: &ModelConfig, capacity: usize, dtype: DType) -> KvCache {
        let ty = TensorType::new(dtype, [cfg.n_kv_heads, capacity, cfg.head_dim()]);
        let zeros = |_| Tensor::zeros(&ty);
        KvCache {
            n_kv: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            capacity,
            keys: (0..cfg.n_layers).map(zeros).collect(),
            values: (0..cfg.n_layers).map(zeros).collect(),
            len: 0,
        }
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

    /// Forgets every position (the data is overwritten by later writes).
    pub fn clear(&mut self) {
        self.len = 0;
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
        let (Some(keys), Some(values)) = (self.keys.get_mut(layer), self.values.get_mut(layer)) else {
            return Err(ModelError::Usage(format!("the KV cache has no layer {layer}")));
        };
        let (hd, cap, start) = (self.head_dim, self.capacity, self.len);
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
}
