"""The 8-bit KV cache of 4-bit models.

Each key and value vector (one head, one position: hd numbers) is held as int8 levels and one
float32 scale,

    k ~ scale * levels,   levels = rint(k / scale) in -127..127,   scale = max|k| / 127,

hd + 4 bytes instead of 4 hd: phi-3-mini's cache of 4096 tokens takes 0.84 GB instead of 3.2, and
decoding reads about a quarter of the bytes. Its attention reads the levels directly on the numba
backend (one query, the decoding step) and dequantizes for the reference.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.inference.cache import KVCache
from tinyphi3.nn.arrays import array_module
from tinyphi3.nn.attention import attention

LEVELS = 127
HEADS_AT_ONCE = 4             # key/value heads per step of a prompt chunk's attention


class QuantizedKV:
    """Keys or values of a layer held in 8 bits: levels int8 [B, KV, S, hd] and scales float32
    [B, KV, S], one per vector (views into the cache's buffers)."""

    def __init__(self, levels, scales):
        self.levels = levels
        self.scales = scales

    @property
    def shape(self):
        return self.levels.shape

    def dequantize(self):
        """float32 [B, KV, S, hd]."""
        return self.levels.astype(np.float32) * self.scales[..., None]


def quantize_vectors(x):
    """x float32 [..., hd] -> (levels int8 [..., hd], scales float32 [...]), per vector."""
    kernel = backends.kernel("quantize_vectors", x)
    if kernel is not None:
        return kernel(x)
    scales = (np.abs(x).max(axis=-1) / np.float32(LEVELS)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[..., None]
    return np.clip(np.rint(x / safe), -LEVELS, LEVELS).astype(np.int8), scales


class Int8KVCache(KVCache):
    """A KVCache whose keys and values are QuantizedKV: int8 levels [B, KV, S, hd] and float32
    scales [B, KV, S] per layer."""

    dtype = np.int8

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, capacity=0, xp=np):
        super().__init__(num_layers, batch_size, num_kv_heads, head_dim, capacity, xp)
        scales = (batch_size, num_kv_heads, capacity)
        self._key_scales = [xp.zeros(scales, np.float32) for _ in range(num_layers)]
        self._value_scales = [xp.zeros(scales, np.float32) for _ in range(num_layers)]

    def _buffers(self, layer):
        return [self._keys, self._values, self._key_scales, self._value_scales]

    def update(self, layer, k, v):
        """As KVCache.update, each vector rounded to 8 bits; returns two QuantizedKV."""
        end = self.length + k.shape[2]
        self._make_room(layer, end)
        kept = []
        for x, levels, scales in ((k, self._keys[layer], self._key_scales[layer]),
                                  (v, self._values[layer], self._value_scales[layer])):
            levels[:, :, self.length:end], scales[:, :, self.length:end] = quantize_vectors(x)
            kept.append(QuantizedKV(levels[:, :, :end], scales[:, :, :end]))
        return tuple(kept)

    def as_float(self, kv):
        return kv.dequantize()

    def attention(self, q, keys, values, mask, scale):
        return int8_attention(q, keys, values, mask, scale)

    def bytes_per_vector(self):
        return self._shape[3] + 4                          # hd levels and a float32 scale


def int8_attention(q, keys: QuantizedKV, values: QuantizedKV, mask, scale):
    """tinyphi3.nn.attention over 8-bit keys and values: q [B, H, T, hd] -> [B, H, T, hd]. One
    query (the decoding step) runs the numba kernel, which reads the levels directly; otherwise
    the reference dequantizes them first, HEADS_AT_ONCE key/value heads (and their query heads)
    at a time, so that a prompt chunk holds those heads' float keys, values and scores rather than
    every head's (phi-3-mini, 256 queries over 512 keys: 2 MB of scores instead of 17; one head at
    a time took 4-5% longer to fill a 512-token prompt, in Python between the calls)."""
    if q.shape[2] == 1 and mask.shape[1] == 1:
        kernel = backends.kernel("int8_attention_decode", q)
        if kernel is not None:
            return kernel(q, keys, values, mask[:, 0, 0], scale)
    B, H, T, _ = q.shape
    KV = keys.shape[1]
    g = H // KV
    out = array_module(q).empty((B, H, T, values.shape[-1]), q.dtype)
    for first in range(0, KV, HEADS_AT_ONCE):
        kv = slice(first, first + HEADS_AT_ONCE)                 # these key/value heads
        heads = slice(first * g, (first + HEADS_AT_ONCE) * g)    # and their query heads
        head_mask = mask if mask.shape[1] == 1 else mask[:, heads]
        k, v = (QuantizedKV(x.levels[:, kv], x.scales[:, kv]).dequantize()
                for x in (keys, values))                         # -> [B, n, S, hd]
        out[:, heads] = attention(q[:, heads], k, v, head_mask, scale)
    return out
