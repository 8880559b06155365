"""Block-sparse layouts: which key blocks each head's query blocks attend to, and what that costs.

The sequence is cut into blocks of `block_size` tokens. A query in block q attends to key block
k of head h when (Phi-3 report §2, Figure 2; the published kernel's layout):

    active[h, q, k] = q >= k  and  (q - k < local_blocks  or  vertical[h, k])
    vertical[h, k]  = (k + h * head_sliding_step + 1) % vert_stride == 0
    head_sliding_step = max(1, int(vert_stride / num_heads))

so each head sees the last `local_blocks` blocks and one block in every `vert_stride` of the
rest, each head a different one. phi-3-small: block 64, 16 local blocks, stride 8, 32 heads.
The masks and the attention that use a layout are in tinyphi3/nn/blocksparse.py; the Numba
kernels (tinyphi3/backends/numba/blocksparse.py) check their inputs with the functions here.

Shape letters as in tinyphi3/config; NB is the number of blocks.
"""

import numbers

import numpy as np

from tinyphi3.errors import InvalidInputError


def positive_int(name, value):
    """value as an int, or InvalidInputError naming `name` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def blocksparse_layout(num_heads, num_blocks, local_blocks, vert_stride, homo_head=False):
    """Which key blocks each head's query blocks attend to: bool [H, NB, NB].

        active[h, q, k] = q >= k and (q - k < local_blocks or (k + h*step + 1) % vert_stride == 0)

    with step = max(1, int(vert_stride / num_heads)), and the term h*step dropped when
    `homo_head` (every head the same pattern).

    Coverage ("all tokens are attended to on different heads", Phi-3 report §2): for every query
    block the union over heads of its active blocks is every earlier block, at any length, exactly
    when the offsets h*step cover every residue modulo vert_stride, that is when
    vert_stride == 1 or (not homo_head and num_heads >= vert_stride). With fewer heads than the
    stride (4 heads, stride 8: step 2, offsets 0, 2, 4, 6) the remote blocks of the missing
    residues are seen by no head once the sequence is longer than local_blocks + vert_stride.
    """
    num_heads = positive_int("num_heads", num_heads)
    num_blocks = positive_int("num_blocks", num_blocks)
    local_blocks = positive_int("local_blocks", local_blocks)
    vert_stride = positive_int("vert_stride", vert_stride)
    if not isinstance(homo_head, (bool, np.bool_)):
        raise InvalidInputError(f"homo_head must be True or False, got {homo_head!r}")
    step = 0 if homo_head else max(1, int(vert_stride / num_heads))
    h = np.arange(num_heads)[:, None, None]                   # [H, 1, 1]
    q = np.arange(num_blocks)[None, :, None]                  # [1, NB, 1]
    k = np.arange(num_blocks)[None, None, :]                  # [1, 1, NB]
    vertical = (k + h * step + 1) % vert_stride == 0          # [H, 1, NB]
    return (q >= k) & ((q - k < local_blocks) | vertical)     # -> [H, NB, NB]


def check_layout(layout):
    layout = np.asarray(layout)
    if layout.dtype != bool or layout.ndim != 3 or layout.shape[1] != layout.shape[2]:
        raise InvalidInputError(f"layout must be a bool array [H, NB, NB], got {layout.dtype} "
                                f"{layout.shape}")
    return layout


def check_heads(H, KV, layout, blocks_needed):
    """A kernel's check: the layout has one pattern per query head, H is a multiple of KV, and
    there are layout blocks for `blocks_needed` blocks of keys."""
    if layout.shape[0] != H or KV < 1 or H % KV:
        raise InvalidInputError(f"layout has {layout.shape[0]} heads, q {H} and k {KV}: need "
                                f"layout heads == H and H a multiple of KV")
    if layout.shape[1] < blocks_needed:
        raise InvalidInputError(f"layout has {layout.shape[1]} blocks, {blocks_needed} needed")


def decode_lengths(length, batch, capacity):
    """A decode kernel's lengths: an int or [B] ints, 1 <= length <= capacity, as int64 [B]."""
    lengths = np.broadcast_to(np.asarray(length, dtype=np.int64), (batch,)).copy()   # -> [B]
    if lengths.min() < 1 or lengths.max() > capacity:
        raise InvalidInputError(f"length must lie in 1 .. {capacity}, got {length!r}")
    return lengths


def query_start(q_len, k_len, past):
    """Position of the first query: `past`, or k_len - q_len (the queries are the last q_len of
    the k_len positions) when past is None. Checked: the queries must lie among the keys."""
    q_len = positive_int("q_len", q_len)
    k_len = positive_int("k_len", k_len)
    if past is None:
        past = k_len - q_len
    if isinstance(past, bool) or not isinstance(past, numbers.Integral) or past < 0:
        raise InvalidInputError(f"past must be a non-negative integer, got {past!r}")
    if past + q_len > k_len:
        raise InvalidInputError(f"past + q_len = {past + q_len} queries do not fit in "
                                f"k_len = {k_len} keys")
    return int(past)


def density(layout):
    """Fraction of the causal blocks (q >= k, over all heads) that are active."""
    layout = check_layout(layout)
    H, NB, _ = layout.shape
    causal = np.tril(np.ones((NB, NB), dtype=bool))           # [NB, NB]
    return float((layout & causal).sum() / (H * causal.sum()))


def kv_bytes_per_token(layout, length, block_size, num_kv_heads, head_dim, bytes_per_value=2):
    """(sparse, dense): bytes of keys and values read from one layer's cache for a new token.

    The new token sits at position length - 1. Dense reads every cached token of every KV head:
    KV * length * 2 * hd * bytes. Sparse reads, for each KV head, the blocks that at least one of
    its g query heads has active (the union over the group), each block clipped to `length`.
    """
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    length = positive_int("length", length)
    H, NB, _ = layout.shape
    if H % num_kv_heads or NB * block_size < length:
        raise InvalidInputError(f"layout [{H}, {NB}, {NB}] does not fit {num_kv_heads} KV heads "
                                f"and length {length}")
    per_token = 2 * head_dim * bytes_per_value                # one key and one value
    qb = (length - 1) // block_size
    row = layout[:, qb, :qb + 1].reshape(num_kv_heads, -1, qb + 1)   # [KV, g, qb + 1]
    used = row.any(axis=1)                                    # -> [KV, qb + 1]
    tokens = np.minimum(block_size, length - block_size * np.arange(qb + 1))   # [qb + 1]
    sparse = int((used * tokens).sum()) * per_token
    return sparse, num_kv_heads * length * per_token
