"""Training throughput: tinyphi3 (NumPy autograd) against PyTorch CPU eager, same run.

Both train the same Phi-3 configuration on the same batches: forward, backward and an AdamW
step, float32. Warm-up steps first, then the median of the timed steps. Each side runs in its own
process, one after the other, so that neither's thread pool (PyTorch's OpenMP threads, Numba's)
competes with the other's. Results are written to docs/benchmarks.md (section "Training
throughput") with the machine described.

    python benchmarks/train_throughput.py [--threads 2] [--steps 5] [--out docs/benchmarks.md]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), None) or (
    sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else str(os.cpu_count()))
os.environ["OPENBLAS_NUM_THREADS"] = THREADS      # before NumPy loads its BLAS
os.environ["NUMBA_NUM_THREADS"] = THREADS         # and Numba its thread pool

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _docs import write_section  # noqa: E402
from tinyphi3 import backends  # noqa: E402
from tinyphi3.config import preset  # noqa: E402
from tinyphi3.models.model import Phi3  # noqa: E402
from tinyphi3.train.optim import AdamW  # noqa: E402

CONFIGS = {
    # name: (config overrides, batch, seq)
    "hidden 256, 4 layers, vocab 4096": (dict(vocab_size=4096, hidden_size=256,
                                                     intermediate_size=683, num_hidden_layers=4,
                                                     num_attention_heads=8, num_key_value_heads=8,
                                                     max_position_embeddings=256,
                                                     original_max_position_embeddings=256), 8, 256),
    "hidden 320, 6 layers, vocab 4096": (dict(vocab_size=4096, hidden_size=320,
                                                     intermediate_size=854, num_hidden_layers=6,
                                                     num_attention_heads=8, num_key_value_heads=8,
                                                     max_position_embeddings=256,
                                                     original_max_position_embeddings=256), 8, 256),
}


def time_steps(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(side, name, warmup, steps):
    """Tokens/s of one side ("numba", "numpy" or "torch") on one configuration, in this process."""
    import tempfile
    overrides, batch, seq = CONFIGS[name]
    config = preset("tiny").replace(**overrides)
    rng = np.random.default_rng(0)
    batches = iter([rng.integers(0, config.vocab_size, size=(batch, seq))
                    for _ in range(warmup + steps)])
    ours = Phi3(config, seed=0)
    if side == "torch":
        import torch            # only in this process: its OpenMP threads stay out of ours
        import transformers
        torch.set_num_threads(int(THREADS))
        with tempfile.TemporaryDirectory() as tmp:
            ours.save_pretrained(tmp)
            theirs = transformers.Phi3ForCausalLM.from_pretrained(tmp, attn_implementation="eager")
        theirs.train()
        opt = torch.optim.AdamW(theirs.parameters(), 1e-4, betas=(0.9, 0.95), weight_decay=0.1)

        def step():
            ids = torch.tensor(next(batches))
            opt.zero_grad()
            theirs(ids, labels=ids).loss.backward()
            opt.step()
    else:
        backends.set_backend(side)
        opt = AdamW(ours.named_parameters(), 1e-4)

        def step():
            ids = next(batches)
            ours.zero_grad()
            ours.loss(ids, ids).backward()
            opt.step()
    return ours.num_parameters(), batch * seq / time_steps(step, warmup, steps)


def bench(name, warmup, steps):
    """(parameters, tokens/s with numba, with numpy only, of PyTorch): one process each."""
    results = {}
    for side in ("numba", "numpy", "torch"):
        out = subprocess.run([sys.executable, __file__, "--threads", THREADS, "--worker", side,
                              "--config", name, "--warmup", str(warmup), "--steps", str(steps)],
                             check=True, capture_output=True, text=True).stdout
        results[side] = json.loads(out.strip().splitlines()[-1])
    return (results["numba"][0], results["numba"][1], results["numpy"][1], results["torch"][1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both (NumPy's BLAS and PyTorch)")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run")
    parser.add_argument("--worker", choices=["numba", "numpy", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.config, args.warmup, args.steps)))
        return
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    rows = []
    for name, (overrides, batch, seq) in CONFIGS.items():
        n, ours, reference, theirs = bench(name, args.warmup, args.steps)
        rows.append(f"| {name} | {n:,} | {batch} x {seq} | {ours:,.0f} | {reference:,.0f} | "
                    f"{theirs:,.0f} | {ours / theirs:.2f}x |")
        print(rows[-1], flush=True)
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    section = f"""## Training throughput, {args.threads} thread(s)

`python benchmarks/train_throughput.py --threads {args.threads}` — forward + backward + AdamW step,
float32, tokens per second (median of {args.steps} steps after {args.warmup} warm-up steps), the
same configuration and batches for both. Machine: {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}, NumPy {np.__version__} (BLAS: {blas.get('name', '?')}
{blas.get('version', '')}, {THREADS} thread(s)), Numba {numba.__version__} ({THREADS} thread(s)),
PyTorch {torch.__version__} with
{torch.get_num_threads()} thread(s), transformers {transformers.__version__} (eager attention).
{args.note}

tinyphi3 runs twice: with its Numba kernels (the default) and on the plain NumPy reference
(`TINYPHI3_BACKEND=numpy`); the ratio is the default's against PyTorch.

| model | parameters | batch x seq | tinyphi3 tokens/s | tinyphi3, NumPy only | PyTorch tokens/s | ratio |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section(Path(args.out), f"## Training throughput, {args.threads} thread(s)", section)
    print(section)


if __name__ == "__main__":
    main()
