"""The GPU block-sparse attention kernels (tinyphi3_gpu/attention.py), run on a GPU: equal to the
NumPy reference tinyphi3.nn.blocksparse.blocksparse_attention within float32 rounding, over
hypothesis-drawn shapes, layouts (per head, homo_head, random), GQA groups, lengths that are
not multiples of the block, prefill after a past, decode at a length per sequence, k and v read
through a cache's buffer view, float32 and bfloat16 inputs; and close to their NumPy emulations
(tinyphi3_gpu/attention_emulation.py), which tests/test_gpu_attention_emulation.py checks
without a GPU.

Skipped where no CUDA GPU is found (tinyphi3_gpu.device.gpu_unavailable says why).
"""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.blocksparse import blocksparse_attention, blocksparse_layout
from tinyphi3_gpu import attention_emulation as emulation
from tinyphi3_gpu.device import gpu_unavailable

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    gpu_unavailable() is not None, reason=f"needs a CUDA GPU: {gpu_unavailable()}")]

TOL = {"atol": 1e-5, "rtol": 1e-4}
EXAMPLES = settings(max_examples=40, deadline=None)


def launchers():
    from tinyphi3_gpu import attention as gpu_attention
    return gpu_attention


@st.composite
def problems(draw, max_group=3):
    """Sizes, a layout, a scale, a dtype and a cache capacity >= S (k, v are views [:, :, :S])."""
    KV, g = draw(st.integers(1, 2)), draw(st.integers(1, max_group))
    H, hd = KV * g, draw(st.sampled_from(emulation.HEAD_DIMS))
    block_size = draw(st.sampled_from([16, 32, 48, 64, 128]))
    S = draw(st.integers(1, 300))
    NB = -(-S // block_size) + draw(st.integers(0, 1))
    kind = draw(st.sampled_from(["per_head", "homo_head", "random"]))
    if kind == "random":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        layout = rng.random((H, NB, NB)) < draw(st.sampled_from([0.2, 0.5, 0.9]))
    else:
        layout = blocksparse_layout(H, NB, draw(st.integers(1, 3)), draw(st.integers(1, 4)),
                                    homo_head=kind == "homo_head")
    return {"B": draw(st.integers(1, 2)), "KV": KV, "H": H, "hd": hd, "S": S,
            "block_size": block_size, "layout": layout,
            "scale": draw(st.sampled_from([0.5, 1.0, 2.0])) / np.sqrt(hd),
            "dtype": draw(st.sampled_from(["f32", "bf16"])),
            "capacity": S + draw(st.sampled_from([0, 9])), "seed": draw(st.integers(0, 2**32 - 1))}


def make_inputs(p, T):
    """(device q, k, v; reference q, k, v): bf16 as uint16 bits on the device and the same
    rounded values in float32 for the reference; k, v views [:, :, :S] of bigger buffers."""
    import cupy
    rng = np.random.default_rng(p["seed"])
    q = rng.standard_normal((p["B"], p["H"], T, p["hd"]), dtype=np.float32)
    k_buf, v_buf = rng.standard_normal((2, p["B"], p["KV"], p["capacity"], p["hd"]),
                                       dtype=np.float32)
    device, reference = [], []
    for x in (q, k_buf, v_buf):
        if p["dtype"] == "bf16":
            x = x.astype(ml_dtypes.bfloat16)
            device.append(cupy.asarray(x.view(np.uint16)))
            x = x.astype(np.float32)
        else:
            device.append(cupy.asarray(x))
        reference.append(x)
    S = p["S"]
    return ((device[0], device[1][:, :, :S], device[2][:, :, :S]),
            (reference[0], reference[1][:, :, :S], reference[2][:, :, :S]))


def reference(q, k, v, layout, block_size, scale, past=None):
    with backends.use_backend("numpy"):
        return blocksparse_attention(q, k, v, layout, block_size, scale, past)


@EXAMPLES
@given(p=problems(), data=st.data())
def test_prefill_equals_reference(p, data):
    T = data.draw(st.integers(1, p["S"]), label="T")
    past = data.draw(st.integers(0, p["S"] - T), label="past")
    (q, k, v), (rq, rk, rv) = make_inputs(p, T)
    out = launchers().blocksparse_prefill(q, k, v, p["layout"], p["block_size"], p["scale"], past)
    assert out.dtype == np.float32 and out.shape == q.shape
    expected = reference(rq, rk, rv, p["layout"], p["block_size"], p["scale"], past)
    np.testing.assert_allclose(out.get(), expected, **TOL)


@EXAMPLES
@given(p=problems(max_group=10), data=st.data())
def test_decode_equals_reference(p, data):
    lengths = data.draw(st.lists(st.integers(1, p["S"]), min_size=p["B"], max_size=p["B"]))
    (q, k, v), (rq, rk, rv) = make_inputs(p, 1)
    out = launchers().blocksparse_decode(q, k, v, p["layout"], p["block_size"], p["scale"],
                                         np.array(lengths)).get()
    for b, length in enumerate(lengths):
        expected = reference(rq[b:b + 1], rk[b:b + 1, :, :length], rv[b:b + 1, :, :length],
                             p["layout"], p["block_size"], p["scale"])
        np.testing.assert_allclose(out[b:b + 1], expected, **TOL)


@settings(max_examples=15, deadline=None)
@given(p=problems(), data=st.data())
def test_dense_causal_equals_dense_attention(p, data):
    T = data.draw(st.integers(1, p["S"]), label="T")
    (q, k, v), (rq, rk, rv) = make_inputs(p, T)
    out = launchers().dense_causal_attention(q, k, v, p["scale"]).get()
    mask = causal_mask(np.arange(p["S"] - T, p["S"]), np.ones((p["B"], p["S"]), bool))
    with backends.use_backend("numpy"):
        np.testing.assert_allclose(out, attention(rq, rk, rv, mask, p["scale"]), **TOL)


@settings(max_examples=10, deadline=None)
@given(p=problems(), data=st.data())
def test_kernels_equal_their_emulations(p, data):
    """Same tiles, same order of sums: equal up to expf's last bits."""
    T = data.draw(st.integers(1, p["S"]), label="T")
    (q, k, v), _ = make_inputs(p, T)
    host = [x.get() for x in (q, k, v)]
    gpu = launchers()
    np.testing.assert_allclose(gpu.blocksparse_prefill(q, k, v, p["layout"], p["block_size"],
                                                       p["scale"]).get(),
                               emulation.blocksparse_prefill(*host, p["layout"], p["block_size"],
                                                             p["scale"]), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(gpu.blocksparse_decode(q[:, :, -1:], k, v, p["layout"],
                                                      p["block_size"], p["scale"], p["S"]).get(),
                               emulation.blocksparse_decode(host[0][:, :, -1:], *host[1:],
                                                            p["layout"], p["block_size"],
                                                            p["scale"], p["S"]),
                               atol=1e-6, rtol=1e-5)


def test_decode_equals_prefill_of_the_last_position():
    """phi-3-small's shape of heads: 32 query heads in 8 groups, block 64, head dim 128."""
    import cupy
    rng = np.random.default_rng(0)
    layout = blocksparse_layout(32, 8, 4, 8)
    q = cupy.asarray(rng.standard_normal((1, 32, 300, 128), dtype=np.float32))
    k, v = cupy.asarray(rng.standard_normal((2, 1, 8, 512, 128), dtype=np.float32))
    gpu = launchers()
    prefill = gpu.blocksparse_prefill(q, k, v, layout, 64, 0.088, past=0).get()
    decode = gpu.blocksparse_decode(q[:, :, -1:], k, v, layout, 64, 0.088, 300).get()
    np.testing.assert_allclose(decode, prefill[:, :, -1:], **TOL)


def test_what_has_no_kernel_raises_not_implemented():
    import cupy
    q = cupy.zeros((1, 2, 4, 80), cupy.float32)               # head dim 80: not instantiated
    layout = blocksparse_layout(2, 1, 1, 1)
    with pytest.raises(NotImplementedError, match="head dims"):
        launchers().blocksparse_prefill(q, q, q, layout, 16, 0.1)
    q = cupy.zeros((1, 2, 4, 64), cupy.float32)
    with pytest.raises(NotImplementedError, match="multiple of 16"):
        launchers().blocksparse_prefill(q, q, q, layout, 24, 0.1)
