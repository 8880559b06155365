"""Numba CPU kernels for block-sparse attention (reference: blocksparse.blocksparse_attention).

Both kernels visit only the active key blocks of the layout and never build the [T, S] score
matrix. They fold one key block at a time into an online softmax (FlashAttention, Dao et al.
2022; Milakov & Gimelshein 2018), keeping per query row a running maximum m, a running sum l
and an unnormalised output acc:

    m' = max(m, max_j s_j)          l' = l e^(m - m') + sum_j e^(s_j - m')
    acc' = acc e^(m - m') + sum_j e^(s_j - m') v_j          out = acc / l  (after the last block)

with s_j = scale * q . k_j over the keys j of the block that the row may see (j <= position).

- `blocksparse_prefill`: T queries at positions past .. past + T - 1. Parallel over
  (batch, head, query block); inside, for each active key block, every row of the query block
  reads the same 64 keys while they are in cache. Keys are transposed once to [B, KV, hd, S] so
  that the scores of a row are a sum of contiguous axpy's over the keys of the block.
- `blocksparse_decode`: one new query per sequence at position length - 1 (a length per
  sequence), reading only the active blocks of the key/value cache. Parallel over (batch, head).

GQA: query head h reads KV head h // g. float32 in and out; sums in float32 (the reference's
matrix products are float32 too). Kernels compile on first use and are cached on disk.
"""

import numpy as np
from numba import njit, prange

from tinyphi3.nn.blocksparse_layout import (check_heads, check_layout, decode_lengths,
                                            positive_int, query_start)
from tinyphi3.errors import InvalidInputError
from tinyphi3.backends.numba.fused import _JIT, exp32


@njit(**_JIT)
def _prefill(q, k_t, v, layout, block_size, scale, past, out):
    """q [B, H, T, hd], k_t [B, KV, hd, S], v [B, KV, S, hd] -> out [B, H, T, hd]."""
    B, H, T, hd = q.shape
    g = H // v.shape[1]
    first = past // block_size                                # query blocks first .. last
    blocks = (past + T - 1) // block_size - first + 1
    for job in prange(B * H * blocks):
        b, h, qb = job // (H * blocks), (job // blocks) % H, first + job % blocks
        kv = h // g
        t0 = max(past, qb * block_size) - past                # rows t0 .. t1 - 1 of q
        t1 = min(past + T, (qb + 1) * block_size) - past
        rows = t1 - t0
        q_rows = np.empty((rows, hd), np.float32)
        for i in range(rows):
            for d in range(hd):
                q_rows[i, d] = q[b, h, t0 + i, d] * scale
        m = np.full(rows, -np.inf, np.float32)                # running max of each row
        l = np.zeros(rows, np.float32)                        # running sum of e^(s - m)
        acc = np.zeros((rows, hd), np.float32)                # running sum of e^(s - m) v
        s = np.empty(block_size, np.float32)
        for kb in range(qb + 1):
            if not layout[h, qb, kb]:
                continue
            k0 = kb * block_size
            for i in range(rows):
                n = min(block_size, past + t0 + i + 1 - k0)   # keys k0 .. k0+n-1 are <= position
                s[:n] = 0.0
                for d in range(hd):                           # s = q . k for the n keys
                    qd = q_rows[i, d]
                    for j in range(n):
                        s[j] += qd * k_t[b, kv, d, k0 + j]
                m_new = m[i]
                for j in range(n):
                    m_new = max(m_new, s[j])
                rescale = exp32(m[i] - m_new)                 # 0 on the first block (m = -inf)
                l[i] *= rescale
                for d in range(hd):
                    acc[i, d] *= rescale
                for j in range(n):
                    p = exp32(s[j] - m_new)
                    l[i] += p
                    for d in range(hd):
                        acc[i, d] += p * v[b, kv, k0 + j, d]
                m[i] = m_new
        for i in range(rows):
            inv = np.float32(1.0) / l[i] if l[i] > 0.0 else np.float32(0.0)   # 0: no key seen
            for d in range(hd):
                out[b, h, t0 + i, d] = acc[i, d] * inv


@njit(**_JIT)
def _decode(q, k, v, layout, block_size, scale, lengths, out):
    """q [B, H, hd], k/v caches [B, KV, S, hd], lengths [B] -> out [B, H, hd]."""
    B, H, hd = q.shape
    g = H // k.shape[1]
    for job in prange(B * H):
        b, h = job // H, job % H
        kv = h // g
        position = lengths[b] - 1
        qb = position // block_size
        m = np.float32(-np.inf)
        l = np.float32(0.0)
        acc = np.zeros(hd, np.float32)
        s = np.empty(block_size, np.float32)
        for kb in range(qb + 1):
            if not layout[h, qb, kb]:
                continue
            k0 = kb * block_size
            n = min(block_size, position + 1 - k0)
            m_new = m
            for j in range(n):
                dot = np.float32(0.0)
                for d in range(hd):
                    dot += q[b, h, d] * k[b, kv, k0 + j, d]
                s[j] = dot * scale
                m_new = max(m_new, s[j])
            rescale = exp32(m - m_new)
            l *= rescale
            for d in range(hd):
                acc[d] *= rescale
            for j in range(n):
                p = exp32(s[j] - m_new)
                l += p
                for d in range(hd):
                    acc[d] += p * v[b, kv, k0 + j, d]
            m = m_new
        inv = np.float32(1.0) / l if l > 0.0 else np.float32(0.0)
        for d in range(hd):
            out[b, h, d] = acc[d] * inv


def blocksparse_prefill(q, k, v, layout, block_size, scale, past=None):
    """Block-sparse attention of T queries: q [B, H, T, hd]; k, v [B, KV, S, hd] -> [B, H, T, hd].

    Query t sits at position past + t (past defaults to S - T); keys past its position are never
    read, so k and v may be a cache longer than past + T.
    """
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, hd = q.shape
    past = query_start(T, k.shape[2], past)
    check_heads(H, k.shape[1], layout, -(-(past + T) // block_size))
    k_t = np.ascontiguousarray(np.swapaxes(k, -1, -2), dtype=np.float32)   # -> [B, KV, hd, S]
    out = np.empty((B, H, T, hd), np.float32)
    _prefill(np.ascontiguousarray(q, dtype=np.float32), k_t,
             np.ascontiguousarray(v, dtype=np.float32), np.ascontiguousarray(layout), block_size,
             np.float32(scale), past, out)
    return out


def blocksparse_decode(q, k_cache, v_cache, layout, block_size, scale, length):
    """Attention of one new token per sequence: q [B, H, 1, hd] -> [B, H, 1, hd].

    k_cache, v_cache: [B, KV, S, hd] with the new token's key and value already written;
    length: an int or [B] ints, the valid keys of each sequence (1 <= length <= S), the new
    token at position length - 1.
    """
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, hd = q.shape
    if T != 1:
        raise InvalidInputError(f"decode takes one query per sequence, got T = {T}")
    lengths = decode_lengths(length, B, k_cache.shape[2])                       # -> [B]
    check_heads(H, k_cache.shape[1], layout, -(-int(lengths.max()) // block_size))
    out = np.empty((B, H, hd), np.float32)
    _decode(np.ascontiguousarray(q[:, :, 0], dtype=np.float32),   # [B, H, 1, hd] -> [B, H, hd]
            np.asarray(k_cache, dtype=np.float32),            # any strides: a cache view is
            np.asarray(v_cache, dtype=np.float32),            # read in place, never copied
            np.ascontiguousarray(layout),
            block_size, np.float32(scale), lengths, out)
    return out[:, :, None]                                    # -> [B, H, 1, hd]
