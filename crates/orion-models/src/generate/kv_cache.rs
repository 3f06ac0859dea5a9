//! The host-side key/value cache of the decode-step graph.
//!
//! Layout per layer and for keys and values alike: `[n_kv, capacity, head_dim]` row-major, the
//! shape of the decode graph's `cache.k.{i}`/`cache.v.{i}` inputs. Invariant: rows `0..len` hold the
//! keys/values of positions `0..len`; rows from `len` on are stale or zero and are masked out by the
//! decode mask (`model::decode_mask(capacity, len)`), so they never affect results.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use orion_core::{CoreError, DType, Tensor, TensorData};

/// Keys and values of every layer for up to `capacity` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    dtype: DType,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `cfg` with room for `capacity` positions, tensors of `dtype`.
    pub fn new(cfg: &ModelConfig, capacity: usize, dtype: DType) -> KvCache {
        let size = cfg.n_kv_heads * capacity * cfg.head_dim();
        KvCache {
            n_kv: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            capacity,
            dtype,
            keys: vec![vec![0.0; size]; cfg.n_layers],
            values: vec![vec![0.0; size]; cfg.n_layers],
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
    /// Call for every layer, then [`KvCache::advance`] by `T`.
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
            let src = src.to_f32_vec();
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

    /// The decode graph's cache input called `name` (`cache.k.{i}` or `cache.v.{i}`), a copy of that
    /// layer's keys or values.
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
        let data = parsed.ok_or_else(|| ModelError::Usage(format!("the KV cache has no input {name:?}")))?;
        let shape = [self.n_kv, self.capacity, self.head_dim];
        Ok(Tensor::new(self.dtype, shape, TensorData::Float(data.clone())).map_err(CoreError::from)?)
    }

    /// The decode graph's cache inputs: (`cache.k.{i}`, tensor) and (`cache.v.{i}`, tensor) per layer.
    pub fn inputs(&self) -> Result<Vec<(String, Tensor)>> {
        let shape = [self.n_kv, self.capacity, self.head_dim];
        let mut out = Vec::with_capacity(2 * self.keys.len());
        for (i, (k, v)) in self.keys.iter().zip(&self.values).enumerate() {
            for (name, data) in [(format!("cache.k.{i}"), k), (format!("cache.v.{i}"), v)] {
                let t = Tensor::new(self.dtype, shape, TensorData::Float(data.clone())).map_err(CoreError::from)?;
                out.push((name, t));
            }
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
}
