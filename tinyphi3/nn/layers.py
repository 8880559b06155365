"""The elementwise and normalisation layers of a Phi-3 block, as pure functions of arrays.

Every function takes arrays and returns a new array; it uses only array methods, operators and
NumPy ufuncs, which other array types (CuPy) take over through NumPy's dispatch protocols.
Compute happens in float32. Where a fused Numba kernel exists (tinyphi3.backends), the function
hands float32 arrays to it on the "numba" backend; the NumPy lines below it are the reference.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn import activations
from tinyphi3.nn import gradients as grad
from tinyphi3.nn.activations import gegelu_inputs
from tinyphi3.nn.arrays import like
from tinyphi3.nn.autograd import differentiable


def compute_dtype(x):
    """float32, or float64 when the input already is (gradient checks run in float64)."""
    return np.promote_types(x.dtype, np.float32)


@differentiable(grad.embedding_backward)
def embedding(input_ids, table):
    """Look up rows of the embedding table: [B, T] int -> [B, T, C] (ids from the host are
    uploaded to a table on a GPU)."""
    return table[like(input_ids, table)]


@differentiable(grad.linear_backward)
def linear(x, weight, bias=None):
    """y = x W^T (+ b). Weights are stored [out_features, in_features] as in Hugging Face."""
    y = x.reshape(-1, x.shape[-1]) @ weight.T           # [N, in] @ [in, out] -> [N, out]
    y = y.reshape(*x.shape[:-1], weight.shape[0])      # one matrix product, not one per row
    return y if bias is None else y + bias


@differentiable(grad.rms_norm_backward)
def rms_norm(x, weight, eps):
    """RMSNorm: w * x / sqrt(mean(x^2) + eps), over the last axis (Zhang & Sennrich 2019)."""
    kernel = backends.kernel("rms_norm", x, weight)
    if kernel is not None:
        return kernel(x, weight, eps)
    x = x.astype(compute_dtype(x), copy=False)
    variance = (x * x).mean(axis=-1, keepdims=True)     # [..., C] -> [..., 1]
    return weight * (x / np.sqrt(variance + eps))


@differentiable(grad.layer_norm_backward)
def layer_norm(x, weight, bias, eps):
    """LayerNorm (Ba et al. 2016): w * (x - mean(x)) / sqrt(var(x) + eps) + b, over the last axis,
    var the biased variance mean((x - mean)^2). phi-3-small's norm (phi3 uses RMSNorm)."""
    x = x.astype(compute_dtype(x), copy=False)
    centred = x - x.mean(axis=-1, keepdims=True)                  # [..., C]
    variance = (centred * centred).mean(axis=-1, keepdims=True)   # [..., C] -> [..., 1]
    return weight * (centred / np.sqrt(variance + eps)) + bias


@differentiable(grad.silu_backward)
def silu(x):
    """SiLU (swish): x * sigmoid(x) = x / (1 + exp(-x))."""
    with np.errstate(over="ignore"):                   # exp(-x) = inf for x << 0 gives 0: right
        return x / (1.0 + np.exp(-x))


@differentiable(grad.quick_gelu_backward)
def quick_gelu(x):
    """CLIP's activation x * sigmoid(1.702 x) (tinyphi3.nn.activations.quick_gelu), recorded."""
    return activations.quick_gelu(x)


@differentiable(grad.gelu_erf_backward)
def gelu_erf(x):
    """Exact GELU x * Phi(x) (tinyphi3.nn.activations.gelu_erf), recorded: the projector's."""
    return activations.gelu_erf(x)


@differentiable(grad.softmax_backward)
def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x), stable for large inputs."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


@differentiable(grad.silu_and_mul_backward)
def silu_and_mul(gate_up):
    """The SwiGLU gate (Shazeer 2020): silu(gate) * up, where [gate | up] = gate_up.

    The fused projection holds the gate in its FIRST half and `up` in the second.
    """
    kernel = backends.kernel("silu_and_mul", gate_up)
    if kernel is not None:
        return kernel(gate_up)
    gate, up = np.split(gate_up, 2, axis=-1)           # [..., 2I] -> 2 x [..., I]
    return silu(gate) * up


