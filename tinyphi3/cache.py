"""The key/value cache that makes decoding incremental.

At step t a decoder only needs the keys and values of tokens 0..t-1, which never change once
computed; keeping them turns each new token into O(t) work instead of a forward pass over all t.

A float model keeps them in float32. A 4-bit model keeps them in 8 bits (dtype int8): each key
and value vector (one head, one position: hd numbers) as int8 levels and one float32 scale,

    k ~ scale * levels,   levels = rint(k / scale) in -127..127,   scale = max|k| / 127,

hd + 4 bytes instead of 4 hd: phi-3-mini's cache of 4096 tokens takes 0.84 GB instead of 3.2.
"""

import numpy as np

from . import kernels

LEVELS = 127


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
    """x float32 [..., hd] -> (levels int8 [..., hd], scales float32 [...]), per vector (the
    numba backend runs the same in one kernel)."""
    if kernels.fast(x):
        return kernels.q4().quantize_vectors(x)
    scales = (np.abs(x).max(axis=-1) / np.float32(LEVELS)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[..., None]
    return np.clip(np.rint(x / safe), -LEVELS, LEVELS).astype(np.int8), scales


def as_float(kv):
    """Cached keys or values as float32 arrays, whichever way they are held."""
    return kv.dequantize() if isinstance(kv, QuantizedKV) else kv


class KVCache:
    """Keys and values of every layer, plus what is needed to continue a batch of sequences.

    keys/values of layer l: [B, KV, S, hd] (views into buffers that grow by doubling), and for
    an int8 cache their scales [B, KV, S];
    key_valid: bool [B, S], False where a row was padded; next_position: [B] position id of each
    row's next token; long_rope: which LongRoPE factor set the cached keys were rotated with.
    """

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, dtype=np.float32,
                 capacity=0):
        """capacity: positions to allocate at once (say, prompt + new tokens). Beyond it the
        buffers double, and a doubled buffer is mostly touched memory: its positions are
        interleaved with the heads', and large arrays sit on 2 MB pages."""
        self.num_layers = num_layers
        self.length = 0
        self._shape = (batch_size, num_kv_heads, 0, head_dim)
        buffer = (batch_size, num_kv_heads, capacity, head_dim)
        self._keys = [np.zeros(buffer, dtype) for _ in range(num_layers)]
        self._values = [np.zeros(buffer, dtype) for _ in range(num_layers)]
        self.quantized = np.dtype(dtype) == np.int8
        scales = buffer[:3] if self.quantized else (0, 0, 0)
        self._key_scales = [np.zeros(scales, np.float32) for _ in range(num_layers)]
        self._value_scales = [np.zeros(scales, np.float32) for _ in range(num_layers)]
        self.key_valid = np.zeros((batch_size, 0), dtype=bool)
        self.next_position = np.zeros(batch_size, dtype=np.int64)
        self.long_rope = None

    @property
    def batch_size(self):
        return self._shape[0]

    def update(self, layer, k, v):
        """Write this call's keys/values [B, KV, T, hd] after the cached ones; return all of them
        [B, KV, length + T, hd] (as QuantizedKV in an int8 cache). `advance` must follow once
        every layer has been updated."""
        T = k.shape[2]
        end = self.length + T
        if end > self._keys[layer].shape[2]:
            groups = [self._keys, self._values]
            groups += [self._key_scales, self._value_scales] if self.quantized else []
            for buffers in groups:
                buffers[layer] = self._grown(buffers[layer], end)
        if not self.quantized:
            self._keys[layer][:, :, self.length:end] = k
            self._values[layer][:, :, self.length:end] = v
            return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]
        kept = []
        for x, levels, scales in ((k, self._keys[layer], self._key_scales[layer]),
                                  (v, self._values[layer], self._value_scales[layer])):
            levels[:, :, self.length:end], scales[:, :, self.length:end] = quantize_vectors(x)
            kept.append(QuantizedKV(levels[:, :, :end], scales[:, :, :end]))
        return tuple(kept)

    def _grown(self, buffer, needed):
        capacity = max(needed, 2 * buffer.shape[2], 16)
        bigger = np.zeros(buffer.shape[:2] + (capacity,) + buffer.shape[3:], buffer.dtype)
        bigger[:, :, :self.length] = buffer[:, :, :self.length]
        return bigger

    def advance(self, valid, positions, long_rope):
        """Record a finished forward call: valid bool [B, T], positions [B, T]."""
        self.length += valid.shape[1]
        self.key_valid = np.concatenate([self.key_valid, valid], axis=1)
        last = np.where(valid, positions, -1).max(axis=1)              # [B]
        self.next_position = np.where(last >= 0, last + 1, self.next_position)
        self.long_rope = long_rope

    def nbytes(self):
        """Bytes held by the cached keys and values (used part only)."""
        B, KV, _, hd = self._shape
        per_vector = hd * self._keys[0].itemsize + (4 if self.quantized else 0)
        return 2 * B * KV * self.length * per_vector * self.num_layers
