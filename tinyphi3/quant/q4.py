"""4-bit block quantization of weight matrices, and the matrix product that reads it.

Decoding one token reads every weight once, so its speed is bounded by memory bandwidth: weights
stored in 4 bits instead of 32 can be read 8 times faster. Each row of a weight W [N, K] is cut
into blocks of `block` values (32, 64 or 128) and each block is stored as sixteen levels:

    symmetric:  w ~ d * (q - 8),   q in 0..15,   d = m / -8,  m the block's value of largest |w|
    minmax:     w ~ d * q + m,     q in 0..15,   d = (max - min) / 15,  m = min

with d (and m) in float16, one per block. Symmetric costs 4 + 16/block bits per weight (4.5 at
block 32, 4.125 at 128); minmax adds another 16/block. A row whose length is not a multiple of the
block has its last block padded (with copies of its last value, which changes neither the largest
magnitude nor the minimum and maximum); the padding multiplies zeros and never shows.

Packing, two levels per byte, in groups of 8 values: byte i (0..3) of group g of a block holds
value 8g + i in its low nibble and value 8g + 4 + i in its high nibble, so that the four low
nibbles of a group's 4 bytes are 4 consecutive values, and so are the four high ones. Rows are
stored in tiles of 64, interleaved group by group: the 4 bytes of a group of 64 consecutive rows
sit side by side,

    packed[tile, block, g, r, i] = byte i of group g of block `block` of row 64 * tile + r

so that one 64-byte vector load brings the 4 bytes of a group of 16 rows, which is what the
CPU's byte dot product (AVX-512 VNNI `vpdpbusd`: 16 lanes, each the sum of 4 products of bytes)
multiplies with 4 activations. Scales (and mins) are laid out [tile, block, r]. The last tile is
padded with zero rows.

Activations in 8 bits. The layer quantizes its input x as well, per block of the same size
(llama.cpp's Q8 activations): x_k ~ dx * xq_k, xq in -127..127, dx = max|x| / 127. Then a
block's part of the product is exact integer arithmetic scaled twice:

    sum_k w_k x_k = d * dx * sum_k q_k xq_k + offset * dx * sum_k xq_k      (offset = -8d or m)

The reference product (`q4_linear`) computes it as x dequantized times W dequantized, in float32;
the Numba kernels in tinyphi3/backends/numba/q4.py compute it with integer dot products, never
writing W out in float.
"""

from dataclasses import dataclass

import numpy as np

from tinyphi3 import backends
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.arrays import array_module
from tinyphi3.quant.kv8 import quantize_vectors
from tinyphi3.quant.layout import (BITS, BLOCK_SIZES, GROUP, LEVELS, ROWS_PER_TILE, SCHEMES,
                                   TILES_PER_CHUNK)


class QuantizationError(InvalidInputError):
    """A bit width, block size or scheme that is not supported, or a tensor that cannot be cut
    into blocks."""


@dataclass(eq=False)
class Q4Weight:
    """A weight matrix [N, K] in 4-bit blocks, in tiles of 64 interleaved rows.

    packed: uint8 [nt, nb, block/8, 64, 4], two levels per byte; scales: float16 [nt, nb, 64];
    mins: float16 [nt, nb, 64] for the minmax scheme, None for symmetric.
    nt = ceil(N / 64) tiles, nb = ceil(K / block) blocks per row.
    """
    packed: np.ndarray
    scales: np.ndarray
    mins: np.ndarray | None
    out_features: int
    in_features: int

    @property
    def block(self):
        return GROUP * self.packed.shape[2]

    @property
    def shape(self):
        return (self.out_features, self.in_features)

    @property
    def scheme(self):
        return "symmetric" if self.mins is None else "minmax"

    @property
    def nbytes(self):
        """Bytes of the stored form (packed levels, scales and mins, padding included)."""
        return (self.packed.nbytes + self.scales.nbytes
                + (0 if self.mins is None else self.mins.nbytes))

    def map_arrays(self, f) -> "Q4Weight":
        """The same weight with f applied to its arrays (f = an upload to a GPU)."""
        return Q4Weight(f(self.packed), f(self.scales), None if self.mins is None else
                        f(self.mins), self.out_features, self.in_features)

    @property
    def ndim(self):
        return 2

    def __repr__(self):
        return (f"Q4Weight(shape={self.shape}, block={self.block}, scheme={self.scheme}, "
                f"{self.nbytes:,} bytes with padding)")


def bits_per_weight(block: int, scheme: str = "symmetric") -> float:
    """4 bits per level plus a float16 scale (and a float16 minimum) per block."""
    return BITS + 16 * (1 if scheme == "symmetric" else 2) / block


