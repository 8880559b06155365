"""Numba kernels for 4-bit weights (tinyphi3/quant.py): y = x W^T without writing W in float.

Decode (a few rows of x): `_q4_matvec` streams the packed weights once per call. It reads the
interleaved tiles of quant.py: at each byte position j of a block, 64 rows' bytes lie side by
side, so the loop over rows r is the innermost and LLVM turns it into vector instructions over
16 rows at a time, with no sum across a vector. For each block and row:

    sum_k w_k x_k = d * sum_k q_k x_k + offset * sum_k x_k       (offset = -8d, or the minimum)

The level sum runs in float32 with four partial sums, so that four multiply-adds are in flight
at once. The float16 scales are converted with bit operations (Numba has no float16 arrays).

Prefill (many rows of x): `_q4_dequantize` expands a chunk of tiles to float32 and the matrix
product goes to BLAS, which reuses each weight across the rows of x far better than a
hand-written loop can.

Why float and not integer dot products: Numba cannot reach the AVX-512 VNNI instruction that
multiplies bytes by bytes and sums four at a time, and LLVM does not find it in this loop; the
float loop costs 7 vector instructions per 32 weights. tests/test_q4_kernels.py proves these
kernels equal to the reference of quant.py.
"""

import numpy as np
from numba import njit, prange

from .fused import _float_from_bits

ROWS = 64                    # rows per tile (quant.ROWS_PER_TILE)
SUB = 16                     # bytes (32 values) per sub-block: the unrolled inner loop
PREFILL_ROWS = 16            # from this many rows of x on, dequantize and use BLAS
TILES_PER_CHUNK = 8          # tiles dequantized at once for BLAS (512 rows)
_FASTMATH = {"contract", "nsz", "arcp"}     # no reassociation: the four partial sums stay apart
_JIT = dict(parallel=True, fastmath=_FASTMATH, cache=True, boundscheck=False)
_TWO_112 = np.float32(2.0 ** 112)


@njit(inline="always")
def half_to_float(h):
    """float16 bits (as an integer) -> float32: the exponent and mantissa move up 13 bits, and
    2^112 re-biases the exponent (15 -> 127); subnormal halves come out right too."""
    h = np.int32(h)
    magnitude = _float_from_bits(np.int32((h & 0x7FFF) << 13)) * _TWO_112
    return -magnitude if h & 0x8000 else magnitude


@njit(**_JIT)
def _q4_matvec(x, packed, scale_bits, min_bits, out):
    """out[m, n] = sum_k x[m, k] W[n, k] for W in tiles; x [M, nb*block] (zero-padded),
    packed [nt, nb, half, 64], scale_bits/min_bits [nt, nb, 64] (min_bits empty: symmetric),
    out [M, nt*64]."""
    nt, nb, half, _ = packed.shape
    block = 2 * half
    has_min = min_bits.shape[0] > 0
    M = x.shape[0]
    for t in prange(nt):
        acc = np.empty(ROWS, np.float32)
        scale = np.empty(ROWS, np.float32)
        for m in range(M):
            acc[:] = 0.0
            for b in range(nb):
                xb = x[m, b * block:(b + 1) * block]
                x_lo = xb[:half]                                     # meet the low nibbles
                x_hi = xb[half:]                                     # meet the high nibbles
                x_sum = np.float32(0.0)
                for j in range(block):
                    x_sum += xb[j]
                for r in range(ROWS):                                # the offsets' share
                    d = half_to_float(scale_bits[t, b, r])
                    offset = half_to_float(min_bits[t, b, r]) if has_min else np.float32(-8.0) * d
                    scale[r] = d
                    acc[r] += offset * x_sum
                w = packed[t, b]                                     # [half, 64]
                for s in range(0, half, SUB):
                    for r in range(ROWS):                            # vectorised over rows
                        v0 = np.float32(0.0)
                        v1 = np.float32(0.0)
                        v2 = np.float32(0.0)
                        v3 = np.float32(0.0)
                        for i in range(0, SUB, 2):                   # unrolled: SUB is constant
                            j = s + i
                            b0 = w[j, r]
                            b1 = w[j + 1, r]
                            v0 += np.float32(np.int32(b0 & 15)) * x_lo[j]
                            v1 += np.float32(np.int32(b0 >> 4)) * x_hi[j]
                            v2 += np.float32(np.int32(b1 & 15)) * x_lo[j + 1]
                            v3 += np.float32(np.int32(b1 >> 4)) * x_hi[j + 1]
                        acc[r] += scale[r] * ((v0 + v1) + (v2 + v3))    # d * sum_k q_k x_k
            for r in range(ROWS):
                out[m, t * ROWS + r] = acc[r]


@njit(**_JIT)
def _q4_dequantize(packed, scale_bits, min_bits, first, stop, out):
    """W's rows of tiles first..stop-1 in float32: out [(stop-first)*64, nb*block]."""
    _, nb, half, _ = packed.shape
    block = 2 * half
    has_min = min_bits.shape[0] > 0
    for t in prange(first, stop):
        for b in range(nb):
            for r in range(ROWS):
                d = half_to_float(scale_bits[t, b, r])
                offset = half_to_float(min_bits[t, b, r]) if has_min else np.float32(-8.0) * d
                row = out[(t - first) * ROWS + r, b * block:(b + 1) * block]
                for j in range(half):
                    byte = packed[t, b, j, r]
                    row[j] = d * np.float32(byte & 15) + offset
                    row[half + j] = d * np.float32(byte >> 4) + offset


def _bits(a):
    return np.zeros((0, 0, 0), np.uint16) if a is None else a.view(np.uint16)


def q4_linear(x, q):
    """x [M, K] float32 @ W^T for a quant.Q4Weight W [N, K] -> [M, N] float32."""
    nt, nb, half, _ = q.packed.shape
    M, K = x.shape
    padded = nb * 2 * half
    if padded != K:
        x = np.concatenate([x, np.zeros((M, padded - K), np.float32)], axis=1)
    x = np.ascontiguousarray(x)
    N = q.out_features
    scale_bits, min_bits = _bits(q.scales), _bits(q.mins)
    if M < PREFILL_ROWS:
        out = np.empty((M, nt * ROWS), np.float32)
        _q4_matvec(x, q.packed, scale_bits, min_bits, out)
        return out[:, :N] if N != nt * ROWS else out
    y = np.empty((M, N), np.float32)
    w = np.empty((TILES_PER_CHUNK * ROWS, padded), np.float32)
    for first in range(0, nt, TILES_PER_CHUNK):
        stop = min(first + TILES_PER_CHUNK, nt)
        rows = min(N, stop * ROWS) - first * ROWS
        _q4_dequantize(q.packed, scale_bits, min_bits, first, stop, w)
        y[:, first * ROWS:first * ROWS + rows] = x @ w[:rows].T      # BLAS: [M, K] @ [K, rows]
    return y
