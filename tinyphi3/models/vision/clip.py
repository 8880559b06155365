"""The CLIP ViT vision tower (Radford et al. 2021; Dosovitskiy et al. 2021), as transformers'
`CLIPVisionModel` computes it, and as Phi-3-vision uses it: the patch features of one layer.

    x_0 = pre_layrnorm([class_embedding ; patches(pixels) W_patch^T] + position_embedding)
    x_k = x'_k + fc2(act(fc1(LN2(x'_k)))),   x'_k = x_{k-1} + out_proj(attn(LN1(x_{k-1})))

hidden_states[k] = x_k (k = 0..L); Phi-3-vision takes hidden_states[-2] without its class token
(the output of layer L-1), so the last layer and `post_layernorm` are never computed here.
Letters: N crops, S image side, P patch side, G = S / P patches per side, C hidden size.
The tower's configuration, ClipConfig, is tinyphi3.config.vision's (re-exported here).

Given Parameters (Phi3V.loss), the same functions train: every step is a differentiable layer or
an operation the autograd tape records (the class token is copied N times by concatenation, as
the tape does not record np.broadcast_to).
"""

import numpy as np

from tinyphi3.config.vision import CLIP_VIT_L14_336, ClipConfig  # noqa: F401 (re-exported)
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.attention import attention
from tinyphi3.nn.layers import compute_dtype, gelu_erf, layer_norm, linear, quick_gelu

ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu_erf}   # transformers' hidden_act names


