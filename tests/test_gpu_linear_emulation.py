"""The GPU kernels of decoding's weight products, checked on a machine without a GPU.

tinyphi3_gpu/linear_emulation.py does in NumPy what each thread of kernels/q4_matvec.cu and
kernels/bf16_matvec.cu does, in the kernel's order; here the emulations are proved equal to the
references of tinyphi3.quant.q4 (the activations' rounding and the dequantized weights bit for
bit, the products within float32 rounding), a negative control shows the comparison can fail,
and the CUDA sources compile for sm_80 and sm_90 with every kernel the launchers may ask for.
tests/test_gpu_linear.py runs the kernels themselves where a GPU exists.
"""

import re
from fractions import Fraction

import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.quant import q4 as quant
from tinyphi3.quant.layout import ROWS_PER_TILE
from tinyphi3_gpu import compile as gpu_compile
from tinyphi3_gpu import linear
from tinyphi3_gpu import linear_emulation as emulation

RTOL = 1e-5
EXAMPLES = settings(max_examples=40, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)


def random_weight(rng, N, K):
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.02
    w[rng.random((N, K)) < 0.01] *= 20                       # a few outliers, as real weights have
    return w


def reference_q4_linear(x, q):
    with backends.use_backend("numpy"):
        return quant.q4_linear(x, q)


def reference_activations(x, block):
    with backends.use_backend("numpy"):
        return quant.quantize_activations(x, block)


def q4_rounding_scale(x, q):
    """sum_k |x_k| (|w_k| + |offset_k|), x and w as rounded: the size of the terms the products
    add (the kernel adds d dx isum and offset sx per chunk), to which float32 rounding is
    relative. offset = -8d or the block's min: W dequantized with all levels 0."""
    xq, dx = reference_activations(x, q.block)
    M, nb = dx.shape
    x_hat = (xq.reshape(M, nb, q.block) * dx[..., None]).reshape(M, -1)[:, :q.in_features]
    offsets = quant.dequantize_q4(quant.Q4Weight(np.zeros_like(q.packed), q.scales, q.mins,
                                                 *q.shape))
    return np.abs(x_hat) @ (np.abs(quant.dequantize_q4(q)) + np.abs(offsets)).T


def within_rounding(y, expected, scale):
    return bool(np.all(np.abs(y - expected) <= RTOL * scale))


# ---- the GPU's operations -----------------------------------------------------------------------

