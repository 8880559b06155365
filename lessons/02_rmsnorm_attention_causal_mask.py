# %% [markdown]
# # Lesson 2: RMSNorm, attention and the causal mask
#
# The first half of every Phi-3 block normalises the residual stream with RMSNorm and then lets
# each token look at the tokens before it with causal self-attention:
#
#     h = x + o_proj(attention(rms_norm(x)))
#
# This lesson builds the pieces by hand, one at a time, and checks each against the library:
#
# 1. RMSNorm, and why it does not care how large its input is;
# 2. softmax, written so it never overflows;
# 3. scaled dot-product attention for one head;
# 4. the causal mask (a token sees itself and its past) and the sliding window;
# 5. grouped-query attention: fewer key/value heads, a smaller KV cache, the same maths.
#
# The report (§2, Technical Specifications) describes phi-3-mini as a transformer decoder
# (Vaswani et al. 2017) "built upon a similar block structure as Llama-2", with 3072 hidden
# dimensions, 32 heads and 32 layers; phi-3-medium has 40 heads and 40 layers, and phi-3-small
# uses grouped-query attention with 4 queries sharing 1 key. Llama-2's block is the pre-norm
# block above. The report names neither RMSNorm nor the sliding window: those, like medium's 10
# key/value heads, come from the published config.json files.
#
# Pictures go to `lesson_outputs/` in the current directory.

# %%
import math

import numpy as np

import _plot
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.config import preset
from tinyphi3.nn.layers import embedding, linear, rms_norm, softmax
from tinyphi3.models.call import ForwardCall
from tinyphi3.models.model import FLOAT, Phi3
from tinyphi3.models.phi3 import self_attention
from tinyphi3.nn.rope import apply_rope, rope_cos_sin, rope_frequencies

np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. RMSNorm
#
# RMSNorm (Zhang & Sennrich 2019) divides each vector by its root mean square and multiplies by a
# learned gain `w`, one number per channel:
#
#     rms_norm(x) = w * x / sqrt(mean(x^2) + eps)
#
# Unlike LayerNorm it does not subtract the mean and has no bias: one statistic instead of two.
# `eps` (1e-5 in Phi-3) only keeps an all-zero vector from dividing by zero.

# %%
C, eps = 8, 1e-5
x = rng.standard_normal((2, 3, C)).astype(np.float32) * 4.0   # [B, T, C]
w = rng.uniform(0.5, 1.5, C).astype(np.float32)               # [C]

by_hand = w * x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)
assert np.allclose(by_hand, rms_norm(x, w, eps), atol=1e-6)

unit = rms_norm(x, np.ones(C, np.float32), eps)
print("rms of the input rows :", np.sqrt(np.mean(x**2, axis=-1)).ravel())
print("rms after rms_norm    :", np.sqrt(np.mean(unit**2, axis=-1)).ravel())
assert np.allclose(np.sqrt(np.mean(unit**2, axis=-1)), 1.0, atol=1e-5)

# %% [markdown]
# Because the root mean square scales with the input, scaling the input by any `c > 0` changes
# nothing: `rms_norm(c x) = rms_norm(x)`. (A negative `c` flips the sign.) That holds while
# `mean(x^2)` is large compared with `eps`; for a vector that is almost zero, `eps` takes over
# and the output shrinks instead of blowing up.

# %%
for c in (0.5, 10.0, 1000.0):
    assert np.allclose(rms_norm(c * x, w, eps), rms_norm(x, w, eps), atol=1e-5), c
assert np.allclose(rms_norm(-x, w, eps), -rms_norm(x, w, eps))

tiny = 1e-4 * x / np.sqrt(np.mean(x**2))                 # rms 1e-4, so mean(x^2) = 1e-8 << eps
shrink = np.abs(rms_norm(tiny, w, eps)).mean() / np.abs(rms_norm(x, w, eps)).mean()
print(f"scale invariant for c in (0.5, 10, 1000); "
      f"a vector of rms 1e-4 comes out {shrink:.3f}x as large")
assert shrink < 0.1

