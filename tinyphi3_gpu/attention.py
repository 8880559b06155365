"""CuPy launchers of the block-sparse attention kernels (kernels/blocksparse_attention.cu).

The same functions, arguments and results as the Numba kernels of
tinyphi3/backends/numba/blocksparse.py, for CuPy arrays: float32, or bfloat16 held as uint16
bits. Sums are float32, the output float32 [B, H, T, hd]:

- `blocksparse_prefill`: T queries at positions past .. past + T - 1, one thread block per
  (query tile, b*H + h), visiting the active key blocks of the tile's layout row;
- `blocksparse_decode`: one new query per sequence over a KV cache, one thread block per
  (b, KV head) serving its query heads together, so each cached key is read once per group;
- `dense_causal_attention`: the prefill kernel with every block active.

k and v are read in place when their last axis is contiguous (a cache's buffer view [:, :, :S]
included). The launch plan (the choice of kernel, the CSR layout, the grids, the checks) is the
one the NumPy emulation follows, imported from it as `plan` (tinyphi3_gpu/attention_emulation.py,
which the tests run without a GPU). What has no kernel raises NotImplementedError: a head dim
outside plan.HEAD_DIMS, and, for prefill, a block_size that is not a multiple of 16.
"""

import functools
import weakref

import numpy as np

from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.blocksparse_layout import (check_heads, check_layout, decode_lengths,
                                            positive_int, query_start)
from tinyphi3_gpu import attention_emulation as plan
from tinyphi3_gpu.compile import function

SOURCE = "blocksparse_attention"                  # kernels/blocksparse_attention.cu
_CSR_ON_DEVICE: dict = {}                         # (id(layout), device) -> (ref, row_ptr, cols)


def device_csr(layout):
    """The layout's CSR (plan.layout_csr) on the current GPU, uploaded once per layout array: a
    layout must not be changed in place once used (the model builds one per layer and keeps it)."""
    import cupy as cp
    key = (id(layout), cp.cuda.Device().id)
    hit = _CSR_ON_DEVICE.get(key)
    if hit is None or hit[0]() is not layout:
        row_ptr, cols = plan.layout_csr(layout)
        forget = weakref.ref(layout, lambda _, key=key: _CSR_ON_DEVICE.pop(key, None))
        hit = _CSR_ON_DEVICE[key] = (forget, cp.asarray(row_ptr), cp.asarray(cols))
    return hit[1], hit[2]


def _operands(q, k, v):
    """(dtype name, q contiguous, k, v as the kernels read them): bf16 bits pass as they are,
    any other float becomes float32 (as the Numba kernels read it)."""
    import cupy as cp
    q, k, v = cp.asarray(q), cp.asarray(k), cp.asarray(v)
    dtype = plan.element_type(q, k, v)
    if dtype == "f32":
        q, k, v = (x.astype(cp.float32, copy=False) for x in (q, k, v))
    return dtype, cp.ascontiguousarray(q), plan.kv_operand(k, cp), plan.kv_operand(v, cp)


def _strides(k, v):
    return tuple(np.int64(s) for s in plan.element_strides(k) + plan.element_strides(v))


def blocksparse_prefill(q, k, v, layout, block_size, scale, past=None):
    """Block-sparse attention of T queries: q [B, H, T, hd]; k, v [B, KV, S, hd] -> float32
    [B, H, T, hd] on the GPU. Query t sits at position past + t (past defaults to S - T); keys
    past its position are never read, so k and v may be a cache longer than past + T."""
    import cupy as cp
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, hd = q.shape
    KV, S = k.shape[1], k.shape[2]
    past = query_start(T, S, past)
    check_heads(H, KV, layout, -(-(past + T) // block_size))
    tile = plan.prefill_tile(block_size)
    dtype, q, k, v = _operands(q, k, v)
    kernel = function(SOURCE, plan.kernel_name("prefill", dtype, hd, tile))
    row_ptr, cols = device_csr(layout)
    out = cp.empty((B, H, T, hd), cp.float32)
    kernel(plan.prefill_grid(T, past, tile, B, H), (plan.LANES * tile,),
           (q, k, v, out, row_ptr, cols, np.int32(H), np.int32(KV), np.int32(T),
            np.int32(layout.shape[1]), np.int32(block_size), np.float32(scale), np.int32(past),
            *_strides(k, v)))
    return out


def blocksparse_decode(q, k_cache, v_cache, layout, block_size, scale, length):
    """Attention of one new token per sequence: q [B, H, 1, hd] -> float32 [B, H, 1, hd].

    k_cache, v_cache: [B, KV, S, hd] with the new token's key and value already written;
    length: an int or [B] ints (NumPy or CuPy), the valid keys of each sequence
    (1 <= length <= S), the new token at position length - 1.
    """
    import cupy as cp
    layout = check_layout(layout)
    block_size = positive_int("block_size", block_size)
    B, H, T, hd = q.shape
    KV, S = k_cache.shape[1], k_cache.shape[2]
    if T != 1:
        raise InvalidInputError(f"decode takes one query per sequence, got T = {T}")
    lengths = decode_lengths(cp.asnumpy(length), B, S)
    check_heads(H, KV, layout, -(-int(lengths.max()) // block_size))
    dtype, q, k, v = _operands(q, k_cache, v_cache)
    kernel = function(SOURCE, plan.kernel_name("decode", dtype, hd))
    row_ptr, cols = device_csr(layout)
    out = cp.empty((B, H, 1, hd), cp.float32)
    kernel(plan.decode_grid(B, H, KV), (plan.DECODE_THREADS,),
           (q, k, v, out, row_ptr, cols, cp.asarray(lengths, dtype=cp.int32), np.int32(H),
            np.int32(KV), np.int32(layout.shape[1]), np.int32(block_size), np.float32(scale),
            *_strides(k, v)))
    return out


@functools.lru_cache(maxsize=16)
def _dense_layout(num_heads, num_blocks):
    """All-active layout of 64-token blocks, one array per shape, so its CSR is uploaded once."""
    return plan.all_active_layout(num_heads, num_blocks * 64, 64)


def dense_causal_attention(q, k, v, scale):
    """softmax(q k^T * scale, causal) v: q [B, H, T, hd], the last T of the S positions of
    k, v [B, KV, S, hd] -> float32 [B, H, T, hd]; the prefill kernel with every block active."""
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    return blocksparse_prefill(q, k, v, _dense_layout(H, -(-S // 64)), 64, scale, S - T)
