"""FlashAttention (tinyphi3/nn/flash_attention.py, tinyphi3/backends/numba/flash.py) equals
dense attention (tinyphi3/nn/attention.py), forward and backward.

Over hypothesis-drawn shapes (grouped heads, a cache of past keys, tiles that do and do not
divide T), padding (some query rows see no key at all), sliding windows and block-sparse layouts:
- the NumPy tiled reference equals dense `attention` under the equivalent dense mask;
- the Numba kernels equal the NumPy tiled reference, forward (O and L) and backward;
- the gradients through autograd equal `attention_backward`'s, and torch's (float64);
- the forward pass never allocates a [T, S] array (measured at T = S = 4096).
"""

import ctypes
import contextlib
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.backends.numba import flash as flash_kernels
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn import autograd as ag
from tinyphi3.nn.attention import attention
from tinyphi3.nn.blocksparse_layout import blocksparse_layout
from tinyphi3.nn.flash_attention import (dense_mask, flash_attention, flash_mask,
                                         tiled_attention_backward, tiled_attention_forward)

seeds = st.integers(0, 2**31)
KERNELS = ("flash_attention_forward", "flash_attention_backward")
# float32: outputs agree to rounding; a gradient entry is a sum of terms of both signs (dS = P (dP
# - D), D = rowsum(dO * O) here, rowsum(dP * P) in attention_backward), so a small entry next to
# large ones carries the large ones' rounding: up to 4e-6 of the largest over 300 drawn cases.
RTOL, ATOL, GRAD_ATOL = 2e-5, 2e-6, 1e-5


