"""Longer contexts without retraining: position interpolation, NTK-aware scaling, YaRN and
LongRoPE, every one written as Phi-3-mini-128K's LongRoPE layout.

A model trained at context L0 meets, at a longer length L = s * L0, rotation angles p * inv_freq[i]
it never saw. Each method stretches the angles, frequency by frequency, by a factor:

    inv_freq[i] = 1 / (factor[i] * theta ** (2i / d)),   i = 0 .. d/2 - 1  (d: rotary dimension)

and multiplies cos and sin by an attention factor (a "magnitude"). That is exactly the published
Phi-3 128K config.json:

    rope_scaling = {"type": "longrope", "short_factor": [1, ...], "long_factor": factor,
                    "attention_factor": a}
    original_max_position_embeddings = L0,  max_position_embeddings = L

so one code path (tinyphi3.nn.rope.rope_frequencies) runs all of them, and every extended
checkpoint loads in transformers' Phi3 too. `short_factor` is all ones: sequences of at most L0
tokens keep the angles the model was trained on (the layout chooses per sequence).

    method      factor[i]                                   attention factor
    pi          s                                           1
    ntk         s ** (2i / (d - 2))    (theta' = theta s^(d/(d-2)))   1
    yarn        1 / (r_i / s + 1 - r_i)   (r_i: YaRN's ramp)  0.1 ln s + 1
    longrope    searched (tinyphi3.train.longrope_search);   sqrt(1 + ln s / ln L0)
                its starting point is pi's factors

Every factor vector here is non-decreasing in i and lies in [1, s]: the slow frequencies (large i,
long wavelengths) are stretched at least as much as the fast ones. Shapes: the vectors are [d/2].
"""

import math

import numpy as np

from tinyphi3.errors import ConfigError

METHODS = ("pi", "ntk", "yarn", "longrope")


