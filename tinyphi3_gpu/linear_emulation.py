"""The GPU kernels of decoding's weight products, emulated in NumPy: what every thread of
kernels/q4_matvec.cu and kernels/bf16_matvec.cu computes, in the same order, so that the kernels
can be checked without a GPU.

Each function is one kernel (or one launcher of tinyphi3_gpu/linear.py) and reads as a line by
line translation of it, with the CUDA names: `grid` CTAs, walked one at a time (`blockIdx`);
inside a CTA the threads are an array axis (`threadIdx`, `lane`, `warp`), which changes no float
sum's order since threads are independent until they exchange values, and the exchanges are
written out as the kernel does them:

    __shfl_xor_sync(v, mask)   shfl_xor(v, mask) = v[threadIdx ^ mask]
    fmaf(a, b, c)              fma32(a, b, c), rounded once as the GPU does
    __fmul_rn(a, b), a + b     float32 NumPy arithmetic (IEEE, round to nearest even)
    __dp4a(a, b, c)            dp4a(a, b, c), exact integers
    the shared-memory sums     the same loop over warps

Integer sums are exact in any order; max is too. So the float results of an emulation are the
kernel's bit for bit (tests/test_gpu_linear.py checks that on a GPU), and
tests/test_gpu_linear_emulation.py proves the emulations equal to the references of
tinyphi3.quant.q4 on any machine. Slow (a Python loop over CTAs): for tests only.
"""

import numpy as np

from tinyphi3.quant.layout import ROWS_PER_TILE
from tinyphi3_gpu.linear import (BF16_CHUNK_ROWS, BF16_ROWS, BF16_THREADS, BF16_WARPS, CHUNK,
                                 DEQUANTIZE_THREADS, MAX_M, Q4_THREADS, QUADS, QUANTIZE_WARPS,
                                 STRIP, WARPS, dequantized_product)

SLOTS = 32 // QUADS             # q4_matvec: chunks a warp reads at once


# ---- the GPU's operations -----------------------------------------------------------------------

def fma32(a, b, c):
    """fmaf(a, b, c): a b + c in float32 with one rounding (to nearest, ties to even).

    a b is exact in float64 (24 + 24 bits < 53), and so is the error e of s = a b + c in float64
    (TwoSum). Rounding s to odd (if inexact, the neighbour of s toward e whose last bit is 1)
    keeps the information that rounding to float32 needs: a float64 rounded to odd, then to the
    24 bits of float32 (2 or more fewer), is the exact sum rounded once (Boldo & Melquiond,
    "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
    2008). Plain float64 arithmetic would round twice and differ in rare ties."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b                                                        # exact
    s = p + c
    bp = s - p                                                       # TwoSum: s + e = p + c
    e = (p - (s - bp)) + (c - bp)
    even = (s.view(np.int64) & 1) == 0
    s = np.where((e != 0) & even, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def shfl_xor(v, mask):
    """__shfl_xor_sync(0xffffffff, v, mask) for v indexed by threadIdx on its first axis: thread
    i receives thread i ^ mask's value (mask < 32: a lane of the same warp)."""
    return v[np.arange(v.shape[0]) ^ mask]


def signed_bytes(words):
    """The 4 bytes of 32-bit words as signed 8-bit numbers: [...] -> [..., 4] int32, byte i =
    bits 8i .. 8i+7 (little-endian: byte i of memory)."""
    u = np.asarray(words).astype(np.uint32)[..., None]              # [..., 1]
    shifts = (8 * np.arange(4)).astype(np.uint32)
    return ((u >> shifts) & 0xFF).astype(np.uint8).view(np.int8).astype(np.int32)   # [..., 4]


def dp4a(a, b, c):
    """__dp4a(a, b, c) = c + sum over bytes i of a_i b_i, bytes signed."""
    return c + (signed_bytes(a) * signed_bytes(b)).sum(axis=-1, dtype=np.int32)


def nibbles(words):
    """A packed word of one group: low nibbles (values 8g .. 8g+3) and high nibbles (values
    8g+4 .. 8g+7), each as 4 bytes of one word."""
    words = np.asarray(words).astype(np.uint32)
    return words & 0x0F0F0F0F, (words >> 4) & 0x0F0F0F0F


def half_bits_to_float(bits):
    """float16 bits (uint16) -> float32, exact (__half2float)."""
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float32)


# ---- quantize_activations (q4_matvec.cu) ------------------------------------------------------