# %% [markdown]
# ## 2. Softmax
#
#     softmax(s)_j = exp(s_j) / sum_k exp(s_k)
#
# turns scores into probabilities. Adding a constant to every score does not change the result,
# so the library subtracts the largest score first; then `exp` never sees a number above 0 and
# cannot overflow, even where the naive formula returns NaN.

# %%
s = np.array([2.0, 1.0, 0.1, -1.0], dtype=np.float32)
naive = np.exp(s) / np.exp(s).sum()
print("scores       :", s)
print("softmax      :", softmax(s), " sum =", softmax(s).sum())
assert np.allclose(naive, softmax(s)) and np.isclose(softmax(s).sum(), 1.0)
assert np.allclose(softmax(s + 100.0), softmax(s), atol=1e-6)  # shift invariance

with np.errstate(over="ignore", invalid="ignore"):
    big = s.astype(np.float64) + 1000.0                  # exp(1002) overflows even in float64
    naive_big = np.exp(big) / np.exp(big).sum()
print("naive at +1000:", naive_big, "  library:", softmax(big))
assert np.isnan(naive_big).all() and np.allclose(softmax(big), softmax(s), atol=1e-6)

# %% [markdown]
# ## 3. Scaled dot-product attention, one head
#
# Each token has a query `q`, a key `k` and a value `v` (vectors of `hd` numbers). Token `i`
# scores every key with a dot product, turns the scores into weights with softmax and returns
# the weighted average of the values:
#
#     out_i = sum_j softmax_j(q_i . k_j * scale) v_j,      scale = 1 / sqrt(hd)
#
# Why `1/sqrt(hd)`? A dot product of two random vectors with unit-variance entries is a sum of
# `hd` terms, so its variance is `hd` (96 in phi-3-mini). Unscaled, the softmax would be nearly
# one-hot from the start; scaled, the scores have variance about 1 at every head size.

# %%
for hd in (16, 96, 128):
    a = rng.standard_normal((20000, hd))
    b = rng.standard_normal((20000, hd))
    dots = (a * b).sum(axis=-1)
    scaled = dots / np.sqrt(hd)
    print(f"hd = {hd:3d}: var(q.k) = {dots.var():7.1f}   var(q.k / sqrt(hd)) = {scaled.var():.3f}")
    assert 0.9 < (dots / np.sqrt(hd)).var() < 1.1

# %% [markdown]
# Now one head by hand on 6 tokens. A causal model must not let token `i` read tokens `j > i`
# (they are what it is learning to predict), so those scores are set to minus infinity before
# the softmax: their weight becomes exactly 0.

# %%
T, hd = 6, 8
q = rng.standard_normal((T, hd)).astype(np.float32)   # [T, hd]
k = rng.standard_normal((T, hd)).astype(np.float32)
v = rng.standard_normal((T, hd)).astype(np.float32)

scores = q @ k.T / np.sqrt(hd)                          # [T, hd] @ [hd, T] -> [T, T]
future = np.triu(np.ones((T, T), dtype=bool), k=1)      # j > i
weights = softmax(np.where(future, -np.inf, scores))    # rows sum to 1, zero above the diagonal
out = weights @ v                                       # [T, T] @ [T, hd] -> [T, hd]
print("attention weights of one head:\n", weights)

mask = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))        # [B=1, 1, T, S=T]
library = attention(q[None, None], k[None, None], v[None, None], mask, scale=1 / np.sqrt(hd))
assert np.allclose(library[0, 0], out, atol=1e-6)      # [B, H, T, hd] -> [T, hd]
assert np.allclose(weights.sum(axis=-1), 1.0) and np.all(weights[future] == 0)

# %% [markdown]
# ## 4. The causal mask, as a picture
#
# `causal_mask(query_index, key_valid)` returns a boolean `[B, 1, T, S]`: `True` where query `i`
# may read key `j`. Here it is for 8 tokens (`#` = allowed):

# %%
m = causal_mask(np.arange(8), np.ones((1, 8), dtype=bool))[0, 0]
print("\n".join(" ".join("#" if allowed else "." for allowed in row) for row in m))
assert np.array_equal(m, np.tril(np.ones((8, 8), dtype=bool)))

