"""The GPU kernels of decoding's weight products (tinyphi3_gpu/linear.py), run on a GPU: equal to
the NumPy references of tinyphi3.quant.q4 (the roundings bit for bit, the products within float32
rounding), and to their emulations (tinyphi3_gpu/linear_emulation.py) bit for bit, which is what
lets tests/test_gpu_linear_emulation.py stand for them on machines without a GPU.

Skipped where no CUDA GPU is found (tinyphi3_gpu.device.gpu_unavailable says why).
"""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.quant import q4 as quant
from tinyphi3_gpu import linear_emulation as emulation
from tinyphi3_gpu.device import gpu_unavailable

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    gpu_unavailable() is not None, reason=f"needs a CUDA GPU: {gpu_unavailable()}")]

RTOL = 1e-4
EXAMPLES = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)


def on_gpu(q):
    """A Q4Weight with its arrays uploaded (cupy.asarray)."""
    import cupy
    return quant.Q4Weight(cupy.asarray(q.packed), cupy.asarray(q.scales),
                          None if q.mins is None else cupy.asarray(q.mins), *q.shape)


def launchers():
    from tinyphi3_gpu import linear
    return linear


def random_weight(rng, N, K):
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.02
    w[rng.random((N, K)) < 0.01] *= 20
    return w


def q4_rounding_scale(x, q):
    """sum_k |x_k| (|w_k| + |offset_k|): what float32 rounding is relative to (see
    tests/test_gpu_linear_emulation.py)."""
    with backends.use_backend("numpy"):
        xq, dx = quant.quantize_activations(x, q.block)
    M, nb = dx.shape
    x_hat = (xq.reshape(M, nb, q.block) * dx[..., None]).reshape(M, -1)[:, :q.in_features]
    offsets = quant.dequantize_q4(quant.Q4Weight(np.zeros_like(q.packed), q.scales, q.mins,
                                                 *q.shape))
    return np.abs(x_hat) @ (np.abs(quant.dequantize_q4(q)) + np.abs(offsets)).T


@st.composite
def q4_cases(draw, max_m=24):
    block = draw(st.sampled_from(quant.BLOCK_SIZES))
    scheme = draw(st.sampled_from(quant.SCHEMES))
    N = draw(st.integers(1, 300))
    K = max(block, draw(st.integers(1, 400) | st.integers(2049, 3100)))
    M = draw(st.integers(1, max_m))
    rng = np.random.default_rng(draw(SEEDS))
    q = quant.quantize_q4(random_weight(rng, N, K), block, scheme)
    x = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    return x, q


@EXAMPLES
@given(q4_cases())
def test_q4_linear_equals_the_reference(case):
    import cupy
    x, q = case
    y = launchers().q4_linear(cupy.asarray(x), on_gpu(q)).get()
    with backends.use_backend("numpy"):
        expected = quant.q4_linear(x, q)
    assert y.shape == expected.shape and y.dtype == np.float32
    assert np.all(np.abs(y - expected) <= RTOL * q4_rounding_scale(x, q))


@EXAMPLES
@given(q4_cases(max_m=8))
def test_q4_matvec_equals_its_emulation_bit_for_bit(case):
    import cupy
    x, q = case
    y = launchers().q4_linear(cupy.asarray(x), on_gpu(q)).get()
    assert np.array_equal(y.view(np.uint32), emulation.q4_linear(x, q).view(np.uint32))


@EXAMPLES
@given(st.integers(1, 20), st.integers(1, 400), st.sampled_from(quant.BLOCK_SIZES), SEEDS)
def test_activation_rounding_is_the_reference_bit_for_bit(M, K, block, seed):
    import cupy
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    x[:, :block // 2] = 0.0 if rng.random() < 0.3 else x[:, :block // 2]   # zero blocks
    e = np.float32(2.0 ** rng.integers(-8, 8))                  # ties: dx = e, x / dx = n + 1/2
    x[0, :min(K, 8)] = (np.arange(min(K, 8)) + 0.5) * e
    x[0, min(K, 8) - 1] = 127 * e
    xq, dx, sx = (a.get() for a in launchers().quantize_activations(cupy.asarray(x), block))
    with backends.use_backend("numpy"):
        expected_xq, expected_dx = quant.quantize_activations(x, block)
    assert np.array_equal(xq, expected_xq)
    assert np.array_equal(dx.view(np.uint32), expected_dx.view(np.uint32))
    assert np.array_equal(sx, emulation.quantize_activations(x, block)[2])


@EXAMPLES
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES),
       st.sampled_from(quant.SCHEMES), st.data(), SEEDS)
def test_dequantize_is_the_reference_bit_for_bit(N, K, block, scheme, data, seed):
    K = max(K, block)
    q = quant.quantize_q4(random_weight(np.random.default_rng(seed), N, K), block, scheme)
    nt = q.packed.shape[0]
    first = data.draw(st.integers(0, nt - 1))
    tiles = data.draw(st.integers(1, nt - first))
    w = launchers().q4_dequantize(on_gpu(q), first, tiles).get()
    expected = quant.dequantize_q4(q, slice(first, first + tiles))
    assert np.array_equal(w.view(np.uint32), expected.view(np.uint32))


@EXAMPLES
@given(st.integers(1, 24), st.integers(1, 300), st.integers(1, 600), SEEDS)
def test_bf16_linear_equals_float32_products_and_its_emulation(M, N, K, seed):
    import cupy
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = random_weight(rng, N, K).astype(ml_dtypes.bfloat16)
    bits = w.view(np.uint16)
    y = launchers().bf16_linear(cupy.asarray(x), cupy.asarray(bits)).get()
    w32 = w.astype(np.float32)
    assert y.shape == (M, N) and y.dtype == np.float32
    assert np.all(np.abs(y - x @ w32.T) <= RTOL * (np.abs(x) @ np.abs(w32).T))
    if M <= 8:
        assert np.array_equal(y.view(np.uint32), emulation.bf16_linear(x, bits).view(np.uint32))


def test_phi3_mini_shapes_decode():
    """The shapes of decoding phi-3-mini (K = 3072 and 8192; N = 3072 .. 16384), one and eight
    rows of x: the grid at full size."""
    import cupy
    rng = np.random.default_rng(0)
    for N, K in ((3072, 3072), (9216, 3072), (3072, 8192)):
        q = quant.quantize_q4(random_weight(rng, N, K), 32, "symmetric")
        for M in (1, 8):
            x = rng.standard_normal((M, K)).astype(np.float32)
            y = launchers().q4_linear(cupy.asarray(x), on_gpu(q)).get()
            with backends.use_backend("numpy"):
                expected = quant.q4_linear(x, q)
            assert np.all(np.abs(y - expected) <= RTOL * q4_rounding_scale(x, q))