def quantize_activations_kernel(grid, x, xq, dx, sx, K, block, nb):
    """`quantize_activations` of q4_matvec.cu: a warp per block of a row of x (see there)."""
    threadIdx = np.arange(32 * QUANTIZE_WARPS)
    lane, warp = threadIdx % 32, threadIdx // 32
    per_row = -(-nb // QUANTIZE_WARPS)
    per_block = block // CHUNK                                       # chunks per block
    for blockIdx in range(grid):
        m = blockIdx // per_row
        b = (blockIdx % per_row) * QUANTIZE_WARPS + warp            # [threads]
        live = b < nb                                                # the others return
        x_row, xq_row = x[m], xq[m]

        top = np.zeros(threadIdx.shape, np.float32)
        for j in range(per_block):
            k = b * block + CHUNK * j + lane
            v = np.where(k < K, x_row[np.minimum(k, K - 1)], np.float32(0))
            top = np.fmax(top, np.abs(v))
        for mask in (16, 8, 4, 2, 1):
            top = np.fmax(top, shfl_xor(top, mask))
        scale = top / np.float32(127.0)
        safe = np.where(scale == 0, np.float32(1.0), scale)

        for j in range(per_block):
            k = b * block + CHUNK * j + lane
            v = np.where(k < K, x_row[np.minimum(k, K - 1)], np.float32(0))
            level = np.fmin(np.fmax(np.rint(v / safe), np.float32(-127)), np.float32(127))
            xq_row[k[live]] = level[live].astype(np.int8)
            total = level.astype(np.int32)
            for mask in (16, 8, 4, 2, 1):
                total = total + shfl_xor(total, mask)
            writer = live & (lane == 0)
            sx[m, (b * per_block + j)[writer]] = (scale * total.astype(np.float32))[writer]
        dx[m, b[live & (lane == 0)]] = scale[live & (lane == 0)]


def quantize_activations(x, block):
    """linear.quantize_activations: x [M, K] float32 -> (xq int8 [M, nb*block], dx float32
    [M, nb], sx float32 [M, chunks]), sx = dx * the sum of each chunk's 32 levels."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    M, K = x.shape
    nb = -(-K // block)
    chunks = nb * block // CHUNK
    xq = np.full((M, chunks * CHUNK), 99, np.int8)                  # cupy.empty: any bytes
    dx = np.full((M, nb), np.nan, np.float32)
    sx = np.full((M, chunks), np.nan, np.float32)
    per_row = -(-nb // QUANTIZE_WARPS)
    quantize_activations_kernel(M * per_row, x, xq, dx, sx, K, block, nb)
    return xq, dx, sx


# ---- q4_matvec (q4_matvec.cu) -----------------------------------------------------------------

def q4_matvec_kernel(grid, xq, dx, sx, packed, scales, mins, y, N, chunks, *, M, BLOCK, MINMAX):
    """`q4_matvec<M, BLOCK, MINMAX>` of q4_matvec.cu: a CTA per strip of 16 rows, its 64 slices
    (warp, slot) splitting K by chunks of 32, a lane = 4 rows of one slice (see there).

    packed is read as the kernel reads it, 16 bytes (4 rows' words of one group) at a time:
    packed4[u] = words 4u .. 4u+3; scales and mins as their bits."""
    PER_BLOCK = BLOCK // CHUNK
    nb = chunks // PER_BLOCK
    packed4 = packed.reshape(-1).view("<u4").reshape(-1, 4)         # [words / 4, 4]
    scale_bits = scales.reshape(-1).view(np.uint16)
    min_bits = mins.reshape(-1).view(np.uint16)
    xq_words = xq.view("<i4")                                        # [M, chunks * 8]
    threadIdx = np.arange(Q4_THREADS)
    lane, warp = threadIdx % 32, threadIdx // 32
    quad, slot = lane % QUADS, lane // QUADS
    slice_ = warp * SLOTS + slot                                     # 0 .. 63
    for blockIdx in range(grid):
        t = blockIdx // (ROWS_PER_TILE // STRIP)
        r = (blockIdx % (ROWS_PER_TILE // STRIP)) * STRIP + 4 * quad     # [threads]
        acc = np.zeros((Q4_THREADS, M, 4), np.float32)

        for c0 in range(0, chunks, WARPS * SLOTS):                   # the loop's passes
            c = slice_ + c0
            on = np.flatnonzero(c < chunks)                          # threads with a chunk
            c, r_on = c[on], r[on]
            b = c // PER_BLOCK
            w = np.stack([packed4[((t * chunks + c) * 4 + i) * (ROWS_PER_TILE // 4) + r_on // 4]
                          for i in range(4)], axis=1)                # [on, 4 groups i, 4 rows j]
            s = (t * nb + b) * ROWS_PER_TILE + r_on
            d = half_bits_to_float(scale_bits[s[:, None] + np.arange(4)])    # [on, 4 rows]
            offset = np.float32(-8.0) * d                            # exact
            if MINMAX:
                offset = half_bits_to_float(min_bits[s[:, None] + np.arange(4)])
            for m in range(M):
                xw = xq_words[m, c[:, None] * 8 + np.arange(8)]      # [on, 8]: xq[m, 32c ..]
                isum = np.zeros((on.size, 4), np.int32)
                for i in range(4):                                   # group 4c + i
                    low, high = nibbles(w[:, i])                     # [on, 4 rows]
                    isum = dp4a(low, xw[:, 2 * i, None], isum)
                    isum = dp4a(high, xw[:, 2 * i + 1, None], isum)
                dx_mb, sx_mc = dx[m, b], sx[m, c]                    # [on]
                xs = dx_mb[:, None] * isum.astype(np.float32)        # __fmul_rn
                acc[on, m] = fma32(d, xs, acc[on, m])
                acc[on, m] = fma32(offset, sx_mc[:, None], acc[on, m])

        for mask in (4, 8, 16):                                      # over the warp's 8 slots
            acc = acc + shfl_xor(acc, mask)
        partial = np.zeros((WARPS, M, STRIP), np.float32)            # __shared__
        first = np.flatnonzero(slot == 0)                            # lanes 0..3 of each warp
        for j in range(4):
            partial[warp[first], :, 4 * quad[first] + j] = acc[first, :, j]
        total = np.zeros((M, STRIP), np.float32)                     # thread m * 16 + row
        for other in range(WARPS):
            total = total + partial[other]
        n = blockIdx * STRIP + np.arange(STRIP)
        y[:, n[n < N]] = total[:, n < N]


def q4_matvec(xq, dx, sx, q):
    """linear.q4_matvec: y [M, N] = x W^T from x's 8-bit blocks, M in 1..8."""
    M, chunks = sx.shape
    N = q.out_features
    mins = q.scales if q.mins is None else q.mins
    y = np.full((M, N), np.nan, np.float32)
    grid = q.packed.shape[0] * ROWS_PER_TILE // STRIP
    q4_matvec_kernel(grid, xq, dx, sx, q.packed, q.scales, mins, y, N, chunks,
                     M=M, BLOCK=q.block, MINMAX=q.mins is not None)
    return y


# ---- q4_dequantize (q4_matvec.cu) -------------------------------------------------------------

def q4_dequantize_kernel(grid, packed, scales, mins, w, first, tiles, n_rows, K, block, nb, *,
                         MINMAX):
    """`q4_dequantize<MINMAX>` of q4_matvec.cu: thread i reads packed word i of the tiles and
    writes its row's 8 values of that group. One rounding per value, in any order: all the
    grid's threads at once."""
    groups = nb * block // 8
    words = packed.reshape(-1).view("<u4")
    scale_bits = scales.reshape(-1).view(np.uint16)
    min_bits = mins.reshape(-1).view(np.uint16)
    i = np.arange(grid * DEQUANTIZE_THREADS)                         # blockIdx * 256 + threadIdx
    i = i[i < tiles * groups * ROWS_PER_TILE]
    r = i % ROWS_PER_TILE
    fg = (i // ROWS_PER_TILE) % groups                               # flat group: b G + g
    tile = i // (ROWS_PER_TILE * groups)
    n = tile * ROWS_PER_TILE + r
    keep = n < n_rows                                                # not the padding rows
    i, r, fg, n = i[keep], r[keep], fg[keep], n[keep]
    t = first + tile[keep]
    b = fg // (block // 8)
    word = words[(t * groups + fg) * ROWS_PER_TILE + r]
    s = (t * nb + b) * ROWS_PER_TILE + r
    d = half_bits_to_float(scale_bits[s])
    offset = half_bits_to_float(min_bits[s]) if MINMAX else np.float32(-8.0) * d
    for v in range(8):                                               # byte v % 4, low first
        k = fg * 8 + v
        q = (word >> np.uint32(8 * (v % 4) + 4 * (v // 4))) & np.uint32(0xF)
        inside = k < K
        w[n[inside], k[inside]] = fma32(d, q.astype(np.float32), offset)[inside]


def q4_dequantize(q, first, tiles):
    """linear.q4_dequantize: rows of tiles first .. first + tiles - 1 of W, float32 [n, K]."""
    nb, groups = q.packed.shape[1], q.packed.shape[1] * q.packed.shape[2]
    n_rows = min(q.out_features, (first + tiles) * ROWS_PER_TILE) - first * ROWS_PER_TILE
    w = np.full((n_rows, q.in_features), np.nan, np.float32)
    grid = -(-tiles * groups * ROWS_PER_TILE // DEQUANTIZE_THREADS)
    mins = q.scales if q.mins is None else q.mins
    q4_dequantize_kernel(grid, q.packed, q.scales, mins, w, first, tiles, n_rows, q.in_features,
                         q.block, nb, MINMAX=q.mins is not None)
    return w


def q4_linear(x, q):
    """linear.q4_linear: x [M, K] float32 @ W^T for a Q4Weight -> [M, N] float32 (NumPy's
    matmul in place of cuBLAS for M > 8)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    M = x.shape[0]
    if M == 0:
        return np.empty((0, q.out_features), np.float32)
    xq, dx, sx = quantize_activations(x, q.block)
    if M <= MAX_M:
        return q4_matvec(xq, dx, sx, q)
    return dequantized_product(xq, dx, q, q4_dequantize, np)


# ---- bf16_matvec (bf16_matvec.cu) -------------------------------------------------------------

def bf16_matvec_kernel(grid, x, w, y, N, K, *, M, VEC):
    """`bf16_matvec<M, VEC>` of bf16_matvec.cu: a warp per 4 rows of W, lane `lane` taking the
    values VEC (lane + 32 step) .. + VEC - 1 of each (see there). w: the bits, uint16 [N, K]."""
    threadIdx = np.arange(BF16_THREADS)
    lane, warp = threadIdx % 32, threadIdx // 32
    w = w.view(np.uint16)
    for blockIdx in range(grid):
        n0 = (blockIdx * BF16_WARPS + warp) * BF16_ROWS                  # [threads]
        rows = np.minimum(n0[:, None] + np.arange(BF16_ROWS), N - 1)     # [threads, 4]
        acc = np.zeros((BF16_THREADS, M, BF16_ROWS), np.float32)
        for k0 in range(0, K, VEC * 32):                             # the loop's passes
            k = VEC * lane + k0                                      # [threads]
            on = k < K
            kk = np.minimum(k[:, None] + np.arange(VEC), K - 1)      # [threads, VEC]
            bits = w[rows[:, :, None], kk[:, None, :]]               # [threads, 4 rows, VEC]
            wv = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)     # exact
            for m in range(M):
                xv = x[m, kk]                                        # [threads, VEC]
                for e in range(VEC):
                    new = fma32(xv[:, e, None], wv[:, :, e], acc[:, m])
                    acc[:, m] = np.where(on[:, None], new, acc[:, m])
        for mask in (16, 8, 4, 2, 1):
            acc = acc + shfl_xor(acc, mask)
        for r in range(BF16_ROWS):                                   # lane 0 stores
            n = n0 + r
            store = (lane == 0) & (n < N)
            y[:, n[store]] = acc[store, :, r].T


def bf16_linear(x, w_bits, vec=None):
    """linear.bf16_linear: x [M, K] float32 @ W^T, W [N, K] bfloat16 bits -> [M, N] float32.
    vec: the kernel's loads (8 where K % 8 == 0, as on the GPU with aligned arrays; or 1)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    M, K = x.shape
    N = w_bits.shape[0]
    y = np.full((M, N), np.nan, np.float32)
    if M == 0 or N == 0:
        return y
    if M <= MAX_M:
        vec = vec or (8 if K % 8 == 0 else 1)
        grid = -(-N // (BF16_WARPS * BF16_ROWS))
        bf16_matvec_kernel(grid, x, w_bits, y, N, K, M=M, VEC=vec)
        return y
    for start in range(0, N, BF16_CHUNK_ROWS):
        rows = slice(start, min(start + BF16_CHUNK_ROWS, N))
        w = (w_bits[rows].astype(np.uint32) << np.uint32(16)).view(np.float32)   # [n, K], exact
        y[:, rows] = x @ w.T
    return y
