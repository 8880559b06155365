"""4-bit quantization: the format, the Numba kernels against the NumPy reference, checkpoints
written and loaded, the quality of the shipped model at 4 bits, and bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.quant import q4 as quant
from tinyphi3.nn.attention import causal_mask
from tinyphi3.quant.kv8 import Int8KVCache, QuantizedKV, int8_attention, quantize_vectors
from tinyphi3.cli import main
from tinyphi3.config import preset
from tinyphi3.errors import CheckpointError, InvalidInputError, ShapeMismatchError
from tinyphi3.evaluation.perplexity import heldout_examples, perplexity
from tinyphi3.cli.info import init_checkpoint
from tinyphi3.backends.numba import q4 as quantized
from tinyphi3.models.model import Phi3
from tinyphi3.models.quantize import quantize_checkpoint
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.quant.checkpoint import AlreadyQuantizedError, write_quantized
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parents[1] / "checkpoints" / "mini"


def rounding_scale(x, q):
    """The size of the terms the kernel adds: it computes d * sum(q_k x_k) + offset * sum(x_k)
    per block, so float32 rounding is relative to sum_k |x_k| (|w_k| + |offset|), where
    offset = -8d (symmetric) or the block's minimum."""
    N, K = q.shape
    d = quant.from_tiles(q.scales, N).astype(np.float32)
    offset = 8 * np.abs(d) if q.mins is None else np.abs(quant.from_tiles(q.mins, N).astype(
        np.float32))
    offset = np.repeat(offset, q.block, axis=1)[:, :K]
    return np.abs(x) @ (np.abs(quant.dequantize_q4(q)) + offset).T


def random_weight(rng, N, K):
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.02
    w[rng.random((N, K)) < 0.01] *= 20                       # a few outliers, as real weights have
    return w


# ---- the format -----------------------------------------------------------------------------

def test_packing_puts_values_8g_plus_i_low_and_8g_plus_4_plus_i_high_in_tiles_of_64_rows():
    levels = np.arange(32) % 16                              # one block: levels 0..15 twice
    w = ((levels - 8) * 0.5).astype(np.float32)              # symmetric, d = -0.5 * ... below
    w[0] = -4.0                                              # largest |w| -> d = -4 / -8 = 0.5
    q = quant.quantize_q4(np.tile(w, (3, 1)), block=32)
    assert q.packed.shape == (1, 1, 4, 64, 4) and q.scales.shape == (1, 1, 64)
    assert q.scales[0, 0, 0] == np.float16(0.5) and q.scales[0, 0, 3] == 0   # row 3 is padding
    assert not q.packed[0, 0, :, 3:].any()
    expected = np.rint(w / 0.5 + 8).astype(np.uint8)
    for g in range(4):
        group = q.packed[0, 0, g, 1]                         # row 1's 4 bytes of group g
        assert np.array_equal(group & 0x0F, expected[8 * g:8 * g + 4])
        assert np.array_equal(group >> 4, expected[8 * g + 4:8 * g + 8])
    assert np.array_equal(quant.unpack_levels(q.packed[0, 0, :, 1]), expected)


@given(st.integers(1, 9), st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES),
       st.integers(0, 2**32 - 1))
