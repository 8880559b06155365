# %% [markdown]
# # Lesson 20: The CLIP ViT, the eyes of phi-3-vision
#
# §6.1 of the Phi-3 report: phi-3-vision "is composed of two primary components: an image
# encoder, i.e., CLIP ViT-L/14 [RKH+21] and a transformer decoder, i.e.,
# phi-3-mini-128K-instruct." The decoder is the model of lessons 2 to 5. This lesson builds the
# encoder: a Vision Transformer (ViT; Dosovitskiy et al. 2021) as CLIP trained it (Radford et al.
# 2021). ViT-L/14-336 reads a 336 x 336 image as 24 x 24 patches of 14 x 14 pixels, and is a
# transformer of 24 layers of width 1024 over those patches.
#
# 1. an image as a sequence of patches;
# 2. the patch embedding: a convolution that is one matrix product;
# 3. the class token and the positions, and what the positions are for;
# 4. pre-LN layers with the decoder's `attention`, but no mask;
# 5. the hidden states, and why phi-3-vision takes layer -2 without the class token;
# 6. the same numbers as transformers' `CLIPVisionModel`;
# 7. the published tower's numbers.
#
# Everything runs on a tiny tower with random weights (56-pixel images, 7-pixel patches, width
# 32, 3 layers); section 7 computes the published sizes from the same code. Pictures go to
# `lesson_outputs/` in the current directory.

# %%
import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import CLIPVisionConfig, CLIPVisionModel

import _plot
from tinyphi3.config.vision import CLIP_VIT_L14_336, ClipConfig
from tinyphi3.models.vision.clip import (clip_features, clip_hidden_states, clip_tensor_shapes,
                                         encoder_layer, init_clip_weights, patch_embed,
                                         unfold_patches)
from tinyphi3.models.vision.hd_transform import normalize
from tinyphi3.nn.activations import quick_gelu
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.layers import layer_norm, linear, softmax

np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

tiny = ClipConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, image_size=56, patch_size=7, layer_norm_eps=1e-5)
S, P, G, C = tiny.image_size, tiny.patch_size, tiny.grid, tiny.hidden_size
print(f"tiny tower: {S} x {S} images, {P} x {P} patches ({G} x {G} = {G * G}), width {C}, "
      f"{tiny.num_attention_heads} heads of {tiny.head_dim}, {tiny.num_hidden_layers} layers")

# Random weights, larger than a training run would start from (std 0.25, so that attention is
# not nearly uniform), with the LayerNorm gains moved off 1 and the biases off 0 (at 1 and 0 a
# mix-up of gain and bias would not show in section 6).
weights = init_clip_weights(tiny, rng, std=0.25)
for name, w in weights.items():
    if "norm" in name and name.endswith(".weight"):
        weights[name] = (1 + 0.3 * rng.standard_normal(w.shape)).astype(np.float32)
    elif name.endswith(".bias"):
        weights[name] = (0.3 * rng.standard_normal(w.shape)).astype(np.float32)


def draw_picture(size):
    """A small drawn scene, uint8 [size, size, 3]: sky, sun, grass and a house."""
    img = Image.new("RGB", (size, size), (135, 190, 235))
    d = ImageDraw.Draw(img)
    u = size / 56
    d.ellipse([38 * u, 4 * u, 52 * u, 18 * u], fill=(250, 210, 40))          # the sun
    d.rectangle([0, 40 * u, size, size], fill=(70, 160, 60))                  # grass
    d.rectangle([8 * u, 26 * u, 28 * u, 46 * u], fill=(200, 50, 40))         # the house
    d.polygon([(5 * u, 27 * u), (18 * u, 14 * u), (31 * u, 27 * u)], fill=(90, 60, 40))
    d.rectangle([15 * u, 35 * u, 21 * u, 46 * u], fill=(60, 40, 30))         # its door
    return np.asarray(img)


picture = draw_picture(S)                                     # uint8 [S, S, 3]
pixels = normalize(picture)[None]                             # -> float32 [N=1, 3, S, S]
print("pixels:", pixels.shape, pixels.dtype)

# %% [markdown]
# ## 1. An image as a sequence of patches
#
# A transformer reads a sequence of vectors. The ViT makes one from an image by cutting it into
# non-overlapping `P x P` patches and reading them row by row: patch `(r, c)` of the `G x G` grid
# is number `G*r + c`. Each patch is flattened into `3 * P * P` numbers, channel first, then row,
# then column: the order in which a convolution's weight `[C, 3, P, P]` flattens, which section 2
# needs. `unfold_patches` does it with one reshape and one transpose.

