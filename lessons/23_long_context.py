# %% [markdown]
# # Lesson 23: Long context: stretching RoPE past the trained length
#
# Lesson 3 showed how RoPE turns queries and keys, and how phi-3-mini-128K's LongRoPE factors
# stretch those turns. This lesson asks why a model needs them at all, and runs every piece of
# the extension on the real `checkpoints/mini`: a 4-layer model whose config says it reads 512
# tokens. The Phi-3 report (§2) made phi-3-mini-128K with LongRoPE (Ding et al. 2024) and then
# trained it further, "long context mid-training and long-short mixed post-training with both
# SFT and DPO". tinyphi3 does the same in miniature, from 512 tokens to 4096 (eight times).
#
# 1. why RoPE fails past its training length: the slow frequencies have seen only an arc of
#    their circle, and the mini's loss climbs with the position;
# 2. the attention score's view: `q . k` against distance under plain RoPE, position
#    interpolation (PI), NTK-aware scaling and YaRN;
# 3. every method as a vector of per-frequency factors in Phi-3-mini-128K's config layout;
# 4. LongRoPE's evolutionary search of the factors, in miniature;
# 5. the passkey test: what it asks, and why a model must be trained for it;
# 6. attention that fits: a 4096-token training step without `[T, T]` weights.
#
# Pictures go to `lesson_outputs/`. Everything runs in well under a minute on one CPU core.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # one BLAS thread (lesson 8)

import json
import math
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np

import _plot
import tinyphi3
from tinyphi3 import backends
from tinyphi3.data.longdocs import PASSKEY_INTRO, PASSKEY_QUESTION, passkey_document, passkey_line
from tinyphi3.evaluation.passkey import (format_passkey_tables, heldout_long_ids, passkey_grid,
                                         position_perplexity)
from tinyphi3.models.model import FLASH_FROM
from tinyphi3.nn import rope_scaling
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.flash_attention import TILE_K, TILE_Q, flash_attention
from tinyphi3.nn.layers import target_log_probs
from tinyphi3.nn.rope import apply_rope, rope_cos_sin, rope_frequencies, rope_inv_freq
from tinyphi3.pictures.passkey import passkey_heatmaps
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.longrope_search import (baseline_perplexities, config_nll, evaluations,
                                            search_long_factors)

np.set_printoptions(precision=3, suppress=True, linewidth=110)
MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
model = tinyphi3.Phi3.from_pretrained(MINI)
tok = load_tokenizer(MINI)
config = model.config
L0, d, theta = config.max_position_embeddings, config.rotary_dim, config.rope_theta
L = 4096                                             # the target: eight times L0
s = L / L0
print(f"mini: {config.num_hidden_layers} layers, width {config.hidden_size}, "
      f"{config.num_attention_heads} heads of {config.head_dim}; RoPE over {d} dimensions "
      f"({d // 2} frequencies), theta {theta:g}, context L0 = {L0}; target L = {L} (s = {s:g})")
assert (L0, d, theta, s) == (512, 32, 10000.0, 8.0) and config.rope_scaling is None

# %% [markdown]
# ## 1. Why RoPE fails past its training length
#
# Pair `i` of a head's dimensions turns by `inv_freq[i] = theta^(-2i/d)` radians per token, so it
# needs `2 pi / inv_freq[i]` tokens (its wavelength) for a full turn. With `d = 32` the mini has
# 16 frequencies, from one radian per token (a turn every 6.3 tokens) down to a turn every
# 35,000 tokens. In training, positions run from 0 to `L0 - 1`, and so do the distances between
# a query and a key: a fast pair has gone round its circle many times and met every angle, a
# slow pair only an arc of it.