@st.composite
def cases(draw, max_t=12):
    """A random problem: arrays q, k, v, dO (float64), the mask's structure, tiles, scale."""
    b, kv, g = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    t, past, hd = draw(st.integers(1, max_t)), draw(st.integers(0, 5)), draw(st.integers(1, 8))
    s, h = past + t, kv * g
    rng = np.random.default_rng(draw(seeds))
    structure = dict(query_start=past, sliding_window=draw(st.none() | st.integers(1, 6)))
    padding = draw(st.sampled_from(["none", "left", "holes"]))
    if padding == "left":                                     # a row may be all padding
        lengths = rng.integers(0, s + 1, size=b)
        structure["key_valid"] = np.arange(s)[None, :] >= (s - lengths)[:, None]
    elif padding == "holes":
        structure["key_valid"] = rng.random((b, s)) < 0.6
    if draw(st.booleans()):
        block_size = draw(st.integers(1, 4))
        blocks = -(-s // block_size) + draw(st.integers(0, 1))
        structure.update(block_size=block_size, layout=blocksparse_layout(
            h, blocks, draw(st.integers(1, 3)), draw(st.integers(1, 4)),
            homo_head=draw(st.booleans())))
    arrays = dict(q=rng.standard_normal((b, h, t, hd)), k=rng.standard_normal((b, kv, s, hd)),
                  v=rng.standard_normal((b, kv, s, hd)), do=rng.standard_normal((b, h, t, hd)))
    return dict(arrays=arrays, structure=structure, scale=draw(st.sampled_from([hd**-0.5, 2.0])),
                tiles=(draw(st.integers(1, 8)), draw(st.integers(1, 8))))


def problem(case, dtype):
    """(q, k, v, dO) in `dtype`, the FlashMask, its dense mask [B, H, T, S]."""
    q, k, v, do = (case["arrays"][name].astype(dtype) for name in ("q", "k", "v", "do"))
    mask = flash_mask(q, k, v, **case["structure"])
    return q, k, v, do, mask, np.ascontiguousarray(dense_mask(mask, *q.shape[1:3], k.shape[2]))


def log_sum_exp(q, k, dense, scale):
    """L = log sum_j e^(s_j) over the visible keys (-inf for none), in float64: [B, H, T]."""
    H = q.shape[1]
    kk = np.repeat(k.astype(np.float64), H // k.shape[1], axis=1)   # -> [B, H, S, hd]
    s = np.where(dense, q.astype(np.float64) @ kk.swapaxes(-1, -2) * scale, -np.inf)
    with np.errstate(divide="ignore"):
        top = np.where(dense.any(-1), s.max(-1), 0)           # [B, H, T]
        return np.log(np.exp(s - top[..., None]).sum(-1)) + top


def assert_close(got, want, rtol, atol):
    """allclose, with atol relative to the largest magnitude (gradients can be large)."""
    assert got.shape == want.shape and not np.isnan(got).any()
    finite = np.abs(want[np.isfinite(want)])
    np.testing.assert_allclose(got, want, rtol=rtol,
                               atol=atol * max(1.0, finite.max() if finite.size else 0.0))


@contextlib.contextmanager
def numba_flash_kernels():
    """The numba backend, with its flash kernels in the switch's table (whether or not its
    package registers them), counting their calls: yields {name: calls}."""
    calls = dict.fromkeys(KERNELS, 0)
    table = backends.registered("numba").kernels()
    saved = {name: table.get(name) for name in KERNELS}
    for name in KERNELS:
        def spy(*args, _name=name):
            calls[_name] += 1
            return getattr(flash_kernels, _name)(*args)
        table[name] = spy
    try:
        with backends.use_backend("numba"):
            yield calls
    finally:
        for name, kernel in saved.items():
            if kernel is None:
                table.pop(name)
            else:
                table[name] = kernel


# ---- (a) the tiled algorithm is attention ------------------------------------------------------
@settings(max_examples=40)
@given(case=cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_tiled_reference_equals_dense_attention(case, dtype):
    q, k, v, _, mask, dense = problem(case, dtype)
    with backends.use_backend("numpy"):
        out, lse = tiled_attention_forward(q, k, v, case["scale"], mask, *case["tiles"])
        want, _ = attention.__wrapped__(q, k, v, dense, case["scale"])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert out.dtype == lse.dtype == dtype
    assert_close(out, want, tol, tol)
    assert_close(lse, log_sum_exp(q, k, dense, case["scale"]), tol, tol)
    dead = ~dense.any(-1)                                     # [B, H, T]: rows that see no key
    assert np.all(out[dead] == 0) and np.all(lse[dead] == -np.inf)


# ---- (b) the Numba kernels are the tiled algorithm ---------------------------------------------
@settings(max_examples=40)
@given(case=cases(max_t=20))
def test_numba_kernels_equal_the_tiled_reference(case):
    q, k, v, do, mask, _ = problem(case, np.float32)
    scale, tiles = case["scale"], case["tiles"]
    with backends.use_backend("numpy"):
        out, lse = tiled_attention_forward(q, k, v, scale, mask, *tiles)
        grads = tiled_attention_backward(do, q, k, v, out, lse, scale, mask, *tiles)
    got_out, got_lse = flash_kernels.flash_attention_forward(q, k, v, scale, mask, *tiles)
    got_grads = flash_kernels.flash_attention_backward(do, q, k, v, got_out, got_lse, scale, mask,
                                                       *tiles)
    assert_close(got_out, out, RTOL, ATOL)
    np.testing.assert_array_equal(np.isinf(got_lse), np.isinf(lse))
    assert_close(got_lse, lse, RTOL, ATOL)
    for got, want in zip(got_grads, grads):
        assert got.dtype == np.float32
        assert_close(got, want, RTOL, GRAD_ATOL)


# ---- (c) gradients: attention_backward's, torch's -----------------------------------------------
def loss_and_grads(fn, q, k, v, do):
    """out and dL/dq, dL/dk, dL/dv for L = sum(fn(q, k, v) * dO), through tinyphi3's autograd."""
    with ag.enable_grad():
        leaves = [ag.Parameter(x) for x in (q, k, v)]
        out = fn(*leaves)
        (out * do).sum().backward()
    return out.data, [leaf.grad for leaf in leaves]


@settings(max_examples=30)
@given(case=cases(), backend=st.sampled_from(["numpy", "numba"]))
def test_gradients_equal_attention_backward(case, backend):
    q, k, v, do, _, dense = problem(case, np.float32)
    scale, (tile_q, tile_k) = case["scale"], case["tiles"]
    use = numba_flash_kernels() if backend == "numba" else backends.use_backend("numpy")
    with use as calls:
        out, grads = loss_and_grads(lambda q, k, v: flash_attention(
            q, k, v, scale, **case["structure"], tile_q=tile_q, tile_k=tile_k), q, k, v, do)
    assert calls is None or all(calls.values())               # the kernels did run
    with backends.use_backend("numpy"):
        want, want_grads = loss_and_grads(lambda q, k, v: attention(q, k, v, dense, scale),
                                          q, k, v, do)
    assert_close(out, want, RTOL, ATOL)
    for got, ref in zip(grads, want_grads):
        assert got.dtype == np.float32
        assert_close(got, ref, RTOL, GRAD_ATOL)


def torch_attention(q, k, v, dense, scale, do):
    """out and the gradients of sum(out * dO) from torch autograd, float64: a plain masked
    softmax, with zero weights for a row that sees no key."""
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)   # -> [B, H, S, hd]
    mask = torch.tensor(dense)
    s = (q @ kk.transpose(-1, -2) * scale).masked_fill(~mask, torch.finfo(torch.float64).min)
    weights = torch.softmax(s, dim=-1) * mask.any(dim=-1, keepdim=True)
    out = weights @ vv
    (out * torch.tensor(do)).sum().backward()
    return out.detach().numpy(), [x.grad.numpy() for x in (q, k, v)]


@settings(max_examples=12)
@given(case=cases())
def test_gradients_equal_torch(case):
    q, k, v, do, _, dense = problem(case, np.float64)
    scale, (tile_q, tile_k) = case["scale"], case["tiles"]
    want, want_grads = torch_attention(q, k, v, dense, scale, do)
    out, grads = loss_and_grads(lambda q, k, v: flash_attention(
        q, k, v, scale, **case["structure"], tile_q=tile_q, tile_k=tile_k), q, k, v, do)
    assert out.dtype == np.float64
    assert_close(out, want, 1e-10, 1e-12)
    for got, ref in zip(grads, want_grads):
        assert_close(got, ref, 1e-10, 1e-12)
    with numba_flash_kernels():                               # float32 kernels, float64 torch
        out32, grads32 = loss_and_grads(lambda q, k, v: flash_attention(
            q, k, v, scale, **case["structure"], tile_q=tile_q, tile_k=tile_k),
            *(x.astype(np.float32) for x in (q, k, v, do)))
    for got, ref in zip([out32, *grads32], [want, *want_grads]):
        assert_close(got, ref, 1e-4, 2e-5)


def test_gradient_check_can_fail():
    """Negative control: a backward pass that drops the D = rowsum(dO * O) term (O passed as 0)
    or shifts L is far from torch's gradients, so the comparisons above can fail."""
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((1, 2, 6, 4)) for _ in range(4))
    mask = flash_mask(q, k, v)
    dense = np.ascontiguousarray(dense_mask(mask, 2, 6, 6))
    _, (dq, _, dv) = torch_attention(q, k, v, dense, 0.5, do)
    with backends.use_backend("numpy"):
        out, lse = tiled_attention_forward(q, k, v, 0.5, mask)
        right = tiled_attention_backward(do, q, k, v, out, lse, 0.5, mask)
        no_delta = tiled_attention_backward(do, q, k, v, 0 * out, lse, 0.5, mask)
        shifted = tiled_attention_backward(do, q, k, v, out, lse + 0.1, 0.5, mask)
    assert_close(right[0], dq, 1e-10, 1e-12)
    assert not np.allclose(no_delta[0], dq, rtol=1e-4, atol=1e-4)
    assert not np.allclose(shifted[2], dv, rtol=1e-4, atol=1e-4)


def test_rows_that_see_no_key_get_zeros_not_nan():
    rng = np.random.default_rng(1)
    q, k, v, do = (rng.standard_normal((2, 2, 5, 3)).astype(np.float32) for _ in range(4))
    key_valid = np.ones((2, 5), bool)
    key_valid[0] = False                                      # row 0: only padding
    key_valid[1, :3] = False                                  # row 1: queries 0..2 see nothing
    for use in (backends.use_backend("numpy"), numba_flash_kernels()):
        with use:
            out, (dq, dk, dv) = loss_and_grads(lambda q, k, v: flash_attention(
                q, k, v, 0.5, key_valid=key_valid, tile_q=2, tile_k=2), q, k, v, do)
        assert np.all(out[0] == 0) and np.all(out[1, :, :3] == 0)
        assert np.all(dq[0] == 0) and np.all(dq[1, :, :3] == 0)
        assert np.all(dk[0] == 0) and np.all(dv[1, :, :3] == 0)   # padding keys: no gradient
        assert np.isfinite(out).all() and np.isfinite(dq).all() and np.isfinite(dk).all()
        assert np.abs(out[1, :, 3:]).min() > 0


# ---- (d) memory: no [T, S] array ---------------------------------------------------------------
def resident_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def peak_bytes(fn):
    """(peak bytes NumPy allocated, growth of the resident high-water mark) while fn() runs.
    tracemalloc sees NumPy's allocations but not Numba's; the high-water mark (VmHWM, reset
    through /proc/self/clear_refs) sees every page touched. Free memory that malloc keeps (a
    4-bit model loaded earlier in this process asks it to keep large blocks) is handed back
    first, so that the growth counts the pages fn() needs."""
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                          # VmHWM := VmRSS
    before = resident_kib("VmRSS")
    tracemalloc.start()
    try:
        fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return traced, (resident_kib("VmHWM") - before) * 1024


def test_forward_allocates_nothing_of_size_t_by_s():
    T = S = 4096
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, T, 32)).astype(np.float32) for _ in range(3))
    mask = flash_mask(q, k, v)
    small = flash_mask(q[:, :, :64], k[:, :, :64], v[:, :, :64])
    flash_kernels.flash_attention_forward(q[:, :, :64], k[:, :, :64], v[:, :, :64], 0.2, small)
    t_by_s = T * S * 4                                        # 64 MiB of float32 scores
    traced, resident = peak_bytes(lambda: flash_kernels.flash_attention_forward(
        q, k, v, 0.2, mask))
    assert traced < t_by_s / 16 and resident < t_by_s / 8, (traced, resident)
    # negative control: dense attention's scores are [T, S], and both measures see them
    dense = np.ascontiguousarray(dense_mask(mask, 1, T, S))
    with backends.use_backend("numpy"):
        traced, resident = peak_bytes(lambda: attention(q, k, v, dense, 0.2))
    assert traced >= t_by_s and resident >= t_by_s, (traced, resident)


