"""The CUDA block-sparse attention kernels, run thread block by thread block in NumPy.

The kernels of tinyphi3_gpu/kernels/blocksparse_attention.cu need a GPU; this module runs their
algorithm anywhere, so that tests can hold it against the NumPy reference
(tinyphi3.nn.blocksparse.blocksparse_attention). Each function walks the grid, the tiles and the
active-block loop of the kernel it names, in the same order and with the same variable names,
and rounds where the kernel rounds:

- fmaf(a, b, c) rounds once: `fma32` (in float64, where the product of two float32 is exact;
  the sum then rounds twice, to float64 and float32, which differs from one rounding on rare ties);
- the 4 lanes of a prefill row add their partial dot products as (p0 + p1) + (p2 + p3), the
  order of the two __shfl_xor_sync steps;
- each thread's sums run in the kernel's order (the dot product over d, row_sum and pv over j).

It cannot copy CUDA's expf bit for bit (within 2 ulp of e^x, as NumPy's float32 exp is within 1).
Given the same e^x, it is the .cu bit for bit: tests/test_gpu_attention_emulation.py builds the
.cu for CPU threads (one per CUDA thread), runs it through the launchers, and finds the same bits.
Inside a thread block the threads are vectorised: an array axis over rows, lanes or heads where
the kernel has threads, a Python loop where a thread loops.

It also holds what the launchers (tinyphi3_gpu/attention.py) share with the emulation: the
layout in CSR form, the choice of kernel, strides in elements and the grids (the layout checks
are tinyphi3/nn/blocksparse_layout.py's, shared with the numba kernels).

Shape letters as in tinyphi3/config; NB is the number of layout blocks.
"""

import numpy as np

from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.blocksparse_layout import (check_heads, check_layout, decode_lengths,
                                            positive_int, query_start)

HEAD_DIMS = (16, 32, 64, 96, 128)   # instantiated head dims
TILES = (64, 16)                    # prefill BM = BN, the larger preferred
DTYPES = ("f32", "bf16")            # float32, or bfloat16 stored as uint16 bits
LANES = 4                           # prefill: threads per query row
DECODE_KEYS = 32                    # decode: DN, keys per tile
DECODE_HEADS = 8                    # decode: G, query heads per thread block
DECODE_THREADS = 128
MAX_GRID_Y = 65535
NEG_INF = np.float32(-np.inf)


# --- what the launchers share ----------------------------------------------------------------

def layout_csr(layout):
    """The layout in compressed sparse row form: row_ptr int32 [H*NB + 1], cols int32 [nnz].

        cols[row_ptr[h*NB + qb] : row_ptr[h*NB + qb + 1]] = the kb with layout[h, qb, kb],
    ascending (the crow/col indices of the published block-sparse kernel).
    """
    layout = check_layout(layout)
    H, NB, _ = layout.shape
    rows = layout.reshape(H * NB, NB)                         # [H, NB, NB] -> [H*NB, NB]
    row_ptr = np.zeros(H * NB + 1, np.int32)
    row_ptr[1:] = np.cumsum(rows.sum(axis=1))
    cols = np.nonzero(rows)[1].astype(np.int32)               # row-major: ascending in a row
    return row_ptr, cols


