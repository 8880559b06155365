"""The GPU block-sparse attention kernels, checked on a machine without a GPU.

tinyphi3_gpu/attention_emulation.py runs the algorithm of kernels/blocksparse_attention.cu thread
block by thread block in NumPy (same grid, tiles, block loop, online softmax and order of sums).
Here it is held against the NumPy reference, tinyphi3.nn.blocksparse.blocksparse_attention,
over hypothesis-drawn problems: per-head layouts (phi-3-small's, homo_head, random ones with
dead queries), GQA, lengths that are not multiples of the block, prefill after a past,
decode at any length, k and v read through a cache's buffer view, both prefill tiles, float32
and bfloat16. Negative controls show that the comparison can fail. The CUDA source is compiled
for every architecture, and every kernel the launchers may ask for is one of its entry points.
Last, the .cu itself is built with g++ for CPU threads (one per CUDA thread, CPU_CUDA below) and
run through the launchers of tinyphi3_gpu/attention.py: it gives the emulation's bits.
"""

import ctypes
import re
import shutil
import subprocess
import sys
import threading
import types

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.blocksparse import blocksparse_attention, blocksparse_layout
from tinyphi3_gpu import attention_emulation as emulation
from tinyphi3_gpu.compile import KERNEL_DIR, entry_points

SOURCE = KERNEL_DIR / "blocksparse_attention.cu"
TOL = {"atol": 1e-5, "rtol": 1e-5}


@st.composite
def layouts(draw, H, NB):
    """phi-3-small's layout (per head, or homo_head), or a random one: blocks above the
    diagonal, and diagonal blocks off (queries that see nothing, whose output is 0)."""
    kind = draw(st.sampled_from(["per_head", "homo_head", "random"]))
    if kind == "random":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return rng.random((H, NB, NB)) < draw(st.sampled_from([0.2, 0.5, 0.9]))
    local, stride = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return blocksparse_layout(H, NB, local, stride, homo_head=kind == "homo_head")


@st.composite
def problems(draw, max_group=3, max_length=90):
    """A block-sparse attention problem: sizes, layout, scale, dtype, k/v capacity, seed."""
    KV, g = draw(st.integers(1, 2)), draw(st.integers(1, max_group))
    block_size = draw(st.sampled_from([16, 32, 48, 64]))
    S = draw(st.integers(1, max_length))
    NB = -(-S // block_size) + draw(st.integers(0, 1))
    hd = draw(st.sampled_from(emulation.HEAD_DIMS))
    return {"B": draw(st.integers(1, 2)), "KV": KV, "H": KV * g, "hd": hd, "S": S,
            "block_size": block_size, "layout": draw(layouts(KV * g, NB)),
            "scale": draw(st.sampled_from([0.5, 1.0, 2.0])) / np.sqrt(hd),
            "dtype": draw(st.sampled_from(["f32", "bf16"])),
            "capacity": S + draw(st.sampled_from([0, 7])), "seed": draw(st.integers(0, 2**32 - 1))}


def make_inputs(p, T):
    """(kernel inputs q, k, v; reference inputs q, k, v): k and v are views [:, :, :S] of
    buffers with `capacity` positions. bf16: the kernel gets the bits, the reference the same
    rounded values in float32."""
    rng = np.random.default_rng(p["seed"])
    q = rng.standard_normal((p["B"], p["H"], T, p["hd"]), dtype=np.float32)
    k_buf, v_buf = rng.standard_normal((2, p["B"], p["KV"], p["capacity"], p["hd"]),
                                       dtype=np.float32)
    kernel, reference = [], []
    for x in (q, k_buf, v_buf):
        if p["dtype"] == "bf16":
            rounded = x.astype(ml_dtypes.bfloat16)
            kernel.append(rounded.view(np.uint16))
            reference.append(rounded.astype(np.float32))
        else:
            kernel.append(x)
            reference.append(x)
    S = p["S"]
    return ((kernel[0], kernel[1][:, :, :S], kernel[2][:, :, :S]),
            (reference[0], reference[1][:, :, :S], reference[2][:, :, :S]))


def reference(q, k, v, layout, block_size, scale, past=None):
    with backends.use_backend("numpy"):
        return blocksparse_attention(q, k, v, layout, block_size, scale, past)


@settings(max_examples=150, deadline=None)
@given(p=problems(), data=st.data())
def test_prefill_emulation_equals_reference(p, data):
    T = data.draw(st.integers(1, p["S"]), label="T")
    past = data.draw(st.integers(0, p["S"] - T), label="past")
    tile = data.draw(st.sampled_from([t for t in (16, 64) if p["block_size"] % t == 0]))
    (q, k, v), (rq, rk, rv) = make_inputs(p, T)
    assert emulation.kv_operand(k, np) is k                   # the buffer's view, read in place
    out = emulation.blocksparse_prefill(q, k, v, p["layout"], p["block_size"], p["scale"], past,
                                        tile=tile, dtype=p["dtype"])
    expected = reference(rq, rk, rv, p["layout"], p["block_size"], p["scale"], past)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, **TOL)


