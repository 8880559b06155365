"""Attention: causality, normalisation, grouped-query heads, sliding windows, padding."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.nn.attention import attention, causal_mask


def attention_weights(q, k, mask, scale):
    """The softmax weights that `attention` uses, recovered by passing v = identity."""
    S = k.shape[2]
    B, KV = k.shape[:2]
    eye = np.broadcast_to(np.eye(S, dtype=np.float32), (B, KV, S, S))
    return attention(q, k, eye, mask, scale)                 # [B, H, T, S]


shapes = st.tuples(st.integers(1, 2), st.sampled_from([(1, 1), (2, 1), (4, 2), (4, 4), (6, 3)]),
                   st.integers(1, 9), st.integers(0, 6), st.sampled_from([2, 4, 8]))


@given(shapes=shapes, window=st.one_of(st.none(), st.integers(1, 8)), seed=st.integers(0, 2**31))
def test_rows_are_causal_windowed_and_sum_to_one(shapes, window, seed):
    B, (H, KV), T, past, hd = shapes
    S = past + T
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, T, hd)).astype(np.float32)
    k = rng.standard_normal((B, KV, S, hd)).astype(np.float32)
    mask = causal_mask(past + np.arange(T), np.ones((B, S), bool), window)
    w = attention_weights(q, k, mask, 1 / np.sqrt(hd))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    qi = past + np.arange(T)[:, None]
    kj = np.arange(S)[None, :]
    forbidden = (kj > qi) | ((qi - kj >= window) if window else False)
    assert np.all(w[..., forbidden] == 0)
    assert np.all(w[..., ~forbidden] > 0)


def multi_head_reference(q, k, v, mask, scale):
    """Multi-head attention one head at a time, written independently of `attention`."""
    B, H, T, hd = q.shape
    KV = k.shape[1]
    out = np.zeros_like(q)
    for b in range(B):
        for h in range(H):
            kv = h // (H // KV)                  # query head h reads KV head h // g
            s = q[b, h] @ k[b, kv].T * scale
            s = np.where(mask[b, 0], s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            out[b, h] = (p / p.sum(-1, keepdims=True)) @ v[b, kv]
    return out


@given(shapes=shapes, seed=st.integers(0, 2**31))
def test_grouped_query_attention_equals_multi_head_with_repeated_kv(shapes, seed):
    B, (H, KV), T, past, hd = shapes
    S = past + T
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, T, hd)).astype(np.float32)
    k, v = rng.standard_normal((2, B, KV, S, hd)).astype(np.float32)
    mask = causal_mask(past + np.arange(T), np.ones((B, S), bool))
    got = attention(q, k, v, mask, 0.3)
    repeated_k, repeated_v = (np.repeat(a, H // KV, axis=1) for a in (k, v))
    as_mha = attention(q, repeated_k, repeated_v, mask, 0.3)   # KV = H: multi-head
    np.testing.assert_allclose(got, as_mha, atol=1e-5)
    np.testing.assert_allclose(got, multi_head_reference(q, k, v, mask, 0.3), atol=1e-5)


def test_padding_keys_get_no_weight_and_padding_queries_no_nan():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    k = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    valid = np.array([[False, False, True, True]])
    w = attention_weights(q, k, causal_mask(np.arange(4), valid), 0.5)
    assert np.all(w[..., 2:, :2] == 0)
    assert np.all(np.isfinite(w))

