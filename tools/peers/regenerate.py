#!/usr/bin/env python3
"""Re-measures every figure of docs/BENCHMARKS.md — ours (`orion bench`) and the peers' (PyTorch,
llama2.c `run.c`) — in interleaved rounds, and prints the table rows in Markdown.

    cargo build --release -p orion-cli
    python3 tools/peers/make_llama2c_model.py --shape stories110M --out /tmp/peers
    gcc -Ofast -fopenmp -march=native run.c -lm -o /tmp/llama2c/run     # llama2.c's run.c, outside the repo
    gcc -Ofast -march=native -fopenmp tools/peers/read_bandwidth.c -o /tmp/read_bandwidth
    gcc -O2 -march=native -fopenmp tools/peers/fma_peak.c -o /tmp/fma_peak
    python3 tools/peers/regenerate.py --orion target/release/orion --run-c /tmp/llama2c/run \\
        --read-bandwidth /tmp/read_bandwidth --fma-peak /tmp/fma_peak \\
        --peers /tmp/peers --rounds 3 --out /tmp/orion-bench-results

The machine is shared, so every measurement first waits (up to --quiet-wait seconds) until the CPUs have
been at least 90 % idle for 3 s, and the rounds interleave ours and the peers'. Each figure is reported
as the median over rounds and the best round (least disturbed). With --read-bandwidth and --fma-peak
each round also measures the machine's memory read rate (before the GPT-2 decodes and again before the
Stories110M file decodes) and its multiply-add peak, so every round's figures have their bounds beside
them; the decode rows also record the weights' GB/s, to set against the read rate. With --run-c, each
round also runs run.c's own job on our side (`orion generate`, 255 new tokens from the start of the
context on the same file) right before run.c, so that row compares the same work. With --huge-pages,
each of our decode measurements also runs with `--huge-pages` (decode weights on transparent huge
pages), right after the plain one, under labels ending in "(huge pages)". With --bf16, each
compute-bound row (GPT-2 prefill, both training rows; ours and PyTorch's) also runs with bfloat16
products — `--products bf16` for ours, `torch_bench.py --autocast bfloat16` for PyTorch — right after
the plain one, under labels ending in "(bf16 products)". Raw results (every `--json` run and
every peer's output) go to --out. Needs the venv of torch_bench.py for the PyTorch rows (--python);
with them, each round also times the f32 GEMMs of PyTorch (MKL) and numpy (OpenBLAS) at three of the
targets' product shapes (`torch_bench.py gemm`), the rate the f32 bounds are set by.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4]


def wait_quiet(limit):
    """Waits until the CPUs were >= 90 % idle over 3 s; returns the idle share seen last."""
    start = time.time()
    while True:
        total1, idle1 = cpu_times()
        time.sleep(3)
        total2, idle2 = cpu_times()
        idle = 100.0 * (idle2 - idle1) / max(1, total2 - total1)
        if idle >= 90.0 or time.time() - start >= limit:
            return idle


def figure(run, row, name):
    for r in run["rows"]:
        if r["name"] == row:
            for f in r["figures"]:
                if f["name"] == name:
                    return f["value"]
    raise KeyError(f"{row} / {name}")


def orion(args, key, bench_args, picks):
    """Runs `orion bench ...`; returns {label: value} for each (label, row, figure) in picks."""
    path = os.path.join(args.out, f"{key}.json")
    subprocess.run([args.orion, "bench", *bench_args, "--json", path], check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        run = json.load(f)
    return {label: figure(run, row, name) for label, row, name in picks}


def orion_generate(args, key, extra=(), suffix=""):
    """Runs `orion generate` on the llama2.c file for run.c's job (255 new tokens from the start,
    greedy); returns the decode rate it prints."""
    model, tokenizer = os.path.join(args.peers, "model.bin"), os.path.join(args.peers, "tokenizer.bin")
    proc = subprocess.run([args.orion, "generate", "--weights", model, "--tokenizer", tokenizer, "--prompt", "Once",
                           "--max-tokens", "255", "--device", "cpu", *extra],
                          capture_output=True, text=True, check=True)
    rate = printed_rate(args, key, proc, r"decode ([0-9.]+) tok/s", "orion generate")
    return {"orion Stories110M file generate 255 tok/s" + suffix: rate}


def printed_rate(args, key, proc, pattern, who):
    """The rate `pattern` finds in a finished process's stderr, which is kept in --out as `key`.txt."""
    match = re.search(pattern, proc.stderr)
    if not match:
        raise RuntimeError(f"{who} printed no rate: {proc.stderr}")
    with open(os.path.join(args.out, f"{key}.txt"), "w") as f:
        f.write(proc.stderr)
    return float(match.group(1))