@settings(max_examples=150, deadline=None)
@given(p=problems(max_group=10), data=st.data())
def test_decode_emulation_equals_reference(p, data):
    """Decode at a length per sequence, over the union of each GQA group's blocks (groups of
    up to 10 heads: more than the 8 one thread block serves)."""
    lengths = data.draw(st.lists(st.integers(1, p["S"]), min_size=p["B"], max_size=p["B"]))
    (q, k, v), (rq, rk, rv) = make_inputs(p, 1)
    out = emulation.blocksparse_decode(q, k, v, p["layout"], p["block_size"], p["scale"],
                                       np.array(lengths), dtype=p["dtype"])
    assert out.dtype == np.float32 and out.shape == q.shape
    for b, length in enumerate(lengths):
        expected = reference(rq[b:b + 1], rk[b:b + 1, :, :length], rv[b:b + 1, :, :length],
                             p["layout"], p["block_size"], p["scale"])
        np.testing.assert_allclose(out[b:b + 1], expected, **TOL)


@settings(max_examples=30, deadline=None)
@given(p=problems(), data=st.data())
def test_dense_causal_emulation_equals_dense_attention(p, data):
    T = data.draw(st.integers(1, p["S"]), label="T")
    (q, k, v), (rq, rk, rv) = make_inputs(p, T)
    out = emulation.dense_causal_attention(q, k, v, p["scale"])
    mask = causal_mask(np.arange(p["S"] - T, p["S"]), np.ones((p["B"], p["S"]), bool))
    with backends.use_backend("numpy"):
        expected = attention(rq, rk, rv, mask, p["scale"])
    np.testing.assert_allclose(out, expected, **TOL)


def test_decode_equals_prefill_of_the_last_position():
    rng = np.random.default_rng(0)
    layout = blocksparse_layout(4, 4, 2, 2)
    q = rng.standard_normal((2, 4, 50, 32), dtype=np.float32)
    k, v = rng.standard_normal((2, 2, 2, 50, 32), dtype=np.float32)
    prefill = emulation.blocksparse_prefill(q, k, v, layout, 16, 0.2)
    decode = emulation.blocksparse_decode(q[:, :, -1:], k, v, layout, 16, 0.2, 50)
    np.testing.assert_allclose(decode, prefill[:, :, -1:], **TOL)


