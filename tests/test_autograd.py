"""Autograd: every differentiable op against float64 finite differences, a negative control, and
the whole model's loss and gradients against torch autograd through transformers."""

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.nn import autograd as ag
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.autograd import Tensor, differentiable
from tinyphi3.nn.layers import (causal_lm_loss, cross_entropy, embedding, gelu_erf, linear,
                                masked_scatter, quick_gelu, rms_norm, silu, silu_and_mul, softmax)
from tinyphi3.models.vision.projector import hd_tokens, merge_2x2
from tinyphi3.models.model import Phi3
from tinyphi3.nn.rope import apply_rope, rope_cos_sin, rope_inv_freq

seeds = st.integers(0, 2**31)


def check_gradient(f, *arrays, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Compare the recorded gradient of sum(w * f(x...)) (random w) with central differences."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with ag.enable_grad():
        leaves = [ag.Parameter(a.copy()) for a in arrays]
        out = f(*leaves)
        w = np.random.default_rng(0).standard_normal(out.shape)
        (out * w).sum().backward()
    for leaf, a in zip(leaves, arrays):
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            plus, minus = a.copy(), a.copy()
            plus[i] += eps
            minus[i] -= eps
            args_p = [plus if b is a else b for b in arrays]
            args_m = [minus if b is a else b for b in arrays]
            numeric[i] = ((f(*args_p) * w).sum() - (f(*args_m) * w).sum()) / (2 * eps)
        analytic = np.zeros_like(a) if leaf.grad is None else leaf.grad
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


def data(draw_shape, seed):
    return np.random.default_rng(seed).standard_normal(draw_shape)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@given(shape=shapes, seed=seeds, op=st.sampled_from(["add", "sub", "mul", "div", "neg"]))
def test_elementwise_operators(shape, seed, op):
    a, b = data(shape, seed), data(shape[-1:], seed + 1) + 3.0      # b broadcasts over a
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x / y, "neg": lambda x, y: -x * y}[op]
    check_gradient(f, a, b)
    check_gradient(lambda x: 2.0 - x / 3.0 + 1.0 * x, a)          # constants on either side
    check_gradient(lambda y: 1.0 / y + 2.0 * y.astype(np.float64), b)   # reflected division, cast


@given(b=st.integers(1, 3), n=st.integers(1, 4), m=st.integers(1, 4), k=st.integers(1, 4),
       seed=seeds)
def test_matmul(b, n, m, k, seed):
    check_gradient(lambda x, y: x @ y, data((b, n, m), seed), data((m, k), seed + 1))
    constant = data((n, m), seed + 2)
    check_gradient(lambda y: constant @ y, data((b, m, k), seed + 3))   # array @ Tensor


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), seed=seeds)
def test_shape_operations(shape, seed):
    a = data(shape, seed)
    check_gradient(lambda x: x.reshape(-1) * 1.0, a)
    check_gradient(lambda x: x.transpose() * 1.0, a)
    check_gradient(lambda x: x.swapaxes(0, -1) * 1.0, a)
    check_gradient(lambda x: x[..., :1] * 1.0, a)
    check_gradient(lambda x: x.sum(axis=-1) + x.mean(axis=0).sum(), a)


@given(n=st.integers(2, 6), seed=seeds)
def test_split_concatenate_and_fancy_indexing(n, seed):
    a = data((3, n), seed)
    check_gradient(lambda x: np.concatenate(np.split(x, [1], axis=-1)[::-1], axis=-1), a)
    check_gradient(lambda x: np.split(x, [1], axis=-1)[1] * np.split(x, [1], axis=-1)[0], a)
    check_gradient(lambda x: x[np.array([0, 2, 0])], a)                # a repeated row


@given(vocab=st.integers(2, 6), t=st.integers(1, 5), seed=seeds)
def test_embedding(vocab, t, seed):
    ids = np.random.default_rng(seed).integers(0, vocab, size=(2, t))
    check_gradient(lambda table: embedding(ids, table), data((vocab, 3), seed))


@given(shape=shapes, out=st.integers(1, 4), bias=st.booleans(), seed=seeds)
def test_linear(shape, out, bias, seed):
    x, w, b = data(shape, seed), data((out, shape[-1]), seed + 1), data((out,), seed + 2)
    if bias:
        check_gradient(lambda x, w, b: linear(x, w, b), x, w, b)
    else:
        check_gradient(lambda x, w: linear(x, w), x, w)


@given(shape=shapes, seed=seeds)
def test_rms_norm_silu_softmax(shape, seed):
    x, w = data(shape, seed), data(shape[-1:], seed + 1)
    check_gradient(lambda x, w: rms_norm(x, w, 1e-5), x, w)
    check_gradient(silu, x)
    check_gradient(silu_and_mul, np.concatenate([x, x[..., ::-1] + 0.5], axis=-1))
    check_gradient(softmax, x)


@given(heads=st.integers(1, 3), t=st.integers(1, 4), half=st.integers(1, 3),
       extra=st.sampled_from([0, 2]), seed=seeds)
def test_rope(heads, t, half, extra, seed):
    cos, sin = rope_cos_sin(np.arange(t)[None] + 5, rope_inv_freq(2 * half, 10000.0))
    x = data((1, heads, t, 2 * half + extra), seed)          # extra: partial rotary
    check_gradient(lambda x: apply_rope(x, cos.astype(np.float64), sin.astype(np.float64)), x)


