"""The weight products of decoding on the GPU: CuPy launchers of kernels/q4_matvec.cu and
kernels/bf16_matvec.cu.

    q4_linear(x, q)             y = x W^T, W a quant.q4.Q4Weight whose arrays are CuPy arrays,
                                x rounded to 8 bits per block first (quant.q4.q4_linear)
    bf16_linear(x, w_bits)      y = x W^T, W [N, K] held as bfloat16 bits (uint16)
    quantize_activations(x, block)

x is a CuPy float32 [M, K], y a CuPy float32 [M, N]. Decoding (M <= 8 rows of x: one token, or
a few sequences at once) runs the matrix-vector kernels, which read each weight once for all M
rows. Prefill (M > 8) is a matrix product, which cuBLAS does better than a hand-written kernel
would: the launchers hand it W in float32, 16 tiles (1024 rows) at a time, as the reference
q4_linear does, so that W never sits in memory in float whole.

tinyphi3_gpu/linear_emulation.py mirrors every launcher and kernel in NumPy, and
tests/test_gpu_linear_emulation.py proves it equal to the reference without a GPU;
tests/test_gpu_linear.py checks the kernels themselves where a GPU exists. CuPy is imported
inside the launchers, so this module (its names, its launch geometry) imports without it.
"""

import numpy as np

from tinyphi3.errors import InvalidInputError
from tinyphi3.quant.layout import BLOCK_SIZES, ROWS_PER_TILE, TILES_PER_CHUNK

# launch geometry: the constexpr constants of the .cu files (tests check that they agree)
CHUNK = 32                      # values of K per chunk of q4_matvec (4 groups of 8)
WARPS = 8                       # q4_matvec: warps per CTA
QUADS = 4                       # q4_matvec: lanes that share a chunk, 4 rows each
STRIP = 4 * QUADS               # q4_matvec: rows per CTA (16)
Q4_THREADS = 32 * WARPS
MAX_M = 8                       # rows of x that the matvec kernels take (BF16_MAX_M too)
QUANTIZE_WARPS = 4              # quantize_activations: warps (blocks of x) per CTA
DEQUANTIZE_THREADS = 256
BF16_WARPS = 4                  # bf16_matvec: warps per CTA
BF16_ROWS = 4                   # bf16_matvec: rows of W per warp
BF16_THREADS = 32 * BF16_WARPS
BF16_CHUNK_ROWS = TILES_PER_CHUNK * ROWS_PER_TILE     # prefill: rows of W in float32 at a time
SCHEME_NAMES = {"symmetric": "sym", "minmax": "minmax"}


def q4_matvec_name(scheme: str, block: int, M: int) -> str:
    """The entry point of q4_matvec.cu for a scheme, block and M rows of x."""
    return f"q4_matvec_{SCHEME_NAMES[scheme]}_b{block}_m{M}"


def q4_dequantize_name(scheme: str) -> str:
    return f"q4_dequantize_{SCHEME_NAMES[scheme]}"


def bf16_matvec_name(M: int, vec: int) -> str:
    """vec 8: 16-byte loads (K a multiple of 8, x and W 16-byte aligned); vec 1: any K."""
    return f"bf16_matvec_v{vec}_m{M}"


def kernel_names() -> dict:
    """Every kernel the launchers may ask for, by source: {"q4_matvec": [...], ...}."""
    return {
        "q4_matvec": (["quantize_activations"]
                      + [q4_matvec_name(s, b, M) for s in SCHEME_NAMES for b in BLOCK_SIZES
                         for M in range(1, MAX_M + 1)]
                      + [q4_dequantize_name(s) for s in SCHEME_NAMES]),
        "bf16_matvec": [bf16_matvec_name(M, vec) for vec in (8, 1) for M in range(1, MAX_M + 1)],
    }


def _kernel(source: str, name: str):
    from tinyphi3_gpu.compile import function
    return function(source, name)


def _aligned(array, nbytes: int) -> bool:
    return array.data.ptr % nbytes == 0


def _weight_arrays(q):
    """q's packed bytes, scale bits and min bits (the scales again for symmetric: unread) as
    contiguous CuPy arrays, checked aligned for the kernels' 16- and 8-byte loads."""
    import cupy
    packed = cupy.ascontiguousarray(q.packed)
    scales = cupy.ascontiguousarray(q.scales)
    mins = scales if q.mins is None else cupy.ascontiguousarray(q.mins)
    if not (_aligned(packed, 16) and _aligned(scales, 8) and _aligned(mins, 8)):
        raise InvalidInputError("a Q4Weight's arrays must start 16-byte (packed) and 8-byte "
                                "(scales, mins) aligned, as fresh CuPy arrays do")
    return packed, scales, mins