# %% [markdown]
# Let us look at real attention weights: layer 0 of a random "tiny" Phi-3 (4 heads of 16
# dimensions) reading 12 tokens. `attention()` returns only the mixed values, so we recompute
# its weights by hand from the layer's own q and k, and check them by rebuilding the layer's
# output with them. A freshly initialised model (weights of std 0.02) attends almost uniformly to
# everything it may see; we initialise this one with std 0.15 so each head has a visible pattern.

# %%
config = preset("tiny").replace(initializer_range=0.15)
model = Phi3(config, seed=1)
H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
lw = model.layer_weights(0)
T = 12
ids = rng.integers(0, config.vocab_size, size=(1, T))

x = embedding(ids, model.params["model.embed_tokens.weight"])          # [1, T, C]
xn = rms_norm(x, lw["input_layernorm"], config.rms_norm_eps)
q, k, v = np.split(linear(xn, lw["qkv_proj"]), [H * hd, (H + KV) * hd], axis=-1)
q = q.reshape(1, T, H, hd).transpose(0, 2, 1, 3)                        # -> [1, H, T, hd]
k = k.reshape(1, T, KV, hd).transpose(0, 2, 1, 3)                       # -> [1, KV, T, hd]
v = v.reshape(1, T, KV, hd).transpose(0, 2, 1, 3)
cos, sin = rope_cos_sin(np.arange(T)[None], *rope_frequencies(config, T))
q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)                 # position (lesson 3)

mask = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))           # [1, 1, T, T]
scores = q @ k.swapaxes(-1, -2) / np.sqrt(hd)                           # -> [1, H, T, T]
weights = softmax(np.where(mask, scores, -np.inf))                      # [1, H, T, T]

mixed = (weights @ v).transpose(0, 2, 1, 3).reshape(1, T, H * hd)       # -> [1, T, H*hd]
call = ForwardCall(config, FLOAT, cos, sin, mask)        # what the layers of one call share
assert np.allclose(linear(mixed, lw["o_proj"]), self_attention(xn, lw, call, 0), atol=1e-5)

upper = ~mask[0, 0]
assert np.all(weights[0][:, upper] == 0.0)              # no head ever reads the future
assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-6)  # every row is a distribution
print("row sums of head 0:", weights[0, 0].sum(axis=-1))
print("picture:", _plot.heatmaps("02_causal_attention_weights.png",
                                 [(f"head {h}", weights[0, h]) for h in range(2)],
                                 "Attention weights of a tiny Phi-3 layer (causal)",
                                 vmax=1.0, annotate=True, cell=38))

# %% [markdown]
# Each row is one query and sums to one; everything above the diagonal is exactly zero. The
# first row has a single choice (token 0 can only read itself), so its weight is 1.
#
# ## The sliding window
#
# phi-3-mini-4k and phi-3-medium-4k set `sliding_window = 2047` (in config.json): a query reads
# at most the last 2047 keys, itself included. Information from further back still arrives, but
# indirectly, through earlier layers; we show that below. First the mask with a window of 4 on
# 16 tokens:

# %%
mini = preset("phi-3-mini-4k")
print("phi-3-mini-4k sliding_window:", mini.sliding_window,
      "| phi-3-mini-128k:", preset("phi-3-mini-128k").sliding_window,
      "(larger than its 131072-token context, so it never limits anything)")
assert mini.sliding_window == 2047
assert preset("phi-3-mini-128k").sliding_window > preset("phi-3-mini-128k").max_position_embeddings

T, window = 16, 4
full = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))[0, 0]
windowed = causal_mask(np.arange(T), np.ones((1, T), dtype=bool), sliding_window=window)[0, 0]
for i in range(T):
    assert windowed[i].sum() == min(i + 1, window)                     # itself and window-1 before
    assert np.array_equal(np.flatnonzero(windowed[i]), np.arange(max(0, i - window + 1), i + 1))
print("picture:", _plot.heatmaps("02_sliding_window.png",
                                 [("causal", full), (f"causal, sliding_window={window}", windowed)],
                                 "Which keys each query may read (dark = allowed)", vmax=1.0))

