# %% [markdown]
# # Lesson 4: the Phi-3 block
#
# phi-3-mini is 32 copies of one block between an embedding table and an output projection.
# The report's architecture paragraph (§2, "Technical Specifications") calls it "a transformer
# decoder architecture" (Vaswani et al. 2017) that "is built upon a similar block structure as
# Llama-2", citing the Llama paper (Touvron et al. 2023): a pre-norm transformer block with two
# residual branches.
#
#     h   = x + o_proj(attention(rope(q), rope(k), v))   q, k, v = split(qkv_proj(rms_norm(x)))
#     out = h + down_proj(silu(gate) * up)               gate, up = split(gate_up_proj(rms_norm(h)))
#
# Two details differ from Llama's published code: q, k and v come out of ONE fused matrix
# `qkv_proj`, and the MLP's gate and up projections are ONE fused matrix `gate_up_proj` whose
# FIRST half is the gate. This lesson walks one block of a random "tiny" model by hand and checks
# it against `tinyphi3.models.phi3.decoder_layer`, draws the block with the shape of every
# tensor, says why the block has residuals, pre-norm and a gated MLP (with a check of each), then
# counts phi-3-mini's 3.8 billion parameters.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import numpy as np

import _plot
from tinyphi3.nn.attention import causal_mask
from tinyphi3.config import preset
from tinyphi3.nn.layers import gated_mlp, rms_norm, softmax
from tinyphi3.models.call import ForwardCall
from tinyphi3.models.model import FLOAT, Phi3
from tinyphi3.models.phi3 import decoder_layer, self_attention
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.nn.rope import apply_rope, rope_cos_sin, rope_frequencies

np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The weights of one block
#
# The "tiny" preset has the real architecture at toy sizes: hidden size C = 64, 4 heads of
# hd = 16, MLP size I = 128, 2 layers, a 512-token vocabulary. Parameters are stored in one dict
# under their Hugging Face names; linear weights are `[out_features, in_features]`. We draw the
# random weights with std 0.1 rather than the initial 0.02, closer to a trained model's scale
# (with very small values `silu(z)` is nearly `z / 2` and some mistakes would hide).

# %%
config = preset("tiny").replace(initializer_range=0.1)   # trained weights are larger than 0.02
model = Phi3(config, seed=0)
C, I = config.hidden_size, config.intermediate_size
H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
for name, array in model.params.items():
    if name.startswith("model.layers.0.") or not name.startswith("model.layers."):
        print(f"{name:48s} {array.shape}")
w = model.layer_weights(0)                     # short names: 'qkv_proj', 'o_proj', ...
assert w["qkv_proj"].shape == ((H + 2 * KV) * hd, C)
assert w["gate_up_proj"].shape == (2 * I, C) and w["down_proj"].shape == (C, I)

# %% [markdown]
# ## Step 1: pre-norm
#
# The block never changes the residual stream `x` in place: each branch reads a normalised copy
# and adds its result back. The norm comes *before* the branch (pre-norm), with its own gain.

# %%
T = 7
ids = rng.integers(0, config.vocab_size, size=(1, T))
x = model.params["model.embed_tokens.weight"][ids]                 # [1, T] -> [1, T, C]
eps = config.rms_norm_eps
xn = w["input_layernorm"] * x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)   # [1, T, C]

# %% [markdown]
# ## Step 2: one fused matrix for q, k and v
#
# `qkv_proj` is the three projections stacked: rows `0 .. H*hd` make q, the next `KV*hd` make k,
# the last `KV*hd` make v. One matrix product instead of three, then a split.

# %%
qkv = xn @ w["qkv_proj"].T                                         # [1, T, C] -> [1, T, (H+2KV)*hd]
q, k, v = np.split(qkv, [H * hd, (H + KV) * hd], axis=-1)
W_q = w["qkv_proj"][:H * hd]                                       # the stacked q projection
assert np.allclose(q, xn @ W_q.T, atol=1e-6)
q = q.reshape(1, T, H, hd).transpose(0, 2, 1, 3)                   # -> [1, H, T, hd]
k = k.reshape(1, T, KV, hd).transpose(0, 2, 1, 3)                  # -> [1, KV, T, hd]
v = v.reshape(1, T, KV, hd).transpose(0, 2, 1, 3)                  # -> [1, KV, T, hd]
print("q", q.shape, " k", k.shape, " v", v.shape)

