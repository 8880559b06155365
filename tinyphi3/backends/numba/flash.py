"""Numba CPU kernels for FlashAttention (reference: tinyphi3/nn/flash_attention.py, whose
docstring has the equations; the tiled NumPy functions there are what these kernels equal).

Forward (`flash_attention_forward`): parallel over (batch, head, tile of Bq query rows). Each job
walks the key tiles its mask structure may show (causal: up to the diagonal; window: from its
start; layout: active blocks only; not all padding), one query row at a time, folding the keys
into the row's running max m, sum l and output accumulator acc (the online softmax). It writes
O [B, H, T, hd] and L = m + log l [B, H, T] (-inf and O = 0 for a row that sees no key).

Backward (`flash_attention_backward`), two passes that recompute P = exp(s - L) and never write
the same element from two threads:
- keys: parallel over (batch, KV head, tile of Bk keys); each job sums, over the g query heads
  of its group and the query rows that may see its keys, dV_j += P dO_i and dK_j += dS q_i scale;
- queries: parallel over (batch, head, tile of Bq rows), as the forward; dQ_i += dS k_j scale;
with dS = P (dP - D), dP = dO_i . v_j and D = rowsum(dO * O).

Memory per job: the [Bq, hd] or [Bk, hd] accumulators and one row of Bk scores. float32 in and
out, float32 sums (as the reference's float32 matrix products); float64 inputs are converted to
float32 (the switch hands these kernels float32 only; float64 runs the NumPy reference).
"""

import numpy as np
from numba import njit, prange

from tinyphi3.backends.numba.fused import _JIT, exp32


