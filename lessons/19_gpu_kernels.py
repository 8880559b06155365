# %% [markdown]
# # Lesson 19: The GPU kernels, read beside their NumPy twins
#
# Lesson 14 built phi-3-small's block-sparse attention as a dense NumPy reference and a Numba
# CPU kernel that folds one key block at a time into an online softmax. This lesson reads the
# same algorithm as a GPU runs it: `tinyphi3_gpu/kernels/blocksparse_attention.cu`, launched by
# CuPy. A GPU is not always at hand, so every CUDA kernel here has a NumPy *emulation*
# (`tinyphi3_gpu/attention_emulation.py`) that walks the same grid of thread blocks, the same
# tiles and loops in the same order, with the same names; the tests prove the emulation equal
# to the reference, and the `.cu` file is its line-by-line translation.
#
# 1. how the work is cut for a GPU: one thread block per (query tile, head), and the layout in
#    CSR form, so a thread block finds its active key blocks without scanning the others;
# 2. the tile loop, the CUDA source and the emulation side by side;
# 3. the emulation against the reference, and against a deliberately wrong variant;
# 4. what skipping inactive blocks saves: key tiles visited and bytes read, counted by the
#    emulation itself, at phi-3-small's lengths;
# 5. compiling the kernels without a GPU (NVRTC), and what that check catches;
# 6. the numbers on a GPU, where one is present.

# %%
import inspect
import re
from pathlib import Path

import numpy as np

import _plot
import tinyphi3_gpu
from tinyphi3 import backends
from tinyphi3.nn.blocksparse import blocksparse_attention, blocksparse_layout, density
from tinyphi3_gpu import attention_emulation as emu
from tinyphi3_gpu.compile import entry_points
from tinyphi3_gpu.device import gpu_unavailable

