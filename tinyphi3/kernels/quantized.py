"""Numba kernels for 4-bit weights (tinyphi3/quant.py): y = x W^T without writing W in float.

Decode (a few rows of x): `_q4_matvec` streams the packed weights once per call. It reads the
interleaved tiles of quant.py: at each byte position j of a block, 64 rows' bytes lie side by
side, so the loop over rows r is the innermost and LLVM turns it into vector instructions over
16 rows at a time, with no sum across a vector. For each block and row:

    sum_k w_k x_k = d * sum_k q_k x_k + offset * sum_k x_k       (offset = -8d, or the minimum)

The level sum runs in float32 with four partial sums, so that four multiply-adds are in flight
at once. The float16 scales are read as their bits and widened by the CPU's float16 conversion.

Prefill (many rows of x): `_q4_dequantize_transposed` expands a chunk of tiles to float32
and the matrix product goes to BLAS, which reuses each weight across the rows of x far better
than a hand-written loop can.

Why float and not integer dot products: Numba cannot reach the AVX-512 VNNI instruction that
multiplies bytes by bytes and sums four at a time, and LLVM does not find it in this loop; the
float loop costs about 8 vector instructions per 16 bytes (32 weights of 16 rows: a load, two
masks or shifts, two widenings, two conversions, two multiply-adds), which makes it
compute-bound at about half of this machine's memory bandwidth. tests/test_quant.py proves these
kernels equal to the reference of quant.py.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ..quant import ROWS_PER_TILE as ROWS     # rows per tile: 64
from .fused import _float_from_bits, exp32

SUB = 16                     # bytes (32 values) per sub-block: the unrolled inner loop
PREFILL_ROWS = 16            # from this many rows of x on, dequantize and use BLAS
TILES_PER_CHUNK = 8          # tiles dequantized at once for BLAS (512 rows)
_FASTMATH = {"contract", "nsz", "arcp"}     # no reassociation: the four partial sums stay apart
_JIT = dict(parallel=True, fastmath=_FASTMATH, cache=True, boundscheck=False)


@intrinsic
def half_to_float(typingctx, bits):
    """float16 bits (a uint16) -> float32, exactly: LLVM's `fpext` from half, which the CPU does
    in one instruction for 16 values (vcvtph2ps). Numba has no float16 type to write it in."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@njit(inline="always")
def _scale_and_offset(scale_bits, min_bits, has_min, t, b, r):
    """Block b of row r of tile t: its scale d and its offset (-8d, or its minimum)."""
    d = half_to_float(scale_bits[t, b, r])
    return d, (half_to_float(min_bits[t, b, r]) if has_min else np.float32(-8.0) * d)


@njit(inline="always")
def _sub_block_dot(w, x_lo, x_hi, r, s):
    """sum over the 32 values of sub-block s (bytes s*16 .. s*16+15) of row r: level * x, with
    four partial sums so that four multiply-adds are in flight at once."""
    v0 = np.float32(0.0)
    v1 = np.float32(0.0)
    v2 = np.float32(0.0)
    v3 = np.float32(0.0)
    for i in range(0, SUB, 2):                                       # unrolled: SUB is constant
        j = s * SUB + i
        b0 = w[j, r]
        b1 = w[j + 1, r]
        v0 += np.float32(np.int32(b0 & 15)) * x_lo[j]
        v1 += np.float32(np.int32(b0 >> 4)) * x_hi[j]
        v2 += np.float32(np.int32(b1 & 15)) * x_lo[j + 1]
        v3 += np.float32(np.int32(b1 >> 4)) * x_hi[j + 1]
    return (v0 + v1) + (v2 + v3)


@njit(**_JIT)
def _q4_matvec(x, x_sums, packed, scale_bits, min_bits, out):
    """out[m, n] = sum_k x[m, k] W[n, k] for W in tiles; x [M, nb*block] (zero-padded),
    x_sums [M, nb] the sums of x over each block, packed [nt, nb, half, 64],
    scale_bits/min_bits [nt, nb, 64] (min_bits empty: symmetric), out [M, nt*64]."""
    nt, nb, half, _ = packed.shape
    block = 2 * half
    n_sub = half // SUB                                              # 1, 2 or 4 sub-blocks
    has_min = min_bits.shape[0] > 0
    M = x.shape[0]
    for t in prange(nt):
        acc = np.empty(ROWS, np.float32)
        levels = np.empty(ROWS, np.float32)
        for m in range(M):
            acc[:] = 0.0
            for b in range(nb):
                xb = x[m, b * block:(b + 1) * block]
                x_lo = xb[:half]                                     # meet the low nibbles
                x_hi = xb[half:]                                     # meet the high nibbles
                x_sum = x_sums[m, b]
                w = packed[t, b]                                     # [half, 64]
                # the loop over r is innermost so that it runs 16 rows per vector instruction
                if n_sub == 1:                                       # blocks of 32: one pass
                    for r in range(ROWS):
                        v = _sub_block_dot(w, x_lo, x_hi, r, 0)
                        d, offset = _scale_and_offset(scale_bits, min_bits, has_min, t, b, r)
                        acc[r] += d * v + offset * x_sum             # d sum q x + offset sum x
                else:                                                # 64, 128: sub-blocks
                    levels[:] = 0.0
                    for s in range(n_sub):
                        for r in range(ROWS):
                            levels[r] += _sub_block_dot(w, x_lo, x_hi, r, s)
                    for r in range(ROWS):
                        d, offset = _scale_and_offset(scale_bits, min_bits, has_min, t, b, r)
                        acc[r] += d * levels[r] + offset * x_sum
            for r in range(ROWS):
                out[m, t * ROWS + r] = acc[r]


