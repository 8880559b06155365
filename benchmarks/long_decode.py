"""Decode time per token and KV-cache bytes at long contexts: 512, 2,048 and 4,096 tokens.

Two models, each extended to 4,096 tokens in the LongRoPE layout (the weights are the shipped
checkpoints'; speed does not depend on what the factors are):
  mini   checkpoints/mini (dense attention, 8 KV heads of 32, 4 layers), fp32 and its 4-bit form
         (block 32, 8-bit KV cache);
  small  checkpoints/small (phi-3-small: GQA, block-sparse attention on every other layer),
         fp32.

For each context T: a prompt of T - 1 - N tokens is prefilled (not timed), then N tokens are
generated greedily one at a time, each a forward pass over one token against the cache (the
median of --runs runs of the N steps, ms per token); the KV cache's bytes at T tokens
(KVCache.nbytes: the used part) and per token. The machine, its CPU and threads are written with
the table (docs/benchmarks.md, "Long context: decode and KV cache").

    python benchmarks/long_decode.py [--lengths 512,2048,4096] [--new 32] [--runs 3] \
        [--threads 2] [--out docs/benchmarks.md]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Long context: decode and KV cache"


def extended(model, length):
    """The model with its context set to `length` by position interpolation in the LongRoPE
    layout (short factors 1, long factors s), switching at its own context: phi-3-mini's layout
    by tinyphi3.nn.rope_scaling.extend_config, phi-3-small's own ("su", L0 inside it)."""
    import copy

    from tinyphi3.nn.rope_scaling import extend_config
    config = model.config
    if config.model_type == "phi3small":
        half, l0 = config.rotary_dim // 2, config.max_position_embeddings
        rope = {"type": "su", "original_max_position_embeddings": l0,
                "short_factor": [1.0] * half, "long_factor": [length / l0] * half}
        config = config.replace(max_position_embeddings=length,
                                original_max_position_embeddings=l0, rope_scaling=rope)
    else:
        config = extend_config(config, "pi", length)
    view = copy.copy(model)
    view.config = config
    return view


def decode_ms(model, context, new_tokens, runs):
    """Median ms per generated token after a prompt that leaves `context` tokens at the end, and
    the cache's bytes at the end."""
    import numpy as np

    from tinyphi3.inference.generate import next_token_logits, prefill
    rng = np.random.default_rng(0)
    prompt = rng.integers(10, 1000, context - 1 - new_tokens).tolist()
    times, nbytes = [], 0
    for _ in range(runs + 1):                                    # the first run warms up
        ids = list(prompt)
        cache = model.new_cache(1, context)
        logits = prefill(model, ids, cache)
        start = time.perf_counter()
        for _ in range(new_tokens):
            ids.append(int(np.argmax(logits)))
            logits, cache = next_token_logits(model, ids, cache)
        times.append((time.perf_counter() - start) / new_tokens * 1e3)
        nbytes = cache.nbytes()
    return statistics.median(times[1:]), nbytes, len(ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,2048,4096")
    parser.add_argument("--new", type=int, default=32, help="tokens generated per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="a Markdown file to write the section into")
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import tempfile

    import numba
    import numpy as np

    from tinyphi3.models.model import Phi3
    from tinyphi3.models.quantize import quantize_checkpoint
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _docs import cpu_name, write_section

    lengths = [int(v) for v in args.lengths.split(",")]
    longest = max(lengths)
    with tempfile.TemporaryDirectory(prefix="tinyphi3-long-decode-") as work:
        q4_dir = Path(work) / "mini-q4"
        quantize_checkpoint(ROOT / "checkpoints" / "mini", q4_dir, 32, progress=False)
        q4 = Phi3.from_pretrained(q4_dir)                       # held in memory from here on
    sides = [("mini, fp32 (dense attention)",
              extended(Phi3.from_pretrained(ROOT / "checkpoints" / "mini"), longest)),
             ("mini, 4-bit block 32 (8-bit KV cache)", extended(q4, longest)),
             ("small, fp32 (GQA, block-sparse every other layer)",
              extended(Phi3.from_pretrained(ROOT / "checkpoints" / "small"), longest))]
    rows = []
    for name, model in sides:
        for length in lengths:
            ms, nbytes, tokens = decode_ms(model, length, args.new, args.runs)
            rows.append((name, length, ms, nbytes, nbytes / tokens))
            print(f"{name:<52} {length:>6} tokens: {ms:7.2f} ms/token, KV cache "
                  f"{nbytes / 2**20:7.2f} MiB ({nbytes / tokens:,.0f} B/token)", flush=True)
    if args.out:
        lines = [HEADING, "",
                 f"`python benchmarks/long_decode.py --lengths {args.lengths} --new {args.new} "
                 f"--runs {args.runs} --threads {args.threads}`: each shipped checkpoint extended "
                 f"to {longest:,} tokens in the LongRoPE layout; a prompt prefilled, then "
                 f"{args.new} greedy tokens one at a time, ending at the context in the table "
                 f"(median of {args.runs} runs after a warm-up). The KV cache's bytes are its "
                 f"used part at that context. Machine: {cpu_name()} ({platform.machine()}, "
                 f"{os.cpu_count()} cores), {platform.system()}, Python "
                 f"{platform.python_version()}, NumPy {np.__version__}, Numba "
                 f"{numba.__version__}, {args.threads} thread(s).", "",
                 "| model | context | decode ms/token | KV cache | KV bytes per token |",
                 "|---|---|---|---|---|"]
        for name, length, ms, nbytes, per in rows:
            lines.append(f"| {name} | {length:,} | {ms:.2f} | {nbytes / 2**20:.2f} MiB | "
                         f"{per:,.0f} |")
        write_section(Path(args.out), HEADING, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
