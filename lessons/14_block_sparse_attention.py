# %% [markdown]
# # Lesson 14: Block-sparse attention
#
# Half of phi-3-small's layers do not look at every earlier token. §2 of the Phi-3 report: "For
# each attention head, the blocksparse attention enforces different sparsity patterns over KV
# cache. This ensures that all tokens are attended to on different heads for the given choice of
# sparsity", and "we alternate dense attention layers and blocksparse attention layers to
# optimize KV cache savings while maintaining long context retrieval performance". Figure 2 of
# the report draws a toy version.
#
# 1. the layout: local blocks, vertical blocks, one pattern per head (Figure 2, and phi-3-small's
#    real setting);
# 2. density against sequence length;
# 3. coverage: every earlier block is read by some head, and when that fails;
# 4. token-level causality inside the active blocks;
# 5. the NumPy reference and the Numba prefill kernel, and the online softmax that the kernel
#    computes, step by step on a tiny example;
# 6. the decode kernel, which reads only the active blocks of the KV cache;
# 7. what it saves: KV-cache bytes per generated token;
# 8. a rough timing of the reference against the kernel.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # one BLAS thread (lesson 8)

import platform
from pathlib import Path

import numba
import numpy as np

import _plot
from _timing import median_seconds
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.blocksparse import (blocksparse_attention, blocksparse_layout, blocksparse_mask,
                                     density, kv_bytes_per_token)
from tinyphi3.pictures.blocksparse import draw_layout
from tinyphi3.config import preset
from tinyphi3.backends.numba.blocksparse import blocksparse_decode, blocksparse_prefill
from tinyphi3 import backends

# On the numba backend (tinyphi3's default) `blocksparse_attention` hands its work to the kernels
# below; this lesson wants the NumPy reference whenever it names the function, and calls the
# kernels by their own names.
backends.set_backend("numpy")
np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
small = preset("phi-3-small-8k")
BLOCK, LOCAL, STRIDE = (small.blocksparse_block_size, small.blocksparse_num_local_blocks,
                        small.blocksparse_vert_stride)
HEADS, KV_HEADS, HD = small.num_attention_heads, small.num_key_value_heads, small.head_dim
print(f"phi-3-small: {HEADS} heads, {KV_HEADS} KV heads, head_dim {HD}; blocks of {BLOCK} "
      f"tokens, {LOCAL} local blocks, vertical stride {STRIDE}")


def randn(*shape):
    return rng.standard_normal(shape, dtype=np.float32)


# %% [markdown]
# ## 1. The layout
#
# The sequence is cut into blocks of `B` tokens. A query in block `q` of head `h` reads key block
# `k` when
#
#     active[h, q, k] = q >= k  and  (q - k < local_blocks  or  vertical[h, k])
#     vertical[h, k]  = (k + h * step + 1) % vert_stride == 0,   step = max(1, int(stride / H))
#
# so every head reads the last `local_blocks` blocks (blue in Figure 2) and, further back, one
# block in every `vert_stride` (orange), each head a different one; the rest is skipped (grey).
# Figure 2's toy has 2 local blocks and stride 3, and lists what a query in block 8 reads:

# %%
toy = blocksparse_layout(4, 9, 2, 3)                          # [H=4, NB=9, NB=9]
print("query block 8 reads (L local, V vertical, . skipped):")
print("          key block  " + " ".join(str(k) for k in range(9)))
for h in range(4):
    row = ["L" if 8 - k < 2 else "V" if toy[h, 8, k] else "." for k in range(9)]
    print(f"  head {h}:            " + " ".join(row))
assert list(np.flatnonzero(toy[0, 8])) == [2, 5, 7, 8]        # (k + 1) % 3 == 0, and 7, 8
assert list(np.flatnonzero(toy[1, 8])) == [1, 4, 7, 8]        # (k + 2) % 3 == 0
assert np.array_equal(toy[3], toy[0])                          # offset 3 = offset 0 (mod 3)
out = Path("lesson_outputs")
print("picture:", draw_layout(out / "14_figure2_toy.png", toy, 2,
                              "The report's Figure 2: 2 local blocks, vertical stride 3, 4 heads",
                              "rows: query blocks, columns: key blocks; query block 8 is the "
                              "last row"))

