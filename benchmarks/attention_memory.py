"""Memory and time of one training step's attention: dense (attention + attention_backward) against
FlashAttention (tinyphi3/backends/numba/flash.py), forward and backward.

The mini model's heads: batch 1, 8 heads (8 KV heads), head_dim 32, causal, float32, at --tokens
tokens (4096; --quick: 512). Each side runs in a fresh subprocess, so that one side's freed
memory cannot hide the other's peak: the child builds its inputs, warms up (compiles or loads the
kernels) on a small problem, resets its resident high-water mark (/proc/self/clear_refs, Linux),
then times the step. It reports the growth of the high-water mark over the resident size before
the step (what the step itself needed), the process's peak (resource.getrusage's ru_maxrss), and
the median wall and CPU time of its runs. Dense attention keeps its [B, H, T, S] weights for the
backward pass; the causal mask [1, 1, T, S] it reads is built before the measurement (a model
builds it once for all layers). The dense side runs --dense-runs times (default once: at 4096
tokens it needs a couple of GB), the flash side --runs times.

    python benchmarks/attention_memory.py [--tokens 4096] [--threads 2] [--runs 3] [--out FILE]
    python benchmarks/attention_memory.py --quick                  # 512 tokens
    python benchmarks/attention_memory.py --model                  # a whole training step
"""

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH, HEADS, KV_HEADS, HEAD_DIM = 1, 8, 8, 32
SCALE = HEAD_DIM ** -0.5
HEADING = "## Attention memory (training step)"
MODEL_HEADING = "## A training step of the mini geometry at a long context: memory"


def resident_kib(field):
    """VmRSS or VmHWM of this process in KiB, or None where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))
    except OSError:
        return None


def reset_high_water_mark():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                      # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        pass


def report_step(side, step, runs):
    """In the child, after the warm-up: run `step()` `runs` times and print one JSON line with the
    growth of the resident high-water mark over the resident size before the runs, the process's
    peak, and the median wall and CPU seconds of a run."""
    walls, cpus = [], []
    reset_high_water_mark()
    before = resident_kib("VmRSS")
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        del result                                            # freed before the next run
    high = resident_kib("VmHWM")
    growth = None if high is None or before is None else (high - before) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux
    print(json.dumps(dict(side=side, growth=growth, peak=peak, wall=statistics.median(walls),
                          cpu=statistics.median(cpus), runs=runs)))


def run_model_side(side, tokens, runs):
    """In the child: one training step of a model of phi-3-mini's shipped geometry (4 layers,
    width 256, 8 heads of 32, vocabulary 2112) at `tokens` tokens: Phi3.loss and its backward,
    with model.attention = side. Prints a JSON line."""
    import numpy as np

    from tinyphi3.config import Phi3Config
    from tinyphi3.models.model import Phi3

    config = Phi3Config(vocab_size=2112, hidden_size=256, intermediate_size=688,
                        num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
                        max_position_embeddings=max(tokens, 512))
    model = Phi3(config, seed=0)
    model.attention = side
    rng = np.random.default_rng(0)

    def step(T):
        ids = rng.integers(3, 2112, size=(1, T))
        model.zero_grad()
        loss = model.loss(ids, np.roll(ids, -1, axis=1))
        loss.backward()
        return float(loss.data)

    step(128)                                                 # warm-up: compile or load
    report_step(side, lambda: step(tokens), runs)


def run_side(side, tokens, runs):
    """In the child: one side's step, measured; prints a JSON line."""
    import numpy as np

    from tinyphi3.backends.numba import flash
    from tinyphi3.nn.attention import attention, causal_mask
    from tinyphi3.nn.flash_attention import flash_mask
    from tinyphi3.nn.gradients import attention_backward

    def inputs(T):
        rng = np.random.default_rng(0)
        q, do = (rng.standard_normal((BATCH, HEADS, T, HEAD_DIM), dtype=np.float32)
                 for _ in range(2))                           # [B, H, T, hd]
        k, v = (rng.standard_normal((BATCH, KV_HEADS, T, HEAD_DIM), dtype=np.float32)
                for _ in range(2))                            # [B, KV, S, hd]
        return q, k, v, do

    def dense_step(q, k, v, do, mask):
        _, weights = attention.__wrapped__(q, k, v, mask, SCALE)     # weights [B, KV, g, T, S]
        return attention_backward(do, weights, q, k, v, mask, SCALE)[:3]

    def flash_step(q, k, v, do, mask):
        out, lse = flash.flash_attention_forward(q, k, v, SCALE, mask)   # O, L [B, H, T]
        return flash.flash_attention_backward(do, q, k, v, out, lse, SCALE, mask)

    def mask_for(q, k, v):
        if side == "flash":
            return flash_mask(q, k, v)                        # causal, by structure
        T = q.shape[2]
        return causal_mask(np.arange(T), np.ones((BATCH, T), bool))   # [B, 1, T, S]

    step = flash_step if side == "flash" else dense_step
    small = inputs(128)
    step(*small, mask_for(*small[:3]))                        # warm-up: compile or load
    q, k, v, do = inputs(tokens)
    mask = mask_for(q, k, v)
    report_step(side, lambda: step(q, k, v, do, mask), runs)


