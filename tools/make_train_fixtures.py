#!/usr/bin/env python3
"""Writes the training fixtures of crates/orion-models (run once; the outputs are committed).

Needs: pip install torch transformers safetensors   (PyPI only; run time a few seconds on a CPU)
Usage:  python tools/make_train_fixtures.py [models_dir] [output_dir]
        (defaults: crates/orion-models/tests/fixtures/models, crates/orion-models/tests/fixtures/train)

Reuses the tiny seeded models written by tools/make_tiny_models.py (gpt2_tiny, llama_tiny with GQA).
For each model writes output_dir/<model>.json with:
  batch        inputs and targets, i32 [B=2, T=8] (targets = the next token of each input)
  loss         mean cross-entropy over all B*T targets, computed in float64 from the float32 weights
  grads        the gradient of that loss for EVERY parameter, under Orion's canonical names and
               layouts (GPT-2: `transformer.` prefix dropped, c_attn split into q/k/v, Conv1D [in, out]
               transposed to [out, in]; Llama: Hugging Face names), flattened row-major
  adamw        10 steps of torch.optim.AdamW in float64 on 10 fixed batches: lr, betas, eps,
               weight_decay, the names of the decayed parameters (rank >= 2; norms and biases
               excluded), the batches, and the loss of each batch measured before its update
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel, LlamaForCausalLM

B, T = 2, 8
STEPS = 10
LR, BETAS, EPS, WD = 3e-3, (0.9, 0.95), 1e-8, 0.1


def batch(gen, vocab):
    seq = torch.randint(0, vocab, (B, T + 1), generator=gen)
    return seq[:, :T].contiguous(), seq[:, 1:].contiguous()


def loss_of(model, inputs, targets):
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def canonical_grads(model, family):
    """Orion's canonical name -> flattened gradient, in Orion's layouts."""
    out = {}
    for name, p in model.named_parameters():
        g = p.grad.detach()
        if family == "gpt2":
            name = name.removeprefix("transformer.")
            if name == "lm_head.weight":
                continue  # tied to wte; HF accumulates both uses into the shared parameter
            if ".attn.c_attn." in name:
                prefix, kind = name.split(".attn.c_attn.")
                d = g.shape[-1] // 3
                for i, proj in enumerate(["q_proj", "k_proj", "v_proj"]):
                    part = g[..., i * d:(i + 1) * d]
                    part = part.t() if kind == "weight" else part
                    out[f"{prefix}.attn.{proj}.{kind}"] = part.contiguous().reshape(-1).tolist()
                continue
            if name.endswith(".weight") and (".attn.c_proj." in name or ".mlp." in name):
                g = g.t()
        out[name] = g.contiguous().reshape(-1).tolist()
    return out


def decayed_names(grads):
    """Canonical names whose parameter has rank >= 2 (matrices and embeddings)."""
    return sorted(n for n in grads if not (n.endswith("bias") or "ln" in n or "norm" in n))


def record(model, family, seed):
    model = model.to(torch.float64).train()
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    inputs, targets = batch(gen, vocab)
    model.zero_grad()
    loss = loss_of(model, inputs, targets)
    loss.backward()
    grads = canonical_grads(model, family)
    decayed = decayed_names(grads)
    batches = [batch(gen, vocab) for _ in range(STEPS)]
    hf_decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    hf_rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": hf_decay, "weight_decay": WD}, {"params": hf_rest, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS,
    )
    losses = []
    for x, y in batches:
        opt.zero_grad()
        step_loss = loss_of(model, x, y)
        step_loss.backward()
        opt.step()
        losses.append(float(step_loss.detach()))
    return {
        "batch": {"inputs": inputs.tolist(), "targets": targets.tolist()},
        "loss": float(loss),
        "grads": grads,
        "adamw": {
            "lr": LR, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": WD,
            "decayed": decayed,
            "batches": [{"inputs": x.tolist(), "targets": y.tolist()} for x, y in batches],
            "losses": losses,
        },
    }


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else "crates/orion-models/tests/fixtures/models"
    out = sys.argv[2] if len(sys.argv) > 2 else "crates/orion-models/tests/fixtures/train"
    os.makedirs(out, exist_ok=True)
    specs = [("gpt2_tiny", GPT2LMHeadModel, "gpt2", 101), ("llama_tiny", LlamaForCausalLM, "llama", 202)]
    for name, cls, family, seed in specs:
        model = cls.from_pretrained(os.path.join(models, name), attn_implementation="eager")
        result = record(model, family, seed)
        result["generator"] = "tools/make_train_fixtures.py"
        result["torch"] = torch.__version__
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(result, f)
        print(name, "loss", result["loss"], "losses", result["adamw"]["losses"][-1])


if __name__ == "__main__":
    main()
