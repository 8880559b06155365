"""FlashAttention: exact attention computed in tiles, never holding a [T, S] matrix per head.

Dense attention (tinyphi3/nn/attention.py) keeps the weights P = softmax(Q K^T * scale) [T, S] per
head for its backward pass: at 4K tokens that is 64 MiB per head. FlashAttention (Dao et al. 2022,
Algorithm 1; the backward of FlashAttention-2, Dao 2023, Algorithm 2) walks over tiles of Bq
query rows and Bk keys, keeping per row a running maximum m, a running sum l and an unnormalised
output acc (the online softmax, Milakov & Gimelshein 2018):

    S    = Q_i K_j^T * scale                        [Bq, Bk], -inf where the mask hides a key
    m'   = max(m, rowmax(S))
    P    = exp(S - m')
    l'   = l e^(m - m') + rowsum(P)
    acc' = acc e^(m - m') + P V_j
    after the last key tile:  O_i = acc / l,   L_i = m + log l   (the log-sum-exp of the row)

The forward pass saves only O [B, H, T, hd] and L [B, H, T]. The backward pass recomputes the
weights tile by tile, P = exp(S - L) (exactly softmax's), and with D = rowsum(dO * O):

    dV_j += P^T dO_i,   dP = dO_i V_j^T,   dS = P (dP - D),
    dQ_i += dS K_j * scale,   dK_j += dS^T Q_i * scale

(D = rowsum(dP * P) of the dense backward, since O = P V.) GQA: query head h reads KV head h // g;
dK and dV sum over the g query heads of a group.

The mask is described by its structure, not by a [T, S] array: query t sits at position
p = query_start + t and sees key j when

    j <= p                                          causal
    p - j < sliding_window                          when a window is set
    key_valid[b, j]                                 padding keys are seen by no query
    layout[h, p // block_size, j // block_size]     when a block-sparse layout is given

so whole key tiles are skipped: those past the diagonal, those before the window, those of
inactive layout blocks, those that are all padding. A query that sees no key gets O = 0,
L = -inf and zero gradients. The functions below are the NumPy reference of the tiled algorithm
(slow, plain); the Numba kernels (tinyphi3/backends/numba/flash.py) equal it.
"""

import numbers
from typing import NamedTuple

import numpy as np

from tinyphi3 import backends
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.attention import causal_mask
from tinyphi3.nn.autograd import differentiable
from tinyphi3.nn.blocksparse_layout import check_layout, positive_int
from tinyphi3.nn.layers import compute_dtype

TILE_Q, TILE_K = 64, 64                                       # default tile sizes Bq, Bk


class FlashMask(NamedTuple):
    """Which keys each query sees, by structure (checked by `flash_mask`)."""
    query_start: int                    # position of query 0 in the key sequence
    key_valid: np.ndarray               # bool [B, S], False at padding
    window: int | None                  # sliding window, or None
    layout: np.ndarray | None           # bool [H, NB, NB], or None
    block_size: int | None              # tokens per layout block


def flash_mask(q, k, v, *, query_start=0, key_valid=None, sliding_window=None, layout=None,
               block_size=None):
    """Check the shapes and the mask's structure; return the structure as a FlashMask."""
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] \
            or q.shape[3] != k.shape[3]:
        raise InvalidInputError(f"need q [B, H, T, hd] and k, v [B, KV, S, hd], got q {q.shape}, "
                                f"k {k.shape}, v {v.shape}")
    B, H, T, _ = q.shape
    KV, S = k.shape[1], k.shape[2]
    if KV < 1 or H % KV:
        raise InvalidInputError(f"q has {H} heads, k and v {KV}: H must be a multiple of KV")
    if isinstance(query_start, bool) or not isinstance(query_start, numbers.Integral) \
            or query_start < 0 or query_start + T > S:
        raise InvalidInputError(f"query_start must be an integer in 0 .. S - T = {S - T}, "
                                f"got {query_start!r}")
    if key_valid is None:
        key_valid = np.ones((B, S), dtype=bool)
    key_valid = np.asarray(key_valid)
    if key_valid.dtype != bool or key_valid.shape != (B, S):
        raise InvalidInputError(f"key_valid must be bool [B, S] = [{B}, {S}], got "
                                f"{key_valid.dtype} {key_valid.shape}")
    if sliding_window is not None:
        sliding_window = positive_int("sliding_window", sliding_window)
    if (layout is None) != (block_size is None):
        raise InvalidInputError("a block-sparse layout needs its block_size, and the other way")
    if layout is not None:
        layout = check_layout(layout)
        block_size = positive_int("block_size", block_size)
        if layout.shape[0] != H:
            raise InvalidInputError(f"layout has {layout.shape[0]} heads, q has {H}")
        if layout.shape[1] * block_size < query_start + T:
            raise InvalidInputError(f"layout has {layout.shape[1]} blocks of {block_size}: too "
                                    f"few for positions up to {query_start + T - 1}")
    return FlashMask(int(query_start), key_valid, sliding_window, layout, block_size)