# %%
patches = unfold_patches(pixels, P)                           # [1, 3, S, S] -> [1, G*G, 3*P*P]
print(f"patches: {patches.shape}: {G * G} patches of 3 x {P} x {P} = {3 * P * P} numbers")
for r, c in [(0, 0), (2, 5), (G - 1, G - 1)]:
    by_hand = pixels[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1)   # [3, P, P] -> [.]
    assert np.array_equal(patches[0, G * r + c], by_hand)
print("patch G*r + c holds the pixels of row r, column c of the grid")

# The picture unfolds the uint8 image itself, and folds each patch back into a tile.
tiles = unfold_patches(picture.transpose(2, 0, 1)[None], P)[0]          # -> [G*G, 3*P*P]
tiles = tiles.reshape(G * G, 3, P, P).transpose(0, 2, 3, 1)            # -> [G*G, P, P, 3]
print("picture:", _plot.patch_sequence(
    "20_patches.png", picture, tiles, f"A {S} x {S} image as {G * G} patches of {P} x {P} pixels",
    note=f"each tile is one vector of 3 x {P} x {P} = {3 * P * P} numbers; the class token "
         "(section 3) goes first"))

# %% [markdown]
# ## 2. The patch embedding: a convolution that is one matrix product
#
# Each patch becomes a vector of width `C` through a learnt linear map. transformers writes it as
# a convolution, `Conv2d(3, C, kernel_size=P, stride=P, bias=False)`: the kernel slides `P`
# pixels at a time, so its windows are exactly the patches, and each output is the dot product
# of one flattened window with one flattened kernel. All of them at once:
#
#     embedded = patches @ W.reshape(C, 3*P*P)^T                [G*G, 3*P*P] @ [3*P*P, C]
#
# Checked against a convolution written as loops, on a tiny example first (2 output channels,
# an 8 x 8 image, 4-pixel kernel), then on the tower's own weights.

# %%
def convolve(x, kernel, stride):
    """A convolution by its definition, [3, H, W] -> [O, R, R]: out[o, r, c] = the sum over
    channel, dy, dx of kernel[o, channel, dy, dx] * x[channel, r*stride + dy, c*stride + dx]."""
    O, _, K, _ = kernel.shape
    R = (x.shape[1] - K) // stride + 1
    out = np.zeros((O, R, R))
    for o in range(O):
        for r in range(R):
            for c in range(R):
                window = x[:, r * stride:r * stride + K, c * stride:c * stride + K]
                out[o, r, c] = np.sum(kernel[o] * window)
    return out


x8 = rng.standard_normal((3, 8, 8)).astype(np.float32)
k4 = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
loops = convolve(x8, k4, stride=4)                            # [2, 2, 2]
product = unfold_patches(x8[None], 4)[0] @ k4.reshape(2, -1).T   # [4, 48] @ [48, 2] -> [4, 2]
print("tiny example, loops (channel 0):\n", loops[0])
print("matrix product (channel 0, the 4 patches):", product[:, 0])
assert np.allclose(product.T.reshape(2, 2, 2), loops, atol=1e-5)

kernel = weights["embeddings.patch_embedding.weight"]        # [C, 3, P, P]
loops = convolve(pixels[0], kernel, stride=P).reshape(C, G * G).T       # [C, G, G] -> [G*G, C]
embedded = patch_embed(pixels, weights, tiny)                 # [1, G*G + 1, C]
positions = weights["embeddings.position_embedding.weight"]   # [G*G + 1, C]
difference = np.abs(embedded[0, 1:] - positions[1:] - loops).max()
print(f"the tower's patch embedding against the loops: max |difference| = {difference:.1e}")
assert difference < 1e-5

# %% [markdown]
# With a stride smaller than the kernel the windows would overlap and the unfolded patches would
# repeat pixels ("im2col", how convolution libraries often turn a convolution into one matrix
# product); with stride = kernel nothing repeats and nothing is copied twice.
#
# ## 3. The class token and the positions
#
# Two learnt pieces complete the input sequence:
#
#     x_0 = pre_layrnorm([class_embedding ; patches W^T] + position_embedding)   [G*G + 1, C]
#
# - the class token, one learnt vector put in front of the patches (BERT's [CLS]). CLIP reads
#   the image's summary from it at the last layer, for its contrastive training;
# - a learnt position vector for each of the `G*G + 1` places, added: ViT-L/14-336 has 577.
#
# Then a LayerNorm, `pre_layrnorm` (spelt so in the checkpoints), before the first layer.