# %% [markdown]
# ## Step 3: rotary positions on q and k (lesson 3), causal attention (lesson 2)

# %%
positions = np.arange(T)[None]                                      # [1, T]
cos, sin = rope_cos_sin(positions, *rope_frequencies(config, T))    # 2 x [1, T, rd]
q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

mask = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))       # [1, 1, T, T]
scores = q @ k.swapaxes(-1, -2) / np.sqrt(hd)                       # -> [1, H, T, T] (KV = H here)
weights = softmax(np.where(mask, scores, -np.inf))
heads = weights @ v                                                 # -> [1, H, T, hd]
merged = heads.transpose(0, 2, 1, 3).reshape(1, T, H * hd)          # -> [1, T, H*hd]
attn_out = merged @ w["o_proj"].T                                   # -> [1, T, C]

# The library's version: a ForwardCall holds what every layer of one call shares (the config,
# how the weights are multiplied, float here, RoPE's angles, the mask); 0 is the layer's index.
call = ForwardCall(config, FLOAT, cos, sin, mask)
assert np.allclose(attn_out, self_attention(xn, w, call, 0), atol=1e-5)

# %% [markdown]
# ## Step 4: the first residual

# %%
h = x + attn_out                                                    # [1, T, C]

# %% [markdown]
# ## Step 5: the gated MLP
#
# `gate_up_proj` maps C to 2I: the first I outputs are the gate, the last I the "up" values.
# The gate goes through SiLU, `silu(z) = z * sigmoid(z)`, and multiplies the up values
# element-wise (SwiGLU, Shazeer 2020); `down_proj` maps I back to C.

# %%
hn = w["post_attention_layernorm"] * h / np.sqrt((h**2).mean(-1, keepdims=True) + eps)
gate_up = hn @ w["gate_up_proj"].T                                  # [1, T, C] -> [1, T, 2I]
gate, up = gate_up[..., :I], gate_up[..., I:]                       # gate FIRST
silu_gate = gate * (1.0 / (1.0 + np.exp(-gate)))
mlp_out = (silu_gate * up) @ w["down_proj"].T                       # [1, T, I] -> [1, T, C]
out = h + mlp_out                                                   # second residual

library = decoder_layer(x, w, call, 0)
print("max |by hand - decoder_layer| =", np.abs(out - library).max())
assert np.allclose(out, library, atol=1e-5)

# %% [markdown]
# The order of the halves matters. A loader that took `up` first would run without complaint and
# produce a different model; checking against the library (and the library against
# `transformers`, in `tests/test_parity.py`) is what catches it:

# %%
up_first = h + (up * (1.0 / (1.0 + np.exp(-up))) * gate) @ w["down_proj"].T
relative = np.abs(up_first - out).max() / np.abs(mlp_out).max()
print(f"up-first changes the block output by up to {relative:.0%} of the MLP's output")
assert relative > 0.1

# %% [markdown]
# ## The block in one picture
#
# The steps above as boxes, with the shape of the tensor on every arrow. Each shape is written
# once, in letters, and checked against the array of that step (here B = 1, T = 7, C = 64,
# H = KV = 4, hd = 16, I = 128), so the picture cannot drift from the code.

# %%
sizes = dict(B=1, T=T, C=C, H=H, KV=KV, hd=hd, I=I)
assert (T, C, H, KV, hd, I) == (7, 64, 4, 4, 16, 128)


def shape(array, *dims):
    """'[B, T, (H+2KV)·hd]' for dims ('B', 'T', '(H+2*KV)*hd'), once the dims, evaluated with
    this model's sizes, are found equal to the array's shape."""
    numbers = tuple(eval(dim, {"__builtins__": {}}, sizes) for dim in dims)
    assert array.shape == numbers, (dims, numbers, array.shape)
    return "[" + ", ".join(dim.replace("2*", "2").replace("*", "·") for dim in dims) + "]"


