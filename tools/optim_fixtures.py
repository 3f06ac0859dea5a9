#!/usr/bin/env python3
"""Writes the AdamW reference fixture of crates/orion-models (run once; the output is committed).

Needs: pip install torch   (PyPI only; runs in about a second on a CPU)
Usage:  python tools/optim_fixtures.py [output_file]
        (default: crates/orion-models/tests/fixtures/optim/adamw.json)

Three small float32 tensors are optimised by torch.optim.AdamW for 5 steps with seeded gradients and
a per-step learning rate (linear warmup then cosine, set on the param groups before each step). Weight
decay applies to the rank-2 weight only: the norm gain and the bias sit in a group with
weight_decay=0, as the Rust side's default rule (rank >= 2 and not *.bias) decides. The fixture
records the hyper-parameters, the initial values, the gradients and learning rate of every step, and
every parameter after every step (float32 values written exactly as Python floats).
"""

import json
import math
import os
import sys

import torch

LR = 1e-2
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
STEPS = 5
WARMUP = 2
SHAPES = {
    "layers.0.mlp.weight": [3, 4],
    "layers.0.norm.weight": [4],
    "layers.0.mlp.bias": [3],
}


def lr_at(step):
    """Warmup (step+1)/WARMUP, then cosine from LR down to 0.1*LR over the remaining steps."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    lo = 0.1 * LR
    return lo + (LR - lo) * 0.5 * (1 + math.cos(math.pi * progress))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/orion-models/tests/fixtures/optim/adamw.json"
    gen = torch.Generator().manual_seed(1234)
    params = {n: torch.randn(s, generator=gen, dtype=torch.float32) for n, s in SHAPES.items()}
    initial = {n: p.flatten().tolist() for n, p in params.items()}
    tensors = {n: torch.nn.Parameter(p.clone()) for n, p in params.items()}
    decay = [t for n, t in tensors.items() if len(SHAPES[n]) >= 2 and not n.endswith(".bias")]
    no_decay = [t for n, t in tensors.items() if not (len(SHAPES[n]) >= 2 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
        foreach=False,
    )
    steps = []
    for step in range(STEPS):
        lr = lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        grads = {}
        for n, t in tensors.items():
            g = torch.randn(SHAPES[n], generator=gen, dtype=torch.float32) * (0.1 * (step + 1))
            if n == "layers.0.norm.weight":
                g[0] = 0.0  # an element whose moments stay zero
            t.grad = g
            grads[n] = g.flatten().tolist()
        opt.step()
        after = {n: t.detach().flatten().tolist() for n, t in tensors.items()}
        steps.append({"lr": lr, "grads": grads, "params": after})
    fixture = {
        "generator": "tools/optim_fixtures.py, torch " + torch.__version__,
        "lr": LR,
        "beta1": BETAS[0],
        "beta2": BETAS[1],
        "eps": EPS,
        "weight_decay": WEIGHT_DECAY,
        "shapes": SHAPES,
        "initial": initial,
        "steps": steps,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