# %% [markdown]
# phi-3-small's own setting: blocks of 64 tokens, 16 local blocks (1024 tokens), stride 8 and 32
# heads, so `step = max(1, int(8 / 32)) = 1`: head `h` has offset `h`, and heads `h` and `h + 8`
# share a pattern. Drawn over 48 blocks (3072 tokens) for a few heads:

# %%
layout = blocksparse_layout(HEADS, 48, LOCAL, STRIDE)           # [32, 48, 48]
for h in range(8):
    assert np.array_equal(layout[h], layout[h + 8]) and np.array_equal(layout[h], layout[h + 24])
    assert all(not np.array_equal(layout[h], layout[j]) for j in range(h + 1, 8))
print("heads h, h + 8, h + 16, h + 24 share a pattern; heads 0..7 are all different")
print("picture:", draw_layout(out / "14_phi3_small_layout.png", layout, LOCAL,
                              f"phi-3-small: {LOCAL} local blocks, vertical stride {STRIDE}, "
                              f"blocks of {BLOCK} tokens (48 blocks = 3072 tokens)",
                              "5 of the 32 heads; rows: query blocks, columns: key blocks",
                              heads=[0, 1, 2, 7, 8]))

# %% [markdown]
# Only every other layer is block-sparse: layer `i` (from 0) is dense when `(i + 1) % 2 == 0`.

# %%
sparse_layers = [i for i in range(small.num_hidden_layers) if small.uses_blocksparse(i)]
print("block-sparse layers:", sparse_layers)
assert sparse_layers == list(range(0, 32, 2))

# %% [markdown]
# ## 2. Density against sequence length
#
# The density is the fraction of the causal blocks (`q >= k`, all heads) that are active: the
# share of dense attention's work that a prefill does. Up to 16 blocks (1024 tokens) every block
# is local and nothing is skipped; beyond, a query block reads 16 local blocks plus one in 8 of
# the rest, so the density falls towards 1/8. Generating a token reads one row of the layout:
# the last query block's. Per query head that row falls towards 1/8 as well; per KV head it is
# the union of the rows of its 4 query heads, offsets 4j .. 4j + 3, which is 4 residues of 8:
# towards 1/2.