# ---- tensors -------------------------------------------------------------------------------------
def clip_tensor_shapes(config: ClipConfig) -> dict:
    """Every tensor of the tower by its transformers-5 name (relative to the tower), with its
    shape; linears [out, in] and with a bias, the patch convolution without one."""
    C, I, P = config.hidden_size, config.intermediate_size, config.patch_size
    shapes = {"embeddings.class_embedding": (C,),
              "embeddings.patch_embedding.weight": (C, config.num_channels, P, P),
              "embeddings.position_embedding.weight": (config.num_positions, C),
              "pre_layrnorm.weight": (C,), "pre_layrnorm.bias": (C,)}
    for n in range(config.num_hidden_layers):
        layer = f"encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (C, C)
            shapes[f"{layer}self_attn.{proj}.bias"] = (C,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = (C,)
            shapes[f"{layer}{norm}.bias"] = (C,)
        shapes.update({f"{layer}mlp.fc1.weight": (I, C), f"{layer}mlp.fc1.bias": (I,),
                       f"{layer}mlp.fc2.weight": (C, I), f"{layer}mlp.fc2.bias": (C,)})
    shapes.update({"post_layernorm.weight": (C,), "post_layernorm.bias": (C,)})
    return shapes


def strip_clip_prefix(name: str, prefix: str = "") -> str | None:
    """A checkpoint name without `prefix` and without transformers-4's `vision_model.` level,
    or None when the name is not under `prefix`:
    "<prefix>vision_model.pre_layrnorm.bias" (4.x) and "<prefix>pre_layrnorm.bias" (5.x)
    -> "pre_layrnorm.bias"."""
    if not name.startswith(prefix):
        return None
    name = name[len(prefix):]
    return name.removeprefix("vision_model.")


def clip_weights_from(tensors: dict, config: ClipConfig, prefix: str = "") -> dict:
    """The tower's tensors among `tensors` (names under `prefix`, in transformers-4 or 5 style),
    keyed by their canonical 5-style names. Names outside `prefix` are left alone; a missing,
    unknown, doubled or wrongly shaped tensor under it raises InvalidInputError naming it."""
    shapes = clip_tensor_shapes(config)
    weights = {}
    for name, tensor in tensors.items():
        canonical = strip_clip_prefix(name, prefix)
        if canonical is None:
            continue
        if canonical not in shapes:
            raise InvalidInputError(f"unexpected tensor {name!r}: not a CLIP tower tensor")
        if canonical in weights:
            raise InvalidInputError(f"tensor {name!r} is given twice (4.x and 5.x names)")
        if tuple(np.shape(tensor)) != shapes[canonical]:
            raise InvalidInputError(f"tensor {name!r} has shape {tuple(np.shape(tensor))}, "
                                    f"expected {shapes[canonical]}")
        weights[canonical] = tensor
    missing = [prefix + n for n in shapes if n not in weights]
    if missing:
        raise InvalidInputError(f"missing tensor {missing[0]!r}"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return weights


def init_clip_weights(config: ClipConfig, rng: np.random.Generator, std: float = 0.02,
                      positions: str = "random") -> dict:
    """Random float32 weights: normal(0, std) for matrices and embeddings, ones for LayerNorm
    gains, zeros for biases (a tiny tower to train). positions "sincos": the learned position
    embeddings start from grid_positions (the class token's from zeros) instead of noise."""
    if positions not in POSITION_INITS:
        raise InvalidInputError(f"positions must be one of {', '.join(POSITION_INITS)}, got "
                                f"{positions!r}")
    weights = {}
    for name, shape in clip_tensor_shapes(config).items():
        if "norm" in name and name.endswith(".weight"):
            weights[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            weights[name] = np.zeros(shape, np.float32)
        else:
            weights[name] = rng.standard_normal(shape, np.float32) * np.float32(std)
    if positions == "sincos":
        table = np.zeros((config.grid ** 2 + 1, config.hidden_size), np.float32)
        table[1:] = grid_positions(config.grid, config.hidden_size)
        weights["embeddings.position_embedding.weight"] = table
    return weights


POSITION_INITS = ("random", "sincos")


def grid_positions(grid: int, width: int, scale: float = 0.2) -> np.ndarray:
    """2-D sine-cosine positions of a grid x grid of patches in row-major order, [G*G, C]: the
    first half of the channels encodes the row, the second the column, each half as
    [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (C/4)), k = 0..C/4-1 (the fixed positions
    of Vaswani et al. 2017, one per axis), times `scale` (0.2: about the size of the patch
    embedding of a freshly initialised tower, so that neither drowns the other)."""
    if width % 4:
        raise InvalidInputError(f"sin-cos grid positions need a width divisible by 4, got {width}")
    quarter = width // 4
    omega = 10000.0 ** (-np.arange(quarter) / quarter)                 # [C/4]
    rows, cols = np.divmod(np.arange(grid * grid), grid)               # [G*G] each

    def axis(p):
        angles = p[:, None] * omega[None]                               # [G*G, C/4]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # -> [G*G, C/2]
    return (scale * np.concatenate([axis(rows), axis(cols)], axis=1)).astype(np.float32)


# ---- the forward pass ----------------------------------------------------------------------------
def check_pixels(pixels, config: ClipConfig):
    """Raise InvalidInputError unless pixels is [N, channels, S, S] with S the image size."""
    ch, S = config.num_channels, config.image_size
    if np.ndim(pixels) != 4 or tuple(np.shape(pixels)[1:]) != (ch, S, S):
        raise InvalidInputError(f"pixels must be [N, {ch}, {S}, {S}] (crops, channels, height, "
                                f"width), got shape {tuple(np.shape(pixels))}")


def unfold_patches(pixels, patch_size: int):
    """Cut each image into G x G patches of P x P pixels, each flattened channel-major (channel,
    row, column) as the convolution weight [C, 3, P, P] flattens; patch index G*r + c."""
    N, ch, S, _ = pixels.shape
    P, G = patch_size, S // patch_size
    x = pixels.reshape(N, ch, G, P, G, P)          # [N, 3, S, S] -> [N, 3, G(r), P, G(c), P]
    x = x.transpose(0, 2, 4, 1, 3, 5)              # -> [N, G(r), G(c), 3, P, P]
    return x.reshape(N, G * G, ch * P * P)         # -> [N, G*G, 3*P*P]


def patch_embed(pixels, weights: dict, config: ClipConfig):
    """The embeddings: [class ; conv(pixels)] + positions, where the convolution (kernel P,
    stride P, no bias) is one matrix product over the unfolded patches: [N, 3, S, S] ->
    [N, G*G+1, C]."""
    check_pixels(pixels, config)
    pixels = pixels.astype(compute_dtype(pixels), copy=False)
    C = config.hidden_size
    kernel = weights["embeddings.patch_embedding.weight"].reshape(C, -1)  # -> [C, 3*P*P]
    patches = linear(unfold_patches(pixels, config.patch_size), kernel)   # -> [N, G*G, C]
    cls = weights["embeddings.class_embedding"].reshape(1, 1, C).astype(patches.dtype)
    cls = np.concatenate([cls] * len(pixels))       # [1, 1, C] -> [N, 1, C]: N copies, recorded
    x = np.concatenate([cls, patches], axis=1)                           # -> [N, G*G+1, C]
    return x + weights["embeddings.position_embedding.weight"]


def self_attention(x, weights: dict, layer: str, config: ClipConfig):
    """Multi-head attention over every token (no mask, no causality), scale hd^-0.5, through
    the decoder's `attention` with an all-True mask: [N, T, C] -> [N, T, C]."""
    N, T, C = x.shape
    H, hd = config.num_attention_heads, config.head_dim

    def heads(proj):
        y = linear(x, weights[f"{layer}self_attn.{proj}.weight"],
                   weights[f"{layer}self_attn.{proj}.bias"])        # [N, T, C]
        return y.reshape(N, T, H, hd).transpose(0, 2, 1, 3)        # -> [N, H, T, hd]

    everywhere = np.ones((N, 1, T, T), dtype=bool)                  # [N, 1, T, T]
    out = attention(heads("q_proj"), heads("k_proj"), heads("v_proj"), everywhere, hd ** -0.5)
    out = out.transpose(0, 2, 1, 3).reshape(N, T, C)                # [N, H, T, hd] -> [N, T, C]
    return linear(out, weights[f"{layer}self_attn.out_proj.weight"],
                  weights[f"{layer}self_attn.out_proj.bias"])


def encoder_layer(x, weights: dict, n: int, config: ClipConfig):
    """One pre-LN layer: x += attn(LN1(x)); x += fc2(act(fc1(LN2(x)))). [N, T, C] -> same."""
    layer, eps = f"encoder.layers.{n}.", config.layer_norm_eps
    h = layer_norm(x, weights[f"{layer}layer_norm1.weight"], weights[f"{layer}layer_norm1.bias"],
                   eps)
    x = x + self_attention(h, weights, layer, config)
    h = layer_norm(x, weights[f"{layer}layer_norm2.weight"], weights[f"{layer}layer_norm2.bias"],
                   eps)
    h = linear(h, weights[f"{layer}mlp.fc1.weight"], weights[f"{layer}mlp.fc1.bias"])  # -> [.., I]
    h = ACTIVATIONS[config.hidden_act](h)
    return x + linear(h, weights[f"{layer}mlp.fc2.weight"], weights[f"{layer}mlp.fc2.bias"])


def clip_hidden_states(pixels, weights: dict, config: ClipConfig, upto: int | None = None):
    """[x_0, ..., x_upto] (upto defaults to L, all layers), each [N, G*G+1, C]: x_0 the output
    of pre_layrnorm, x_k of layer k, as `output_hidden_states=True` gives them."""
    L = config.num_hidden_layers
    upto = L if upto is None else upto
    if not 0 <= upto <= L:
        raise InvalidInputError(f"upto must be in 0..{L} (layers of the tower), got {upto}")
    x = layer_norm(patch_embed(pixels, weights, config), weights["pre_layrnorm.weight"],
                   weights["pre_layrnorm.bias"], config.layer_norm_eps)
    states = [x]
    for n in range(upto):
        states.append(encoder_layer(states[-1], weights, n, config))
    return states


def clip_features(pixels, weights: dict, config: ClipConfig, layer_idx: int = -2,
                  crops_per_pass: int = 1):
    """hidden_states[layer_idx] without the class token: [N, 3, S, S] -> [N, G*G, C].
    Only the layers up to that one are computed (-2 of L: L-1 layers; post_layernorm never).
    The crops never attend to each other, so they go through the tower `crops_per_pass` at a
    time: a 17-crop image at once keeps activations of hundreds of MB per layer out of cache
    (at ViT-L/14-336, 3.2 s per crop against 2.2 s one at a time)."""
    L = config.num_hidden_layers
    index = layer_idx + L + 1 if layer_idx < 0 else layer_idx       # into the L + 1 states
    if not 0 <= index <= L:
        raise InvalidInputError(f"layer_idx must be in {-(L + 1)}..{L}, got {layer_idx}")
    if crops_per_pass < 1:
        raise InvalidInputError(f"crops_per_pass must be at least 1, got {crops_per_pass}")
    check_pixels(pixels, config)
    return np.concatenate([clip_hidden_states(pixels[i:i + crops_per_pass], weights, config,
                                              upto=index)[-1][:, 1:]   # -> [n, G*G, C]
                           for i in range(0, max(len(pixels), 1), crops_per_pass)])
