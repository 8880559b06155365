"""Phi-3-vision's image embedding: the tower's features of an image's crops -> vectors in the
decoder's embedding space (REFERENCE-vision §3; `Phi3ImageEmbedding` of the published code).

    per crop:    merge each 2x2 block of patches into one token   [G*G, C] -> [g*g, 4C], g = G/2
    per image:   sub    = its h x w crops side by side, sub_GN after every row   [h*g*(w*g+1), 4C]
                 global = crop 0 (the whole image at crop size), the same way    [g*(g+1), 4C]
                 tokens = sub + [glb_GN] + global                      (the order "sub_glb")
    vectors = W2 gelu(W1 tokens + b1) + b2                                 [n_tokens, D]

    n_tokens = (h*w + 1) g^2 + 1 + (h + 1) g        (the processor's count; g = 12 published)

An image arrives as the processor makes it: pixel_values [num_crops + 1, 3, S, S], the global
view first, then its h*w crops row by row, then zero crops up to num_crops; image_sizes holds
its padded size (h*S, w*S). Letters: tinyphi3/models/vision/__init__.py.

Given Parameters (Phi3V.loss), the same functions train: the merge, tiling and separators are
reshapes, transposes and concatenations the autograd tape records (a separator copied once per
row receives the sum of its copies' gradients).
"""

import math

import numpy as np

from tinyphi3.config.vision import ClipConfig
from tinyphi3.errors import InvalidInputError
from tinyphi3.models.vision.clip import clip_features
from tinyphi3.nn.layers import gelu_erf, linear


def image_token_count(h: int, w: int, g: int) -> int:
    """Vectors of an image of h x w crops: (h*w + 1) g^2 + 1 + (h + 1) g (REFERENCE-vision §2):
    h*w + 1 crops of g^2 tokens, one glb_GN, a sub_GN after each of the (h + 1) g rows."""
    return (h * w + 1) * g * g + 1 + (h + 1) * g


def crop_grids(image_sizes, crop_size: int, num_crops: int) -> list:
    """(h, w), the crops per column and per row, of each image: image_sizes [N, 2] holds each
    padded image's (height, width) in pixels, multiples of crop_size with h*w <= num_crops."""
    sizes = np.asarray(image_sizes)
    if sizes.ndim != 2 or sizes.shape[1] != 2 or not np.issubdtype(sizes.dtype, np.integer):
        raise InvalidInputError(f"image_sizes must be integers [N, 2] (each padded image's height "
                                f"and width), got {sizes.dtype} with shape {sizes.shape}")
    grids = []
    for i, (height, width) in enumerate(sizes.tolist()):
        if min(height, width) <= 0 or height % crop_size or width % crop_size:
            raise InvalidInputError(f"image_sizes[{i}] = [{height}, {width}]: each side must be "
                                    f"a positive multiple of the crop size {crop_size}")
        h, w = height // crop_size, width // crop_size
        if h * w > num_crops:
            raise InvalidInputError(f"image_sizes[{i}] = [{height}, {width}] needs {h} x {w} = "
                                    f"{h * w} crops, but pixel_values hold {num_crops} per image")
        grids.append((h, w))
    return grids


def merge_2x2(features, g: int):
    """Each 2x2 block of neighbouring patches becomes one token, concatenated in (dy, dx) order:
    token (i, j) = [F(2i, 2j) ; F(2i, 2j+1) ; F(2i+1, 2j) ; F(2i+1, 2j+1)], F(r, c) the patch at
    row r, column c (index G*r + c). [n, G*G, C] -> [n, g*g, 4C] with G = 2g."""
    n, L, C = features.shape
    if L != 4 * g * g:
        raise InvalidInputError(f"merge_2x2: {L} patches per crop, expected (2g)^2 = {4 * g * g}")
    x = features.reshape(n, g, 2, g, 2, C)      # [n, G*G, C] -> [n, g(i), 2(dy), g(j), 2(dx), C]
    x = x.transpose(0, 1, 3, 2, 4, 5)           # -> [n, g(i), g(j), 2(dy), 2(dx), C]
    return x.reshape(n, g * g, 4 * C)           # -> [n, g*g, 4C]


def tile_crops(merged, h: int, w: int):
    """h x w crops side by side, crop k = a*w + b at row a, column b: cell (g*a + i, g*b + j) is
    token (i, j) of crop k. [h*w, g*g, 4C] -> [h*g, w*g, 4C]."""
    _, gg, C4 = merged.shape
    g = math.isqrt(gg)
    x = merged.reshape(h, w, g, g, C4)          # [h*w, g*g, 4C] -> [h(a), w(b), g(i), g(j), 4C]
    x = x.transpose(0, 2, 1, 3, 4)              # -> [h(a), g(i), w(b), g(j), 4C]
    return x.reshape(h * g, w * g, C4)          # -> [h*g, w*g, 4C]


