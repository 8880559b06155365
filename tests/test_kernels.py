"""The Numba kernels (tinyphi3/backends/numba/fused.py) equal the NumPy reference they stand in for.

Each test runs the same layer twice, once on the "numpy" backend (the reference) and once on the
"numba" backend, over hypothesis-drawn shapes, and compares the outputs and the gradients that
autograd computes through them. A last test shows that the numba backend really reaches every
kernel during a training step, so that these comparisons are not the reference against itself.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.nn import autograd as ag
from tinyphi3 import backends
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.config import preset
from tinyphi3.backends.numba import fused
from tinyphi3.nn.layers import causal_lm_loss, embedding, rms_norm, silu_and_mul
from tinyphi3.models.model import Phi3
from tinyphi3.nn.rope import apply_rope, rope_cos_sin, rope_inv_freq
from tinyphi3.train.optim import AdamW

seeds = st.integers(0, 2**31)
RTOL, ATOL = 2e-5, 2e-6


def on_both(fn, *arrays):
    """Output and input gradients of sum(w * fn(*arrays)) on each backend (float32 arrays)."""
    results = []
    for backend in ("numpy", "numba"):
        with backends.use_backend(backend), ag.enable_grad():
            leaves = [ag.Parameter(np.array(a, dtype=np.float32)) for a in arrays]
            out = fn(*leaves)
            w = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
            (out * w).sum().backward()
        results.append((out.data, [leaf.grad for leaf in leaves]))
    return results


def assert_same(results, rtol=RTOL, atol=ATOL):
    (ref_out, ref_grads), (out, grads) = results
    assert out.dtype == ref_out.dtype == np.float32
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=atol)
    for g, ref in zip(grads, ref_grads):
        assert g.shape == ref.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=atol * max(1.0, np.abs(ref).max()))


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=2), c=st.integers(1, 70),
       eps=st.sampled_from([1e-5, 1e-6]), seed=seeds)
def test_rms_norm(lead, c, eps, seed):
    rng = np.random.default_rng(seed)
    x, w = randn(rng, *lead, c, scale=3.0), randn(rng, c)
    # dx = r (dn - n mean(dn n)) cancels when C is small (C = 1: dn (1 - n^2), n^2 ~ 1); the
    # float32 reference then carries rounding noise of order 1e-6 that the kernel, summing in
    # float64, does not: hence the absolute tolerance.
    assert_same(on_both(lambda x, w: rms_norm(x, w, eps), x, w), atol=1e-5)


@given(n=st.integers(1, 40), half=st.integers(1, 50), scale=st.sampled_from([1.0, 10.0, 60.0]),
       seed=seeds)
def test_silu_and_mul(n, half, scale, seed):
    """Large gate values reach the exponential's saturated ends."""
    rng = np.random.default_rng(seed)
    assert_same(on_both(silu_and_mul, randn(rng, 2, n, 2 * half, scale=scale)))


@given(b=st.integers(1, 3), h=st.integers(1, 4), t=st.integers(1, 9), hd_half=st.integers(1, 8),
       partial=st.booleans(), strided=st.booleans(), seed=seeds)
