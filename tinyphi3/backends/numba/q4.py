"""Numba kernels for 4-bit weights (tinyphi3/quant/q4.py): y = x W^T without writing W in float.

The layer has rounded x to 8 bits per block (xq, dx), so each block of each row is an integer
dot product, scaled:

    y[m, n] = sum over blocks b of  d[n, b] dx[m, b] isum[m, n, b] + offset[n, b] sx[m, b]
    isum = sum_k q[n, k] xq[m, k]  (exact, int32),   sx[m, b] = dx[m, b] sum_k xq[m, k]

`_q4_matmul_vnni` computes isum with the AVX-512 VNNI instruction `vpdpbusd`, which multiplies
the 64 unsigned bytes of one vector by 64 signed bytes and adds each four neighbouring products
into one of 16 int32 lanes. Numba has no name for it, so `_vnni_block_dots` writes it in LLVM IR:
per group of 8 values, one 64-byte load brings 4 packed bytes of each of 16 rows (quant/q4.py's
layout), a mask and a shift split the low and high nibbles (values 8g..8g+3 and 8g+4..8g+7 of
each row), and two `vpdpbusd` multiply them by the 4 + 4 activations broadcast to every lane.
That is 6 instructions per 64 bytes of weights, against ~32 for unpacking to float and
multiplying: fast enough that reading the weights from memory, not the arithmetic, sets the pace.
A software prefetch 4 KiB ahead of the loads, into the L2 cache, keeps more of those reads in
flight than the hardware's prefetcher alone does: 10% more bandwidth on a 2-core AMD EPYC (1 KiB
ahead: 27 instead of 25 GB/s); on a 2-core Xeon, 4 KiB ahead read 4% more than 1 KiB, and
asking for L2 rather than L1 (prefetcht1, not prefetcht0) 10% more again: a token's 128
products of phi-3-mini in 73-76 ms instead of 83-84 (26.7-27.9 GB/s instead of 24.3). A
request into L1 holds one of the core's few line-fill buffers until the line arrives, so fewer
reads are in flight; L2's queue is deeper.

Where the CPU has no VNNI (`has_vnni()`), `_q4_matmul_portable` computes the same integers with
plain Numba loops that LLVM vectorises (pmaddwd, or vpdpwssd): the 4 bytes of a row's group are
read as one int32 word and its 8 levels cut out with shifts and masks (`_levels`), a few vector
instructions per 16 rows where splitting the bytes one by one took shuffles (5x slower: the
former kernel, `_q4_matmul_portable_bytes`). It takes 4 rows of x per pass over a block
(`_portable_block_dots4`), so that each word is cut up once for 4 rows (1.4 to 2.2x faster than
one row at a time from 16 rows on), and the last M % 4 rows one at a time
(`_portable_block_dots`). benchmarks/q4_prefill.py measures them. The float epilogue
(`_accumulate_block`) is the same for all kernels, row by row and block by block, so the
portable ones give the same bits; tests/test_quant.py proves them equal to each other and to the
reference of quant/q4.py.

Where the CPU has AMX (Sapphire Rapids and later; `has_amx()`, which also asks Linux for the
tile registers), `_q4_matmul_amx` takes 16 rows of x or more (prefill): `tdpbssd` multiplies 16
rows of x by 16 weight rows over 64 values in one instruction, 16 times the work of one
`vpdpbusd`. The levels of each tile of 64 weight rows are unpacked to bytes once and serve every
16 rows of x; the integer sums and the float epilogue are the other kernels', so the output is
theirs to the bit (tests/test_quant.py). Decode (one row) stays with VNNI: one row of x would use
a sixteenth of a tile, and reading the weights sets its pace anyway.

`attention_decode` reads the 8-bit KV cache of a 4-bit model (tinyphi3/quant/kv8.py) for one
new token, converting levels to float as it goes: 16 at a time (`_dot_levels`, `_add_levels4`,
in LLVM IR as the VNNI kernel), asking for the keys 64 rows ahead and for each value row while
the scores are computed, so that the second pass finds the values in L2. Each query head reads
only ~55 KB of keys and as much of values at phi-3-mini's 576-token mean context, too short a
stream for the hardware's prefetcher to get going: the 32 layers' attention of one token took
13.9 ms with plain loops, 13.3 with the vectors alone and 9.3 with the prefetches (2 threads,
Xeon; the cache's 113 MB read at 28 GB/s would take 4).

Rows of x are handled one (or 4) at a time inside each tile of 64 weight rows, so a tile (32 KiB
of levels per 1024 inputs, plus its scales) is read from memory once and from cache for the
other rows of x: one kernel serves decode (one row) and prefill (hundreds).
"""

import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tinyphi3.backends.numba.threads import _thread_count, threads_for
from tinyphi3.backends.numba.fused import exp32
from tinyphi3.quant.layout import GROUP
from tinyphi3.quant.layout import ROWS_PER_TILE as ROWS     # rows per tile: 64

LANES = 16                   # int32 lanes of a 512-bit vector: rows per vpdpbusd
WEIGHT_BYTES_PER_ELEMENT = 16   # for threads_for: 16 bytes of weights (per row of x) count as one
PREFETCH_AHEAD = 4096        # bytes: the kernel asks for the weights 16 groups ahead of their use
PREFETCH_INTO_L2 = 2         # llvm.prefetch's locality 2 (prefetcht1): into L2, not L1 (3)
UNROLL = 4                   # groups per pass of the VNNI loop (every block has 4, 8 or 16)
_FASTMATH = {"contract", "nsz", "arcp"}
_JIT = dict(parallel=True, fastmath=_FASTMATH, cache=True, boundscheck=False)


@functools.cache
def _compiles_for(*features) -> bool:
    """Whether Numba compiles for a CPU with every one of these LLVM features (from
    NUMBA_CPU_NAME/FEATURES, else the host's)."""
    import llvmlite.binding as llvm
    from numba.core import config
    if config.CPU_FEATURES:
        return {f"+{f}" for f in features} <= set(config.CPU_FEATURES.split(","))
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False
    host = llvm.get_host_cpu_features()
    return all(host.get(f) for f in features)


def has_vnni() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 VNNI."""
    return _compiles_for("avx512vnni")


def _prefetch(builder, address):
    """llvm.prefetch of the line at `address` (an i8*): a read, into L2 (PREFETCH_INTO_L2)."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(          # (address, read, locality, data)
        builder.module, ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i32, i32, i32]),
        "llvm.prefetch.p0")
    builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, PREFETCH_INTO_L2),
                            ir.Constant(i32, 1)])


