"""Causal self-attention with grouped-query heads, a sliding window and padding masks.

    Attention(Q, K, V) = softmax(Q K^T * scale + mask) V        (Vaswani et al. 2017)

Grouped-query attention (Ainslie et al. 2023): H query heads share KV key/value heads, g = H / KV
queries per KV head; query head h reads KV head h // g. With KV = H it is multi-head attention.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn import gradients as grad
from tinyphi3.nn.arrays import array_module
from tinyphi3.nn.autograd import differentiable
from tinyphi3.nn.layers import compute_dtype


def causal_mask(query_index, key_valid, sliding_window=None):
    """Which keys each query may attend to: bool [B, 1, T, S].

    query_index: [T] index of each query in the key sequence (past keys come first);
    key_valid: bool [B, S], False at padding. A query at index i sees key j when
    j <= i (causal), i - j < sliding_window (when a window is set), and key j is not padding.
    """
    xp = array_module(key_valid)
    S = key_valid.shape[-1]
    q = xp.asarray(query_index)[:, None]                      # [T, 1]
    k = xp.arange(S)[None, :]                                 # [1, S]
    allowed = k <= q                                          # [T, S] causal
    if sliding_window is not None:
        allowed &= (q - k) < sliding_window                   # only the last `window` keys
    return allowed[None, None] & key_valid[:, None, None, :]  # -> [B, 1, T, S]


@differentiable(grad.attention_backward, saves=True)
def attention(q, k, v, mask, scale):
    """softmax(q k^T * scale, masked) v for grouped-query heads.

    q: [B, H, T, hd]; k, v: [B, KV, S, hd]; mask: bool [B, 1, T, S], one for all heads, or
    [B, H, T, S], one per head (phi-3-small's block-sparse pattern) -> [B, H, T, hd].
    Scores and softmax in float32 (float64 for float64 inputs). A query that may see no key (a
    padding row) gets zero weights instead of NaN; its output is never used.
    Returns (output, weights [B, KV, g, T, S]); the weights serve the backward pass.
    """
    B, H, T, hd = q.shape
    KV = k.shape[1]
    g = H // KV
    q = q.reshape(B, KV, g, T, hd)                            # [B, H, T, hd] -> [B, KV, g, T, hd]
    scores = q @ k[:, :, None].swapaxes(-1, -2)               # -> [B, KV, g, T, S]
    scores = scores.astype(compute_dtype(scores), copy=False)
    per_head = mask.shape[1] != 1
    mask = mask.reshape(B, KV, g, T, -1) if per_head else mask[:, :, None]  # [B, *, *, T, S]
    weights = masked_softmax_(scores, mask, scale)            # rows sum to 1, or are all 0
    out = weights @ v[:, :, None]                             # [B, KV, g, T, S] @ [B, KV, 1, S, hd]
    return out.reshape(B, H, T, v.shape[-1]), weights         # -> [B, H, T, hd]


def masked_softmax_(scores, mask, scale):
    """softmax(scores * scale) over the keys `mask` allows, computed in place in `scores`.

    A masked key gets the float32 minimum before the softmax, so its weight is exactly 0; a row
    whose mask allows no key gets zero weights instead of NaN. mask broadcasts against scores.
    Shared by dense, sliding-window and block-sparse attention.
    """
    kernel = backends.kernel("masked_softmax_", scores)
    if kernel is not None and scores.ndim == mask.ndim == 5 and mask.shape[1:3] == (1, 1):
        return kernel(scores, mask[:, 0], scale)             # one mask for all heads, fused
    xp = array_module(scores)
    scores *= scale
    xp.copyto(scores, np.finfo(np.float32).min, where=~mask)    # masked: -inf-like
    weights = softmax_(scores)                                # rows sum to 1
    dead = ~mask.any(axis=-1, keepdims=True)                  # [..., T, 1]: rows with no key
    if dead.any():
        weights *= ~dead                                      # give them zero weights
    return weights


def softmax_(x):
    """softmax over the last axis, computed in place in x (which it returns)."""
    xp = array_module(x)
    x -= x.max(axis=-1, keepdims=True)
    xp.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x
