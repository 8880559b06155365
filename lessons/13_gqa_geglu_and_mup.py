# %% [markdown]
# # Lesson 13: GQA, GEGLU and μP
#
# phi-3-small (7B) is not phi-3-mini made wider. §2 of the Phi-3 report lists what changes:
# "grouped-query attention, with 4 queries sharing 1 key", "We switched from GELU activation to
# GEGLU and used Maximal Update Parametrization (muP) to tune hyperparameters on a small proxy
# model and transfer them to the target 7B model", and block-sparse attention (lesson 14). This
# lesson takes the first three apart with small arrays and the library's own functions:
#
# 1. grouped-query attention: KV heads shared by `g` query heads, equal to multi-head attention
#    with each KV head repeated `g` times, and a KV cache `H / KV` times smaller;
# 2. phi-3-small's fused `query_key_value` projection, laid out per KV group `[KV, g + 2, hd]`;
# 3. GEGELU: an interleaved split, a clamp, and `quick_gelu(a) * (b + 1)`;
# 4. μP's attention scale `1/d` instead of `1/sqrt(d)`;
# 5. μP's embedding multiplier and the division of the logits by the width multiplier;
# 6. the initialisation, which is not μP: GPT-2's and Megatron-LM's `1/sqrt(2 L)` scaling of a
#    residual output projection, and which projection the published code really scales.

# %%
import math
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import numpy as np

import _plot
from tinyphi3.models import phi3_small as small
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.config import preset
from tinyphi3.nn.layers import gegelu, gegelu_inputs, geglu_mlp, layer_norm, quick_gelu, softmax
from tinyphi3.models.model import Phi3
from tinyphi3.models.phi3 import split_qkv

np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
big = preset("phi-3-small-8k")      # the published configuration
tiny = preset("tiny-small")         # the same architecture, small enough to run anywhere

# %% [markdown]
# ## 1. Grouped-query attention
#
# Multi-head attention gives each of the `H` query heads its own key and value head. Grouped-query
# attention (Ainslie et al. 2023) keeps `H` query heads but only `KV` key/value heads; each KV
# head serves a group of `g = H / KV` consecutive query heads: query head `h` reads KV head
# `h // g`. phi-3-small has 32 query heads and 8 KV heads, so `g = 4`.
#
# `tinyphi3.nn.attention.attention` takes `q` as `[B, H, T, hd]` and `k`, `v` as `[B, KV, S, hd]`.
# The same answer comes from multi-head attention after repeating every KV head `g` times:

# %%
H, KV, hd, T = 8, 2, 16, 6
g = H // KV
q = rng.standard_normal((1, H, T, hd)).astype(np.float32)     # [B, H, T, hd]
k = rng.standard_normal((1, KV, T, hd)).astype(np.float32)    # [B, KV, T, hd]
v = rng.standard_normal((1, KV, T, hd)).astype(np.float32)
mask = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))   # [B, 1, T, S]
scale = 1.0 / hd