# %% [markdown]
# ### Beyond the window, through the layers
#
# In one layer, query `i` reads keys `i - w + 1 .. i` and nothing else. But the next layer reads
# the first layer's outputs, and each of those already mixes `w` inputs: two layers reach
# `2 (w - 1)` tokens back, three layers `3 (w - 1)`. To see it, we stack three attention layers,
# each `x + attention(rms_norm(x))` with one head, random weights and the window of 4 above,
# nudge one input token at a time, and record which outputs move.

# %%
C, layers = 8, 3
stack = [[rng.standard_normal((C, C)).astype(np.float32) / np.sqrt(C) for _ in range(3)]
         for _ in range(layers)]                                 # (Wq, Wk, Wv) per layer


def windowed_stack(x):
    """Every layer's output of x <- x + attention(rms_norm(x)), one head, window of 4."""
    outputs = []
    for wq, wk, wv in stack:
        xn = rms_norm(x, np.ones(C, np.float32), eps)                     # [1, T, C]
        q, k, v = (xn @ w_qkv for w_qkv in (wq, wk, wv))                   # [1, T, C] each
        heads = attention(q[:, None], k[:, None], v[:, None],            # -> [1, H=1, T, C]
                          windowed[None, None], scale=1 / np.sqrt(C))
        x = x + heads[:, 0]                                              # [1, T, C]
        outputs.append(x)
    return outputs


x_in = rng.standard_normal((1, T, C)).astype(np.float32)                # [1, T=16, C]
plain = windowed_stack(x_in)
moves = np.zeros((layers, T, T), dtype=bool)     # moves[l, i, j]: output i after l+1 layers
for j in range(T):                               # changes when input j is nudged
    nudged = x_in.copy()
    nudged[0, j] += 1.0
    for l, out in enumerate(windowed_stack(nudged)):
        moves[l, :, j] = np.any(out[0] != plain[l][0], axis=-1)

last, back = T - 1, 5                            # token 10 is 5 > window back from token 15
print(f"does input {last - back} move output {last}?",
      {f"after {l + 1} layer{'s' * (l > 0)}": bool(moves[l, last, last - back])
       for l in range(layers)})
assert not moves[0, last, last - back] and moves[1, last, last - back]
for l in range(layers):                          # exactly the keys reachable in l+1 hops
    reachable = np.linalg.matrix_power(windowed.astype(int), l + 1) > 0
    assert np.array_equal(moves[l], reachable)
    assert np.flatnonzero(moves[l, last])[0] == last - (l + 1) * (window - 1)
print("picture:", _plot.heatmaps(
    "02_sliding_window_reach.png",
    [(f"after {l + 1} layer{'s' * (l > 0)}", moves[l]) for l in range(layers)],
    f"Which inputs (columns) move each output (rows), sliding_window={window}", vmax=1.0))

# %% [markdown]
# The band widens by `w - 1 = 3` per layer: output 15 depends on inputs 12..15 after one layer,
# 9..15 after two and 6..15 after three. In phi-3-mini-4k the band widens by 2046 per layer, so
# three of its 32 layers already span the whole 4096-token context.

# %%
assert math.ceil((4096 - 1) / (mini.sliding_window - 1)) == 3 < mini.num_hidden_layers

# %% [markdown]
# ## 5. Grouped-query attention (GQA)
#
# In multi-head attention (MHA) every one of the `H` query heads has its own key and value head.
# In grouped-query attention (Ainslie et al. 2023) there are only `KV` key/value heads, each
# shared by `g = H / KV` query heads: query head `h` reads KV head `h // g`. phi-3-mini uses MHA
# (32 / 32); phi-3-medium uses 40 query heads and 10 KV heads (g = 4); phi-3-small 32 / 8 (the
# report's "4 queries sharing 1 key", §2).
#
# The attention maths is unchanged, but a generating model keeps every past key and value in
# its KV cache (lesson 5), and that cache shrinks by the factor `g`:
#
#     cache bytes per token = 2 (k and v) * layers * KV heads * head_dim * bytes per number

