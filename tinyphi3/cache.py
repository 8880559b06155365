"""The key/value cache that makes decoding incremental.

At step t a decoder only needs the keys and values of tokens 0..t-1, which never change once
computed; keeping them turns each new token into O(t) work instead of a forward pass over all t.
"""

import numpy as np


class KVCache:
    """Keys and values of every layer, plus what is needed to continue a batch of sequences.

    keys/values of layer l: [B, KV, S, hd] (views into buffers that grow by doubling);
    key_valid: bool [B, S], False where a row was padded; next_position: [B] position id of each
    row's next token; long_rope: which LongRoPE factor set the cached keys were rotated with.
    """

    def __init__(self, num_layers, batch_size, num_kv_heads, head_dim, dtype=np.float32):
        self.num_layers = num_layers
        self.length = 0
        self._shape = (batch_size, num_kv_heads, 0, head_dim)
        self._keys = [np.zeros(self._shape, dtype) for _ in range(num_layers)]
        self._values = [np.zeros(self._shape, dtype) for _ in range(num_layers)]
        self.key_valid = np.zeros((batch_size, 0), dtype=bool)
        self.next_position = np.zeros(batch_size, dtype=np.int64)
        self.long_rope = None

    @property
    def batch_size(self):
        return self._shape[0]

    def update(self, layer, k, v):
        """Write this call's keys/values [B, KV, T, hd] after the cached ones; return all of them
        [B, KV, length + T, hd]. `advance` must follow once every layer has been updated."""
        T = k.shape[2]
        end = self.length + T
        if end > self._keys[layer].shape[2]:
            self._keys[layer] = self._grown(self._keys[layer], end)
            self._values[layer] = self._grown(self._values[layer], end)
        self._keys[layer][:, :, self.length:end] = k
        self._values[layer][:, :, self.length:end] = v
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

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
        per_layer = 2 * B * KV * self.length * hd * self._keys[0].itemsize
        return per_layer * self.num_layers
