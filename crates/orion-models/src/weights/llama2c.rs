//! Reading llama2.c `.bin` checkpoints: the legacy format (version 0) and the "ak42" version 1.
//!
//! Legacy (llama2.c `export.py` `legacy_export`, read by `run.c`): 7 little-endian i32 — dim,
//! hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: a separate classifier follows),
//! seq_len — then f32 arrays: token_embedding `[V, D]`, rms_att `[L, D]`, wq `[L, D, D]`,
//! wk `[L, kv, D]`, wv `[L, kv, D]`, wo `[L, D, D]`, rms_ffn `[L, D]`, w1 `[L, H, D]`, w2 `[L, D, H]`,
//! w3 `[L, H, D]`, rms_final `[D]`, freq_cis_real and freq_cis_imag `[seq_len, head_dim/2]` (skipped),
//! then wcls `[V, D]` when untied. Version 1 (`version1_export`): u32 magic 0x616b3432 ("ak42"),
//! i32 version, the same 7 i32 (vocab positive), u8 shared-classifier flag, zero padding to 256
//! bytes, then rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, `[wcls]`; no
//! frequency tables. Version 2 (Q8_0 quantized) is refused with a clear error.
//!
//! RoPE layout: llama2.c (like Meta's checkpoints) rotates interleaved pairs `(x[2i], x[2i+1])` of
//! each head, our `composite::rope` rotates `(x[i], x[i + d/2])` (Hugging Face's rotate-half). Both
//! use the angle `pos·θ^(−2i/d)` for pair `i`, so renumbering the q and k projection rows of every
//! head by `hf[j·d/2 + i] = llama2c[2i + j]` (i < d/2, j ∈ {0, 1}) makes the two networks compute
//! the same attention scores (q·k is invariant under applying one permutation to both). This is
//! the inverse of the permutation Hugging Face's converter applies to Meta weights, and what
//! llama2.c's own exporter undoes when reading Hugging Face models. wk uses `n_kv_heads`.
//!
//! Invariants: sizes are computed with checked arithmetic from a validated header; the file must
//! have exactly the bytes the header implies (truncation and trailing bytes are both errors).

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use orion_core::Tensor;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// The "ak42" magic of versioned llama2.c files, as a little-endian u32.
pub const MAGIC: u32 = 0x616b_3432;
/// Header size of versioned files.
const VERSIONED_HEADER_BYTES: usize = 256;
/// Upper bound for any header field: far above real models, low enough that products of a few
/// fields cannot overflow before the checked multiplications reject them.
const MAX_FIELD: i32 = 1 << 24;

/// The hyper-parameters in a llama2.c header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Llama2cHeader {
    /// 0 for the legacy format, 1 for "ak42" version 1.
    pub version: i32,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub shared_classifier: bool,
}

impl Llama2cHeader {
    /// The model configuration (llama2.c fixes norm eps 1e-5 and θ 10000).
    pub fn config(&self) -> Result<ModelConfig> {
        let cfg = ModelConfig {
            family: Family::Llama,
            dim: self.dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            vocab_size: self.vocab_size,
            hidden_dim: self.hidden_dim,
            max_seq_len: self.seq_len,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            tied_embeddings: self.shared_classifier,
            biases: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// True when `bytes` starts with the versioned-file magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes
        .get(..4)
        .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == MAGIC)
}

/// Parses the header; returns it and the offset of the first weight.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<(Llama2cHeader, usize)> {
    let mut r = Reader::new(bytes, path);
    let version = if has_magic(bytes) {
        r.i32("magic")?;
        r.i32("version")?
    } else {
        0
    };
    if version == 2 {
        return Err(ModelError::format(
            path,
            "llama2.c version 2 (Q8_0 quantized) files are not supported; export version 1 (float32)",
        ));
    }
    if version != 0 && version != 1 {
        return Err(ModelError::format(
            path,
            format!("unknown llama2.c file version {version}"),
        ));
    }
    let mut fields = [0i32; 7];
    let names = [
        "dim",
        "hidden_dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "seq_len",
    ];
    for (field, name) in fields.iter_mut().zip(names) {
        *field = r.i32(name)?;
    }
    let shared_classifier = match version {
        0 => fields[5] > 0,
        _ => r.u8("shared_classifier flag")? != 0,
    };
    fields[5] = fields[5].checked_abs().unwrap_or(0);
    for (value, name) in fields.iter().zip(names) {
        if !(1..=MAX_FIELD).contains(value) {
            return Err(ModelError::format(
                path,
                format!("header field {name} = {value} is out of range (not a llama2.c file?)"),
            ));
        }
    }
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = fields.map(|f| f as usize);
    let header = Llama2cHeader {
        version,
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        seq_len,
        shared_classifier,
    };
    let offset = if version == 0 { r.pos } else { VERSIONED_HEADER_BYTES };
    Ok((header, offset))
}

