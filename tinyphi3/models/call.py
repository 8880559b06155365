"""What the layers of one forward call share: the weight format, RoPE's angles, the mask, the cache.

A storage format of the weights (float, or 4-bit blocks) is chosen once, where the model loads
them: it is a WeightFormat, whose `linear` and `embedding` the layers call. The maths in
tinyphi3.nn sees float arrays only; tinyphi3.quant.q4 brings the 4-bit format.
"""

from dataclasses import dataclass, field
from typing import Callable

from tinyphi3.config import Phi3Config
from tinyphi3.nn.attention import attention
from tinyphi3.nn.flash_attention import flash_attention


@dataclass(frozen=True)
class WeightFormat:
    """How the layers multiply by their weights.

    linear(x, weight, bias=None): [..., in] -> [..., out];
    embedding(ids, table): [B, T] -> [B, T, C]
    """
    name: str
    linear: Callable
    embedding: Callable


@dataclass
class ForwardCall:
    """One forward call, as every layer sees it.

    cos, sin: [B, T, rd] RoPE's angles; mask: bool [B, 1, T, S], which keys each query sees;
    cache: a KVCache (tinyphi3.inference.cache) or None; sparse: what phi-3-small's block-sparse
    layers share (tinyphi3.models.phi3_small.BlockSparseCall), None for phi3; flash: the mask's
    structure for tiled attention (flash_attention's keyword arguments), None for dense;
    shared: what a kernel works out once per call for every layer (the fused decoding step of
    tinyphi3/backends/numba/decode.py keeps its per-token arguments there).
    """
    config: Phi3Config
    weights: WeightFormat
    cos: object
    sin: object
    mask: object
    cache: object = None
    sparse: object = None
    flash: dict | None = None
    shared: dict = field(default_factory=dict)

    def linear(self, x, weight, bias=None):
        return self.weights.linear(x, weight, bias)

    def attend(self, q, k, v, layer):
        """Dense attention of layer `layer`: q [B, H, T, hd], this call's k, v [B, KV, T, hd]
        -> [B, H, T, hd], over the cached keys too when there is a cache (which then stores k, v
        and knows how it holds them)."""
        scale = self.config.attention_scale
        if self.cache is None and self.flash is not None:
            return flash_attention(q, k, v, scale, **self.flash)        # never [T, S] per head
        if self.cache is None:
            return attention(q, k, v, self.mask, scale)
        keys, values = self.cache.update(layer, k, v)               # -> [B, KV, S, hd]
        return self.cache.attention(q, keys, values, self.mask, scale)