def _trap(builder):
    """llvm.trap: what an intrinsic compiles to for a CPU without its instruction (never run:
    the kernels are chosen by the CPU compiled for)."""
    trap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                          "llvm.trap")
    builder.call(trap, [])


@intrinsic
def half_to_float(typingctx, bits):
    """float16 bits (a uint16) -> float32, exactly: LLVM's `fpext` from half, which the CPU does
    in one instruction for 16 values (vcvtph2ps). Numba has no float16 type to write it in."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _vnni_block_dots(typingctx, packed, t, b, xq, m, isum):
    """isum[r] = sum_k q[64t + r, k] xq[m, k] over block b, for the 64 rows r of tile t.
    packed uint8 [nt, nb, G, 64, 4] (C order), xq int8 [M, >= nb*8G] (rows contiguous),
    isum int32 [64]."""
    def codegen(context, builder, signature, args):
        if not has_vnni():     # never run here; compiling the instruction would stop LLVM.
            # (The CPU compiled for decides, not _VNNI, which a test may switch to the portable
            # kernel while this compiles.)
            _trap(builder)
            return context.get_dummy_value()
        packed_type, t_type, b_type, xq_type, m_type, _ = signature.args
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(i32, LANES)                              # 64 bytes

        def const(value):
            return ir.Constant(i64, value)

        weights = context.make_array(packed_type)(context, builder, args[0])
        acts = context.make_array(xq_type)(context, builder, args[3])
        sums = context.make_array(signature.args[5])(context, builder, args[5])
        t = context.cast(builder, args[1], t_type, types.int64)
        b = context.cast(builder, args[2], b_type, types.int64)
        m = context.cast(builder, args[4], m_type, types.int64)
        _, nb, groups, _, _ = cgutils.unpack_tuple(builder, weights.shape, 5)
        # bytes: tile t, block b starts at ((t nb + b) G) * 256; x row m, block b at m*stride + b*8G
        w_start = builder.mul(builder.mul(builder.add(builder.mul(t, nb), b), groups),
                              const(GROUP * 32))
        w_base = builder.gep(builder.bitcast(weights.data, i8.as_pointer()), [w_start])
        row_stride = cgutils.unpack_tuple(builder, acts.strides, 2)[0]
        x_start = builder.add(builder.mul(m, row_stride),
                              builder.mul(b, builder.mul(groups, const(GROUP))))
        x_base = builder.gep(builder.bitcast(acts.data, i8.as_pointer()), [x_start])

        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.x86.avx512.vpdpbusd.512")
        nibbles = ir.Constant(vec, [0x0F0F0F0F] * LANES)
        four = ir.Constant(vec, [4] * LANES)
        undef = ir.Constant(vec, ir.Undefined)
        everywhere = ir.Constant(vec, [0] * LANES)                    # shuffle mask: lane 0 to all

        def broadcast(pointer):                                      # 4 int8 -> all 16 lanes
            word = builder.load(pointer, align=1)
            return builder.shuffle_vector(builder.insert_element(undef, word, ir.Constant(i32, 0)),
                                          undef, everywhere)

        # 4 quarters of 16 rows, low and high nibbles apart: 8 independent sums in flight
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(vec, None))
                        for _ in range(8)]
        # G is 4, 8 or 16: the loop runs G/4 times over 4 groups written out (1 KiB of weights)
        with cgutils.for_range(builder, builder.udiv(groups, const(UNROLL))) as loop:
            for step in range(UNROLL):
                g = builder.add(builder.mul(loop.index, const(UNROLL)), const(step))
                x_group = builder.bitcast(builder.gep(x_base, [builder.mul(g, const(GROUP))]),
                                          i32.as_pointer())
                x_low = broadcast(x_group)                           # values 8g .. 8g+3
                x_high = broadcast(builder.gep(x_group, [const(1)]))  # values 8g+4 .. 8g+7
                w_group = builder.gep(w_base, [builder.mul(g, const(4 * ROWS))])
                for line in range(0, 4 * ROWS, 64):                  # ask for the weights ahead
                    _prefetch(builder, builder.gep(w_group, [const(PREFETCH_AHEAD + line)]))
                for quarter in range(ROWS // LANES):
                    pointer = builder.gep(w_group, [const(4 * LANES * quarter)])
                    w = builder.load(builder.bitcast(pointer, vec.as_pointer()), align=1)
                    low = builder.and_(w, nibbles)
                    high = builder.and_(builder.lshr(w, four), nibbles)
                    for acc, levels, x in ((accumulators[quarter], low, x_low),
                                           (accumulators[4 + quarter], high, x_high)):
                        builder.store(builder.call(dpbusd, [builder.load(acc), levels, x]), acc)
        out = builder.bitcast(sums.data, vec.as_pointer())
        for quarter in range(ROWS // LANES):
            total = builder.add(builder.load(accumulators[quarter]),
                                builder.load(accumulators[4 + quarter]))
            builder.store(total, builder.gep(out, [const(quarter)]), align=4)
        return context.get_dummy_value()
    return types.void(packed, t, b, xq, m, isum), codegen


@njit(inline="always")
def _values(xq, m, k):
    """The 8 values xq[m, k:k+8] of one group, each an int32 of its own."""
    x = xq[m, k:k + GROUP]
    return (np.int32(x[0]), np.int32(x[1]), np.int32(x[2]), np.int32(x[3]),
            np.int32(x[4]), np.int32(x[5]), np.int32(x[6]), np.int32(x[7]))


@njit(inline="always")
def _dot8(w, x):
    """sum_i w[i] x[i] over one group's 8 levels and values, as an int32. (Every level, value and
    the sum an int32 of its own keeps LLVM's arithmetic in 16 and 32 bits: pmaddwd, vpdpwssd.)"""
    return np.int32(w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3]
                    + w[4] * x[4] + w[5] * x[5] + w[6] * x[6] + w[7] * x[7])


@njit(inline="always")
def _portable_block_dots_bytes(packed, t, b, xq, m, isum):
    """What _vnni_block_dots computes, in plain Numba, each byte split on its own."""
    groups = packed.shape[2]
    isum[:] = 0
    for g in range(groups):
        x = _values(xq, m, (b * groups + g) * GROUP)
        w = packed[t, b, g]                                          # [64, 4]
        for r in range(ROWS):
            w0, w1 = np.int32(w[r, 0]), np.int32(w[r, 1])
            w2, w3 = np.int32(w[r, 2]), np.int32(w[r, 3])
            isum[r] += ((w0 & 15) * x[0] + (w1 & 15) * x[1] + (w2 & 15) * x[2] + (w3 & 15) * x[3]
                        + (w0 >> 4) * x[4] + (w1 >> 4) * x[5] + (w2 >> 4) * x[6]
                        + (w3 >> 4) * x[7])