# %%
inv_freq = rope_inv_freq(d, theta)                   # [d/2] = [16]
wavelength = 2 * np.pi / inv_freq                    # tokens per full turn
turns_trained, turns_target = L0 / wavelength, L / wavelength
print(" pair | inv_freq | wavelength | turns in 0..512 | turns in 0..4096")
for i in range(d // 2):
    print(f" {i:4d} | {inv_freq[i]:8.5f} | {wavelength[i]:10.1f} | {turns_trained[i]:15.3f} "
          f"| {turns_target[i]:16.3f}")
slow = int(np.argmax(wavelength > L0))               # the first pair that never completes a turn
print(f"pairs {slow}..{d // 2 - 1} never complete a turn within {L0} tokens; the slowest sees "
      f"{turns_trained[-1]:.1%} of its circle ({math.degrees(2 * np.pi * turns_trained[-1]):.1f} "
      f"degrees)")
assert slow == 8 and np.all(turns_trained[:slow] > 1) and np.all(turns_trained[slow:] < 1)
assert np.allclose(turns_target, s * turns_trained)  # 4096 tokens: eight times the arc

index = np.arange(d // 2)
print("picture:", _plot.line_plot(
    "23_wavelengths.png", {"wavelength 2 pi / inv_freq[i]": (index, wavelength)},
    "The mini's 16 RoPE frequencies: tokens per full turn", "frequency index i (pair i, i + 16)",
    "tokens", log_y=True, hlines={f"L0 = {L0}": L0, f"L = {L}": L}))
print("picture:", _plot.line_plot(
    "23_angle_ranges.png",
    {f"at {L} tokens": (index, turns_target), f"in training (0..{L0})": (index, turns_trained)},
    "How far each pair turns: the angles it meets, in turns of its circle",
    "frequency index i", "turns (1 = 2 pi)", log_y=True,
    hlines={"one full turn": 1.0}, legend="upper right"))

# %% [markdown]
# Below the dashed line of the second picture a pair has not met its whole circle. Pairs 0..7
# have: at 4096 tokens they only go round more often, through angles they know. Pairs 8..15
# have seen between 82% and 1.4% of the circle; past 512 tokens they move into the rest of it,
# angles that no query and key ever had in training. The model's weights were never fitted to
# those rotations, and nothing in them says what a query should do with a key turned that way.
#
# What does that do to the mini? It was never trained on more than 512 tokens, but nothing stops
# us from running it on 2048: its rotations simply go on (`allow_past_context=True` of
# `position_perplexity`; `past_context_view` does the same for generation). We take the first
# held-out long document (a long conversation in plain text, `tinyphi3.data.longdocs`, facts
# and sums that no training document holds) and measure the loss of each token by its position,
# in buckets of 128 tokens.
#
# A loss that grows with the position could also mean that the text gets harder further in.
# A control tells the two apart: the same tokens scored again in windows of 256 tokens (each
# window starts 128 tokens before the tokens it scores), so that every token past the first
# window is read with 128-255 tokens before it, at a position below 256. Same text, small
# positions.

# %%
T_DOC = 2048
doc = heldout_long_ids(tok, 1, T_DOC)[0]             # [2048] token ids
print(repr(tok.decode(doc[:48].tolist())), "...")
buckets = [(lo, lo + 128) for lo in range(0, T_DOC, 128)]
start = time.perf_counter()
one_pass = position_perplexity(model, [doc], buckets, allow_past_context=True)
print(f"one forward pass over {T_DOC} tokens: {time.perf_counter() - start:.1f} s")


def windowed_losses(model, ids, window=256):
    """-log p(ids[t] | the up to `window` - 1 tokens before it) for every position t >= 1:
    [T] -> [T] (index 0 unused). Windows overlap by half; each scores its second half."""
    loss = np.full(len(ids), np.nan)
    logp, _ = target_log_probs(model(ids[None, :window]), ids[None, :window])   # [1, window - 1]
    loss[1:window] = -logp[0]
    for begin in range(window // 2, len(ids) - window + 1, window // 2):
        part = ids[None, begin:begin + window]                                   # [1, window]
        logp, _ = target_log_probs(model(part), part)
        loss[begin + window // 2:begin + window] = -logp[0, window // 2 - 1:]
    return loss


windowed = windowed_losses(model, doc)
win_nll = [float(np.mean(windowed[max(lo, 1):hi])) for lo, hi in buckets]
full_nll = [b["nll"] for b in one_pass]
print("positions   | one pass | windows of 256")
for (lo, hi), a, b in zip(buckets, full_nll, win_nll):
    print(f"{lo:4d}-{hi:4d}   | {a:8.2f} | {b:8.2f}")
far = slice(L0 // 128, None)                         # the buckets from 512 on
gap = np.mean(full_nll[far]) - np.mean(win_nll[far])
print(f"positions 512-2048: {np.mean(full_nll[far]):.2f} nats in one pass, "
      f"{np.mean(win_nll[far]):.2f} read in windows: {gap:.2f} nats lost to the positions alone")
assert np.allclose(full_nll[:2], win_nll[:2], atol=1e-3)    # below 256 both read the same way
assert gap > 1.5                                     # same tokens, far worse at large positions
assert np.mean(full_nll[far]) > full_nll[1] + 2      # the one-pass loss climbs

centres = np.array([lo + 64 for lo, _ in buckets])
top = max(full_nll + win_nll) * 1.02
print("picture:", _plot.line_plot(
    "23_loss_by_position.png",
    {"one pass of 2048 tokens": (centres, full_nll),
     "windows of 256 tokens": (centres, win_nll),
     "256: pre-training length": ([256, 256], [0, top]),
     "512: the config's L0": ([512, 512], [0, top])},
    "checkpoints/mini on a held-out document of 2048 tokens: loss by position",
    "position of the predicted token (bucket centre)", "mean loss (nats)", legend="lower right"))

# %% [markdown]
# Read in windows, the conversation stays about as hard from start to end; read in one pass, the
# same tokens cost 3 nats more once their positions pass a few hundred. The climb starts before
# 512: the config says 512, but the mini was pre-trained on sequences of 256 tokens and
# fine-tuned on 320 (`configs/mini-base*.toml`, `configs/mini-sft.toml`), so distances past
# those were hardly ever seen. What counts is the length the model was trained at, not the
# number in its config. (The losses are high in absolute terms: the mini is a chat model and
# this is plain text. The comparison is what matters.) Every method below takes the config's
# `L0 = 512`, as the published configs do.

# %% [markdown]
# ## 2. The attention score's view
#
# Where RoPE meets the model is the score `q . k`. For a fixed query vector and key vector, it
# depends only on their distance (lesson 3). We draw one pair of random vectors (fixed seed) and
# follow `q . k` from distance 0 to 4096 under four sets of frequencies, each method's config
# made by `extend_config` and run through the same `rope_frequencies` the model uses:
#
# - plain RoPE: the frequencies unchanged;
# - PI (position interpolation, Chen et al. 2023): every frequency divided by `s = 8`, so
#   position `p` gets the angles of `p / 8`;
# - NTK-aware scaling (bloc97, 2023): a larger base, the fast frequencies kept, the slowest
#   divided by `s`, a geometric slide between;
# - YaRN (Peng et al. 2023): frequencies that turn more than 32 times within `L0` kept, those
#   turning less than once divided by `s`, a linear ramp between.
#
# (The methods' magnitudes, which scale `q . k` as a whole, are left out here: section 3.)
#
# The fast pairs add a ripple with a period of a few tokens that would fill the picture, so the
# long view shows the slow pairs' share of the score, pairs 8..15, the ones that never turn
# fully in training. The dashed lines bound the values it takes at distances 0..512.

# %%
distances = np.arange(L + 1)                         # [D] = 0 .. 4096
extended = {m: rope_scaling.extend_config(config, m, L) for m in ("pi", "ntk", "yarn")}
frequencies = {"plain RoPE": rope_frequencies(config, L)[0],
               "NTK": rope_frequencies(extended["ntk"], L)[0],
               "PI": rope_frequencies(extended["pi"], L)[0],
               "YaRN": rope_frequencies(extended["yarn"], L)[0]}     # each [d/2]


def qk_by_distance(q, k, inv_freq):
    """q . k with q rotated to position p and k at position 0, for p in `distances`: [D]."""
    cos, sin = rope_cos_sin(distances[None], inv_freq)                # [1, D, d]
    queries = np.repeat(q[None, None, None], len(distances), axis=2)  # [1, 1, D, d]
    return (apply_rope(queries, cos, sin) * k).sum(axis=-1)[0, 0]     # [1, 1, D, d] -> [D]


pair_rng = np.random.default_rng(3)
q = pair_rng.standard_normal(d).astype(np.float32)
k = pair_rng.standard_normal(d).astype(np.float32)
slow_dims = np.zeros(d, dtype=bool)
slow_dims[slow:d // 2] = slow_dims[d // 2 + slow:] = True           # pairs (i, i + 16), i >= 8
slow_part = {name: qk_by_distance(q * slow_dims, k * slow_dims, f)
             for name, f in frequencies.items()}
seen_lo, seen_hi = slow_part["plain RoPE"][:L0 + 1].min(), slow_part["plain RoPE"][:L0 + 1].max()
print(f"slow pairs' share of q.k at distances 0..512 (seen in training): {seen_lo:.2f} .. "
      f"{seen_hi:.2f}")
for name, curve in slow_part.items():
    print(f"  {name:10s} at distances 512..4096: {curve[L0:].min():6.2f} .. "
          f"{curve[L0:].max():6.2f}")
# YaRN's slow share is PI's (asserted below): one line for both
print("picture:", _plot.line_plot(
    "23_scores_slow_pairs.png",
    {"plain RoPE": (distances, slow_part["plain RoPE"]), "NTK": (distances, slow_part["NTK"]),
     "PI, and YaRN (the same here)": (distances, slow_part["PI"])},
    "q . k of one fixed pair of vectors, slow frequencies only (pairs 8..15)",
    "distance between query and key (tokens)", "slow pairs' share of q . k",
    hlines={"max in training": seen_hi, "min in training": seen_lo}, legend="upper left"))

# PI at distance p is plain RoPE at p / 8: the whole 0..4096 range replays 0..512
assert np.allclose(slow_part["PI"][::8], slow_part["plain RoPE"][:L0 + 1], atol=1e-3)
assert seen_lo - 1e-2 <= slow_part["PI"].min() and slow_part["PI"].max() <= seen_hi + 1e-2
# plain RoPE leaves the range it was trained in
assert slow_part["plain RoPE"][L0:].max() > seen_hi + 2 or \
    slow_part["plain RoPE"][L0:].min() < seen_lo - 2
# YaRN divides every slow pair by s, as PI does: the same slow share
assert np.allclose(slow_part["YaRN"], slow_part["PI"], atol=1e-4)

# %% [markdown]
# Plain RoPE's curve leaves the band once it passes 512: scores the model never produced in
# training. PI's curve is plain RoPE's first 512 tokens stretched eight times: it never leaves
# the band. YaRN's slow pairs are interpolated exactly like PI's (its ramp ends at pair 8), so
# its line is PI's. NTK's curve leaves the band too, more slowly than plain RoPE's: its pairs
# 8..14 are divided by less than 8, so they still turn past the arc they know.
#
# PI pays for this near the diagonal. Between neighbouring positions, pair `i`'s angle grows by
# `inv_freq[i]`; under PI by `inv_freq[i] / s`. The fastest pair turned 57 degrees from one
# token to the next in training; under PI it turns 7, and tokens next to each other look
# almost alike to it: the resolution the model learned is gone at every distance, short ones
# included. The whole score, every pair, over the first 48 tokens:

# %%
for name, f in frequencies.items():
    print(f"{name:10s}: the fastest pair turns {math.degrees(f[0]):5.1f} degrees per token")
assert np.isclose(frequencies["PI"][0], frequencies["plain RoPE"][0] / s)
assert frequencies["NTK"][0] == frequencies["YaRN"][0] == frequencies["plain RoPE"][0]

near = np.arange(49)
whole = {name: qk_by_distance(q, k, f)[near] for name, f in frequencies.items()}
steps = {name: float(np.abs(np.diff(curve)).mean()) for name, curve in whole.items()}
print("mean |change of q.k| from one distance to the next, distances 0..48:",
      {name: round(v, 2) for name, v in steps.items()})
assert steps["PI"] < steps["plain RoPE"] / 3         # PI blurs neighbours together
print("picture:", _plot.line_plot(
    "23_scores_near.png", {name: (near, curve) for name, curve in whole.items()},
    "q . k over the first 48 tokens: PI smooths away the differences between neighbours",
    "distance between query and key (tokens)", "q . k", legend="lower left"))

# %% [markdown]
# NTK and YaRN keep the fast pairs as they were, so near the diagonal their scores follow plain
# RoPE's; PI's is a slow drift. That is the trade every method makes: keep the fast pairs
# (resolution), interpolate the slow ones (no unseen angles), and choose what to do between.

# %% [markdown]
# ## 3. The methods as factor vectors
#
# Each method above divides frequency `i` by a factor:
#
#     inv_freq[i] = 1 / (factor[i] * theta^(2i / d))
#
# which is exactly how phi-3-mini-128K's `config.json` writes LongRoPE (lesson 3). So every
# method is stored in that one layout: `rope_scaling = {"type": "longrope", "short_factor",
# "long_factor", "attention_factor"}` with `original_max_position_embeddings = L0` and
# `max_position_embeddings = L`. One code path (`rope_frequencies`) runs them all, and a
# checkpoint written this way loads in transformers' Phi3 as it is. For `s = 8`:
#
#     PI        factor[i] = s
#     NTK       factor[i] = s^(2i / (d - 2))               (the base theta s^(d / (d - 2)))
#     YaRN      factor[i] = 1 / (r_i / s + 1 - r_i)        (r_i: the ramp, 0 fast .. 1 slow)
#     LongRoPE  searched (section 4), starting from PI's

# %%
factors = {m: np.array(rope_scaling.method_factors(m, d, theta, L0, s)[0])
           for m in ("pi", "ntk", "yarn")}                                  # each [d/2]
print(" pair |   PI |   NTK |  YaRN | turns in 0..512")
for i in range(d // 2):
    print(f" {i:4d} | {factors['pi'][i]:4.1f} | {factors['ntk'][i]:5.2f} | "
          f"{factors['yarn'][i]:5.2f} | {turns_trained[i]:7.2f}")
print("picture:", _plot.line_plot(
    "23_factors.png", {"PI (and LongRoPE's start)": (index, factors["pi"]),
                       "NTK-aware": (index, factors["ntk"]), "YaRN": (index, factors["yarn"])},
    f"Factor per frequency, s = {s:g}: fast pairs (left) kept, slow pairs (right) slowed",
    "frequency index i (factor[i] divides inv_freq[i])", "factor[i]",
    legend="lower right"))

for name, f in factors.items():                      # non-decreasing, within [1, s]
    assert np.all(np.diff(f) >= 0) and f.min() >= 1 and f.max() <= s, name
assert np.isclose(factors["ntk"][0], 1) and np.isclose(factors["ntk"][-1], s)
assert np.all(factors["yarn"][turns_trained > 32] == 1)     # many turns in L0: kept
assert np.all(factors["yarn"][turns_trained < 1] == s)      # not one turn in L0: interpolated

# PI's angle at position p is plain RoPE's angle at p / s
positions = np.arange(0, L, 7)[None]                                     # [1, T]
pi_cos, pi_sin = rope_cos_sin(positions, rope_inv_freq(d, theta, factors["pi"]))
plain_cos, plain_sin = rope_cos_sin(positions / s, inv_freq)
assert np.allclose(pi_cos, plain_cos, atol=1e-4) and np.allclose(pi_sin, plain_sin, atol=1e-4)
print(f"PI: angle(p) = plain angle(p / {s:g}) at {positions.size} positions up to {L}")

# %% [markdown]
# The magnitude. A longer context spreads each query's attention over more keys, which
# flattens its softmax. Both YaRN and LongRoPE multiply `cos` and `sin` by a factor, so every
# score grows by its square, a sharper softmax:
#
#     YaRN       0.1 ln s + 1                       (Peng et al. 2023, §3.4)
#     LongRoPE   sqrt(1 + ln s / ln L0)             (Phi-3 report §2; the LongRoPE paper)
#
# PI and NTK have none (1). For `s = 8`, `L0 = 512`: `ln 8 / ln 512 = 3/9`, so LongRoPE's is
# `sqrt(4/3)`.

# %%
yarn_mag = rope_scaling.yarn_attention_factor(s)
longrope_mag = rope_scaling.longrope_attention_factor(s, L0)
print(f"s = {s:g}: YaRN {yarn_mag:.4f} (scores x {yarn_mag ** 2:.3f}), LongRoPE "
      f"{longrope_mag:.4f} (scores x {longrope_mag ** 2:.3f})")
assert np.isclose(longrope_mag, math.sqrt(4 / 3)) and np.isclose(yarn_mag, 1 + 0.1 * math.log(8))
ratios = [2 ** e for e in range(7)]                  # s = 1 .. 64
print("picture:", _plot.line_plot(
    "23_magnitudes.png",
    {"YaRN: 0.1 ln s + 1": (np.arange(7), [rope_scaling.yarn_attention_factor(r)
                                           for r in ratios]),
     f"LongRoPE: sqrt(1 + ln s / ln {L0})": (np.arange(7), [
         rope_scaling.longrope_attention_factor(r, L0) for r in ratios])},
    f"Magnitude on cos and sin against the extension s = L / L0 (L0 = {L0})",
    "s", "magnitude", xticks=[str(r) for r in ratios]))

# %% [markdown]
# What `extend_config` writes, here for YaRN (factors rounded for print). `short_factor` is all
# ones: a sequence of at most `L0` tokens keeps the angles the model was trained on, and the
# long factors take over past it (the same switch as phi-3-mini-128K's, lesson 3). The
# `attention_factor` applies at every length. LongRoPE's entry leaves it out, as the published
# 128K config does, and readers derive it from the two lengths.

# %%
yarn_config = extended["yarn"]
shown = {key: ([round(f, 2) for f in value] if isinstance(value, list) else value)
         for key, value in yarn_config.rope_scaling.items()}
print('"rope_scaling": {\n' + ",\n".join(f'    "{key}": {json.dumps(value)}'
                                         for key, value in shown.items()))
print(f'}},\n"original_max_position_embeddings": {yarn_config.original_max_position_embeddings},'
      f'\n"max_position_embeddings": {yarn_config.max_position_embeddings}')
assert yarn_config.rope_scaling["short_factor"] == [1.0] * (d // 2)
assert np.array_equal(rope_frequencies(yarn_config, L0)[0], inv_freq)            # short: plain
assert np.array_equal(rope_frequencies(yarn_config, L0 + 1)[0],
                      rope_inv_freq(d, theta, factors["yarn"]))                   # long: YaRN's
assert rope_frequencies(yarn_config, 10)[1] == yarn_config.longrope_attention_factor == yarn_mag
longrope_config = rope_scaling.extend_config(config, "longrope", L)
assert "attention_factor" not in longrope_config.rope_scaling
assert np.isclose(longrope_config.longrope_attention_factor, longrope_mag)

# %% [markdown]
# ## 4. LongRoPE's search, in miniature
#
# The methods above pick their factors by a rule. LongRoPE (Ding et al. 2024, §3.2) searches
# them instead: the factors that give the lowest perplexity on documents of the target length,
# found by evolution. `search_long_factors`:
#
# - seeds the first population with PI's, NTK's and YaRN's factor vectors and mutations of them;
# - keeps each generation's better half (the best never gets worse), and refills the other
#   half by mutation (factors multiplied by `exp(N(0, 0.15^2))`) and crossover;
# - keeps every candidate legal: factors within `[1, 1.25 s]` and never decreasing with `i`;
# - scores each candidate under LongRoPE's magnitude, the seeds included.
#
# The real search (`tinyphi3 longrope search --length 4096`, 16 candidates over 8 generations)
# takes a while on a CPU. Here a small one: `L = 1024` (`s = 2`), two held-out documents, a
# population of 6 and 2 generations, 12 candidates in all. First the baselines, each method
# with its own magnitude, and plain RoPE left to extrapolate ("none"):

# %%
T_SEARCH = 1024
search_docs = heldout_long_ids(tok, 2, T_SEARCH)     # 2 x [1024] token ids
start = time.perf_counter()
baselines = baseline_perplexities(model, search_docs, T_SEARCH)
result = search_long_factors(model, search_docs, T_SEARCH, population=6, generations=2, seed=0)
print(f"baselines and search: {time.perf_counter() - start:.1f} s, "
      f"{evaluations(6, 2)} candidates")
for name, ppl in baselines.items():
    print(f"  {name:8s} perplexity {ppl:8.1f}"
          + ("   (PI's factors with LongRoPE's magnitude)" if name == "longrope" else ""))
print("the search's seeds (LongRoPE's magnitude):",
      {m: round(p, 1) for m, p in result.seeds.items()})
print("best after the first population, then each generation:",
      [round(p, 2) for p in result.history])
print(f"found: perplexity {result.perplexity:.2f}, long_factor {result.long_factor}")

found = np.array(result.long_factor)
assert result.perplexity <= min(result.seeds.values())           # elitism: never worse
assert all(a >= b for a, b in zip(result.history, result.history[1:]))
assert np.all(np.diff(found) >= 0) and found.min() >= 1 and found.max() <= 1.25 * 2
assert len(result.evaluated) == evaluations(6, 2)
assert baselines["pi"] > baselines["none"]           # PI's blur costs more than it saves here
found_config = rope_scaling.extend_config(config, "longrope", T_SEARCH, long_factor=found)
assert np.isclose(math.exp(config_nll(model, found_config, search_docs)), result.perplexity)

seed_factors = {m: rope_scaling.method_factors(m, d, theta, L0, 2.0)[0] for m in ("pi", "ntk",
                                                                                 "yarn")}
print("picture:", _plot.line_plot(
    "23_search_factors.png",
    {"found by the search": (index, found), "PI": (index, seed_factors["pi"]),
     "NTK-aware": (index, seed_factors["ntk"]), "YaRN": (index, seed_factors["yarn"])},
    "LongRoPE's search at L = 1024 (s = 2): the seeds and the factors found",
    "frequency index i", "factor[i]", legend="lower right"))

# %% [markdown]
# What to read from it. PI, which blurs every distance, does worse than doing nothing at all;
# the methods that keep the fast pairs do far better. The search keeps the best of its seeds
# and, by elitism, can only improve on them under its own objective (how much, in 12
# candidates, is a matter of luck). It does not promise to beat a baseline scored with another
# magnitude: YaRN's baseline uses YaRN's magnitude, its seed LongRoPE's, and the two perplexities
# printed above differ. The found factors rise from 1 at the fast pairs to `s` at the slow ones
# (the search may go up to `1.25 s`), the shape of the published long factors (lesson 3). And
# they are scored on the very documents they were searched on; a fair comparison reads other
# held-out documents (`tinyphi3 eval --task position-ppl`).
#
# No factor vector brings the perplexity back to that of the positions the model was trained
# at: rescaling makes the angles familiar, it cannot teach the model to use a thousand tokens
# of context. Hence the report's second stage, and tinyphi3's: train the extended checkpoint
# on long documents (`tinyphi3 data longdocs`, `tinyphi3 data passkey`, then `tinyphi3 train`
# on the checkpoint that `tinyphi3 longrope search` or `tinyphi3 longrope extend` wrote):
#
#     tinyphi3 longrope extend --ckpt checkpoints/mini --method yarn --length 4096 --out mini-yarn
#     tinyphi3 longrope search --ckpt checkpoints/mini --text long.jsonl --length 4096 \
#         --out mini-4k
#
# (The LongRoPE paper also leaves the first few positions unrotated by the factors; the
# published Phi-3 layout has no field for that, so it is not searched here.)

# %% [markdown]
# ## 5. The passkey test
#
# The perplexity says whether a model still predicts text at long positions; it does not say
# whether it uses what lies far back. The passkey test (Mohtashami & Jaggi 2023, used by the
# LongRoPE paper) does: a five-digit key is hidden in filler text at a chosen depth, and the
# prompt ends with a question the key answers. Here is one of 256 tokens, the key in the middle
# (marked `>>> <<<`):

# %%
text, key = passkey_document(np.random.default_rng(0), 256, 0.5, tok, split="test")
full_text, _ = passkey_document(np.random.default_rng(0), 256, 0.5, tok, split="test",
                                answer=True)
print("\n".join(textwrap.fill(line, 100) for line in
                text.replace(passkey_line(key), f">>> {passkey_line(key)} <<<").split("\n")))
print(f"-> expected answer: {key}")
print(f"{len(tok.encode(text))} tokens of prompt; {len(tok.encode(full_text))} with the answer")
assert text.endswith(PASSKEY_QUESTION) and full_text == f"{text} {key}."
assert abs(len(tok.encode(full_text)) - 256) <= 2

# %% [markdown]
# A grid of cells measures it: rows are depths (0 = the key right after the introduction, 1 =
# just before the question), columns are lengths; a cell is the share of held-out documents
# whose answer is the key, digit for digit. The documents of the grid, drawn to scale:

# %%
def layout_row(length, depth, unit=8):
    """The parts of one passkey prompt in units of `unit` tokens: [(text, kind, span)]."""
    prompt, key = passkey_document(np.random.default_rng(1), length, depth, tok, split="test")
    before = len(tok.encode(prompt[:prompt.index(passkey_line(key))]))
    intro, line = len(tok.encode(PASSKEY_INTRO)), len(tok.encode(passkey_line(key)))
    question, total = len(tok.encode(PASSKEY_QUESTION)), len(tok.encode(prompt))
    parts = [("intro", 0, intro), ("filler", 1, before - intro), ("key", 2, line),
             ("filler", 1, total - before - line - question), ("question", 3, question)]
    return [(name if n >= 3 * unit else "", kind, max(1, round(n / unit)))
            for name, kind, n in parts if n > 0]


rows = [(f"{length} tokens, depth {depth:.0%}", layout_row(length, depth))
        for length in (256, 512) for depth in (0.0, 0.5, 1.0)]
print("picture:", _plot.cell_rows(
    "23_passkey_layout.png", rows, "Passkey prompts: the key's line at a depth of the filler",
    ["introduction", "filler sentences", "the key's line", "the question"],
    note="one grid unit = 8 tokens", unit=(13, 28)))

# %% [markdown]
# A model must be trained to do this. Finding the key means recognising the question, looking
# back over the whole filler for the one line that answers it, and copying five digits from
# there. The mini has never seen a passkey document. Asked anyway, two documents per cell at
# depths 0 and 1, at lengths within its context:

# %%
start = time.perf_counter()
grid = passkey_grid(model, tok, lengths=(256, 512), depths=(0.0, 1.0), n_per_cell=2)
print(f"{len(grid['records'])} documents in {time.perf_counter() - start:.1f} s")
print(format_passkey_tables({"mini": grid}))
for record in grid["records"]:
    print(f"  length {record['length']}, depth {record['depth']:.0%}: key {record['key']}, "
          f"reply {record['reply']!r}")
assert len(grid["accuracy"]) == 2 and all(len(row) == 2 for row in grid["accuracy"])
assert all(0.0 <= a <= 1.0 for row in grid["accuracy"] for a in row)
print("picture:", passkey_heatmaps("23_passkey_grid.png", {"checkpoints/mini": grid},
                                   "Passkey retrieval, 2 documents a cell", cell=(300, 44)))

# %% [markdown]
# On this run the mini finds no key: its replies, printed above, are words, not the number, at
# 256 tokens as at 512, well within what it was trained on. So a score of zero here says
# nothing about position: the model has not learnt the task. That is why the long-context
# data holds passkey documents with their answers (`tinyphi3 data passkey`, training keys
# only; the evaluation's keys are held out), beside stories and conversations that refer back
# thousands of tokens (`tinyphi3 data longdocs`). Only a model trained on the task makes the
# grid a measure of context: then a cell that fails past 512 and not before is the position's
# fault.
#
# The full grid and the loss by position come from one command, for several checkpoints side
# by side (`--past-context` runs lengths past a checkpoint's context instead of printing
# "past"):
#
#     tinyphi3 eval --ckpt checkpoints/mini --ckpt mini-4k --task passkey,position-ppl \
#         --past-context --chart long.png
#
# `docs/long_context.md` holds the measurements of the real runs.

# %% [markdown]
# `checkpoints/mini-long` is the mini after that training: LongRoPE's searched factors for
# 4,096 tokens, pass keys and long chats, then its post-training again (its model card lists
# every command). The same question, at 512 tokens and at 2,048, four times its parent's context:

# %%
LONG = MINI.parent / "mini-long"
long_model, long_tok = tinyphi3.Phi3.from_pretrained(LONG), load_tokenizer(LONG)
print("rope_scaling:", long_model.config.rope_scaling["type"], "| original context",
      long_model.config.original_max_position_embeddings, "| context",
      long_model.config.max_position_embeddings)
start = time.perf_counter()
long_grid = passkey_grid(long_model, long_tok, lengths=(512, 2048), depths=(0.0, 1.0),
                         n_per_cell=2)
print(f"{len(long_grid['records'])} documents in {time.perf_counter() - start:.1f} s")
print(format_passkey_tables({"mini-long": long_grid}))
for record in long_grid["records"]:
    print(f"  length {record['length']}, depth {record['depth']:.0%}: key {record['key']}, "
          f"reply {record['reply']!r}")
read = sum(record["right"] for record in long_grid["records"])
assert read > sum(record["right"] for record in grid["records"]), "mini-long reads no more keys"

# %% [markdown]
# Its full grid (20 keys a cell, 512 to 4,096 tokens, five depths) is 400 of 400, beside the
# mini and the three other methods after a short fine-tuning, which read none:
# `docs/long_context_passkey_mini_long.png`.

# %% [markdown]
# ## 6. Attention that fits
#
# Training at 4096 tokens meets a problem that has nothing to do with angles. Dense attention
# keeps its weights `softmax(q k^T * scale)` for the backward pass: `[B, H, T, T]` floats in
# every layer. For the mini's 8 heads at `T = 4096`, per sequence and per layer:

# %%
H, hd = config.num_attention_heads, config.head_dim
MiB = 2 ** 20
dense_bytes = H * L * L * 4                          # [1, H, T, T] float32
out_bytes, lse_bytes = H * L * hd * 4, H * L * 4     # O [1, H, T, hd] and L [1, H, T]
print(f"dense weights: {H} heads x {L} x {L} x 4 bytes = {dense_bytes / MiB:.0f} MiB per layer, "
      f"{config.num_hidden_layers * dense_bytes / MiB:.0f} MiB for the "
      f"{config.num_hidden_layers} layers of one sequence")
print(f"tiled: O {out_bytes / MiB:.0f} MiB + log-sum-exp L {lse_bytes / 2 ** 10:.0f} KiB per "
      f"layer; one tile of scores {TILE_Q} x {TILE_K} x 4 bytes = {TILE_Q * TILE_K * 4 // 1024} "
      f"KiB at a time")
assert dense_bytes == 512 * MiB and out_bytes == 4 * MiB and lse_bytes == 128 * 1024

lengths = [512, 1024, 2048, 4096, 8192]
print("picture:", _plot.line_plot(
    "23_attention_memory.png",
    {"dense: weights [B, H, T, T]": (np.arange(5), [H * t * t * 4 / MiB for t in lengths]),
     "tiled: O [B, H, T, hd] and L [B, H, T]": (np.arange(5), [H * t * (hd + 1) * 4 / MiB
                                                               for t in lengths])},
    "What one layer of the mini keeps for the backward pass (B = 1, 8 heads of 32)",
    "sequence length T (tokens)", "MiB", log_y=True, xticks=[str(t) for t in lengths]))

# %% [markdown]
# FlashAttention (Dao et al. 2022; lesson 14 met its online softmax) computes the same output
# tile by tile: for a block of queries it walks over blocks of keys, keeping per query a running
# maximum `m`, a running sum `l` and an unnormalised output, rescaled by `e^(m - m')` whenever a
# new block raises the maximum. The forward pass keeps only the output `O` and each row's
# log-sum-exp `L = m + log l`; the backward pass recomputes the weights tile by tile as
# `exp(s - L)`. The same answer as dense attention, here at `T = 300` with the mini's head
# shape (300 is not a multiple of the 64-token tiles, so the last tile is ragged):

# %%
T = 300
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((1, H, T, hd), dtype=np.float32) for _ in range(3))   # [B, H, T, hd]
scale = hd ** -0.5
mask = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))                       # [1, 1, T, T]
with backends.use_backend("numpy"):                  # the NumPy references, step by step
    tracemalloc.start()
    dense_out = attention(q, k, v, mask, scale)
    dense_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    tiled_out = flash_attention(q, k, v, scale)      # causal is its default mask
    tiled_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
print(f"max |tiled - dense| = {np.abs(tiled_out - dense_out).max():.1e}")
print(f"peak NumPy memory: dense {dense_peak / 1024:.0f} KiB (its [1, {H}, {T}, {T}] scores are "
      f"{H * T * T * 4 / 1024:.0f} KiB), tiled {tiled_peak / 1024:.0f} KiB")
assert tiled_out.shape == dense_out.shape == (1, H, T, hd)
assert np.allclose(tiled_out, dense_out, atol=1e-5)
assert dense_peak >= H * T * T * 4 and tiled_peak < H * T * T * 4 / 4

# %% [markdown]
# The model chooses by itself: with `model.attention = "auto"` (the default) a training call of
# 1024 tokens or more runs the tiled attention, shorter ones and generation the dense one.
# Equal values either way; `tests/test_flash_attention.py` checks outputs and gradients against
# dense attention and torch, and that the Numba kernel never allocates a `[T, S]` array.

# %%
assert FLASH_FROM == 1024 and model.attention == "auto"

# %% [markdown]
# ## Summary
#
# - RoPE's slow frequencies see only an arc of their circle in training; past the trained
#   length they turn into angles the weights were never fitted to. The mini's loss climbs with
#   the position, from where its training sequences ended, while the same tokens read in short
#   windows do not.
# - PI divides every frequency by `s`: no unseen angle, but neighbours blur. NTK-aware scaling
#   and YaRN keep the fast frequencies and interpolate the slow ones; YaRN and LongRoPE also
#   scale `cos` and `sin` (`0.1 ln s + 1`, `sqrt(1 + ln s / ln L0)`).
# - Every method is a factor per frequency in Phi-3-mini-128K's config layout, so one code path
#   runs them; `short_factor` all ones keeps short sequences as trained.
# - LongRoPE searches the factors by evolution from those seeds; elitism makes it no worse than
#   its best seed. Rescaling alone does not recover the short-context perplexity: the extended
#   model is then trained on long documents.
# - The passkey test needs a model trained for the task before it measures context.
# - Tiled attention keeps `O` and `L` instead of `[B, H, T, T]` weights: 4 MiB instead of
#   512 MiB per layer at 4096 tokens.
#
# ## Where it lives
#
# - `tinyphi3/nn/rope.py`: `rope_inv_freq`, `rope_frequencies` (the short/long switch and the
#   magnitude), `rope_cos_sin`, `apply_rope`.
# - `tinyphi3/nn/rope_scaling.py`: `pi_factors`, `ntk_factors`, `yarn_ramp`, `yarn_factors`,
#   `yarn_attention_factor`, `longrope_attention_factor`, `method_factors`, `extend_config`.
# - `tinyphi3/train/longrope_search.py`: `search_long_factors`, `baseline_perplexities`,
#   `config_nll`; `tinyphi3/cli/longrope.py`: `tinyphi3 longrope extend|search`.
# - `tinyphi3/data/longdocs.py`: `passkey_document`, `long_document`, `long_conversation`;
#   `tinyphi3/evaluation/passkey.py`: `passkey_grid`, `position_perplexity`,
#   `past_context_view`, `heldout_long_ids`; `tinyphi3/pictures/passkey.py`: the heat maps.
# - `tinyphi3/nn/flash_attention.py`: `flash_attention` and its tiled forward and backward;
#   `tinyphi3/backends/numba/flash.py`: the kernels; `tinyphi3/models/model.py`: the "auto"
#   choice.