attention_half = [
    ("RMSNorm\ninput_layernorm", shape(xn, "B", "T", "C")),
    ("qkv_proj: one matrix", shape(qkv, "B", "T", "(H+2*KV)*hd")),
    ("split q | k | v, split heads",
     f"q {shape(q, 'B', 'H', 'T', 'hd')}, k and v {shape(v, 'B', 'KV', 'T', 'hd')}"),
    ("RoPE on q and k", f"q {shape(q, 'B', 'H', 'T', 'hd')}, k {shape(k, 'B', 'KV', 'T', 'hd')}"),
    ("causal attention\nsoftmax(q k^T / sqrt(hd)) v", shape(heads, "B", "H", "T", "hd")),
    ("merge heads", shape(merged, "B", "T", "H*hd")),
    ("o_proj", shape(attn_out, "B", "T", "C")),
    ("+", "h " + shape(h, "B", "T", "C")),
]
mlp_half = [
    ("RMSNorm\npost_attention_layernorm", shape(hn, "B", "T", "C")),
    ("gate_up_proj: one matrix", shape(gate_up, "B", "T", "2*I")),
    ("silu(gate) * up\n(gate: the first half)", shape(silu_gate * up, "B", "T", "I")),
    ("down_proj", shape(mlp_out, "B", "T", "C")),
    ("+", "out " + shape(out, "B", "T", "C")),
]
mini = preset("phi-3-mini-4k")
print("picture:", _plot.block_diagram(
    "04_phi3_block.png", [attention_half, mlp_half],
    "One Phi-3 block: pre-norm attention, then a pre-norm gated MLP, each added to the stream",
    inputs="x " + shape(x, "B", "T", "C"), skips=[(0, 0, 7, "x"), (1, 0, 4, "h")],
    note=f"red: the residual connections.  phi-3-mini: C = {mini.hidden_size}, "
         f"H = KV = {mini.num_attention_heads}, hd = {mini.head_dim}, "
         f"I = {mini.intermediate_size}, and 32 such blocks"))
assert x.shape == out.shape                                # a block maps [B, T, C] to [B, T, C]

# %% [markdown]
# ## Why residuals, pre-norm and a gated MLP
#
# The Llama paper that the report cites for the block lists what Llama changed in the original
# transformer (Vaswani et al. 2017): the norm moves to the input of each branch (pre-norm, as
# GPT-3 did) and becomes RMSNorm, the MLP becomes SwiGLU, and positions come from rotary
# embeddings (lesson 3). The residual connections were there from the start. The reason for
# each, and a check of each on a deeper random stack: the tiny sizes with 16 layers.
#
# ### Residual connections (He et al. 2016)
#
# Each branch *adds* its result to the stream, `x + f(x)`, instead of replacing it; the stream
# keeps the input's contribution, and each layer writes a correction on top. Two consequences.
# A layer that should change nothing has it easy: its branch outputs zero, where a plain stack
# would have to learn to copy its input. And the derivative of `x + f(x)` is `1 + f'(x)`: the
# gradient of the loss reaches the embeddings through the chain of `+` undiminished, however
# deep the stack. He et al. found plain networks train *worse* as they get deeper, and residual
# ones do not. The checks: after 16 blocks the stream is the input plus what the 32 branches
# wrote, to rounding; and with every `o_proj` and `down_proj` set to zero the stack returns its
# input unchanged, where the branches alone would return zeros.

# %%
deep = config.replace(num_hidden_layers=16)
deep_model = Phi3(deep, seed=1)
deep_call = ForwardCall(deep, FLOAT, cos, sin, mask)
layers = [deep_model.layer_weights(i) for i in range(deep.num_hidden_layers)]
x0 = deep_model.params["model.embed_tokens.weight"][ids]              # [1, T, C]
rms = lambda a: float(np.sqrt((a**2).mean()))                          # noqa: E731

stream, writes = x0, []                        # writes: what each branch adds, [1, T, C] each
stream_rms, reads_rms = [rms(x0)], []          # the stream after each block; the branch inputs
for i, lw in enumerate(layers):
    before = stream
    read = rms_norm(stream, lw["input_layernorm"], eps)              # pre-norm: a normalised copy
    writes.append(self_attention(read, lw, deep_call, i))
    stream = stream + writes[-1]                                      # residual 1
    reads_rms.append(rms(read))
    read = rms_norm(stream, lw["post_attention_layernorm"], eps)
    writes.append(gated_mlp(read, lw["gate_up_proj"], lw["down_proj"]))
    stream = stream + writes[-1]                                      # residual 2
    reads_rms.append(rms(read))
    stream_rms.append(rms(stream))
    assert np.allclose(stream, decoder_layer(before, lw, deep_call, i), atol=1e-5)  # library