# %%
def kv_bytes_per_token(cfg, kv_heads, bytes_per_number=2):
    return 2 * cfg.num_hidden_layers * kv_heads * cfg.head_dim * bytes_per_number


medium = preset("phi-3-medium-4k")
gqa = kv_bytes_per_token(medium, medium.num_key_value_heads)
mha = kv_bytes_per_token(medium, medium.num_attention_heads)
ctx = medium.max_position_embeddings
print(f"phi-3-medium: {medium.num_attention_heads} query heads, "
      f"{medium.num_key_value_heads} KV heads, "
      f"head_dim {medium.head_dim}, {medium.num_hidden_layers} layers (bf16 cache)")
print(f"  GQA: {gqa / 1024:.0f} KiB per token, {gqa * ctx / 2**30:.2f} GiB for {ctx} tokens")
print(f"  MHA: {mha / 1024:.0f} KiB per token, {mha * ctx / 2**30:.2f} GiB for {ctx} tokens")
assert gqa == 2 * 40 * 10 * 128 * 2 == 204_800
assert mha == 4 * gqa                                   # g = 40 / 10 = 4 times smaller
mini_bytes = kv_bytes_per_token(mini, mini.num_key_value_heads)
print(f"phi-3-mini (MHA): {mini_bytes / 1024:.0f} KiB per token, "
      f"{mini_bytes * 4096 / 2**30:.2f} GiB for 4096 tokens")
assert mini_bytes * 4096 == 1.5 * 2**30

# %% [markdown]
# GQA is exactly MHA with each KV head copied `g` times. The library never makes those copies:
# it reshapes the queries to `[B, KV, g, T, hd]` so that each group reads its one KV head. Here
# it is on 8 query heads and 2 KV heads, checked both ways.

# %%
B, H, KV, T, hd = 1, 8, 2, 10, 16
g = H // KV
q = rng.standard_normal((B, H, T, hd)).astype(np.float32)
k = rng.standard_normal((B, KV, T, hd)).astype(np.float32)
v = rng.standard_normal((B, KV, T, hd)).astype(np.float32)
mask = causal_mask(np.arange(T), np.ones((B, T), dtype=bool))
scale = 1 / np.sqrt(hd)

out_gqa = attention(q, k, v, mask, scale)                                          # [B, H, T, hd]
out_mha = attention(q, np.repeat(k, g, axis=1), np.repeat(v, g, axis=1),   # KV -> H heads
                    mask, scale)
assert np.allclose(out_gqa, out_mha, atol=1e-6)

for h in range(H):                                      # head h reads KV head h // g, by hand
    w_h = softmax(np.where(mask[0, 0], q[0, h] @ k[0, h // g].T * scale, -np.inf))
    assert np.allclose(out_gqa[0, h], w_h @ v[0, h // g], atol=1e-6)
print("query head -> KV head:", {h: h // g for h in range(H)})
print("GQA equals MHA with repeated KV heads: max difference", np.abs(out_gqa - out_mha).max())

# %% [markdown]
# ## Summary
#
# - RMSNorm: `w * x / sqrt(mean(x^2) + eps)`; blind to the scale of its input.
# - Attention: `softmax(q k^T / sqrt(hd) + mask) v`; the mask zeroes the future (and, with a
#   sliding window, the distant past), and every row of weights sums to one.
# - A window of `w` hides the distant past from one layer only: each layer reaches `w - 1`
#   tokens further back, so a stack of layers still carries it forward.
# - GQA shares each KV head among `g` query heads: same maths, a `g` times smaller KV cache.
#
# Next: where the positions come in (RoPE and LongRoPE, lesson 3).

# %% [markdown]
# ## Where it lives
#
# - `tinyphi3/nn/layers.py`: `rms_norm`, `softmax`, `linear`, `embedding`.
# - `tinyphi3/nn/attention.py`: `causal_mask` (causal, sliding window, padding), `attention`
#   (grouped-query heads without copying the KV heads).
# - `tinyphi3/models/phi3.py`: `self_attention` (qkv_proj, RoPE, attention, o_proj of one layer).
# - `tinyphi3/config/presets.py`: `preset` (`sliding_window`, head counts of the report's models).