gqa = attention(q, k, v, mask, scale)                                    # KV = 2 heads
k_rep, v_rep = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)          # -> [B, H, T, hd]
mha = attention(q, k_rep, v_rep, mask, scale)                            # KV = H = 8 heads
print(f"H = {H} query heads, KV = {KV} KV heads, g = {g}: query heads 0..{H - 1} read KV heads",
      [h // g for h in range(H)])
print(f"max |GQA - MHA with repeated KV heads| = {np.abs(gqa - mha).max():.1e}")
assert np.allclose(gqa, mha, atol=1e-6)

# %% [markdown]
# The grouping is by consecutive heads (`np.repeat`: 0 0 0 0 1 1 1 1), not round robin
# (`np.tile`: 0 1 0 1 ...). Repeating the wrong way is a different model, and the check above
# would catch it:

# %%
tiled = attention(q, np.tile(k, (1, g, 1, 1)), np.tile(v, (1, g, 1, 1)), mask, scale)
print(f"max |GQA - MHA with tiled KV heads|    = {np.abs(gqa - tiled).max():.3f}")
assert not np.allclose(gqa, tiled, atol=1e-3)

# %% [markdown]
# What GQA saves is the KV cache: during generation every layer keeps a key and a value for every
# KV head and every past token. Per token and layer that is `2 * KV * hd` numbers instead of
# `2 * H * hd`: `H / KV = 4` times less for phi-3-small. At its full 8192-token context, in
# 16-bit numbers:

# %%
def kv_cache_bytes(config, tokens, kv_heads, bytes_per_value=2):
    """Keys and values of every layer for `tokens` tokens: layers * 2 * KV * hd * tokens."""
    return config.num_hidden_layers * 2 * kv_heads * config.head_dim * tokens * bytes_per_value


gib = 2 ** 30
with_gqa = kv_cache_bytes(big, 8192, big.num_key_value_heads)
without = kv_cache_bytes(big, 8192, big.num_attention_heads)
print(f"phi-3-small, 8192 tokens: KV cache {with_gqa / gib:.2f} GiB with {big.num_key_value_heads} "
      f"KV heads, {without / gib:.2f} GiB with {big.num_attention_heads} (one per query head)")
assert with_gqa == 1 * gib and without / with_gqa == big.num_attention_heads / big.num_key_value_heads

# %% [markdown]
# The library's cache holds exactly that (in float32 here, 4 bytes a number). We run the tiny
# phi-3-small (4 query heads, 2 KV heads) over 20 tokens and weigh its cache:

# %%
model = Phi3(tiny, seed=0)
cache = model.new_cache(1)
model(rng.integers(3, tiny.vocab_size - 3, size=(1, 20)), cache=cache)
print(f"tiny-small: {tiny.num_attention_heads} heads, {tiny.num_key_value_heads} KV heads, "
      f"hd {tiny.head_dim}, {tiny.num_hidden_layers} layers: cache of 20 tokens = "
      f"{cache.nbytes()} bytes")
assert cache.nbytes() == kv_cache_bytes(tiny, 20, tiny.num_key_value_heads, bytes_per_value=4)

# %% [markdown]
# ## 2. The fused `query_key_value` projection, grouped
#
# phi-3-mini computes `q`, `k` and `v` with one matrix whose output is `[all q | all k | all v]`
# (`tinyphi3.models.phi3.split_qkv`). phi-3-small's `query_key_value` (with a bias) is also one
# matrix of `(H + 2 KV) * hd` outputs, but laid out *per KV group*: the `g` queries of a group,
# then its key, then its value, group after group. Viewed as `[..., KV, g + 2, hd]`:
#
#     group 0: q_0 q_1 q_2 q_3 k_0 v_0 | group 1: q_4 q_5 q_6 q_7 k_1 v_1 | ...
#
# The picture draws both layouts for 8 query heads and 2 KV heads (`g = 4`, phi-3-small's ratio;
# the real model repeats the pattern 8 times). Each coloured slot is `hd` outputs, and its name
# is where the library's split sends it:

# %%
pic = tiny.replace(num_attention_heads=8, num_key_value_heads=2)   # g = 4, hd = 64 / 8 = 8


def slot_owners(split, config):
    """(name, colour) of every hd-wide output slot, read off the split: H + 2KV slots."""
    g_ = config.num_attention_heads // config.num_key_value_heads
    n_slots = config.num_attention_heads + 2 * config.num_key_value_heads
    ids = np.repeat(np.arange(n_slots, dtype=np.float32), config.head_dim)[None, None]
    q_, k_, v_ = split(ids, config)                  # every slot holds its own index
    owner = {}
    for h in range(config.num_attention_heads):
        owner[int(q_[0, h, 0, 0])] = (f"q{h}", (h // g_) % 2)          # colours 0, 1: queries
    for j in range(config.num_key_value_heads):
        owner[int(k_[0, j, 0, 0])] = (f"k{j}", 2 + j % 2)              # 2, 3: keys
        owner[int(v_[0, j, 0, 0])] = (f"v{j}", 4 + j % 2)              # 4, 5: values
    assert sorted(owner) == list(range(n_slots))     # every slot read exactly once
    return [owner[s] for s in range(n_slots)]


grouped_slots = slot_owners(small.split_grouped_qkv, pic)
mini_slots = slot_owners(split_qkv, pic)
print("phi-3-small:", " ".join(name for name, _ in grouped_slots))
print("phi-3-mini: ", " ".join(name for name, _ in mini_slots))
assert [name for name, _ in grouped_slots[:6]] == ["q0", "q1", "q2", "q3", "k0", "v0"]
assert [name for name, _ in mini_slots[8:]] == ["k0", "k1", "v0", "v1"]
print("picture:", _plot.cell_rows(
    "13_qkv_slots.png",
    [("phi-3-small query_key_value", [(n, c, 2) for n, c in grouped_slots]),
     ("phi-3-mini qkv_proj", [(n, c, 2) for n, c in mini_slots])],
    "The fused projection's output, slot by slot: 8 query heads, 2 KV heads (g = 4)",
    ["queries of KV group 0", "queries of KV group 1", "key k0", "key k1", "value v0",
     "value v1"],
    note="each slot is hd outputs; phi-3-small has 32 query and 8 KV heads, the same pattern "
         "8 times"))

# %% [markdown]
# To see where each slice goes in the tiny model we fill every `hd`-wide slot with a label:
# 10 * group + slot.

# %%
H, KV, hd = tiny.num_attention_heads, tiny.num_key_value_heads, tiny.head_dim
g = H // KV
labels = (10 * np.arange(KV)[:, None] + np.arange(g + 2)[None, :]).astype(np.float32)  # [KV, g + 2]
qkv = np.repeat(labels.reshape(-1), hd)[None, None]          # -> [B=1, T=1, (H + 2KV) hd]
q, k, v = small.split_grouped_qkv(qkv, tiny)                 # q [1, H, 1, hd]; k, v [1, KV, 1, hd]
print(f"tiny-small: H = {H}, KV = {KV}, g = {g}, hd = {hd}; slot labels per group:\n{labels}")
print("query heads get labels", q[0, :, 0, 0], " keys", k[0, :, 0, 0], " values", v[0, :, 0, 0])
for h in range(H):
    assert np.all(q[0, h] == 10 * (h // g) + h % g)          # query h: group h // g, slot h % g
for j in range(KV):
    assert np.all(k[0, j] == 10 * j + g) and np.all(v[0, j] == 10 * j + g + 1)

# %% [markdown]
# Read with phi-3-mini's split, the same vector gives other heads: query head 2 would get group
# 0's key, and so on. A converter between the two layouts only has to permute the output rows of
# the weight (and the bias); both splits then agree:

# %%
q_mini, k_mini, v_mini = split_qkv(qkv, tiny)
print("phi-3-mini's split of the same vector: queries", q_mini[0, :, 0, 0], " keys",
      k_mini[0, :, 0, 0], " values", v_mini[0, :, 0, 0])
assert not np.array_equal(q_mini, q)
slots = np.arange((H + 2 * KV) * hd).reshape(KV, g + 2, hd)       # output index, grouped view
order = np.concatenate([slots[:, :g].reshape(-1), slots[:, g].reshape(-1),
                        slots[:, g + 1].reshape(-1)])          # [all q | all k | all v]
W = rng.standard_normal(((H + 2 * KV) * hd, tiny.hidden_size)).astype(np.float32)
x = rng.standard_normal((1, 3, tiny.hidden_size)).astype(np.float32)
grouped = small.split_grouped_qkv(x @ W.T, tiny)
permuted = split_qkv(x @ W[order].T, tiny)
assert all(np.array_equal(a, b) for a, b in zip(grouped, permuted))
print("rows permuted [KV, g + 2, hd] -> [q | k | v]: both splits give the same q, k, v")

# %% [markdown]
# ## 3. GEGELU
#
# phi-3-mini's MLP gates with SiLU: `silu(gate) * up`. phi-3-small's `up_proj` (with a bias)
# makes `2I` numbers, and its activation `gegelu` turns them into `I`:
#
#     a = x[..., 0::2]   (even channels: the gelu input)
#     b = x[..., 1::2]   (odd channels: the linear input)
#     a = min(a, limit);  b = clip(b, -limit, limit)        limit = 20, infinities left alone
#     gegelu(x) = quick_gelu(a) * (b + 1),      quick_gelu(a) = a * sigmoid(1.702 a)
#
# Three details differ from the textbook GEGLU (Shazeer 2020): the split interleaves channels
# instead of cutting the vector in halves, both inputs are clamped, and the linear input gets
# `+ 1`. First, `quick_gelu` is the sigmoid approximation of GELU (Hendrycks & Gimpel 2016):

# %%
xs = np.linspace(-4, 4, 161)
exact_gelu = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in xs])
gap = np.abs(quick_gelu(xs) - exact_gelu)
print(f"|quick_gelu - GELU| <= {gap.max():.4f} on [-4, 4] (largest at x = {xs[gap.argmax()]:.2f})")
assert gap.max() < 0.025
print("picture:", _plot.line_plot("13_quick_gelu.png",
                                  {"quick_gelu: x sigmoid(1.702 x)": (xs, quick_gelu(xs)),
                                   "GELU: x Phi(x)": (xs, exact_gelu),
                                   "ReLU": (xs, np.maximum(xs, 0))},
                                  "quick_gelu, GELU's sigmoid approximation", "x", "activation",
                                  overlap=True))

# %% [markdown]
# The split is interleaved: channel 0 pairs with channel 1, channel 2 with channel 3, and so on.
# Splitting in halves, as phi-3-mini's `silu_and_mul` does, pairs other channels:

# %%
x = rng.standard_normal((2, 8)).astype(np.float32)             # [N, 2I] with I = 4
out = gegelu(x, 20.0)                                          # -> [N, I]
by_hand = quick_gelu(x[:, 0::2]) * (x[:, 1::2] + 1)
halves = quick_gelu(x[:, :4]) * (x[:, 4:] + 1)
print("gegelu(x)           ", out[0])
print("interleaved by hand ", by_hand[0])
print("halves (wrong)      ", halves[0])
assert out.shape == (2, 4) and np.allclose(out, by_hand) and not np.allclose(out, halves)

# %% [markdown]
# The clamp bounds what a single channel can contribute: the gelu input is clamped from above
# only (quick_gelu of a large negative number is 0 anyway), the linear input on both sides. The
# picture moves one input at a time and keeps the other fixed:

# %%
limit = big.gegelu_limit
sweep = np.linspace(-30, 30, 241).astype(np.float32)
pair = lambda a, b: np.stack([a, b], axis=-1)                  # [N] x 2 -> [N, 2]: one (a, b) each
vary_a = gegelu(pair(sweep, np.zeros_like(sweep)), limit)[:, 0]        # b = 0
vary_b = gegelu(pair(np.ones_like(sweep), sweep), limit)[:, 0]         # a = 1
a_in, b_in = gegelu_inputs(pair(sweep, sweep), limit)
print(f"limit {limit:g}: a in [{a_in.min():.0f}, {a_in.max():.0f}], b in [{b_in.min():.0f}, "
      f"{b_in.max():.0f}] for inputs in [-30, 30]")
assert a_in.min() == -30 and a_in.max() == limit and b_in.min() == -limit and b_in.max() == limit
assert np.all(vary_a[sweep >= limit] == vary_a[sweep >= limit][0])       # flat past the limit
assert np.allclose(vary_b[sweep >= limit], quick_gelu(np.float32(1)) * (limit + 1))
assert np.allclose(vary_b[sweep <= -limit], quick_gelu(np.float32(1)) * (1 - limit))
print("picture:", _plot.line_plot(
    "13_gegelu_clamp.png",
    {"no clamp: quick_gelu(a), b = 0": (sweep, quick_gelu(sweep)),
     "vary a, b = 0: quick_gelu(min(a, 20))": (sweep, vary_a),
     "vary b, a = 1: quick_gelu(1) (clip(b, -20, 20) + 1)": (sweep, vary_b)},
    f"GEGELU and its clamp at {limit:g} (phi-3-small)", "the input that varies (a or b)",
    "gegelu output", hlines={"a = limit, b = 0": float(quick_gelu(np.float32(limit)))},
    overlap=True))
inf = np.float32(np.inf)
a_inf, b_inf = gegelu_inputs(np.array([inf, -inf], np.float32), limit)
assert a_inf[0] == inf and b_inf[0] == -inf                  # infinities are not clamped

# %% [markdown]
# The `+ 1` makes the unit start as a plain GELU: when `b` is near 0, as it is at initialisation
# (weights of std 0.02), `gegelu` is `quick_gelu(a)` and does not vanish. Without the `+ 1` the
# output would be the product of two small numbers, an order of magnitude smaller here:

# %%
C, I = tiny.hidden_size, tiny.intermediate_size
up_w = (rng.standard_normal((2 * I, C)) * 0.02).astype(np.float32)
up = rng.standard_normal((64, C)).astype(np.float32) @ up_w.T  # [N, C] -> [N, 2I], std ~ 0.16
a, b = up[:, 0::2], up[:, 1::2]
with_one, without_one = np.abs(gegelu(up, limit)).mean(), np.abs(quick_gelu(a) * b).mean()
print(f"mean |quick_gelu(a) (b + 1)| = {with_one:.4f}, mean |quick_gelu(a) b| = {without_one:.4f}")
assert with_one > 5 * without_one

# %% [markdown]
# The whole MLP is `down_proj(gegelu(up_proj(x)))`, both projections with a bias:

# %%
down_w = (rng.standard_normal((C, I)) * 0.02).astype(np.float32)
up_b, down_b = np.zeros(2 * I, np.float32), np.zeros(C, np.float32)
h = rng.standard_normal((1, 5, C)).astype(np.float32)          # [B, T, C]
y = geglu_mlp(h, up_w, up_b, down_w, down_b, limit)           # -> [B, T, C]
assert y.shape == (1, 5, C)
assert np.allclose(y, gegelu(h @ up_w.T + up_b, limit) @ down_w.T + down_b, atol=1e-6)
print(f"geglu_mlp: [1, 5, {C}] -> up_proj [1, 5, {2 * I}] -> gegelu [1, 5, {I}] -> down_proj "
      f"[1, 5, {C}]")

# %% [markdown]
# ## 4. μP: the attention scale is `1/d`
#
# Maximal Update Parametrization (μP; Yang & Hu 2021, "Tensor Programs IV", derives it; Yang et
# al. 2022, "Tensor Programs V", uses it to tune a narrow proxy and transfer the hyperparameters)
# chooses how initialisations, multipliers and learning rates scale with the *width*, so that
# every layer's update stays of the same size as the model widens and the best hyperparameters
# of the narrow model stay the best for the wide one. In phi-3-small's published model code μP is
# three width-dependent factors, one per section here and in section 5: a multiplier on the
# embedding output (`mup_embedding_multiplier`), the attention logits scaled by `1/d` with a
# tunable `mup_attn_multiplier`, and the output logits divided by `mup_width_multiplier`. (μP
# also scales the learning rate of the hidden matrices with the width; that belongs to the
# training optimizer, which the model code does not contain.)
#
# For attention μP asks for the scores `q . k / d` instead of the usual `q . k / sqrt(d)`.
#
# Why: `q . k` is a sum of `d` products. At initialisation `q` and `k` are unrelated and the
# products have random signs, so the sum grows like `sqrt(d)`, and `1/sqrt(d)` keeps it of order
# 1. Training makes queries and keys that should match point the same way: the products then have
# a positive mean and the sum grows like `d` (the law of large numbers), so `1/sqrt(d)` lets the
# scores grow like `sqrt(d)` with the width, while `1/d` keeps them the same. We measure both
# cases for unit-variance vectors, "aligned" meaning correlation 0.5 between `q` and `k`:

# %%
widths = [16, 32, 64, 128, 256, 512, 1024]
rho = 0.5
random_dot, aligned_dot = [], []
for d in widths:
    qs = rng.standard_normal((2000, d))
    noise = rng.standard_normal((2000, d))
    random_dot.append(np.abs((qs * noise).sum(-1)).mean())                       # unrelated
    aligned_dot.append(((qs * (rho * qs + math.sqrt(1 - rho ** 2) * noise)).sum(-1)).mean())
random_dot, aligned_dot, d_arr = np.array(random_dot), np.array(aligned_dot), np.array(widths)
print(" width d | random |q.k| | aligned q.k | aligned / sqrt(d) | aligned / d")
for d, r, a in zip(widths, random_dot, aligned_dot):
    print(f" {d:7d} | {r:12.2f} | {a:11.1f} | {a / math.sqrt(d):17.2f} | {a / d:11.3f}")
assert np.allclose(random_dot / np.sqrt(d_arr), math.sqrt(2 / math.pi), rtol=0.1)   # ~ sqrt(d)
assert np.allclose(aligned_dot / d_arr, rho, rtol=0.1)                                # ~ d
growth = (aligned_dot[-1] / math.sqrt(1024)) / (aligned_dot[0] / math.sqrt(16))
print(f"from d = 16 to d = 1024, aligned q.k / sqrt(d) grows {growth:.1f}x (sqrt(64) = 8); "
      f"q.k / d stays at {aligned_dot[-1] / 1024:.2f}")
assert 7 < growth < 9
print("picture:", _plot.line_plot(
    "13_mup_attention_scale.png",
    {"aligned q.k / sqrt(d)": (np.arange(len(widths)), aligned_dot / np.sqrt(d_arr)),
     "aligned q.k / d (muP)": (np.arange(len(widths)), aligned_dot / d_arr),
     "random |q.k| / sqrt(d)": (np.arange(len(widths)), random_dot / np.sqrt(d_arr))},
    "Attention scores of trained-like (aligned) and random q, k against head width",
    "head dimension d (doubling)", "score", log_y=True, xticks=[str(d) for d in widths]))

# %% [markdown]
# What that does to the softmax: one query and six keys whose correlation with it is 0, 0.1, ...
# 0.5 (the rest of each key orthogonal to the query, so `q . k = rho d` exactly). With `1/d` the
# attention weights are the same at every width; with `1/sqrt(d)` they sharpen with the width
# until the query looks at one key only.

# %%
key_rho = np.linspace(0, 0.5, 6)
weights_by_d = []
for d in (16, 128, 1024):
    qv = rng.standard_normal(d)
    qv *= math.sqrt(d) / np.linalg.norm(qv)                     # |q|^2 = d
    keys = []
    for r in key_rho:
        noise = rng.standard_normal(d)
        noise -= (noise @ qv) / d * qv                          # orthogonal to q
        keys.append(r * qv + math.sqrt(1 - r * r) * noise)
    dots = np.array([qv @ kk for kk in keys])                   # = rho * d
    by_d, by_sqrt = softmax(dots / d), softmax(dots / math.sqrt(d))
    weights_by_d.append(by_d)
    print(f"d = {d:4d}: weights with 1/d {by_d}, with 1/sqrt(d) {by_sqrt}")
assert np.allclose(weights_by_d[0], weights_by_d[-1]) and by_d.max() < 0.25
assert by_sqrt.max() > 0.9                                      # d = 1024: one key takes it all
print(f"phi-3-small: scale = mup_attn_multiplier / head_dim = {big.mup_attn_multiplier:g} / "
      f"{big.head_dim} = {big.attention_scale:.6f}; phi-3-mini: 1/sqrt(96) = "
      f"{preset('phi-3-mini-4k').attention_scale:.6f}")
assert big.attention_scale == 1 / 128 and preset("phi-3-mini-4k").attention_scale == 96 ** -0.5

# %% [markdown]
# ## 5. μP: the embedding multiplier and the logits divided by the width multiplier
#
# The same argument at the other end of the network. The logits are `h . e_v` for the final
# hidden state `h` (LayerNorm output: numbers of order 1, `|h|^2 ~ C`) and the row `e_v` of the
# tied embedding table (std 0.02, `|e_v| ~ 0.02 sqrt(C)`). Once training has aligned `h` with
# the row of the right token, that logit grows like `C`: a wider model would be more confident
# for the same learned alignment, and the proxy's tuned learning rates would not carry over.
# μP divides the logits by `mup_width_multiplier` = width / proxy width (8.0 for phi-3-small:
# 4096 / 8 = 512 would be the proxy's width). We measure the right token's logit through the
# library's own head (`Phi3.lm_head`: final LayerNorm, tied embedding, division), with a proxy
# width of 64. For each of 32 tokens we build a hidden state `h` with correlation 0.3 to that
# token's row and read that token's logit (the mean over the 32 tokens):

# %%
proxy, rho, n = 64, 0.3, 32
rows = []
for C in (64, 128, 256, 512, 1024):
    table = Phi3(tiny.replace(hidden_size=C, num_hidden_layers=1), seed=1).params[
        "model.embed_tokens.weight"]                           # [V, C], std 0.02
    unit = table[:n] / np.linalg.norm(table[:n], axis=1, keepdims=True)   # [n, C]
    noise = rng.standard_normal((n, C))
    noise -= (noise * unit).sum(1, keepdims=True) * unit        # orthogonal to its row
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    h = (math.sqrt(C) * (rho * unit + math.sqrt(1 - rho ** 2) * noise)).astype(np.float32)
    for mup in (True, False):
        config = tiny.replace(hidden_size=C, num_hidden_layers=1,
                              mup_width_multiplier=C / proxy if mup else None)
        m = Phi3(config, seed=1)                                # the same weights for both
        logits = m.lm_head(h[None], m.params)[0]                # [1, n, C] -> [n, V]
        aligned = logits[np.arange(n), np.arange(n)].mean()     # each h's own token
        rows.append((C, mup, float(aligned), float(logits[:, :-3].std())))
print(" width C | width multiplier | logit of the aligned token | std of all logits")
for C, mup, target, spread in rows:
    label = f"{C / proxy:g}" if mup else "none"
    print(f" {C:7d} | {label:>16s} | {target:26.3f} | {spread:17.3f}")
with_mup = np.array([t for _, mup, t, _ in rows if mup])
without_mup = np.array([t for _, mup, t, _ in rows if not mup])
print(f"64 -> 1024: the aligned logit grows {without_mup[-1] / without_mup[0]:.1f}x without the "
      f"division, {with_mup[-1] / with_mup[0]:.2f}x with it")
assert 12 < without_mup[-1] / without_mup[0] < 20                       # ~ C: 16x
assert 0.75 < with_mup[-1] / with_mup[0] < 1.25                         # ~ constant
assert np.allclose(without_mup / with_mup, np.array([1, 2, 4, 8, 16]), rtol=1e-4)

# %% [markdown]
# The last column is the other half of the story: the logits of tokens `h` is not aligned with
# are random overlaps, which grow like `sqrt(C)`; with the division they shrink like
# `1/sqrt(C)`. μP wants exactly that: an output near zero at initialisation, and of order 1 only
# where training has aligned something, the same at every width.

# %%
spread_mup = [s for _, mup, _, s in rows if mup]
assert spread_mup[-1] < spread_mup[0] / 3

# %% [markdown]
# The embedding multiplier works at the input. phi-3-small ties its head to its embedding table,
# so one table of std 0.02 serves twice: as the output head, where small rows keep the logits
# small, and as the input, where the residual stream wants numbers nearer 1. `embed` multiplies
# the looked-up rows by `mup_embedding_multiplier = 10` (a width-independent constant, tuned on
# the proxy like a learning rate), and the head divides by the width multiplier: the input and
# the output get different scales from the same weights. Both with the library on tiny-small:

# %%
model = Phi3(tiny, seed=0)
w = model.params
table = w["model.embed_tokens.weight"]                         # [V, C], std 0.02
ids = np.array([[5, 17, 42]])
x = model.embed(ids)                                           # [B, T] -> [B, T, C]
assert np.allclose(x, 10.0 * table[ids]) and tiny.mup_embedding_multiplier == 10.0
print(f"embedding rows: rms {np.sqrt((table ** 2).mean()):.3f}; after x 10: "
      f"rms {np.sqrt((x ** 2).mean()):.3f} entering the first block")
final = layer_norm(x, w["model.final_layernorm.weight"], w["model.final_layernorm.bias"],
                   tiny.norm_eps)
logits = model.lm_head(x, w)                                   # [B, T, C] -> [B, T, V]
by_hand = final @ table.T / tiny.mup_width_multiplier          # tied head, divided by 8
real = np.ones(tiny.vocab_size, bool)
real[list(tiny.dummy_token_ids)] = False
assert np.allclose(logits[..., real], by_hand[..., real], atol=1e-5)
assert np.all(logits[..., ~real] == np.finfo(np.float32).min)   # the padding rows: never chosen
print(f"logits = final_layernorm(x) @ embed_tokens^T / {tiny.mup_width_multiplier:g}: std "
      f"{logits[..., real].std():.4f}; the {int((~real).sum())} dummy rows get float32's minimum")

# %% [markdown]
# ## 6. The initialisation: scaled residual projections, not μP
#
# phi-3-small starts every matrix with std `initializer_range = 0.02` except the MLP's
# `down_proj`, drawn at `0.02 / sqrt(2 L)` for `L` layers. This is not μP: μP scales with the
# width, this scales with the depth. It is the scaled initialisation of GPT-2 (Radford et al.
# 2019, §2.3: the weights of the residual layers scaled by `1/sqrt(N)`, `N` the number of
# residual layers) and of Megatron-LM (`scaled_init_method_normal`: std `sigma / sqrt(2 L)` for
# the output projection of attention and of the MLP). Each layer adds two branches to the
# residual stream; at initialisation their outputs are nearly independent, so after `L` layers
# the stream holds `2 L` random terms whose variances add up. Shrinking each branch's output
# projection by `1/sqrt(2 L)` keeps that sum the same size at any depth.
#
# Which projections does the published model scale? `Phi3SmallPreTrainedModel._init_weights`
# (`modeling_phi3_small.py`, published with the phi-3-small model) draws every `nn.Linear` weight
# and the embedding from normal(0, 0.02), then draws again, at `0.02 / sqrt(2 *
# num_hidden_layers)`, every parameter whose name *contains* `c_proj.weight`, `down_proj.weight`
# or `o_proj.weight`. Its comment says that the attention output projection and the MLP's
# `down_proj` are both meant, as in Megatron; but `c_proj` is GPT-2's name and `o_proj` Llama's
# (and phi-3-mini's), and phi-3-small calls its attention output `dense`
# (`model.layers.N.self_attn.dense.weight`), which contains none of the three. So the published
# code scales `mlp.down_proj.weight` only, and `init_std` does the same. The name test, applied to
# every tensor name of phi-3-small (the library's names are the published ones):

# %%
SCALED_NAMES = ("c_proj.weight", "down_proj.weight", "o_proj.weight")   # the published test
matrices = [n for n, shape in small.parameter_shapes(big).items()
            if len(shape) == 2]                                     # every 2-D weight
matched = [n for n in matrices if any(part in n for part in SCALED_NAMES)]
print(f"phi-3-small: {len(matrices)} matrices; the name test matches {len(matched)}: "
      f"{matched[0]} ... {matched[-1]}")
assert matched == [f"model.layers.{i}.mlp.down_proj.weight" for i in range(big.num_hidden_layers)]
assert not any(part in "model.layers.0.self_attn.dense.weight" for part in SCALED_NAMES)
residual_std = 0.02 / math.sqrt(2 * big.num_hidden_layers)
for n in matrices:                                   # init_std: exactly the published choice
    assert small.init_std(n, big) == (residual_std if n in matched else 0.02)
print(f"init_std: down_proj {small.init_std(matched[0], big):.5f} = 0.02 / sqrt(2 x "
      f"{big.num_hidden_layers}); self_attn.dense "
      f"{small.init_std('model.layers.0.self_attn.dense.weight', big):.2f}, like every other "
      f"matrix")

# %% [markdown]
# The random weights of the tiny model (4 layers: `0.02 / sqrt(8) = 0.0071`) are drawn with
# those stds (`tinyphi3.models.weights.init_parameters`):

# %%
drawn = {kind: np.mean([w[f"model.layers.{i}.{kind}.weight"].std()
                        for i in range(tiny.num_hidden_layers)])
         for kind in ("self_attn.query_key_value", "self_attn.dense", "mlp.up_proj",
                      "mlp.down_proj")}
for kind, std in drawn.items():
    print(f"  {kind:27s} std {std:.4f}")
assert abs(drawn["mlp.down_proj"] / (0.02 / math.sqrt(2 * tiny.num_hidden_layers)) - 1) < 0.05
assert all(abs(drawn[k] / 0.02 - 1) < 0.05 for k in drawn if k != "mlp.down_proj")

# %% [markdown]
# ## Summary
#
# - GQA: query head `h` reads KV head `h // g`; it equals multi-head attention with each KV head
#   repeated `g` times, and the KV cache shrinks by `H / KV` (4 for phi-3-small: 1 GiB at 8K).
# - phi-3-small's fused `query_key_value` is laid out per group, `[KV, g + 2, hd]`: the `g`
#   queries, then the key, then the value; a row permutation turns it into `[q | k | v]`.
# - GEGELU splits even/odd channels, clamps at 20 (the gelu input from above only), and computes
#   `quick_gelu(a) * (b + 1)`.
# - μP scales attention by `1/d`: trained queries and keys are aligned, so `q . k` grows like
#   `d`, not `sqrt(d)`. For the same reason the logits are divided by the width multiplier; the
#   embedding multiplier gives the input a larger scale than the tied output head.
# - The initialisation is not μP: `down_proj` starts at `0.02 / sqrt(2 L)`, GPT-2's and
#   Megatron-LM's scaled residual projection. The published name test was written for both output
#   projections, but matches only `down_proj`: phi-3-small's attention output is called `dense`.
#
# ## Where it lives
#
# - `tinyphi3/nn/attention.py`: `attention` (`q` with `H` heads, `k`, `v` with `KV` heads; query
#   head `h` reads KV head `h // g`), `causal_mask`.
# - `tinyphi3/models/phi3_small.py`: `split_grouped_qkv`, `self_attention`, `decoder_layer`,
#   `scale_embeddings` (the embedding multiplier), `lm_head` (the width multiplier),
#   `mask_dummy_logits`, `parameter_shapes`, `init_std`; `tinyphi3/models/phi3.py`: `split_qkv`,
#   phi-3-mini's `[q | k | v]`.
# - `tinyphi3/nn/layers.py`: `gegelu`, `geglu_mlp`, `layer_norm`; `tinyphi3/nn/activations.py`:
#   `quick_gelu`, `gegelu_inputs` (the clamp).
# - `tinyphi3/config/phi3.py`: `Phi3Config.attention_scale` (`1/d` with μP), the `mup_*` fields;
#   `tinyphi3/config/small.py`: phi-3-small's published configuration keys.
# - `tinyphi3/models/weights.py`: `init_parameters`, which draws each matrix with `init_std`;
#   `tinyphi3/inference/cache.py`: `KVCache.nbytes`.