def test_queries_that_see_no_key_get_zeros():
    """Head 1 has its diagonal block of row 1 off and no other block there: its queries at
    positions 16 .. 31 see nothing, and so give exactly 0, in prefill and in decode."""
    rng = np.random.default_rng(2)
    layout = np.tril(np.ones((2, 2, 2), bool))
    layout[1, 1] = False
    q = rng.standard_normal((1, 2, 32, 16), dtype=np.float32)
    k, v = rng.standard_normal((2, 1, 1, 32, 16), dtype=np.float32)
    out = emulation.blocksparse_prefill(q, k, v, layout, 16, 0.25)
    assert np.all(out[0, 1, 16:] == 0) and np.all(out[0, 0] != 0) and np.all(out[0, 1, :16] != 0)
    decode = emulation.blocksparse_decode(q[:, :, -1:], k, v, layout, 16, 0.25, 32)
    assert np.all(decode[0, 1] == 0) and np.all(decode[0, 0] != 0)


# --- negative controls: the comparison can fail ---------------------------------------------

def control_problem():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 1, 2, 64, 16), dtype=np.float32)
    return q, k, v, blocksparse_layout(2, 4, 2, 2)


def test_negative_control_without_the_rescale(monkeypatch):
    q, k, v, layout = control_problem()
    expected = reference(q, k, v, layout, 16, 0.5)
    np.testing.assert_allclose(emulation.blocksparse_prefill(q, k, v, layout, 16, 0.5),
                               expected, **TOL)
    def forgetful(m, m_new):                                  # e^(m - m') forgotten
        return np.ones_like(m_new)
    monkeypatch.setattr(emulation, "rescale_factor", forgetful)
    for out in (emulation.blocksparse_prefill(q, k, v, layout, 16, 0.5),
                emulation.blocksparse_decode(q[:, :, -1:], k, v, layout, 16, 0.5, 64)):
        assert not np.allclose(out, expected[:, :, -out.shape[2]:], **TOL)


def test_negative_control_with_one_block_too_few(monkeypatch):
    q, k, v, layout = control_problem()
    expected = reference(q, k, v, layout, 16, 0.5)
    csr = emulation.layout_csr

    def without_the_last_block(layout):                       # each row loses its last block
        row_ptr, cols = csr(layout)
        fewer = np.maximum(np.diff(row_ptr) - 1, 0)
        cols = np.concatenate([cols[start:start + n] for start, n in zip(row_ptr, fewer)])
        return np.concatenate([[0], np.cumsum(fewer)]).astype(np.int32), cols.astype(np.int32)
    monkeypatch.setattr(emulation, "layout_csr", without_the_last_block)
    for out in (emulation.blocksparse_prefill(q, k, v, layout, 16, 0.5),
                emulation.blocksparse_decode(q[:, :, -1:], k, v, layout, 16, 0.5, 64)):
        assert not np.allclose(out, expected[:, :, -out.shape[2]:], **TOL)


# --- the layout in CSR form, the kernel names, the CUDA source ------------------------------

@settings(max_examples=50, deadline=None)
@given(H=st.integers(1, 4), NB=st.integers(1, 9), density=st.floats(0, 1),
       seed=st.integers(0, 2**32 - 1))
def test_csr_lists_the_active_blocks_of_each_row_in_order(H, NB, density, seed):
    layout = np.random.default_rng(seed).random((H, NB, NB)) < density
    row_ptr, cols = emulation.layout_csr(layout)
    assert row_ptr.dtype == cols.dtype == np.int32 and len(row_ptr) == H * NB + 1
    assert row_ptr[0] == 0 and row_ptr[-1] == len(cols)
    rebuilt = np.zeros((H * NB, NB), bool)
    for r in range(H * NB):
        row = cols[row_ptr[r]:row_ptr[r + 1]]
        assert np.all(np.diff(row) > 0)                       # ascending, no repeats
        rebuilt[r, row] = True
    np.testing.assert_array_equal(rebuilt.reshape(H, NB, NB), layout)


def test_every_kernel_the_launchers_ask_for_is_an_entry_point():
    names = emulation.kernel_names()
    assert len(names) == 30 and len(set(names)) == 30
    assert sorted(entry_points(SOURCE.read_text())) == sorted(names)