def quantize_activations(x, block: int):
    """x [M, K] float32 -> (xq int8 [M, nb*block], dx float32 [M, nb], sx float32 [M, chunks]):
    quant.q4.quantize_activations (bit for bit), plus sx = dx * the sum of the levels of each
    chunk of 32 values, which q4_matvec needs."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    M, K = x.shape
    nb = -(-K // block)                                              # ceil(K / block)
    chunks = nb * block // CHUNK
    xq = cupy.empty((M, chunks * CHUNK), cupy.int8)
    dx = cupy.empty((M, nb), cupy.float32)
    sx = cupy.empty((M, chunks), cupy.float32)
    per_row = -(-nb // QUANTIZE_WARPS)                               # CTAs per row of x
    if M > 0:
        _kernel("q4_matvec", "quantize_activations")(
            (M * per_row,), (32 * QUANTIZE_WARPS,),
            (x, xq, dx, sx, np.int32(K), np.int32(block), np.int32(nb)))
    return xq, dx, sx


def q4_matvec(xq, dx, sx, q):
    """y [M, N] = x W^T from x's 8-bit blocks (quantize_activations), M in 1..8: one launch of
    q4_matvec_<scheme>_b<block>_m<M>, a CTA per 16 rows of W."""
    import cupy
    packed, scales, mins = _weight_arrays(q)
    M, chunks = sx.shape
    N = q.out_features
    y = cupy.empty((M, N), cupy.float32)
    grid = packed.shape[0] * ROWS_PER_TILE // STRIP
    _kernel("q4_matvec", q4_matvec_name(q.scheme, q.block, M))(
        (grid,), (Q4_THREADS,), (xq, dx, sx, packed, scales, mins, y, np.int32(N),
                                 np.int32(chunks)))
    return y


def q4_dequantize(q, first: int, tiles: int):
    """The rows of tiles first .. first + tiles - 1 of W in float32 [n, K]
    (quant.q4.dequantize_q4(q, slice(first, first + tiles)), bit for bit)."""
    import cupy
    packed, scales, mins = _weight_arrays(q)
    nb, groups = packed.shape[1], packed.shape[1] * packed.shape[2]  # groups of 8 per row
    n_rows = min(q.out_features, (first + tiles) * ROWS_PER_TILE) - first * ROWS_PER_TILE
    w = cupy.empty((n_rows, q.in_features), cupy.float32)
    grid = -(-tiles * groups * ROWS_PER_TILE // DEQUANTIZE_THREADS)  # a thread per packed word
    _kernel("q4_matvec", q4_dequantize_name(q.scheme))(
        (grid,), (DEQUANTIZE_THREADS,),
        (packed, scales, mins, w, np.int32(first), np.int32(tiles), np.int32(n_rows),
         np.int32(q.in_features), np.int32(q.block), np.int32(nb)))
    return w


def q4_linear(x, q):
    """x [M, K] float32 @ W^T for a Q4Weight W [N, K] of CuPy arrays -> [M, N] float32, what
    quant.q4.q4_linear computes: x rounded to 8 bits per block, then for M <= 8 the integer
    kernel, else x dequantized times W dequantized 16 tiles at a time (cuBLAS)."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    if x.ndim != 2 or x.shape[1] != q.in_features:
        raise InvalidInputError(f"input of shape {list(x.shape)}: the weight expects "
                                f"[M, {q.in_features}]")
    M = x.shape[0]
    if M == 0:
        return cupy.empty((0, q.out_features), cupy.float32)
    xq, dx, sx = quantize_activations(x, q.block)                   # [M, nb*block], [M, nb]
    if M <= MAX_M:
        return q4_matvec(xq, dx, sx, q)
    return dequantized_product(xq, dx, q, q4_dequantize, cupy)


def dequantized_product(xq, dx, q, dequantize, xp):
    """Prefill's product (M > 8): x rounded to 8 bits (xq [M, nb*block], dx [M, nb]) times W
    dequantized 16 tiles (1024 rows) at a time by `dequantize(q, first tile, tiles)`, as the
    reference q4_linear does; xp's matmul (cuBLAS for CuPy) -> [M, N] float32. The launcher and
    its emulation (linear_emulation.q4_linear) share it."""
    M, nb = dx.shape
    K, N = q.in_features, q.out_features
    x_hat = (xq.reshape(M, nb, q.block) * dx[..., None]).reshape(M, -1)[:, :K]   # -> [M, K]
    y = xp.empty((M, N), xp.float32)
    nt = q.packed.shape[0]
    for t in range(0, nt, TILES_PER_CHUNK):
        tiles = min(TILES_PER_CHUNK, nt - t)
        rows = slice(t * ROWS_PER_TILE, min((t + tiles) * ROWS_PER_TILE, N))
        y[:, rows] = x_hat @ dequantize(q, t, tiles).T              # [M, K] @ [K, n]
    return y


def bf16_linear(x, w_bits):
    """x [M, K] float32 @ W^T with W [N, K] as bfloat16 bits (uint16) -> [M, N] float32, in
    float32 throughout: for M <= 8 the bf16_matvec kernel, else W in float32, 1024 rows at a time
    ((bits << 16) read as float32: exact), times x by cuBLAS."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    w_bits = cupy.ascontiguousarray(w_bits)
    if w_bits.dtype != cupy.uint16 or w_bits.ndim != 2 or x.ndim != 2 \
            or x.shape[1] != w_bits.shape[1]:
        raise InvalidInputError(f"bf16_linear takes x [M, K] float32 and W [N, K] uint16, not "
                                f"{list(x.shape)} and {list(w_bits.shape)} {w_bits.dtype}")
    M, K = x.shape
    N = w_bits.shape[0]
    y = cupy.empty((M, N), cupy.float32)
    if M == 0 or N == 0:
        return y
    if M <= MAX_M:
        vec = 8 if K % 8 == 0 and _aligned(x, 16) and _aligned(w_bits, 16) else 1
        grid = -(-N // (BF16_WARPS * BF16_ROWS))
        _kernel("bf16_matvec", bf16_matvec_name(M, vec))(
            (grid,), (BF16_THREADS,), (x, w_bits, y, np.int32(N), np.int32(K)))
        return y
    for start in range(0, N, BF16_CHUNK_ROWS):
        rows = slice(start, min(start + BF16_CHUNK_ROWS, N))
        w = (w_bits[rows].astype(cupy.uint32) << 16).view(cupy.float32)   # [n, K], exact
        y[:, rows] = x @ w.T
    return y
