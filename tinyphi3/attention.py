"""Causal self-attention with grouped-query heads, a sliding window and padding masks.

    Attention(Q, K, V) = softmax(Q K^T * scale + mask) V        (Vaswani et al. 2017)

Grouped-query attention (Ainslie et al. 2023): H query heads share KV key/value heads, g = H / KV
queries per KV head; query head h reads KV head h // g. With KV = H it is multi-head attention.
"""

import numpy as np

from . import gradients as grad
from . import kernels
from .autograd import differentiable
from .cache import QuantizedKV
from .layers import compute_dtype


def causal_mask(query_index, key_valid, sliding_window=None):
    """Which keys each query may attend to: bool [B, 1, T, S].

    query_index: [T] index of each query in the key sequence (past keys come first);
    key_valid: bool [B, S], False at padding. A query at index i sees key j when
    j <= i (causal), i - j < sliding_window (when a window is set), and key j is not padding.
    """
    S = key_valid.shape[-1]
    q = query_index[:, None]                                  # [T, 1]
    k = np.arange(S)[None, :]                                 # [1, S]
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
    if isinstance(k, QuantizedKV):                            # an 8-bit KV cache (4-bit models)
        if T == 1 and mask.shape[1] == 1 and kernels.fast(q):
            return kernels.q4().attention_decode(q, k, v, mask[:, 0, 0], scale), None
        k, v = k.dequantize(), v.dequantize()                # the reference reads float32
    q = q.reshape(B, KV, g, T, hd)                            # [B, H, T, hd] -> [B, KV, g, T, hd]
    scores = q @ k[:, :, None].swapaxes(-1, -2)               # -> [B, KV, g, T, S]
    scores = scores.astype(compute_dtype(scores), copy=False)
    per_head = mask.shape[1] != 1
    if kernels.fast(scores) and not per_head:
        weights = kernels.cpu().masked_softmax_(scores, mask, scale)   # the lines below, fused
    else:
        mask = mask.reshape(B, KV, g, T, -1) if per_head else mask[:, :, None]  # [B, *, *, T, S]
        scores *= scale
        np.copyto(scores, np.finfo(np.float32).min, where=~mask)   # masked: -inf-like
        weights = softmax_(scores)                            # rows sum to 1
        dead = ~mask.any(axis=-1, keepdims=True)              # [B, *, *, T, 1]: rows with no key
        if dead.any():
            weights *= ~dead                                  # give them zero weights
    out = weights @ v[:, :, None]                             # [B, KV, g, T, S] @ [B, KV, 1, S, hd]
    return out.reshape(B, H, T, v.shape[-1]), weights         # -> [B, H, T, hd]


def softmax_(x):
    """softmax over the last axis, computed in place in x (which it returns)."""
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x