def dense_mask(mask, H, T, S):
    """The same mask as a dense array, bool [B, H, T, S] (for `attention` and for tests)."""
    positions = mask.query_start + np.arange(T)               # [T]
    dense = causal_mask(positions, mask.key_valid, mask.window)   # -> [B, 1, T, S]
    if mask.layout is not None:
        keys = np.minimum(np.arange(S), positions[-1])        # past the last query: hidden anyway
        bs = mask.block_size
        active = mask.layout[:, positions[:, None] // bs, keys[None, :] // bs]   # -> [H, T, S]
        dense = dense & active[None]                          # -> [B, H, T, S]
    return np.broadcast_to(dense, (dense.shape[0], H, T, S))


def key_tiles(mask, b, h, first, last, S, tile_k):
    """The key tiles (j0, j1) that queries at positions first..last may see, in order.

    Causality ends the walk at key `last`, the window starts it at first - window + 1; a tile
    whose layout blocks are all inactive, or whose keys are all padding, is skipped."""
    start = 0 if mask.window is None else max(0, first - mask.window + 1)
    stop = min(S, last + 1)
    for j0 in range(start - start % tile_k, stop, tile_k):
        j1 = min(j0 + tile_k, stop)
        if mask.layout is not None:
            bs = mask.block_size
            if not mask.layout[h, first // bs:last // bs + 1, j0 // bs:(j1 - 1) // bs + 1].any():
                continue                                      # inactive blocks only
        if not mask.key_valid[b, j0:j1].any():
            continue                                          # padding only
        yield j0, j1


def visible(mask, b, h, positions, j0, j1):
    """Which keys j0..j1-1 each query (at `positions` [Bq]) sees: bool [Bq, Bk]."""
    p = positions[:, None]                                    # [Bq, 1]
    j = np.arange(j0, j1)[None, :]                            # [1, Bk]
    sees = (j <= p) & mask.key_valid[b, j0:j1][None, :]       # causal, not padding
    if mask.window is not None:
        sees &= p - j < mask.window
    if mask.layout is not None:
        bs = mask.block_size
        sees &= mask.layout[h, p // bs, np.minimum(j, p) // bs]   # j > p is hidden already
    return sees


def tiled_attention_forward(q, k, v, scale, mask, tile_q=TILE_Q, tile_k=TILE_K):
    """The forward pass, tile by tile: (O [B, H, T, hd], L [B, H, T]), L = -inf for a row
    that sees no key (its O is 0). q: [B, H, T, hd]; k, v: [B, KV, S, hd]; mask: a FlashMask."""
    kernel = backends.kernel("flash_attention_forward", q, k, v)
    if kernel is not None:
        return kernel(q, k, v, scale, mask, tile_q, tile_k)
    B, H, T, hd = q.shape
    S, g = k.shape[2], H // k.shape[1]
    dtype = compute_dtype(q)
    out = np.zeros((B, H, T, hd), dtype)
    lse = np.full((B, H, T), -np.inf, dtype)
    for b in range(B):
        for h in range(H):
            for t0 in range(0, T, tile_q):
                t1 = min(t0 + tile_q, T)
                positions = mask.query_start + np.arange(t0, t1)   # [Bq]
                qi = q[b, h, t0:t1].astype(dtype)             # [Bq, hd]
                m = np.full(t1 - t0, -np.inf, dtype)          # running max of each row
                l = np.zeros(t1 - t0, dtype)                  # running sum of e^(s - m)
                acc = np.zeros((t1 - t0, hd), dtype)          # running sum of e^(s - m) v
                for j0, j1 in key_tiles(mask, b, h, positions[0], positions[-1], S, tile_k):
                    kj, vj = k[b, h // g, j0:j1], v[b, h // g, j0:j1]   # [Bk, hd]
                    s = qi @ kj.T                             # [Bq, hd] @ [hd, Bk] -> [Bq, Bk]
                    s *= scale
                    s[~visible(mask, b, h, positions, j0, j1)] = -np.inf
                    m_new = np.maximum(m, s.max(axis=1))      # [Bq]; -inf: no key seen yet
                    shift = np.where(m_new == -np.inf, 0, m_new)   # keeps unseen rows at 0
                    p = np.exp(s - shift[:, None])            # [Bq, Bk], 0 where hidden
                    rescale = np.exp(m - shift)               # [Bq], 0 on a row's first keys
                    l = l * rescale + p.sum(axis=1)
                    acc = acc * rescale[:, None] + p @ vj     # [Bq, Bk] @ [Bk, hd]
                    m = m_new
                seen = l > 0                                  # [Bq]: rows that saw a key
                l = np.where(seen, l, 1)                      # the others: acc = 0, so O = 0
                out[b, h, t0:t1] = acc / l[:, None]
                lse[b, h, t0:t1] = np.where(seen, m + np.log(l), -np.inf)
    return out, lse


def tiled_attention_backward(do, q, k, v, out, lse, scale, mask, tile_q=TILE_Q, tile_k=TILE_K):
    """The backward pass, recomputing the weights tile by tile: (dq, dk, dv).

    do, out: [B, H, T, hd]; lse: [B, H, T] (the forward's L); dk, dv sum over each group."""
    kernel = backends.kernel("flash_attention_backward", do, q, k, v, out, lse)
    if kernel is not None:
        return kernel(do, q, k, v, out, lse, scale, mask, tile_q, tile_k)
    B, H, T, hd = q.shape
    S, g = k.shape[2], H // k.shape[1]
    dtype = compute_dtype(q)
    delta = (do * out).sum(axis=-1, dtype=dtype)              # D: [B, H, T]
    dq = np.zeros((B, H, T, hd), dtype)
    dk, dv = np.zeros(k.shape, dtype), np.zeros(v.shape, dtype)   # [B, KV, S, hd]
    for b in range(B):
        for h in range(H):
            for t0 in range(0, T, tile_q):
                t1 = min(t0 + tile_q, T)
                positions = mask.query_start + np.arange(t0, t1)   # [Bq]
                qi, doi = q[b, h, t0:t1].astype(dtype), do[b, h, t0:t1].astype(dtype)  # [Bq, hd]
                li, di = lse[b, h, t0:t1, None], delta[b, h, t0:t1, None]   # [Bq, 1]
                for j0, j1 in key_tiles(mask, b, h, positions[0], positions[-1], S, tile_k):
                    kj, vj = k[b, h // g, j0:j1], v[b, h // g, j0:j1]   # [Bk, hd]
                    s = qi @ kj.T                             # [Bq, Bk]
                    s *= scale
                    sees = visible(mask, b, h, positions, j0, j1)
                    p = np.exp(np.where(sees, s - li, -np.inf))   # the weights; 0 where hidden
                    dv[b, h // g, j0:j1] += p.T @ doi         # [Bk, Bq] @ [Bq, hd]
                    dp = doi @ vj.T                           # [Bq, Bk]
                    ds = p * (dp - di)                        # [Bq, Bk]
                    dq[b, h, t0:t1] += (ds @ kj) * scale      # [Bq, hd]
                    dk[b, h // g, j0:j1] += (ds.T @ qi) * scale   # [Bk, hd]
    return dq, dk, dv


def flash_attention_backward(g, saved, q, k, v, scale, **structure):
    """The backward rule of flash_attention: O and L come saved from the forward pass, the
    weights are recomputed (tiled_attention_backward)."""
    out, lse, mask, tiles = saved
    q, k, v, g = (x.astype(out.dtype, copy=False) for x in (q, k, v, g))
    return (*tiled_attention_backward(g, q, k, v, out, lse, scale, mask, *tiles), None)


@differentiable(flash_attention_backward, saves=True)
def flash_attention(q, k, v, scale, *, query_start=0, key_valid=None, sliding_window=None,
                    layout=None, block_size=None, tile_q=TILE_Q, tile_k=TILE_K):
    """softmax(q k^T * scale, masked) v, tiled: equal to attention(q, k, v, dense mask, scale).

    q: [B, H, T, hd]; k, v: [B, KV, S, hd] -> [B, H, T, hd], in float32 (float64 for float64
    inputs). Query t sits at position query_start + t (0 <= query_start <= S - T) and sees key j
    when j <= its position, it is within `sliding_window` (if set), key_valid[b, j] (bool [B, S],
    if given), and layout[h, position // block_size, j // block_size] (if a block-sparse layout
    [H, NB, NB] is given; NB * block_size must cover every query position). Saves O and the
    log-sum-exp L for the backward pass, never the weights. tile_q, tile_k: the tile sizes.
    """
    mask = flash_mask(q, k, v, query_start=query_start, key_valid=key_valid,
                      sliding_window=sliding_window, layout=layout, block_size=block_size)
    tile_q, tile_k = positive_int("tile_q", tile_q), positive_int("tile_k", tile_k)
    dtype = compute_dtype(q)
    q, k, v = (x.astype(dtype, copy=False) for x in (q, k, v))
    out, lse = tiled_attention_forward(q, k, v, scale, mask, tile_q, tile_k)
    return out, (out, lse, mask, (tile_q, tile_k))
