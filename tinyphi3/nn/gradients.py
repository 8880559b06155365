"""Backward rules of the model's layers: for y = f(x, ...), given g = dL/dy, return dL/dx, ...

Each rule takes (g, out, *the forward's positional arguments) and returns one gradient per
argument, None for arguments without one (token ids, masks, rotation tables). They are plain
NumPy and are checked against finite differences in tests/test_autograd.py.
"""

import math

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn.activations import erf, gegelu_inputs


def _flat(a):
    """[..., n] -> [N, n]: merge the leading axes."""
    return a.reshape(-1, a.shape[-1])


def embedding_backward(g, out, input_ids, table):
    """y = table[ids]: each used row receives the sum of the gradients of its positions."""
    kernel = backends.kernel("embedding_backward", g, table)
    if kernel is not None:
        return None, kernel(input_ids, g, table.shape)
    d_table = np.zeros_like(table)
    np.add.at(d_table, input_ids.reshape(-1), _flat(g))
    return None, d_table


def linear_backward(g, out, x, weight, bias=None):
    """y = x W^T + b:  dx = g W,  dW = g^T x (over all positions),  db = sum of g."""
    dx = (_flat(g) @ weight).reshape(x.shape)
    dw = _flat(g).T @ _flat(x)
    return (dx, dw) if bias is None else (dx, dw, _flat(g).sum(axis=0))


def rms_norm_backward(g, out, x, weight, eps):
    """y = w * n, n = x r, r = 1 / sqrt(mean(x^2) + eps):
    dw = sum of g * n;  dx = r * (dn - n * mean(dn * n)),  dn = g * w."""
    kernel = backends.kernel("rms_norm_backward", g, x, weight)
    if kernel is not None:
        return (*kernel(g, x, weight, eps), None)
    x = x.astype(out.dtype, copy=False)
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    n = x * r
    dn = g * weight
    dx = r * (dn - n * (dn * n).mean(axis=-1, keepdims=True))
    return dx, _flat(g * n).sum(axis=0), None


def layer_norm_backward(g, out, x, weight, bias, eps):
    """y = w * n + b, n = (x - mean(x)) r, r = 1 / sqrt(var(x) + eps):
    dw = sum of g * n;  db = sum of g;  dx = r * (dn - mean(dn) - n * mean(dn * n)),  dn = g * w."""
    x = x.astype(out.dtype, copy=False)
    centred = x - x.mean(axis=-1, keepdims=True)
    r = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    n = centred * r
    dn = g * weight
    dx = r * (dn - dn.mean(axis=-1, keepdims=True) - n * (dn * n).mean(axis=-1, keepdims=True))
    return dx, _flat(g * n).sum(axis=0), _flat(g).sum(axis=0), None


def gegelu_backward(g, out, x, limit):
    """y = q(a) (b + 1), q(a) = a s(1.702 a), s = sigmoid, with a = clamp(x_even), b = clamp(x_odd):
        dx_even = g (b + 1) q'(a) where the clamp passes a (a <= limit), 0 where it cuts,
        dx_odd  = g q(a)         where |b| <= limit, 0 where it cuts,
        q'(a) = s + 1.702 a s (1 - s)."""
    a, b = gegelu_inputs(x, limit)                     # the clamp, as the forward pass did it
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-1.702 * a))
    da = g * (b + 1.0) * (s + 1.702 * a * s * (1.0 - s))
    db = g * a * s
    if limit is not None:                              # the clamp's own derivative: 0 or 1
        da *= (x[..., 0::2] <= limit) | np.isinf(x[..., 0::2])
        db *= (np.abs(x[..., 1::2]) <= limit) | np.isinf(x[..., 1::2])
    dx = np.empty(x.shape, da.dtype)
    dx[..., 0::2], dx[..., 1::2] = da, db              # back to the interleaved channels
    return dx, None


def silu_backward(g, out, x):
    """silu(x) = x s(x), s = sigmoid:  d/dx = s(x) (1 + x (1 - s(x)))."""
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-x))
    return (g * s * (1.0 + x * (1.0 - s)),)


def quick_gelu_backward(g, out, x):
    """y = x s(1.702 x), s = sigmoid:  dy/dx = s + 1.702 x s (1 - s)."""
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-1.702 * x))
    return (g * (s + 1.702 * x * s * (1.0 - s)),)


