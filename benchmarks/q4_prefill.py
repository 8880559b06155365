"""The 4-bit kernels (portable, rows of x one or four at a time; VNNI; AMX) beside float32 BLAS.

y = x W^T for W of phi-3-mini-like shapes at 4 bits (block 32, symmetric), x of M rows (M = 1:
decode; 16 to 512: prefill), timed for each kernel of tinyphi3/backends/numba/q4.py:

    bytes, 1 row    _q4_matmul_portable_bytes: the former portable kernel (each byte split alone)
    words, 1 row    _q4_matmul_portable(..., rows_per_pass=1)
    words, 4 rows   _q4_matmul_portable(..., rows_per_pass=4): the default where there is no VNNI
    VNNI            _q4_matmul_vnni, where the CPU has AVX-512 VNNI (the default there for
                    fewer than 16 rows)
    AMX             _q4_matmul_amx, where the CPU has AMX int8 tiles (the default there from
                    16 rows)
    float32 BLAS    x @ W.T with W in float32 (NumPy's BLAS), the peer

The 4-bit kernels get x already rounded to 8 bits (quantize_activations, the same for all of
them, is not timed). A time is the median of --runs runs after one warm-up run; the table gives
rows of x per second and the speed-up of "words, 4 rows" over "bytes, 1 row". All kernels give
the same bits (checked here too). --target avx2 or avx512 compiles for a CPU without VNNI
(Haswell, Skylake-X), as such a machine would.

    python benchmarks/q4_prefill.py [--threads 2] [--blas-threads N] [--runs 5]
                                    [--target host|avx2|avx512]
"""

import argparse
import os
import statistics
import sys
import time

_AVX2 = ("+64bit,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+popcnt,+sse,+sse2,+sse3,+ssse3,+sse4.1,"
         "+sse4.2,+cx16,+lzcnt,+movbe,+cmov,+fxsr,+sahf")
_AVX512 = _AVX2 + ",+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd"
TARGETS = {"host": None, "avx2": ("haswell", _AVX2), "avx512": ("skylake-avx512", _AVX512)}
SHAPES = [(256, 256), (1024, 3072), (3072, 8192)]   # (N, K): W [N, K]; phi-3-mini's hidden size
#                                                   3072, its MLP's 8192
ROW_COUNTS = [1, 16, 128, 256, 512]
BLOCK = 32

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--threads", type=int, default=2, help="Numba's threads")
parser.add_argument("--blas-threads", type=int, help="BLAS's threads (default: --threads)")
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--target", choices=TARGETS, default="host")
args = parser.parse_args()
os.environ["NUMBA_NUM_THREADS"] = str(args.threads)     # before NumPy and Numba start threads
for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = str(args.blas_threads or args.threads)
if TARGETS[args.target]:
    os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"] = TARGETS[args.target]

import numpy as np
from _docs import cpu_name

from tinyphi3.backends.numba import q4 as kernels
from tinyphi3.quant import q4 as quant


def seconds(run):
    """Median wall time of run() over args.runs runs, after one warm-up run."""
    run()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(N, K, M, rng):
    """Rows per second for each kernel at W [N, K], x [M, K]; None where a kernel is missing."""
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    q = quant.quantize_q4(w, BLOCK)
    xq, dx, sx = kernels.quantize_activations(x, BLOCK)
    inputs = (xq, dx, sx, q.packed, kernels._bits(q.scales), kernels._bits(q.mins))
    runs = {"bytes, 1 row": lambda out: kernels._q4_matmul_portable_bytes(*inputs, out),
            "words, 1 row": lambda out: kernels._q4_matmul_portable(*inputs, out, 1),
            "words, 4 rows": lambda out: kernels._q4_matmul_portable(*inputs, out, 4),
            "VNNI": (lambda out: kernels._q4_matmul_vnni(*inputs, out)) if kernels._VNNI else None,
            "AMX": (lambda out: np.copyto(out, kernels.q4_matmul(xq, dx, q, sx=sx, kernel="amx")))
            if kernels._AMX else None}
    rates, outs = {}, []
    for name, run in runs.items():
        if run is None:
            rates[name] = None
            continue
        out = np.empty((M, N), np.float32)
        rates[name] = M / seconds(lambda run=run, out=out: run(out))
        outs.append(out)
    assert all(np.array_equal(out, outs[0]) for out in outs[1:]), "the kernels disagree"
    rates["float32 BLAS"] = M / seconds(lambda: x @ w.T)
    return rates


def main():
    rng = np.random.default_rng(0)
    rows = []
    for N, K in SHAPES:
        for M in ROW_COUNTS:
            rates = measure(N, K, M, rng)
            rows.append((N, K, M, rates))
            print(f"  W {N}x{K}, M {M}: done", file=sys.stderr)
    names = list(rows[0][3])
    print(f"4-bit y = x W^T (block {BLOCK}, symmetric), {args.threads} Numba threads, "
          f"{args.blas_threads or args.threads} BLAS threads, target {args.target}, {cpu_name()}; "
          f"rows of x per second, median of {args.runs}\n")
    print("| W [N, K] | M | " + " | ".join(names) + " | 4 rows / bytes | 4 rows / BLAS |")
    print("|---|---:|" + "---:|" * (len(names) + 2))
    for N, K, M, rates in rows:
        cells = [f"{rates[name]:,.0f}" if rates[name] else "-" for name in names]
        new, old, blas = rates["words, 4 rows"], rates["bytes, 1 row"], rates["float32 BLAS"]
        print(f"| {N}x{K} | {M} | " + " | ".join(cells)
              + f" | {new / old:.1f}x | {new / blas:.2f}x |")


if __name__ == "__main__":
    main()