def with_row_separators(grid, separator):
    """The separator after every row, then the rows one after another (`add_image_newline`):
    [R, W, 4C] -> [R*(W+1), 4C]."""
    R, W, C4 = grid.shape
    newline = separator.reshape(1, 1, C4).astype(grid.dtype)                # [1, 1, 4C]
    newline = np.concatenate([newline] * R)                   # -> [R, 1, 4C]: R copies, recorded
    rows = np.concatenate([grid, newline], axis=1)                          # -> [R, W+1, 4C]
    return rows.reshape(R * (W + 1), C4)                                    # -> [R*(W+1), 4C]


def hd_tokens(merged_crops, h_c: int, w_c: int, sub_GN, glb_GN):
    """One image's tokens in the order "sub_glb": its crop grid with sub_GN after every row,
    glb_GN, then the global view (crop 0) with sub_GN after every row.
    merged_crops [1 + h_c*w_c, g*g, 4C] (global first) -> [image_token_count(h_c, w_c, g), 4C]."""
    n, _, C4 = merged_crops.shape
    if n != 1 + h_c * w_c:
        raise InvalidInputError(f"hd_tokens: {n} crops for a {h_c} x {w_c} grid and its global "
                                f"view, expected {1 + h_c * w_c}")
    sub = with_row_separators(tile_crops(merged_crops[1:], h_c, w_c), sub_GN)  # [h*g*(w*g+1), 4C]
    glb = with_row_separators(tile_crops(merged_crops[:1], 1, 1), sub_GN)      # [g*(g+1), 4C]
    glb_GN = glb_GN.reshape(1, C4).astype(sub.dtype)                            # [1, 4C]
    return np.concatenate([sub, glb_GN, glb])                                   # -> [n_tok, 4C]


def project(x, weights: dict):
    """The MLP into the decoder's space (`img_projection`: Linear, GELU, Linear; GELU exact, the
    erf form of torch's nn.GELU()): y = W2 gelu(W1 x + b1) + b2. [n, 4C] -> [n, D]."""
    h = linear(x, weights["img_projection.0.weight"], weights["img_projection.0.bias"])  # [n, D]
    return linear(gelu_erf(h), weights["img_projection.2.weight"],
                  weights["img_projection.2.bias"])                                 # -> [n, D]


def image_grids(pixel_values, image_sizes, config: ClipConfig) -> tuple:
    """pixel_values as an array [N, num_crops + 1, channels, S, S] and each image's (h, w),
    checked together, or InvalidInputError."""
    pixels = np.asarray(pixel_values)
    ch, S = config.num_channels, config.image_size
    if pixels.ndim != 5 or 0 in pixels.shape[:2] or pixels.shape[2:] != (ch, S, S):
        raise InvalidInputError(f"pixel_values must be [N, num_crops + 1, {ch}, {S}, {S}] (images; "
                                f"the global view, then the crops; channels, height, width), "
                                f"got shape {pixels.shape}")
    grids = crop_grids(image_sizes, S, pixels.shape[1] - 1)
    if len(grids) != len(pixels):
        raise InvalidInputError(f"image_sizes has {len(grids)} rows for the {len(pixels)} "
                                f"images of pixel_values")
    return pixels, grids


def image_embeddings(pixel_values, image_sizes, tower_weights: dict, clip_config: ClipConfig,
                     layer_idx: int, separators: dict, projection: dict) -> list:
    """Each image's vectors, [image_token_count(h, w, g), D] for an image of h x w crops.

    pixel_values [N, num_crops + 1, 3, S, S]; image_sizes [N, 2] (padded height, width);
    tower_weights: the CLIP tower's (tinyphi3.models.vision.clip); separators: "sub_GN"
    [1, 1, 1, 4C] and "glb_GN" [1, 1, 4C]; projection: "img_projection.{0,2}.{weight,bias}".
    The tower sees an image's global view and its h*w crops only: the zero crops that pad it
    to num_crops would give features that are thrown away (the published code computes them).
    """
    pixels, grids = image_grids(pixel_values, image_sizes, clip_config)
    g = clip_config.grid // 2
    tokens = []
    for image, (h, w) in zip(pixels, grids):
        features = clip_features(image[:1 + h * w], tower_weights, clip_config,
                                 layer_idx)                                # [1+h*w, G*G, C]
        tokens.append(hd_tokens(merge_2x2(features, g), h, w, separators["sub_GN"],
                                separators["glb_GN"]))                    # [n_tok, 4C]
    vectors = project(np.concatenate(tokens), projection)               # [sum of n_tok, D]
    return np.split(vectors, np.cumsum([t.shape[0] for t in tokens])[:-1])  # N x [n_tok, D]
