"""Numba CPU kernels: the hot elementwise and row-wise operations of training, fused and parallel.

Each kernel computes exactly what a NumPy reference computes (named in its docstring), in one
pass over memory where NumPy makes several, with the rows shared among the cores (`prange`).
Sums accumulate in float64 and results are stored in float32, so kernels and references agree
to float32 rounding (tests/test_kernels.py checks them against each other over random shapes).

Letters: N rows (B*T positions), C channels, I MLP width, V vocabulary, S keys.
Kernels compile on first use and are cached on disk (`cache=True`).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from tinyphi3.backends.numba.threads import threads_for

# fast-math lets LLVM reorder sums (and so vectorise them) but not assume away infinities and
# NaNs: masked rows rely on -inf, and a NaN in training must surface, not vanish.
_JIT = dict(parallel=True, fastmath={"reassoc", "contract", "arcp", "nsz"}, cache=True)


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (how exp32 builds 2^n)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=_JIT["fastmath"])
def exp32(x):
    """e^x in float32, in plain arithmetic so that LLVM can vectorise the loop around it (Numba
    would otherwise call the C library's expf once per element, ~5x slower here).

        e^x = 2^n e^r,  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]

    ln 2 is split in two constants so that r is exact; e^r is the degree-7 polynomial of the
    Cephes library's expf; 2^n is built from its bits (exponent field n + 127). Relative error
    about 1e-7, as NumPy's float32 exp. Below -87 the result is 0 (e^-87 = 1.6e-38, where
    float32 turns denormal); above 88 it saturates at e^88 instead of overflowing.
    """
    small = x < np.float32(-87.0)
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))            # round(x / ln 2)
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)   # x - n ln 2
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)                                     # e^r
    two_n = _float_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    return np.float32(0.0) if small else p * two_n


def _rows(a):
    """[..., n] -> [N, n] as a contiguous array (a view when it already is one)."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def _chunks(n):
    """How many row blocks a reduction over rows is split into: one per thread, at most n."""
    return max(1, min(n, numba.get_num_threads()))


# ---- RMSNorm (reference: tinyphi3.nn.layers.rms_norm, gradients.rms_norm_backward) -------------
_ROW = dict(fastmath=_JIT["fastmath"], cache=True, error_model="numpy")   # one row, per row


@njit(**_ROW)
def _rms_norm_row(x, w, eps, y):
    """One row of _rms_norm: x, y [C]."""
    c = x.shape[0]
    s = 0.0
    for j in range(c):
        s += x[j] * x[j]
    r = 1.0 / np.sqrt(s / c + eps)
    for j in range(c):
        y[j] = w[j] * (x[j] * r)


@njit(**_JIT)
def _rms_norm(x, w, eps, y):
    for i in prange(x.shape[0]):
        _rms_norm_row(x[i], w, eps, y[i])