# %%
cls = weights["embeddings.class_embedding"]                   # [C]
assert embedded.shape == (1, G * G + 1, C)
assert np.allclose(embedded[0, 0], cls + positions[0])
print(f"sequence: {embedded.shape[1]} positions = 1 class token + {G * G} patches")

# %% [markdown]
# What are the positions for? Attention without a mask treats its input as a set: it compares
# every vector with every other, and never asks where a vector sits. Without position vectors,
# shuffling the patches of the image would only shuffle the outputs. The check: move the tiles
# of the image around, run the tower with the position vectors set to zero, and find every
# output again, moved the same way (up to float32 rounding); the class token's output does not
# move.

# %%
order = rng.permutation(G * G)                                # new patch i = old patch order[i]
tiled = pixels.reshape(1, 3, G, P, G, P).transpose(0, 2, 4, 1, 3, 5)   # -> [1, G, G, 3, P, P]
tiled = tiled.reshape(1, G * G, 3, P, P)                                # -> [1, G*G, 3, P, P]
shuffled = tiled[:, order].reshape(1, G, G, 3, P, P).transpose(0, 3, 1, 4, 2, 5)
shuffled = np.ascontiguousarray(shuffled.reshape(1, 3, S, S))          # -> [1, 3, S, S]
assert np.array_equal(unfold_patches(shuffled, P)[0], patches[0, order])

blind = dict(weights, **{"embeddings.position_embedding.weight": np.zeros_like(positions)})
for name, w in [("no positions", blind), ("with positions", weights)]:
    before = clip_hidden_states(pixels, w, tiny)[-1][0]       # [G*G + 1, C]
    after = clip_hidden_states(shuffled, w, tiny)[-1][0]
    moved = np.abs(after[1:] - before[1:][order]).max()
    cls_moved = np.abs(after[0] - before[0]).max()
    print(f"{name:15}: shuffled outputs vs outputs shuffled: max |difference| {moved:.1e}; "
          f"class token's output moved by {cls_moved:.1e}")
    if name == "no positions":
        assert moved < 1e-4 and cls_moved < 1e-4
    else:
        assert moved > 0.1 and cls_moved > 0.1

# %% [markdown]
# ## 4. Pre-LN layers, and attention with no mask
#
# Each of the tower's layers is the block of lesson 4 with LayerNorms (with a bias, as
# phi-3-small's) in place of RMSNorm, an MLP without a gate, and biases everywhere:
#
#     x = x + out_proj(attention(layer_norm1(x)))
#     x = x + fc2(quick_gelu(fc1(layer_norm2(x))))          quick_gelu(x) = x * sigmoid(1.702 x)
#
# The attention is the decoder's `attention` (lesson 2), with one difference: no causal mask.
# Text is read left to right, and a token must not see the tokens it will have to predict; an
# image has no such order, and every patch may look at every other. The masks for 5 positions:

# %%
T = 5
causal = causal_mask(np.arange(T), np.ones((1, T), dtype=bool))[0, 0]   # [T, T]
everywhere = np.ones((T, T), dtype=bool)                                # the tower's
print("decoder (causal):          tower (no mask):")
for a, b in zip(causal.astype(int), everywhere.astype(int)):
    print(f"  {a}          {b}")

# %% [markdown]
# One layer by hand, its attention weights kept for a picture, against `encoder_layer`:

