"""The elementwise and normalisation layers of a Phi-3 block, as pure functions of arrays.

Every function takes arrays and returns a new array; it uses only array methods, operators and
NumPy ufuncs, which other array types (CuPy) take over through NumPy's dispatch protocols.
Compute happens in float32.
"""

import numpy as np


def embedding(input_ids, table):
    """Look up rows of the embedding table: [B, T] int -> [B, T, C]."""
    return table[input_ids]


def linear(x, weight, bias=None):
    """y = x W^T (+ b). Weights are stored [out_features, in_features] as in Hugging Face."""
    y = x @ weight.T                                   # [..., in] @ [in, out] -> [..., out]
    return y if bias is None else y + bias


def rms_norm(x, weight, eps):
    """RMSNorm: w * x / sqrt(mean(x^2) + eps), over the last axis (Zhang & Sennrich 2019)."""
    x = x.astype(np.float32, copy=False)
    variance = (x * x).mean(axis=-1, keepdims=True)     # [..., C] -> [..., 1]
    return weight * (x / np.sqrt(variance + eps))


def silu(x):
    """SiLU (swish): x * sigmoid(x) = x / (1 + exp(-x))."""
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), stable for large inputs."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def gated_mlp(x, gate_up_weight, down_weight):
    """Phi-3 MLP: down_proj(silu(gate) * up), with [gate | up] = gate_up_proj(x).

    The fused projection holds the gate in its FIRST half and `up` in the second.
    """
    gate_up = linear(x, gate_up_weight)               # [B, T, C] -> [B, T, 2I]
    gate, up = np.split(gate_up, 2, axis=-1)           # -> 2 x [B, T, I]
    return linear(silu(gate) * up, down_weight)        # [B, T, I] -> [B, T, C]