@njit(inline="always")
def _levels(w):
    """The 8 levels 0..15 of a group of one row from its 4 bytes read as one little-endian int32
    w: values 8g..8g+3 from the low nibbles of bytes 0..3, 8g+4..8g+7 from the high ones."""
    return (np.int32(w & 15), np.int32((w >> 8) & 15), np.int32((w >> 16) & 15),
            np.int32((w >> 24) & 15), np.int32((w >> 4) & 15), np.int32((w >> 12) & 15),
            np.int32((w >> 20) & 15), np.int32((w >> 28) & 15))


@njit(inline="always")
def _words(packed, t, b):
    """The packed levels of block b of tile t as int32 words [G * 64]: word 64g + r holds the 4
    bytes of group g of row r."""
    return packed[t, b].reshape(packed.shape[2] * ROWS * 4).view(np.int32)


@njit(inline="always")
def _portable_block_dots(packed, t, b, xq, m, isum):
    """What _vnni_block_dots computes, in plain Numba: isum int32 [64] for row m of xq."""
    groups = packed.shape[2]
    words = _words(packed, t, b)
    isum[:] = 0
    for g in range(groups):
        x = _values(xq, m, (b * groups + g) * GROUP)
        for r in range(ROWS):
            isum[r] += _dot8(_levels(words[g * ROWS + r]), x)


@njit(inline="always")
def _portable_block_dots4(packed, t, b, xq, m, isum):
    """_portable_block_dots for the 4 rows m..m+3 of xq at once, isum int32 [4, 64]: each word
    of levels is cut up once for the 4 rows."""
    groups = packed.shape[2]
    words = _words(packed, t, b)
    s0, s1, s2, s3 = isum[0], isum[1], isum[2], isum[3]
    isum[:] = 0
    for g in range(groups):
        k = (b * groups + g) * GROUP
        x0, x1 = _values(xq, m, k), _values(xq, m + 1, k)
        x2, x3 = _values(xq, m + 2, k), _values(xq, m + 3, k)
        for r in range(ROWS):
            w = _levels(words[g * ROWS + r])
            s0[r] += _dot8(w, x0)
            s1[r] += _dot8(w, x1)
            s2[r] += _dot8(w, x2)
            s3[r] += _dot8(w, x3)


@njit(inline="always")
def _accumulate_block(acc, isum, scale_bits, min_bits, t, b, dx, sx):
    """acc[r] += d dx isum[r] + offset sx for block b of the 64 rows of tile t, where offset is
    the block's minimum (minmax) or -8d (symmetric: acc[r] += d (dx isum[r] - 8 sx))."""
    if min_bits.shape[0] > 0:
        for r in range(ROWS):
            acc[r] += (half_to_float(scale_bits[t, b, r]) * (dx * np.float32(isum[r]))
                       + half_to_float(min_bits[t, b, r]) * sx)
    else:
        eight_sx = np.float32(8.0) * sx
        for r in range(ROWS):
            acc[r] += half_to_float(scale_bits[t, b, r]) * (dx * np.float32(isum[r]) - eight_sx)


@njit(inline="always")                # compiled into its callers, with their flags (_FASTMATH)
def _vnni_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t):
    """Every row of x against the 64 rows of tile t: out[:, 64t:64t+64]. (One tile's work of
    _q4_matmul_vnni, and of the fused decoding layer, tinyphi3/backends/numba/decode.py.)"""
    isum = np.empty(ROWS, np.int32)
    acc = np.empty(ROWS, np.float32)
    for m in range(xq.shape[0]):
        acc[:] = 0.0
        for b in range(packed.shape[1]):
            _vnni_block_dots(packed, t, b, xq, m, isum)
            _accumulate_block(acc, isum, scale_bits, min_bits, t, b, dx[m, b], sx[m, b])
        out[m, t * ROWS:(t + 1) * ROWS] = acc


@njit(**_JIT)
def _q4_matmul_vnni(xq, dx, sx, packed, scale_bits, min_bits, out):
    """out[m, n] = sum_k x[m, k] W[n, k] with x = dx * xq per block. xq int8 [M, nb*block]
    (zero-padded), dx and sx float32 [M, nb], packed uint8 [nt, nb, block/8, 64, 4],
    scale_bits/min_bits uint16 [nt, nb, 64] (min_bits empty: symmetric), out [M, nt*64]."""
    for t in prange(packed.shape[0]):
        _vnni_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t)


@njit(inline="always")                # compiled into its callers, with their flags (_FASTMATH)
def _portable_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t, rows_per_pass):
    """_vnni_tile without VNNI: the rows of x 4 at a time (rows_per_pass 4), the last M % 4 one
    at a time; or all one at a time (1). The same bits either way."""
    M, nb = xq.shape[0], packed.shape[1]
    grouped = M - M % 4 if rows_per_pass == 4 else 0
    isum = np.empty((4, ROWS), np.int32)
    acc = np.empty((4, ROWS), np.float32)
    for m in range(0, grouped, 4):
        acc[:] = 0.0
        for b in range(nb):
            _portable_block_dots4(packed, t, b, xq, m, isum)
            for i in range(4):
                _accumulate_block(acc[i], isum[i], scale_bits, min_bits, t, b,
                                  dx[m + i, b], sx[m + i, b])
        out[m:m + 4, t * ROWS:(t + 1) * ROWS] = acc
    for m in range(grouped, M):
        acc[0] = 0.0
        for b in range(nb):
            _portable_block_dots(packed, t, b, xq, m, isum[0])
            _accumulate_block(acc[0], isum[0], scale_bits, min_bits, t, b, dx[m, b], sx[m, b])
        out[m, t * ROWS:(t + 1) * ROWS] = acc[0]


@njit(**_JIT)
def _q4_matmul_portable(xq, dx, sx, packed, scale_bits, min_bits, out, rows_per_pass=4):
    """_q4_matmul_vnni without VNNI (_portable_tile per tile)."""
    for t in prange(packed.shape[0]):
        _portable_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t, rows_per_pass)