def all_active_layout(num_heads, length, block_size):
    """Every block active, bool [H, NB, NB]: block-sparse attention with it is dense causal."""
    num_blocks = -(-length // block_size)
    return np.ones((num_heads, num_blocks, num_blocks), dtype=bool)


def element_type(q, k, v, dtype=None):
    """'bf16' when q, k, v hold bfloat16 bits (uint16), else 'f32' (read as float32); checked
    against `dtype` when one is given."""
    bf16 = [x.dtype == np.uint16 for x in (q, k, v)]
    if any(bf16) and not all(bf16):
        raise InvalidInputError(f"q, k, v must all be bfloat16 (uint16 bits) or none, got "
                                f"{q.dtype}, {k.dtype}, {v.dtype}")
    found = "bf16" if all(bf16) else "f32"
    if dtype is not None and dtype != found:
        raise InvalidInputError(f"dtype {dtype!r} does not match arrays of {q.dtype}")
    return found


def prefill_tile(block_size):
    """BM = BN of the prefill kernel: 64 when it divides block_size, else 16."""
    for tile in TILES:
        if block_size % tile == 0:
            return tile
    raise NotImplementedError(f"block-sparse prefill on the GPU needs a block_size that is a "
                              f"multiple of 16, got {block_size}")


def kernel_name(kind, dtype, hd, tile=None):
    """The entry point: blocksparse_prefill_<dtype>_hd<hd>_t<tile> or blocksparse_decode_..."""
    if hd not in HEAD_DIMS:
        raise NotImplementedError(f"block-sparse attention on the GPU has kernels for head dims "
                                  f"{HEAD_DIMS}, not {hd}")
    if kind == "prefill":
        if tile not in TILES:
            raise NotImplementedError(f"prefill tiles are {TILES}, not {tile}")
        return f"blocksparse_prefill_{dtype}_hd{hd}_t{tile}"
    return f"blocksparse_decode_{dtype}_hd{hd}"


def kernel_names():
    """Every entry point the launchers may ask for."""
    return ([kernel_name("prefill", dt, hd, tile) for dt in DTYPES for hd in HEAD_DIMS
             for tile in TILES] + [kernel_name("decode", dt, hd) for dt in DTYPES
                                   for hd in HEAD_DIMS])


def kv_operand(x, xp):
    """k or v as the kernels read it: x itself when its last axis is contiguous and no stride is
    negative (a cache's buffer view [:, :, :S] is read in place), else a contiguous copy."""
    if x.strides[-1] == x.itemsize and min(x.strides) >= 0:
        return x
    return xp.ascontiguousarray(x)


def element_strides(x):
    """(sb, sh, ss): the strides of x [B, KV, S, hd] in elements, for the batch, head and
    position axes; element [b, h, s, d] sits at b*sb + h*sh + s*ss + d from x's first one."""
    return tuple(stride // x.itemsize for stride in x.strides[:3])


def prefill_grid(T, past, tile, B, H):
    """(query tiles, B*H): tile j covers positions [j*tile, (j+1)*tile), from past // tile."""
    if B * H > MAX_GRID_Y:
        raise NotImplementedError(f"B * H = {B * H} exceeds the grid's {MAX_GRID_Y}")
    return (past + T - 1) // tile - past // tile + 1, B * H


def decode_grid(B, H, KV):
    """(chunks of DECODE_HEADS query heads per KV head, B*KV)."""
    if B * KV > MAX_GRID_Y:
        raise NotImplementedError(f"B * KV = {B * KV} exceeds the grid's {MAX_GRID_Y}")
    return -(-(H // KV) // DECODE_HEADS), B * KV


# --- the device functions --------------------------------------------------------------------

def fma32(a, b, c):
    """fmaf(a, b, c) = a b + c rounded once to float32 (up to rare double-rounding ties)."""
    return (np.asarray(a, np.float64) * b + c).astype(np.float32)


def to_float(x):
    """float32 values of float32 data or of bfloat16 bits (uint16): __bfloat162float, exact."""
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(x, dtype=np.float32)


def rescale_factor(m, m_new):
    """e^(m - m_new); 1 while a row has seen no key (m = m_new = -inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(m_new == NEG_INF, np.float32(1), np.exp(m - m_new)).astype(np.float32)


def key_weight(s, m_new):
    """e^(s - m_new), the weight of a key; 0 for a masked key (s = -inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(s == NEG_INF, np.float32(0), np.exp(s - m_new)).astype(np.float32)


def flat_elements(x):
    """x's memory as a flat float32 array from its first element, so that element [b, h, s, d]
    is read at b*sb + h*sh + s*ss + d (element_strides), as the kernels address it."""
    extent = 1 + sum((n - 1) * stride // x.itemsize for n, stride in zip(x.shape, x.strides))
    view = np.lib.stride_tricks.as_strided(x, shape=(extent,), strides=(x.itemsize,),
                                           writeable=False)
    return to_float(view)


def load_tile(x, head, ss, key0, count, N, HD):
    """load_tile: [N, HD], rows key0 .. key0 + count - 1 of the head starting at x[head], then
    zero rows (x flat, as flat_elements gives it)."""
    tile = np.zeros((N, HD), np.float32)
    j = np.arange(count)[:, None]                             # [count, 1]
    tile[:count] = x[head + (key0 + j) * ss + np.arange(HD)]  # -> [count, HD]
    return tile


# --- prefill ---------------------------------------------------------------------------------

def prefill_block(block_idx, q, k, v, out, row_ptr, cols, H, KV, T, NB, block_size, scale, past,
                  k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, HD, TILE):
    """One thread block of `prefill<scalar_t, HD, TILE>`: block_idx = (blockIdx.x, blockIdx.y);
    q, k, v, out flat float32. Threads vectorised: axis 0 the BM rows, axis 1 the 4 lanes."""
    BM = BN = TILE                                            # query rows, keys per tile
    DPL = HD // LANES                                         # dims per lane
    row = np.arange(BM)                                       # [BM]: threadIdx.x / LANES
    dims = np.arange(LANES)[:, None] + LANES * np.arange(DPL)   # [LANES, DPL]: d = lane + 4 i
    bx, bh = block_idx
    b, h = bh // H, bh % H
    kv = h // (H // KV)                                       # GQA
    tile0 = (past // BM + bx) * BM                            # position of row 0
    q_first, q_last = max(tile0, past), min(tile0 + BM, past + T) - 1
    position = tile0 + row                                    # [BM]
    valid = (position >= q_first) & (position <= q_last)
    t = np.where(valid, position - past, 0)                   # row of q and out
    qb = tile0 // block_size
    k_head, v_head = b * k_sb + kv * k_sh, b * v_sb + kv * v_sh

    q_row = (bh * T + t) * HD                                 # [BM]
    q_reg = np.where(valid[:, None, None], q[q_row[:, None, None] + dims], 0)   # [BM, LANES, DPL]
    acc = np.zeros((BM, LANES, DPL), np.float32)
    m = np.full(BM, NEG_INF)                                  # running max of each row
    l = np.zeros(BM, np.float32)                              # running sum of e^(s - m)

    for idx in range(row_ptr[h * NB + qb], row_ptr[h * NB + qb + 1]):
        kb = int(cols[idx])
        if kb * block_size > q_last:
            break                                             # every later block is later still
        block_end = (kb + 1) * block_size
        key0 = kb * block_size
        while key0 < block_end and key0 <= q_last:
            count = min(BN, q_last + 1 - key0)
            kv_tile = load_tile(k, k_head, k_ss, key0, count, BN, HD)   # [BN, HD]
            k_lanes = kv_tile[:, dims].transpose(1, 2, 0)     # [BN, LANES, DPL] -> [LANES, DPL, BN]
            part = np.zeros((BM, LANES, BN), np.float32)      # each lane's partial q . k_j
            for i in range(DPL):
                part = fma32(q_reg[:, :, i, None], k_lanes[None, :, i], part)
            part = (part[:, 0] + part[:, 1]) + (part[:, 2] + part[:, 3])   # -> [BM, BN]
            j = np.arange(BN)
            seen = valid[:, None] & (key0 + j <= position[:, None])        # [BM, BN]
            s_tile = np.where(seen, part * np.float32(scale), NEG_INF)     # kernel: [BN, BM]
            tile_max = s_tile.max(axis=1)                     # [BM]
            kv_tile = load_tile(v, v_head, v_ss, key0, count, BN, HD)
            v_lanes = kv_tile[:, dims]                        # [BN, LANES, DPL]
            m_new = np.maximum(m, tile_max)
            alpha = rescale_factor(m, m_new)
            row_sum = np.zeros(BM, np.float32)
            pv = np.zeros((BM, LANES, DPL), np.float32)
            for j in range(BN):                               # pv = sum_j p_j v_j
                p = key_weight(s_tile[:, j], m_new)           # [BM]
                row_sum = row_sum + p
                pv = fma32(p[:, None, None], v_lanes[j], pv)
            l = fma32(l, alpha, row_sum)
            acc = fma32(acc, alpha[:, None, None], pv)
            m = m_new
            key0 += BN
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(l[:, None, None] > 0, acc / l[:, None, None], 0)  # 0: no key seen
    out[q_row[valid, None, None] + dims] = result[valid]


def blocksparse_prefill(q, k, v, layout, block_size, scale, past=None, *, tile=None,
                        dtype=None):
    """Emulates the launch of blocksparse_prefill_<dtype>_hd<HD>_t<tile> (prefill<scalar_t, HD,
    TILE> in kernels/blocksparse_attention.cu): q [B, H, T, hd]; k, v [B, KV, S, hd] (any
    strides) -> float32 [B, H, T, hd]. Arguments as tinyphi3_gpu.attention.blocksparse_prefill;
    tile defaults to the launcher's choice, dtype ("f32", "bf16") to the arrays' own."""
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, HD = q.shape
    KV, S = k.shape[1], k.shape[2]
    past = query_start(T, S, past)
    check_heads(H, KV, layout, -(-(past + T) // block_size))
    dtype = element_type(q, k, v, dtype)
    tile = tile or prefill_tile(block_size)
    kernel_name("prefill", dtype, HD, tile)                   # the kernel exists
    if block_size % tile:
        raise InvalidInputError(f"tile {tile} does not divide block_size {block_size}")
    row_ptr, cols = layout_csr(layout)
    k, v = kv_operand(k, np), kv_operand(v, np)
    k_flat, v_flat = flat_elements(k), flat_elements(v)
    q_flat = to_float(np.ascontiguousarray(q)).reshape(-1)    # [B, H, T, hd] -> [B*H*T*hd]
    out = np.zeros(B * H * T * HD, np.float32)
    grid_x, grid_y = prefill_grid(T, past, tile, B, H)
    for by in range(grid_y):
        for bx in range(grid_x):
            prefill_block((bx, by), q_flat, k_flat, v_flat, out, row_ptr,
                          cols, H, KV, T, layout.shape[1], block_size, np.float32(scale), past,
                          *element_strides(k), *element_strides(v), HD=HD, TILE=tile)
    return out.reshape(B, H, T, HD)                           # -> [B, H, T, hd]


def dense_causal_attention(q, k, v, scale, *, tile=None, dtype=None):
    """Emulates tinyphi3_gpu.attention.dense_causal_attention: the prefill kernel with the
    all-active layout of 64-token blocks; the queries are the last T of the S keys."""
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    layout = all_active_layout(H, S, 64)
    return blocksparse_prefill(q, k, v, layout, 64, scale, S - T, tile=tile, dtype=dtype)


# --- decode ----------------------------------------------------------------------------------

def decode_block(block_idx, q, k, v, out, row_ptr, cols, lengths, H, KV, NB, block_size, scale,
                 k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, HD):
    """One thread block of `decode<scalar_t, HD>`: block_idx = (blockIdx.x, blockIdx.y); q, k,
    v, out flat float32. Threads vectorised: axis 0 the G heads, axis 1 the keys or dims."""
    DN, G = DECODE_KEYS, DECODE_HEADS
    group = H // KV
    bx, by = block_idx
    b, kv = by // KV, by % KV
    h0 = kv * group + bx * G                                  # first query head served
    heads = min(G, (kv + 1) * group - h0)
    position = int(lengths[b]) - 1
    qb = position // block_size
    k_head, v_head = b * k_sb + kv * k_sh, b * v_sb + kv * v_sh

    q_s = np.zeros((G, HD), np.float32)
    q_s[:heads] = q[((b * H + h0 + np.arange(heads)) * HD)[:, None] + np.arange(HD)]
    m_s = np.full(G, NEG_INF)
    l_s = np.zeros(G, np.float32)
    acc = np.zeros((G, HD), np.float32)                       # kernel: G*HD/128 per thread
    next_ = np.zeros(G, np.int64)                             # each head's place in its list
    end = np.zeros(G, np.int64)
    next_[:heads] = row_ptr[(h0 + np.arange(heads)) * NB + qb]
    end[:heads] = row_ptr[(h0 + np.arange(heads)) * NB + qb + 1]

    while True:
        kb = min([int(cols[next_[i]]) for i in range(G) if next_[i] < end[i]], default=2**31 - 1)
        if kb > qb:
            break                                             # lists done, or the rest later
        active = np.zeros(G, bool)                            # head i attends to block kb
        for i in range(G):
            if next_[i] < end[i] and cols[next_[i]] == kb:
                active[i] = True
                next_[i] += 1
        key_end = min((kb + 1) * block_size, position + 1)
        for key0 in range(kb * block_size, key_end, DN):
            count = min(DN, key_end - key0)
            kv_tile = load_tile(k, k_head, k_ss, key0, count, DN, HD)   # [DN, HD]
            dot = np.zeros((G, DN), np.float32)
            for d in range(HD):                               # s = scale * q_i . k_j
                dot = fma32(q_s[:, d, None], kv_tile[None, :, d], dot)
            scored = active[:, None] & (np.arange(DN) < count)   # [G, DN]
            s_tile = np.where(scored, dot * scale, NEG_INF)
            tile_max = s_tile.max(axis=1)                     # the softmax of each head
            m_new = np.maximum(m_s, tile_max)
            alpha = rescale_factor(m_s, m_new)
            row_sum = np.zeros(G, np.float32)
            for j in range(DN):
                s_tile[:, j] = key_weight(s_tile[:, j], m_new)
                row_sum = row_sum + s_tile[:, j]
            l_s = fma32(l_s, alpha, row_sum)
            m_s = m_new
            alpha_s = alpha
            kv_tile = load_tile(v, v_head, v_ss, key0, count, DN, HD)
            pv = np.zeros((G, HD), np.float32)
            for j in range(DN):                               # acc = acc alpha + sum_j p_j v_j
                pv = fma32(s_tile[:, j, None], kv_tile[j], pv)
            acc = fma32(acc, alpha_s[:, None], pv)
    i = np.arange(heads)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(l_s[i, None] > 0, acc[i] / l_s[i, None], 0)
    out[((b * H + h0 + i) * HD)[:, None] + np.arange(HD)] = result


def blocksparse_decode(q, k_cache, v_cache, layout, block_size, scale, length, *, dtype=None):
    """Emulates the launch of blocksparse_decode_<dtype>_hd<HD> (decode<scalar_t, HD> in
    kernels/blocksparse_attention.cu): q [B, H, 1, hd]; caches [B, KV, S, hd] (any strides),
    the new token at position length - 1 (an int or [B] ints) -> float32 [B, H, 1, hd].
    Arguments as tinyphi3_gpu.attention.blocksparse_decode; dtype defaults to the arrays'."""
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, HD = q.shape
    KV, S = k_cache.shape[1], k_cache.shape[2]
    if T != 1:
        raise InvalidInputError(f"decode takes one query per sequence, got T = {T}")
    lengths = decode_lengths(length, B, S)
    check_heads(H, KV, layout, -(-int(lengths.max()) // block_size))
    kernel_name("decode", element_type(q, k_cache, v_cache, dtype), HD)   # the kernel exists
    row_ptr, cols = layout_csr(layout)
    k, v = kv_operand(k_cache, np), kv_operand(v_cache, np)
    k_flat, v_flat = flat_elements(k), flat_elements(v)
    q_flat = to_float(np.ascontiguousarray(q)).reshape(-1)    # [B, H, 1, hd] -> [B*H*hd]
    out = np.zeros(B * H * HD, np.float32)
    grid_x, grid_y = decode_grid(B, H, KV)
    for by in range(grid_y):
        for bx in range(grid_x):
            decode_block((bx, by), q_flat, k_flat, v_flat, out, row_ptr,
                         cols, lengths, H, KV, layout.shape[1], block_size, np.float32(scale),
                         *element_strides(k), *element_strides(v), HD=HD)
    return out.reshape(B, H, 1, HD)                           # -> [B, H, 1, hd]