def check_options(bits: int = 4, block: int = 32, scheme: str = "symmetric") -> None:
    if bits != BITS:
        raise QuantizationError(f"--bits {bits} is not supported: tinyphi3 quantizes to 4 bits")
    if block not in BLOCK_SIZES:
        raise QuantizationError(f"--block {block} is not supported: choose one of "
                                f"{', '.join(map(str, BLOCK_SIZES))}")
    if scheme not in SCHEMES:
        raise QuantizationError(f"scheme {scheme!r} is not supported: choose one of "
                                f"{', '.join(SCHEMES)}")


def check_fits(name: str, shape, block: int) -> None:
    """A weight can be cut into blocks when it is a matrix whose rows hold at least one block."""
    if len(shape) != 2 or 0 in shape:
        raise QuantizationError(f"{name}: shape {list(shape)} is not a matrix [rows, columns]; "
                                f"only 2-D weights are quantized")
    if shape[1] < block:
        raise QuantizationError(f"{name}: rows of {shape[1]} values are shorter than one block "
                                f"of {block}; choose a smaller --block")


def quantize_q4(w, block: int = 32, scheme: str = "symmetric", name: str = "tensor") -> Q4Weight:
    """Quantize W [N, K] row by row in blocks of `block` values (see the module docstring)."""
    check_options(BITS, block, scheme)
    w = np.asarray(w, dtype=np.float32)
    check_fits(name, w.shape, block)
    N, K = w.shape
    nb = -(-K // block)                                              # ceil(K / block)
    padded = np.pad(w, ((0, 0), (0, nb * block - K)), mode="edge")
    blocks = padded.reshape(N, nb, block)                            # [N, K] -> [N, nb, block]
    if scheme == "symmetric":
        at = np.abs(blocks).argmax(axis=-1)[..., None]               # [N, nb, 1]
        m = np.take_along_axis(blocks, at, axis=-1)[..., 0]          # signed largest-|w| value
        with np.errstate(over="ignore"):
            scales = (m / -8.0).astype(np.float16)                   # [N, nb]
        mins = None
        offset = -8.0 * scales.astype(np.float32)                    # w = d*q + (-8d)
    else:
        lo, hi = blocks.min(axis=-1), blocks.max(axis=-1)            # [N, nb] each
        with np.errstate(over="ignore"):
            scales = ((hi - lo) / (LEVELS - 1)).astype(np.float16)
            mins = lo.astype(np.float16)
        offset = mins.astype(np.float32)
    if not (np.isfinite(scales).all() and (mins is None or np.isfinite(mins).all())):
        raise QuantizationError(f"{name}: a block's scale or minimum overflows float16 (values "
                                f"beyond ~5e5 in magnitude); such weights cannot be stored")
    d = scales.astype(np.float32)[..., None]                         # the stored (rounded) scale
    safe = np.where(d == 0, 1.0, d)
    q = np.rint((blocks - offset[..., None]) / safe)
    q = np.clip(np.where(d == 0, 0 if mins is not None else 8, q), 0, LEVELS - 1)
    q = q.astype(np.uint8)                                           # [N, nb, block]
    return Q4Weight(to_tiles(pack_levels(q), lanes=4), to_tiles(scales),
                    None if mins is None else to_tiles(mins), N, K)


def pack_levels(q):
    """Levels [..., block] (0..15) -> bytes [..., block/8, 4]: byte i of group g holds value
    8g + i low and 8g + 4 + i high."""
    groups = q.reshape(*q.shape[:-1], -1, GROUP)                     # [..., block/8, 8]
    return groups[..., :4] | (groups[..., 4:] << 4)                  # [..., block/8, 4]


def unpack_levels(packed):
    """Levels 0..15 from packed bytes: [..., block/8, 4] -> [..., block] (pack_levels undone)."""
    groups = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)   # [..., block/8, 8]
    return groups.reshape(*packed.shape[:-2], -1)