def gelu_erf_backward(g, out, x):
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2:  dy/dx = Phi(x) + x phi(x), with
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density; computed in float64, as the forward."""
    wide = x.astype(np.float64)
    slope = (0.5 * (1.0 + erf(wide / math.sqrt(2.0)))
             + wide * np.exp(-0.5 * wide * wide) / math.sqrt(2.0 * math.pi))
    return (g * slope.astype(x.dtype, copy=False),)


def masked_scatter_backward(g, out, x, mask, rows):
    """y = x with the positions where mask is true replaced by rows, in order:
    dx = g where mask is false, 0 where a row replaced x;  drows = g at the masked positions."""
    dx = g.copy()
    dx[mask] = 0
    return dx, None, g[mask]


def silu_and_mul_backward(g, out, gate_up):
    """y = silu(a) * b with [a | b] = gate_up, s = sigmoid(a):
    da = g b s (1 + a (1 - s)),  db = g silu(a) = g a s."""
    kernel = backends.kernel("silu_and_mul_backward", g, gate_up)
    if kernel is not None:
        return (kernel(g, gate_up),)
    a, b = np.split(gate_up, 2, axis=-1)
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-a))
    return (np.concatenate([g * b * s * (1.0 + a * (1.0 - s)), g * a * s], axis=-1),)


def softmax_backward(g, out, x, axis=-1):
    """y = softmax(x):  dx = y * (g - sum(g * y))."""
    return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)


def rope_backward(g, out, x, cos, sin):
    """y = x c + R(x) s with R([x1, x2]) = [-x2, x1], a rotation; its transpose is
    R^T([v1, v2]) = [v2, -v1], so dx = g c + R^T(g s). Dimensions past rd pass g through."""
    kernel = backends.kernel("rope_backward", g, cos, sin)
    if kernel is not None:
        return kernel(g, cos, sin), None, None
    rd = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    g_rot, g_pass = g[..., :rd], g[..., rd:]
    gs1, gs2 = np.split(g_rot * sin, 2, axis=-1)
    dx_rot = g_rot * cos + np.concatenate([gs2, -gs1], axis=-1)
    return np.concatenate([dx_rot, g_pass], axis=-1), None, None


def attention_backward(g, weights, q, k, v, mask, scale):
    """O = P V, P = softmax(S), S = q k^T * scale (masked); P comes saved from the forward pass.
    With grouped heads the KV gradients sum over the g query heads that share them:
        dV = P^T dO,  dP = dO V^T,  dS = P (dP - sum(dP P)),  dq = dS k scale,  dk = dS^T q scale.
    Masked scores are constants, so P is 0 there and so is dS."""
    B, H, T, hd = q.shape
    KV = k.shape[1]
    p = weights                                               # [B, KV, g, T, S]
    q = q.reshape(B, KV, H // KV, T, hd)                      # [B, KV, g, T, hd]
    do = g.reshape(B, KV, H // KV, T, -1)
    kk, vv = k[:, :, None], v[:, :, None]                     # [B, KV, 1, S, hd]
    dv = (p.swapaxes(-1, -2) @ do).sum(axis=2)                # [B, KV, S, hd]
    ds = do @ vv.swapaxes(-1, -2)                             # dP
    kernel = backends.kernel("softmax_backward_", ds, p)
    if kernel is not None:
        kernel(ds, p)                                         # the two lines below, fused
    else:
        ds -= (ds * p).sum(axis=-1, keepdims=True)
        ds *= p                                               # dS (0 where P is 0)
    dq = (ds @ kk) * scale
    dk = ((ds.swapaxes(-1, -2) @ q) * scale).sum(axis=2)
    return dq.reshape(B, H, T, hd), dk, dv, None, None


def causal_lm_loss_backward(g, probs, logits, labels):
    """L = mean over counted positions of -log softmax(logits[t])[labels[t+1]]:
    dlogits[t] = (softmax(logits[t]) - onehot(labels[t+1])) / count, zero elsewhere.
    `probs` = softmax(logits[:, :-1]) comes saved from the forward pass."""
    kernel = backends.kernel("causal_lm_loss_backward", probs)
    if kernel is not None:
        return kernel(g, probs, logits, labels), None
    count = max(int((labels[:, 1:] != -100).sum()), 1)
    per_position = np.full(labels[:, 1:].shape, -g / count, dtype=probs.dtype)
    return target_log_probs_backward(per_position, probs, logits, labels), None


def cross_entropy_backward(g, probs, logits, labels):
    """L = mean over counted rows of -log softmax(logits[i])[labels[i]]:
    dlogits[i] = g (softmax(logits[i]) - onehot(labels[i])) / n on the n counted rows, 0 on the
    others (label -1)."""
    keep = labels >= 0
    scale = g / max(int(keep.sum()), 1)
    d = probs * scale * keep[:, None]
    d[np.nonzero(keep)[0], labels[keep]] -= scale
    return d, None


def target_log_probs_backward(g, probs, logits, labels):
    """y[b, t] = log softmax(logits[b, t])[labels[b, t+1]] (0 where the label is -100), given
    g = dL/dy [B, T-1]:  dlogits[b, t] = g[b, t] (onehot(label) - softmax(logits[b, t])) on the
    counted positions, 0 elsewhere (and at the last position, which predicts nothing)."""
    targets = labels[:, 1:]
    keep = targets != -100
    g = g * keep                                              # [B, T-1]
    d = np.zeros_like(logits, dtype=probs.dtype)
    d[:, :-1] = probs * -g[..., None]
    b, t = np.nonzero(keep)
    d[b, t, targets[b, t]] += g[b, t]
    return d