assert np.allclose(stream, x0 + sum(writes), atol=1e-5)               # input + 32 writes

silent = [dict(lw, o_proj=0 * lw["o_proj"], down_proj=0 * lw["down_proj"]) for lw in layers]
passed = x0
for i, lw in enumerate(silent):
    passed = decoder_layer(passed, lw, deep_call, i)
assert np.array_equal(passed, x0)                                     # 16 blocks, identity
branch_alone = self_attention(rms_norm(x0, silent[0]["input_layernorm"], eps), silent[0],
                              deep_call, 0)
assert not branch_alone.any()                                         # without `x +`: zeros
print("zeroed output projections: 16 blocks return their input; a branch alone returns 0")

# %% [markdown]
# ### Pre-norm (GPT-2, Radford et al. 2019; Xiong et al. 2020), with RMSNorm (Zhang & Sennrich 2019)
#
# The 2017 transformer normalised *after* the sum, `x = norm(x + f(x))` (post-norm). Then the
# path from input to output passes through a norm in every layer, residual path included, and
# Xiong et al. showed that at initialisation the gradients near the output are then large, so
# post-norm needs a slow learning-rate warm-up; with the norm at the branch's input,
# `x + f(norm(x))`, training does without one. Pre-norm leaves the residual path free of norms, and
# every branch reads an input of RMS 1 (times its gain) however large the stream has grown.
# The stream itself is never normalised and grows with depth: that is why the model ends with
# one more RMSNorm (`model.norm`) before `lm_head`. RMSNorm is LayerNorm without the mean
# subtraction and the bias: Zhang and Sennrich found it as good, for less work.
#
# The check, on the same 16 blocks: the stream's RMS grows layer by layer while every branch
# reads RMS 1; the same weights run post-norm keep the stream itself at RMS 1.

# %%
post, post_rms = x0, [rms(x0)]
for i, lw in enumerate(layers):                 # post-norm: x = norm(x + f(x)), the same weights
    post = rms_norm(post + self_attention(post, lw, deep_call, i), lw["input_layernorm"], eps)
    post = rms_norm(post + gated_mlp(post, lw["gate_up_proj"], lw["down_proj"]),
                    lw["post_attention_layernorm"], eps)
    post_rms.append(rms(post))
print("pre-norm stream RMS by layer:", np.round(stream_rms, 2))
print(f"what the 32 branches read: RMS {min(reads_rms):.4f} .. {max(reads_rms):.4f}")
depth = np.arange(deep.num_hidden_layers + 1)
print("picture:", _plot.line_plot(
    "04_prenorm_scale.png",
    {"residual stream, post-norm (2017)": (depth, post_rms),
     "what block i's attention reads, pre-norm": (depth[1:], reads_rms[0::2]),
     "residual stream, pre-norm (Phi-3)": (depth, stream_rms)},
    "RMS through 16 random tiny blocks (wide lines lie under narrow ones)",
    "after block i (0: the embeddings)", "RMS (all positions, channels)", overlap=True))
assert stream_rms[-1] > 10 * stream_rms[0]                    # the stream grows with depth
assert max(abs(r - 1) for r in reads_rms) < 1e-3              # every branch reads RMS 1
assert max(abs(r - 1) for r in post_rms[1:]) < 1e-3           # post-norm pins the stream

# %% [markdown]
# ### A gated MLP (SwiGLU: Shazeer 2020)
#
# The 2017 MLP is `down(relu(up(x)))`. A gated linear unit (Dauphin et al. 2017) multiplies two
# projections of the same input, one of them through an activation: `silu(gate(x)) * up(x)`.
# Each hidden unit is a product of two functions of the input, the gate deciding, token by
# token, how much of `up` passes. Shazeer compared such variants with the plain MLP at the same
# parameter count and compute, and the gated ones, SwiGLU among the best, reached lower
# perplexity; the paper gives the measurements and no theory. Three matrices instead of two
# would add parameters, so the hidden size shrinks from 4C to 2/3 x 4C (as Shazeer did, and
# Llama after him). phi-3-mini follows it: I = 8192 = 8/3 x 3072, and its MLP has exactly the
# parameters of a plain 4C one.