def test_rope(b, h, t, hd_half, partial, strided, seed):
    """Full and partial rotary; x as a transposed view, as the model passes it."""
    rng = np.random.default_rng(seed)
    hd = 2 * hd_half
    rd = 2 * max(1, hd_half // 2) if partial else hd
    positions = rng.integers(0, 50, size=(b, t))
    cos, sin = rope_cos_sin(positions, rope_inv_freq(rd, 10000.0), magnitude=1.2)
    x = randn(rng, b, t, h, hd).transpose(0, 2, 1, 3) if strided else randn(rng, b, h, t, hd)
    assert_same(on_both(lambda x: apply_rope(x, cos, sin), x))


@given(b=st.integers(1, 3), kv=st.integers(1, 3), g=st.integers(1, 3), t=st.integers(1, 12),
       past=st.integers(0, 5), hd=st.integers(1, 9), window=st.sampled_from([None, 1, 3]),
       pad=st.integers(0, 4), seed=seeds)
def test_attention(b, kv, g, t, past, hd, window, pad, seed):
    """Grouped heads, a cache of `past` keys, a sliding window and left padding (so some query
    rows may see no key at all: their weights are zero on both backends)."""
    rng = np.random.default_rng(seed)
    s = past + t
    key_valid = np.ones((b, s), bool)
    key_valid[0, :min(pad, s)] = False
    mask = causal_mask(past + np.arange(t), key_valid, window)
    q, k, v = randn(rng, b, kv * g, t, hd), randn(rng, b, kv, s, hd), randn(rng, b, kv, s, hd)
    weights = []
    for backend in ("numpy", "numba"):
        with backends.use_backend(backend):
            weights.append(attention.__wrapped__(q, k, v, mask, hd ** -0.5)[1])
    np.testing.assert_allclose(weights[1], weights[0], rtol=RTOL, atol=1e-7)
    assert_same(on_both(lambda q, k, v: attention(q, k, v, mask, hd ** -0.5), q, k, v))


@given(b=st.integers(1, 3), t=st.integers(2, 10), v=st.integers(2, 300),
       ignored=st.floats(0, 1), scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_causal_lm_loss(b, t, v, ignored, scale, seed):
    """Labels with -100 (sometimes all of them: the loss is then 0 on both backends)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, v, size=(b, t))
    labels[rng.random((b, t)) < ignored] = -100
    assert_same(on_both(lambda z: causal_lm_loss(z, labels), randn(rng, b, t, v, scale=scale)),
                rtol=1e-5, atol=1e-6)


@given(n=st.integers(1, 40), vocab=st.integers(1, 20), c=st.integers(1, 20), seed=seeds)
def test_embedding_gradient(n, vocab, c, seed):
    """Repeated ids add their gradients into the same row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(1, n))
    assert_same(on_both(lambda table: embedding(ids, table), randn(rng, vocab, c)))


@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=2).map(tuple),
       name=st.sampled_from(["model.layers.0.mlp.down_proj.weight", "model.norm.weight"]),
       seed=seeds)
def test_adamw(shape, name, seed):
    """Three AdamW steps (with decay on matrices only) move the weights alike."""
    rng = np.random.default_rng(seed)
    w0, grads = randn(rng, *shape), [randn(rng, *shape) for _ in range(3)]
    finals = []
    for backend in ("numpy", "numba"):
        p = ag.Parameter(w0.copy())
        opt = AdamW([(name, p)], lr=1e-2, weight_decay=0.1)
        with backends.use_backend(backend):
            for g in grads:
                p.grad = g
                opt.step()
        finals.append((p.data, opt.m[name], opt.v[name]))
    for got, ref in zip(finals[1], finals[0]):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_exp32_matches_the_exponential():
    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5], np.float32)])
    exact = np.exp(x.astype(np.float64))
    got = _vector_exp32(x)
    assert np.max(np.abs(got - exact) / exact) < 3e-7
    edges = _vector_exp32(np.array([-88.0, -1e4, -np.inf, 100.0], np.float32))
    assert edges[0] == edges[1] == edges[2] == 0.0 and np.isfinite(edges[3])


def _vector_exp32(x):
    from numba import njit

    @njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = fused.exp32(x[i])
        return out
    return apply(x)


KERNELS = ["rms_norm", "rms_norm_backward", "silu_and_mul", "silu_and_mul_backward", "apply_rope",
           "rope_backward", "masked_softmax_", "softmax_backward_", "causal_lm_loss",
           "causal_lm_loss_backward", "embedding_backward", "adamw_update"]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_training_step_on_numba_reaches_every_kernel(monkeypatch, seed):
    """The comparisons above mean something only if the numba backend calls the kernels: count
    the calls during one training step (and none on the numpy backend)."""
    calls = {name: 0 for name in KERNELS}
    kernels = backends.registered("numba").kernels()          # what the switch hands out
    for name in KERNELS:
        assert kernels[name] is getattr(fused, name)

        def spy(*args, _name=name, _original=kernels[name], **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setitem(kernels, name, spy)
    model = Phi3(preset("tiny"), seed=seed)
    ids = np.random.default_rng(seed).integers(0, model.config.vocab_size, size=(2, 8))
    for backend in ("numpy", "numba"):
        with backends.use_backend(backend):
            opt = AdamW(model.named_parameters(), 1e-3)
            model.zero_grad()
            model.loss(ids, ids).backward()
            opt.step()
        if backend == "numpy":
            assert sum(calls.values()) == 0
    assert all(calls.values()), {name: n for name, n in calls.items() if n == 0}


def test_backend_errors():
    with pytest.raises(backends.BackendError, match="unknown backend 'cuda'"):
        backends.set_backend("cuda")