def to_tiles(a, lanes: int = 0):
    """Rows [N, ...] -> tiles of 64 interleaved rows (zero rows pad the last): [nt, ..., 64],
    or with lanes=4 (the packed bytes [N, nb, block/8, 4]) [nt, nb, block/8, 64, 4]."""
    nt = -(-a.shape[0] // ROWS_PER_TILE)
    a = np.pad(a, [(0, nt * ROWS_PER_TILE - a.shape[0])] + [(0, 0)] * (a.ndim - 1))
    a = a.reshape(nt, ROWS_PER_TILE, *a.shape[1:])                   # [nt, 64, ...]
    return np.ascontiguousarray(np.moveaxis(a, 1, -2 if lanes else -1))


def from_tiles(a, n_rows, lanes: int = 0):
    """Tiles -> rows [n_rows, ...] (the inverse of to_tiles)."""
    a = np.moveaxis(a, -2 if lanes else -1, 1)                       # [nt, 64, ...]
    return a.reshape(-1, *a.shape[2:])[:n_rows]


def quantize_activations(x, block: int):
    """x [M, K] float32 -> (xq int8 [M, nb*block], dx float32 [M, nb]): each block of x (zero
    padded to whole blocks) as dx * xq with xq in -127..127 and dx = max|x| / 127 (0 for a block
    of zeros), the rounding of kv8.quantize_vectors applied to blocks."""
    M, K = x.shape
    nb = -(-K // block)
    blocks = array_module(x).zeros((M, nb * block), np.float32)
    blocks[:, :K] = x
    xq, dx = quantize_vectors(blocks.reshape(M, nb, block))                  # [M, nb, block]
    return xq.reshape(M, nb * block), dx


def dequantize_q4(q: Q4Weight, tiles: slice = slice(None)) -> np.ndarray:
    """W back in float32 [N, K], or the rows of some tiles of it."""
    first, stop, _ = tiles.indices(q.packed.shape[0])
    n_rows = min(q.out_features, stop * ROWS_PER_TILE) - first * ROWS_PER_TILE
    packed = from_tiles(q.packed[tiles], n_rows, lanes=4)            # [n, nb, block/8, 4]
    levels = unpack_levels(packed).astype(np.float32)                # [n, nb, block]
    d = from_tiles(q.scales[tiles], n_rows).astype(np.float32)[..., None]    # [n, nb, 1]
    offset = (-8.0 * d if q.mins is None
              else from_tiles(q.mins[tiles], n_rows).astype(np.float32)[..., None])
    w = d * levels + offset                                          # [n, nb, block]
    return w.reshape(n_rows, -1)[:, :q.in_features]                 # drop the padding


def q4_linear(x, q: Q4Weight, bias=None):
    """y = x W^T (+ b) with W in 4-bit blocks and x rounded to 8 bits per block: [..., K] ->
    [..., N].

    Reference: x quantized and dequantized (`quantize_activations`), then 1024 rows of W (16
    tiles) dequantized at a time and multiplied in float32, so that W never sits in memory in
    float whole. On the numba backend the kernels of tinyphi3/backends/numba/q4.py compute the
    same product with integer dot products.
    """
    x = x.astype(np.float32, copy=False) if hasattr(x, "astype") else np.asarray(x, np.float32)
    if x.shape[-1] != q.in_features:
        raise InvalidInputError(f"input has {x.shape[-1]} features, the weight expects "
                                f"{q.in_features}")
    x2 = x.reshape(-1, q.in_features)                                # [M, K]
    kernel = backends.kernel("q4_linear", x2)
    if kernel is not None:
        y = kernel(x2, q)
    else:
        xq, dx = quantize_activations(x2, q.block)                   # [M, nb*block], [M, nb]
        M, nb = dx.shape
        x_hat = (xq.reshape(M, nb, q.block) * dx[..., None]).reshape(M, -1)[:, :q.in_features]
        N = q.out_features
        y = array_module(x2).empty((M, N), np.float32)
        for t in range(0, q.packed.shape[0], TILES_PER_CHUNK):
            tiles = slice(t, t + TILES_PER_CHUNK)
            rows = slice(t * ROWS_PER_TILE, min((t + TILES_PER_CHUNK) * ROWS_PER_TILE, N))
            y[:, rows] = x_hat @ dequantize_q4(q, tiles).T           # [M, K] @ [K, n]
    y = y.reshape(*x.shape[:-1], q.shape[0])
    return y if bias is None else y + bias


def q4_embedding(ids, q: Q4Weight):
    """Rows of a quantized embedding table: [B, T] ids (on the host) -> [B, T, C] float32 where
    the table lives; only the tiles that hold the named rows are dequantized."""
    ids = np.asarray(ids)
    xp = array_module(q.scales)
    out = xp.empty((ids.size, q.in_features), np.float32)
    flat = ids.reshape(-1)
    for tile in np.unique(flat // ROWS_PER_TILE):
        here = np.flatnonzero(flat // ROWS_PER_TILE == tile)        # positions of its ids
        rows = dequantize_q4(q, slice(tile, tile + 1))               # [<=64, C]
        out[xp.asarray(here)] = rows[xp.asarray(flat[here] - tile * ROWS_PER_TILE)]
    return out.reshape(*ids.shape, q.in_features)
