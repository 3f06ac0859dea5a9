#!/usr/bin/env python3
"""PyTorch peer figures for docs/BENCHMARKS.md, measured the way `orion bench` measures ours: random
weights, medians after a warm-up, on the CPU with the threads given.

    python3 tools/peers/torch_bench.py gpt2-decode  [--dtype float32|bfloat16|float16] [--capacity 256]
    python3 tools/peers/torch_bench.py gpt2-prefill [--dtype ...] [--tokens 128]
    python3 tools/peers/torch_bench.py train --shape stories15M|stories110M [--batch 8 --seq 256]
    python3 tools/peers/torch_bench.py gemm    # f32 GEMM rates of PyTorch (MKL) and numpy (OpenBLAS)
    ... [--autocast bfloat16]   # f32 weights, products in bfloat16 (as `orion ... --products bf16`)

- gpt2-decode: GPT-2 124M (transformers `GPT2LMHeadModel`, random init), a 16-token prompt, then greedy
  decoding one token per forward with the KV cache (`past_key_values`), 32 new tokens; tok/s = decode
  steps / their wall time (forward, argmax), like `orion bench inference`'s decode row;
- gpt2-prefill: one forward of a 128-token prompt with the cache on (what prefill does), ms;
- train: a Llama of the llama2.c shape (transformers `LlamaForCausalLM`, tied embeddings, random init),
  one AdamW step on a random batch (forward with labels, backward, optimizer step, zero_grad) in f32,
  ms per step and tokens/s;
- gemm: the f32 matrix products the targets are made of, `x · Wᵀ` at three shapes (GPT-2's c_fc at 128
  prefill tokens, a Stories110M MLP product over a batch of 8 × 256, Stories15M's classifier over that
  batch), through `torch.mm` (MKL / oneDNN) and numpy's `@` (the OpenBLAS its wheel bundles; set
  OPENBLAS_NUM_THREADS to the thread count), GFLOP/s from the median time: the rate well-tuned
  libraries reach on this machine, to set the f32 bounds by (rather than the multiply-add peak alone).

`--autocast bfloat16` runs prefill and the training step's forward under `torch.autocast("cpu",
dtype=torch.bfloat16)`: weights, optimiser and gradients stay f32, the products (linear layers,
attention) take bfloat16 operands — PyTorch's mixed precision, the peer of `--products bf16`.

Prints one JSON object per run. Needs torch and transformers (`pip install torch transformers`).
"""
import argparse
import contextlib
import json
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

SHAPES = {  # dim, hidden, layers, heads, kv heads, vocab, context (as ModelConfig::builtin)
    "stories15M": (288, 768, 6, 6, 6, 32000, 256),
    "stories110M": (768, 2048, 12, 12, 12, 32000, 1024),
}


def gpt2(dtype):
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    return model.to(dtype)


def prompt(n, vocab):
    return torch.tensor([[(i * 7919 + 13) % vocab for i in range(n)]])


@torch.inference_mode()
def decode(args):
    model = gpt2(getattr(torch, args.dtype))
    ids = prompt(16, model.config.vocab_size)
    rates = []
    for i in range(args.iterations + 1):
        out = model(ids, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        elapsed = time.perf_counter() - start
        if i > 0:
            rates.append((args.new_tokens - 1) / elapsed)
    return {"decode_tok_s": statistics.median(rates), "samples": rates}


def products(args):
    """The context the forward runs in: bfloat16 autocast when asked, otherwise nothing."""
    if args.autocast == "none":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, args.autocast))


@torch.inference_mode()
def prefill(args):
    model = gpt2(getattr(torch, args.dtype))
    ids = prompt(args.tokens, model.config.vocab_size)
    times = []
    for i in range(args.iterations + 1):
        start = time.perf_counter()
        with products(args):
            out = model(ids, use_cache=True)
        out.logits[:, -1].argmax(-1)
        if i > 0:
            times.append((time.perf_counter() - start) * 1e3)
    return {"prefill_ms": statistics.median(times), "tokens": args.tokens, "samples": times}


def train(args):
    dim, hidden, layers, heads, kv_heads, vocab, ctx = SHAPES[args.shape]
    config = LlamaConfig(
        hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=ctx, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(11)
    times, losses = [], []
    for i in range(args.iterations + 1):
        batch = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=generator)
        start = time.perf_counter()
        with products(args):
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i > 0:
            times.append((time.perf_counter() - start) * 1e3)
            losses.append(loss.item())
    step = statistics.median(times)
    return {"step_ms": step, "tok_s": args.batch * args.seq / step * 1e3, "losses": losses, "samples": times}


GEMM_SHAPES = {  # label: (rows, outputs, inputs) of x [rows, inputs] · Wᵀ, W [outputs, inputs]
    "gpt2_prefill_fc": (128, 3072, 768),
    "stories110M_mlp": (2048, 2048, 768),
    "stories15M_classifier": (2048, 32000, 288),
}


@torch.inference_mode()
def gemm(args):
    import numpy
    result = {}
    for label, (m, n, k) in GEMM_SHAPES.items():
        generator = torch.Generator().manual_seed(3)
        x, w = torch.rand(m, k, generator=generator), torch.rand(n, k, generator=generator)
        xn, wn = x.numpy(), w.numpy()
        for library, product in [("torch", lambda: torch.mm(x, w.t())), ("numpy", lambda: xn @ wn.T)]:
            times = []
            for i in range(args.iterations + 1):
                start = time.perf_counter()
                product()
                if i > 0:
                    times.append(time.perf_counter() - start)
            result[f"{library}_{label}_gflops"] = 2 * m * n * k / statistics.median(times) / 1e9
    result["numpy"] = numpy.__version__
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["gpt2-decode", "gpt2-prefill", "train", "gemm"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="stories15M")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--autocast", default="none", choices=["none", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = {"gpt2-decode": decode, "gpt2-prefill": prefill, "train": train, "gemm": gemm}[args.what]
    result = run(args)
    result.update({"what": args.what, "dtype": args.dtype, "autocast": args.autocast, "threads": args.threads,
                   "torch": torch.__version__})
    if args.what == "train":
        result.update({"shape": args.shape, "batch": args.batch, "seq": args.seq})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