def test_the_launch_geometry_is_the_sources():
    """The constexpr constants of the .cu are the emulation's (and the launchers')."""
    source = SOURCE.read_text()
    constants = {name: int(value) for name, value in
                 re.findall(r"constexpr int (\w+) = (\d+);", source)}
    assert constants == {"LANES": emulation.LANES, "DN": emulation.DECODE_KEYS,
                         "G": emulation.DECODE_HEADS, "THREADS": emulation.DECODE_THREADS}
    assert "__launch_bounds__(64)" in source and "__launch_bounds__(256)" in source  # 4 * TILE


def test_what_has_no_kernel_says_so():
    assert [emulation.prefill_tile(b) for b in (16, 32, 48, 64, 128, 192)] == [16, 16, 16, 64,
                                                                                 64, 64]
    with pytest.raises(NotImplementedError, match="multiple of 16"):
        emulation.prefill_tile(24)
    with pytest.raises(NotImplementedError, match="head dims"):
        emulation.kernel_name("decode", "f32", 80)


# --- the .cu itself, run on CPU threads through the launchers --------------------------------

CPU_CUDA = r"""
// The CUDA built-ins the kernels use, on CPU threads: one std::thread per CUDA thread, running
// the CTAs one after another (so a static is a CTA's shared memory); barriers for
// __syncthreads and for the shuffles.
// expf is e^x in double rounded to float, as the test's emulation computes it.
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>
#define expf(x) ((float)exp((double)(x)))
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
struct Index { int x, y, z; };
thread_local Index threadIdx, blockIdx;
using std::max;
using std::min;
struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 x) {
    uint32_t u = uint32_t(x.bits) << 16; float f; memcpy(&f, &u, 4); return f;
}
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __fmul_rn(float a, float b) { return a * b; }     // built with -ffp-contract=off
static std::barrier<>* block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
static float warp_slots[32][32];
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    warp_slots[w][lane] = v;
    warp_barriers[w]->arrive_and_wait();
    float r = warp_slots[w][lane ^ lane_mask];
    warp_barriers[w]->arrive_and_wait();
    return r;
}
template <class... P, class... A>
void launch(void (*kernel)(P...), int gx, int gy, int threads, A... args) {
    std::barrier<> bar(threads);
    block_barrier = &bar;
    warp_barriers.clear();
    for (int w = 0; w < threads / 32; ++w)
        warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([=] {
            threadIdx = {t, 0, 0};
            for (int by = 0; by < gy; ++by)
                for (int bx = 0; bx < gx; ++bx) {
                    blockIdx = {bx, by, 0};
                    kernel(args...);
                    __syncthreads();          // the CTA is done before the next one starts
                }
        });
    for (auto& thread : pool) thread.join();
    block_barrier = nullptr;
}
"""