# ---- the entry point ---------------------------------------------------------------------------
def test_invalid_inputs_are_named():
    q, k = np.zeros((1, 4, 6, 8), np.float32), np.zeros((1, 2, 6, 8), np.float32)
    layout = blocksparse_layout(4, 2, 1, 1)
    wrong = [
        (dict(q=q[0]), "need q"),
        (dict(k=np.zeros((1, 3, 6, 8), np.float32)), "multiple of KV"),
        (dict(k=k[..., :4]), "need q"),
        (dict(query_start=1), "query_start"),
        (dict(key_valid=np.ones((1, 5), bool)), "key_valid"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(layout=layout), "block_size"),
        (dict(layout=layout, block_size=2), "too few"),
        (dict(layout=layout[:2], block_size=3), "heads"),
    ]
    for change, message in wrong:
        args = dict(q=q, k=k, query_start=0) | change
        qq, kk = args.pop("q"), args.pop("k")
        with pytest.raises(InvalidInputError, match=message):
            flash_attention(qq, kk, kk, 0.5, **args)
    assert flash_attention(q, k, k, 0.5, layout=layout, block_size=3).shape == q.shape


# ---- in the model -------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [None, 5])
def test_the_models_loss_and_gradients_are_the_same_with_tiled_attention(window, monkeypatch):
    """Phi3.loss with model.attention = "flash" (what "auto" picks for long training calls)
    equals the dense path: the loss and every parameter's gradient, with left padding and a
    sliding window; a cached (generation) call stays dense."""
    from tinyphi3.config import Phi3Config
    from tinyphi3.models.model import Phi3
    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        sliding_window=window)
    model = Phi3(config, seed=1)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, size=(2, 19))
    mask = np.ones((2, 19), np.int64)
    mask[1, :4] = 0                                                  # a left-padded row
    labels = np.where(mask == 1, np.roll(ids, -1, axis=1), -100)
    from tinyphi3.models import call
    tiled = []
    monkeypatch.setattr(call, "flash_attention", lambda *a, **k: (
        tiled.append(1), flash_attention(*a, **k))[1])
    results = {}
    for kind in ("dense", "flash"):
        model.attention = kind
        model.zero_grad()
        loss = model.loss(ids, labels, attention_mask=mask)
        loss.backward()
        results[kind] = (float(loss.data), {n: p.grad.copy() for n, p in model.named_parameters()})
    assert len(tiled) == config.num_hidden_layers                 # the flash call only
    assert results["flash"][0] == pytest.approx(results["dense"][0], rel=1e-6)
    for name, g in results["dense"][1].items():
        np.testing.assert_allclose(results["flash"][1][name], g, rtol=1e-4,
                                   atol=1e-6 * np.abs(g).max(), err_msg=name)
    model.attention = "fast"
    with pytest.raises(InvalidInputError, match="model.attention must be"):
        model(ids)
