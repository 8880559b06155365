"""Pieces of phi-3-small's gated activation that its forward pass (tinyphi3.nn.layers.gegelu) and
its backward rule (tinyphi3.nn.gradients.gegelu_backward) both compute: plain array functions,
nothing recorded."""

import numpy as np


def quick_gelu(x):
    """GELU's sigmoid approximation: x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016, §2)."""
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-1.702 * x))


def gegelu_inputs(x, limit):
    """Split [..., 2I] into the gelu input a (even channels) and the linear input b (odd
    channels), each [..., I], clamped: a <= limit, -limit <= b <= limit; infinities pass."""
    a, b = x[..., 0::2], x[..., 1::2]                 # interleaved, not halves
    if limit is None:
        return a, b
    a = np.where(np.isinf(a), a, np.minimum(a, limit))
    b = np.where(np.isinf(b), b, np.clip(b, -limit, limit))
    return a, b
