# %% [markdown]
# # Lesson 3: RoPE and LongRoPE
#
# Attention by itself (lesson 2) has no idea of order: shuffle the keys and values together and
# each query gets the same answer. Phi-3 tells it where each token sits with rotary position
# embeddings (RoPE, Su et al. 2021): before the dot product, every query and key is rotated by
# an angle proportional to its position. phi-3-mini-128K stretches those rotations with
# LongRoPE (Ding et al. 2024; Phi-3 report §2) to read 32 times further than it was pre-trained.
#
# Steps:
#
# 1. rotating pairs of dimensions: the rotate-half form;
# 2. one frequency per pair of dimensions, from fast to very slow;
# 3. why `q . k` then depends only on the distance between the two tokens;
# 4. LongRoPE: a short and a long set of per-frequency factors, chosen by sequence length;
# 5. the magnitude factor `sqrt(1 + ln s / ln L0)`;
# 6. why generation must recompute its KV cache when it crosses the original length.

# %%
import math

import numpy as np

import _plot
from tinyphi3.config import preset
from tinyphi3.inference.generate import next_token_logits
from tinyphi3.nn.layers import softmax
from tinyphi3.models.model import Phi3
from tinyphi3.nn.rope import (apply_rope, rope_cos_sin, rope_frequencies, rope_inv_freq,
                              rotate_half, uses_long_factors)
from tinyphi3.pictures.charts import line_panels

np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Rotating pairs: the rotate-half form
#
# A head vector of `d` numbers is treated as `d/2` points in a plane. Phi-3 pairs dimension `i`
# with dimension `i + d/2` (the "rotate-half" layout of the reference code, not neighbours
# `2i, 2i+1`). Pair `i` is turned by an angle `a_i`:
#
#     [x_i, x_{i+d/2}]  ->  [x_i cos a_i - x_{i+d/2} sin a_i,  x_i sin a_i + x_{i+d/2} cos a_i]
#
# With `rotate_half([x1, x2]) = [-x2, x1]` and the angles duplicated as `cat(a, a)`, all pairs
# turn at once with two element-wise products: `x * cos + rotate_half(x) * sin`.

# %%
d = 8
x = np.arange(1, d + 1, dtype=np.float32)[None, None, None]   # [B=1, H=1, T=1, d]
print("x              :", x.ravel())
print("rotate_half(x) :", rotate_half(x).ravel())
assert np.array_equal(rotate_half(x).ravel(), [-5, -6, -7, -8, 1, 2, 3, 4])

