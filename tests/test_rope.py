"""RoPE and LongRoPE: properties that hold for any input."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.config import preset
from tinyphi3.nn.rope import (apply_rope, rope_cos_sin, rope_frequencies, rope_inv_freq,
                              uses_long_factors)

half_dims = st.sampled_from([2, 4, 8, 16, 48])


def rotate(x, position, rd, theta=10000.0):
    """Apply RoPE to one vector x [hd] at one position."""
    cos, sin = rope_cos_sin(np.array([[position]]), rope_inv_freq(rd, theta))
    return apply_rope(x[None, None, None, :], cos, sin)[0, 0, 0]


@given(half=half_dims, position=st.integers(0, 100_000), seed=st.integers(0, 2**31))
def test_rope_preserves_norm(half, position, seed):
    x = np.random.default_rng(seed).standard_normal(2 * half).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(rotate(x, position, 2 * half)),
                               np.linalg.norm(x), rtol=1e-5)


@given(half=half_dims, m=st.integers(0, 2000), n=st.integers(0, 2000),
       shift=st.integers(0, 2000), seed=st.integers(0, 2**31))
def test_rope_dot_product_depends_only_on_relative_position(half, m, n, shift, seed):
    """<R(m) q, R(n) k> = <R(m + s) q, R(n + s) k> for any shift s."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 2 * half)).astype(np.float32)
    d = 2 * half
    a = rotate(q, m, d) @ rotate(k, n, d)
    b = rotate(q, m + shift, d) @ rotate(k, n + shift, d)
    np.testing.assert_allclose(a, b, atol=2e-3 * (np.linalg.norm(q) * np.linalg.norm(k) + 1))


def test_rope_pairs_dimension_i_with_i_plus_half():
    """Rotate-half layout: a vector in dims (0, d/2) stays in that plane, turned by the angle."""
    d, position = 8, 3
    x = np.zeros(d, np.float32)
    x[0] = 1.0
    y = rotate(x, position, d)
    angle = position * 1.0                        # inv_freq[0] = 1
    np.testing.assert_allclose(y, [math.cos(angle), 0, 0, 0, math.sin(angle), 0, 0, 0], atol=1e-6)


def test_partial_rotary_leaves_the_rest_unchanged():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 16)).astype(np.float32)
    cos, sin = rope_cos_sin(np.arange(5)[None], rope_inv_freq(8, 10000.0))
    y = apply_rope(x, cos, sin)
    np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
    assert not np.allclose(y[..., 1:, :8], x[..., 1:, :8])


def test_longrope_magnitude_of_the_128k_model():
    """sqrt(1 + ln(131072/4096) / ln 4096) = 1.1902 (Phi-3 report §2, LongRoPE)."""
    config = preset("phi-3-mini-128k")
    expected = math.sqrt(1 + math.log(32) / math.log(4096))
    assert abs(config.longrope_attention_factor - expected) < 1e-12
    assert round(expected, 4) == 1.1902
    _, magnitude = rope_frequencies(config, 10)
    assert magnitude == expected                  # applied at short lengths too


def test_longrope_factor_choice_by_total_length():
    config = preset("phi-3-mini-128k")
    assert not uses_long_factors(config, 4096)
    assert uses_long_factors(config, 4097)
    short, _ = rope_frequencies(config, 4096)
    long, _ = rope_frequencies(config, 4097)
    plain = rope_inv_freq(96, 10000.0)
    np.testing.assert_allclose(short, plain / np.array(config.rope_scaling["short_factor"]),
                               rtol=1e-6)
    np.testing.assert_allclose(long, plain / np.array(config.rope_scaling["long_factor"]),
                               rtol=1e-6)
    assert 1.0 <= min(config.rope_scaling["short_factor"]) < 1.1
    assert 64 < max(config.rope_scaling["long_factor"]) < 65


def test_plain_rope_has_unit_magnitude():
    inv_freq, magnitude = rope_frequencies(preset("phi-3-mini-4k"), 100_000)
    assert magnitude == 1.0
    np.testing.assert_allclose(inv_freq, 10000.0 ** (-np.arange(0, 96, 2) / 96), rtol=1e-6)