/// Reads a whole llama2.c file into its configuration and canonical (Hugging Face) tensors.
pub fn parse_llama2c(bytes: &[u8], path: &Path) -> Result<(ModelConfig, BTreeMap<String, Tensor>)> {
    let (header, offset) = parse_header(bytes, path)?;
    let cfg = header
        .config()
        .map_err(|e| ModelError::format(path, format!("header: {e}")))?;
    let mut r = Reader::new(bytes, path);
    r.seek(offset)?;
    let (d, h, l, v, kv) = (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.vocab_size, cfg.kv_dim());
    let mut out = BTreeMap::new();
    let (rms_att, embedding);
    if header.version == 0 {
        embedding = r.floats("token_embedding", &[v, d])?;
        rms_att = r.float_bytes("rms_att", &[l, d])?;
    } else {
        rms_att = r.float_bytes("rms_att", &[l, d])?;
        let rms_ffn = r.float_bytes("rms_ffn", &[l, d])?;
        let rms_final = r.floats("rms_final", &[d])?;
        embedding = r.floats("token_embedding", &[v, d])?;
        out.insert("model.norm.weight".to_string(), Tensor::f32([d], rms_final));
        per_layer(&mut out, "post_attention_layernorm.weight", rms_ffn, &[d], same);
    }
    out.insert("model.embed_tokens.weight".to_string(), Tensor::f32([v, d], embedding));
    per_layer(&mut out, "input_layernorm.weight", rms_att, &[d], same);
    let hd = cfg.head_dim();
    let (q_heads, kv_heads) = (cfg.n_heads, cfg.n_kv_heads);
    let wq = r.float_bytes("wq", &[l, d, d])?;
    per_layer(&mut out, "self_attn.q_proj.weight", wq, &[d, d], |row| {
        rotate_half_source(row, q_heads, hd)
    });
    let wk = r.float_bytes("wk", &[l, kv, d])?;
    per_layer(&mut out, "self_attn.k_proj.weight", wk, &[kv, d], |row| {
        rotate_half_source(row, kv_heads, hd)
    });
    let wv = r.float_bytes("wv", &[l, kv, d])?;
    per_layer(&mut out, "self_attn.v_proj.weight", wv, &[kv, d], same);
    let wo = r.float_bytes("wo", &[l, d, d])?;
    per_layer(&mut out, "self_attn.o_proj.weight", wo, &[d, d], same);
    if header.version == 0 {
        let rms_ffn = r.float_bytes("rms_ffn", &[l, d])?;
        per_layer(&mut out, "post_attention_layernorm.weight", rms_ffn, &[d], same);
    }
    let w1 = r.float_bytes("w1", &[l, h, d])?;
    per_layer(&mut out, "mlp.gate_proj.weight", w1, &[h, d], same);
    let w2 = r.float_bytes("w2", &[l, d, h])?;
    per_layer(&mut out, "mlp.down_proj.weight", w2, &[d, h], same);
    let w3 = r.float_bytes("w3", &[l, h, d])?;
    per_layer(&mut out, "mlp.up_proj.weight", w3, &[h, d], same);
    if header.version == 0 {
        out.insert(
            "model.norm.weight".to_string(),
            Tensor::f32([d], r.floats("rms_final", &[d])?),
        );
        let half = cfg.head_dim() / 2;
        r.floats("freq_cis_real", &[cfg.max_seq_len, half])?;
        r.floats("freq_cis_imag", &[cfg.max_seq_len, half])?;
    }
    if !cfg.tied_embeddings {
        out.insert(
            "lm_head.weight".to_string(),
            Tensor::f32([v, d], r.floats("wcls", &[v, d])?),
        );
    }
    if r.pos != bytes.len() {
        return Err(ModelError::format(
            path,
            format!(
                "{} trailing bytes after the last tensor (header does not match the data)",
                bytes.len() - r.pos
            ),
        ));
    }
    Ok((cfg, out))
}

/// Splits a stacked `[L, ..shape]` array (the file's little-endian bytes) into
/// `model.layers.{i}.{suffix}` tensors, each layer decoded straight into its own buffer, row `r`
/// of it from the file's row `source_row(r)` (the file's values are copied once: not into a
/// stacked array first, nor reordered afterwards), the layers in parallel on the CPU pool.
fn per_layer(
    out: &mut BTreeMap<String, Tensor>,
    suffix: &str,
    stacked: &[u8],
    shape: &[usize],
    source_row: impl Fn(usize) -> usize + Sync,
) {
    let size: usize = shape.iter().product();
    let rows = shape.first().copied().unwrap_or(1);
    let row_bytes = 4 * size / rows.max(1);
    let layers: Vec<Vec<f32>> = orion_core::cpu::install(|| {
        stacked
            .par_chunks_exact(4 * size.max(1))
            .map(|layer| {
                let mut values = Vec::with_capacity(size);
                for row in 0..rows {
                    let from = source_row(row) * row_bytes;
                    values.extend(layer[from..from + row_bytes].chunks_exact(4).map(le_f32));
                }
                values
            })
            .collect()
    });
    for (i, values) in layers.into_iter().enumerate() {
        out.insert(
            format!("model.layers.{i}.{suffix}"),
            Tensor::f32(shape.to_vec(), values),
        );
    }
}

