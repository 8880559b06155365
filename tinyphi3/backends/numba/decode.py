"""One decoding step of a 4-bit Phi-3 layer in one call: the kernels of a token, without Python
between them.

A 4-bit model's layer, decoding one token, runs about 25 small operations (two norms, four
roundings of the activations to 8 bits, four products, RoPE, the cache's rounding, attention,
the gate, two residual sums). Each goes through Python: a dictionary look-up, a kernel chosen by
backend, a thread count set and restored, arrays allocated and reshaped: about 0.2 ms per layer.
Where the weights are small that is most of the step (a 32-layer model of hidden size 256
decodes in 2.5 ms instead of 8.5); at phi-3-mini's size the products' reading of the weights
dominates and the difference is within the machine's noise (docs/benchmarks.md).

`fused_decode_layer` computes the same layer in one jitted call, so that Python is entered once
per layer. It calls the functions that the separate kernels of tinyphi3/backends/numba/q4.py and
fused.py are made of, one row, one head or one tile of 64 weight rows at a time (`_rms_norm_row`,
`_quantize_row`, `_vnni_tile`, `_attend_head`, ...), each compiled with the flags its kernel has,
so the result is the same to the bit (tests/test_decode_fused.py). The reference is the layer as
tinyphi3/models/phi3.py writes it; nothing here changes what is computed.

    h = x + o_proj(attention(rope(q), cache(rope(k)), cache(v)))   q, k, v = qkv_proj(norm(x))
    x' = h + down_proj(silu(gate) * up)                            gate, up = gate_up_proj(norm(h))

Five loops run in parallel (the four products over their tiles, attention over its heads); the
rest runs on the calling thread, as the separate kernels run it for one token
(tinyphi3/backends/numba/threads.py). The layer is compiled once and cached on disk like every
kernel. (It could not simply call the parallel kernels: Numba crashes when it loads a function
that calls a parallel kernel from its cache.)

Between two layers' calls, Python runs for ~25 microseconds: what every layer of a token shares
(the mask's row, RoPE's angles, the position, ...) is worked out once, at the first layer, and
kept in the call (`_token_arguments`). That matters more than the microseconds: Numba's idle
threads spin ~40 microseconds before they sleep (tinyphi3/backends/numba/__init__.py), and at
~60 microseconds between layers the other thread slept before every layer's first product and
woke late for it. (One call for all 32 layers, a loop over a tuple of their arguments, took
Numba ten minutes to compile and was no faster.)
"""

import weakref

import numpy as np
from numba import njit, prange

from tinyphi3.backends.numba import fused, q4
from tinyphi3.backends.numba.threads import threads_for
from tinyphi3.quant.layout import GROUP
from tinyphi3.quant.q4 import Q4Weight


@njit(boundscheck=False, inline="always")
def _product(x, q, work, out, vnni):
    """out [1, nt*64] = x [1, K] @ W^T, x rounded to 8 bits per block (`work`: xq, dx, sx) as
    q4.q4_linear computes it; the tiles in parallel, by the VNNI kernel or the portable one."""
    packed, scale_bits, min_bits = q
    xq, dx, sx = work
    q4._quantize_row(x[0], GROUP * packed.shape[2], xq[0], dx[0], sx[0])
    for t in prange(packed.shape[0]):
        if vnni:
            q4._vnni_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t)
        else:
            q4._portable_tile(xq, dx, sx, packed, scale_bits, min_bits, out, t, 4)


@njit(parallel=True, fastmath=q4._FASTMATH, cache=True, boundscheck=False)
def _decode_layer(x, norms, eps, weights, works, outs, sizes, cos, sin, cache, position,
                  allowed, scale, vnni):
    """x float32 [1, C] -> [1, C] for one token at `position` of the cache.

    norms: (input_layernorm, post_attention_layernorm) [C]; weights: (qkv, o, gate_up, down),
    each (packed, scale bits, min bits); works: the rounding buffers of the inputs of the four
    products; outs: their outputs [1, nt*64]; sizes: (H, KV, hd, I); cos, sin [1, 1, rd];
    cache: (key levels int8 [1, KV, S, hd], key scales [1, KV, S], value levels, value scales),
    the whole buffers; allowed bool [1, >= position + 1]; vnni: which product kernel."""
    H, KV, hd, inter = sizes
    C = x.shape[1]
    key_levels, key_scales, value_levels, value_scales = cache
    normed = np.empty_like(x)
    fused._rms_norm_row(x[0], norms[0], eps, normed[0])
    qkv = outs[0]
    _product(normed, weights[0], works[0], qkv, vnni)                   # [1, (H + 2KV) hd]
    q = qkv[0, :H * hd].copy().reshape((1, H, 1, hd))
    k = qkv[0, H * hd:(H + KV) * hd].copy().reshape((1, KV, 1, hd))
    q_rot, k_rot = np.empty_like(q), np.empty_like(k)
    for h in range(H):
        fused._rope_head(q, cos, sin, 1, q_rot, 0, h)
    for h in range(KV):
        fused._rope_head(k, cos, sin, 1, k_rot, 0, h)
    for h in range(KV):                           # the new key and value into the cache, 8 bits
        key_scales[0, h, position] = q4._quantize_vector(k_rot[0, h, 0],
                                                         key_levels[0, h, position])
        value = qkv[0, (H + KV + h) * hd:(H + KV + h + 1) * hd].copy()
        value_scales[0, h, position] = q4._quantize_vector(value, value_levels[0, h, position])
    attended = np.empty((1, H, hd), np.float32)
    queries = q_rot.reshape((1, H, hd))
    for h in prange(H):
        q4._attend_head(queries, key_levels, key_scales, value_levels, value_scales,
                        position + 1, allowed, scale, attended, 0, h)
    o = outs[1]
    _product(attended.reshape((1, H * hd)), weights[1], works[1], o, vnni)      # [1, C]
    residual = np.empty_like(x)
    for j in range(C):
        residual[0, j] = x[0, j] + o[0, j]
    fused._rms_norm_row(residual[0], norms[1], eps, normed[0])
    gate_up = outs[2]
    _product(normed, weights[2], works[0], gate_up, vnni)                       # [1, 2I]
    gated = np.empty((1, inter), np.float32)
    fused._silu_and_mul_row(gate_up[0], gated[0])
    down = outs[3]
    _product(gated, weights[3], works[2], down, vnni)                           # [1, C]
    out = np.empty_like(x)
    for j in range(C):
        out[0, j] = residual[0, j] + down[0, j]
    return out