@njit(**_JIT)
def _q4_dequantize_transposed(packed, scale_bits, min_bits, first, stop, out):
    """W^T for the rows of tiles first..stop-1, in float32: out [nb*block, (stop-first)*64].
    Transposed, so that the 64 rows of a tile are written side by side (vector stores)."""
    _, nb, half, _ = packed.shape
    block = 2 * half
    has_min = min_bits.shape[0] > 0
    for t in prange(first, stop):
        col = (t - first) * ROWS
        d = np.empty(ROWS, np.float32)
        offset = np.empty(ROWS, np.float32)
        for b in range(nb):
            for r in range(ROWS):
                d[r], offset[r] = _scale_and_offset(scale_bits, min_bits, has_min, t, b, r)
            for j in range(half):
                lo = out[b * block + j, col:col + ROWS]
                hi = out[b * block + half + j, col:col + ROWS]
                byte = packed[t, b, j]
                for r in range(ROWS):
                    lo[r] = d[r] * np.float32(np.int32(byte[r] & 15)) + offset[r]
                    hi[r] = d[r] * np.float32(np.int32(byte[r] >> 4)) + offset[r]


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
        x_sums = x.reshape(M, nb, 2 * half).sum(axis=-1, dtype=np.float32)      # [M, nb]
        _q4_matvec(x, x_sums, q.packed, scale_bits, min_bits, out)
        return out[:, :N] if N != nt * ROWS else out
    y = np.empty((M, N), np.float32)
    w_t = np.empty((padded, TILES_PER_CHUNK * ROWS), np.float32)
    for first in range(0, nt, TILES_PER_CHUNK):
        stop = min(first + TILES_PER_CHUNK, nt)
        rows = min(N, stop * ROWS) - first * ROWS
        _q4_dequantize_transposed(q.packed, scale_bits, min_bits, first, stop, w_t)
        y[:, first * ROWS:first * ROWS + rows] = x @ w_t[:, :rows]  # BLAS: [M, K] @ [K, rows]
    return y


# ---- attention over a bfloat16 KV cache (decode) ----------------------------------------------

@njit(inline="always")
def bf16_to_float(bits):
    """bfloat16 bits (the top half of a float32) -> float32."""
    return _float_from_bits(np.int32(bits) << np.int32(16))


@njit(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True,
      boundscheck=False)
def _attention_decode(q, k_bits, v_bits, S, allowed, scale, out):
    """One query per row against a bfloat16 KV cache: out[b, h] = softmax(q k^T * scale) v over
    the allowed keys among the first S. q [B, H, hd] float32; k_bits, v_bits [B, KV, >=S, hd]
    uint16 (the cache's whole buffers, C-contiguous, so that the loops over hd vectorise);
    allowed bool [B, S]; out [B, H, hd]. Query head h reads KV head h // (H / KV)."""
    B, H, hd = q.shape
    KV = k_bits.shape[1]
    g = H // KV
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kv = h // g
        qh = q[b, h]
        scores = np.empty(S, np.float32)
        top = np.float32(-np.inf)
        for s in range(S):
            key = k_bits[b, kv, s]
            dot = np.float32(0.0)
            for d in range(hd):
                dot += qh[d] * bf16_to_float(key[d])
            scores[s] = dot * scale if allowed[b, s] else np.float32(-np.inf)
            top = max(top, scores[s])
        total = np.float32(0.0)
        acc = np.zeros(hd, np.float32)
        for s in range(S):
            if allowed[b, s]:
                p = exp32(scores[s] - top)
                total += p
                value = v_bits[b, kv, s]
                for d in range(hd):
                    acc[d] += p * bf16_to_float(value[d])
        for d in range(hd):
            out[b, h, d] = acc[d] / total if total > 0 else np.float32(0.0)


def _whole_buffer(a):
    """The C-contiguous cache buffer that `a` (its first S positions) is a view of, if any."""
    base = a.base
    if (isinstance(base, np.ndarray) and base.flags.c_contiguous and base.ndim == 4
            and base.shape[:2] == a.shape[:2] and base.shape[3] == a.shape[3]
            and base.dtype == a.dtype and a.__array_interface__["data"][0]
            == base.__array_interface__["data"][0]):
        return base
    return np.ascontiguousarray(a)


def attention_decode(q, k, v, allowed, scale):
    """q [B, H, 1, hd] float32, k and v [B, KV, S, hd] bfloat16, allowed bool [B, S] ->
    [B, H, 1, hd] float32: what tinyphi3.attention computes after converting k and v to float32."""
    B, H, _, hd = q.shape
    out = np.empty((B, H, hd), np.float32)
    _attention_decode(np.ascontiguousarray(q[:, :, 0]), _whole_buffer(k).view(np.uint16),
                      _whole_buffer(v).view(np.uint16), k.shape[2],
                      np.ascontiguousarray(allowed), np.float32(scale), out)
    return out[:, :, None]