/// Rows kept in the file's order (the `source_row` of most tensors).
fn same(row: usize) -> usize {
    row
}

/// One little-endian f32 from its 4 bytes.
fn le_f32(bytes: &[u8]) -> f32 {
    f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Arrays at least this large are decoded on every core (the token embedding and classifier).
const PARALLEL_DECODE_BYTES: usize = 1 << 24;
/// Values one task decodes at a time.
const DECODE_CHUNK: usize = 1 << 16;

/// Little-endian f32 values (a multiple of 4 bytes); large arrays split across the CPU pool.
fn decode_floats(bytes: &[u8]) -> Vec<f32> {
    if bytes.len() < PARALLEL_DECODE_BYTES {
        return bytes.chunks_exact(4).map(le_f32).collect();
    }
    let mut values = vec![0.0f32; bytes.len() / 4];
    orion_core::cpu::install(|| {
        values
            .par_chunks_mut(DECODE_CHUNK)
            .zip(bytes.par_chunks(4 * DECODE_CHUNK))
            .for_each(|(to, from)| {
                for (value, word) in to.iter_mut().zip(from.chunks_exact(4)) {
                    *value = le_f32(word);
                }
            });
    });
    values
}

/// The llama2.c row that rotate-half row `row` of a q or k projection comes from, for heads of
/// `head_dim` rows: `hf[j·d/2 + i] = llama2c[2i + j]` within each head (see the module header).
/// Rows past `heads · head_dim` keep their place.
pub fn rotate_half_source(row: usize, heads: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    if half == 0 || row >= heads * head_dim {
        return row;
    }
    let (head, within) = (row / head_dim, row % head_dim);
    let (j, i) = (within / half, within % half);
    head * head_dim + 2 * i + j
}

/// Renumbers the rows of `heads` consecutive heads (each `head_dim` rows of `cols` values) from
/// llama2.c's interleaved-pair order to rotate-half order ([`rotate_half_source`]).
pub fn rotate_half_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut out = w.to_vec();
    for row in 0..heads * head_dim {
        let src = rotate_half_source(row, heads, head_dim) * cols;
        out[row * cols..(row + 1) * cols].copy_from_slice(&w[src..src + cols]);
    }
    out
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], path: &'a Path) -> Reader<'a> {
        Reader { bytes, pos: 0, path }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                ModelError::format(
                    self.path,
                    format!(
                        "truncated: {what} needs {n} bytes at offset {}, the file has {} bytes",
                        self.pos,
                        self.bytes.len()
                    ),
                )
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn seek(&mut self, pos: usize) -> Result<()> {
        if pos > self.bytes.len() {
            return Err(ModelError::format(
                self.path,
                format!("truncated: the header needs {pos} bytes"),
            ));
        }
        self.pos = pos;
        Ok(())
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    /// `shape.product()` f32 values.
    /// The bytes of an f32 array of `shape` (checked against the file's length).
    fn float_bytes(&mut self, what: &str, shape: &[usize]) -> Result<&'a [u8]> {
        let n = shape
            .iter()
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ModelError::format(self.path, format!("{what} {shape:?} is too large")))?;
        self.take(n, &format!("{what} {shape:?}"))
    }

    fn floats(&mut self, what: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(decode_floats(self.float_bytes(what, shape)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn large_arrays_decode_across_tasks_to_the_same_values_in_order() {
        // Past the parallel threshold, with a last chunk shorter than the others.
        let n = PARALLEL_DECODE_BYTES / 4 + 3 * DECODE_CHUNK + 17;
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1e6).collect();
        assert_eq!(decode_floats(&le_bytes(&values)), values);
    }

    #[test]
    fn rotate_half_source_renumbers_each_head_and_is_a_permutation() {
        let (heads, head_dim) = (3, 8);
        let sources: Vec<usize> = (0..heads * head_dim)
            .map(|r| rotate_half_source(r, heads, head_dim))
            .collect();
        // Head 1: rotate-half rows 8..12 are the first of each pair (8, 10, 12, 14), 12..16 the second.
        assert_eq!(&sources[8..16], &[8, 10, 12, 14, 9, 11, 13, 15]);
        let mut sorted = sources.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..heads * head_dim).collect::<Vec<_>>());
        assert_eq!(rotate_half_source(99, heads, head_dim), 99);
    }

    #[test]
    fn layers_are_decoded_in_their_row_order() {
        let (layers, rows, cols) = (3, 4, 5);
        let values: Vec<f32> = (0..layers * rows * cols).map(|i| i as f32).collect();
        let mut out = BTreeMap::new();
        per_layer(&mut out, "w", &le_bytes(&values), &[rows, cols], |row| rows - 1 - row);
        for layer in 0..layers {
            let got = out[&format!("model.layers.{layer}.w")].as_f32().unwrap().to_vec();
            let expected: Vec<f32> = (0..rows)
                .rev()
                .flat_map(|r| values[(layer * rows + r) * cols..][..cols].to_vec())
                .collect();
            assert_eq!(got, expected, "layer {layer}");
        }
    }
}
