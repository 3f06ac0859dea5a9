#!/usr/bin/env python3
"""Writes the tiny model fixtures of crates/orion-models (run once; the outputs are committed).

Needs: pip install torch transformers safetensors numpy   (PyPI only; run time ~10 s on a CPU)
Usage:  python tools/make_tiny_models.py [output_dir]
        (default output_dir: crates/orion-models/tests/fixtures/models)

Writes, under output_dir:
  gpt2_tiny/model.safetensors, gpt2_tiny/config.json   Hugging Face GPT2LMHeadModel, random seeded
  llama_tiny/model.safetensors, llama_tiny/config.json Hugging Face LlamaForCausalLM (GQA, untied)
  llama_tiny/llama2c_v0.bin                            the same Llama in llama2.c's legacy format
  llama_tiny/llama2c_v1.bin                            the same Llama in llama2.c's "ak42" version 1 format
  expected.json   per model: the prompt, the prompt's logits [T, V] (computed in float64 from the
                  float32 weights) and 8 greedy continuation tokens (full re-forward at every step)

llama2.c stores q/k projection rows in Meta's interleaved-pair rotary order; Hugging Face stores them
in rotate-half order. The exporters below undo Hugging Face's permutation exactly as llama2.c's
export.py does when converting from Hugging Face (there with n_heads for both q and k; here with
n_kv_heads for k, which is what GQA needs).
"""

import json
import os
import struct
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

PROMPT = [1, 5, 17, 42, 3, 60, 7, 33]
NEW_TOKENS = 8
# Greedy steps whose best two logits differ by less than this would make the fixture fragile.
MIN_MARGIN = 1e-3


def randomise(model, seed):
    """Replaces HF's small init (std 0.02 gives near-uniform logits) by larger seeded values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.dim() == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)


def logits_f64(model, tokens):
    model64 = model.to(torch.float64)
    with torch.no_grad():
        out = model64(torch.tensor([tokens])).logits[0]
    model.to(torch.float32)
    return out


def greedy(model, prompt, steps):
    tokens = list(prompt)
    margins = []
    for _ in range(steps):
        last = logits_f64(model, tokens)[-1]
        top2 = torch.topk(last, 2).values
        margins.append(float(top2[0] - top2[1]))
        tokens.append(int(torch.argmax(last)))
    return tokens[len(prompt):], min(margins)


def record(model, name):
    logits = logits_f64(model, PROMPT)
    continuation, margin = greedy(model, PROMPT, NEW_TOKENS)
    assert margin > MIN_MARGIN, f"{name}: greedy margin {margin} too small, change the seed"
    return {
        "prompt": PROMPT,
        "logits": [[float(x) for x in row] for row in logits],
        "greedy": continuation,
        "min_greedy_margin": margin,
    }


def save_hf(model, config, directory):
    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # Tied models list the head under its own name too; HF's own save drops the duplicate.
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(os.path.join(directory, "config.json"))
    os.chmod(os.path.join(directory, "model.safetensors"), 0o644)


def make_gpt2(out):
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, layer_norm_epsilon=1e-5,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).eval()
    randomise(model, 11)
    model.tie_weights()
    save_hf(model, config, os.path.join(out, "gpt2_tiny"))
    return record(model, "gpt2_tiny")


def hf_to_meta_rows(w, heads):
    """Inverse of HF's convert_llama_weights_to_hf permute: rotate-half rows -> interleaved pairs."""
    rows, cols = w.shape
    half = rows // heads // 2
    return w.reshape(heads, 2, half, cols).transpose(1, 2).reshape(rows, cols)


def llama_c_weights(model, cfg):
    """Per-kind lists of the llama2.c tensors, q/k rows in Meta's interleaved order."""
    sd = model.state_dict()
    layers = range(cfg.num_hidden_layers)
    p = lambda i, s: sd[f"model.layers.{i}.{s}"]
    return {
        "emb": sd["model.embed_tokens.weight"],
        "rms_att": [p(i, "input_layernorm.weight") for i in layers],
        "wq": [hf_to_meta_rows(p(i, "self_attn.q_proj.weight"), cfg.num_attention_heads) for i in layers],
        "wk": [hf_to_meta_rows(p(i, "self_attn.k_proj.weight"), cfg.num_key_value_heads) for i in layers],
        "wv": [p(i, "self_attn.v_proj.weight") for i in layers],
        "wo": [p(i, "self_attn.o_proj.weight") for i in layers],
        "rms_ffn": [p(i, "post_attention_layernorm.weight") for i in layers],
        "w1": [p(i, "mlp.gate_proj.weight") for i in layers],
        "w2": [p(i, "mlp.down_proj.weight") for i in layers],
        "w3": [p(i, "mlp.up_proj.weight") for i in layers],
        "rms_final": sd["model.norm.weight"],
        "wcls": sd["lm_head.weight"],
    }


def write_f32(f, tensors):
    for t in tensors if isinstance(tensors, list) else [tensors]:
        data = t.detach().to(torch.float32).contiguous().view(-1).tolist()
        f.write(struct.pack(f"<{len(data)}f", *data))


def header_ints(cfg, vocab):
    return struct.pack("<7i", cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                       cfg.num_attention_heads, cfg.num_key_value_heads, vocab, cfg.max_position_embeddings)


def export_llama2c_v0(model, cfg, path):
    """llama2.c legacy_export: 7-int header (negative vocab = separate classifier), then f32 arrays."""
    w = llama_c_weights(model, cfg)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    with open(path, "wb") as f:
        f.write(header_ints(cfg, -cfg.vocab_size))
        for key in ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"]:
            write_f32(f, w[key])
        # freq_cis_real and freq_cis_imag [max_seq_len, head_dim / 2] (readers skip them)
        theta = (getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta})["rope_theta"]
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).double() / head_dim))
        angles = torch.outer(torch.arange(cfg.max_position_embeddings).double(), inv)
        write_f32(f, [torch.cos(angles), torch.sin(angles)])
        write_f32(f, w["wcls"])


def export_llama2c_v1(model, cfg, path):
    """llama2.c version1_export: 256-byte header with magic "ak42", then norms first."""
    w = llama_c_weights(model, cfg)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 0x616B3432))
        f.write(struct.pack("<i", 1))
        f.write(header_ints(cfg, cfg.vocab_size))
        f.write(struct.pack("<B", 0))  # shared classifier: no
        f.write(b"\0" * (256 - f.tell()))
        for key in ["rms_att", "rms_ffn", "rms_final", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "wcls"]:
            write_f32(f, w[key])


def make_llama(out):
    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, hidden_act="silu", attention_bias=False, mlp_bias=False,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    randomise(model, 22)
    directory = os.path.join(out, "llama_tiny")
    save_hf(model, config, directory)
    export_llama2c_v0(model, config, os.path.join(directory, "llama2c_v0.bin"))
    export_llama2c_v1(model, config, os.path.join(directory, "llama2c_v1.bin"))
    return record(model, "llama_tiny")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/orion-models/tests/fixtures/models"
    os.makedirs(out, exist_ok=True)
    expected = {
        "generator": "tools/make_tiny_models.py",
        "torch": torch.__version__,
        "gpt2_tiny": make_gpt2(out),
        "llama_tiny": make_llama(out),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote fixtures to {out}")


if __name__ == "__main__":
    main()