@pytest.fixture(scope="module")
def cpu_cuda(tmp_path_factory):
    """kernels/blocksparse_attention.cu built for the CPU with CPU_CUDA: a ctypes library with
    launch_<entry point>(grid x, grid y, threads, the kernel's arguments) for every kernel."""
    if shutil.which("g++") is None:
        pytest.skip("no g++ to build the CUDA source for CPU threads")
    source = SOURCE.read_text().replace("#include <cuda_bf16.h>", "")
    launchers = [f'extern "C" void launch_{name}(int gx, int gy, int nt, {kind}_PARAMS({t})) '
                 f'{{ launch({name}, gx, gy, nt, {kind}_ARGS); }}'
                 for name in entry_points(source)
                 for kind in ["PREFILL" if "prefill" in name else "DECODE"]
                 for t in ["bf16" if "_bf16_" in name else "float"]]
    folder = tmp_path_factory.mktemp("cpu_cuda")
    (folder / "kernels.cpp").write_text(CPU_CUDA + source + "\n".join(launchers) + "\n")
    built = subprocess.run(["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-Wall", "-Werror",
                            "-Wno-unknown-pragmas", "-fPIC", "-shared", "-pthread", "-o",
                            str(folder / "kernels.so"), str(folder / "kernels.cpp")],
                           check=False, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return ctypes.CDLL(str(folder / "kernels.so"))


def exp_in_double(monkeypatch):
    """The emulation's e^x as CPU_CUDA's expf: of the float32 difference, in double, rounded."""
    def exp(x):
        return np.exp(x.astype(np.float64)).astype(np.float32)

    def rescale_factor(m, m_new):
        with np.errstate(invalid="ignore"):
            return np.where(m_new == emulation.NEG_INF, np.float32(1), exp(m - m_new))

    def key_weight(s, m_new):
        with np.errstate(invalid="ignore"):
            return np.where(s == emulation.NEG_INF, np.float32(0), exp(s - m_new))
    monkeypatch.setattr(emulation, "rescale_factor", rescale_factor)
    monkeypatch.setattr(emulation, "key_weight", key_weight)


def launchers_on_cpu(monkeypatch, library):
    """tinyphi3_gpu/attention.py with NumPy for CuPy, and `function` handing out the CPU build."""
    fake = types.SimpleNamespace(asarray=np.asarray, ascontiguousarray=np.ascontiguousarray,
                                 empty=np.empty, asnumpy=np.asarray, float32=np.float32,
                                 int32=np.int32, cuda=types.SimpleNamespace(
                                     Device=lambda: types.SimpleNamespace(id=0)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    ctype = {np.ndarray: lambda a: ctypes.c_void_p(a.ctypes.data), np.int32: ctypes.c_int,
             np.int64: ctypes.c_longlong, np.float32: ctypes.c_float}

    def function(source, name):
        def kernel(grid, block, args):
            getattr(library, f"launch_{name}")(*grid, *block,
                                               *(ctype[type(a)](a) for a in args))
        return kernel
    from tinyphi3_gpu import attention as gpu_attention
    monkeypatch.setattr(gpu_attention, "function", function)
    return gpu_attention


def within(seconds, launcher, *args):
    """launcher(*args), or a failure after `seconds`: a barrier that not every thread reaches
    (__syncthreads under divergent code) would hang the CPU threads forever, not fail."""
    result = []
    worker = threading.Thread(target=lambda: result.append(launcher(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"the CUDA source on CPU threads did not finish in {seconds} s: a "
                    f"__syncthreads or shuffle that some threads never reach?")
    return result[0]


@settings(max_examples=25, deadline=None)
@given(p=problems(max_group=4, max_length=40), data=st.data())
def test_the_cuda_source_on_cpu_threads_is_its_emulation_bit_for_bit(cpu_cuda, p, data):
    """The launchers and the .cu, run on CPU threads, give the emulation's bits (the same e^x on
    both sides), and so the reference's values; the GPU differs only by its expf and fmaf."""
    T = data.draw(st.integers(1, p["S"]), label="T")
    past = data.draw(st.integers(0, p["S"] - T), label="past")
    length = data.draw(st.integers(1, p["S"]), label="length")
    (q, k, v), (rq, rk, rv) = make_inputs(p, T)
    layout, block_size, scale = p["layout"], p["block_size"], p["scale"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        exp_in_double(monkeypatch)
        gpu = launchers_on_cpu(monkeypatch, cpu_cuda)
        cases = [(gpu.blocksparse_decode, emulation.blocksparse_decode,
                  (q[:, :, -1:], k, v, layout, block_size, scale, length))]
        if block_size % 16 == 0:
            cases.append((gpu.blocksparse_prefill, emulation.blocksparse_prefill,
                          (q, k, v, layout, block_size, scale, past)))
        for launcher, emulated, args in cases:
            np.testing.assert_array_equal(within(120, launcher, *args), emulated(*args))
        out = within(120, gpu.blocksparse_prefill, q, k, v, layout, block_size, scale, past)
    np.testing.assert_allclose(out, reference(rq, rk, rv, layout, block_size, scale, past), **TOL)
