"""Rotary position embeddings (RoPE) and Phi-3-mini-128K's LongRoPE rescaling.

RoPE (Su et al. 2021) rotates each pair of query/key dimensions by an angle proportional to the
token's position, so that q . k depends only on the distance between the two tokens. Phi-3 uses
the rotate-half pairing: dimension i is paired with dimension i + rd/2.

LongRoPE (Ding et al. 2024; Phi-3 report §2) stretches each frequency by its own factor, one set
of factors for short sequences and one for long ones, and multiplies cos and sin by a magnitude
factor sqrt(1 + ln s / ln L0) so that attention entropy stays in range when the context grows.
"""

import numpy as np

from tinyphi3.nn import gradients as grad
from tinyphi3 import backends
from tinyphi3.nn.autograd import differentiable


def rope_inv_freq(rotary_dim, theta, factors=None):
    """inv_freq[i] = 1 / (factor[i] * theta ** (2i / rd)),  i = 0 .. rd/2 - 1.

    Without factors this is plain RoPE. Computed in float32, as the reference implementation does.
    """
    exponent = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)  # [rd/2]
    base = np.float32(theta) ** exponent
    if factors is not None:
        base = np.asarray(factors, dtype=np.float32) * base
    return (np.float32(1.0) / base).astype(np.float32)


def uses_long_factors(config, seq_len):
    """LongRoPE picks `long_factor` when the whole sequence (cache included) is longer than
    `original_max_position_embeddings`, and `short_factor` otherwise."""
    return config.rope_scaling is not None and seq_len > config.original_max_position_embeddings


def rope_frequencies(config, seq_len):
    """(inv_freq [rd/2], magnitude) for a sequence of `seq_len` tokens under `config`.

    Plain RoPE: magnitude 1. LongRoPE: the factor set chosen by `uses_long_factors`, and the
    config's magnitude for that set (Phi3Config.longrope_magnitude): for phi-3-mini-128K
    sqrt(1 + ln s / ln L0) with s = L / L0 at all lengths, as the reference; phi-3-small-128K
    leaves the short set at 1.
    """
    if config.rope_scaling is None:
        return rope_inv_freq(config.rotary_dim, config.rope_theta), 1.0
    long = uses_long_factors(config, seq_len)
    factors = config.rope_scaling["long_factor" if long else "short_factor"]
    return (rope_inv_freq(config.rotary_dim, config.rope_theta, factors),
            config.longrope_magnitude(long))


def rope_cos_sin(positions, inv_freq, magnitude=1.0):
    """cos and sin tables for integer positions: [B, T] -> 2 x [B, T, rd].

    angle[b, t, i] = positions[b, t] * inv_freq[i], duplicated as cat(angle, angle) so that
    dimension i and i + rd/2 share an angle (rotate-half layout).
    """
    # [B, T, 1] x [rd/2] -> [B, T, rd/2]
    angles = positions[..., None].astype(np.float32) * inv_freq
    angles = np.concatenate([angles, angles], axis=-1)                # -> [B, T, rd]
    magnitude = np.float32(magnitude)
    return np.cos(angles) * magnitude, np.sin(angles) * magnitude


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] on the last axis: a 90-degree turn of each (i, i + d/2) pair."""
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([-x2, x1], axis=-1)


@differentiable(grad.rope_backward)
def apply_rope(x, cos, sin):
    """Rotate the first rd dimensions of each head: x' = x * cos + rotate_half(x) * sin.

    x: [B, H, T, hd]; cos, sin: [B, T, rd]. Dimensions past rd (partial rotary) pass unchanged.
    """
    kernel = backends.kernel("apply_rope", x, cos, sin)
    if kernel is not None:
        return kernel(x, cos, sin)
    rd = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]                  # [B, T, rd] -> [B, 1, T, rd]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    rotated = x_rot * cos + rotate_half(x_rot) * sin       # [B, H, T, rd]
    if x_pass.shape[-1] == 0:
        return rotated
    return np.concatenate([rotated, x_pass], axis=-1)      # -> [B, H, T, hd]
