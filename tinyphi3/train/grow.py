"""A deeper model from a trained one that computes the same function (depth up-scaling).

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