def layer_arguments(w, config):
    """What decode_layer needs of one layer's weights (a dict of tinyphi3.models.phi3's short
    names), or None when the layer is not four symmetric or minmax 4-bit products without bias
    of one block size."""
    names = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    if not all(isinstance(w.get(n), Q4Weight) for n in names):
        return None
    blocks = {w[n].block for n in names}
    if len(blocks) != 1:
        return None
    block = blocks.pop()
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    C, inter = config.hidden_size, config.intermediate_size
    weights = tuple((w[n].packed, q4._bits(w[n].scales), q4._bits(w[n].mins)) for n in names)
    works = tuple(q4.activation_buffers(1, K, block) for K in (C, H * hd, inter))
    outs = tuple(np.empty((1, w[n].packed.shape[0] * q4.ROWS), np.float32) for n in names)
    norms = (np.ascontiguousarray(w["input_layernorm"], np.float32),
             np.ascontiguousarray(w["post_attention_layernorm"], np.float32))
    size = max(w[n].packed.size for n in names) // q4.WEIGHT_BYTES_PER_ELEMENT  # as q4_matmul
    return norms, weights, works, outs, (H, KV, hd, inter), size


# layer_arguments, found once per layer, by the layer's qkv weight; gone with its model
_ARGUMENTS = weakref.WeakKeyDictionary()


def _arguments_of(w, config):
    qkv = w.get("qkv_proj")
    try:
        return _ARGUMENTS[qkv]
    except (KeyError, TypeError):             # not yet seen, or not a weight a weakref can hold
        if not isinstance(qkv, Q4Weight):
            return None
        _ARGUMENTS[qkv] = found = layer_arguments(w, config)
        return found


def _token_arguments(x, call):
    """What every layer's call of _decode_layer shares in one decoding step (eps, cos, sin,
    position, allowed, scale, the product kernel), or None when this path does not apply: not one
    token of one row, no 8-bit cache, or a mask other than one row of keys. Worked out at the
    first layer and kept in call.shared: the steps between two layers' kernels are then short
    enough (~30 us) that Numba's threads are still spinning, not asleep, when the next starts."""
    from tinyphi3.quant.kv8 import Int8KVCache
    cache = call.cache
    if (x.shape[0] != 1 or x.shape[1] != 1 or not isinstance(cache, Int8KVCache)
            or call.flash is not None or call.mask is None or call.mask.shape[1] != 1
            or call.sparse is not None):
        return None
    position = cache.length
    allowed = np.ascontiguousarray(call.mask[:, 0, 0])                # bool [1, S]
    if allowed.shape[1] != position + 1:
        return None
    return (float(call.config.norm_eps), np.ascontiguousarray(call.cos),
            np.ascontiguousarray(call.sin), position, allowed,
            np.float32(call.config.attention_scale), q4._VNNI)


def fused_decode_layer(x, w, call, layer):
    """One token through phi-3's layer `layer` (tinyphi3.models.phi3.decoder_layer) in one call:
    x float32 [1, 1, C] -> [1, 1, C], its key and value written into the call's 8-bit cache at
    its length (which `advance` moves on afterwards). None when this path does not apply (see
    _token_arguments; or not 4-bit weights)."""
    shared = call.shared
    if "decode" not in shared:
        shared["decode"] = _token_arguments(x, call)
    token = shared["decode"]
    if token is None:
        return None
    arguments = _arguments_of(w, call.config)
    if arguments is None:
        return None
    norms, weights, works, outs, sizes, size = arguments
    eps, cos, sin, position, allowed, scale, vnni = token
    cache = call.cache
    cache._make_room(layer, position + 1)
    buffers = (cache._keys[layer], cache._key_scales[layer], cache._values[layer],
               cache._value_scales[layer])
    with threads_for(size):                   # small layers on one thread, as q4_matmul's
        out = _decode_layer(np.ascontiguousarray(x.reshape(1, -1)), norms, eps, weights, works,
                            outs, sizes, cos, sin, buffers, position, allowed, scale, vnni)
    return out.reshape(x.shape)