# %%
C_mini, I_mini = mini.hidden_size, mini.intermediate_size
print(f"gated: 3 x {C_mini} x {I_mini} = {3 * C_mini * I_mini:,};  "
      f"plain 4C: 2 x {C_mini} x {4 * C_mini} = {2 * C_mini * 4 * C_mini:,}")
assert 3 * I_mini == 8 * C_mini                                # I = 8/3 C
assert 3 * C_mini * I_mini == 2 * C_mini * (4 * C_mini)

# %% [markdown]
# ## The whole model by hand
#
# Embedding, every block in turn, a final RMSNorm, and `lm_head` to one logit per vocabulary
# entry. That is all of `Phi3.__call__` when there is no cache and no padding.

# %%
x = model.params["model.embed_tokens.weight"][ids]                  # [1, T, C]
for i in range(config.num_hidden_layers):
    x = decoder_layer(x, model.layer_weights(i), call, i)
x = model.params["model.norm.weight"] * x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)
logits = x @ model.params["lm_head.weight"].T                       # [1, T, C] -> [1, T, V]
assert np.allclose(logits, model(ids), atol=1e-5)
print("logits", logits.shape, "equal to model(ids)")

# %% [markdown]
# ## Counting phi-3-mini's parameters by hand
#
# From the config alone: V = 32064, C = 3072, I = 8192, 32 layers, 32 heads and 32 KV heads of
# hd = 96. No biases anywhere, and `lm_head` is not tied to the embedding.

# %%
mini = preset("phi-3-mini-4k")
V, C, I = mini.vocab_size, mini.hidden_size, mini.intermediate_size
n_layers = mini.num_hidden_layers
H, KV, hd = mini.num_attention_heads, mini.num_key_value_heads, mini.head_dim
assert (V, C, I, n_layers, H, KV, hd) == (32064, 3072, 8192, 32, 32, 32, 96)

per_layer = {
    "qkv_proj      3072 x 9216": C * (H * hd + 2 * KV * hd),
    "o_proj        3072 x 3072": (H * hd) * C,
    "gate_up_proj  3072 x 16384": C * 2 * I,
    "down_proj     8192 x 3072": I * C,
    "two RMSNorm gains 2 x 3072": 2 * C,
}
for name, n in per_layer.items():
    print(f"  {name:28s} {n:>13,}")
layer_total = sum(per_layer.values())
print(f"one layer                    {layer_total:>13,}")

totals = {
    "embed_tokens 32064 x 3072": V * C,
    "32 layers": n_layers * layer_total,
    "final norm 3072": C,
    "lm_head 32064 x 3072": V * C,
}
total = sum(totals.values())
for name, n in totals.items():
    print(f"{name:28s} {n:>15,}")
print(f"{'phi-3-mini':28s} {total:>15,}")
assert layer_total == 113_252_352
assert total == 3_821_079_552
assert total == sum(int(np.prod(s)) for s in parameter_shapes(mini).values())
assert model.num_parameters() == sum(int(np.prod(s)) for s in parameter_shapes(config).values())

# %% [markdown]
# Where do they live? Two thirds in the MLPs, one third in attention, 5% in the two vocabulary
# matrices:

# %%
share = {
    "MLP (gate_up + down)": n_layers * (C * 2 * I + I * C),
    "attention (qkv + o)": n_layers * (C * 3 * H * hd + H * hd * C),
    "embed_tokens": V * C,
    "lm_head": V * C,
    "RMSNorm gains": (2 * n_layers + 1) * C,
}
assert sum(share.values()) == total
for name, n in share.items():
    print(f"{name:22s} {n / total:6.1%}")
print("picture:", _plot.bar_chart("04_mini_parameters.png",
                                  {f"{k} {n / total:.0%}": n / 1e6 for k, n in share.items()},
                                  "Where phi-3-mini's 3.82 B parameters are", unit="M"))

