"""The model's tensors: names and shapes (from its variant) and their random initialisation."""

import math

import numpy as np

from tinyphi3.config import Phi3Config
from tinyphi3.models.variants import variant_for


def parameter_shapes(config: Phi3Config) -> dict:
    """Every tensor of the model, by Hugging Face name, with its shape [out, in] for linears."""
    return variant_for(config).parameter_shapes(config)


def init_parameters(config: Phi3Config, seed: int = 0) -> dict:
    """Random weights: normal(0, std) for matrices, the std the variant's `init_std` (phi-3-small
    scales its `down_proj` down), ones for norm gains, zeros for biases."""
    rng = np.random.default_rng(seed)
    variant = variant_for(config)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        else:
            std = variant.init_std(name, config)
            params[name] = (rng.standard_normal(shape, np.float32) * np.float32(std))
    return params


def parameter_count(config: Phi3Config) -> int:
    """The number of weights, counted without listing every layer's tensors (the layers are
    alike): what a checkpoint's files must at least hold, checked before anything is read."""
    one_layer = variant_for(config).parameter_shapes(config.replace(num_hidden_layers=1))
    layer = sum(math.prod(s) for n, s in one_layer.items() if n.startswith("model.layers.0."))
    rest = sum(math.prod(s) for n, s in one_layer.items() if not n.startswith("model.layers."))
    return rest + config.num_hidden_layers * layer