def rounded_once(a, b, c, r):
    """Whether float32 r is a b + c rounded to nearest (ties to even), checked exactly."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    error = abs(Fraction(float(r)) - exact)
    for neighbour in (np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf))):
        other = abs(Fraction(float(neighbour)) - exact)
        if other < error or (other == error and int(np.float32(r).view(np.uint32)) & 1):
            return False
    return True


def test_fma32_rounds_once_as_fmaf_does():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 2.0 ** rng.integers(-20, 20, 3000)).astype(np.float32)
    b = (rng.standard_normal(3000) * 2.0 ** rng.integers(-20, 20, 3000)).astype(np.float32)
    c = np.where(rng.random(3000) < 0.5, -(a * b),          # cancellation
                 rng.standard_normal(3000).astype(np.float32) * a * b).astype(np.float32)
    # (1 + 2^-12)^2 + 2^-80: the exact sum lies just above a float32 midpoint; float64 arithmetic
    # rounds it onto the midpoint and then to even, below: one rounding goes up
    a[0] = b[0] = np.float32(1 + 2.0 ** -12)
    c[0] = np.float32(2.0 ** -80)
    r = emulation.fma32(a, b, c)
    assert r[0] == np.float32(1 + 2.0 ** -11 + 2.0 ** -23)
    assert np.float32(np.float64(a[0]) * np.float64(b[0]) + np.float64(c[0])) != r[0]
    assert all(rounded_once(*v) for v in zip(a, b, c, r))


def test_dp4a_multiplies_signed_bytes():
    a = np.array([0x01_02_03_04, 0x0F0F0F0F], np.uint32).view(np.int32)
    b = np.array([0xFF_FE_02_81], np.uint32).view(np.int32)       # bytes -127, 2, -2, -1
    assert list(emulation.dp4a(a, b, np.int32(5))) == [5 + 4 * -127 + 3 * 2 + 2 * -2 + 1 * -1,
                                                        5 + 15 * (-127 + 2 - 2 - 1)]


# ---- the activations' rounding --------------------------------------------------------------

@st.composite
def activations(draw):
    """x [M, K] with blocks of every kind: random magnitudes, zeros, and ties (max |x| =
    127 * 2^e, so dx = 2^e exactly, and x = (n + 1/2) 2^e: x / dx a tie that rounds to even)."""
    M, K = draw(st.integers(1, 9)), draw(st.integers(1, 300))
    block = draw(st.sampled_from(quant.BLOCK_SIZES))
    rng = np.random.default_rng(draw(SEEDS))
    nb = -(-K // block)
    x = np.zeros((M, nb * block), np.float32)
    for m in range(M):
        for b in range(nb):
            kind = rng.integers(3)
            here = slice(b * block, (b + 1) * block)
            if kind == 0:
                x[m, here] = rng.standard_normal(block) * 10.0 ** rng.integers(-6, 6)
            elif kind == 1:
                e = 2.0 ** rng.integers(-10, 10)
                x[m, here] = (rng.integers(-127, 127, block) + 0.5) * e
                x[m, b * block + rng.integers(min(block, K - b * block))] = 127 * e * rng.choice(
                    [-1, 1])
    return x[:, :K], block


@EXAMPLES
@given(activations())
def test_activation_rounding_is_the_reference_bit_for_bit(case):
    x, block = case
    xq, dx, sx = emulation.quantize_activations(x, block)
    expected_xq, expected_dx = reference_activations(x, block)
    assert np.array_equal(xq, expected_xq)
    assert np.array_equal(dx.view(np.uint32), expected_dx.view(np.uint32))
    M = dx.shape[0]
    chunk_sums = xq.reshape(M, -1, linear.CHUNK).sum(-1, dtype=np.int32).astype(np.float32)
    assert np.array_equal(sx, np.repeat(dx, block // linear.CHUNK, axis=1) * chunk_sums)


def test_the_activation_cases_include_ties_and_zero_blocks():
    """The strategy above draws what it claims: exact ties x / dx = n + 1/2, and zero blocks."""
    x = np.array([[127 * 0.25, 2.5 * 0.25, -3.5 * 0.25] + [0.0] * 29 + [0.0] * 32], np.float32)
    xq, dx, _ = emulation.quantize_activations(x, 32)
    assert list(dx[0]) == [0.25, 0.0] and list(xq[0, :3]) == [127, 2, -4] and not xq[0, 32:].any()


# ---- the 4-bit products ---------------------------------------------------------------------

@st.composite
def q4_cases(draw):
    """A Q4Weight (N not a multiple of 64, K not a multiple of the block: both allowed) and x
    [M, K]; sometimes K past 64 chunks of 32, so that a slice of q4_matvec takes two chunks."""
    block = draw(st.sampled_from(quant.BLOCK_SIZES))
    scheme = draw(st.sampled_from(quant.SCHEMES))
    N = draw(st.integers(1, 200))
    K = max(block, draw(st.integers(1, 300) | st.integers(2049, 2600)))
    M = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(SEEDS))
    q = quant.quantize_q4(random_weight(rng, N, K), block, scheme)
    x = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    return x, q


@EXAMPLES
@given(q4_cases())
def test_q4_emulation_equals_the_reference(case):
    x, q = case
    y = emulation.q4_linear(x, q)
    assert y.shape == (x.shape[0], q.out_features) and y.dtype == np.float32
    assert within_rounding(y, reference_q4_linear(x, q), q4_rounding_scale(x, q))


def test_q4_emulation_check_can_fail(monkeypatch):
    """Negative control: low and high nibbles swapped (values 8g+4.. multiplied as 8g..), the
    products differ from the reference far beyond rounding."""
    rng = np.random.default_rng(1)
    q = quant.quantize_q4(random_weight(rng, 70, 100), 32, "symmetric")
    x = rng.standard_normal((2, 100)).astype(np.float32)
    expected, scale = reference_q4_linear(x, q), q4_rounding_scale(x, q)
    assert within_rounding(emulation.q4_linear(x, q), expected, scale)
    swapped = emulation.nibbles
    monkeypatch.setattr(emulation, "nibbles", lambda words: swapped(words)[::-1])
    assert not within_rounding(emulation.q4_linear(x, q), expected, scale)


@EXAMPLES
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES),
       st.sampled_from(quant.SCHEMES), st.data(), SEEDS)
def test_dequantize_emulation_is_the_reference_bit_for_bit(N, K, block, scheme, data, seed):
    K = max(K, block)
    q = quant.quantize_q4(random_weight(np.random.default_rng(seed), N, K), block, scheme)
    nt = q.packed.shape[0]
    first = data.draw(st.integers(0, nt - 1))
    tiles = data.draw(st.integers(1, nt - first))
    w = emulation.q4_dequantize(q, first, tiles)
    expected = quant.dequantize_q4(q, slice(first, first + tiles))
    assert w.shape == expected.shape == (min(N, (first + tiles) * ROWS_PER_TILE)
                                         - first * ROWS_PER_TILE, K)
    assert np.array_equal(w.view(np.uint32), expected.view(np.uint32))


# ---- the bfloat16 products ------------------------------------------------------------------

@EXAMPLES
@given(st.integers(1, 12), st.integers(1, 100), st.integers(1, 300), st.sampled_from([None, 1]),
       SEEDS)
def test_bf16_emulation_equals_float32_products_of_the_rounded_weights(M, N, K, vec, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = random_weight(rng, N, K).astype(ml_dtypes.bfloat16)        # W rounded to bfloat16
    y = emulation.bf16_linear(x, w.view(np.uint16), vec=vec)
    w32 = w.astype(np.float32)
    assert y.dtype == np.float32 and y.shape == (M, N)
    assert within_rounding(y, x @ w32.T, np.abs(x) @ np.abs(w32).T)


# ---- the CUDA sources -------------------------------------------------------------------------

def constants(path) -> dict:
    """The `constexpr int NAME = expression;` of a .cu file, evaluated in order."""
    values = {}
    source = path.read_text()
    for name, expression in re.findall(r"^constexpr int (\w+) = ([^;]+);", source, re.MULTILINE):
        values[name] = eval(expression.replace("/", "//"), {}, dict(values))
    return values


def test_the_emulation_and_launchers_use_the_kernels_constants():
    q4 = constants(gpu_compile.KERNEL_DIR / "q4_matvec.cu")
    bf16 = constants(gpu_compile.KERNEL_DIR / "bf16_matvec.cu")
    assert q4["ROWS_PER_TILE"] == ROWS_PER_TILE and q4["SLOTS"] == emulation.SLOTS
    for name in ("CHUNK", "WARPS", "QUADS", "STRIP", "Q4_THREADS", "MAX_M", "QUANTIZE_WARPS",
                 "DEQUANTIZE_THREADS"):
        assert q4[name] == getattr(linear, name), name
    for name in ("BF16_WARPS", "BF16_ROWS", "BF16_THREADS"):
        assert bf16[name] == getattr(linear, name), name
    assert bf16["BF16_MAX_M"] == linear.MAX_M


def test_every_kernel_the_launchers_ask_for_is_an_entry_point():
    for source, names in linear.kernel_names().items():
        defined = gpu_compile.entry_points((gpu_compile.KERNEL_DIR / f"{source}.cu").read_text())
        assert set(names) <= set(defined), set(names) - set(defined)
        assert len(defined) == len(set(defined)) == len(names)     # and nothing else