KERNELS = Path(tinyphi3_gpu.__file__).parent / "kernels"
SOURCE = (KERNELS / "blocksparse_attention.cu").read_text()
out = Path("lesson_outputs")
out.mkdir(exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Cutting the work for a GPU
#
# A GPU runs thousands of threads in *thread blocks* (CTAs) of up to 1024 that share a fast
# scratchpad (shared memory). The prefill kernel gives one thread block to each pair
# (query tile, head): `blockIdx.x` is the tile of `BM` query positions, `blockIdx.y` is
# `b * H + h`. Tiles are aligned to absolute positions and `BM` divides the layout's block
# size, so the rows of a tile all lie in one layout row `qb`, and the whole thread block
# attends to the same key blocks.
#
# Which ones? The layout is a bool array [H, NB, NB]; scanning a row of it costs NB reads for a
# handful of hits. The kernel gets it in compressed sparse row (CSR) form, as the published
# block-sparse kernel does: for head `h` and query block `qb` the active key blocks are
# `cols[row_ptr[h*NB + qb] : row_ptr[h*NB + qb + 1]]`, in ascending order.

# %%
toy = blocksparse_layout(2, 8, 2, 3)                   # 2 heads, 8 blocks, 2 local, stride 3
row_ptr, cols = emu.layout_csr(toy)
for h in range(2):
    for qb in (5, 7):
        active = cols[row_ptr[h * 8 + qb]:row_ptr[h * 8 + qb + 1]]
        print(f"head {h}, query block {qb}: key blocks {active.tolist()}")
        assert active.tolist() == np.flatnonzero(toy[h, qb]).tolist()
print(f"CSR: {len(cols)} active blocks in all, row_ptr has {len(row_ptr)} entries "
      f"(H*NB + 1); the bool layout has {toy.size} cells")

# %% [markdown]
# ## 2. The tile loop, CUDA and NumPy side by side
#
# Inside a thread block, 4 threads (lanes) share a query row, each owning a quarter of its head
# dimensions: q, the running output `acc` and the partial sums stay in registers. For each
# active key block, and each tile of `BN` keys in it, the threads load K into shared memory,
# compute the scores (each lane a partial dot product, summed across the 4 lanes with two warp
# shuffles), update the running max `m` and sum `l`, load V into the same buffer and add the
# weighted values. Here is that loop in the `.cu` source:

# %%
def block_of(text, first_line_pattern):
    """The lines from the first match of the pattern to the end of the block it opens (by
    indentation), as printed source."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(first_line_pattern, line))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("#pragma")
                                or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    if end < len(lines) and lines[end].strip().startswith("}"):
        end += 1                                            # the closing brace (CUDA)
    return "\n".join(lines[start:end])


cuda_loop = block_of(SOURCE, r"for \(int idx = row_ptr\[h \* NB \+ qb\]")
print(cuda_loop)
assert "continue" not in cuda_loop or "break" in cuda_loop
assert "key0 += BN" in cuda_loop and "__syncthreads" in cuda_loop

# %% [markdown]
# and the same loop in the emulation. Where the kernel has threads, the emulation has an array
# axis (rows, lanes); where a thread loops, it loops. `fma32` rounds a multiply-add once, as
# CUDA's `fmaf` does, so the two add up their numbers in the same order:

# %%
numpy_loop = block_of(inspect.getsource(emu.prefill_block), r"for idx in range\(row_ptr")
print(numpy_loop)
for name in ("row_ptr", "cols", "kb", "key0", "m_new", "alpha", "row_sum", "pv", "acc"):
    assert name in cuda_loop and name in numpy_loop, name   # the same names on both sides

# %% [markdown]
# The early exit: key blocks come in ascending order, so once a block starts after the tile's
# last query (`kb * block_size > q_last`), so does every later one: causality ends the loop. In
# a key tile that reaches past a row's own position, the keys after it get the score `-inf`
# (weight 0): the usual causal mask, inside the block.
#
# ## 3. The emulation against the reference
#
# phi-3-small's shape in miniature: 8 query heads sharing 2 KV heads (GQA), 16-token blocks,
# 2 local blocks, stride 3, a continuation of 37 queries after 50 cached positions (neither a
# multiple of the block), per-head patterns, both tile sizes the kernel is compiled for.

# %%
B, H, KV, HD, BLOCK = 1, 8, 2, 32, 16
past, T = 50, 37
S = past + T
layout = blocksparse_layout(H, -(-S // BLOCK), 2, 3)
q = rng.standard_normal((B, H, T, HD), dtype=np.float32)
k = rng.standard_normal((B, KV, S, HD), dtype=np.float32)
v = rng.standard_normal((B, KV, S, HD), dtype=np.float32)
scale = 1 / np.sqrt(HD)
with backends.use_backend("numpy"):
    reference = blocksparse_attention(q, k, v, layout, BLOCK, scale, past)
emulated = emu.blocksparse_prefill(q, k, v, layout, BLOCK, scale, past, tile=16)
error = float(np.abs(emulated - reference).max())
print(f"prefill, tile 16: max |emulation - reference| = {error:.2e}")
assert error < 1e-5

cache_k = np.zeros((B, KV, 128, HD), np.float32)       # a KV cache buffer with room to spare
cache_v = np.zeros_like(cache_k)
cache_k[:, :, :S], cache_v[:, :, :S] = k, v
with backends.use_backend("numpy"):
    reference_decode = blocksparse_attention(q[:, :, -1:], k, v, layout, BLOCK, scale, S - 1)
decoded = emu.blocksparse_decode(q[:, :, -1:], cache_k[:, :, :S], cache_v[:, :, :S], layout,
                                 BLOCK, scale, S)
error = float(np.abs(decoded - reference_decode).max())
print(f"decode over a cache view [:, :, :{S}] of a {cache_k.shape[2]}-position buffer: "
      f"max difference {error:.2e}")
assert error < 1e-5

# %% [markdown]
# A check that passes is worth something only if a wrong kernel would fail it. Break the
# emulation the way a kernel is easily broken, by forgetting to rescale the running sums when
# the running maximum grows (`alpha = 1`), and the same comparison fails:

# %%
correct_rescale = emu.rescale_factor
emu.rescale_factor = lambda m, m_new: np.ones_like(m_new, dtype=np.float32)
try:
    broken = emu.blocksparse_prefill(q, k, v, layout, BLOCK, scale, past, tile=16)
finally:
    emu.rescale_factor = correct_rescale
broken_error = float(np.abs(broken - reference).max())
print(f"without the rescale: max difference {broken_error:.2f}")
assert broken_error > 1e-2

# %% [markdown]
# ## 4. What skipping saves
#
# Count what the kernel would do: every key tile a thread block loads (K, then V into the same
# buffer) passes through `load_tile`. Wrapping it counts the loads of a whole launch, for the
# block-sparse layout and for the all-active one, with which the same kernel is dense causal
# attention (the benchmark's baseline).

# %%
def tiles_loaded(layout, length, block, heads=2, hd=16):
    """K and V tiles the prefill emulation loads for `length` queries from position 0."""
    count = [0]
    real = emu.load_tile

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    x = np.zeros((1, heads, length, hd), np.float32)
    emu.load_tile = counting
    try:
        emu.blocksparse_prefill(x, x, x, layout[:heads], block, 1.0, 0, tile=block)
    finally:
        emu.load_tile = real
    return count[0]


BLOCK = 16
rows = []
for n_blocks in (4, 8, 16, 32):
    lay = blocksparse_layout(8, n_blocks, 2, 3)
    dense = np.ones_like(lay)
    sparse_tiles = tiles_loaded(lay, n_blocks * BLOCK, BLOCK)
    dense_tiles = tiles_loaded(dense, n_blocks * BLOCK, BLOCK)
    rows.append((n_blocks, sparse_tiles, dense_tiles, density(lay[:2])))
print(" blocks | tiles loaded, block-sparse | dense | ratio | layout density (2 heads)")
for n_blocks, sparse_tiles, dense_tiles, dens in rows:
    ratio = sparse_tiles / dense_tiles
    print(f" {n_blocks:6d} | {sparse_tiles:26d} | {dense_tiles:5d} | {ratio:5.3f} | {dens:.3f}")
    assert abs(ratio - dens) < 1e-9                    # the work is the layout's density

# %% [markdown]
# The kernel's work is exactly the layout's density: a tile that is not active is never loaded,
# never multiplied. At phi-3-small's own setting (blocks of 64, 16 local, stride 8, 32 heads)
# that density, and so the ideal speed-up of the block-sparse prefill over the same kernel
# dense, is, from the layout alone:

# %%
lengths = [8192, 16384, 32768, 65536]
ideal = []
for n in lengths:
    d = density(blocksparse_layout(32, n // 64, 16, 8))
    ideal.append(1 / d)
    kv_bytes = 2 * d * (n // 64) * (n // 64 + 1) / 2 * 64 * 128 * 2   # bf16 K and V tiles
    print(f" {n:6d} tokens: density {d:.3f}, ideal speed-up {1 / d:4.1f}x, K/V tiles read per "
          f"head {kv_bytes / 2**30:.2f} GiB (dense {kv_bytes / d / 2**30:.2f})")
assert all(a < b for a, b in zip(ideal, ideal[1:])) and ideal[-1] < 8
x = np.arange(len(lengths))
print("picture:", _plot.line_plot(
    out / "19_ideal_speedup.png",
    {"1 / density: block-sparse prefill against the same kernel dense": (x, ideal)},
    "phi-3-small's block-sparse layers: the work a GPU kernel skips (ideal speed-up)",
    "sequence length (tokens)", "speed-up", xticks=[str(n) for n in lengths],
    hlines={"stride 8: the limit": 8.0}))

# %% [markdown]
# Ideal, because the kernel also pays for what does not shrink: launching, reading q, writing
# the output, and the diagonal tiles that are only half used. On a real GPU the other side of
# the comparison is FlashAttention (torch's `scaled_dot_product_attention`), which does dense
# work on the GPU's tensor cores; this kernel's multiply-adds run on the ordinary float32 units,
# several times slower per operation. So against FlashAttention the density must win back that
# factor first. `benchmarks/gpu.py` measures both comparisons on the same GPU.
#
# ## 5. Compiling without a GPU
#
# The `.cu` sources are compiled to machine code (a *cubin*) for the A100 (sm_80) and the
# H100/H200 (sm_90) by NVRTC, NVIDIA's compiler as a library, installed from the package index
# with the CUDA headers; no driver, no GPU. A cubin is what the chip runs, so the assembler
# checks what only it knows: registers, and the 48 KB of static shared memory a thread block
# may use. That is why the prefill kernel keeps K and V of a tile in *one* shared buffer: two
# (64 KB at BN = 64, HD = 128) would not compile. Every entry point is a plain
# `extern "C" __global__` function, one per instantiation, found by name:

# %%
names = emu.kernel_names()
print(f"{len(names)} entry points, e.g. {names[0]}, {names[-1]}")
assert set(names) == set(entry_points(SOURCE))           # each one written out in the .cu
try:
    from tinyphi3_gpu.compile import CompileError, compile_cubin
    import cupy_backends.cuda.libs.nvrtc  # noqa: F401  (the compiler library)
    print("compile check available: tests/test_gpu_compile.py compiles every source for",
          "sm_80 and sm_90")
    too_big = ('extern "C" __global__ void too_big(float* y) {\n'
               '    __shared__ float tile[64 * 128 * 2];\n'
               '    tile[threadIdx.x] = y[threadIdx.x]; __syncthreads(); y[0] = tile[1];\n}\n')
    try:
        compile_cubin(out / "too_big.cu", "sm_90", source=too_big)
        raise AssertionError("64 KB of static shared memory compiled")
    except CompileError as error:
        print("two 64 x 128 float32 tiles in shared memory:",
              str(error).splitlines()[1].strip()[:90])
except ImportError:
    print("NVRTC is not installed here (the gpu extra): the compile check is skipped")

# %% [markdown]
# ## 6. On a GPU
#
# Where CuPy sees a GPU, the launchers in `tinyphi3_gpu/attention.py` run the compiled kernels
# on CuPy arrays, and `Phi3.from_pretrained(path, backend="cupy")` runs a whole model with them.
# Here is one timing, if a GPU is present; the full comparison is `benchmarks/gpu.py`, its
# results in `docs/benchmarks.md`.

# %%
why = gpu_unavailable()
if why is None:
    import cupy

    from tinyphi3_gpu import attention as gpu_attention

    n, heads, kv_heads, hd = 8192, 32, 8, 128
    lay = blocksparse_layout(heads, n // 64, 16, 8)
    qg = cupy.random.standard_normal((1, heads, n, hd), dtype=cupy.float32)
    kg = cupy.random.standard_normal((1, kv_heads, n, hd), dtype=cupy.float32)
    vg = cupy.random.standard_normal((1, kv_heads, n, hd), dtype=cupy.float32)
    timings = {}
    for label, run in [("block-sparse", lambda: gpu_attention.blocksparse_prefill(
                            qg, kg, vg, lay, 64, 1 / hd, 0)),
                       ("dense", lambda: gpu_attention.dense_causal_attention(qg, kg, vg,
                                                                               1 / hd))]:
        run()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(5):
            run()
        stop.record()
        stop.synchronize()
        timings[label] = cupy.cuda.get_elapsed_time(start, stop) / 5
        print(f"{label:12s} prefill of {n} tokens: {timings[label]:.2f} ms")
    print(f"speed-up {timings['dense'] / timings['block-sparse']:.1f}x "
          f"(ideal {1 / density(lay):.1f}x)")
else:
    print(f"no GPU here ({why}):")
    print("the algorithm was checked above by its emulation and the sources compiled;")
    print("docs/benchmarks.md holds the GPU measurements, once a GPU has run benchmarks/gpu.py.")

# %% [markdown]
# ## What to take away
#
# - A GPU kernel is the same online softmax as lesson 14's, cut into thread blocks: one per
#   (query tile, head), each walking its head's active key blocks from a CSR list.
# - Skipping a block skips its loads and its arithmetic: the kernel's work is the layout's
#   density: 0.18 of dense at 32K tokens for phi-3-small.
# - What cannot run here is still checked: the algorithm by an emulation that walks the same
#   tiles in the same order, the CUDA source by compiling it to the chip's machine code.