@given(kv=st.integers(1, 2), g=st.integers(1, 2), t=st.integers(1, 4), past=st.integers(0, 2),
       window=st.one_of(st.none(), st.integers(1, 3)), pad=st.booleans(), seed=seeds)
def test_attention(kv, g, t, past, window, pad, seed):
    s = past + t
    valid = np.ones((2, s), bool)
    if pad and s > 1:
        valid[0, 0] = False
    mask = causal_mask(past + np.arange(t), valid, window)
    q, k, v = data((2, kv * g, t, 3), seed), data((2, kv, s, 3), seed + 1), data((2, kv, s, 2), seed + 2)
    check_gradient(lambda q, k, v: attention(q, k, v, mask, 0.5), q, k, v)


@given(t=st.integers(2, 5), vocab=st.integers(2, 5), seed=seeds)
def test_causal_lm_loss(t, vocab, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, vocab, size=(2, t))
    labels[rng.random(labels.shape) < 0.3] = -100
    check_gradient(lambda z: causal_lm_loss(z, labels), data((2, t, vocab), seed))


@given(n=st.integers(1, 5), classes=st.integers(2, 5), seed=seeds)
def test_cross_entropy(n, classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    labels[rng.random(n) < 0.3] = -1                                   # rows not counted
    check_gradient(lambda z: cross_entropy(z, labels), data((n, classes), seed))


def test_cross_entropy_equals_torch():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 4)), np.array([0, 3, -1, 2, 2, -1])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                                 ignore_index=-1)
    np.testing.assert_allclose(cross_entropy(logits, labels), expected.item(), rtol=1e-12)


@given(shape=shapes, seed=seeds)
def test_the_gelus_of_the_vision_model(shape, seed):
    x = data(shape, seed) * 3.0                            # past erf's series/fraction split at 2
    check_gradient(quick_gelu, x)
    check_gradient(gelu_erf, x)


@given(t=st.integers(1, 5), seed=seeds)
def test_masked_scatter(t, seed):
    """The image vectors placed at the slots: the text rows keep their gradient where they stay,
    the placed rows receive the gradient of their slots (row-major order over [B, T])."""
    mask = np.random.default_rng(seed).random((2, t)) < 0.5
    check_gradient(lambda x, rows: masked_scatter(x, mask, rows), data((2, t, 3), seed),
                   data((int(mask.sum()), 3), seed + 1))


@given(h=st.integers(1, 2), w=st.integers(1, 3), seed=seeds)
def test_the_2x2_merge_tiling_and_separators(h, w, seed):
    """Phi-3-vision's HD layout as recorded reshapes, transposes and concatenations: the
    separators, copied after every row, sum the gradients of all their copies."""
    g, C = 2, 2
    check_gradient(lambda f, sub, glb: hd_tokens(merge_2x2(f, g), h, w, sub, glb),
                   data((1 + h * w, 4 * g * g, C), seed), data((1, 1, 1, 4 * C), seed + 1),
                   data((1, 1, 4 * C), seed + 2))


def test_the_check_catches_a_wrong_gradient():
    """Negative control: SiLU with the derivative of sigmoid's input term left out."""
    wrong = differentiable(lambda g, out, x: (g / (1 + np.exp(-x)),))(silu.__wrapped__)
    with pytest.raises(AssertionError):
        check_gradient(wrong, data((3, 4), 0))


def test_inference_records_nothing():
    model = Phi3.__new__(Phi3)
    from tinyphi3.config import preset
    model.__init__(preset("tiny"), seed=0)
    out = model.forward(np.array([[1, 2, 3]]))
    assert isinstance(out, np.ndarray)
    loss = model.loss(np.array([[1, 2, 3]]), np.array([[1, 2, 3]]))
    assert isinstance(loss, Tensor) and loss.parents


# ---- the whole model against torch autograd ------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 2, "sliding_window": 6}],
                         ids=["mha", "gqa_window"])
def test_loss_and_every_gradient_match_torch(tmp_path, overrides):
    config = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                  pad_token_id=0, attn_implementation="eager")
    config.update(overrides)
    torch.manual_seed(0)
    theirs = transformers.Phi3ForCausalLM(transformers.Phi3Config(**config))
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.2)
    theirs.save_pretrained(tmp_path)
    ours = Phi3.from_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 97, size=(3, 12))
    labels = ids.copy()
    labels[0, :4] = -100
    labels[2, 7] = -100
    out = theirs(torch.tensor(ids), labels=torch.tensor(labels))
    out.loss.backward()
    loss = ours.loss(ids, labels)
    loss.backward()
    assert abs(float(loss.data) - out.loss.item()) <= 1e-4 * abs(out.loss.item())
    reference = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        g_ref = reference[name].grad.numpy()
        rel = np.linalg.norm(p.grad - g_ref) / np.linalg.norm(g_ref)
        assert rel <= 1e-4, (name, rel)


def test_gradients_keep_the_parameters_dtype():
    """float32 weights get float32 gradients (no silent promotion to float64 on the way)."""
    from tinyphi3.config import preset
    model = Phi3(preset("tiny-gqa"), seed=0)
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    model.loss(ids, ids).backward()
    assert {p.grad.dtype for _, p in model.named_parameters()} == {np.dtype(np.float32)}
