"""Block-sparse attention against dense attention, both run by the same Numba kernel.

phi-3-small's attention shape (32 query heads, 8 KV heads, head_dim 128), block 64, 16 local
blocks, vertical stride 8, batch 1, float32. "Dense" is the same online-softmax kernel
(tinyphi3/backends/numba/blocksparse.py) given an all-active causal layout, so the ratio measures what
skipping blocks saves and nothing else. Prefill at each length in --lengths, decode of one token
with --decode-length tokens in the cache. Each kernel is compiled and warmed up first; a time is
the median of --runs runs. Results go to the section "Block-sparse attention" of --out.

    python benchmarks/blocksparse.py [--lengths 2048,8192,16384] [--decode-length 8192]
                                     [--threads 2] [--runs 3] [--out docs/benchmarks.md]
    python benchmarks/blocksparse.py --lengths 1024,2048 --quick      # one run, prints only
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), None) or (
    sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else str(os.cpu_count()))
os.environ["NUMBA_NUM_THREADS"] = THREADS         # before Numba starts its thread pool

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _docs import cpu_name, write_section  # noqa: E402
from tinyphi3.nn.blocksparse import blocksparse_layout, density, kv_bytes_per_token  # noqa: E402
from tinyphi3.backends.numba.blocksparse import blocksparse_decode, blocksparse_prefill  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
BLOCK, LOCAL_BLOCKS, VERT_STRIDE = 64, 16, 8
SCALE = 1.0 / HEAD_DIM                              # μP: 1/d, not 1/sqrt(d)
HEADING = "## Block-sparse attention"


def median_seconds(fns, runs):
    """Median time of each function; the runs alternate between them so that a change in the
    machine's load during the measurement falls on all of them alike."""
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def layouts(length):
    """(block-sparse, all-active causal) layouts [H, NB, NB] covering `length` tokens."""
    blocks = -(-length // BLOCK)
    sparse = blocksparse_layout(HEADS, blocks, LOCAL_BLOCKS, VERT_STRIDE)
    dense = np.broadcast_to(np.tril(np.ones((blocks, blocks), dtype=bool)), sparse.shape)
    return sparse, np.ascontiguousarray(dense)


def random_qkv(rng, T, S):
    q = rng.standard_normal((1, HEADS, T, HEAD_DIM), dtype=np.float32)     # [B, H, T, hd]
    k = rng.standard_normal((1, KV_HEADS, S, HEAD_DIM), dtype=np.float32)  # [B, KV, S, hd]
    v = rng.standard_normal((1, KV_HEADS, S, HEAD_DIM), dtype=np.float32)
    return q, k, v


def warm_up():
    """Compile both kernels (or load them from Numba's cache) and run them once."""
    rng = np.random.default_rng(1)
    sparse, _ = layouts(4 * BLOCK)
    q, k, v = random_qkv(rng, 4 * BLOCK, 4 * BLOCK)
    blocksparse_prefill(q, k, v, sparse, BLOCK, SCALE, 0)
    blocksparse_decode(q[:, :, -1:], k, v, sparse, BLOCK, SCALE, 4 * BLOCK)


def prefill_row(length, runs, rng):
    sparse, dense = layouts(length)
    q, k, v = random_qkv(rng, length, length)
    times = median_seconds([lambda: blocksparse_prefill(q, k, v, sparse, BLOCK, SCALE, 0),
                            lambda: blocksparse_prefill(q, k, v, dense, BLOCK, SCALE, 0)], runs)
    share = density(sparse)
    return (f"| prefill | {length:,} | {share:.1%} | {1 / share:.2f}x | {times[0] * 1e3:,.0f} | "
            f"{times[1] * 1e3:,.0f} | {times[1] / times[0]:.2f}x |")


def decode_row(length, runs, rng):
    sparse, dense = layouts(length)
    q, k, v = random_qkv(rng, 1, length)
    times = median_seconds([lambda: blocksparse_decode(q, k, v, sparse, BLOCK, SCALE, length),
                            lambda: blocksparse_decode(q, k, v, dense, BLOCK, SCALE, length)], runs)
    last = sparse[:, (length - 1) // BLOCK]                   # [H, NB]: the new token's blocks
    share = last.sum() / last[:, :(length - 1) // BLOCK + 1].size   # mean over query heads
    read, everything = kv_bytes_per_token(sparse, length, BLOCK, KV_HEADS, HEAD_DIM, 4)
    row = (f"| decode | {length:,} | {share:.1%} | {1 / share:.2f}x | {times[0] * 1e3:,.2f} | "
           f"{times[1] * 1e3:,.2f} | {times[1] / times[0]:.2f}x |")
    return row, read, everything


def describe_machine():
    cpu = cpu_name()
    return (f"{cpu} ({platform.machine()}, {os.cpu_count()} cores), {platform.system()}, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, Numba "
            f"{numba.__version__} with {numba.get_num_threads()} thread(s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,8192,16384",
                        help="prefill lengths in tokens, comma-separated")
    parser.add_argument("--decode-length", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--decode-runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Numba threads")
    parser.add_argument("--quick", action="store_true",
                        help="one timed run per case; print only, unless --out is given")
    parser.add_argument("--out", default=None, help="Markdown file (default docs/benchmarks.md)")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run")
    args = parser.parse_args()
    runs, decode_runs = (1, 5) if args.quick else (args.runs, args.decode_runs)
    out = args.out or (None if args.quick else "docs/benchmarks.md")
    lengths = [int(n) for n in args.lengths.split(",")]

    warm_up()
    rng = np.random.default_rng(0)
    rows = []
    for length in lengths:
        rows.append(prefill_row(length, runs, rng))
        print(rows[-1], flush=True)
    row, read, everything = decode_row(args.decode_length, decode_runs, rng)
    rows.append(row)
    print(row, flush=True)

    command = shlex.join(["python", "benchmarks/blocksparse.py", *sys.argv[1:]])
    section = f"""{HEADING}

`{command}` — {HEADS} query heads, {KV_HEADS} KV heads, head_dim {HEAD_DIM}, block
{BLOCK}, {LOCAL_BLOCKS} local blocks, vertical stride {VERT_STRIDE} (phi-3-small), batch 1,
float32. Both columns run the online-softmax kernel of `tinyphi3/backends/numba/blocksparse.py`; dense
gives it an all-active causal layout. Milliseconds, median of {runs} run(s) per prefill and
{decode_runs} per decode, after a warm-up. Machine: {describe_machine()}.
{args.note}

Blocks kept: for prefill, the share of the causal blocks (query block >= key block) that the
layout keeps, over all heads; for decode, the share of the cached blocks one query head reads.
Ideal is the speed-up if time followed the blocks kept. At {args.decode_length:,} tokens a
decode step reads {read / 2**20:.1f} MiB of float32 keys and values per layer against
{everything / 2**20:.1f} MiB dense ({read / everything:.0%}): each KV head serves
{HEADS // KV_HEADS} query heads whose vertical blocks differ, so it supplies the union of their
blocks.

| phase | tokens | blocks kept | ideal | block-sparse ms | dense ms | speed-up |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    print()
    print(section)
    if out:
        write_section(Path(out), HEADING, section)


if __name__ == "__main__":
    main()
