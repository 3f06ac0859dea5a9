//! Reference transformer-block graphs (GPT-2 and Llama style) with weights as inputs.
//!
//! Used by soundness, autodiff and (later) lowering tests as realistic programs. The blocks are
//! small (a handful of heads and channels) so that the reference interpreter runs them quickly.
//! Inputs: `x [T, D]` first, then every weight in a fixed order; one output `y [T, D]`.

use crate::composite::{
    causal_attention, float_input, gelu_tanh, layer_norm, linear, linear_bias, merge_heads, rms_norm, rope,
    split_heads, swiglu,
};
use crate::error::Result;
use crate::graph::Graph;
use crate::types::DType;

/// Shape of a test block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    pub seq_len: usize,
    pub dim: usize,
    pub heads: usize,
    /// Key/value heads (Llama grouped-query attention); GPT-2 ignores it.
    pub kv_heads: usize,
    pub hidden: usize,
    pub dtype: DType,
}

impl BlockConfig {
    /// A tiny configuration: T = 4, D = 8, 2 heads (1 KV head), hidden 16, f32.
    pub fn tiny() -> BlockConfig {
        BlockConfig {
            seq_len: 4,
            dim: 8,
            heads: 2,
            kv_heads: 1,
            hidden: 16,
            dtype: DType::F32,
        }
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// GPT-2 block: `x + attn(ln1(x))`, then `+ mlp(ln2(·))` with tanh-GELU; biases everywhere.
pub fn gpt2_block(cfg: &BlockConfig) -> Result<Graph> {
    let mut g = Graph::new("gpt2_block");
    let (t, d, h, dt) = (cfg.seq_len, cfg.dim, cfg.hidden, cfg.dtype);
    let x = float_input(&mut g, "x", dt, &[t, d])?;
    let ln1_g = float_input(&mut g, "ln1_g", dt, &[d])?;
    let ln1_b = float_input(&mut g, "ln1_b", dt, &[d])?;
    let mut proj = Vec::new();
    for name in ["q", "k", "v", "o"] {
        let w = float_input(&mut g, &format!("w{name}"), dt, &[d, d])?;
        let b = float_input(&mut g, &format!("b{name}"), dt, &[d])?;
        proj.push((w, b));
    }
    let ln2_g = float_input(&mut g, "ln2_g", dt, &[d])?;
    let ln2_b = float_input(&mut g, "ln2_b", dt, &[d])?;
    let w_fc = float_input(&mut g, "w_fc", dt, &[h, d])?;
    let b_fc = float_input(&mut g, "b_fc", dt, &[h])?;
    let w_proj = float_input(&mut g, "w_proj", dt, &[d, h])?;
    let b_proj = float_input(&mut g, "b_proj", dt, &[d])?;

    let n1 = layer_norm(&mut g, x, ln1_g, ln1_b, 1e-5)?;
    let q = linear_bias(&mut g, n1, proj[0].0, proj[0].1)?;
    let k = linear_bias(&mut g, n1, proj[1].0, proj[1].1)?;
    let v = linear_bias(&mut g, n1, proj[2].0, proj[2].1)?;
    let (q, k, v) = (
        split_heads(&mut g, q, cfg.heads)?,
        split_heads(&mut g, k, cfg.heads)?,
        split_heads(&mut g, v, cfg.heads)?,
    );
    let attn = causal_attention(&mut g, q, k, v)?;
    let attn = merge_heads(&mut g, attn)?;
    let attn = linear_bias(&mut g, attn, proj[3].0, proj[3].1)?;
    let x1 = g.add(x, attn)?;
    let n2 = layer_norm(&mut g, x1, ln2_g, ln2_b, 1e-5)?;
    let up = linear_bias(&mut g, n2, w_fc, b_fc)?;
    let act = gelu_tanh(&mut g, up)?;
    let down = linear_bias(&mut g, act, w_proj, b_proj)?;
    let y = g.add(x1, down)?;
    g.set_output("y", y)?;
    Ok(g)
}

/// Llama block: RMSNorm, RoPE on q and k (tables as inputs), grouped-query attention, SwiGLU.
pub fn llama_block(cfg: &BlockConfig) -> Result<Graph> {
    let mut g = Graph::new("llama_block");
    let (t, d, h, dt) = (cfg.seq_len, cfg.dim, cfg.hidden, cfg.dtype);
    let kv_dim = cfg.kv_heads * cfg.head_dim();
    let x = float_input(&mut g, "x", dt, &[t, d])?;
    let cos = float_input(&mut g, "rope_cos", dt, &[t, cfg.head_dim()])?;
    let sin = float_input(&mut g, "rope_sin", dt, &[t, cfg.head_dim()])?;
    let attn_norm = float_input(&mut g, "attn_norm", dt, &[d])?;
    let wq = float_input(&mut g, "wq", dt, &[d, d])?;
    let wk = float_input(&mut g, "wk", dt, &[kv_dim, d])?;
    let wv = float_input(&mut g, "wv", dt, &[kv_dim, d])?;
    let wo = float_input(&mut g, "wo", dt, &[d, d])?;
    let ffn_norm = float_input(&mut g, "ffn_norm", dt, &[d])?;
    let w_gate = float_input(&mut g, "w_gate", dt, &[h, d])?;
    let w_up = float_input(&mut g, "w_up", dt, &[h, d])?;
    let w_down = float_input(&mut g, "w_down", dt, &[d, h])?;

    let n1 = rms_norm(&mut g, x, attn_norm, 1e-5)?;
    let q = linear(&mut g, n1, wq)?;
    let k = linear(&mut g, n1, wk)?;
    let v = linear(&mut g, n1, wv)?;
    let q = split_heads(&mut g, q, cfg.heads)?;
    let k = split_heads(&mut g, k, cfg.kv_heads)?;
    let v = split_heads(&mut g, v, cfg.kv_heads)?;
    let q = rope(&mut g, q, cos, sin)?;
    let k = rope(&mut g, k, cos, sin)?;
    let attn = causal_attention(&mut g, q, k, v)?;
    let attn = merge_heads(&mut g, attn)?;
    let attn = linear(&mut g, attn, wo)?;
    let x1 = g.add(x, attn)?;
    let n2 = rms_norm(&mut g, x1, ffn_norm, 1e-5)?;
    let ffn = swiglu(&mut g, n2, w_gate, w_up, w_down)?;
    let y = g.add(x1, ffn)?;
    g.set_output("y", y)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_build_with_expected_signatures() {
        let cfg = BlockConfig::tiny();
        let gpt2 = gpt2_block(&cfg).unwrap();
        assert_eq!(gpt2.inputs().count(), 17);
        assert_eq!(gpt2.ty(gpt2.outputs()[0].value).shape.dims(), &[4, 8]);
        let llama = llama_block(&cfg).unwrap();
        assert_eq!(llama.input_value("wk").map(|v| llama.dims(v)), Some(vec![4, 8]));
        assert_eq!(llama.ty(llama.outputs()[0].value).shape.dims(), &[4, 8]);
    }

    #[test]
    fn mismatched_heads_are_reported() {
        let cfg = BlockConfig {
            kv_heads: 3,
            ..BlockConfig::tiny()
        };
        let err = llama_block(&cfg).unwrap_err().to_string();
        assert!(err.contains("split_heads") || err.contains("causal_attention"), "{err}");
    }
}
