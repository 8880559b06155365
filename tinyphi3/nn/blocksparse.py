"""Block-sparse causal attention, the pattern of phi-3-small's sparse layers.

The layout (tinyphi3/nn/blocksparse_layout.py) says which key blocks each head's query blocks
attend to; inside an active block the usual token causality holds (query position >= key
position). `blocksparse_mask` turns a layout into a mask over tokens, `blocksparse_padded_mask`
does the same for left-padded rows, and `blocksparse_attention` is the dense NumPy reference
that the Numba kernels (tinyphi3/backends/numba/blocksparse.py) equal.

Shape letters as in tinyphi3/config; NB is the number of blocks.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.arrays import like
from tinyphi3.nn.attention import masked_softmax_
from tinyphi3.nn.blocksparse_layout import (blocksparse_layout, check_layout, density,
                                            kv_bytes_per_token, positive_int, query_start)

__all__ = ["blocksparse_attention", "blocksparse_layout", "blocksparse_mask",
           "blocksparse_padded_mask", "density", "kv_bytes_per_token", "mask_at_positions"]


def blocksparse_mask(layout, q_len, k_len, block_size, past=None):
    """Which keys each query may attend to: bool [H, T, S].

    Query t sits at position p = past + t (past defaults to S - T: the queries are the last T
    of the S positions); it sees key s when its block is active, layout[h, p // B, s // B], and
    s <= p. Lengths need not be multiples of the block size; the layout must have a block for
    every key: NB * block_size >= S.
    """
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    past = query_start(q_len, k_len, past)
    if layout.shape[1] * block_size < k_len:
        raise InvalidInputError(f"layout has {layout.shape[1]} blocks of {block_size}: too few "
                                f"for k_len = {k_len}")
    return mask_at_positions(layout, block_size, past + np.arange(q_len), np.arange(k_len))


def mask_at_positions(layout, block_size, query_pos, key_pos):
    """The block-sparse mask for queries and keys at the given positions: bool [H, ..., T, S].

    query_pos [..., T], key_pos [..., S] (leading axes broadcast, e.g. one row per sequence).
    Query at position p sees key at position r when layout[h, p // B, r // B] and r <= p. A
    negative position (padding before a row's first token) looks up block 0 and sees nothing
    causal of its own; callers mask padding keys themselves.
    """
    qp, kp = query_pos[..., :, None], key_pos[..., None, :]   # [..., T, 1], [..., 1, S]
    active = layout[:, np.maximum(qp, 0) // block_size,       # [H, NB, NB] -> [H, ..., T, S]
                    np.maximum(kp, 0) // block_size]
    return active & (kp <= qp)                                # causal inside the blocks


def blocksparse_padded_mask(layout, block_size, key_valid, num_queries):
    """blocksparse_mask when rows may be left-padded: bool [B, H, T, S].

    Blocks count each row's own tokens: a token's rank r (its index among the row's real tokens,
    padding skipped) is its position. The queries are the last T of the S keys; padding keys are
    seen by no query. Without padding, rank = index and this is blocksparse_mask for every row.
    """
    rank = np.cumsum(key_valid, axis=1) - 1                   # [B, S]; -1 before the first token
    mask = mask_at_positions(layout, block_size, rank[:, -num_queries:], rank)   # [H, B, T, S]
    return mask.transpose(1, 0, 2, 3) & key_valid[:, None, None, :]   # -> [B, H, T, S]


def blocksparse_attention(q, k, v, layout, block_size, scale, past=None):
    """softmax(q k^T * scale, masked by blocksparse_mask) v, the dense NumPy reference.

    q: [B, H, T, hd]; k, v: [B, KV, S, hd]; layout: bool [H, NB, NB] -> [B, H, T, hd].
    Query head h reads KV head h // g (g = H / KV). A query that sees no key (possible only
    with a layout whose diagonal block is off) gets a zero output.

    On a backend with block-sparse kernels (numba) the kernels run instead: they visit only the
    active blocks, prefill for T queries, decode for one new token after `past` cached ones.
    """
    B, H, T, hd = q.shape
    KV, S = k.shape[1], k.shape[2]
    start = query_start(T, S, past)
    decode = T == 1 and start > 0
    kernel = backends.kernel("blocksparse_decode" if decode else "blocksparse_prefill", q, k, v)
    if kernel is not None:
        return kernel(q, k, v, layout, block_size, scale, start + 1 if decode else start)
    if layout.shape[0] != H or H % KV:
        raise InvalidInputError(f"layout has {layout.shape[0]} heads, q {H} and k {KV}: need "
                                f"layout heads == H and H a multiple of KV")
    g = H // KV
    mask = like(blocksparse_mask(layout, T, S, block_size, past), q)  # [H, T, S], where q is
    mask = mask.reshape(KV, g, T, S)                          # -> [KV, g, T, S]
    q = q.reshape(B, KV, g, T, hd)                            # [B, H, T, hd] -> [B, KV, g, T, hd]
    scores = q @ k[:, :, None].swapaxes(-1, -2)               # -> [B, KV, g, T, S]
    scores = scores.astype(np.result_type(scores, np.float32))
    weights = masked_softmax_(scores, mask, scale)            # rows with no key: zero weights
    out = weights @ v[:, :, None]                             # [B, KV, g, T, S] @ [B, KV, 1, S, hd]
    return out.reshape(B, H, T, hd).astype(q.dtype, copy=False)   # -> [B, H, T, hd]