angles = rng.uniform(0, 2 * np.pi, d // 2).astype(np.float32)  # one angle per pair
rotated = x.ravel().copy()
for i, a in enumerate(angles):                                 # a 2x2 rotation per pair (i, i+d/2)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=np.float32)
    rotated[[i, i + d // 2]] = R @ x.ravel()[[i, i + d // 2]]

cos = np.cos(np.concatenate([angles, angles]))[None, None]      # [B=1, T=1, d]
sin = np.sin(np.concatenate([angles, angles]))[None, None]
library = apply_rope(x, cos, sin).ravel()
print("rotated        :", library)
assert np.allclose(library, rotated, atol=1e-5)
assert np.isclose(np.linalg.norm(library), np.linalg.norm(x))   # a rotation keeps the length
for i in range(d // 2):                                         # ... of every pair, in fact
    j = i + d // 2
    assert np.isclose(np.hypot(library[i], library[j]), np.hypot(x.ravel()[i], x.ravel()[j]))

# %% [markdown]
# ## 2. Frequencies, one per pair
#
# At position `m`, pair `i` is turned by `m * inv_freq[i]`, with
#
#     inv_freq[i] = 1 / theta^(2i / d),     theta = 10000, i = 0 .. d/2 - 1.
#
# Pair 0 turns one radian per token; the last pair of phi-3-mini's 96-dimensional heads turns
# about 1/8250 of a radian. The wavelength `2 pi / inv_freq[i]` is how many tokens a pair needs
# for a full turn.

# %%
mini = preset("phi-3-mini-4k")
rd, theta = mini.rotary_dim, mini.rope_theta
by_hand = 1.0 / theta ** (np.arange(0, rd, 2) / rd)                     # [rd/2] = [48]
inv_freq = rope_inv_freq(rd, theta)
assert inv_freq.shape == (48,) and np.allclose(inv_freq, by_hand, rtol=1e-6)
wavelength = 2 * np.pi / inv_freq
for i in (0, 1, 8, 16, 24, 32, 40, 47):
    print(f"pair {i:2d}: inv_freq {inv_freq[i]:.3e}  wavelength {wavelength[i]:10.1f} tokens")
slow = int(np.argmax(wavelength > mini.original_max_position_embeddings))
print(f"pairs {slow}..47 never finish a turn within the 4096 tokens of pre-training")

# %% [markdown]
# ## 3. `q . k` depends only on the distance
#
# Rotating `q` by `m * f` and `k` by `n * f` and taking the dot product is the same as rotating
# `k` alone by `(n - m) * f`: only `n - m` is left. So a query at position 1003 looking at the
# key 2 tokens back sees the same score as a query at position 3 doing the same. Checked with
# the library on phi-3-mini's real frequencies (float32 angles lose a little precision at large
# positions, hence the tolerance):

# %%
def rope_dot(q, k, m, n, config=mini, seq_len=4096):
    """q . k after rotating q to position m and k to position n."""
    inv_freq, magnitude = rope_frequencies(config, seq_len)
    cos_m, sin_m = rope_cos_sin(np.array([[m]]), inv_freq, magnitude)   # [1, 1, rd]
    cos_n, sin_n = rope_cos_sin(np.array([[n]]), inv_freq, magnitude)
    return float((apply_rope(q, cos_m, sin_m) * apply_rope(k, cos_n, sin_n)).sum())


q = rng.standard_normal((1, 1, 1, 96)).astype(np.float32)              # [B, H, T, hd]
k = rng.standard_normal((1, 1, 1, 96)).astype(np.float32)
for m, n in [(3, 1), (10, 8), (1003, 1001), (4000, 3998), (3, 0)]:
    print(f"q at {m:4d}, k at {n:4d} (distance {m - n}): q.k = {rope_dot(q, k, m, n):.4f}")
reference = rope_dot(q, k, 3, 1)
for m, n in [(10, 8), (1003, 1001), (4000, 3998)]:
    assert abs(rope_dot(q, k, m, n) - reference) < 1e-3
assert abs(rope_dot(q, k, 3, 0) - reference) > 0.1         # another distance, another score

# %% [markdown]
# The same statement as a picture. Each panel puts the key at another absolute position
# (0, 500, 3000) and moves the query away from it, up to 63 tokens; we take `k = q`, so the
# query on the key gives `|q|^2`. The x axes show absolute query positions, yet the three
# curves are one curve, shifted: the score sees only the distance `m - n`, never where the pair
# sits. The dot marks the query 10 tokens after the key, the same value in every panel.

# %%
distances = np.arange(0, 64)
starts = (0, 500, 3000)
curves = {start: np.array([rope_dot(q, q, start + t, start) for t in distances])
          for start in starts}
for start in starts:
    assert np.allclose(curves[start], curves[0], atol=1e-3)
assert np.isclose(curves[0][0], float((q * q).sum()), rtol=1e-5)       # distance 0: |q|^2
print("picture:", line_panels(
    "03_rope_relative.png",
    [(f"key at position {start}", start + distances, curves[start]) for start in starts],
    "RoPE: the same q.k curve wherever the key sits (phi-3-mini frequencies)",
    "query position (key position + distance)", "q . k", marks=[start + 10 for start in starts]))

# %% [markdown]
# ## 4. LongRoPE: a factor per frequency
#
# phi-3-mini-128K has the architecture of the 4K model; what changes is that each frequency is
# rescaled by its own factor:
#
#     inv_freq[i] = 1 / (factor[i] * theta^(2i / d))
#
# Rescaled frequencies alone are not the whole recipe: the report (§2, Post-training) says the
# context was extended in two stages, long-context mid-training and then post-training (SFT and
# DPO) on a mix of long and short data, so the 128K model's weights are trained for the new
# angles and differ from the 4K model's.
#
# A factor `f` stretches the wavelength of pair `i` by `f`, so position `f * m` gets the angle
# position `m` had. The model ships two sets of 48 factors, found by the search of the LongRoPE
# paper: `short_factor` (close to 1, for sequences up to the original 4096 tokens) and
# `long_factor` (up to about 65, for longer ones).
#
# The values below are `tinyphi3/presets/longrope_factors_mini_128k.json`: the `short_factor`
# and `long_factor` lists of `rope_scaling` in the config.json of Hugging Face's
# `microsoft/Phi-3-mini-128k-instruct`, as this repository copied them, where the scaling type
# is named `"longrope"`. That name arrived with the model's June 2024 update, which also
# changed the lists: the first release (April 2024, type `"su"`) had other values; its
# `long_factor`, for one, started at 1.03, where the list here starts at 1.08.

# %%
long_cfg = preset("phi-3-mini-128k")
short = np.array(long_cfg.rope_scaling["short_factor"])
long = np.array(long_cfg.rope_scaling["long_factor"])
L, L0 = long_cfg.max_position_embeddings, long_cfg.original_max_position_embeddings
assert len(short) == len(long) == long_cfg.rotary_dim // 2 == 48
print(f"short_factor: {short.min():.2f} .. {short.max():.2f}   "
      f"long_factor: {long.min():.2f} .. {long.max():.2f}")
assert 1.0 <= short.min() and short.max() < 3.0 and 60 < long.max() < 70
assert long_cfg.rope_scaling["type"] == "longrope"
assert round(long[0], 2) == 1.08                             # not the April 2024 list (1.03)

for i in (0, 8, 16, 24, 32, 40, 47):
    print(f"pair {i:2d}: short {short[i]:5.2f}  long {long[i]:6.2f}   wavelength plain "
          f"{wavelength[i]:9.0f}  short {wavelength[i] * short[i]:9.0f}  "
          f"long {wavelength[i] * long[i]:9.0f}")

index = np.arange(48)
print("picture:", _plot.line_plot("03_longrope_factors.png",
                                  {"long_factor": (index, long), "short_factor": (index, short)},
                                  "phi-3-mini-128K LongRoPE factors (config.json, longrope)",
                                  "frequency index i (pairs i, i+48)", "factor", log_y=True))
print("picture:", _plot.line_plot(
    "03_longrope_wavelengths.png",
    {"long factors": (index, 2 * np.pi / rope_inv_freq(rd, theta, long)),
     "short factors": (index, 2 * np.pi / rope_inv_freq(rd, theta, short)),
     "plain RoPE": (index, wavelength)},
    "Wavelength 2 pi / inv_freq of each frequency", "frequency index i", "tokens", log_y=True,
    hlines={f"L = {L}": L, f"L0 = {L0}": L0}, legend="lower right"))

# %% [markdown]
# The fast pairs (small `i`) keep factors near 1: they already turned many times in
# pre-training and mostly tell apart neighbouring tokens. The slow pairs get factors of 32 and
# more. Since 131072 / 4096 = 32, a factor of at least 32 means that even at position 131072
# such a pair has not turned further than it did at position 4096 in pre-training: it never
# shows the model an angle it has not seen. That holds for every pair that had not completed a
# turn in 4096 tokens:

# %%
assert np.all(long[slow:] >= L / L0)
print(f"long_factor >= {L // L0} for all pairs {slow}..47 (wavelength > {L0} under plain RoPE)")

# %% [markdown]
# Which set is used depends on the length of the whole sequence (cache included):
# `short_factor` while it is at most `original_max_position_embeddings` = 4096 tokens,
# `long_factor` beyond. `rope_frequencies(config, seq_len)` makes that choice.

# %%
for seq_len in (100, 4096, 4097, 131072):
    chosen = "long" if uses_long_factors(long_cfg, seq_len) else "short"
    print(f"seq_len {seq_len:6d}: {chosen} factors")
assert not uses_long_factors(long_cfg, 4096) and uses_long_factors(long_cfg, 4097)
assert np.array_equal(rope_frequencies(long_cfg, 4096)[0], rope_inv_freq(rd, theta, short))
assert np.array_equal(rope_frequencies(long_cfg, 4097)[0], rope_inv_freq(rd, theta, long))
assert not uses_long_factors(mini, 10**6)                  # plain RoPE has no factors at all

# %% [markdown]
# ## 5. The magnitude factor
#
# Stretching the context spreads attention over many more keys, which flattens the softmax.
# LongRoPE compensates by multiplying `cos` and `sin` by
#
#     magnitude = sqrt(1 + ln s / ln L0),     s = L / L0 = 131072 / 4096 = 32.
#
# Here `ln 32 / ln 4096 = 5 ln 2 / 12 ln 2 = 5/12`, so the magnitude is `sqrt(17/12)`.

# %%
s_ratio = L / L0
magnitude = math.sqrt(1 + math.log(s_ratio) / math.log(L0))
print(f"s = {s_ratio:g}, magnitude = sqrt(1 + ln {s_ratio:g} / ln {L0}) = {magnitude:.4f}")
assert abs(magnitude - math.sqrt(17 / 12)) < 1e-12
assert round(magnitude, 4) == 1.1902
assert abs(magnitude - long_cfg.longrope_attention_factor) < 1e-12
assert rope_frequencies(long_cfg, 10)[1] == rope_frequencies(long_cfg, 100_000)[1] == magnitude
assert mini.longrope_attention_factor == 1.0

# %% [markdown]
# Both `q` and `k` are multiplied by it, so every attention score grows by `magnitude^2 = 17/12`:
# the same as a softmax temperature of `12/17 = 0.71`, which sharpens the attention again. The
# factor is the same for the short and the long set, and is applied at every length.

# %%
scaled = rope_dot(q, k, 7, 3, config=long_cfg, seq_len=4096)         # short factors, magnitude
inv_short = rope_inv_freq(rd, theta, short)
cos7, sin7 = rope_cos_sin(np.array([[7]]), inv_short)                       # magnitude 1
cos3, sin3 = rope_cos_sin(np.array([[3]]), inv_short)
unit = float((apply_rope(q, cos7, sin7) * apply_rope(k, cos3, sin3)).sum())
print(f"q.k with short factors: magnitude 1 -> {unit:.4f}, "
      f"magnitude {magnitude:.4f} -> {scaled:.4f}"
      f" (ratio {scaled / unit:.4f} = 17/12 = {17 / 12:.4f})")
assert np.isclose(scaled / unit, 17 / 12, rtol=1e-4)

# %% [markdown]
# ## 6. Crossing 4096 during generation: recompute the cache
#
# When generating, the keys of past tokens are kept in a KV cache (lesson 5) *already rotated*.
# While the sequence is at most 4096 tokens long they were rotated with the short factors. The
# moment it reaches 4097, the reference model rotates *every* position with the long factors,
# so the cached keys are stale: continuing with them gives different logits from a full forward
# pass. The reference (and `tinyphi3.inference.generate.next_token_logits`) therefore drops the
# cache once, at the crossing, and recomputes it over the whole sequence with the long factors.
#
# We show it on the "tiny-longrope" preset, whose original length is 32 instead of 4096. A
# random model initialised with std 0.02 has nearly flat logits; with std 0.1 it has opinions,
# so the difference is easy to see.

# %%
cfg = preset("tiny-longrope").replace(initializer_range=0.1)
model = Phi3(cfg, seed=0)
L0_tiny = cfg.original_max_position_embeddings
ids = rng.integers(0, cfg.vocab_size, size=L0_tiny + 1)               # 33 tokens: one past L0
print(f"tiny-longrope: original length {L0_tiny}, sequence of {len(ids)} tokens")

full = model(ids[None])[0, -1]                                # every key with long factors

cache = model.new_cache(1)
model(ids[None, :L0_tiny], cache=cache)                                 # 32 tokens: short factors
assert cache.long_rope is False
stale = model(ids[None, L0_tiny:], cache=cache)[0, -1]                  # 33rd token on stale keys

cache = model.new_cache(1)
model(ids[None, :L0_tiny], cache=cache)
recomputed, cache = next_token_logits(model, list(ids), cache)         # what generation does

tv = 0.5 * np.abs(softmax(stale) - softmax(full)).sum()
print("top-5 tokens, full forward pass :", np.argsort(-full)[:5])
print("top-5 tokens, stale short cache :", np.argsort(-stale)[:5])
print(f"max |logit difference| stale {np.abs(stale - full).max():.3f}, recomputed "
      f"{np.abs(recomputed - full).max():.1e}; next-token distributions differ by {tv:.0%} "
      f"(total variation)")
assert np.abs(stale - full).max() > 0.1 and tv > 0.05
assert np.allclose(recomputed, full, atol=1e-5)
assert cache.long_rope is True and cache.length == L0_tiny + 1

# %% [markdown]
# After the crossing the cache holds long-factor keys and every later step is an ordinary
# cached step again, equal to a full pass:

# %%
more = rng.integers(0, cfg.vocab_size, size=3)
sequence = list(ids)
for token in more:
    sequence.append(int(token))
    step, cache = next_token_logits(model, sequence, cache)
    assert np.allclose(step, model(np.array([sequence]))[0, -1], atol=1e-5)
print(f"3 more cached steps to length {len(sequence)}: equal to full forward passes")

# %% [markdown]
# One consequence is worth knowing: because the factor set depends on the total length, the
# logits at a position change when the sequence grows past `L0`, even though attention is
# causal. Position 31's logits in a 32-token pass and in a 33-token pass differ:

# %%
at_32 = model(ids[None, :L0_tiny])[0, -1]
at_33 = model(ids[None])[0, L0_tiny - 1]
print(f"logits at position {L0_tiny - 1}: max difference {np.abs(at_32 - at_33).max():.3f}")
assert not np.allclose(at_32, at_33, atol=1e-3)

# %% [markdown]
# ## Summary
#
# - RoPE turns pair `(i, i + d/2)` by `position * inv_freq[i]`; lengths are kept and `q . k`
#   depends only on the distance.
# - LongRoPE divides each frequency by a searched factor: `short_factor` up to 4096 tokens,
#   `long_factor` beyond; the slow pairs are stretched by at least 32 = 131072 / 4096.
# - `cos` and `sin` are scaled by `sqrt(1 + ln 32 / ln 4096) = 1.1902`.
# - Crossing 4096 tokens changes every position's rotation, so a generator recomputes its cache
#   once at that point.

# %% [markdown]
# ## Where it lives
#
# - `tinyphi3/nn/rope.py`: `rotate_half`, `apply_rope`, `rope_inv_freq` (with or without
#   factors), `uses_long_factors`, `rope_frequencies` (the factor set and the magnitude for a
#   sequence length), `rope_cos_sin`.
# - `tinyphi3/config/presets.py`: `preset("phi-3-mini-128k")`, which reads
#   `tinyphi3/presets/longrope_factors_mini_128k.json`.
# - `tinyphi3/config/phi3.py`: `Phi3Config.longrope_attention_factor` (the magnitude).
# - `tinyphi3/inference/generate.py`: `next_token_logits` (drops and recomputes the cache when
#   the sequence crosses `original_max_position_embeddings`).