# %%
lengths = [BLOCK * 2 ** e for e in range(9)]                    # 64 .. 16384 tokens
dens, per_query, per_kv = [], [], []
for n in lengths:
    lay = blocksparse_layout(HEADS, n // BLOCK, LOCAL, STRIDE)
    dens.append(density(lay))
    sparse, dense = kv_bytes_per_token(lay, n, BLOCK, HEADS, HD)   # one KV head per query head
    per_query.append(sparse / dense)
    sparse, dense = kv_bytes_per_token(lay, n, BLOCK, KV_HEADS, HD)   # phi-3-small's groups
    per_kv.append(sparse / dense)
print(" tokens | density (prefill) | decode read, per query head | per KV head")
for n, a, b, c in zip(lengths, dens, per_query, per_kv):
    print(f" {n:6d} | {a:17.3f} | {b:27.3f} | {c:11.3f}")
assert dens[:5] == [1.0] * 5                                   # up to 1024 tokens: all local
assert all(a > b for a, b in zip(dens[4:], dens[5:]))          # then falling...
assert 1 / 8 < dens[-1] < 0.25                                 # ... towards 1/8
assert per_query[-1] < 0.2 and 0.5 < per_kv[-1] < 0.55
x = np.arange(len(lengths))
print("picture:", _plot.line_plot(                 # "a -> b": curve a tends to the limit b
    "14_density.png",
    {"prefill work -> 1/8": (x, dens),
     "decode, per query head -> 1/8": (x, per_query),
     "decode, per KV head -> 1/2": (x, per_kv)},
    "phi-3-small's block-sparse layers against dense attention (= 1); dashed: 1/2, 1/8",
    "sequence length (tokens)", "fraction of dense", xticks=[str(n) for n in lengths],
    legend="upper right", hlines={"": 1 / 8, " ": 1 / 2}))   # the legend names the dashed lines

# %% [markdown]
# ## 3. Coverage: every earlier block is read by some head
#
# "All tokens are attended to on different heads": for every query block, the union over the
# heads of its active blocks is every earlier block. Head `h`'s vertical blocks are those with
# `k + h * step + 1 = 0 (mod stride)`, so the heads together cover every `k` exactly when the
# offsets `h * step` meet every residue modulo the stride. With 32 heads and stride 8 they do
# (offsets 0..31); with 4 heads and stride 8, `step = 2` and the offsets 0, 2, 4, 6 leave the odd
# residues to nobody, and with the same pattern for every head (`homo_head`) there is one offset.

# %%
def unseen_blocks(lay):
    """Causal blocks (q >= k) that no head reads: bool [NB, NB]."""
    return ~lay.any(axis=0) & np.tril(np.ones(lay.shape[1:], dtype=bool))


assert not unseen_blocks(blocksparse_layout(HEADS, 256, LOCAL, STRIDE)).any()
four = blocksparse_layout(4, 28, 4, 8)
print(f"32 heads, stride 8, 256 blocks: no block unseen; 4 heads, stride 8, 28 blocks: "
      f"{int(unseen_blocks(four).sum())} unseen")
assert unseen_blocks(four).any()
assert unseen_blocks(blocksparse_layout(HEADS, 40, LOCAL, STRIDE, homo_head=True)).any()
union = np.stack([blocksparse_layout(8, 28, 4, 8).any(axis=0), four.any(axis=0)])
print("picture:", draw_layout(out / "14_coverage.png", union, 4,
                              "Coverage: what the heads read together (4 local blocks, stride 8)",
                              "grey: a block that no head reads",
                              labels=["union of 8 heads: all read", "union of 4 heads: gaps"]))

# %% [markdown]
# The condition, checked over many small configurations (as long as the sequence reaches past
# the local blocks into every residue): coverage holds exactly when `stride == 1` or
# (`heads >= stride` and the heads differ).

# %%
checked = 0
for heads in range(1, 13):
    for stride in range(1, 11):
        for local in (1, 3):
            for homo in (False, True):
                lay = blocksparse_layout(heads, local + 2 * stride + 1, local, stride, homo)
                holds = stride == 1 or (heads >= stride and not homo)
                assert (not unseen_blocks(lay).any()) == holds, (heads, stride, local, homo)
                checked += 1
print(f"condition confirmed on {checked} configurations")

# %% [markdown]
# ## 4. Causality inside the active blocks
#
# The layout works on blocks; inside an active block the usual token rule holds: a query at
# position `p` sees key `s` only when `s <= p`. On the diagonal block that cuts the block in two.
# `blocksparse_mask` combines both, here with blocks of 4 tokens, one local block and stride 2:

# %%
lay = blocksparse_layout(1, 3, 1, 2)                           # block 1 vertical, 1 local block
mask = blocksparse_mask(lay, 12, 12, 4)[0]                     # [H, T, S] -> [T, S]
print("mask (rows: query position, columns: key position):")
print(mask.astype(int))
assert np.array_equal(mask[8:, 8:], np.tril(np.ones((4, 4), dtype=bool)))   # diagonal block
assert not mask[8:, :4].any() and mask[8:, 4:8].all()         # block 0 skipped, block 1 read
assert not (mask & ~np.tril(np.ones((12, 12), dtype=bool))).any()           # never the future

# %% [markdown]
# So a block-sparse layer is still causal: changing the keys and values after position `t`
# changes no output at positions `<= t`.

# %%
H, KV, T, hd, bs = 4, 2, 40, 8, 4
lay = blocksparse_layout(H, T // bs, 2, 3)
q, k, v = randn(1, H, T, hd), randn(1, KV, T, hd), randn(1, KV, T, hd)
before = blocksparse_attention(q, k, v, lay, bs, 1 / hd)
t = 21
k2, v2 = k.copy(), v.copy()
k2[:, :, t + 1:], v2[:, :, t + 1:] = randn(1, KV, T - t - 1, hd), randn(1, KV, T - t - 1, hd)
after = blocksparse_attention(q, k2, v2, lay, bs, 1 / hd)
assert np.array_equal(before[:, :, :t + 1], after[:, :, :t + 1])
assert not np.allclose(before[:, :, t + 1:], after[:, :, t + 1:])
print(f"new keys and values after position {t}: outputs 0..{t} unchanged, later ones changed")

# %% [markdown]
# ## 5. The reference and the prefill kernel
#
# The speed the layout promises needs kernels that skip the inactive blocks. The report (§2)
# built "a kernel for the prefilling phase" and extended vLLM's paged attention kernel "for the
# decoding phase"; tinyphi3 has one of each, in Numba.
#
# `blocksparse_attention` is the NumPy reference: dense scores, the block-sparse mask, softmax.
# It computes every score, even the ones it throws away. (On the numba backend a model's
# block-sparse layers ask the same function, and it runs the kernels instead: the switch of
# `tinyphi3.backends`. This lesson runs on the numpy backend, so the name means the reference.)
# `blocksparse_prefill` (Numba) visits only the active blocks and never builds the `[T, S]`
# score matrix. Same answer, here with grouped-query heads (8 query heads, 2 KV heads) over 512
# tokens in blocks of 16:

# %%
H, KV, T, hd, bs = 8, 2, 512, 32, 16
lay = blocksparse_layout(H, T // bs, 4, 8)
q, k, v = randn(1, H, T, hd), randn(1, KV, T, hd), randn(1, KV, T, hd)
reference = blocksparse_attention(q, k, v, lay, bs, 1 / hd)
kernel = blocksparse_prefill(q, k, v, lay, bs, 1 / hd)
print(f"density {density(lay):.3f}; "
      f"max |kernel - reference| = {np.abs(kernel - reference).max():.1e}")
assert np.allclose(kernel, reference, atol=1e-5)
causal = attention(q, k, v, causal_mask(np.arange(T), np.ones((1, T), dtype=bool)), 1 / hd)
assert not np.allclose(kernel, causal, atol=1e-3)              # and it is not dense attention

# %% [markdown]
# How can the kernel normalise a softmax over keys it has not all seen yet? With an *online
# softmax* (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022). It keeps, per query, a
# running maximum `m`, a running sum `l = sum e^(s - m)` and an unnormalised output
# `acc = sum e^(s - m) v`, and folds in one key block at a time:
#
#     m'   = max(m, max_j s_j)
#     l'   = l e^(m - m') + sum_j e^(s_j - m')
#     acc' = acc e^(m - m') + sum_j e^(s_j - m') v_j          out = acc / l at the end
#
# When a block raises the maximum, the factor `e^(m - m')` rescales what was summed before, as if
# it had been computed with the new maximum from the start. A tiny example: one query at position
# 5, blocks of 2 tokens, one local block, stride 2 (block 1 vertical): it reads blocks 1 and 2
# and skips block 0.

# %%
lay = blocksparse_layout(1, 3, 1, 2)
assert list(np.flatnonzero(lay[0, 2])) == [1, 2]
hd = 2
q1 = np.array([[[[1.0, 0.5]]]], np.float32)                     # [B, H, T=1, hd]
k1 = np.array([[[[0.2, 1.0], [1.0, 0.0], [-1.0, 0.5], [2.0, 1.0], [0.5, -1.0], [3.0, 2.0]]]],
              np.float32)                                       # [B, KV, S=6, hd]
v1 = np.arange(12, dtype=np.float32).reshape(1, 1, 6, 2)
scale = 1.0
m, l, acc = -np.inf, 0.0, np.zeros(hd)
for kb in np.flatnonzero(lay[0, 2]):
    keys = range(2 * kb, 2 * kb + 2)
    s = np.array([scale * q1[0, 0, 0] @ k1[0, 0, j] for j in keys])
    m_new = max(m, s.max())
    rescale = np.exp(m - m_new)                                 # 0 for the first block
    p = np.exp(s - m_new)
    l = l * rescale + p.sum()
    acc = acc * rescale + p @ v1[0, 0, 2 * kb:2 * kb + 2]
    m = m_new
    print(f"block {kb}: keys {list(keys)}, scores {s}, m = {m:.2f}, rescale {rescale:.4f}, "
          f"l = {l:.4f}, acc = {acc}")
online = acc / l
seen = [2, 3, 4, 5]
scores = np.array([q1[0, 0, 0] @ k1[0, 0, j] for j in seen])
weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
direct = weights @ v1[0, 0, seen]
print(f"online softmax: {online};  softmax over keys {seen} at once: {direct}")
assert np.allclose(online, direct)
assert np.allclose(blocksparse_prefill(q1, k1, v1, lay, 2, scale, past=5)[0, 0, 0], direct)
assert np.allclose(blocksparse_attention(q1, k1, v1, lay, 2, scale, past=5)[0, 0, 0], direct)

# %% [markdown]
# ## 6. The decode kernel reads only the active blocks
#
# Generating a token is one query against the whole cache. `blocksparse_decode` loops over the
# active blocks of that query's row and touches nothing else. To show it we poison the cache:
# every block that no query head of a KV head's group reads gets NaN in its keys and values. The
# reference, which multiplies all of the cache, turns to NaN; the kernel does not notice, and
# equals the reference on the clean cache.

# %%
H, KV, hd, bs, n = 8, 2, 16, 16, 500                           # a cache of 500 tokens
g = H // KV
blocks = -(-n // bs)
lay = blocksparse_layout(H, blocks, 4, 8)
q = randn(1, H, 1, hd)                                          # the new token, at position 499
k, v = randn(1, KV, n, hd), randn(1, KV, n, hd)
clean = blocksparse_attention(q, k, v, lay, bs, 1 / hd)         # past = 499
row = lay[:, (n - 1) // bs]                                      # [H, NB]: the last query block
used = row.reshape(KV, g, blocks).any(axis=1)                   # [KV, NB]: union over each group
k_bad, v_bad = k.copy(), v.copy()
for j in range(KV):
    for kb in np.flatnonzero(~used[j]):
        k_bad[0, j, kb * bs:(kb + 1) * bs] = np.nan
        v_bad[0, j, kb * bs:(kb + 1) * bs] = np.nan
poisoned = int(np.isnan(k_bad[0, :, :, 0]).sum())
decoded = blocksparse_decode(q, k_bad, v_bad, lay, bs, 1 / hd, n)
print(f"{poisoned} of {KV * n} cached (KV head, token) pairs poisoned with NaN")
print(f"reference on the poisoned cache: NaN anywhere? "
      f"{bool(np.isnan(blocksparse_attention(q, k_bad, v_bad, lay, bs, 1 / hd)).any())}")
print(f"decode kernel: finite {bool(np.isfinite(decoded).all())}, max |kernel - clean reference| "
      f"= {np.abs(decoded - clean).max():.1e}")
assert np.isnan(blocksparse_attention(q, k_bad, v_bad, lay, bs, 1 / hd)).all()
assert np.isfinite(decoded).all() and np.allclose(decoded, clean, atol=1e-5)
sparse, dense = kv_bytes_per_token(lay, n, bs, KV, hd, bytes_per_value=4)
assert dense - sparse == poisoned * 2 * hd * 4                 # what it skips, in bytes

# %% [markdown]
# ## 7. KV savings
#
# Bytes of keys and values one layer reads to generate one token, for phi-3-small in 16-bit
# numbers. A dense layer reads its whole cache: `8 KV heads * 2 * 128 * 2 bytes = 4 KiB` per
# cached token. A block-sparse layer reads, for each KV head, the blocks that at least one of its
# 4 query heads needs. Only half of the layers are block-sparse, so the model as a whole reads
# the average of the two:

# %%
per_token = KV_HEADS * 2 * HD * 2                               # bytes per cached token, dense
print(f"dense: {per_token} bytes per cached token per layer")
print(" tokens | dense layer | block-sparse layer | fraction | whole model (half dense)")
for n in (1024, 2048, 4096, 8192):
    lay = blocksparse_layout(HEADS, n // BLOCK, LOCAL, STRIDE)
    sparse, dense = kv_bytes_per_token(lay, n, BLOCK, KV_HEADS, HD)
    assert dense == n * per_token
    print(f" {n:6d} | {dense / 2 ** 20:7.2f} MiB | {sparse / 2 ** 20:14.2f} MiB "
          f"| {sparse / dense:8.3f} | {(1 + sparse / dense) / 2:.3f}")
assert sparse / dense == (16 + 56) / 128                        # 8192: 16 local + 4 x 14 remote
assert (1 + sparse / dense) / 2 == 0.78125

# %% [markdown]
# The savings are in memory too, not only in reading. The vertical blocks are fixed columns:
# once a key block has left a group's local window and is not one of its vertical blocks, no
# later query of that group will ever read it, so a cache may drop it:

# %%
lay = blocksparse_layout(HEADS, 128, LOCAL, STRIDE)             # [32, 128, 128]
for j in range(KV_HEADS):
    group = lay[j * 4:(j + 1) * 4].any(axis=0)                  # [NB, NB]: what the group reads
    for qb in (40, 90):
        gone = ~group[qb, :qb - LOCAL + 1]                      # left behind at query block qb
        assert not group[qb:, :qb - LOCAL + 1][:, gone].any()   # ... and never read again
print("a block that a group stops reading is never read by it again: the cache can drop it")

# %% [markdown]
# ## 8. A rough timing
#
# The reference computes every score and masks most of them away; the kernel does the work of
# the active blocks only. One prefill of 2048 tokens, 8 query heads and 2 KV heads of 64, blocks
# of 64, 4 local blocks, stride 8 (median of 3 runs, after a warm-up; the numbers depend on the
# machine and its threads, printed with them, and are not checked). The kernel with an all-active
# layout shows what skipping saves apart from the difference between NumPy and Numba.

# %%
H, KV, T, hd, bs = 8, 2, 2048, 64, 64
lay = blocksparse_layout(H, T // bs, 4, 8)
everything = np.ascontiguousarray(np.broadcast_to(np.tril(np.ones((T // bs, T // bs), bool)),
                                                  lay.shape))
q, k, v = randn(1, H, T, hd), randn(1, KV, T, hd), randn(1, KV, T, hd)
blocksparse_prefill(q[:, :, :64], k[:, :, :64], v[:, :, :64], lay, bs, 1 / hd)   # warm up

t_ref = median_seconds(lambda: blocksparse_attention(q, k, v, lay, bs, 1 / hd))
t_kernel = median_seconds(lambda: blocksparse_prefill(q, k, v, lay, bs, 1 / hd))
t_dense = median_seconds(lambda: blocksparse_prefill(q, k, v, everything, bs, 1 / hd))
print(f"density {density(lay):.3f}; NumPy reference {t_ref * 1e3:.0f} ms, Numba kernel "
      f"{t_kernel * 1e3:.0f} ms (all blocks active: {t_dense * 1e3:.0f} ms)")
print(f"on {platform.machine()} with {os.cpu_count()} cores; NumPy {np.__version__} with "
      f"{os.environ['OPENBLAS_NUM_THREADS']} BLAS thread(s), Numba {numba.__version__} with "
      f"{numba.get_num_threads()} thread(s)")

# %% [markdown]
# ## Summary
#
# - Each head reads its last `local_blocks` blocks and one block in every `vert_stride` further
#   back, shifted by head; phi-3-small: 64-token blocks, 16 local, stride 8, and heads `h` and
#   `h + 8` alike. Every other layer is dense.
# - Density falls from 1 (up to 1024 tokens) towards 1/8; a generated token reads about 1/8 of
#   the cache per query head but about 1/2 per KV head, which serves 4 query heads.
# - The heads together read every earlier block exactly when their offsets meet every residue
#   modulo the stride: `heads >= stride` with per-head patterns (or stride 1).
# - Inside an active block, tokens stay causal.
# - The Numba kernels equal the reference; they fold one active block at a time into an online
#   softmax and never touch the skipped blocks of the cache.
#
# ## Where it lives
#
# - `tinyphi3/nn/blocksparse_layout.py`: `blocksparse_layout` (the formula of section 1),
#   `density`, `kv_bytes_per_token`, and `check_layout` / `query_start`, which the kernels use.
# - `tinyphi3/nn/blocksparse.py`: `blocksparse_mask` (blocks and token causality, section 4),
#   `blocksparse_attention` (the NumPy reference), `blocksparse_padded_mask`,
#   `mask_at_positions`.
# - `tinyphi3/backends/numba/blocksparse.py`: `blocksparse_prefill` and `blocksparse_decode`
#   (the online softmax over active blocks, in `_prefill` and `_decode`).
# - `tinyphi3/backends/__init__.py`: `set_backend`, the switch between the reference and the
#   kernels; `tinyphi3/models/phi3_small.py`: the variant whose even layers are block-sparse;
#   `tinyphi3/config/phi3.py`: `Phi3Config.uses_blocksparse` and the `blocksparse_*` fields
#   (phi-3-small's published defaults in `tinyphi3/config/small.py`).
# - `tinyphi3/pictures/blocksparse.py`: `draw_layout`, the Figure 2 pictures.
