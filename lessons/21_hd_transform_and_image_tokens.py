# %% [markdown]
# # Lesson 21: HD cropping and image tokens
#
# The CLIP tower of lesson 20 sees 336 x 336 pixels. A photo is larger and rarely square, and a
# page of text shrunk to 336 pixels is unreadable. §6.1 of the Phi-3 report: "To accommodate
# high-resolution images and various aspect ratios, a dynamic cropping strategy [DZZ+24b] is
# utilized to split the input image into a 2d array of blocks, where the tokens of the blocks are
# concatenated to represent the whole image", and the image tokens "are then combined with text
# tokens in an interleaved way". [DZZ+24b] is InternLM-XComposer2-4KHD (Dong et al. 2024);
# phi-3-vision's image processor (`image_processing_phi3_v.py`) calls the cropping
# `HD_transform`.
#
# 1. the scale search: how many crops, in which grid, for each aspect ratio;
# 2. portrait images: transposed, cropped, transposed back;
# 3. white padding, and the value the model sees for it;
# 4. the global view: torch's bicubic resampling, written out;
# 5. the 2 x 2 merge of patch features;
# 6. the token layout: sub_GN at the end of every row, glb_GN between crops and global view;
# 7. the token count, against the vectors a tiny phi-3-vision really produces;
# 8. the processor: `<|image_1|>` becomes a run of -1 slots, and every text chunk gets a BOS.
#
# Sections 1 to 4 use the published sizes (crops of 336 pixels, up to 16 crops); sections 5 to 8
# a tiny model (crops of 28 pixels, patches of 7). Pictures go to `lesson_outputs/`.

# %%
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import _plot
from tinyphi3.config import Phi3Config
from tinyphi3.config.vision import ClipConfig, VisionConfig
from tinyphi3.models.vision.hd_transform import (CLIP_MEAN, CLIP_STD, ImageProcessor,
                                                 bicubic_weights, cubic_kernel, global_view,
                                                 hd_grid, hd_transform, normalize,
                                                 num_image_tokens, resize_and_pad,
                                                 tokens_from_grid)
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.models.vision.projector import hd_tokens, image_token_count, merge_2x2

np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
CROP, NUM_CROPS, G12 = 336, 16, 12        # published: crop side, crops (num_crops), 24 / 2
MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"