@njit(**_JIT)
def _q4_matmul_portable_bytes(xq, dx, sx, packed, scale_bits, min_bits, out):
    """The former _q4_matmul_portable (each byte split on its own, one row of x at a time): the
    baseline of benchmarks/q4_prefill.py and of the exactness test."""
    nt, nb = packed.shape[0], packed.shape[1]
    for t in prange(nt):
        isum = np.empty(ROWS, np.int32)
        acc = np.empty(ROWS, np.float32)
        for m in range(xq.shape[0]):
            acc[:] = 0.0
            for b in range(nb):
                _portable_block_dots_bytes(packed, t, b, xq, m, isum)
                _accumulate_block(acc, isum, scale_bits, min_bits, t, b, dx[m, b], sx[m, b])
            out[m, t * ROWS:(t + 1) * ROWS] = acc


# ---- AMX: the products of 16 rows of x by 16 rows of weights in one instruction -----------------
#
# An AMX tile is a 2-D register of up to 16 rows of 64 bytes; `tdpbssd` multiplies an A tile of
# int8 [16, K] by a B tile that holds int8 [K, 16] four rows at a time ("VNNI layout": B row j,
# bytes 4n..4n+3, are the values k = 4j..4j+3 of column n) and adds C[16, 16] int32 += A B, 16 x 16
# x 64 products per instruction. A is 16 rows of x as they lie in xq (one block, or 64 values of
# it); B is 16 weight rows, and quant/q4.py's packing is already B's layout: the 64 bytes of one
# group of 16 rows hold the 4 values 8g..8g+3 of each row in their low nibbles (B row 2g) and
# 8g+4..8g+7 in their high nibbles (B row 2g+1). So a tile of 64 weight rows is unpacked to bytes
# once (a mask and a shift per 64 bytes) and serves every 16 rows of x: four C tiles, one per 16
# weight rows, per block. The float epilogue is _accumulate_block's, so the bits are the other
# kernels'. Linux hands a process the tile registers only when it asks (arch_prctl), once.

AMX_ROWS = 16                 # rows of x per A tile; weight rows per B and C tile
_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18    # Linux x86-64


def _compiles_amx() -> bool:
    """Whether Numba compiles for a CPU with AMX int8 tiles."""
    return _compiles_for("amx-tile", "amx-int8")


@functools.cache
def has_amx() -> bool:
    """Whether the AMX kernel can run: Numba compiles for a CPU with AMX int8 and the operating
    system lets this process use the tile registers (asked for here, once)."""
    import ctypes
    import platform
    if not _compiles_amx() or platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def amx_config(block: int) -> np.ndarray:
    """The 64-byte tile configuration (palette 1) of the AMX kernel for a block size: tiles 0-3
    C int32 [16, 16]; tiles 4 and 6 A, 16 rows of x by min(block, 64) values; tiles 5 and 7 B,
    min(block, 64) / 4 rows of 64 bytes (16 weight rows, 4 values each)."""
    k = min(block, 64)
    config = np.zeros(64, np.uint8)
    config[0] = 1                                                    # palette
    colsb, rows = config[16:48].view(np.uint16), config[48:64]
    colsb[:4], rows[:4] = 4 * AMX_ROWS, AMX_ROWS
    colsb[4:8:2], rows[4:8:2] = k, AMX_ROWS
    colsb[5:8:2], rows[5:8:2] = 64, k // 4
    return config


def _amx_function(builder, name, args):
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), args), f"llvm.x86.{name}")


@intrinsic
def _amx_configure(typingctx, config):
    """ldtilecfg: load the tile configuration (amx_config) on the calling thread."""
    def codegen(context, builder, signature, args):
        if not _compiles_amx():          # never run here; the instruction would stop LLVM
            _trap(builder)
            return context.get_dummy_value()
        i8 = ir.IntType(8)
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.call(_amx_function(builder, "ldtilecfg", [i8.as_pointer()]),
                     [builder.bitcast(data, i8.as_pointer())])
        return context.get_dummy_value()
    return types.void(config), codegen


@intrinsic
def _amx_release(typingctx):
    """tilerelease: the thread gives the tile registers back."""
    def codegen(context, builder, signature, args):
        if not _compiles_amx():
            _trap(builder)
            return context.get_dummy_value()
        builder.call(_amx_function(builder, "tilerelease", []), [])
        return context.get_dummy_value()
    return types.void(), codegen


BLOCKS_IN_FLIGHT = 4          # blocks whose products are made at once, each in its own C tile