def gated_mlp(x, gate_up_weight, down_weight, linear=linear):
    """Phi-3 MLP: down_proj(silu(gate) * up), with [gate | up] = gate_up_proj(x).
    `linear`: the product with the weights (another one for weights stored in 4 bits)."""
    gate_up = linear(x, gate_up_weight)               # [B, T, C] -> [B, T, 2I]
    hidden = silu_and_mul(gate_up)                    # -> [B, T, I]
    del gate_up                                       # (inference: not held during down_proj)
    return linear(hidden, down_weight)                # [B, T, I] -> [B, T, C]


@differentiable(grad.gegelu_backward)
def gegelu(x, limit):
    """phi-3-small's gated activation (GEGLU, Shazeer 2020, with its own clamp and a + 1):

        gegelu(x) = quick_gelu(a) * (b + 1),   a, b = gegelu_inputs(x, limit)

    [..., 2I] -> [..., I]. `limit` None: no clamp.
    """
    a, b = gegelu_inputs(x, limit)
    return activations.quick_gelu(a) * (b + 1.0)


def geglu_mlp(x, up_weight, up_bias, down_weight, down_bias, limit, linear=linear):
    """phi-3-small MLP: down_proj(gegelu(up_proj(x))), both projections with bias.
    `linear`: the product with the weights (another one for weights stored in 4 bits)."""
    up = linear(x, up_weight, up_bias)                         # [B, T, C] -> [B, T, 2I]
    return linear(gegelu(up, limit), down_weight, down_bias)   # [B, T, I] -> [B, T, C]


@differentiable(grad.masked_scatter_backward)
def masked_scatter(x, mask, rows):
    """x [B, T, D] with the positions where mask [B, T] is true replaced by rows [n, D], one
    after another in row-major order over [B, T] (torch's masked_scatter): Phi-3-vision's image
    vectors placed at the image slots. n must equal the number of true positions."""
    out = x.copy()
    out[mask] = rows.astype(x.dtype, copy=False)               # [n, D] into the masked rows
    return out


@differentiable(grad.causal_lm_loss_backward, saves=True)
def causal_lm_loss(logits, labels):
    """Mean next-token cross-entropy, as transformers computes it for causal LMs:
    position t predicts labels[t + 1]; labels equal to -100 are not counted.

        L = -(1/N) sum_t log softmax(logits[t])[labels[t+1]]

    Returns (loss, probabilities): the backward rule needs softmax(logits).
    """
    kernel = backends.kernel("causal_lm_loss", logits)
    if kernel is not None:
        return kernel(logits, labels)
    log_likelihood, probs = target_log_probs(logits, labels)   # [B, T-1], [B, T-1, V]
    return -log_likelihood.sum() / max(int((labels[:, 1:] != -100).sum()), 1), probs


@differentiable(grad.cross_entropy_backward, saves=True)
def cross_entropy(logits, labels):
    """Mean cross-entropy of classifications: logits [N, K], labels [N] (-1: not counted).

        L = -(1/n) sum_i log softmax(logits[i])[labels[i]],  n the rows counted

    Returns (loss, probabilities); the backward rule needs softmax(logits)."""
    z = logits.astype(compute_dtype(logits))
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))     # [N, K]
    keep = labels >= 0
    picked = log_probs[np.nonzero(keep)[0], labels[keep]]              # [n]
    return -picked.sum() / max(int(keep.sum()), 1), np.exp(log_probs)


def target_log_probs(logits, labels):
    """log softmax(logits[t])[labels[t + 1]] at every position, 0 where the label is -100, and
    the probabilities softmax(logits[:, :-1]) (for the backward pass):
    [B, T, V], [B, T] -> [B, T-1], [B, T-1, V]. Shared by the loss and DPO's sequence scores."""
    targets = labels[:, 1:]                                 # [B, T-1]
    keep = targets != -100
    z = logits[:, :-1].astype(compute_dtype(logits))        # [B, T-1, V], a copy we may modify
    z -= z.max(axis=-1, keepdims=True)                      # shifted logits: max 0
    picked = np.take_along_axis(z, np.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    np.exp(z, out=z)
    sums = z.sum(axis=-1)                                   # [B, T-1]
    z /= sums[..., None]                                    # -> probabilities
    return (picked - np.log(sums)) * keep, z                # log softmax at the targets
