"""The key/value cache that makes decoding incremental.

At step t a decoder only needs the keys and values of tokens 0..t-1, which never change once
computed; keeping them turns each new token into O(t) work instead of a forward pass over all t.

This cache keeps them in float32. tinyphi3.quant.kv8 keeps them in 8 bits for 4-bit models (a
subclass of this one): the model chooses which when it loads its weights (`Phi3.new_cache`), and
the attention of a layer with a cache goes through the cache (`KVCache.attention`), which knows
how its keys are stored.
"""

import mmap

import numpy as np

from tinyphi3.nn.arrays import array_module
from tinyphi3.nn.attention import attention


def lazy_zeros(shape, dtype, xp=np):
    """Zeros that take memory only where they are written: in NumPy, an array of a megabyte or
    more lies on an anonymous memory mapping, whose pages the OS hands out (zeroed) on first
    touch. A cache sized for the prompt and every token still to come then costs, at any moment,
    only the positions filled so far (and is unmapped when the cache goes). Other array modules,
    and small arrays, get plain zeros."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if xp is not np or nbytes < 1 << 20:
        return xp.zeros(shape, dtype)
    return np.ndarray(shape, dtype, buffer=mmap.mmap(-1, nbytes))   # views' .base: this array


class KVCache:
    """Keys and values of every layer, plus what is needed to continue a batch of sequences.

    keys/values of layer l: [B, KV, S, hd] (views into buffers that grow by doubling), in the
    array module `xp` of the model's weights (NumPy, or CuPy on a GPU);
    key_valid: bool [B, S], False where a row was padded; next_position: [B] position id of each
    row's next token; long_rope: which LongRoPE factor set the cached keys were rotated with.
    (These three are bookkeeping, kept in NumPy.)
    """

    dtype = np.float32

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, capacity=0, xp=np):
        """capacity: positions to allocate at once (say, prompt + new tokens); they take memory
        as they fill (lazy_zeros). Beyond it the buffers double."""
        self.num_layers = num_layers
        self.length = 0
        self._shape = (batch_size, num_kv_heads, 0, head_dim)
        buffer = (batch_size, num_kv_heads, capacity, head_dim)
        self._keys = [lazy_zeros(buffer, self.dtype, xp) for _ in range(num_layers)]
        self._values = [lazy_zeros(buffer, self.dtype, xp) for _ in range(num_layers)]
        self.key_valid = np.zeros((batch_size, 0), dtype=bool)
        self.next_position = np.zeros(batch_size, dtype=np.int64)
        self.long_rope = None

    @property
    def batch_size(self):
        return self._shape[0]

    def _buffers(self, layer):
        """The buffers of one layer that grow with the sequence (keys, values)."""
        return [self._keys, self._values]

    def _make_room(self, layer, end):
        if end > self._keys[layer].shape[2]:
            for buffers in self._buffers(layer):
                buffers[layer] = self._grown(buffers[layer], end)

    def update(self, layer, k, v):
        """Write this call's keys/values [B, KV, T, hd] after the cached ones; return all of them
        [B, KV, length + T, hd]. `advance` must follow once every layer has been updated."""
        end = self.length + k.shape[2]
        self._make_room(layer, end)
        self._keys[layer][:, :, self.length:end] = k
        self._values[layer][:, :, self.length:end] = v
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

    def as_float(self, kv):
        """What `update` returned, as float32 [B, KV, S, hd] (it already is, here)."""
        return kv

    def attention(self, q, keys, values, mask, scale):
        """Attention of q [B, H, T, hd] over what `update` returned (tinyphi3.nn.attention)."""
        return attention(q, keys, values, mask, scale)

    def _grown(self, buffer, needed):
        capacity = max(needed, 2 * buffer.shape[2], 16)
        xp = array_module(buffer)
        bigger = lazy_zeros(buffer.shape[:2] + (capacity,) + buffer.shape[3:], buffer.dtype, xp)
        bigger[:, :, :self.length] = buffer[:, :, :self.length]
        return bigger

    def advance(self, valid, positions, long_rope):
        """Record a finished forward call: valid bool [B, T], positions [B, T]."""
        self.length += valid.shape[1]
        self.key_valid = np.concatenate([self.key_valid, valid], axis=1)
        last = np.where(valid, positions, -1).max(axis=1)              # [B]
        self.next_position = np.where(last >= 0, last + 1, self.next_position)
        self.long_rope = long_rope

    def bytes_per_vector(self):
        """Bytes one cached key (or value) vector takes."""
        return self._shape[3] * np.dtype(self.dtype).itemsize

    def nbytes(self):
        """Bytes held by the cached keys and values (used part only)."""
        B, KV, _, _ = self._shape
        return 2 * B * KV * self.length * self.bytes_per_vector() * self.num_layers