# %%
def layer_by_hand(x, w, n, config):
    """encoder_layer written out; returns (output, attention weights [H, T, T])."""
    pre = f"encoder.layers.{n}."
    H, hd = config.num_attention_heads, config.head_dim
    T = x.shape[0]
    h = layer_norm(x, w[pre + "layer_norm1.weight"], w[pre + "layer_norm1.bias"], 1e-5)

    def heads(proj):                                          # [T, C] -> [H, T, hd]
        y = linear(h, w[pre + f"self_attn.{proj}.weight"], w[pre + f"self_attn.{proj}.bias"])
        return y.reshape(T, H, hd).transpose(1, 0, 2)

    q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
    scores = q @ k.transpose(0, 2, 1) * hd ** -0.5            # [H, T, T], no mask
    probs = softmax(scores)                                   # each row sums to 1
    mixed = (probs @ v).transpose(1, 0, 2).reshape(T, H * hd)  # [H, T, hd] -> [T, C]
    x = x + linear(mixed, w[pre + "self_attn.out_proj.weight"], w[pre + "self_attn.out_proj.bias"])
    h = layer_norm(x, w[pre + "layer_norm2.weight"], w[pre + "layer_norm2.bias"], 1e-5)
    h = quick_gelu(linear(h, w[pre + "mlp.fc1.weight"], w[pre + "mlp.fc1.bias"]))   # [T, I]
    return x + linear(h, w[pre + "mlp.fc2.weight"], w[pre + "mlp.fc2.bias"]), probs


x0 = clip_hidden_states(pixels, weights, tiny, upto=0)[0]     # [1, G*G + 1, C]: pre_layrnorm's
mine, probs = layer_by_hand(x0[0], weights, 0, tiny)
library = encoder_layer(x0, weights, 0, tiny)[0]
print(f"layer 0 by hand against encoder_layer: max |difference| = "
      f"{np.abs(mine - library).max():.1e}")
assert np.allclose(mine, library, atol=1e-5)
assert np.allclose(probs.sum(-1), 1, atol=1e-5) and (probs > 0).all()   # every key gets weight

# %% [markdown]
# Where does one head look? Head 0 of layer 0, for three queries: the class token, a patch of
# the sun, a patch of the house. The weights are random: this is what one head computes before
# any training, not something it has learnt, and there is no meaning to read into where it
# looks. What the picture does show: each query spreads its weight over the whole image, near
# and far, above and below, because no mask stops it.

# %%
sun, house = G * 1 + 6, G * 4 + 2                             # (row 1, col 6), (row 4, col 2)
panels = [("query: the class token", probs[0, 0, 1:], None),
          (f"query: patch {sun} (row 1, col 6), the sun", probs[0, 1 + sun, 1:], sun),
          (f"query: patch {house} (row 4, col 2), the house", probs[0, 1 + house, 1:], house)]
for label, row, _ in panels:
    top3 = np.argsort(row)[::-1][:3]
    print(f"{label}: heaviest keys {top3.tolist()} with {row[top3].round(3)}; "
          f"{row.sum():.3f} of the weight on patches, the rest on the class token")
print("picture:", _plot.attention_over_patches(
    "20_attention_random_head.png", picture, [(label.replace(", the", ",\nthe"), row, q)
                                              for label, row, q in panels], G,
    "Layer 0, head 0 of a tiny tower with RANDOM weights: where three queries look",
    note="darker blue = more attention weight (scaled to each panel's largest); red: the "
         "query's own patch; weights over the 64 patches (the class token's share left out)"))

# %% [markdown]
# Unlike the decoder's causal attention, the tower's lets a change anywhere reach everywhere:
# repaint the last patch (bottom right) and the outputs of the class token and of the first
# patch change already in layer 0. The same change through a causal mask leaves every earlier
# position alone.

# %%
repainted = pixels.copy()
repainted[:, :, -P:, -P:] = 0.0                               # the last patch, grey
first = encoder_layer(clip_hidden_states(repainted, weights, tiny, upto=0)[0], weights, 0, tiny)
reach = np.abs(first[0, :2] - library[:2]).max()
print(f"tower: last patch repainted -> class token and patch 0 move by {reach:.2f}")
assert reach > 1e-2

q, k, v = (rng.standard_normal((1, 2, 6, 4)).astype(np.float32) for _ in range(3))
k2, v2 = k.copy(), v.copy()
k2[:, :, -1], v2[:, :, -1] = 5.0, 5.0                          # change the last position only
mask = causal_mask(np.arange(6), np.ones((1, 6), dtype=bool))
a, b = attention(q, k, v, mask, 0.5), attention(q, k2, v2, mask, 0.5)
assert np.array_equal(a[:, :, :-1], b[:, :, :-1])              # causal: earlier ones unchanged
open_mask = np.ones((1, 1, 6, 6), dtype=bool)
a, b = attention(q, k, v, open_mask, 0.5), attention(q, k2, v2, open_mask, 0.5)
assert not np.allclose(a[:, :, :-1], b[:, :, :-1])             # no mask: everyone sees it
print("decoder: the same change through the causal mask leaves positions 0..4 unchanged")