def torch_peer(args, key, peer_args, picks):
    script = os.path.join(HERE, "torch_bench.py")
    # numpy's OpenBLAS (the gemm rows) takes its thread count from the environment.
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    out = subprocess.run([args.python, script, *peer_args], env=env, check=True, capture_output=True,
                         text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(args.out, f"{key}.json"), "w") as f:
        json.dump(result, f)
    return {label: result[field] for label, field in picks}


def run_c(args, key):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    model, tokenizer = os.path.join(args.peers, "model.bin"), os.path.join(args.peers, "tokenizer.bin")
    proc = subprocess.run([args.run_c, model, "-z", tokenizer, "-n", "256", "-t", "0"], env=env,
                          capture_output=True, text=True, check=True)
    return {"run.c Stories110M file decode tok/s": printed_rate(args, key, proc, r"achieved tok/s: ([0-9.]+)", "run.c")}


def machine_rate(binary, key, label, args):
    """Runs read_bandwidth.c or fma_peak.c (both print the rate first); returns {label: rate}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([binary], env=env, capture_output=True, text=True, check=True).stdout
    with open(os.path.join(args.out, f"{key}.txt"), "a") as f:
        f.write(out)
    return {label: float(out.split()[0])}


def measurements(args):
    """(key, function) pairs, one per process run."""
    file_model = os.path.join(args.peers, "model.bin")
    items = []
    if args.fma_peak:
        items.append(("machine_fma", lambda: machine_rate(args.fma_peak, "machine_fma",
                                                           "machine f32 multiply-add GFLOP/s", args)))
    if args.read_bandwidth:
        items.append(("machine_read_gpt2", lambda: machine_rate(
            args.read_bandwidth, "machine_read_gpt2", "machine read GB/s (before GPT-2)", args)))
    items += [
        ("orion_gpt2_f32", lambda: orion(args, "orion_gpt2_f32", ["inference", "--model", "gpt2"], [
            ("orion GPT-2 decode f32 tok/s", "decode", "tok/s"),
            ("orion GPT-2 decode f32 weights GB/s", "decode", "weights GB/s"),
            ("orion GPT-2 prefill 128 f32 ms", "prefill 128", "ms")])),
        ("orion_gpt2_f16", lambda: orion(args, "orion_gpt2_f16",
                                         ["inference", "--model", "gpt2", "--weights", "f16"], [
            ("orion GPT-2 decode f16 tok/s", "decode", "tok/s"),
            ("orion GPT-2 decode f16 weights GB/s", "decode", "weights GB/s"),
            ("orion GPT-2 prefill 128 f16 ms", "prefill 128", "ms")])),
        ("orion_train_15m", lambda: orion(args, "orion_train_15m", ["training", "--model", "stories15M"], [
            ("orion Stories15M step (8x256) ms", "step", "ms")])),
        ("orion_train_110m", lambda: orion(args, "orion_train_110m",
                                           ["training", "--model", "stories110M", "--iterations", "3"], [
            ("orion Stories110M training tok/s", "step", "tok/s")])),
        ("orion_compile", lambda: orion(args, "orion_compile", ["compile"], [
            ("orion compile dynamic lower+emit ms", "dynamic (weights as inputs)", "lower+emit ms"),
            ("orion compile dynamic total ms", "dynamic (weights as inputs)", "ms")])),
    ]
    if os.path.exists(file_model):
        if args.read_bandwidth:
            items.append(("machine_read_file", lambda: machine_rate(
                args.read_bandwidth, "machine_read_file", "machine read GB/s (before the Stories110M file)", args)))
        items.append(("orion_file_110m", lambda: orion(args, "orion_file_110m",
                                                       ["inference", "--model", file_model], [
            ("orion Stories110M file decode tok/s", "decode", "tok/s"),
            ("orion Stories110M file decode weights GB/s", "decode", "weights GB/s")])))
        if args.run_c:
            # run.c's own job for both, back to back: 255 new tokens from the start of the context.
            items.append(("orion_file_generate", lambda: orion_generate(args, "orion_file_generate")))
            if args.huge_pages:
                items.append(("orion_file_generate_huge", lambda: orion_generate(
                    args, "orion_file_generate_huge", ["--huge-pages"], HUGE)))
            items.append(("runc_file_110m", lambda: run_c(args, "runc_file_110m")))
    if args.huge_pages:
        items = with_huge_page_decodes(args, items)
    if not args.skip_torch:
        threads = ["--threads", str(args.threads)]
        for dtype in ["float32", "bfloat16", "float16"]:
            key = f"torch_gpt2_decode_{dtype}"
            items.append((key, lambda k=key, d=dtype: torch_peer(
                args, k, ["gpt2-decode", "--dtype", d, *threads], [(f"torch GPT-2 decode {d} tok/s", "decode_tok_s")])))
        items.append(("torch_gemm", lambda: torch_peer(
            args, "torch_gemm", ["gemm", "--iterations", "9", *threads],
            [(f"{library} f32 GEMM {label} GFLOP/s", f"{library}_{label}_gflops")
             for library in ["torch", "numpy"] for label in ["gpt2_prefill_fc", "stories110M_mlp",
                                                             "stories15M_classifier"]])))
        items.append(("torch_gpt2_prefill", lambda: torch_peer(
            args, "torch_gpt2_prefill", ["gpt2-prefill", *threads], [("torch GPT-2 prefill 128 f32 ms", "prefill_ms")])))
        items.append(("torch_train_15m", lambda: torch_peer(
            args, "torch_train_15m", ["train", "--shape", "stories15M", "--iterations", "3", *threads],
            [("torch Stories15M step (8x256) ms", "step_ms")])))
        items.append(("torch_train_110m", lambda: torch_peer(
            args, "torch_train_110m", ["train", "--shape", "stories110M", "--iterations", "3", *threads],
            [("torch Stories110M training tok/s", "tok_s")])))
    if args.bf16:
        items = with_bf16_products(args, items)
    return items


BF16 = " (bf16 products)"
BF16_BENCHES = {
    "orion_gpt2_f32": (["inference", "--model", "gpt2"], [("orion GPT-2 prefill 128 f32 ms", "prefill 128", "ms")]),
    "orion_train_15m": (["training", "--model", "stories15M"], [("orion Stories15M step (8x256) ms", "step", "ms")]),
    "orion_train_110m": (["training", "--model", "stories110M", "--iterations", "3"],
                         [("orion Stories110M training tok/s", "step", "tok/s")]),
    "torch_gpt2_prefill": (["gpt2-prefill"], [("torch GPT-2 prefill 128 f32 ms", "prefill_ms")]),
    "torch_train_15m": (["train", "--shape", "stories15M", "--iterations", "3"],
                        [("torch Stories15M step (8x256) ms", "step_ms")]),
    "torch_train_110m": (["train", "--shape", "stories110M", "--iterations", "3"],
                         [("torch Stories110M training tok/s", "tok_s")]),
}


def with_bf16_products(args, items):
    """Each compute-bound item (prefill, training; ours and PyTorch's), followed by the same run with
    bfloat16 products: `--products bf16` for ours, `--autocast bfloat16` for PyTorch (labelled with
    BF16)."""
    out = []
    for key, measure in items:
        out.append((key, measure))
        if key not in BF16_BENCHES:
            continue
        bench, picks = BF16_BENCHES[key]
        picks = [(label + BF16, *rest) for label, *rest in picks]
        new_key = key + "_bf16"
        if key.startswith("torch"):
            peer_args = [*bench, "--autocast", "bfloat16", "--threads", str(args.threads)]
            out.append((new_key, lambda k=new_key, a=peer_args, p=picks: torch_peer(args, k, a, p)))
        else:
            out.append((new_key, lambda k=new_key, b=bench, p=picks: orion(args, k, [*b, "--products", "bf16"], p)))
    return out


HUGE = " (huge pages)"
DECODE_BENCHES = {"orion_gpt2_f32": ["inference", "--model", "gpt2"],
                  "orion_gpt2_f16": ["inference", "--model", "gpt2", "--weights", "f16"]}


def with_huge_page_decodes(args, items):
    """Each `orion bench inference` item, followed by the same run with --huge-pages (its decode
    figures only, labelled with HUGE)."""
    out = []
    for key, measure in items:
        out.append((key, measure))
        if key not in DECODE_BENCHES and key != "orion_file_110m":
            continue
        bench = DECODE_BENCHES.get(key, ["inference", "--model", os.path.join(args.peers, "model.bin")])
        name = {"orion_gpt2_f32": "GPT-2 decode f32", "orion_gpt2_f16": "GPT-2 decode f16"}.get(
            key, "Stories110M file decode")
        picks = [(f"orion {name} tok/s{HUGE}", "decode", "tok/s"),
                 (f"orion {name} weights GB/s{HUGE}", "decode", "weights GB/s")]
        out.append((key + "_huge", lambda k=key + "_huge", b=bench, p=picks: orion(args, k, [*b, "--huge-pages"], p)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orion", default="target/release/orion")
    parser.add_argument("--run-c", help="a built llama2.c run.c binary")
    parser.add_argument("--read-bandwidth", help="a built tools/peers/read_bandwidth.c (each round)")
    parser.add_argument("--fma-peak", help="a built tools/peers/fma_peak.c (each round)")
    parser.add_argument("--peers", default="/tmp/peers", help="directory of make_llama2c_model.py's files")
    parser.add_argument("--python", default=sys.executable, help="a Python with torch and transformers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet-wait", type=float, default=600)
    parser.add_argument("--only", help="regular expression: run only measurements whose key matches")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--bf16", action="store_true",
                        help="also run prefill and training with bfloat16 products (ours and PyTorch's autocast)")
    parser.add_argument("--huge-pages", action="store_true",
                        help="also run each of our decode measurements with --huge-pages")
    parser.add_argument("--out", default="/tmp/orion-bench-results")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    samples = {}
    items = [(k, f) for k, f in measurements(args) if not args.only or re.search(args.only, k)]
    for r in range(args.rounds):
        for key, measure in items:
            idle = wait_quiet(args.quiet_wait)
            for label, value in measure().items():
                samples.setdefault(label, []).append(value)
                print(f"round {r + 1} {label}: {value:.2f} (idle {idle:.0f}% before)", file=sys.stderr)
    with open(os.path.join(args.out, "samples.json"), "w") as f:
        json.dump(samples, f, indent=1)
    print("| figure | median | best | rounds |\n|---|---|---|---|")
    for label, values in samples.items():
        # Times are best when lowest, rates when highest (a label's unit precedes any "(...)").
        best = min(values) if re.sub(r" \([^()]*\)$", "", label).endswith(" ms") else max(values)
        print(f"| {label} | {statistics.median(values):.1f} | {best:.1f} | {len(values)} |")
    print_stream_shares(samples)
    print_run_c_pairs(samples)


def print_run_c_pairs(samples):
    """Per round: our rate on run.c's job over run.c's, measured back to back."""
    theirs = "run.c Stories110M file decode tok/s"
    ours = "orion Stories110M file generate 255 tok/s"
    rows = [(label, samples[ours + suffix]) for label, suffix in [("orion", ""), ("orion --huge-pages", HUGE)]
            if ours + suffix in samples]
    if theirs not in samples or not rows:
        return
    print("\n| 255 new tokens on the file, ÷ run.c | " + " | ".join(
        f"round {i + 1}" for i in range(len(samples[theirs]))) + " | median |")
    print("|---|" + "---|" * (len(samples[theirs]) + 1))
    for label, ours in rows:
        pairs = list(zip(ours, samples[theirs]))
        ratios = [f"{o / t:.2f} ({o:.1f} / {t:.1f})" for o, t in pairs]
        print(f"| {label} | " + " | ".join(ratios) + f" | {statistics.median(o / t for o, t in pairs):.2f} |")


def print_stream_shares(samples):
    """Per round: each decode's weights GB/s as a share of the read rate measured just before it."""
    pairs = [(f"orion {name} weights GB/s{suffix}", read)
             for name, read in [("GPT-2 decode f32", "machine read GB/s (before GPT-2)"),
                                ("GPT-2 decode f16", "machine read GB/s (before GPT-2)"),
                                ("Stories110M file decode", "machine read GB/s (before the Stories110M file)")]
             for suffix in ["", HUGE]]
    rows = [(d, r) for d, r in pairs if d in samples and r in samples]
    if not rows:
        return
    print("\n| decode weights GB/s ÷ read GB/s | " + " | ".join(f"round {i + 1}" for i in range(
        len(samples[rows[0][0]]))) + " |")
    print("|---|" + "---|" * len(samples[rows[0][0]]))
    for decode, read in rows:
        shares = [f"{d / r:.2f} ({d:.1f} / {r:.1f})" for d, r in zip(samples[decode], samples[read])]
        print(f"| {decode.replace(' weights GB/s', '')} | " + " | ".join(shares) + " |")


if __name__ == "__main__":
    main()
