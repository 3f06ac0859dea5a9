//! Llama: token embedding, pre-RMSNorm blocks with grouped-query attention and RoPE (rotate-half
//! form, the Hugging Face convention), SwiGLU MLP, final RMSNorm, tied or separate head.
//!
//! Weight names are the Hugging Face ones: `model.embed_tokens.weight [V, D]`, per layer
//! `model.layers.{i}.input_layernorm.weight [D]`, `…self_attn.q_proj.weight [D, D]`,
//! `…self_attn.{k,v}_proj.weight [n_kv·d, D]`, `…self_attn.o_proj.weight [D, D]`,
//! `…post_attention_layernorm.weight [D]`, `…mlp.{gate,up}_proj.weight [H, D]`,
//! `…mlp.down_proj.weight [D, H]`, then `model.norm.weight [D]` and, untied only,
//! `lm_head.weight [V, D]`. With `biases`, every projection also has `….bias [out]`.
//! q/k rows are in rotate-half order; llama2.c files are permuted on load (`weights::llama2c`).
//!
//! RoPE tables are constants: rows `0..T` for forward/prefill; for a decode step the full table of
//! the cache capacity, from which the row at `position` is gathered.

use super::{Builder, GraphKind, WeightSpec};
use crate::config::ModelConfig;
use crate::error::Result;
use orion_core::composite::{linear, rms_norm, rope, rope_tables, silu};
use orion_core::ValueId;

/// The canonical tensors of a Llama model, in order.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    let (d, h, v, kv) = (cfg.dim, cfg.hidden_dim, cfg.vocab_size, cfg.kv_dim());
    let mut specs = vec![WeightSpec::new("model.embed_tokens.weight", &[v, d])];
    let linear_spec = |specs: &mut Vec<WeightSpec>, name: String, out: usize, inp: usize| {
        specs.push(WeightSpec::new(format!("{name}.weight"), &[out, inp]));
        if cfg.biases {
            specs.push(WeightSpec::new(format!("{name}.bias"), &[out]));
        }
    };
    for i in 0..cfg.n_layers {
        let p = format!("model.layers.{i}");
        specs.push(WeightSpec::new(format!("{p}.input_layernorm.weight"), &[d]));
        linear_spec(&mut specs, format!("{p}.self_attn.q_proj"), d, d);
        linear_spec(&mut specs, format!("{p}.self_attn.k_proj"), kv, d);
        linear_spec(&mut specs, format!("{p}.self_attn.v_proj"), kv, d);
        linear_spec(&mut specs, format!("{p}.self_attn.o_proj"), d, d);
        specs.push(WeightSpec::new(format!("{p}.post_attention_layernorm.weight"), &[d]));
        linear_spec(&mut specs, format!("{p}.mlp.gate_proj"), h, d);
        linear_spec(&mut specs, format!("{p}.mlp.up_proj"), h, d);
        linear_spec(&mut specs, format!("{p}.mlp.down_proj"), d, h);
    }
    specs.push(WeightSpec::new("model.norm.weight", &[d]));
    if !cfg.tied_embeddings {
        specs.push(WeightSpec::new("lm_head.weight", &[v, d]));
    }
    specs
}

/// Appends the Llama network to a builder whose inputs and weights are declared.
pub(crate) fn build(b: &mut Builder<'_>) -> Result<()> {
    let embed = b.w("model.embed_tokens.weight")?;
    let mut x = b.g.gather(embed, b.tokens)?;
    let (cos, sin) = rope_rows(b)?;
    for layer in 0..b.cfg.n_layers {
        x = block(b, x, layer, cos, sin)?;
    }
    let norm = b.w("model.norm.weight")?;
    let x = rms_norm(&mut b.g, x, norm, b.cfg.norm_eps)?;
    let head = if b.cfg.tied_embeddings {
        embed
    } else {
        b.w("lm_head.weight")?
    };
    b.finish(x, head)
}

/// cos/sin `[rows, head_dim]` for the rows this graph computes.
fn rope_rows(b: &mut Builder<'_>) -> Result<(ValueId, ValueId)> {
    let hd = b.cfg.head_dim();
    if let Some(rows) = b.rope {
        return Ok(rows);
    }
    let (table_rows, position) = match (b.kind, b.position) {
        (GraphKind::Decode { cache_len }, Some(position)) => (cache_len, Some(position)),
        _ => (b.rows(), None),
    };
    let (cos, sin) = rope_tables(b.cfg.rope_theta, 0..table_rows, hd);
    let cos = b.float_const(&[table_rows, hd], cos.to_f32_vec())?;
    let sin = b.float_const(&[table_rows, hd], sin.to_f32_vec())?;
    match position {
        Some(p) => Ok((b.g.gather(cos, p)?, b.g.gather(sin, p)?)),
        None => Ok((cos, sin)),
    }
}

/// One block (layer `i`) on `x [T, D]` with its own RoPE tables, for the per-layer training programs.
pub(crate) fn layer_block(b: &mut Builder<'_>, x: ValueId, i: usize) -> Result<ValueId> {
    let (cos, sin) = rope_rows(b)?;
    block(b, x, i, cos, sin)
}

fn block(b: &mut Builder<'_>, x: ValueId, i: usize, cos: ValueId, sin: ValueId) -> Result<ValueId> {
    let p = format!("model.layers.{i}");
    let (heads, kv_heads) = (b.cfg.n_heads, b.cfg.n_kv_heads);
    let attn_norm = b.w(&format!("{p}.input_layernorm.weight"))?;
    let n1 = rms_norm(&mut b.g, x, attn_norm, b.cfg.norm_eps)?;
    let names = ["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}.self_attn.{n}"));
    let (q, k, v) = match b.projections(n1, &names)?[..] {
        [q, k, v] => (q, k, v),
        _ => return Err(crate::error::ModelError::Usage("three projections expected".into())),
    };
    let q = b.split_heads(q, heads)?;
    let k = b.split_heads(k, kv_heads)?;
    let v = b.split_heads(v, kv_heads)?;
    let q = rope(&mut b.g, q, cos, sin)?;
    let k = rope(&mut b.g, k, cos, sin)?;
    let attn = b.attend(i, q, k, v)?;
    let attn = b.merge_heads(attn)?;
    let attn = proj(b, attn, &format!("{p}.self_attn.o_proj"))?;
    let x = b.residual_rows(i, x)?;
    let x = b.g.add(x, attn)?;
    let ffn_norm = b.w(&format!("{p}.post_attention_layernorm.weight"))?;
    let n2 = rms_norm(&mut b.g, x, ffn_norm, b.cfg.norm_eps)?;
    let names = ["gate_proj", "up_proj"].map(|n| format!("{p}.mlp.{n}"));
    let (gate, up) = match b.projections(n2, &names)?[..] {
        [gate, up] => (gate, up),
        _ => return Err(crate::error::ModelError::Usage("two projections expected".into())),
    };
    let gate = silu(&mut b.g, gate)?;
    let hidden = b.g.mul(gate, up)?;
    let down = proj(b, hidden, &format!("{p}.mlp.down_proj"))?;
    Ok(b.g.add(x, down)?)
}

/// `x · Wᵀ (+ b)` for the projection `name`.
fn proj(b: &mut Builder<'_>, x: ValueId, name: &str) -> Result<ValueId> {
    let w = b.w(&format!("{name}.weight"))?;
    let y = linear(&mut b.g, x, w)?;
    if !b.cfg.biases {
        return Ok(y);
    }
    let bias = b.w(&format!("{name}.bias"))?;
    Ok(b.g.add(y, bias)?)
}