def measure(side, tokens, runs, threads, model=False):
    """Run one side in a fresh Python process; its JSON report."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--side", side, "--tokens", str(tokens),
               "--runs", str(runs)] + (["--model"] if model else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe_machine(threads):
    import numba
    import numpy as np
    from _docs import cpu_name
    cpu = cpu_name()
    return (f"{cpu} ({platform.machine()}, {os.cpu_count()} cores), {platform.system()}, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, Numba "
            f"{numba.__version__}, {threads} thread(s) for Numba and BLAS")


def mib(n):
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=None, help="T = S (default 4096)")
    parser.add_argument("--quick", action="store_true", help="T = 512")
    parser.add_argument("--runs", type=int, default=3, help="timed flash steps (median)")
    parser.add_argument("--dense-runs", type=int, default=1, help="timed dense steps (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=None, help="write the Markdown section to this file")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run")
    parser.add_argument("--model", action="store_true",
                        help="a whole training step of the mini geometry (Phi3.loss and its "
                             "backward, 4 layers) instead of one attention layer")
    parser.add_argument("--side", choices=["dense", "flash"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    tokens = args.tokens or (512 if args.quick else 4096)
    if args.side:                                             # the child process
        (run_model_side if args.model else run_side)(args.side, tokens, args.runs)
        return

    results = [measure("flash", tokens, args.runs, args.threads, args.model),
               measure("dense", tokens, args.dense_runs, args.threads, args.model)]
    weights = BATCH * HEADS * tokens * tokens * 4             # the dense weights, float32
    rows = [f"| {r['side']} | {r['runs']} | {mib(r['growth'])} | {mib(r['peak'])} | "
            f"{r['wall']:.2f} | {r['cpu']:.2f} |" for r in results]
    command = shlex.join(["python", "benchmarks/attention_memory.py", *sys.argv[1:]])
    terms = ("Step MiB: growth of the resident high-water mark during the timed steps; process "
             "MiB: the process's peak (ru_maxrss, imports and inputs included). Seconds: median "
             "wall and CPU time of a step, after a warm-up.")
    if args.model:
        heading, column = MODEL_HEADING, "attention"
        intro = f"""one training step (`Phi3.loss` and its backward, batch 1) of phi-3-mini's
shipped geometry (4 layers, width 256, 8 heads of 32, vocabulary 2,112) at {tokens:,} tokens,
float32, `model.attention` = "flash" (the tiled kernels; what "auto" picks for training calls
of 1,024 tokens or more) against "dense" (the reference path, which keeps every layer's
[B, H, T, S] attention weights for the backward pass: {4 * weights / 2**20:,.0f} MiB for the four
layers). {terms}"""
    else:
        heading, column = HEADING, "path"
        intro = f"""one attention layer's forward and backward at T = S = {tokens:,}, batch
{BATCH}, {HEADS} heads ({KV_HEADS} KV heads), head_dim {HEAD_DIM}, causal, float32. Dense:
`attention` + `attention_backward` (their Numba kernels where they have one); flash: the tiled
kernels of `tinyphi3/backends/numba/flash.py` (64 x 64 tiles). {terms} The dense weights alone
are {weights / 2**20:,.0f} MiB."""
    section = f"""{heading}

`{command}` — {intro} Machine: {describe_machine(args.threads)}.
{args.note}

| {column} | steps | step MiB | process MiB | wall s | CPU s |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    print(section)
    if args.out:
        Path(args.out).write_text(section)

if __name__ == "__main__":
    main()