# %% [markdown]
# ## Memory
#
# Bytes = parameters x bytes per parameter. The report trained in bfloat16 (2 bytes) and runs a
# 4-bit version on a phone, quoted at about 1.8 GB. Pure 4-bit weights are 1.91 GB = 1.78 GiB;
# practical 4-bit formats also store a scale per block of weights, e.g. llama.cpp's Q4_0 uses
# 4.5 bits per weight.

# %%
GB, GiB = 1e9, 2**30
for name, bits in [("fp32", 32), ("bf16", 16), ("4-bit", 4), ("Q4_0 (4.5 bits)", 4.5)]:
    nbytes = total * bits / 8
    print(f"{name:16s} {nbytes / GB:6.2f} GB = {nbytes / GiB:6.2f} GiB")
assert total * 4 / GB > 15 and total * 2 / GiB > 7                 # fp32 > 15 GB, bf16 > 7 GiB
assert abs(total * 0.5 / GiB - 1.8) < 0.05                          # 4 bits: the report's ~1.8

# %% [markdown]
# ## phi-3-medium: the same block, configured
#
# Medium is the same code with C = 5120, I = 17920, 40 layers and 40 heads of hd = 128, but
# only 10 key/value heads (grouped-query attention, lesson 2), which makes `qkv_proj` smaller
# than three square matrices.

# %%
medium = preset("phi-3-medium-4k")
V, C, I = medium.vocab_size, medium.hidden_size, medium.intermediate_size
n_layers = medium.num_hidden_layers
H, KV, hd = medium.num_attention_heads, medium.num_key_value_heads, medium.head_dim
assert (C, I, n_layers, H, KV, hd) == (5120, 17920, 40, 40, 10, 128)
qkv = C * (H * hd + 2 * KV * hd)                                    # 5120 x (5120 + 2 * 1280)
medium_layer = qkv + (H * hd) * C + C * 2 * I + I * C + 2 * C
medium_total = V * C + n_layers * medium_layer + C + V * C
print(f"qkv_proj {C} x {H * hd + 2 * KV * hd} = {qkv:,} (multi-head would be {C * 3 * H * hd:,})")
print(f"phi-3-medium: {medium_total:,} parameters = {medium_total / 1e9:.2f} B; "
      f"bf16 {medium_total * 2 / GB:.1f} GB")
assert medium_total == sum(int(np.prod(s)) for s in parameter_shapes(medium).values())
assert round(medium_total / 1e9) == 14

# %% [markdown]
# ## Summary
#
# - A Phi-3 block: pre-norm, fused `qkv_proj` split q/k/v, RoPE, causal attention, `o_proj`,
#   residual; pre-norm, fused `gate_up_proj` (gate first), `silu(gate) * up`, `down_proj`,
#   residual. It maps [B, T, C] to [B, T, C] (the picture `04_phi3_block.png`).
# - Residuals keep the input in the stream and give the gradient a path through every layer;
#   pre-norm keeps that path free of norms while every branch reads RMS 1, so the stream grows
#   and a final norm precedes `lm_head`; the gated MLP (SwiGLU) won Shazeer's comparison at
#   equal parameters, which is why I = 8/3 C.
# - phi-3-mini has 3,821,079,552 parameters: about 15.3 GB in fp32, 7.6 GB in bf16, 1.8 GiB in
#   4 bits; phi-3-medium about 14 billion.
#
# Next: generating text one token at a time, and the KV cache that makes it cheap (lesson 5).
#
# ## Where it lives
#
# - `tinyphi3/models/phi3.py`: `decoder_layer` (the block), `self_attention`, `split_qkv`,
#   `lm_head` (final norm and output projection), `parameter_shapes`.
# - `tinyphi3/nn/layers.py`: `rms_norm`, `linear`, `gated_mlp`, `silu_and_mul`, `softmax`.
# - `tinyphi3/nn/attention.py`: `attention`, `causal_mask`; `tinyphi3/nn/rope.py`:
#   `rope_frequencies`, `rope_cos_sin`, `apply_rope`.
# - `tinyphi3/models/model.py`: `Phi3` (`__call__`, `layer_weights`, `num_parameters`);
#   `tinyphi3/models/call.py`: `ForwardCall`; `tinyphi3/models/weights.py`: `init_parameters`.
# - `tinyphi3/pictures/charts.py`: `block_diagram`, which drew the block.
