"""A deeper or wider model from a trained one that computes the same function.

Depth up-scaling (`deepen`):

Training a deeper model from nothing repeats all of pre-training. Instead, each trained layer
is followed by copies of itself whose two output projections are zero:

    layer i:     h <- h + o_proj(attn(norm(h)))          h <- h + down_proj(mlp(norm(h)))
    its copy:    h <- h + 0 · attn(norm(h))              h <- h + 0 · mlp(norm(h))

A copy adds nothing to the residual stream h, so the grown model's logits equal the trained
model's exactly (tests/test_grow.py). Its gradient is not zero: d loss / d o_proj =
attn(...)ᵀ · d loss / d h, so the first optimizer steps wake the copies, which start from
weights that already read the residual stream (the q/k/v and gate/up of the layer they copy).

    old layers   0        1        2        3
    new layers   0  0'    1  1'    2  2'    3  3'           (factor 2: 4 layers -> 8)

Width up-scaling (`widen`): the residual stream grows from d to D dimensions, each layer gets
more heads (of the same head size) and more MLP units. The new parts are placed so that they
change nothing yet:

    residual stream   h = [h_old, h_new],  h_new = 0 at the start: the embedding's new columns,
                      and every output projection's new rows (o_proj, down_proj), are zero
    RMSNorm           mean(h²) over D is (d / D) · mean(h_old²), so the trained weights are
                      scaled by sqrt(d / D) and eps by d / D:
                          h_old / sqrt((d/D)·mean(h_old²) + (d/D)·eps) · sqrt(d/D) · w
                        = h_old / sqrt(mean(h_old²) + eps) · w                   (unchanged)
    new heads, units  random q/k/v and gate/up rows; their o_proj / down_proj columns are zero
    new input columns random (q/k/v, gate/up, lm_head): they read h_new, which is zero

So the logits are the trained model's (tests/test_grow.py), and every new weight has a path to
a gradient: a new norm weight is not zero, so d loss / d h_new = Σ (new input columns)ᵀ · ...
is not zero, which moves the zero rows of o_proj and down_proj on the first step; the zero
columns of a new head move by its attention output times d loss / d h_old.
"""

import re

import numpy as np

from tinyphi3.config import Phi3Config
from tinyphi3.errors import ConfigError

LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
SILENT = ("self_attn.o_proj.weight", "mlp.down_proj.weight")    # zero in a copy


def deepen(config: Phi3Config, params: dict, layers: int) -> tuple:
    """(config, params) with `layers` decoder layers, `layers` a multiple of the old count;
    every new layer a copy of the trained one before it, its output projections zero."""
    old = config.num_hidden_layers
    if layers <= old or layers % old:
        raise ConfigError(f"--layers must be a multiple of the model's {old} layers larger than "
                          f"it (for example {2 * old}), got {layers}")
    if config.model_type != "phi3":
        raise ConfigError(f"growing a {config.model_type} model is not supported (phi3 only)")
    factor = layers // old
    grown = {}
    for name, array in params.items():
        match = LAYER.match(name)
        if match is None:                          # embeddings, final norm, lm_head: as they are
            grown[name] = array
            continue
        i, rest = int(match.group(1)), match.group(2)
        for k in range(factor):                    # k = 0: the trained layer; k > 0: its copies
            silent = k > 0 and rest in SILENT
            grown[f"model.layers.{i * factor + k}.{rest}"] = (
                np.zeros_like(array) if silent else np.array(array, copy=True))
    return config.replace(num_hidden_layers=layers), grown


def _random(rng, shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def widen(config: Phi3Config, params: dict, hidden_size: int, intermediate_size: int,
          seed: int = 0) -> tuple:
    """(config, params) with a residual stream of `hidden_size` and MLPs of
    `intermediate_size`, the same logits as before (module docstring). Heads keep their size:
    a model of head size 32 grown from 256 to 512 goes from 8 heads to 16, and the key/value
    heads grow by the same factor, so each query head reads the key/value head it read."""
    if config.model_type != "phi3" or config.vision is not None:
        raise ConfigError("widening is supported for a plain phi3 text model only")
    d, hd = config.hidden_size, config.head_dim
    H, K, I = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    group = H // K
    if hidden_size <= d or hidden_size % (hd * group):
        raise ConfigError(f"--hidden-size must be larger than the model's {d} and a multiple of "
                          f"{hd * group} (heads of {hd}; {group} query head(s) per key/value "
                          f"head), got {hidden_size}")
    if intermediate_size < I:
        raise ConfigError(f"--intermediate-size must be at least the model's {I}, "
                          f"got {intermediate_size}")
    if config.tie_word_embeddings:
        raise ConfigError("widening a model with tied embeddings is not supported")
    D, I2 = hidden_size, intermediate_size
    H2 = D // hd
    K2 = H2 // group
    rng = np.random.default_rng(seed)
    std = config.initializer_range
    shrink = np.float32(np.sqrt(d / D))

    def grown_norm(w):                                     # [d] -> [D]
        out = np.full(D, np.mean(w) * shrink, np.float32)
        out[:d] = w * shrink
        return out

    def grown_inputs(w, rows):                             # [r, d] -> [rows, D], old block kept
        out = _random(rng, (rows, D), std)
        out[:w.shape[0], :d] = w
        return out

    def grown_outputs(w, cols):                            # [d, c] -> [D, cols], zero elsewhere
        out = np.zeros((D, cols), np.float32)
        out[:d, :w.shape[1]] = w
        return out

    grown = {}
    for name, w in params.items():
        w = np.asarray(w, np.float32)
        match = LAYER.match(name)
        rest = match.group(2) if match else name
        if name == "model.embed_tokens.weight":            # [V, d] -> [V, D], new columns 0
            out = np.zeros((w.shape[0], D), np.float32)
            out[:, :d] = w
        elif name == "lm_head.weight":                     # reads the final norm: [V, D]
            out = grown_inputs(w, w.shape[0])
        elif rest.endswith("layernorm.weight") or name == "model.norm.weight":
            out = grown_norm(w)
        elif rest == "self_attn.qkv_proj.weight":          # [(H + 2K)·hd, d], q | k | v
            q, k, v = np.split(w, [H * hd, (H + K) * hd])
            out = np.concatenate([grown_inputs(q, H2 * hd), grown_inputs(k, K2 * hd),
                                  grown_inputs(v, K2 * hd)])
        elif rest == "self_attn.o_proj.weight":            # [d, H·hd] -> [D, H2·hd]
            out = grown_outputs(w, H2 * hd)
        elif rest == "mlp.gate_up_proj.weight":            # [2I, d], gate | up
            gate, up = np.split(w, 2)
            out = np.concatenate([grown_inputs(gate, I2), grown_inputs(up, I2)])
        elif rest == "mlp.down_proj.weight":               # [d, I] -> [D, I2]
            out = grown_outputs(w, I2)
        else:
            raise ConfigError(f"cannot widen the tensor {name} (a plain phi3 model only)")
        grown[name] = out
    config = config.replace(hidden_size=D, intermediate_size=I2, num_attention_heads=H2,
                            num_key_value_heads=K2, rms_norm_eps=config.rms_norm_eps * d / D)
    return config, grown