# %% [markdown]
# ## 5. The hidden states, and layer -2
#
# `clip_hidden_states` returns what transformers' `output_hidden_states=True` returns: `L + 1`
# arrays, `[0]` the output of `pre_layrnorm` and `[k]` the output of layer `k`. phi-3-vision does
# not use the tower's final output. Its code takes `hidden_states[-2]`, the output of the last
# layer but one, and drops the class token: `G*G` vectors, one per patch, in grid order. Why?
#
# - the grid, not the summary: the decoder will read the image patch by patch (lesson 21 lays
#   the patches out as tokens), so the class token's one-vector summary is not wanted;
# - not the last layer: CLIP's training loss reads only the class token of the last layer
#   (through `post_layernorm` and a projection). The patch outputs of the last layer feed
#   nothing, so CLIP's training never asked anything of them. Those of layer -2 are read: by
#   the last layer's attention, as the keys and values the class token looks at. LLaVA (Liu et
#   al. 2023) compared the two for a language model reading CLIP features and found the features
#   before the last layer slightly better; phi-3-vision's published code takes the same layer.
#
# So the last layer and `post_layernorm` are never needed, and `clip_features` stops before
# them. The check: change them, and the features do not change by a single bit.

# %%
L = tiny.num_hidden_layers
states = clip_hidden_states(pixels, weights, tiny)
features = clip_features(pixels, weights, tiny)               # layer_idx=-2: [1, G*G, C]
print(f"{len(states)} hidden states of shape {states[0].shape}; features {features.shape}")
assert len(states) == L + 1 and np.array_equal(features, states[-2][:, 1:])


def changed(w, prefixes):
    """A copy of w whose tensors under any of `prefixes` are replaced by random ones."""
    return {n: (rng.standard_normal(t.shape).astype(np.float32)
                if n.startswith(prefixes) else t) for n, t in w.items()}


last = changed(weights, (f"encoder.layers.{L - 1}.", "post_layernorm."))
assert np.array_equal(clip_features(pixels, last, tiny), features)           # bit for bit
assert not np.allclose(clip_hidden_states(pixels, last, tiny)[-1], states[-1])
used = changed(weights, (f"encoder.layers.{L - 2}.",))
assert not np.allclose(clip_features(pixels, used, tiny), features)
print(f"last layer ({L - 1}) and post_layernorm replaced: features identical; "
      f"layer {L - 2} replaced: features changed")

# %% [markdown]
# ## 6. The same numbers as transformers
#
# transformers' `CLIPVisionModel` is the implementation phi-3-vision's published code builds its
# tower with. Our weights' names are its names (transformers 5 dropped the `vision_model.`
# level; `clip_weights_from` reads either), so they load into it as they are. Every hidden state
# of a few random crops and of our picture, compared:

# %%
torch.manual_seed(0)
hf = CLIPVisionModel(CLIPVisionConfig(
    hidden_size=C, intermediate_size=tiny.intermediate_size, num_hidden_layers=L,
    num_attention_heads=tiny.num_attention_heads, image_size=S, patch_size=P,
    layer_norm_eps=tiny.layer_norm_eps, hidden_act=tiny.hidden_act)).eval()
hf.load_state_dict({n: torch.from_numpy(w) for n, w in weights.items()}, strict=True)
crops = np.concatenate([pixels, rng.standard_normal((3, 3, S, S)).astype(np.float32)])
with torch.no_grad():
    theirs = hf(pixel_values=torch.from_numpy(crops), output_hidden_states=True).hidden_states
ours = clip_hidden_states(crops, weights, tiny)
assert len(theirs) == len(ours) == L + 1
worst = max(float(np.abs(o - t.numpy()).max()) for o, t in zip(ours, theirs))
scale = max(float(np.abs(t.numpy()).max()) for t in theirs)
print(f"{len(crops)} crops, {L + 1} hidden states: max |ours - transformers| = {worst:.1e} "
      f"(values up to {scale:.1f})")
assert worst <= 1e-4
assert np.abs(clip_features(crops, weights, tiny) - theirs[-2][:, 1:].numpy()).max() <= 1e-4

