"""Block-sparse attention: the layout, its coverage property, the NumPy reference and the backends.

The layout is checked against a loop-by-loop restatement of its definition and a hand-written
example; the reference against dense attention (tinyphi3.nn.attention) with an all-active layout;
the Numba kernels against the reference over hypothesis-drawn shapes, lengths and patterns.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.blocksparse import (blocksparse_attention, blocksparse_layout, blocksparse_mask,
                                     density, kv_bytes_per_token)
from tinyphi3.errors import InvalidInputError, TinyPhi3Error
from tinyphi3.backends.numba.blocksparse import blocksparse_decode, blocksparse_prefill

seeds = st.integers(0, 2**31)
RTOL, ATOL = 1e-5, 1e-5


def layout_by_loops(num_heads, num_blocks, local_blocks, vert_stride, homo_head):
    """The definition read aloud, one block at a time."""
    step = max(1, int(vert_stride / num_heads))
    layout = np.zeros((num_heads, num_blocks, num_blocks), dtype=bool)
    for h in range(num_heads):
        offset = 0 if homo_head else h * step
        for q in range(num_blocks):
            for k in range(q + 1):
                is_local = q - k < local_blocks
                is_vertical = (k + offset + 1) % vert_stride == 0
                layout[h, q, k] = is_local or is_vertical
    return layout


def covers_every_earlier_block(layout):
    """For every query block q, do the heads together see every block k <= q?"""
    union = layout.any(axis=0)                                # [NB, NB]
    return bool(np.all(union[np.tril_indices(layout.shape[1])]))


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@given(heads=st.integers(1, 40), blocks=st.integers(1, 40), local=st.integers(1, 20),
       stride=st.integers(1, 20), homo=st.booleans())
def test_layout_matches_its_definition(heads, blocks, local, stride, homo):
    got = blocksparse_layout(heads, blocks, local, stride, homo_head=homo)
    assert got.dtype == bool and got.shape == (heads, blocks, blocks)
    np.testing.assert_array_equal(got, layout_by_loops(heads, blocks, local, stride, homo))


def test_layout_by_hand():
    # 2 heads, 2 local blocks, stride 3: step = max(1, int(1.5)) = 1; head 0's vertical blocks
    # are 2, 5 ((k + 1) % 3 == 0), head 1's are 1, 4 ((k + 2) % 3 == 0).
    layout = blocksparse_layout(2, 6, 2, 3).astype(int)
    np.testing.assert_array_equal(layout[0], [[1, 0, 0, 0, 0, 0],
                                              [1, 1, 0, 0, 0, 0],
                                              [0, 1, 1, 0, 0, 0],
                                              [0, 0, 1, 1, 0, 0],
                                              [0, 0, 1, 1, 1, 0],
                                              [0, 0, 1, 0, 1, 1]])
    np.testing.assert_array_equal(layout[1], [[1, 0, 0, 0, 0, 0],
                                              [1, 1, 0, 0, 0, 0],
                                              [0, 1, 1, 0, 0, 0],
                                              [0, 1, 1, 1, 0, 0],
                                              [0, 1, 0, 1, 1, 0],
                                              [0, 1, 0, 0, 1, 1]])
    assert density(layout.astype(bool)) == (13 + 14) / (2 * 21)    # of 21 causal blocks each
    homo = blocksparse_layout(2, 6, 2, 3, homo_head=True)
    np.testing.assert_array_equal(homo[0], homo[1])
    np.testing.assert_array_equal(homo[1], layout[0].astype(bool))


def test_phi3_small_layout_covers_every_block():
    # 32 heads, stride 8: step 1, heads h and h + 8 share a pattern, and together the heads see
    # every earlier block (Phi-3 report §2: "all tokens are attended to on different heads").
    layout = blocksparse_layout(32, 256, 16, 8)
    np.testing.assert_array_equal(layout[:8], layout[8:16])
    assert not np.array_equal(layout[0], layout[1])
    assert covers_every_earlier_block(layout)
    assert 0.15 < density(layout) < 0.25                       # about a fifth of the blocks
    assert density(np.tril(np.ones((3, 7, 7), dtype=bool))) == 1.0


@pytest.mark.parametrize("heads", [2, 4])
def test_fewer_heads_than_stride_leave_blocks_unseen(heads):
    # 4 heads, stride 8: step 2 and heads * step = 8, yet the offsets 0, 2, 4, 6 reach only half
    # the residues: a remote block k with k + 1 odd is seen by no head.
    layout = blocksparse_layout(heads, 40, 4, 8)
    assert not covers_every_earlier_block(layout)
    assert not covers_every_earlier_block(blocksparse_layout(32, 40, 4, 8, homo_head=True))


@given(heads=st.integers(1, 24), local=st.integers(1, 8), stride=st.integers(1, 12),
       extra=st.integers(0, 12), homo=st.booleans())
def test_coverage_holds_exactly_when_heads_cover_the_stride(heads, local, stride, extra, homo):
    blocks = local + stride + extra                           # every residue has a remote block
    layout = blocksparse_layout(heads, blocks, local, stride, homo_head=homo)
    holds = stride == 1 or (not homo and heads >= stride)
    assert covers_every_earlier_block(layout) == holds


def test_short_sequences_are_covered_by_local_blocks_alone():
    assert covers_every_earlier_block(blocksparse_layout(2, 16, 16, 8))


@given(B=st.integers(1, 2), H=st.integers(1, 6), T=st.integers(1, 12), past=st.integers(0, 6),
       hd=st.integers(1, 8), seed=seeds)
def test_reference_equals_dense_attention_when_every_block_is_active(B, H, T, past, hd, seed):
    rng = np.random.default_rng(seed)
    S, block_size = past + T, 3
    blocks = -(-S // block_size)
    everything = np.ones((H, blocks, blocks), dtype=bool)
    q, k, v = randn(rng, B, H, T, hd), randn(rng, B, H, S, hd), randn(rng, B, H, S, hd)
    mask = causal_mask(past + np.arange(T), np.ones((B, S), dtype=bool))
    with backends.use_backend("numpy"):                       # both references
        dense = attention(q, k, v, mask, 0.4)
        sparse = blocksparse_attention(q, k, v, everything, block_size, 0.4)
    np.testing.assert_allclose(sparse, dense, rtol=RTOL, atol=ATOL)


def test_reference_differs_from_dense_attention_when_blocks_are_off():
    # the negative control: the comparison above can fail
    rng = np.random.default_rng(0)
    q, k, v = randn(rng, 1, 2, 12, 4), randn(rng, 1, 2, 12, 4), randn(rng, 1, 2, 12, 4)
    layout = blocksparse_layout(2, 6, 1, 3)
    dense = attention(q, k, v, causal_mask(np.arange(12), np.ones((1, 12), dtype=bool)), 0.4)
    assert not np.allclose(blocksparse_attention(q, k, v, layout, 2, 0.4), dense, atol=1e-3)


def test_mask_of_lengths_not_multiples_of_the_block():
    layout = blocksparse_layout(1, 3, 1, 2)                   # block 1 vertical, one local block
    mask = blocksparse_mask(layout, 2, 7, 3)                  # queries at positions 5, 6
    np.testing.assert_array_equal(mask[0].astype(int), [[0, 0, 0, 1, 1, 1, 0],
                                                        [0, 0, 0, 1, 1, 1, 1]])


@st.composite
def problems(draw):
    """Random block-sparse problems: shapes, lengths, a cache longer than needed, a pattern."""
    KV, g, B = draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 2))
    H, hd, block_size = KV * g, draw(st.integers(1, 24)), draw(st.integers(1, 8))
    T, past, spare = draw(st.integers(1, 40)), draw(st.integers(0, 40)), draw(st.integers(0, 5))
    S = past + T + spare
    blocks = -(-S // block_size) + draw(st.integers(0, 2))
    if draw(st.booleans()):
        layout = blocksparse_layout(H, blocks, draw(st.integers(1, 4)), draw(st.integers(1, 6)),
                                    homo_head=draw(st.booleans()))
    else:                                   # any pattern, even one where a row sees no key
        rng = np.random.default_rng(draw(seeds))
        layout = rng.random((H, blocks, blocks)) < draw(st.floats(0.1, 1.0))
    return B, H, KV, T, S, hd, block_size, past, layout, draw(seeds)


@given(problem=problems(), scale=st.floats(0.05, 1.0))
def test_prefill_kernel_equals_reference(problem, scale):
    B, H, KV, T, S, hd, block_size, past, layout, seed = problem
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, B, H, T, hd), randn(rng, B, KV, S, hd), randn(rng, B, KV, S, hd)
    got = blocksparse_prefill(q, k, v, layout, block_size, scale, past)
    with backends.use_backend("numpy"):                       # the reference, not the kernel
        want = blocksparse_attention(q, k, v, layout, block_size, scale, past)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@given(problem=problems(), scale=st.floats(0.05, 1.0))
def test_decode_kernel_equals_last_row_of_prefill(problem, scale):
    B, H, KV, _, S, hd, block_size, _, layout, seed = problem
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, B, H, S, hd), randn(rng, B, KV, S + 3, hd), randn(rng, B, KV, S + 3, hd)
    lengths = rng.integers(1, S + 1, size=B)                 # each sequence its own length
    k_view, v_view = k[:, :, :S], v[:, :, :S]                 # a cache view: not contiguous
    new = np.stack([q[b, :, n - 1] for b, n in enumerate(lengths)])[:, :, None]   # [B, H, 1, hd]
    got = blocksparse_decode(new, k_view, v_view, layout, block_size, scale, lengths)
    assert got.shape == (B, H, 1, hd)
    for b, n in enumerate(lengths):
        one = slice(b, b + 1)
        prefill = blocksparse_prefill(q[one, :, :n], k[one, :, :n], v[one, :, :n], layout,
                                      block_size, scale, 0)
        with backends.use_backend("numpy"):
            want = blocksparse_attention(q[one, :, :n], k[one, :, :n], v[one, :, :n], layout,
                                         block_size, scale)
        np.testing.assert_allclose(got[b, :, 0], prefill[0, :, -1], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got[b, :, 0], want[0, :, -1], rtol=RTOL, atol=ATOL)


def test_kv_bytes_of_phi3_small_at_8k():
    # Last query block 127: 16 local blocks (112..127) plus, for KV head 0 (query heads 0..3,
    # offsets 0..3), the remote blocks k < 112 with (k + h + 1) % 8 == 0: 4 residues x 14 = 56.
    layout = blocksparse_layout(32, 128, 16, 8)
    sparse, dense = kv_bytes_per_token(layout, 8192, 64, 8, 128, bytes_per_value=2)
    per_token = 2 * 128 * 2
    assert dense == 8 * 8192 * per_token
    assert sparse == 8 * (16 + 56) * 64 * per_token
    everything = np.ones((4, 3, 3), dtype=bool)
    assert kv_bytes_per_token(everything, 7, 3, 2, 5) == (2 * 7 * 20, 2 * 7 * 20)


@pytest.mark.parametrize("name, value", [("num_heads", 0), ("num_blocks", -1),
                                         ("local_blocks", 0), ("vert_stride", 0),
                                         ("vert_stride", 2.5), ("num_heads", True)])
def test_bad_layout_parameters_are_named(name, value):
    args = dict(num_heads=4, num_blocks=8, local_blocks=2, vert_stride=4)
    args[name] = value
    with pytest.raises(InvalidInputError, match=name) as error:
        blocksparse_layout(**args)
    assert isinstance(error.value, TinyPhi3Error)
    with pytest.raises(InvalidInputError, match="homo_head"):
        blocksparse_layout(4, 8, 2, 4, homo_head="yes")


def test_bad_lengths_and_shapes_are_named():
    layout = blocksparse_layout(2, 4, 1, 2)
    q, kv = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 1, 8, 4), np.float32)
    with pytest.raises(InvalidInputError, match="block_size"):
        blocksparse_mask(layout, 3, 8, 0)
    with pytest.raises(InvalidInputError, match="past"):
        blocksparse_mask(layout, 3, 8, 2, past=6)
    with pytest.raises(InvalidInputError, match="blocks"):
        blocksparse_mask(layout, 3, 9, 2)
    with pytest.raises(InvalidInputError, match="layout"):
        blocksparse_mask(layout.astype(int), 3, 8, 2)
    with pytest.raises(InvalidInputError, match="heads"):
        blocksparse_prefill(np.zeros((1, 3, 3, 4), np.float32), kv, kv, layout, 2, 1.0)
    with pytest.raises(InvalidInputError, match="length"):
        blocksparse_decode(q[:, :, :1], kv, kv, layout, 2, 1.0, 0)
    with pytest.raises(InvalidInputError, match="one query"):
        blocksparse_decode(q, kv, kv, layout, 2, 1.0, 8)