@intrinsic
def _amx_rows_by_quarter(typingctx, unpacked, xq, m, c, scale_bits, min_bits, t, dx, sx,
                         products, acc):
    """acc [16, 16] float32 = x W^T for the 16 rows of x from m and the 16 weight rows 16c..16c+15
    of tile t, over every block: per block, tdpbssd's integer sums scaled as _accumulate_block
    scales them, with the same operations in the same order (so the same bits), on 512-bit
    vectors held in registers across the blocks.

    Four blocks at a time, each into its own C tile (tiles 0-3; A and B alternate between tiles
    4, 5 and 6, 7): one block's chain (multiply, store the tile, read it back) takes about 100
    cycles by our estimate and has to wait for the last on the same tile; four chains in flight
    made the product 18% faster at block 32. (Loops that Numba writes are vectorised 256 bits
    wide on these CPUs and keep their sums in memory: twice the instructions.) unpacked as
    _unpack_tile writes it; xq int8 [>= m + 16, nb*block] with its rows contiguous; scale_bits,
    min_bits uint16 [nt, nb, 64] (min_bits empty: symmetric); dx, sx float32 [>= m + 16, nb];
    products int32 [4, 16, 16], a scratch."""
    def codegen(context, builder, signature, args):
        if not _compiles_amx():
            _trap(builder)
            return context.get_dummy_value()
        (u_type, x_type, m_type, c_type, s_type, n_type, t_type, dx_type, sx_type, p_type,
         a_type) = signature.args
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        f32 = ir.FloatType()
        floats, ints = ir.VectorType(f32, AMX_ROWS), ir.VectorType(i32, AMX_ROWS)
        halves, bits16 = ir.VectorType(ir.HalfType(), AMX_ROWS), ir.VectorType(i16, AMX_ROWS)
        byte_pointer = i8.as_pointer()
        flags = tuple(sorted(_FASTMATH))

        def const(value, kind=i64):
            return ir.Constant(kind, value)

        def array(kind, value):
            return context.make_array(kind)(context, builder, value)

        def at(a, offset):                                           # a byte of array a
            return builder.gep(builder.bitcast(a.data, byte_pointer), [offset])

        def splat(value):
            one = builder.insert_element(ir.Constant(floats, ir.Undefined), value, const(0, i32))
            return builder.shuffle_vector(one, ir.Constant(floats, ir.Undefined),
                                          ir.Constant(ints, [0] * AMX_ROWS))

        weights, acts = array(u_type, args[0]), array(x_type, args[1])
        scales, minimums = array(s_type, args[4]), array(n_type, args[5])
        dxs, sxs = array(dx_type, args[7]), array(sx_type, args[8])
        sums, out = array(p_type, args[9]), array(a_type, args[10])
        m = context.cast(builder, args[2], m_type, types.int64)
        c = context.cast(builder, args[3], c_type, types.int64)
        t = context.cast(builder, args[6], t_type, types.int64)
        nb, _, quarter_rows, _ = cgutils.unpack_tuple(builder, weights.shape, 4)    # block / 4
        block = builder.mul(quarter_rows, const(4))
        chunks = builder.udiv(builder.add(block, const(63)), const(64))            # 1 or 2
        x_stride = cgutils.unpack_tuple(builder, acts.strides, 2)[0]
        s_strides = cgutils.unpack_tuple(builder, scales.strides, 3)
        n_strides = cgutils.unpack_tuple(builder, minimums.strides, 3)
        d_stride = cgutils.unpack_tuple(builder, dxs.strides, 2)[0]
        e_stride = cgutils.unpack_tuple(builder, sxs.strides, 2)[0]
        minmax = builder.icmp_unsigned(
            "!=", cgutils.unpack_tuple(builder, minimums.shape, 3)[0], const(0))
        zero = _amx_function(builder, "tilezero", [i8])
        load = _amx_function(builder, "tileloadd64", [i8, byte_pointer, i64])
        dot = _amx_function(builder, "tdpbssd", [i8, i8, i8])
        store = _amx_function(builder, "tilestored64", [i8, byte_pointer, i64])
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(floats, None))
                        for _ in range(AMX_ROWS)]
        eight = ir.Constant(f32, 8.0)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(floats, [floats] * 3), "llvm.fma.v16f32")
        tile_bytes = 4 * AMX_ROWS * AMX_ROWS

        def scales_of(a, strides, b):                # 16 float16 of block b, as float32
            offset = builder.add(builder.add(builder.mul(t, strides[0]),
                                             builder.mul(b, strides[1])),
                                 builder.mul(c, const(2 * AMX_ROWS)))
            raw = builder.load(builder.bitcast(at(a, offset), bits16.as_pointer()), align=2)
            return builder.fpext(builder.bitcast(raw, halves), floats)

        def row_value(a, stride, row, b):            # a[row, b], float32
            return builder.load(builder.bitcast(at(a, builder.add(
                builder.mul(row, stride), builder.mul(b, const(4)))), f32.as_pointer()))

        def products_of(b, j):                       # block b into C tile j
            builder.call(zero, [const(j, i8)])
            a_tile, b_tile = (4, 5) if j % 2 == 0 else (6, 7)
            with cgutils.for_range(builder, chunks) as loop:         # 64 values of the block
                x_offset = builder.add(builder.add(builder.mul(m, x_stride),
                                                   builder.mul(b, block)),
                                       builder.mul(loop.index, const(64)))
                builder.call(load, [const(a_tile, i8), at(acts, x_offset), x_stride])
                w_offset = builder.mul(
                    builder.add(builder.mul(builder.add(builder.mul(b, const(4)), c),
                                            quarter_rows),
                                builder.mul(loop.index, const(16))), const(64))
                builder.call(load, [const(b_tile, i8), at(weights, w_offset), const(64)])
                builder.call(dot, [const(j, i8), const(a_tile, i8), const(b_tile, i8)])

        def row_inputs(i, b, j):                     # dx, sx of row m + i; its sums as floats
            row = builder.add(m, const(i))
            p = builder.sitofp(builder.load(builder.bitcast(
                at(sums, const(tile_bytes * j + 4 * AMX_ROWS * i)), ints.as_pointer()),
                align=4), floats)
            return row_value(dxs, d_stride, row, b), row_value(sxs, e_stride, row, b), p

        def add_block(b, j):                         # acc += block b's sums, from C tile j
            d = scales_of(scales, s_strides, b)
            with builder.if_else(minmax) as (with_minimum, symmetric):
                with with_minimum:
                    offset = scales_of(minimums, n_strides, b)
                    for i, acc in enumerate(accumulators):
                        dxi, sxi, p = row_inputs(i, b, j)
                        # fma(d, dx p, offset sx): how LLVM contracts _accumulate_block's
                        # d (dx p) + offset sx (left to itself here, it fuses the other product)
                        term = builder.call(fma, [d, builder.fmul(splat(dxi), p, flags=flags),
                                                  builder.fmul(offset, splat(sxi), flags=flags)])
                        builder.store(builder.fadd(builder.load(acc), term, flags=flags), acc)
                with symmetric:
                    for i, acc in enumerate(accumulators):
                        dxi, sxi, p = row_inputs(i, b, j)
                        eight_sx = builder.fmul(eight, sxi, flags=flags)
                        term = builder.fmul(d, builder.fsub(
                            builder.fmul(splat(dxi), p, flags=flags), splat(eight_sx),
                            flags=flags), flags=flags)
                        builder.store(builder.fadd(builder.load(acc), term, flags=flags), acc)

        groups = builder.udiv(builder.add(nb, const(BLOCKS_IN_FLIGHT - 1)),
                              const(BLOCKS_IN_FLIGHT))
        with cgutils.for_range(builder, groups) as loop:
            first = builder.mul(loop.index, const(BLOCKS_IN_FLIGHT))
            blocks = [builder.add(first, const(j)) for j in range(BLOCKS_IN_FLIGHT)]
            present = [builder.icmp_unsigned("<", b, nb) for b in blocks]
            for j, b in enumerate(blocks):
                with builder.if_then(present[j], likely=True):
                    products_of(b, j)
            for j in range(BLOCKS_IN_FLIGHT):
                with builder.if_then(present[j], likely=True):
                    builder.call(store, [const(j, i8), at(sums, const(tile_bytes * j)),
                                         const(4 * AMX_ROWS)])
            for j, b in enumerate(blocks):           # in the blocks' order: the same sums
                with builder.if_then(present[j], likely=True):
                    add_block(b, j)
        for i, acc in enumerate(accumulators):
            builder.store(builder.load(acc), builder.bitcast(
                at(out, const(4 * AMX_ROWS * i)), floats.as_pointer()), align=4)
        return context.get_dummy_value()
    return (types.void(unpacked, xq, m, c, scale_bits, min_bits, t, dx, sx, products, acc),
            codegen)