@njit(inline="always")
def _sees(key_valid, window, layout, block_size, b, h, p, j):
    """Whether the query at position p sees key j (causal, window, padding, layout)."""
    if j > p or p - j >= window or not key_valid[b, j]:
        return False
    return block_size == 0 or layout[h, p // block_size, j // block_size]


@njit(inline="always")
def _hidden(key_valid, layout, block_size, b, h, first, last, j0, j1):
    """Whether keys j0..j1-1 are hidden from every query at positions first..last by the layout
    (all its blocks there inactive) or by padding (all padding)."""
    if block_size > 0:
        active = False
        for qb in range(first // block_size, last // block_size + 1):
            for kb in range(j0 // block_size, (j1 - 1) // block_size + 1):
                active = active or layout[h, qb, kb]
        if not active:
            return True
    for j in range(j0, j1):
        if key_valid[b, j]:
            return False
    return True


@njit(**_JIT)
def _forward(q, k, v, scale, start, key_valid, window, layout, block_size, tile_q, tile_k,
             out, lse):
    """q [B, H, T, hd], k/v [B, KV, S, hd] -> out [B, H, T, hd], lse [B, H, T]."""
    B, H, T, hd = q.shape
    S, g = k.shape[2], H // k.shape[1]
    tiles = (T + tile_q - 1) // tile_q
    for job in prange(B * H * tiles):
        b, h, t0 = job // (H * tiles), (job // tiles) % H, (job % tiles) * tile_q
        kv = h // g
        rows = min(tile_q, T - t0)
        first, last = start + t0, start + t0 + rows - 1       # positions of the tile's rows
        m = np.full(rows, -np.inf, np.float32)                # running max of each row
        l = np.zeros(rows, np.float32)                        # running sum of e^(s - m)
        acc = np.zeros((rows, hd), np.float32)                # running sum of e^(s - m) v
        s = np.empty(tile_k, np.float32)                      # one row's scores in a key tile
        lo, hi = max(0, first - window + 1), min(S, last + 1)
        for j0 in range(lo - lo % tile_k, hi, tile_k):
            j1 = min(j0 + tile_k, hi)
            if _hidden(key_valid, layout, block_size, b, h, first, last, j0, j1):
                continue
            for i in range(rows):
                m_new = m[i]
                for j in range(j0, j1):
                    if _sees(key_valid, window, layout, block_size, b, h, first + i, j):
                        dot = np.float32(0.0)
                        for d in range(hd):
                            dot += q[b, h, t0 + i, d] * k[b, kv, j, d]
                        s[j - j0] = dot * scale
                        m_new = max(m_new, s[j - j0])
                    else:
                        s[j - j0] = -np.inf
                if m_new == -np.inf:
                    continue                                  # no key seen yet by this row
                rescale = exp32(m[i] - m_new)                 # 0 on the row's first keys
                l[i] *= rescale
                for d in range(hd):
                    acc[i, d] *= rescale
                for j in range(j0, j1):
                    p = exp32(s[j - j0] - m_new)              # 0 for a hidden key
                    l[i] += p
                    for d in range(hd):
                        acc[i, d] += p * v[b, kv, j, d]
                m[i] = m_new
        for i in range(rows):
            seen = l[i] > 0.0
            inv = np.float32(1.0) / l[i] if seen else np.float32(0.0)
            lse[b, h, t0 + i] = m[i] + np.log(l[i]) if seen else -np.inf
            for d in range(hd):
                out[b, h, t0 + i, d] = acc[i, d] * inv


@njit(inline="always")
def _grad_score(q, k, v, do, lse, delta, scale, b, h, kv, t, j, hd):
    """(P, dS) of query row t and key j: P = exp(s - L), dS = P (dO . v - D)."""
    dot = np.float32(0.0)
    dp = np.float32(0.0)
    for d in range(hd):
        dot += q[b, h, t, d] * k[b, kv, j, d]
        dp += do[b, h, t, d] * v[b, kv, j, d]
    p = exp32(dot * scale - lse[b, h, t])
    return p, p * (dp - delta[b, h, t])


@njit(**_JIT)
def _backward_keys(q, k, v, do, lse, delta, scale, start, key_valid, window, layout, block_size,
                   tile_q, tile_k, dk, dv):
    """dk, dv [B, KV, S, hd], one key tile per job, summed over the group's g query heads."""
    B, H, T, hd = q.shape
    KV, S = k.shape[1], k.shape[2]
    g = H // KV
    tiles = (S + tile_k - 1) // tile_k
    for job in prange(B * KV * tiles):
        b, kv, j0 = job // (KV * tiles), (job // tiles) % KV, (job % tiles) * tile_k
        j1 = min(j0 + tile_k, S)
        dk_acc = np.zeros((j1 - j0, hd), np.float32)
        dv_acc = np.zeros((j1 - j0, hd), np.float32)
        # the rows that may see these keys: position >= j0, position - (j1 - 1) < window
        t_lo, t_hi = max(0, j0 - start), min(T, j1 - 1 + window - start)
        for h in range(kv * g, (kv + 1) * g):
            for t0 in range(t_lo, t_hi, tile_q):
                t1 = min(t0 + tile_q, t_hi)
                if _hidden(key_valid, layout, block_size, b, h, start + t0, start + t1 - 1,
                           j0, j1):
                    continue
                for t in range(t0, t1):
                    for j in range(j0, j1):
                        if not _sees(key_valid, window, layout, block_size, b, h, start + t, j):
                            continue
                        p, ds = _grad_score(q, k, v, do, lse, delta, scale, b, h, kv, t, j, hd)
                        ds *= scale
                        for d in range(hd):
                            dv_acc[j - j0, d] += p * do[b, h, t, d]
                            dk_acc[j - j0, d] += ds * q[b, h, t, d]
        for j in range(j0, j1):
            for d in range(hd):
                dk[b, kv, j, d] = dk_acc[j - j0, d]
                dv[b, kv, j, d] = dv_acc[j - j0, d]


@njit(**_JIT)
def _backward_queries(q, k, v, do, lse, delta, scale, start, key_valid, window, layout,
                      block_size, tile_q, tile_k, dq):
    """dq [B, H, T, hd], one tile of query rows per job."""
    B, H, T, hd = q.shape
    S, g = k.shape[2], H // k.shape[1]
    tiles = (T + tile_q - 1) // tile_q
    for job in prange(B * H * tiles):
        b, h, t0 = job // (H * tiles), (job // tiles) % H, (job % tiles) * tile_q
        kv = h // g
        rows = min(tile_q, T - t0)
        first, last = start + t0, start + t0 + rows - 1
        dq_acc = np.zeros((rows, hd), np.float32)
        lo, hi = max(0, first - window + 1), min(S, last + 1)
        for j0 in range(lo - lo % tile_k, hi, tile_k):
            j1 = min(j0 + tile_k, hi)
            if _hidden(key_valid, layout, block_size, b, h, first, last, j0, j1):
                continue
            for i in range(rows):
                for j in range(j0, j1):
                    if not _sees(key_valid, window, layout, block_size, b, h, first + i, j):
                        continue
                    _, ds = _grad_score(q, k, v, do, lse, delta, scale, b, h, kv, t0 + i, j, hd)
                    ds *= scale
                    for d in range(hd):
                        dq_acc[i, d] += ds * k[b, kv, j, d]
        for i in range(rows):
            for d in range(hd):
                dq[b, h, t0 + i, d] = dq_acc[i, d]


def _f32(x):
    return np.ascontiguousarray(x, dtype=np.float32)


def _structure(mask, T):
    """A FlashMask as the kernels take it: (start, key_valid, window, layout, block_size), with
    "no window" as a window longer than any distance and "no layout" as block_size 0."""
    window = mask.window if mask.window is not None else mask.query_start + T
    key_valid = np.ascontiguousarray(mask.key_valid)
    if mask.layout is None:
        return mask.query_start, key_valid, window, np.ones((1, 1, 1), bool), 0
    return mask.query_start, key_valid, window, np.ascontiguousarray(mask.layout), mask.block_size


def flash_attention_forward(q, k, v, scale, mask, tile_q=64, tile_k=64):
    """(O [B, H, T, hd], L [B, H, T]) of q [B, H, T, hd], k, v [B, KV, S, hd] under a FlashMask
    (checked by tinyphi3.nn.flash_attention.flash_mask)."""
    B, H, T, hd = q.shape
    out = np.empty((B, H, T, hd), np.float32)
    lse = np.empty((B, H, T), np.float32)
    _forward(_f32(q), _f32(k), _f32(v), np.float32(scale), *_structure(mask, T), tile_q, tile_k,
             out, lse)
    return out, lse


def flash_attention_backward(do, q, k, v, out, lse, scale, mask, tile_q=64, tile_k=64):
    """(dq, dk, dv) given dO [B, H, T, hd] and the forward's O and L; dk, dv [B, KV, S, hd]."""
    q, k, v, do = _f32(q), _f32(k), _f32(v), _f32(do)
    delta = (do * _f32(out)).sum(axis=-1)                     # D = rowsum(dO * O): [B, H, T]
    lse, structure = _f32(lse), _structure(mask, q.shape[2])
    dq = np.empty(q.shape, np.float32)
    dk, dv = np.empty(k.shape, np.float32), np.empty(v.shape, np.float32)
    _backward_keys(q, k, v, do, lse, delta, np.float32(scale), *structure, tile_q, tile_k, dk, dv)
    _backward_queries(q, k, v, do, lse, delta, np.float32(scale), *structure, tile_q, tile_k, dq)
    return dq, dk, dv
