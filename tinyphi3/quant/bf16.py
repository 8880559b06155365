"""Weights held in bfloat16: half the memory and half the bytes read per token, float32 maths.

bfloat16 keeps float32's 8 exponent bits and the top 7 of its 23 mantissa bits, so a bf16 number
is the upper 16 bits of a float32 one:

    bits16 = round_to_nearest_even(bits32 / 2^16)        float32 = bits16 * 2^16 (exact)

The weights are stored as those 16 bits (uint16 arrays: CuPy has no bfloat16 type, and NumPy
needs ml_dtypes for one); each product widens them back to float32 first (`bf16_to_float32`),
which is exact, so the layer computes x W^T in float32 with W rounded to bf16 once, at load. The
matrices of a checkpoint are held this way; the vectors (norm gains, biases) stay float32. On the
cupy backend a kernel reads the 16-bit rows directly for the few rows of a decoding step
(tinyphi3_gpu/kernels/bf16_matvec.cu).
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn.arrays import array_module, like

ROWS_PER_CHUNK = 4096        # rows of W widened to float32 at a time by the reference


def float32_to_bf16(x):
    """float32 [...] -> uint16 [...]: the bf16 nearest to each value (ties to even), as bits."""
    xp = array_module(x)
    bits = xp.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)          # round half to even
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_to_float32(bits):
    """uint16 bf16 bits [...] -> float32 [...], exactly: the bits become the upper half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_bf16_weights(params: dict) -> dict:
    """The matrices of a parameter dict as bf16 bits; vectors unchanged (float32)."""
    return {name: float32_to_bf16(a) if a.ndim == 2 else a for name, a in params.items()}


def bf16_linear(x, w, bias=None):
    """y = x W^T (+ b) for W [N, K] held as bf16 bits: [..., K] -> [..., N] float32.

    The reference widens W to float32 ROWS_PER_CHUNK rows at a time and multiplies; the cupy
    backend's kernel (op "bf16_linear") reads the 16-bit rows itself when it has one."""
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float32, copy=False)   # [M, K]
    kernel = backends.kernel("bf16_linear", x2)
    if kernel is not None:
        y = kernel(x2, w)
    else:
        xp = array_module(x2)
        y = xp.empty((x2.shape[0], w.shape[0]), np.float32)          # [M, N]
        for start in range(0, w.shape[0], ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            y[:, rows] = x2 @ bf16_to_float32(w[rows]).T             # [M, K] @ [K, n]
    y = y.reshape(*x.shape[:-1], w.shape[0])
    return y if bias is None else y + bias


def bf16_embedding(ids, table):
    """Rows of a bf16 embedding table: [B, T] ids -> [B, T, C] float32."""
    return bf16_to_float32(table[like(ids, table)])