@njit(inline="always")
def _unpack_tile(packed, t, unpacked):
    """The levels of tile t as AMX B tiles: unpacked uint8 [nb, 4, block/4, 64], where
    unpacked[b, c, 2g] holds the low nibbles of the 64 bytes of group g of weight rows 16c..16c+15
    (the values 8g..8g+3 of each row) and unpacked[b, c, 2g + 1] the high ones (8g+4..8g+7)."""
    for b in range(packed.shape[1]):
        for g in range(packed.shape[2]):
            source = packed[t, b, g].reshape(ROWS * 4)
            for c in range(ROWS // AMX_ROWS):
                low, high = unpacked[b, c, 2 * g], unpacked[b, c, 2 * g + 1]
                for i in range(4 * AMX_ROWS):
                    byte = source[4 * AMX_ROWS * c + i]
                    low[i] = byte & 15
                    high[i] = byte >> 4


@njit(**_JIT)
def _q4_matmul_amx(xq, dx, sx, packed, scale_bits, min_bits, out, config, M, workers):
    """_q4_matmul_vnni with AMX tiles, for the first M rows of x: xq int8, dx and sx float32
    with ceil(M/16)*16 rows (those past M zero), config amx_config(block). The tiles are dealt
    to `workers` threads in runs of consecutive tiles, so that each thread allocates its
    scratch once per call: allocated per tile (192 KiB at K = 3072), it came as fresh pages
    from the system inside a model, and faulting them in doubled the time."""
    nt, nb, groups = packed.shape[0], packed.shape[1], packed.shape[2]
    for worker in prange(workers):
        unpacked = np.empty((nb, ROWS // AMX_ROWS, groups * GROUP // 4, 4 * AMX_ROWS), np.uint8)
        products = np.empty((BLOCKS_IN_FLIGHT, AMX_ROWS, AMX_ROWS), np.int32)
        acc = np.empty((AMX_ROWS, AMX_ROWS), np.float32)
        _amx_configure(config)
        for t in range(worker * nt // workers, (worker + 1) * nt // workers):
            _unpack_tile(packed, t, unpacked)
            for m in range(0, M, AMX_ROWS):
                rows = min(AMX_ROWS, M - m)
                for c in range(ROWS // AMX_ROWS):
                    _amx_rows_by_quarter(unpacked, xq, m, c, scale_bits, min_bits, t, dx, sx,
                                         products, acc)
                    start = t * ROWS + c * AMX_ROWS
                    out[m:m + rows, start:start + AMX_ROWS] = acc[:rows]
        _amx_release()


def _bits(a):
    return np.zeros((0, 0, 0), np.uint16) if a is None else a.view(np.uint16)


@njit(inline="always")                                   # exact: no fastmath (x / scale as NumPy)
def _round_to_levels(x, levels):
    """levels[:] = rint(x / scale) in -127..127 with scale = max|x| / 127 (x 1-D float32);
    returns (scale, sum of the levels)."""
    top = np.float32(0.0)
    for k in range(x.shape[0]):
        top = max(top, abs(x[k]))
    scale = top / np.float32(127.0)
    safe = scale if scale != 0 else np.float32(1.0)
    total = 0
    for k in range(x.shape[0]):
        level = min(max(np.rint(x[k] / safe), np.float32(-127.0)), np.float32(127.0))
        levels[k] = np.int8(level)
        total += np.int32(level)
    return scale, total


# fastmath=False said outright: a function compiled while compiling its caller inherits the
# flags it does not set, and the fused decoding layer's fastmath would make x / scale a product
# with 1 / scale, one unit in the last place away from the reference (tests/test_decode_fused.py).
@njit(fastmath=False, cache=True, boundscheck=False, error_model="numpy")
def _quantize_row(x, block, xq, dx, sx):
    """One row of _quantize_activations: x float32 [K] -> xq int8 [nb*block], dx, sx [nb]."""
    K = x.shape[0]
    for b in range(dx.shape[0]):
        start, stop = b * block, min((b + 1) * block, K)
        d, total = _round_to_levels(x[start:stop], xq[start:stop])
        xq[stop:(b + 1) * block] = 0                                 # the padding
        dx[b] = d
        sx[b] = d * np.float32(total)


@njit(parallel=True, cache=True, boundscheck=False)
def _quantize_activations(x, block, xq, dx, sx):
    """quant.quantize_activations, with the block sums sx = dx * sum(xq) besides: x float32
    [M, K] -> xq int8 [M, nb*block], dx and sx float32 [M, nb]."""
    for m in prange(x.shape[0]):
        _quantize_row(x[m], block, xq[m], dx[m], sx[m])


def activation_buffers(M, K, block):
    """Empty (xq int8 [M, nb*block], dx, sx float32 [M, nb]) for _quantize_activations."""
    nb = -(-K // block)
    return (np.empty((M, nb * block), np.int8), np.empty((M, nb), np.float32),
            np.empty((M, nb), np.float32))


def quantize_activations(x, block):
    """(xq, dx, sx) of x [M, K] float32 (quant.quantize_activations, plus sx)."""
    xq, dx, sx = activation_buffers(*x.shape, block)
    with threads_for(x.size):
        _quantize_activations(np.ascontiguousarray(x, dtype=np.float32), block, xq, dx, sx)
    return xq, dx, sx


@njit(fastmath=False, cache=True, boundscheck=False, error_model="numpy")   # as _quantize_row
def _quantize_vector(x, levels):
    """One vector of _quantize_vectors: x float32 [hd] -> levels int8 [hd]; returns the scale."""
    scale, _ = _round_to_levels(x, levels)
    return scale


@njit(parallel=True, cache=True, boundscheck=False)
def _quantize_vectors(x, levels, scales):
    """cache.quantize_vectors: x float32 [N, hd] -> levels int8 [N, hd], scales float32 [N]."""
    for i in prange(x.shape[0]):
        scales[i] = _quantize_vector(x[i], levels[i])


def quantize_vectors(x):
    """x float32 [..., hd] -> (levels int8 [..., hd], scales float32 [...]), as
    tinyphi3.inference.cache.quantize_vectors computes them."""
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    levels = np.empty(rows.shape, np.int8)
    scales = np.empty(rows.shape[0], np.float32)
    with threads_for(rows.size):
        _quantize_vectors(rows, levels, scales)
    return levels.reshape(x.shape), scales.reshape(x.shape[:-1])


def q4_matmul(xq, dx, q, sx=None, kernel=None):
    """x [M, K] as 8-bit blocks (quant.quantize_activations: xq int8 [M, nb*block], dx float32
    [M, nb]) @ W^T for a quant.Q4Weight W [N, K] -> [M, N] float32. `kernel`: "amx", "vnni" or
    "portable" (by default AMX for AMX_FROM_ROWS rows of x or more where the CPU has it, else
    VNNI where it has that); sx: dx * sum(xq) per block, when already known. Every kernel gives
    the same bits."""
    M, nb = dx.shape
    if sx is None:
        sx = (xq.reshape(M, nb, -1).sum(axis=-1, dtype=np.int32) * dx).astype(np.float32)
    if kernel is None:
        kernel = "amx" if M >= AMX_FROM_ROWS and _AMX else "vnni" if _VNNI else "portable"
    if kernel == "amx" and not has_amx():
        raise RuntimeError("the AMX kernel needs a CPU with AMX int8 tiles and Linux's leave to "
                           "use them")
    nt = q.packed.shape[0]
    out = np.empty((M, nt * ROWS), np.float32)
    xq = np.ascontiguousarray(xq)
    arguments = (xq, dx, sx, q.packed, _bits(q.scales), _bits(q.mins), out)
    with threads_for(M * q.packed.size // WEIGHT_BYTES_PER_ELEMENT):    # one thread below ~1 MB
        if kernel == "amx":
            padded = -(-M // AMX_ROWS) * AMX_ROWS                   # tiles of 16 rows
            if padded != M:
                xq, dx, sx = (np.concatenate([a, np.zeros((padded - M, a.shape[1]), a.dtype)])
                              for a in (xq, dx, sx))
            _q4_matmul_amx(xq, dx, sx, *arguments[3:], amx_config(q.block), M,
                           min(_thread_count()[0](), nt))
        elif kernel == "vnni":
            _q4_matmul_vnni(*arguments)
        elif kernel == "portable":
            _q4_matmul_portable(*arguments)
        else:
            raise ValueError(f"kernel must be 'amx', 'vnni' or 'portable', not {kernel!r}")
    return out[:, :q.out_features] if q.out_features != nt * ROWS else out


def q4_linear(x, q):
    """x [M, K] float32 @ W^T for a quant.Q4Weight W -> [M, N]: x rounded to 8 bits per block,
    then the integer kernel."""
    xq, dx, sx = quantize_activations(x, q.block)
    return q4_matmul(xq, dx, q, sx=sx)


_VNNI = has_vnni()
_AMX = has_amx()
AMX_FROM_ROWS = 16            # rows of x from which the AMX kernel is the default (prefill)


# ---- attention over an 8-bit KV cache (decode) ------------------------------------------------

_ATTENTION_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


VECTOR = 16                  # float32 lanes of the attention's vectors: head sizes of 16k use them


def _float_vectors(context, builder, array_type, value):
    """(the array's struct, a <16 x float>* to its data)."""
    array = context.make_array(array_type)(context, builder, value)
    vector = ir.VectorType(ir.FloatType(), VECTOR)
    return array, builder.bitcast(array.data, vector.as_pointer())


ROWS_AHEAD = 64              # the attention asks for the cache's vectors this many rows ahead


def _prefetch_row(builder, base, stride, row, ahead=ROWS_AHEAD):
    """Ask for the row `ahead` rows on (its first and last byte's lines), into L2."""
    i64 = ir.IntType(64)
    start = builder.mul(builder.add(row, ir.Constant(i64, ahead)), stride)
    for offset in (start, builder.add(start, builder.sub(stride, ir.Constant(i64, 1)))):
        _prefetch(builder, builder.gep(base, [offset]))


def _int8_rows(context, builder, array_type, value):
    """(an i8* to the 2-D array's data, its row stride in bytes)."""
    array = context.make_array(array_type)(context, builder, value)
    return (builder.bitcast(array.data, ir.IntType(8).as_pointer()),
            cgutils.unpack_tuple(builder, array.strides, 2)[0])


def _levels_as_floats(builder, base, stride, row, chunk):
    """<16 x float> of the int8 levels[row, 16 chunk : 16 chunk + 16] (base, stride: _int8_rows),
    widened to int32 and converted (vpmovsxbd, vcvtdq2ps)."""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    start = builder.add(builder.mul(row, stride), builder.mul(chunk, ir.Constant(i64, VECTOR)))
    pointer = builder.bitcast(builder.gep(base, [start]), ir.VectorType(i8, VECTOR).as_pointer())
    return builder.sitofp(builder.sext(builder.load(pointer, align=1), ir.VectorType(i32, VECTOR)),
                          ir.VectorType(ir.FloatType(), VECTOR))


@intrinsic
def _prefetch_levels(typingctx, levels, row):
    """Ask for levels[row] (an int8 [S, hd] C array), into L2."""
    def codegen(context, builder, signature, args):
        base, stride = _int8_rows(context, builder, signature.args[0], args[0])
        row = context.cast(builder, args[1], signature.args[1], types.int64)
        _prefetch_row(builder, base, stride, row, ahead=0)
        return context.get_dummy_value()
    return types.void(levels, row), codegen


@intrinsic
def _dot_levels(typingctx, x, levels, row):
    """sum_d x[d] levels[row, d] in float32, x float32 [hd] and levels int8 [S, hd] C arrays,
    hd a multiple of 16: 16 levels at a time as floats (_levels_as_floats), multiplied-added
    (llvm.fmuladd) into one <16 x float>, whose lanes are then added pairwise (8 + 8, 4 + 4,
    2 + 2, 1 + 1), always in that order."""
    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.FloatType(), VECTOR)
        xs, x_vectors = _float_vectors(context, builder, signature.args[0], args[0])
        base, stride = _int8_rows(context, builder, signature.args[1], args[1])
        row = context.cast(builder, args[2], signature.args[2], types.int64)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fmuladd.v16f32")
        total = cgutils.alloca_once_value(builder, ir.Constant(vector, None))
        _prefetch_row(builder, base, stride, row)
        chunks = builder.udiv(cgutils.unpack_tuple(builder, xs.shape, 1)[0],
                              ir.Constant(ir.IntType(64), VECTOR))
        with cgutils.for_range(builder, chunks) as loop:
            i = loop.index
            floats = _levels_as_floats(builder, base, stride, row, i)
            xv = builder.load(builder.gep(x_vectors, [i]), align=4)
            builder.store(builder.call(fmuladd, [xv, floats, builder.load(total)]), total)
        value = builder.load(total)
        width = VECTOR
        while width > 1:                                  # lanes [0, w/2) + [w/2, w)
            width //= 2
            low = builder.shuffle_vector(value, value, ir.Constant(
                ir.VectorType(ir.IntType(32), width), list(range(width))))
            high = builder.shuffle_vector(value, value, ir.Constant(
                ir.VectorType(ir.IntType(32), width), list(range(width, 2 * width))))
            value = builder.fadd(low, high)
        return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))
    return types.float32(x, levels, row), codegen


@intrinsic
def _add_levels4(typingctx, acc, levels, row, weights):
    """acc[d] += w0 levels[row, d] + w1 levels[row+1, d] + w2 levels[row+2, d]
    + w3 levels[row+3, d] (in that order, by llvm.fmuladd), acc float32 [hd], levels int8
    [S, hd] C arrays, weights float32 [>= 4], hd a multiple of 16."""
    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.FloatType(), VECTOR)
        accs, acc_vectors = _float_vectors(context, builder, signature.args[0], args[0])
        base, stride = _int8_rows(context, builder, signature.args[1], args[1])
        row = context.cast(builder, args[2], signature.args[2], types.int64)
        ws = context.make_array(signature.args[3])(context, builder, args[3])
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fmuladd.v16f32")
        i32, i64 = ir.IntType(32), ir.IntType(64)
        undef = ir.Constant(vector, ir.Undefined)
        everywhere = ir.Constant(ir.VectorType(i32, VECTOR), [0] * VECTOR)
        weights = []
        for j in range(4):
            w = builder.load(builder.gep(ws.data, [ir.Constant(i64, j)]))
            weights.append(builder.shuffle_vector(
                builder.insert_element(undef, w, ir.Constant(i32, 0)), undef, everywhere))
        chunks = builder.udiv(cgutils.unpack_tuple(builder, accs.shape, 1)[0],
                              ir.Constant(i64, VECTOR))
        with cgutils.for_range(builder, chunks) as loop:
            i = loop.index
            pointer = builder.gep(acc_vectors, [i])
            total = builder.load(pointer, align=4)
            for j in range(4):
                floats = _levels_as_floats(builder, base, stride,
                                           builder.add(row, ir.Constant(i64, j)), i)
                total = builder.call(fmuladd, [weights[j], floats, total])
            builder.store(total, pointer, align=4)
        return context.get_dummy_value()
    return types.void(acc, levels, row, weights), codegen


@njit(fastmath=_ATTENTION_FASTMATH, cache=True, boundscheck=False, error_model="numpy")
def _attend_head(q, k_levels, k_scales, v_levels, v_scales, S, allowed, scale, out, b, h):
    """Query head h of row b of _attention_decode: out[b, h] = softmax(q k^T * scale) v.
    Head sizes of 16k take the vector intrinsics (_dot_levels, _add_levels4), others plain
    loops: each the same arithmetic every time it runs."""
    kv = h // (q.shape[1] // k_levels.shape[1])
    hd = q.shape[2]
    qh = q[b, h]
    keys, values = k_levels[b, kv], v_levels[b, kv]                  # [>= S, hd]
    vectors = hd % VECTOR == 0
    scores = np.empty(S, np.float32)
    top = np.float32(-np.inf)
    if vectors:
        for s in range(min(S, ROWS_AHEAD)):       # the first keys: later ones _dot_levels asks for
            _prefetch_levels(keys, s)
    for s in range(S):
        if vectors:
            _prefetch_levels(values, s)           # in L2 by the time the second loop reads them
            dot = _dot_levels(qh, keys, s)
        else:
            key = keys[s]
            dot = np.float32(0.0)
            for d in range(hd):
                dot += qh[d] * np.float32(key[d])
        scores[s] = dot * (k_scales[b, kv, s] * scale) if allowed[b, s] else np.float32(-np.inf)
        top = max(top, scores[s])
    total = np.float32(0.0)
    for s in range(S):                              # scores -> weights p v_scale (0 if masked)
        p = exp32(scores[s] - top) if allowed[b, s] else np.float32(0.0)
        total += p
        scores[s] = p * v_scales[b, kv, s]
    acc = np.zeros(hd, np.float32)
    s = 0
    if vectors:
        while s + 4 <= S:
            _add_levels4(acc, values, s, scores[s:s + 4])
            s += 4
    for s in range(s, S):
        weight = scores[s]
        if weight != 0:
            value = values[s]
            for d in range(hd):
                acc[d] += weight * np.float32(value[d])
    for d in range(hd):
        out[b, h, d] = acc[d] / total if total > 0 else np.float32(0.0)


@njit(parallel=True, fastmath=_ATTENTION_FASTMATH, cache=True, boundscheck=False)
def _attention_decode(q, k_levels, k_scales, v_levels, v_scales, S, allowed, scale, out):
    """One query per row against an int8 KV cache (tinyphi3/quant/kv8.py): out[b, h] =
    softmax(q k^T * scale) v over the allowed keys among the first S, with k = k_scale * k_levels
    per vector (and v alike). q [B, H, hd] float32; k_levels, v_levels int8 [B, KV, >=S, hd] and
    k_scales, v_scales float32 [B, KV, >=S] (the cache's whole buffers, C-contiguous, so that the
    loops over hd vectorise); allowed bool [B, S]; out [B, H, hd]. Query head h reads KV head
    h // (H / KV)."""
    B, H = q.shape[0], q.shape[1]
    for bh in prange(B * H):
        _attend_head(q, k_levels, k_scales, v_levels, v_scales, S, allowed, scale, out,
                     bh // H, bh % H)


def _whole_buffer(a):
    """The C-contiguous cache buffer that `a` (its first S positions) is a view of, if any."""
    base = a.base
    if (isinstance(base, np.ndarray) and base.flags.c_contiguous and base.ndim == a.ndim
            and base.shape[:2] == a.shape[:2] and base.shape[3:] == a.shape[3:]
            and base.dtype == a.dtype and a.__array_interface__["data"][0]
            == base.__array_interface__["data"][0]):
        return base
    return np.ascontiguousarray(a)


def attention_decode(q, k, v, allowed, scale):
    """q [B, H, 1, hd] float32, k and v cache.QuantizedKV [B, KV, S, hd], allowed bool [B, S] ->
    [B, H, 1, hd] float32: what tinyphi3.nn.attention computes from k and v in float32."""
    B, H, _, hd = q.shape
    out = np.empty((B, H, hd), np.float32)
    with threads_for(B * H * k.shape[2] * hd):
        _attention_decode(np.ascontiguousarray(q[:, :, 0]), _whole_buffer(k.levels),
                          _whole_buffer(k.scales), _whole_buffer(v.levels),
                          _whole_buffer(v.scales), k.shape[2], np.ascontiguousarray(allowed),
                          np.float32(scale), out)
    return out[:, :, None]