def scene(width, height):
    """A drawn RGB image of any size: sky, sun, grass, a house, and a dark frame so that its
    edges stay visible next to white padding."""
    img = Image.new("RGB", (width, height), (135, 190, 235))
    d = ImageDraw.Draw(img)
    w, h, r = width, height, 0.18 * min(width, height)
    d.rectangle([0, 0.72 * h, w, h], fill=(70, 160, 60))
    d.ellipse([0.8 * w - r, 0.25 * h - r, 0.8 * w + r, 0.25 * h + r], fill=(250, 210, 40))
    d.rectangle([0.15 * w, 0.45 * h, 0.4 * w, 0.85 * h], fill=(200, 50, 40))
    d.polygon([(0.12 * w, 0.46 * h), (0.275 * w, 0.3 * h), (0.43 * w, 0.46 * h)],
              fill=(90, 60, 40))
    d.rectangle([0, 0, w - 1, h - 1], outline=(20, 30, 90), width=max(1, min(w, h) // 60))
    return img


# %% [markdown]
# ## 1. The scale search
#
# The budget is `num_crops` crops of 336 x 336 (16 in Phi-3-vision's `preprocessor_config.json`).
# The image keeps its aspect ratio `ratio = W / H` (a landscape one, for now: `ratio >= 1`).
# With `s` crops across, the image is `336 s` pixels wide and `336 s / ratio` high, so it needs
# `ceil(s / ratio)` rows of crops. The processor takes the largest `s` whose grid fits:
#
#     s = the largest integer with  s * ceil(s / ratio) <= num_crops
#
# then resizes the image to `new_w = 336 s`, `new_h = int(new_w / ratio)` (Pillow, bilinear),
# and pads the height with white up to the next multiple of 336. Every image fills its budget
# this way, small ones too: a 100 x 100 icon becomes 1344 x 1344. For 640 x 480:

# %%
W, H = 640, 480
ratio = W / H
print(" s  rows = ceil(s / ratio)  crops")
for s in range(1, 6):
    rows = math.ceil(s / ratio)
    print(f" {s}  {rows:>21}  {s * rows:>5}{'  <= 16' if s * rows <= NUM_CROPS else '  too many'}")
h_c, w_c, new_w, new_h, transposed = hd_grid(W, H, NUM_CROPS, CROP)
print(f"{W} x {H}: s = {w_c}, resized to {new_w} x {new_h}, padded to {w_c * CROP} x "
      f"{h_c * CROP}: {h_c} x {w_c} crops (rows x columns)")
assert (h_c, w_c, new_w, new_h, transposed) == (3, 4, 1344, 1008, False)

# %% [markdown]
# Each crop gives 144 tokens after the 2 x 2 merge of section 5 (24 x 24 patches -> 12 x 12),
# and so does a *global view*, the whole image shrunk to one crop (section 4); section 6 adds
# a separator after every row of tokens and one between the two parts:
#
#     tokens = (h_c w_c + 1) 144 + 1 + (h_c + 1) 12
#
# Some sizes, with the grids and counts the published processor gives them (worked out from
# its code, not from this one), against tinyphi3's computed from the size alone:

# %%
table = {(336, 336): (4, 4, 2509), (100, 100): (4, 4, 2509), (640, 480): (3, 4, 1921),
         (480, 640): (4, 3, 1933), (1920, 1080): (3, 5, 2353), (465, 226): (3, 5, 2353),
         (50, 8000): (16, 1, 2653), (8000, 50): (1, 16, 2473)}
for (W, H), (rows, cols, tokens) in table.items():
    h_c, w_c = hd_grid(W, H, NUM_CROPS, CROP)[:2]
    n = num_image_tokens(W, H, NUM_CROPS)
    print(f"  {W:>5} x {H:<5} -> {h_c:>2} x {w_c:<2} crops, {n:>5} tokens")
    assert (h_c, w_c, n) == (rows, cols, tokens) == (h_c, w_c, tokens_from_grid(h_c, w_c, G12))

# %% [markdown]
# The grids drawn, each image resized and padded exactly as the processor does it (red lines:
# the crops; the grey around each panel is not part of the image, the white bands are):

# %%
panels = []
for W, H in [(336, 336), (640, 480), (1920, 1080), (1000, 200), (480, 640), (300, 900)]:
    h_c, w_c, new_w, new_h, transposed = hd_grid(W, H, NUM_CROPS, CROP)
    padded = resize_and_pad(scene(W, H), NUM_CROPS, CROP)     # uint8 [h_c 336, w_c 336, 3]
    assert padded.shape == (h_c * CROP, w_c * CROP, 3)
    n = num_image_tokens(W, H, NUM_CROPS)
    label = (f"{W} x {H} -> {h_c} x {w_c} = {h_c * w_c} crops\n"
             f"{padded.shape[1]} x {padded.shape[0]} pixels, {n:,} tokens")
    print(label.replace("\n", ", "))
    panels.append((label, padded, CROP))
print("picture:", _plot.crop_grids(
    "21_crop_grids.png", panels, "The HD transform at num_crops = 16: the crops chosen for six "
    "aspect ratios", note="each image resized to fill its grid, then padded with white to whole "
    "crops of 336 x 336; rows x columns; tokens: what the decoder reads for the image"))

# %% [markdown]
# ## 2. Portrait images
#
# For a portrait image (`W < H`) the processor first *transposes* it: it swaps the axes, pixel
# `(row, col)` goes to `(col, row)`, a mirror across the diagonal, not a rotation. The search of
# section 1 then runs on a landscape image, and the result is transposed back. So 480 x 640 gets
# the grid of 640 x 480 turned on its side (4 x 3), and its white padding goes left and right.

# %%
little = np.arange(6).reshape(2, 3)
as_image = Image.fromarray(little.astype(np.uint8))
swapped = np.asarray(as_image.transpose(Image.Transpose.TRANSPOSE))
print("a 2 x 3 image:\n", little, "\ntransposed:\n", swapped)
assert np.array_equal(swapped, little.T)
assert not np.array_equal(swapped, np.rot90(little))            # not a rotation

landscape = resize_and_pad(scene(1920, 1080), NUM_CROPS, CROP)   # [1008, 1680, 3]
portrait = resize_and_pad(scene(1080, 1920), NUM_CROPS, CROP)    # [1680, 1008, 3]
white = lambda a: (a == 255).all()
print(f"1920 x 1080 -> {landscape.shape[:2]}, 1080 x 1920 -> {portrait.shape[:2]}")
assert white(landscape[:31]) and white(landscape[-32:]) and not white(landscape[31])  # top 31
assert white(portrait[:, :31]) and white(portrait[:, -32:]) and not white(portrait[:, 31])
assert not white(portrait[:1]) and not white(portrait[-1:])       # no padding above or below
print("landscape: 31 white rows above, 32 below; portrait: 31 white columns left, 32 right")

# %% [markdown]
# The two grids hold the same crops, 3 x 5 and 5 x 3, but not the same number of tokens: there
# is a separator per row of tokens, and the portrait grid has more rows.

# %%
a, b = num_image_tokens(1920, 1080, NUM_CROPS), num_image_tokens(1080, 1920, NUM_CROPS)
print(f"1920 x 1080: {a} tokens; 1080 x 1920: {b} tokens; {b - a} more = 2 more crop rows x "
      f"{G12} token rows x 1 separator")
assert b - a == 2 * G12

# %% [markdown]
# ## 3. White padding, and what the model sees
#
# After padding, every pixel is normalised with OpenAI CLIP's mean and standard deviation per
# channel, `x = (u8 / 255 - mean) / std`. Zero after normalising is the average colour, a
# grey-brown; white is far from it, about +2 in every channel:

# %%
white_pixel = normalize(np.full((1, 1, 3), 255, np.uint8))[:, 0, 0]    # [3]
by_formula = (1 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
print("white after normalising:", white_pixel, "  (1 - mean) / std:", by_formula)
assert np.allclose(white_pixel, [1.9303361, 2.0748837, 2.145897], atol=1e-6)
assert np.allclose(white_pixel, by_formula, atol=1e-6)

# %% [markdown]
# So the padding is not "nothing": the tower sees white bars, as it did in training. Two other
# kinds of padding do mean nothing. `pixel_values` holds `num_crops + 1` crops for every image,
# whatever its grid; the unused ones are all zeros. The model knows each image's padded size
# (`image_sizes`, height first) and reads only the crops of its grid: the published code runs the
# tower on the zero crops and discards the features; tinyphi3 does not run them.

# %%
pixel_values, size = hd_transform(scene(640, 480), NUM_CROPS)     # [17, 3, 336, 336]
h_c, w_c = size[0] // CROP, size[1] // CROP
used = 1 + h_c * w_c
print(f"pixel_values {pixel_values.shape}, image_sizes {size}: global view + {h_c * w_c} "
      f"crops, then {len(pixel_values) - used} all-zero crops")
assert pixel_values.shape == (NUM_CROPS + 1, 3, CROP, CROP) and size == (1008, 1344)
assert not pixel_values[used:].any() and all(pixel_values[k].any() for k in range(used))

# %% [markdown]
# ## 4. The global view
#
# Crop 0 is the whole padded image shrunk to 336 x 336, so the model sees the image at once as
# well as in detail. The published code does it on the *normalised* image with
# `torch.nn.functional.interpolate(x, size=(336, 336), mode="bicubic")`, whose defaults are
# `align_corners=False` and no antialiasing. Separable: each output row (then column) is a
# weighted sum of 4 input rows. Output `i` of `n_out` reads around the point
#
#     src = (i + 0.5) * n_in / n_out - 0.5          the 4 taps floor(src) - 1 .. floor(src) + 2
#
# with Keys' cubic convolution weights, A = -0.75 (torch's choice; the classic value is -0.5):
#
#     w(t) = ((A + 2)|t| - (A + 3)) t^2 + 1            |t| <= 1
#     w(t) = ((A|t| - 5A)|t| + 8A)|t| - 4A             1 < |t| < 2

# %%
print(" n_in   k   output 100 reads columns        with weights                        sum")
for n_in in (1008, 1344, 1680):                           # 3, 4 and 5 crops of 336
    k = n_in // CROP
    src = (100 + 0.5) * n_in / CROP - 0.5                 # = 100 k + (k - 1) / 2
    taps = np.floor(src) - 1 + np.arange(4)
    w = cubic_kernel(src - taps)
    print(f" {n_in}  {k}   {taps.astype(int).tolist()!s:28} {w.round(4).tolist()!s:35} "
          f"{w.sum():.3f}")
    M = bicubic_weights(n_in, CROP)                       # [336, n_in]: the whole resampling
    assert np.allclose(M.sum(axis=1), 1) and np.allclose(M[100, taps.astype(int)], w)
    if k % 2:                                             # odd k: src is a whole number
        assert np.array_equal(w, [0, 1, 0, 0])
    else:                                                 # even k: halfway, negative lobes
        assert np.allclose(w, [-0.09375, 0.59375, 0.59375, -0.09375])
    unread = n_in - int((M != 0).any(axis=0).sum())
    print(f"       {unread} of the {n_in} input columns are never read")

# %% [markdown]
# The padded sides are whole multiples of 336, so the shrink factor `k` is a whole number and
# `src = k i + (k - 1) / 2`. For odd `k` it falls on a pixel: the "bicubic" global view simply
# picks the middle pixel of every `k x k` block, and a thin line on the other pixels vanishes.
# For even `k` it falls halfway between two pixels, and the 4 taps get the weights (-0.094,
# 0.594, 0.594, -0.094): the negative lobes sharpen (and can overshoot), and from `k = 6` on
# some pixels are skipped again. An antialiased shrink would average every pixel of each block;
# torch's default does not, and the model was trained on exactly these pixels, so the processor
# reproduces them rather than improve them.
#
# tinyphi3's `global_view` applies the two weight matrices, `M_h x M_w^T`. Against torch itself,
# on the 640 x 480 image (1008 x 1344: k = 3 and 4), and on random values of a size that is no
# multiple of 336, where the coordinates fall anywhere:

# %%
x = normalize(resize_and_pad(scene(640, 480), NUM_CROPS, CROP))     # [3, 1008, 1344]
for name, image in [("640 x 480 image", x),
                    ("random 3 x 500 x 700", rng.standard_normal((3, 500, 700), np.float32))]:
    ours = global_view(image, CROP)                                 # [3, 336, 336]
    theirs = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=(CROP, CROP),
                                             mode="bicubic", align_corners=False)[0].numpy()
    difference = np.abs(ours - theirs).max()
    print(f"global view of the {name}: max |tinyphi3 - torch| = {difference:.1e}")
    assert difference <= 1e-5

# %% [markdown]
# What the tower receives for a 1920 x 1080 image: the global view, then the 15 crops row by row
# (drawn back in colour: `x * std + mean`, clipped to 0..255 where the bicubic overshoots). The
# global view squeezes the padded 1680 x 1008 image into a square, so the sun becomes an
# ellipse; the crops keep the proportions.

# %%
pixels, size = hd_transform(scene(1920, 1080), NUM_CROPS)    # [17, 3, 336, 336]
h_c, w_c = size[0] // CROP, size[1] // CROP
mean, std = np.array(CLIP_MEAN)[:, None, None], np.array(CLIP_STD)[:, None, None]


def colour(p):
    """Normalised [3, S, S] -> uint8 [S, S, 3], clipped."""
    return np.clip(np.rint((p * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


assert np.array_equal(colour(pixels[1]), landscape[:CROP, :CROP])   # crop 1: the top left
views = [("crop 0: global view", colour(pixels[0]), None)]
views += [(f"crop {k}: row {(k - 1) // w_c}, col {(k - 1) % w_c}", colour(pixels[k]), None)
          for k in range(1, 1 + h_c * w_c)]
print("picture:", _plot.crop_grids(
    "21_pixel_values.png", views, f"pixel_values of a 1920 x 1080 image: the global view and "
    f"{h_c} x {w_c} crops, 336 x 336 each", box=(150, 150), per_row=8,
    note=f"then {NUM_CROPS - h_c * w_c} all-zero crop(s), up to num_crops + 1 = 17 (not drawn)"))

# %% [markdown]
# ## 5. The 2 x 2 merge
#
# From here on, a tiny tower: crops of 28 pixels, patches of 7, so `G = 4` patches a side (24
# published) and `g = G / 2 = 2` merged tokens a side (12 published). The tower gives `G*G`
# feature vectors per crop (lesson 20), in row order. phi-3-vision concatenates each 2 x 2 block
# of neighbours into one vector four times as wide: 576 vectors of 1024 become 144 of 4096, so
# the decoder reads a quarter as many tokens. Within a block the order is (dy, dx), dx fastest:
#
#     token (i, j) = [F(2i, 2j) ; F(2i, 2j+1) ; F(2i+1, 2j) ; F(2i+1, 2j+1)]
#
# Label every patch's feature with its own index and watch where it goes:

# %%
G, g = 4, 2
features = np.arange(G * G, dtype=np.float32).reshape(1, G * G, 1)   # [1 crop, G*G, C=1]
merged = merge_2x2(features, g)                                      # -> [1, g*g, 4C]
print("patch grid:\n", np.arange(G * G).reshape(G, G))
for t in range(g * g):
    print(f"  token {t} = (i={t // g}, j={t % g}) <- patches {merged[0, t].astype(int).tolist()}")
for i in range(g):
    for j in range(g):
        expected = [G * 2 * i + 2 * j, G * 2 * i + 2 * j + 1, G * (2 * i + 1) + 2 * j,
                    G * (2 * i + 1) + 2 * j + 1]
        assert merged[0, g * i + j].tolist() == expected
print(f"published: {24 * 24} patches of 1024 -> {G12 * G12} tokens of {4 * 1024} per crop")

# %% [markdown]
# ## 6. The token layout: sub_GN and glb_GN
#
# An image of `h_c x w_c` crops becomes one sequence, in the order "sub_glb":
#
# 1. the crops' tokens laid side by side as one `(g h_c) x (g w_c)` grid, read row by row
#    *across* the crops (not crop after crop), each row followed by `sub_GN`, a learnt vector
#    that says "end of a row", since a flat sequence has no other way to tell where rows end;
# 2. `glb_GN`, a second learnt vector, once;
# 3. the global view's `g x g` tokens, each row again followed by `sub_GN`.
#
#     tokens = (h_c w_c + 1) g^2 + 1 + (h_c + 1) g
#
# To see which vector lands where, give `hd_tokens` vectors that say where they come from:
# `[crop k, i, j, 0]` for merged token (i, j) of crop k (k = 0 the global view), `[-1, ...]`
# for sub_GN and `[-2, ...]` for glb_GN; then read the sequence back. A 2 x 3 grid:

# %%
h_c, w_c = 2, 3
labelled = np.zeros((1 + h_c * w_c, g * g, 4), np.float32)           # [1 + h w, g*g, 4C=4]
for k in range(1 + h_c * w_c):
    for i in range(g):
        for j in range(g):
            labelled[k, g * i + j] = [k, i, j, 0]
sub_GN = np.array([-1, 0, 0, 0], np.float32).reshape(1, 1, 1, 4)
glb_GN = np.array([-2, 0, 0, 0], np.float32).reshape(1, 1, 4)
sequence = hd_tokens(labelled, h_c, w_c, sub_GN, glb_GN)             # [n_tok, 4]
print(f"{h_c} x {w_c} crops, g = {g}: {len(sequence)} vectors = ({h_c * w_c} + 1) x {g * g} + 1 "
      f"+ ({h_c} + 1) x {g}")
assert len(sequence) == image_token_count(h_c, w_c, g) == 35

SUB, GLOBAL, GLB = h_c * w_c, h_c * w_c + 1, h_c * w_c + 2          # kinds after the crops
sub_cells = [[None] * (g * w_c + 1) for _ in range(g * h_c)]
glb_cells = [[None] * (g + 1) for _ in range(g)]
glb_gn_cell, last = None, None
for p, (k, i, j, _) in enumerate(sequence.astype(int)):
    if k > 0:                                        # crop k = 1 + a w_c + b, token (i, j)
        a, b = divmod(k - 1, w_c)
        last = (sub_cells, g * a + i)
        sub_cells[g * a + i][g * b + j] = (f"{p}\nc{k} {i},{j}", k - 1)
    elif k == 0:                                     # the global view
        last = (glb_cells, i)
        glb_cells[i][j] = (f"{p}\nglb {i},{j}", GLOBAL)
    elif k == -1:                                    # sub_GN ends the row of the token before
        cells, row = last
        cells[row][-1] = (f"{p}\nsub_GN", SUB)
    else:
        glb_gn_cell = (f"{p}\nglb_GN", GLB)
sub_order = [int(c[0].split()[0]) for row in sub_cells for c in row]
assert sub_order == list(range(g * h_c * (g * w_c + 1)))            # row by row, across crops
assert glb_gn_cell[0].startswith("28") and glb_cells[0][0][0].startswith("29")
legend = [f"crop {k} (row {(k - 1) // w_c}, col {(k - 1) % w_c})" for k in range(1, 7)]
legend += ["sub_GN: end of a row", "global view (crop 0)", "glb_GN"]
print("picture:", _plot.cell_grids(
    "21_token_layout.png",
    [(f"sub-images: {h_c} x {w_c} crops of {g} x {g} tokens", sub_cells, (g, g)),
     ("then", [[glb_gn_cell]], None), ("then the global view", glb_cells, (g, g))],
    f"The {len(sequence)} image tokens of a {h_c} x {w_c} grid, in sequence order (g = {g}; "
    f"published g = 12: {tokens_from_grid(h_c, w_c, G12):,} tokens)", legend,
    note="each cell: its position in the sequence, then where it comes from (crop k, merged "
         "token i, j); thick lines: crop borders"))

# %% [markdown]
# ## 7. The count, against a real embedding
#
# The processor counts tokens from the image's size; the model produces vectors from pixels.
# The two must agree exactly, or the vectors would not fit the slots of section 8 (vLLM once
# crashed on "Attempted to assign 457 = 457 multimodal tokens to 757 placeholders", vLLM
# #7840). A tiny phi3_v model with random weights: a tower with section 5's sizes (crops of
# 28 pixels, patches of 7; width 16, 3 layers), a decoder of width 32 with 2 layers, and a
# vocabulary that holds the tokenizer of checkpoints/mini. For each image: the count from the
# size, and the vectors it really gets.

# %%
clip = ClipConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                  num_attention_heads=2, image_size=28, patch_size=7, layer_norm_eps=1e-5)
config = Phi3Config(vocab_size=2112, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, bos_token_id=1,
                    eos_token_id=2, pad_token_id=0, model_type="phi3_v",
                    vision=VisionConfig(clip=clip, image_dim_out=clip.hidden_size))
model = Phi3V(config, seed=0)
print(f"tiny phi3_v: {model.num_parameters():,} parameters")
processor = ImageProcessor(num_crops=6, crop_size=28, patch_size=7)
expected = {(50, 30): 35, (30, 50): 37, (60, 20): 21, (20, 60): 25, (56, 28): 35, (5, 5): 27,
            (90, 9): 33}                  # the published formulas with S = 28, num_crops 6
for (W, H), tokens in expected.items():
    out = processor(scene(W, H))
    vectors = model.image_features(out["pixel_values"], out["image_sizes"])[0]   # [n, D]
    h_c, w_c = (out["image_sizes"][0] // 28).tolist()
    print(f"  {W:>2} x {H:<2} -> {h_c} x {w_c} crops: counted {out['num_img_tokens'][0]:>2}, "
          f"embedded {vectors.shape}")
    assert vectors.shape == (tokens, 32) and out["num_img_tokens"] == [tokens]
    assert tokens == num_image_tokens(W, H, 6, crop=28, patch=7)

# %% [markdown]
# ## 8. The processor: image slots and a BOS per chunk
#
# The prompt holds the text `<|image_1|>` (plain text, not a token) where the image goes. The
# processor splits the prompt at the tags, tokenises each text chunk *on its own*, and puts
# between chunks `n` copies of the id `-k` for image `k`: slots the model fills with the image's
# vectors, in order. Phi-3-vision's tokenizer adds BOS (`<s>`, id 1) to everything it encodes,
# so every chunk, the one after the image included, starts with BOS: an oddity of the published
# processor that the model was fine-tuned with, so it is kept. checkpoints/mini's tokenizer
# does not add BOS; a copy set to do so, with a preprocessor_config.json for the tiny model:

# %%
directory = Path(tempfile.mkdtemp(prefix="lesson21_"))
for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json"):
    shutil.copy(MINI / name, directory / name)
settings = json.loads((directory / "tokenizer_config.json").read_text())
settings["add_bos_token"] = True                            # as Phi-3-vision's tokenizer
(directory / "tokenizer_config.json").write_text(json.dumps(settings))
(directory / "preprocessor_config.json").write_text(
    json.dumps({"num_crops": 4, "crop_size": 28, "patch_size": 7}))
phi3v_processor = Phi3VProcessor.from_pretrained(directory)

prompt = "<|user|>\n<|image_1|>\nWhat is in the picture?<|end|>\n<|assistant|>\n"
inputs = phi3v_processor(prompt, [scene(50, 30)])
ids = inputs["input_ids"][0].tolist()


def collapsed(ids):
    """The ids as text, each run of image slots written once: "[-1] x 27"."""
    runs, start = [], 0
    while start < len(ids):
        end = start
        while end < len(ids) and ids[end] == ids[start] < 0:
            end += 1
        runs.append(f"[{ids[start]}] x {end - start}" if end > start else str(ids[start]))
        start = max(end, start + 1)
    return ", ".join(runs)


print(f"prompt: {prompt!r}\ninput_ids ({len(ids)}): {collapsed(ids)}")
n = inputs["num_img_tokens"][0]
first_slot = ids.index(-1)
assert ids.count(-1) == n == 27 and ids[0] == 1 and ids[first_slot + n] == 1   # BOS twice
assert ids[first_slot:first_slot + n] == [-1] * n

tok = phi3v_processor.tokenizer
shown = [("-1" if i < 0 else tok.id_to_token(i).replace("<0x0A>", "\\n").replace("▁", "_"))
         for i in ids]                                      # _ for SentencePiece's space
kinds = [2 if i < 0 else 1 if i == 1 else 0 for i in ids]
print("picture:", _plot.token_strip(
    "21_prompt_ids.png", shown, kinds, ["text token", "BOS (one per chunk)", "image slot (-1)"],
    f"input_ids of the model card's prompt with one 50 x 30 image: {n} slots for image 1 "
    "(_ marks a space)"))
assert shown[first_slot + n] == "<s>" and shown[first_slot + n + 1] == "_"
assert shown[1:3] == ["<|user|>", "-1"]                   # no newline token between them

# %% [markdown]
# The second chunk also begins with `▁` before its newline: SentencePiece's dummy prefix (lesson
# 1), which a chunk encoded on its own gets like any text. And the newline after `<|user|>` is
# gone: this tokenizer's `<|user|>`, like its `<|end|>` and `<|assistant|>`, swallows the
# whitespace after it (`rstrip` in tokenizer_config.json).
#
# Two images: `-1` slots for the first, `-2` for the second, each run as long as its own image
# needs; the empty chunk after a final tag still gets its BOS.

# %%
two = phi3v_processor("<|image_1|> and <|image_2|>", [scene(50, 30), scene(20, 60)])
ids2 = two["input_ids"][0].tolist()
print(f"num_img_tokens {two['num_img_tokens']}; input_ids: {collapsed(ids2)}")
assert two["num_img_tokens"] == [27, 25]               # 2 x 2 crops; 3 x 1 crops
assert ids2.count(-1) == 27 and ids2.count(-2) == 25 and ids2[-1] == 1 and ids2[0] == 1

# %% [markdown]
# And the whole path: the tiny model embeds the prompt (text ids looked up, the slots filled
# with the image's vectors in order) and returns logits for every position.

# %%
embedded = model.embed(inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"])
vectors = model.image_features(inputs["pixel_values"], inputs["image_sizes"])[0]
assert np.array_equal(embedded[0, first_slot:first_slot + n], vectors)
logits = model(inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"])
print(f"embeddings {embedded.shape}, logits {logits.shape}")
assert logits.shape == (1, len(ids), config.vocab_size) and np.isfinite(logits).all()
shutil.rmtree(directory)

# %% [markdown]
# ## Summary
#
# - The HD transform picks the largest `s` with `s * ceil(s / ratio) <= num_crops`, resizes the
#   image to `336 s` wide and pads the height with white to whole crops; a portrait is
#   transposed first and back after, so its padding goes left and right.
# - White padding is a colour the model sees (about +2 after normalising); zero crops that pad
#   `pixel_values` are never read.
# - The global view is torch's bicubic interpolate (A = -0.75, no antialiasing), reproduced
#   as two weight matrices to 1e-5.
# - The 2 x 2 merge makes 144 tokens of 4096 from 576 patches of 1024, in (dy, dx) order.
# - The tokens: the crop grid row by row across crops with `sub_GN` after each row, `glb_GN`,
#   then the global view likewise: `(h_c w_c + 1) g^2 + 1 + (h_c + 1) g` vectors, the count the
#   processor reserves as `-k` slots.
# - Each text chunk is tokenised on its own, so each starts with BOS.
#
# ## Where it lives
#
# - `tinyphi3/models/vision/hd_transform.py`: `hd_grid` (the scale search), `resize_and_pad`,
#   `normalize`, `cubic_kernel`, `bicubic_weights`, `global_view`, `split_crops`,
#   `hd_transform`, `num_image_tokens`, `ImageProcessor`.
# - `tinyphi3/models/vision/projector.py`: `merge_2x2`, `tile_crops`, `with_row_separators`,
#   `hd_tokens`, `image_token_count`, `project`, `image_embeddings`.
# - `tinyphi3/models/vision/processor.py`: `Phi3VProcessor` (tags, slots, BOS per chunk).
# - `tinyphi3/models/vision/phi3v.py`: `Phi3V` (the slots filled, the decoder run).
# - `tests/test_vision_processor.py`, `tests/test_vision_projector.py`,
#   `tests/test_vision_text_processor.py`, `tests/test_vision_model.py`: against Pillow + torch,
#   transformers' tokenizer, and an independent torch model.
