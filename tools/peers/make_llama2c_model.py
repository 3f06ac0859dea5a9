#!/usr/bin/env python3
"""Writes a random Llama model in llama2.c's legacy `.bin` format, and a matching `tokenizer.bin`, for
measuring llama2.c's `run.c` and `orion bench inference` on the same file (docs/BENCHMARKS.md).

    python3 tools/peers/make_llama2c_model.py --shape stories110M --out /tmp/peers

writes OUT/model.bin and OUT/tokenizer.bin (never commit them: stories110M is ~440 MB).

Format (llama2.c `export.py`, legacy version 0): seven little-endian int32 (dim, hidden_dim, n_layers,
n_heads, n_kv_heads, vocab_size — positive: classifier shared with the embedding —, seq_len), then f32
tensors in this order: token embedding [V, D], attention RMSNorm gains [L, D], wq [L, D, D], wk and wv
[L, kv_dim, D], wo [L, D, D], FFN RMSNorm gains [L, D], w1 [L, H, D], w2 [L, D, H], w3 [L, H, D], the
final RMSNorm gain [D], and the two RoPE tables [seq_len, head_dim / 2] that run.c skips.

tokenizer.bin: int32 max_token_length, then per id: f32 score, int32 byte length, the bytes. Ids 0-2
are <unk>, <s>, </s>; 3-258 the byte pieces <0x00>..<0xFF>; the rest are synthetic pieces, so run.c can
print whatever a random model produces. Needs numpy.
"""
import argparse
import os
import struct

import numpy as np

# dim, hidden, layers, heads, kv heads, vocab, context — karpathy/llama2.c README (as ModelConfig::builtin).
SHAPES = {
    "stories15M": (288, 768, 6, 6, 6, 32000, 256),
    "stories42M": (512, 1376, 8, 8, 8, 32000, 1024),
    "stories110M": (768, 2048, 12, 12, 12, 32000, 1024),
}


def write_model(path, shape, seed):
    dim, hidden, layers, heads, kv_heads, vocab, ctx = shape
    head_dim = dim // heads
    kv_dim = kv_heads * head_dim
    rng = np.random.default_rng(seed)

    def normal(*dims, fan_in):
        return (rng.standard_normal(dims, dtype=np.float32) / np.sqrt(fan_in)).astype("<f4")

    def gains(*dims):
        return (1.0 + 0.1 * rng.standard_normal(dims, dtype=np.float32)).astype("<f4")

    with open(path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, ctx))
        for tensor in (
            normal(vocab, dim, fan_in=dim),
            gains(layers, dim),
            normal(layers, dim, dim, fan_in=dim),
            normal(layers, kv_dim, dim, fan_in=dim),
            normal(layers, kv_dim, dim, fan_in=dim),
            normal(layers, dim, dim, fan_in=dim),
            gains(layers, dim),
            normal(layers, hidden, dim, fan_in=dim),
            normal(layers, dim, hidden, fan_in=hidden),
            normal(layers, hidden, dim, fan_in=dim),
            gains(dim),
        ):
            f.write(tensor.tobytes())
        freqs = 1.0 / (10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
        angles = np.outer(np.arange(ctx, dtype=np.float32), freqs)
        f.write(np.cos(angles).astype("<f4").tobytes())
        f.write(np.sin(angles).astype("<f4").tobytes())


def write_tokenizer(path, vocab):
    pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % i for i in range(256)]
    pieces += [b" t%d" % i for i in range(vocab - len(pieces))]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for i, piece in enumerate(pieces):
            f.write(struct.pack("<fi", -float(i), len(piece)))
            f.write(piece)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="stories110M")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    shape = SHAPES[args.shape]
    write_model(os.path.join(args.out, "model.bin"), shape, args.seed)
    write_tokenizer(os.path.join(args.out, "tokenizer.bin"), shape[5])
    print(f"wrote {args.out}/model.bin ({args.shape}, random) and {args.out}/tokenizer.bin")


if __name__ == "__main__":
    main()