def test_activations_round_to_8_bits_per_block(M, K, block, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    x[:, :block // 2] = 0.0 if rng.random() < 0.3 else x[:, :block // 2]
    with backends.use_backend("numpy"):                       # the reference
        xq, dx = quant.quantize_activations(x, block)
    nb = -(-K // block)
    assert xq.shape == (M, nb * block) and xq.dtype == np.int8 and dx.shape == (M, nb)
    padded = np.pad(x, ((0, 0), (0, nb * block - K))).reshape(M, nb, block)
    np.testing.assert_allclose(dx, np.abs(padded).max(-1) / 127, rtol=1e-6)
    assert np.abs(xq).max() <= 127 and not xq[:, K:].any()
    back = xq.reshape(M, nb, block) * dx[..., None]
    assert np.all(np.abs(back - padded) <= 0.5 * dx[..., None] * (1 + 1e-4))     # + float32 rounding
    fused_xq, fused_dx, fused_sx = quantized.quantize_activations(x, block)   # the kernel's own
    assert np.array_equal(fused_xq, xq) and np.array_equal(fused_dx, dx)
    assert np.array_equal(fused_sx, (xq.reshape(M, nb, block).sum(-1) * dx).astype(np.float32))


@given(st.integers(1, 140), st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES),
       st.sampled_from(quant.SCHEMES), st.integers(0, 2**32 - 1))
def test_dequantized_weights_are_within_one_level_and_requantizing_is_exact(N, K, block, scheme,
                                                                            seed):
    K = max(K, block)
    w = random_weight(np.random.default_rng(seed), N, K)
    q = quant.quantize_q4(w, block, scheme)
    back = quant.dequantize_q4(q)
    assert back.shape == (N, K) and back.dtype == np.float32
    step = np.abs(quant.from_tiles(q.scales, N).astype(np.float32))          # [N, nb]
    step = np.repeat(step, block, axis=1)[:, :K]
    nb = -(-K // block)
    largest = np.abs(np.pad(w, ((0, 0), (0, nb * block - K)))).reshape(N, nb, block).max(-1)
    largest = np.repeat(largest, block, axis=1)[:, :K]
    # minmax covers [min, max]: half a level; symmetric clips the side opposite the largest value
    # by at most one level; both up to the float16 rounding of the scale and the minimum
    bound = (0.5 if scheme == "minmax" else 1.0) * step * (1 + 1e-3) + largest * 2.0**-10
    assert np.all(np.abs(back - w) <= bound)
    again = quant.quantize_q4(back, block, scheme)
    if scheme == "symmetric":                                # the grid reproduces itself exactly
        assert np.array_equal(again.packed, q.packed) and np.array_equal(again.scales, q.scales)
    else:   # the float16 minimum can sit more than half a (tiny) step below the block's minimum
        assert np.all(np.abs(quant.dequantize_q4(again) - back) <= bound)


def test_bits_per_weight():
    assert quant.bits_per_weight(32) == 4.5 and quant.bits_per_weight(128) == 4.125
    assert quant.bits_per_weight(64, "minmax") == 4.5
    q = quant.quantize_q4(np.ones((128, 256), np.float32), 32)
    assert q.nbytes * 8 / (128 * 256) == 4.5


# ---- the kernels equal the reference ------------------------------------------------------

def kernel_inputs(M, N, K, block, scheme, extreme, seed):
    """A random 4-bit weight [N, max(K, block)] and x [M, K] rounded for the kernels (xq, dx, sx);
    `extreme`: every activation at +-127, the largest integer sums."""
    rng = np.random.default_rng(seed)
    K = max(K, block)
    q = quant.quantize_q4(random_weight(rng, N, K), block, scheme)
    x = rng.standard_normal((M, K)).astype(np.float32)
    if extreme:
        x = np.sign(x) + (x == 0)
    return q, quantized.quantize_activations(x, block)


KERNELS = [pytest.param("amx", marks=pytest.mark.skipif(
               not quantized.has_amx(), reason="this CPU (or Linux) gives no AMX int8 tiles")),
           pytest.param("vnni", marks=pytest.mark.skipif(
               not quantized.has_vnni(), reason="this CPU has no AVX-512 VNNI")),
           "portable"]


@pytest.mark.parametrize("kernel", KERNELS)
@given(st.integers(1, 200), st.integers(1, 300), st.integers(1, 40),
       st.sampled_from(quant.BLOCK_SIZES), st.sampled_from(quant.SCHEMES),
       st.integers(0, 2**32 - 1))
def test_q4_linear_kernel_equals_the_reference(kernel, N, K, M, block, scheme, seed):
    """Every integer kernel against the float reference, for row counts and lengths that are
    not multiples of the tile or the block, one row of x (decode) or many (prefill; the AMX
    kernel's 16 rows per tile, and a last tile part full)."""
    rng = np.random.default_rng(seed)
    K = max(K, block)
    q = quant.quantize_q4(random_weight(rng, N, K), block, scheme)
    x = rng.standard_normal((M, K)).astype(np.float32)
    with backends.use_backend("numpy"):
        reference = quant.q4_linear(x, q)
    fast = quantized.q4_matmul(*quant.quantize_activations(x, block), q, kernel=kernel)
    assert fast.shape == reference.shape == (M, N)
    assert np.all(np.abs(fast - reference) <= 1e-5 * rounding_scale(x, q) + 1e-30)


@pytest.mark.skipif(not (quantized.has_amx() and quantized.has_vnni()),
                    reason="this CPU (or Linux) gives no AMX int8 tiles")
@given(st.sampled_from([1, 15, 16, 17, 31, 32, 33]) | st.integers(1, 70), st.integers(1, 200),
       st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES), st.sampled_from(quant.SCHEMES),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_amx_kernel_gives_the_bits_of_the_vnni_and_portable_ones(M, N, K, block, scheme,
                                                                 extreme, seed):
    """The AMX kernel's integer sums are the other kernels' (tdpbssd on the unpacked levels,
    against vpdpbusd on the packed ones), added into the same floats in the same order: the
    same output to the bit. `extreme`: every activation at +-127, the largest sums."""
    q, (xq, dx, sx) = kernel_inputs(M, N, K, block, scheme, extreme, seed)
    outs = [quantized.q4_matmul(xq, dx, q, sx=sx, kernel=k) for k in ("amx", "vnni", "portable")]
    assert not np.isnan(outs[0]).any()
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_prefill_takes_the_amx_kernel_from_16_rows_where_the_cpu_has_it(monkeypatch):
    """Which kernel q4_matmul runs by default: AMX for 16 rows of x or more where it can run,
    VNNI (or portable) below that and elsewhere; asked for where it cannot run, one clear
    error."""
    rng = np.random.default_rng(0)
    q = quant.quantize_q4(random_weight(rng, 64, 96), 32)
    ran, cpu_has_amx = [], quantized.has_amx
    for name in ("_q4_matmul_amx", "_q4_matmul_vnni", "_q4_matmul_portable"):
        monkeypatch.setattr(quantized, name, lambda *a, name=name: ran.append(name))
    for amx, vnni in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(quantized, "_AMX", amx)
        monkeypatch.setattr(quantized, "has_amx", lambda amx=amx: amx)    # a CPU with or without
        monkeypatch.setattr(quantized, "_VNNI", vnni)
        for M in (1, 15, 16, 300):
            ran.clear()
            quantized.q4_matmul(*quant.quantize_activations(np.ones((M, 96), np.float32), 32), q)
            expected = ("_q4_matmul_amx" if amx and M >= quantized.AMX_FROM_ROWS
                        else "_q4_matmul_vnni" if vnni else "_q4_matmul_portable")
            assert ran == [expected], (amx, vnni, M)
    monkeypatch.setattr(quantized, "has_amx", cpu_has_amx)                # this CPU again
    if not quantized.has_amx():
        with pytest.raises(RuntimeError, match="AMX int8 tiles"):
            quantized.q4_matmul(*quant.quantize_activations(np.ones((16, 96), np.float32), 32),
                                q, kernel="amx")


def test_amx_tile_configuration_matches_the_block():
    """amx_config: palette 1; four C tiles of 16 x 16 int32; two A tiles of 16 rows of
    min(block, 64) int8 values; two B tiles of that many values / 4 rows of 64 bytes (what
    tdpbssd requires of the shapes)."""
    for block in quant.BLOCK_SIZES:
        config = quantized.amx_config(block)
        colsb, rows = config[16:48].view(np.uint16), config[48:64]
        k = min(block, 64)
        assert config[0] == 1 and config[1:16].sum() == 0
        assert list(colsb[:8]) == [64] * 4 + [k, 64] * 2
        assert list(rows[:8]) == [16] * 4 + [16, k // 4] * 2
        assert colsb[8:].sum() == 0 and rows[8:].sum() == 0
        assert colsb[4] == 4 * rows[5] and colsb[6] == 4 * rows[7]   # A's K = B's rows x 4


def test_amx_kernel_compiles_to_tile_instructions_for_an_amx_cpu(tmp_path):
    """On any machine: compiled for a Sapphire Rapids CPU, the AMX kernel's machine code
    configures the tiles, multiplies with tdpbssd and gives them back (CI checks the kernel on
    CPUs that cannot run it)."""
    import os
    import subprocess
    import sys
    script = """
import numba
import numpy as np
from tinyphi3.backends.numba import q4
from tinyphi3.quant import q4 as quant
assert q4._compiles_amx()
w = np.ones((64, 64), np.float32)
q = quant.quantize_q4(w, 32)
xq, dx, sx = q4.quantize_activations(np.ones((16, 64), np.float32), 32)
args = (xq, dx, sx, q.packed, q4._bits(q.scales), q4._bits(q.mins),
        np.empty((16, 64), np.float32), q4.amx_config(32), 16, 1)
q4._q4_matmul_amx.compile(tuple(numba.typeof(a) for a in args))
print(chr(10).join(q4._q4_matmul_amx.inspect_asm().values()))
"""
    env = dict(os.environ, NUMBA_CPU_NAME="sapphirerapids",
               NUMBA_CPU_FEATURES="+avx512f,+avx512bw,+avx512vl,+avx512dq,+avx512cd,"
               "+avx512vnni,+avx512bf16,+avx512fp16,+amx-tile,+amx-int8,+amx-bf16,+avx2,+fma,"
               "+f16c,+bmi,+bmi2,+popcnt,+sse4.2,+avx,+lzcnt,+movbe",
               NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    asm = run.stdout
    for instruction in ("ldtilecfg", "tilezero", "tileloadd", "tdpbssd", "tilestored",
                        "tilerelease"):
        assert instruction in asm, instruction


@given(st.sampled_from([1, 2, 3, 4, 5, 7, 9]) | st.integers(1, 24), st.integers(1, 200),
       st.integers(1, 300), st.sampled_from(quant.BLOCK_SIZES), st.sampled_from(quant.SCHEMES),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_portable_kernel_gives_the_same_bits_four_rows_at_a_time_as_one_at_a_time(
        M, N, K, block, scheme, extreme, seed):
    """The portable kernel with the rows of x in fours (the last M % 4 alone) gives exactly the
    output of one row at a time, and of the former kernel that split each byte on its own: the
    same integer sums, added into the same floats in the same order. `extreme`: every activation
    at +-127, the largest integer sums."""
    q, (xq, dx, sx) = kernel_inputs(M, N, K, block, scheme, extreme, seed)
    args = (xq, dx, sx, q.packed, quantized._bits(q.scales), quantized._bits(q.mins))
    outs = [np.full((M, q.packed.shape[0] * 64), np.nan, np.float32) for _ in range(3)]
    quantized._q4_matmul_portable(*args, outs[0], 4)
    quantized._q4_matmul_portable(*args, outs[1], 1)
    quantized._q4_matmul_portable_bytes(*args, outs[2])
    assert not np.isnan(outs[0]).any()
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_the_layer_uses_the_kernel_on_the_numba_backend(monkeypatch):
    rng = np.random.default_rng(0)
    q = quant.quantize_q4(random_weight(rng, 64, 96), 32)
    x = rng.standard_normal((2, 96)).astype(np.float32)
    calls = []
    kernels = backends.registered("numba").kernels()          # what the switch hands out
    original = kernels["q4_linear"]
    assert original is quantized.q4_linear
    monkeypatch.setitem(kernels, "q4_linear", lambda *a, **k: calls.append(1) or original(*a, **k))
    with backends.use_backend("numba"):
        quant.q4_linear(x, q)
    with backends.use_backend("numpy"):
        quant.q4_linear(x, q)
    assert calls == [1]


def test_q4_linear_kernel_check_can_fail():
    """Negative control: a kernel result from a different weight fails the same comparison."""
    rng = np.random.default_rng(0)
    q, other = (quant.quantize_q4(random_weight(rng, 64, 96), 32) for _ in range(2))
    x = rng.standard_normal((1, 96)).astype(np.float32)
    with backends.use_backend("numpy"):
        reference = quant.q4_linear(x, q)
    wrong = quant.q4_linear(x, other)
    assert not np.all(np.abs(wrong - reference) <= 1e-5 * rounding_scale(x, q))


def test_half_to_float_converts_every_finite_float16():
    bits = np.arange(2**16, dtype=np.uint16)
    halves = bits.view(np.float16)
    finite = np.isfinite(halves)
    convert = quantized.half_to_float
    from numba import njit, prange

    @njit(parallel=True)
    def all_of(b):
        out = np.empty(b.size, np.float32)
        for i in prange(b.size):
            out[i] = convert(b[i])
        return out

    assert np.array_equal(all_of(bits)[finite], halves[finite].astype(np.float32))


@given(st.integers(1, 2), st.sampled_from([(4, 4), (8, 2), (6, 3)]), st.integers(1, 70),
       st.sampled_from([8, 16, 32, 96]), st.integers(0, 2**32 - 1))
def test_attention_decode_kernel_over_an_8_bit_cache_equals_the_reference(B, heads, S, hd, seed):
    H, KV = heads
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, 1, hd)).astype(np.float32)
    k, v = (QuantizedKV(*quantize_vectors(rng.standard_normal((B, KV, S, hd)).astype(np.float32)))
            for _ in range(2))
    valid = rng.random((B, S)) > 0.3
    valid[:, -1] = True
    mask = causal_mask(np.array([S - 1]), valid)
    with backends.use_backend("numpy"):
        reference = int8_attention(q, k, v, mask, 0.125)
    fast = int8_attention(q, k, v, mask, 0.125)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-6)


@given(st.integers(1, 2), st.sampled_from([(4, 4), (8, 2), (6, 3), (4, 1), (16, 8), (12, 6)]),
       st.integers(2, 9),
       st.integers(0, 30), st.booleans(), st.integers(0, 2**32 - 1))
def test_a_prompt_chunk_over_an_8_bit_cache_equals_attention_over_its_dequantized_keys(
        B, heads, T, cached, per_head, seed):
    """More than one query (a prompt chunk): int8_attention goes kv8.HEADS_AT_ONCE key/value
    heads at a time (so a chunk never holds every head's float keys and scores; 8 and 6 key/value
    heads take several steps, the last of 6 a short one) and equals the reference
    attention over all heads' dequantized keys and values at once, grouped-query heads, padding
    and per-head masks (phi-3-small's block-sparse layout) included."""
    from tinyphi3.nn.attention import attention
    H, KV = heads
    S, hd = cached + T, 16
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, T, hd)).astype(np.float32)
    k, v = (QuantizedKV(*quantize_vectors(rng.standard_normal((B, KV, S, hd)).astype(np.float32)))
            for _ in range(2))
    valid = rng.random((B, S)) > 0.2
    mask = causal_mask(np.arange(cached, S), valid)                      # [B, 1, T, S]
    if per_head:
        mask = mask & (rng.random((B, H, T, S)) > 0.3)                   # [B, H, T, S]
    whole = attention(q, k.dequantize(), v.dequantize(), mask, 0.25)
    np.testing.assert_allclose(int8_attention(q, k, v, mask, 0.25), whole, rtol=1e-6, atol=1e-7)


def _pages_in_memory(array) -> int:
    """How many of the memory pages under `array` are in RAM (/proc/self/pagemap, bit 63)."""
    page = os.sysconf("SC_PAGE_SIZE")
    first, last = array.ctypes.data // page, (array.ctypes.data + array.nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = np.frombuffer(pagemap.read((last - first + 1) * 8), np.uint64)
    return int(np.count_nonzero(entries >> np.uint64(63)))


def test_a_cache_takes_memory_as_it_fills_not_for_its_capacity():
    """A cache sized for 4096 positions has pages in memory only where positions were written
    (tinyphi3.inference.cache.lazy_zeros), even with the malloc tuning of 4-bit models and freed,
    written blocks on the heap, which zeros from malloc would reuse and clear page by page."""
    if not Path("/proc/self/pagemap").exists():
        pytest.skip("no /proc/self/pagemap: which pages are in memory cannot be read here")
    from tinyphi3.backends.numba import keep_large_blocks_for_reuse
    keep_large_blocks_for_reuse()                            # as loading a 4-bit model does
    activations = [np.ones(2 * 2**20, np.uint8) for _ in range(16)]
    keeper = np.ones(2 * 2**20, np.uint8)                    # (so the heap's top is not free)
    del activations                                          # freed blocks of written pages
    cache = Int8KVCache(4, 1, 8, 64, capacity=4096)          # 4 layers x 2 x 2 MB of levels
    buffers = cache._keys + cache._values
    assert sum(b.nbytes for b in buffers) == 16 * 2**20
    assert sum(_pages_in_memory(b) for b in buffers) < 8, "capacity in memory before any write"
    x = np.ones((1, 8, 64, 64), np.float32)
    for layer in range(4):
        keys, _ = cache.update(layer, x, x)                  # 64 of the 4096 positions
        assert quantized._whole_buffer(keys.levels) is cache._keys[layer]   # read, not copied
    per_head = 64 * 64 // os.sysconf("SC_PAGE_SIZE") + 1     # a head's 64 positions' pages
    assert sum(_pages_in_memory(b) for b in buffers) <= len(buffers) * 8 * per_head
    assert np.array_equal(cache._keys[0][0, 0, :64], np.full((64, 64), 127, np.int8))
    assert keeper.all() and not cache._keys[3][:, :, 64:].any()   # the rest reads as zeros


@given(st.integers(1, 3), st.integers(1, 40), st.sampled_from([8, 32, 96]),
       st.integers(0, 2**32 - 1))
def test_the_8_bit_cache_keeps_each_vector_within_half_a_level(B, S, hd, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((B, 2, S, hd)) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32)
    x[0, 0, 0] = 0.0                                          # a zero vector stays zero
    with backends.use_backend("numpy"):
        levels, scales = quantize_vectors(x)
    fused = quantized.quantize_vectors(x)                    # the kernel, bit for bit
    assert np.array_equal(fused[0], levels) and np.array_equal(fused[1], scales)
    assert levels.dtype == np.int8 and scales.shape == (B, 2, S) and np.abs(levels).max() <= 127
    back = QuantizedKV(levels, scales).dequantize()
    assert np.all(np.abs(back - x) <= 0.5 * scales[..., None] * (1 + 1e-4))      # + float32 rounding
    assert not back[0, 0, 0].any()
    cache = Int8KVCache(1, B, 2, hd, capacity=S // 2)     # grows past its capacity
    for t in range(S):
        k, v = cache.update(0, x[:, :, t:t + 1], -x[:, :, t:t + 1])
        cache.advance(np.ones((B, 1), bool), np.full((B, 1), t), False)
    assert np.array_equal(k.dequantize(), back) and np.array_equal(v.dequantize(), -back)
    assert cache.nbytes() == 2 * B * 2 * S * (hd + 4)


# ---- checkpoints -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini_q4(tmp_path_factory):
    out = tmp_path_factory.mktemp("q4") / "mini-q4"
    quantize_checkpoint(MINI, out, 32, progress=False)
    return out


def test_quantized_checkpoint_holds_the_quantized_float_weights(mini_q4):
    float_model, model = Phi3.from_pretrained(MINI), Phi3.from_pretrained(mini_q4)
    assert model.quantization["block_size"] == 32
    for name, w in float_model.params.items():
        stored = model.params[name]
        if w.ndim == 2:
            expected = quant.quantize_q4(w, 32)
            assert isinstance(stored, quant.Q4Weight)
            assert np.array_equal(stored.packed, expected.packed)
            assert np.array_equal(stored.scales, expected.scales)
        else:
            assert np.array_equal(stored, w)
    assert model.weight_bytes() < float_model.weight_bytes() / 6


def test_quantized_model_runs_the_same_on_both_backends(mini_q4):
    """Each 4-bit product equals its reference to float32 rounding (above), but the activations
    are rounded to 8 bits: a value a rounding error away from a boundary between two levels may
    round either way, and the step (1/127 of its block's largest value) carries on. The two
    backends' logits differ by far less than 4 bits change them (a quarter of it at most), and
    the greedy tokens agree."""
    model = Phi3.from_pretrained(mini_q4)
    ids = np.random.default_rng(0).integers(3, 2000, (2, 40))
    with backends.use_backend("numpy"):
        reference = model(ids)
    fast = model(ids)
    float_logits = Phi3.from_pretrained(MINI)(ids)
    assert np.abs(fast - reference).max() < 0.25 * np.abs(reference - float_logits).max()
    assert (fast.argmax(-1) == reference.argmax(-1)).mean() >= 0.95


def test_cached_decoding_with_the_8_bit_cache_follows_the_full_pass(mini_q4):
    """The 4-bit model's cache holds keys and values in 8 bits, and its activations are rounded
    to 8 bits: logits of step-by-step decoding stay within that rounding of the full pass, a
    small part of what 4 bits change (a cache that mixed up positions would be off by far more),
    and the greedy tokens are nearly all the same."""
    model = Phi3.from_pretrained(mini_q4)
    ids = np.random.default_rng(1).integers(3, 2000, (1, 30))
    full = model(ids)[0]
    cache = model.new_cache(1)
    assert cache._keys[0].dtype == np.int8
    steps = [model(ids[:, :10], cache=cache)[0]]
    steps += [model(ids[:, t:t + 1], cache=cache)[0] for t in range(10, 30)]
    stepped = np.concatenate(steps)
    four_bits = np.abs(full - Phi3.from_pretrained(MINI)(ids)[0]).max()     # 4-bit vs float weights
    assert np.abs(stepped - full).max() < 0.25 * four_bits
    assert (stepped.argmax(-1) == full.argmax(-1)).mean() >= 0.9
    shuffled = model.new_cache(1)                            # control: positions out of order
    wrong = [model(ids[:, t:t + 1], cache=shuffled)[0] for t in [*range(1, 30), 0]]
    assert np.abs(np.concatenate(wrong)[:-1] - full[1:]).max() > 0.1 * np.abs(full).max()


@pytest.mark.parametrize("block", quant.BLOCK_SIZES)
def test_shipped_mini_at_4_bits_keeps_heldout_perplexity_within_5_percent(block, tmp_path):
    tokenizer = load_tokenizer(MINI)
    examples = heldout_examples(tokenizer, "chat", n=100)
    quantize_checkpoint(MINI, tmp_path / "q", block, progress=False)
    reference = perplexity(Phi3.from_pretrained(MINI), examples)
    quantized = perplexity(Phi3.from_pretrained(tmp_path / "q"), examples)
    assert abs(quantized / reference - 1) <= 0.05, (reference, quantized)


def test_quantizing_a_sharded_bf16_snapshot_streams_tensor_by_tensor(tmp_path, monkeypatch):
    """A snapshot in the published layout (bf16, several shards) quantizes; the source is read
    one tensor at a time, each exactly once, in checkpoint order."""
    config = preset("tiny")
    Phi3(config, seed=0).save_pretrained(tmp_path / "src", dtype="bfloat16",
                                         max_shard_bytes=40_000)
    assert len(list((tmp_path / "src").glob("model-*.safetensors"))) > 1
    from tinyphi3.io import safetensors as safetensors_io
    reads, original = [], safetensors_io.SafetensorsFile.get
    monkeypatch.setattr(safetensors_io.SafetensorsFile, "get",
                        lambda self, name: reads.append(name) or original(self, name))
    quantize_checkpoint(tmp_path / "src", tmp_path / "q", 32, progress=False)
    assert reads == list(parameter_shapes(config))
    model, source = Phi3.from_pretrained(tmp_path / "q"), Phi3.from_pretrained(tmp_path / "src")
    for name, w in source.params.items():
        stored = model.params[name]
        if w.ndim == 2:
            assert np.array_equal(stored.packed, quant.quantize_q4(w, 32).packed), name
        else:
            assert np.array_equal(stored, w), name


def test_quantized_models_are_for_inference_only(mini_q4, tmp_path):
    model = Phi3.from_pretrained(mini_q4)
    with pytest.raises(CheckpointError, match="quantize"):
        model.save_pretrained(tmp_path / "again")
    with pytest.raises(InvalidInputError, match="inference"):
        model.loss(np.array([[3, 4, 5]]), np.array([[3, 4, 5]]))


# ---- the command line and bad input --------------------------------------------------------

def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_one_error_line(result, fragment):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert "Traceback" not in result.output


def test_cli_quantize_then_chat_generate_info_and_eval(tmp_path):
    out = tmp_path / "mini-q4"
    result = invoke("quantize", "--ckpt", MINI, "--out", out, "--bits", 4, "--block", 64)
    assert result.exit_code == 0, result.output
    assert "4.25 bits" in result.output
    assert json.loads((out / "config.json").read_text())["quantization_config"]["block_size"] == 64
    info = invoke("info", "--ckpt", out)
    assert info.exit_code == 0 and "4-bit weights, blocks of 64" in info.output
    chat = invoke("chat", "--ckpt", out, "--stats", "--max-new-tokens", 20, input="Hello!\n")
    assert chat.exit_code == 0 and "weights 4-bit" in chat.output and "peak memory" in chat.output
    with backends.use_backend(backends.get_backend()):   # --backend selects it for the process
        gen = invoke("generate", "--ckpt", out, "--prompt", "The", "--max-new-tokens", 5,
                     "--backend", "numpy")
    assert gen.exit_code == 0, gen.output
    ev = invoke("eval", "--ckpt", out, "--task", "arithmetic", "--chat", "--shots", 0, "--n", 3)
    assert ev.exit_code == 0, ev.output


def test_quantizing_a_quantized_checkpoint_is_refused(mini_q4, tmp_path):
    with pytest.raises(AlreadyQuantizedError):
        quantize_checkpoint(mini_q4, tmp_path / "twice")
    assert_one_error_line(invoke("quantize", "--ckpt", mini_q4, "--out", tmp_path / "twice"),
                          "already quantized")
    assert not (tmp_path / "twice").exists()


@pytest.mark.parametrize("option, fragment", [(["--bits", "8"], "--bits 8 is not supported"),
                                              (["--block", "48"], "--block 48 is not supported")])
def test_unsupported_bits_or_block_are_refused(option, fragment, tmp_path):
    result = invoke("quantize", "--ckpt", MINI, "--out", tmp_path / "q", *option)
    assert_one_error_line(result, fragment)
    assert not (tmp_path / "q").exists()


def test_a_tensor_shorter_than_a_block_is_refused_before_anything_is_written(tmp_path):
    init_checkpoint("tiny", tmp_path / "tiny", seed=0)               # hidden size 64
    result = invoke("quantize", "--ckpt", tmp_path / "tiny", "--out", tmp_path / "q",
                    "--block", 128)
    assert_one_error_line(result, "shorter than one block of 128")
    assert not (tmp_path / "q").exists() and not (tmp_path / ".q.partial").exists()


def test_an_existing_output_directory_is_not_overwritten(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "keep.txt").write_text("mine")
    assert_one_error_line(invoke("quantize", "--ckpt", MINI, "--out", tmp_path / "q"),
                          "not empty")
    assert (tmp_path / "q" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, MemoryError])
def test_an_interrupted_quantization_leaves_no_output(interruption, tmp_path):
    config = preset("tiny")
    params, calls = Phi3(config).params, []

    def source(name):
        calls.append(name)
        if len(calls) == 4:
            raise interruption()
        return params[name]

    with pytest.raises(interruption):
        write_quantized(tmp_path / "q", config, parameter_shapes(config), source, 32,
                        progress=False)
    assert not (tmp_path / "q").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_quantized_checkpoint_gets_one_clear_error(mini_q4, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(mini_q4, bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["block_size"] = 64                 # the tensors say 32
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeMismatchError):
        Phi3.from_pretrained(bad)
    assert_one_error_line(invoke("generate", "--ckpt", bad, "--prompt", "Hi"), "shape")


def test_a_checkpoint_packed_in_another_layout_is_refused(mini_q4, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(mini_q4, old)
    config = json.loads((old / "config.json").read_text())
    del config["quantization_config"]["packing"]                    # as an older layout wrote it
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="quantize the float checkpoint again"):
        Phi3.from_pretrained(old)
    assert_one_error_line(invoke("info", "--ckpt", old), "packed")
