//! GPT-2: learned token and position embeddings, pre-LayerNorm blocks with multi-head attention and
//! a tanh-GELU MLP, biases on every linear layer (unless `biases` is off), final LayerNorm, tied head.
//!
//! Weight names (canonical, see `model`): `wte.weight [V, D]`, `wpe.weight [P, D]`, per layer
//! `h.{i}.ln_1.{weight,bias}`, `h.{i}.attn.{q,k,v}_proj.{weight [D, D], bias [D]}`,
//! `h.{i}.attn.c_proj.{weight [D, D], bias}`, `h.{i}.ln_2.{weight,bias}`,
//! `h.{i}.mlp.c_fc.{weight [H, D], bias [H]}`, `h.{i}.mlp.c_proj.{weight [D, H], bias [D]}`, then
//! `ln_f.{weight,bias}` and, for an untied head only, `lm_head.weight [V, D]`. Matrices are `[out, in]`.

use super::{Builder, GraphKind, WeightSpec};
use crate::config::ModelConfig;
use crate::error::Result;
use orion_core::composite::{gelu_tanh, layer_norm, linear};
use orion_core::ValueId;

/// The canonical tensors of a GPT-2 model, in order.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    let (d, h, v) = (cfg.dim, cfg.hidden_dim, cfg.vocab_size);
    let mut specs = vec![
        WeightSpec::new("wte.weight", &[v, d]),
        WeightSpec::new("wpe.weight", &[cfg.max_seq_len, d]),
    ];
    let linear_spec = |specs: &mut Vec<WeightSpec>, name: String, out: usize, inp: usize| {
        specs.push(WeightSpec::new(format!("{name}.weight"), &[out, inp]));
        if cfg.biases {
            specs.push(WeightSpec::new(format!("{name}.bias"), &[out]));
        }
    };
    for i in 0..cfg.n_layers {
        specs.push(WeightSpec::new(format!("h.{i}.ln_1.weight"), &[d]));
        specs.push(WeightSpec::new(format!("h.{i}.ln_1.bias"), &[d]));
        for proj in ["q_proj", "k_proj", "v_proj", "c_proj"] {
            linear_spec(&mut specs, format!("h.{i}.attn.{proj}"), d, d);
        }
        specs.push(WeightSpec::new(format!("h.{i}.ln_2.weight"), &[d]));
        specs.push(WeightSpec::new(format!("h.{i}.ln_2.bias"), &[d]));
        linear_spec(&mut specs, format!("h.{i}.mlp.c_fc"), h, d);
        linear_spec(&mut specs, format!("h.{i}.mlp.c_proj"), d, h);
    }
    specs.push(WeightSpec::new("ln_f.weight", &[d]));
    specs.push(WeightSpec::new("ln_f.bias", &[d]));
    if !cfg.tied_embeddings {
        specs.push(WeightSpec::new("lm_head.weight", &[v, d]));
    }
    specs
}

/// Appends the GPT-2 network to a builder whose inputs and weights are declared.
pub(crate) fn build(b: &mut Builder<'_>) -> Result<()> {
    let wte = b.w("wte.weight")?;
    let wpe = b.w("wpe.weight")?;
    let tok = b.g.gather(wte, b.tokens)?;
    let pos = match (b.kind, b.position) {
        (GraphKind::Decode { .. }, Some(position)) => b.g.gather(wpe, position)?,
        _ => b.g.slice_axis(wpe, 0, 0, b.rows())?,
    };
    let mut x = b.g.add(tok, pos)?;
    for layer in 0..b.cfg.n_layers {
        x = block(b, x, layer)?;
    }
    let x = norm(b, x, "ln_f")?;
    let head = if b.cfg.tied_embeddings {
        wte
    } else {
        b.w("lm_head.weight")?
    };
    b.finish(x, head)
}

/// One block (layer `i`) on `x [T, D]`; also the body of the per-layer training programs.
pub(crate) fn block(b: &mut Builder<'_>, x: ValueId, i: usize) -> Result<ValueId> {
    let heads = b.cfg.n_heads;
    let n1 = norm(b, x, &format!("h.{i}.ln_1"))?;
    let names = ["q_proj", "k_proj", "v_proj"].map(|p| format!("h.{i}.attn.{p}"));
    let (q, k, v) = match b.projections(n1, &names)?[..] {
        [q, k, v] => (q, k, v),
        _ => return Err(crate::error::ModelError::Usage("three projections expected".into())),
    };
    let q = b.split_heads(q, heads)?;
    let k = b.split_heads(k, heads)?;
    let v = b.split_heads(v, heads)?;
    let attn = b.attend(i, q, k, v)?;
    let attn = b.merge_heads(attn)?;
    let attn = proj(b, attn, &format!("h.{i}.attn.c_proj"))?;
    let x = b.residual_rows(i, x)?;
    let x = b.g.add(x, attn)?;
    let n2 = norm(b, x, &format!("h.{i}.ln_2"))?;
    let up = proj(b, n2, &format!("h.{i}.mlp.c_fc"))?;
    let act = gelu_tanh(&mut b.g, up)?;
    let down = proj(b, act, &format!("h.{i}.mlp.c_proj"))?;
    Ok(b.g.add(x, down)?)
}

fn norm(b: &mut Builder<'_>, x: ValueId, name: &str) -> Result<ValueId> {
    let gamma = b.w(&format!("{name}.weight"))?;
    let beta = b.w(&format!("{name}.bias"))?;
    Ok(layer_norm(&mut b.g, x, gamma, beta, b.cfg.norm_eps)?)
}

/// `x · Wᵀ (+ b)` for the linear layer `name`.
fn proj(b: &mut Builder<'_>, x: ValueId, name: &str) -> Result<ValueId> {
    let w = b.w(&format!("{name}.weight"))?;
    let y = linear(&mut b.g, x, w)?;
    if !b.cfg.biases {
        return Ok(y);
    }
    let bias = b.w(&format!("{name}.bias"))?;
    Ok(b.g.add(y, bias)?)
}