# %% [markdown]
# ## 7. The published tower
#
# ViT-L/14-336, as phi-3-vision's code hard-codes it: the same functions with
# `CLIP_VIT_L14_336`. Its sizes, computed from the tensor shapes the loader expects:

# %%
big = CLIP_VIT_L14_336
shapes = clip_tensor_shapes(big)
count = lambda names: sum(math.prod(shapes[n]) for n in names)
total = count(shapes)
per_layer = count(n for n in shapes if n.startswith("encoder.layers.0."))
print(f"ViT-L/14-336: {big.image_size} x {big.image_size} pixels, {big.grid} x {big.grid} = "
      f"{big.grid ** 2} patches of {3 * big.patch_size ** 2} numbers, {big.num_positions} "
      f"positions, width {big.hidden_size}, {big.num_hidden_layers} layers, "
      f"{big.num_attention_heads} heads of {big.head_dim}")
print(f"  patch embedding {count(['embeddings.patch_embedding.weight']):>12,}")
print(f"  class token      {count(['embeddings.class_embedding']):>12,}")
print(f"  positions        {count(['embeddings.position_embedding.weight']):>12,}")
print(f"  one layer        {per_layer:>12,}   x {big.num_hidden_layers}")
print(f"  two LayerNorms   {count(n for n in shapes if 'layrnorm' in n or 'layernorm' in n):>12,}"
      "   (pre_layrnorm, post_layernorm)")
print(f"  total            {total:>12,} parameters ({4 * total / 1e9:.2f} GB in float32)")
assert big.num_positions == 577 and big.grid ** 2 == 576
assert total == 303_507_456

# %% [markdown]
# phi-3-vision runs 23 of the 24 layers and never `post_layernorm`. The work per crop, counting
# a multiply-add as 2 operations: the matrix products of each layer (q, k, v, out: 4 C^2 per
# token; fc1 and fc2: 2 C I) and attention's two products over the 577 x 577 scores.

# %%
used_parameters = total - per_layer - count(["post_layernorm.weight", "post_layernorm.bias"])
Tn, Cn, In = big.num_positions, big.hidden_size, big.intermediate_size
layer_flops = 2 * Tn * (4 * Cn * Cn + 2 * Cn * In) + 2 * 2 * Tn * Tn * Cn
crop_flops = 2 * big.grid ** 2 * 3 * big.patch_size ** 2 * Cn + 23 * layer_flops
print(f"parameters used: {used_parameters:,}; per 336 x 336 crop: {crop_flops / 1e9:.0f} GFLOP; "
      f"an image of 16 crops and its global view: {17 * crop_flops / 1e12:.1f} TFLOP")
assert used_parameters == 303_507_456 - 12_596_224 - 2_048

# %% [markdown]
# ## Summary
#
# - A ViT reads an image as a sequence: `G x G` patches, row by row (576 for ViT-L/14-336),
#   after a class token.
# - The patch embedding is a convolution with stride = kernel: one matrix product over the
#   unfolded patches.
# - Learnt position vectors are the only thing that tells the tower where a patch is: without
#   them, shuffling the patches shuffles the outputs.
# - The layers are pre-LN transformer layers with LayerNorm, quick_gelu and biases, and attention
#   without a mask: every patch sees every other.
# - phi-3-vision takes `hidden_states[-2]` without the class token: one vector per patch, from
#   the last layer that CLIP's training shaped for the patches; the last layer is never run.
# - The tower equals transformers' `CLIPVisionModel`, hidden state by hidden state.
#
# Lesson 21 takes these features on: crops of a large image, the 2 x 2 merge, the separators,
# and the tokens the decoder reads.
#
# ## Where it lives
#
# - `tinyphi3/models/vision/clip.py`: `unfold_patches`, `patch_embed`, `self_attention`,
#   `encoder_layer`, `clip_hidden_states`, `clip_features`; `clip_tensor_shapes` and
#   `clip_weights_from` (the names, transformers 4 or 5), `init_clip_weights`.
# - `tinyphi3/config/vision.py`: `ClipConfig` and `CLIP_VIT_L14_336`.
# - `tinyphi3/nn/attention.py`: `attention`, shared with the decoder; `causal_mask`.
# - `tests/test_vision_clip.py`: every hidden state against transformers on random towers drawn
#   by hypothesis, on both backends.
# - `benchmarks/vision.py`: the published tower's speed against transformers'.
