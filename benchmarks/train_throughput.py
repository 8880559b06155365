"""Training throughput: tinyphi3 (NumPy autograd) against PyTorch CPU eager, same run.

Both train the same Phi-3 configuration on the same batches: forward, backward and an AdamW
step, float32. Warm-up steps first, then the median of the timed steps. Results are written to
docs/benchmarks.md (section "Training throughput") with the machine described.

    python benchmarks/train_throughput.py [--threads 2] [--steps 5] [--out docs/benchmarks.md]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), None) or (
    sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else str(os.cpu_count()))
os.environ["OPENBLAS_NUM_THREADS"] = THREADS      # before NumPy loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from tinyphi3.config import preset  # noqa: E402
from tinyphi3.model import Phi3  # noqa: E402
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


def bench(overrides, batch, seq, warmup, steps, tmp):
    config = preset("tiny").replace(**overrides)
    ours = Phi3(config, seed=0)
    ours.save_pretrained(tmp)
    theirs = transformers.Phi3ForCausalLM.from_pretrained(tmp, attn_implementation="eager")
    theirs.train()
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, config.vocab_size, size=(batch, seq)) for _ in range(warmup + steps)]
    opt_ours = AdamW(ours.named_parameters(), 1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), 1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    it_ours, it_theirs = iter(batches), iter(batches)

    def step_ours():
        ids = next(it_ours)
        ours.zero_grad()
        ours.loss(ids, ids).backward()
        opt_ours.step()

    def step_theirs():
        ids = torch.tensor(next(it_theirs))
        opt_theirs.zero_grad()
        theirs(ids, labels=ids).loss.backward()
        opt_theirs.step()

    tokens = batch * seq
    t_ours = time_steps(step_ours, warmup, steps)
    t_theirs = time_steps(step_theirs, warmup, steps)
    return ours.num_parameters(), tokens / t_ours, tokens / t_theirs


def main():
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both (NumPy's BLAS and PyTorch)")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, (overrides, batch, seq) in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            n, ours, theirs = bench(overrides, batch, seq, args.warmup, args.steps, tmp)
        rows.append(f"| {name} | {n:,} | {batch} x {seq} | {ours:,.0f} | {theirs:,.0f} | "
                    f"{ours / theirs:.2f}x |")
        print(rows[-1], flush=True)
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    section = f"""## Training throughput, {args.threads} thread(s)

`python benchmarks/train_throughput.py --threads {args.threads}` — forward + backward + AdamW step,
float32, tokens per second (median of {args.steps} steps after {args.warmup} warm-up steps), the
same configuration and batches for both. Machine: {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}, NumPy {np.__version__} (BLAS: {blas.get('name', '?')}
{blas.get('version', '')}, {THREADS} thread(s)), PyTorch {torch.__version__} with
{torch.get_num_threads()} thread(s), transformers {transformers.__version__} (eager attention).
{args.note}

| model | parameters | batch x seq | tinyphi3 tokens/s | PyTorch tokens/s | ratio |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section(Path(args.out), f"## Training throughput, {args.threads} thread(s)", section)
    print(section)


def write_section(path: Path, heading: str, section: str):
    """Replace (or append) one `## ` section of a Markdown file, keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