def pi_factors(rotary_dim, s):
    """Position interpolation (Chen et al. 2023): factor[i] = s for every i, so the angle at
    position p is plain RoPE's angle at p / s: positions up to s L0 are squeezed into [0, L0)."""
    return [float(s)] * (rotary_dim // 2)


def ntk_factors(rotary_dim, s):
    """NTK-aware scaling (bloc97, 2023): a larger base theta' = theta s^(d / (d - 2)), i.e.
    factor[i] = s ** (2i / (d - 2)): the fastest frequency (i = 0) unchanged, the slowest
    (i = d/2 - 1) interpolated by exactly s."""
    if rotary_dim < 4:
        raise ValueError(f"NTK-aware scaling needs a rotary dimension of at least 4, "
                         f"got {rotary_dim}")
    i = np.arange(rotary_dim // 2, dtype=np.float64)                       # [d/2]
    return [float(f) for f in float(s) ** (2.0 * i / (rotary_dim - 2))]


def yarn_ramp(rotary_dim, theta, original_length, beta_fast=32.0, beta_slow=1.0):
    """YaRN's ramp r_i in [0, 1] (Peng et al. 2023, "NTK-by-parts"): 0 for the frequencies that
    turn more than beta_fast times within L0 (kept: extrapolated), 1 for those turning fewer than
    beta_slow times (interpolated), linear in i between.

    Frequency i turns L0 / (2 pi theta^(2i/d)) times in L0 tokens, so it turns r times at
        i(r) = d ln(L0 / (2 pi r)) / (2 ln theta);
    the ramp runs from floor(i(beta_fast)) to ceil(i(beta_slow)), as transformers'
    `_compute_yarn_parameters` does by default (truncate=True)."""
    def index_turning(rotations):
        return rotary_dim * math.log(original_length / (rotations * 2 * math.pi)) / (
            2 * math.log(theta))

    low = max(math.floor(index_turning(beta_fast)), 0)
    high = min(math.ceil(index_turning(beta_slow)), rotary_dim - 1)
    if low == high:
        high += 0.001                                       # a step, not a division by zero
    i = np.arange(rotary_dim // 2, dtype=np.float64)        # [d/2]
    return np.clip((i - low) / (high - low), 0.0, 1.0)


def yarn_factors(rotary_dim, theta, original_length, s, beta_fast=32.0, beta_slow=1.0):
    """YaRN's frequencies as factors. YaRN blends the interpolated and the original inverse
    frequency by the ramp r_i (yarn_ramp):
        inv_freq[i] = r_i inv_freq[i] / s + (1 - r_i) inv_freq[i],
    which is inv_freq[i] / factor[i] with factor[i] = 1 / (r_i / s + 1 - r_i)."""
    ramp = yarn_ramp(rotary_dim, theta, original_length, beta_fast, beta_slow)   # [d/2]
    return [float(f) for f in 1.0 / (ramp / float(s) + 1.0 - ramp)]


def yarn_attention_factor(s):
    """YaRN's magnitude ("temperature"): sqrt(1/t) = 0.1 ln s + 1 (Peng et al. 2023, §3.4)."""
    return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0


def longrope_attention_factor(s, original_length):
    """LongRoPE magnitude scaling: sqrt(1 + ln s / ln L0) (Phi-3 report §2; LongRoPE paper);
    1 when s <= 1. The same value Phi3Config.longrope_attention_factor derives from the lengths."""
    return 1.0 if s <= 1 else math.sqrt(1.0 + math.log(s) / math.log(original_length))


def method_factors(method, rotary_dim, theta, original_length, s):
    """(long factors [d/2], attention factor) of a method, `longrope` meaning its starting point:
    pi's factors with LongRoPE's magnitude."""
    if method == "pi":
        return pi_factors(rotary_dim, s), 1.0
    if method == "ntk":
        return ntk_factors(rotary_dim, s), 1.0
    if method == "yarn":
        return yarn_factors(rotary_dim, theta, original_length, s), yarn_attention_factor(s)
    if method == "longrope":
        return pi_factors(rotary_dim, s), longrope_attention_factor(s, original_length)
    raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def extend_config(config, method, target_length, long_factor=None):
    """A copy of plain-RoPE `config` that runs at `target_length` tokens by `method`, in the
    Phi-3 128K layout (see the module docstring): original_max_position_embeddings = L0 (the
    config's max_position_embeddings), max_position_embeddings = target_length, s = L / L0.

    method "longrope" leaves `attention_factor` out of rope_scaling, as the published 128K
    config does: readers derive sqrt(1 + ln s / ln L0) from the two lengths. `long_factor`
    (LongRoPE only) replaces pi's factors, its starting point, with searched ones.
    Raises ConfigError for a config that is already extended or a length that is not longer.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown context extension method {method!r}: choose one of "
                          f"{', '.join(METHODS)}")
    if config.rope_scaling is not None:
        raise ConfigError(f"the model already runs at {config.max_position_embeddings} tokens "
                          f"with LongRoPE (trained at {config.original_max_position_embeddings}); "
                          f"extend the plain-RoPE checkpoint it came from")
    L0 = config.max_position_embeddings
    if not isinstance(target_length, int) or target_length <= L0:
        raise ConfigError(f"target length {target_length} must be longer than the context the "
                          f"model was trained at, {L0} tokens")
    if long_factor is not None and method != "longrope":
        raise ValueError(f"long_factor is LongRoPE's searched factors, not {method!r}'s")
    s = target_length / L0
    factors, attention = method_factors(method, config.rotary_dim, config.rope_theta, L0, s)
    if long_factor is not None:
        factors = [float(f) for f in long_factor]
    short = [1.0] * (config.rotary_dim // 2)
    scaling = {"type": "longrope", "short_factor": short, "long_factor": factors}
    if method != "longrope":
        scaling["attention_factor"] = attention
    return config.replace(max_position_embeddings=target_length,
                          original_max_position_embeddings=L0, rope_scaling=scaling)