@njit(**_JIT)
def _rms_norm_backward(g, x, w, eps, dx, dw_parts):
    n, c = x.shape
    chunks = dw_parts.shape[0]
    for k in prange(chunks):
        for i in range(k * n // chunks, (k + 1) * n // chunks):
            s = 0.0
            for j in range(c):
                s += x[i, j] * x[i, j]
            r = 1.0 / np.sqrt(s / c + eps)
            dot = 0.0                                   # sum(dn * n)
            for j in range(c):
                dot += g[i, j] * w[j] * x[i, j] * r
            mean = dot / c
            for j in range(c):
                n_ij = x[i, j] * r
                dx[i, j] = r * (g[i, j] * w[j] - n_ij * mean)
                dw_parts[k, j] += g[i, j] * n_ij


def rms_norm(x, w, eps):
    """y = w * x / sqrt(mean(x^2) + eps): [..., C] -> [..., C]."""
    x2 = _rows(x)
    y = np.empty_like(x2)
    with threads_for(x2.size):
        _rms_norm(x2, w, float(eps), y)
    return y.reshape(x.shape)


def rms_norm_backward(g, x, w, eps):
    """(dx [..., C], dw [C]) of RMSNorm."""
    g2, x2 = _rows(g), _rows(x)
    dx = np.empty_like(x2)
    parts = np.zeros((_chunks(len(x2)), x2.shape[1]))
    _rms_norm_backward(g2, x2, w, float(eps), dx, parts)
    return dx.reshape(x.shape), parts.sum(axis=0).astype(np.float32)


# ---- SwiGLU gate (reference: layers.silu_and_mul, gradients.silu_and_mul_backward) ----------
@njit(**_ROW)
def _silu_and_mul_row(gu, y):
    """One row of _silu_and_mul: gu [2I], y [I]."""
    half = y.shape[0]
    for j in range(half):
        a = gu[j]
        y[j] = a / (np.float32(1.0) + exp32(-a)) * gu[half + j]


@njit(**_JIT)
def _silu_and_mul(gu, y):
    for i in prange(y.shape[0]):
        _silu_and_mul_row(gu[i], y[i])


@njit(**_JIT)
def _silu_and_mul_backward(g, gu, d):
    n, half = g.shape
    for i in prange(n):
        for j in range(half):
            a, b = gu[i, j], gu[i, half + j]
            s = np.float32(1.0) / (np.float32(1.0) + exp32(-a))
            d[i, j] = g[i, j] * b * s * (1.0 + a * (1.0 - s))
            d[i, half + j] = g[i, j] * a * s


def silu_and_mul(gate_up):
    """silu(gate) * up with [gate | up] on the last axis: [..., 2I] -> [..., I]."""
    gu = _rows(gate_up)
    y = np.empty((gu.shape[0], gu.shape[1] // 2), np.float32)
    with threads_for(gu.size):
        _silu_and_mul(gu, y)
    return y.reshape(*gate_up.shape[:-1], y.shape[1])


def silu_and_mul_backward(g, gate_up):
    """d gate_up [..., 2I] from g [..., I]."""
    gu = _rows(gate_up)
    d = np.empty_like(gu)
    _silu_and_mul_backward(_rows(g), gu, d)
    return d.reshape(gate_up.shape)


# ---- RoPE (reference: rope.apply_rope, gradients.rope_backward) -----------------------------
@njit(**_ROW)
def _rope_head(x, cos, sin, sign, out, b, h):
    """Head h of row b of _rope."""
    T, hd = x.shape[2], x.shape[3]
    rd = cos.shape[-1]
    half = rd // 2
    for t in range(T):
        for i in range(half):
            x1, x2 = x[b, h, t, i], x[b, h, t, half + i]
            if sign > 0:
                out[b, h, t, i] = x1 * cos[b, t, i] - x2 * sin[b, t, i]
                out[b, h, t, half + i] = x2 * cos[b, t, half + i] + x1 * sin[b, t, half + i]
            else:
                out[b, h, t, i] = x1 * cos[b, t, i] + x2 * sin[b, t, half + i]
                out[b, h, t, half + i] = x2 * cos[b, t, half + i] - x1 * sin[b, t, i]
        for i in range(rd, hd):
            out[b, h, t, i] = x[b, h, t, i]


@njit(**_JIT)
def _rope(x, cos, sin, sign, out):
    """out = x c + sign * R(x) s on the first rd dims (R([x1, x2]) = [-x2, x1]); sign = -1 gives
    the transpose, x c + R^T(x s), which is the backward pass (cos/sin index as in the forward)."""
    H = x.shape[1]
    for bh in prange(x.shape[0] * H):
        _rope_head(x, cos, sin, sign, out, bh // H, bh % H)


def apply_rope(x, cos, sin):
    """x [B, H, T, hd] (any strides), cos/sin [B, T, rd] -> rotated [B, H, T, hd]."""
    out = np.empty(x.shape, np.float32)
    with threads_for(x.size):
        _rope(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), 1, out)
    return out


def rope_backward(g, cos, sin):
    out = np.empty(g.shape, np.float32)
    _rope(g, np.ascontiguousarray(cos), np.ascontiguousarray(sin), -1, out)
    return out


# ---- attention softmax (reference: attention.attention, gradients.attention_backward) --------
@njit(**_JIT)
def _masked_softmax(scores, mask, scale, G, T):
    """In place on scores [N, S] (N = B*G*T rows) with mask [B*T, S]: softmax(scale * scores)
    over the allowed keys, 0 elsewhere; a row with no allowed key becomes all zeros."""
    n, S = scores.shape
    for row in prange(n):
        x = scores[row]
        allowed = mask[(row // (G * T)) * T + row % T]        # query t of batch row b
        top = np.float32(-np.inf)
        for s in range(S):
            x[s] *= scale
            top = max(top, x[s]) if allowed[s] else top
        total = np.float32(0.0)
        for s in range(S):
            x[s] = exp32(x[s] - top) if allowed[s] else np.float32(0.0)
            total += x[s]
        inv = np.float32(1.0) / total if total > 0.0 else np.float32(0.0)
        for s in range(S):
            x[s] *= inv


def masked_softmax_(scores, mask, scale):
    """scores [B, KV, g, T, S] (contiguous, overwritten), mask bool [B, 1, T, S] -> weights."""
    B, KV, g, T, S = scores.shape
    m = np.ascontiguousarray(np.broadcast_to(mask, (B, 1, T, S))).reshape(B * T, S)
    _masked_softmax(scores.reshape(-1, S), m, np.float32(scale), KV * g, T)
    return scores


@njit(**_JIT)
def _softmax_backward(dp, p):
    n, s_len = p.shape
    for i in prange(n):
        dot = 0.0
        for s in range(s_len):
            dot += dp[i, s] * p[i, s]
        for s in range(s_len):
            dp[i, s] = p[i, s] * (dp[i, s] - dot)


def softmax_backward_(dp, p):
    """In place: dp <- p * (dp - sum(dp * p)) over the last axis (dp contiguous)."""
    _softmax_backward(dp.reshape(-1, dp.shape[-1]), _rows(p))
    return dp


# ---- cross-entropy (reference: layers.causal_lm_loss, gradients.causal_lm_loss_backward) -----
@njit(**_JIT)
def _cross_entropy(logits, targets, probs, nll):
    B, T1, V = probs.shape
    for row in prange(B * T1):
        b, t = row // T1, row % T1
        top = logits[b, t, 0]
        for v in range(1, V):
            top = max(top, logits[b, t, v])
        total = 0.0
        for v in range(V):
            e = exp32(logits[b, t, v] - top)
            probs[b, t, v] = e
            total += e
        inv = 1.0 / total
        for v in range(V):
            probs[b, t, v] *= inv
        target = targets[b, t]
        nll[b, t] = 0.0 if target == -100 else np.log(total) - (logits[b, t, target] - top)


def causal_lm_loss(logits, labels):
    """(mean next-token cross-entropy, probabilities [B, T-1, V]); labels -100 not counted."""
    logits = np.ascontiguousarray(logits)
    targets = np.ascontiguousarray(labels[:, 1:], dtype=np.int64)
    B, T, V = logits.shape
    if np.any((targets != -100) & ((targets < 0) | (targets >= V))):
        raise IndexError(f"labels must be -100 or token ids below {V}")    # as NumPy would
    probs = np.empty((B, T - 1, V), np.float32)
    nll = np.zeros((B, T - 1))
    _cross_entropy(logits, targets, probs, nll)
    count = max(int((targets != -100).sum()), 1)
    return np.float32(nll.sum() / count), probs


@njit(**_JIT)
def _cross_entropy_backward(probs, targets, scale, d):
    B, T1, V = probs.shape
    for row in prange(B * T1):
        b, t = row // T1, row % T1
        target = targets[b, t]
        if target == -100:
            continue                            # d stays 0 on positions not counted
        for v in range(V):
            d[b, t, v] = probs[b, t, v] * scale
        d[b, t, target] -= scale


def causal_lm_loss_backward(g, probs, logits, labels):
    targets = np.ascontiguousarray(labels[:, 1:], dtype=np.int64)
    count = max(int((targets != -100).sum()), 1)
    d = np.zeros(logits.shape, np.float32)
    _cross_entropy_backward(probs, targets, float(g) / count, d)
    return d


# ---- AdamW (reference: train.optim.AdamW.step) ----------------------------------------------
@njit(**_JIT)
def _adamw(w, g, m, v, lr, b1, b2, c1, c2, eps, decay):
    for i in prange(w.size):
        m[i] = b1 * m[i] + (1.0 - b1) * g[i]
        v[i] = b2 * v[i] + (1.0 - b2) * (g[i] * g[i])
        wi = w[i] - lr * decay * w[i]
        w[i] = wi - (lr / c1) * m[i] / (np.sqrt(v[i] / c2) + eps)


def adamw_update(w, g, m, v, lr, betas, c1, c2, eps, decay):
    """One AdamW update of a contiguous parameter, in place on w, m and v."""
    _adamw(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
           float(lr), float(betas[0]), float(betas[1]), float(c1), float(c2), float(eps),
           float(decay))


# ---- embedding gradient (reference: gradients.embedding_backward) ---------------------------
@njit(**_JIT)
def _embedding_backward(ids, g, d, chunks):
    n, c = g.shape
    for k in prange(chunks):                    # column blocks: no two threads add to one cell
        for i in range(n):
            row = ids[i]
            for j in range(k * c // chunks, (k + 1) * c // chunks):
                d[row, j] += g[i, j]


def embedding_backward(input_ids, g, table_shape):
    d = np.zeros(table_shape, np.float32)
    _embedding_backward(np.ascontiguousarray(input_ids, dtype=np.int64).reshape(-1), _rows(g), d,
                        _chunks(table_shape[1]))
    return d
