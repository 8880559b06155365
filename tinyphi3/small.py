"""The parts of phi-3-small that differ from phi-3-mini; the rest is tinyphi3.model's code.

    x = embed_tokens[ids] * mup_embedding_multiplier                  μP
    for each layer i:
        q, k, v = split_grouped_qkv(query_key_value(layernorm(x)))    [q_0..q_g-1, k, v] per group
        h = x + dense(attention(rope(q), rope(k), v))                 block-sparse, or dense when
                                                                      (i + 1) % n_dense == 0
        x = h + down_proj(gegelu(up_proj(layernorm(h))))              every linear has a bias
    logits = embed_tokens(final_layernorm(x)) / mup_width_multiplier  tied head, μP
    logits[dummy ids] = float32 minimum

Attention scores are scaled by 1/(hd / mup_attn_multiplier) (μP's 1/d, not 1/sqrt(d)). RoPE is
phi-3-mini's rotate-half form, dimension i paired with i + hd/2 (the published
positional_embedding.py builds cos and sin from cat(freqs, freqs) and rotates halves), with base
1e6 and positions times rope_position_scale. The configuration (tinyphi3.config, model_type
"phi3small") says which of these apply; tinyphi3.model calls the functions here where the variant
asks for them. Shape letters as in tinyphi3/config.py.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import kernels
from .attention import attention
from .autograd import Tensor
from .blocksparse import blocksparse_attention, blocksparse_layout


def parameter_shapes(config) -> dict:
    """Every tensor of phi-3-small, by its published name; linears [out, in] with a bias each."""
    C, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    hd, H, KV = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        modules = {"input_layernorm": None, "self_attn.query_key_value": ((H + 2 * KV) * hd, C),
                   "self_attn.dense": (C, H * hd), "post_attention_layernorm": None,
                   "mlp.up_proj": (2 * I, C), "mlp.down_proj": (C, I)}
        for name, shape in modules.items():
            shapes[p + name + ".weight"] = shape or (C,)      # norms: a gain per channel
            shapes[p + name + ".bias"] = (shape or (C,))[:1]
    shapes["model.final_layernorm.weight"] = (C,)
    shapes["model.final_layernorm.bias"] = (C,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_std(name, config) -> float:
    """μP's initialisation: normal(0, initializer_range) for every matrix, except `down_proj`,
    whose std is initializer_range / sqrt(2 * layers) (the published `_init_weights`: two residual
    branches per layer add up). Norm gains start at 1, biases at 0 (not drawn)."""
    if name.endswith("down_proj.weight"):
        return config.initializer_range / math.sqrt(2 * config.num_hidden_layers)
    return config.initializer_range


def split_grouped_qkv(qkv, config):
    """Split the fused projection, laid out per KV head: [q_0 .. q_{g-1}, k, v] for each group.

    [B, T, (H + 2KV) hd] -> q [B, H, T, hd], k and v [B, KV, T, hd]; query head kv*g + j is the
    j-th query of group kv, so query head h reads KV head h // g as in tinyphi3.attention.
    """
    B, T, _ = qkv.shape
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    g = H // KV
    qkv = qkv.reshape(B, T, KV, g + 2, hd)                     # -> [B, T, KV, g + 2, hd]
    q = qkv[:, :, :, :g].reshape(B, T, H, hd).transpose(0, 2, 1, 3)    # -> [B, H, T, hd]
    k = qkv[:, :, :, g].transpose(0, 2, 1, 3)                  # [B, T, KV, hd] -> [B, KV, T, hd]
    v = qkv[:, :, :, g + 1].transpose(0, 2, 1, 3)              # [B, T, KV, hd] -> [B, KV, T, hd]
    return q, k, v


def blocksparse_padded_mask(layout, block_size, key_valid, num_queries):
    """Which keys each query may see, per head, when rows may be left-padded: bool [B, H, T, S].

    Blocks count each row's own tokens: a token's rank r (its index among the row's real tokens,
    padding skipped) puts it in block r // block_size. Query of rank p sees key of rank r when
    layout[h, p // B, r // B] and r <= p, and the key is not padding. The queries are the last T
    of the S keys. Without padding, rank = index and this is tinyphi3.blocksparse_mask.
    """
    rank = np.cumsum(key_valid, axis=1) - 1                   # [B, S]; -1 before the first token
    query_rank = rank[:, -num_queries:]                       # [B, T]
    query_block = np.maximum(query_rank, 0)[:, :, None] // block_size    # [B, T, 1]
    key_block = np.maximum(rank, 0)[:, None, :] // block_size            # [B, 1, S]
    active = layout[:, query_block, key_block]                # [H, NB, NB] -> [H, B, T, S]
    causal = (rank[:, None, :] <= query_rank[:, :, None]) & key_valid[:, None, :]   # [B, T, S]
    return active.transpose(1, 0, 2, 3) & causal[:, None]     # -> [B, H, T, S]


@dataclass
class BlockSparseCall:
    """What the block-sparse layers of one forward call share.

    layout: bool [H, NB, NB] over enough blocks for all S keys; key_valid: bool [B, S], False at
    padding; num_queries: T, this call's tokens, the last T of the S keys (the first S - T, `past`,
    come from the cache).
    """
    layout: np.ndarray
    block_size: int
    key_valid: np.ndarray
    num_queries: int

    @classmethod
    def for_config(cls, config, key_valid, num_queries):
        block_size = config.blocksparse_block_size
        num_blocks = -(-key_valid.shape[1] // block_size)      # ceil(S / block_size)
        layout = blocksparse_layout(config.num_attention_heads, num_blocks,
                                    config.blocksparse_num_local_blocks,
                                    config.blocksparse_vert_stride,
                                    config.blocksparse_homo_head_pattern)
        return cls(layout, block_size, key_valid, num_queries)

    @property
    def past(self) -> int:
        return self.key_valid.shape[1] - self.num_queries

    @functools.cached_property
    def padded_mask(self):
        """bool [B, H, T, S], built once per call and shared by the block-sparse layers."""
        return blocksparse_padded_mask(self.layout, self.block_size, self.key_valid,
                                       self.num_queries)


def blocksparse_self_attention(q, k, v, call: BlockSparseCall, scale):
    """Block-sparse attention of one layer: q [B, H, T, hd]; k, v [B, KV, S, hd] -> [B, H, T, hd].

    Three forms of the same function, chosen by what the call needs:
    - training (Tensors) or padded rows: dense attention under the per-head mask, which autograd
      differentiates (tinyphi3.attention);
    - float32 inference on the numba backend: the kernels, which visit only the active blocks
      (prefill for T queries, decode for one new token after a cache);
    - otherwise the NumPy reference, tinyphi3.blocksparse.blocksparse_attention.
    """
    if isinstance(q, Tensor) or not call.key_valid.all():
        return attention(q, k, v, call.padded_mask, scale)
    if kernels.fast(q, k, v):
        from .kernels.blocksparse import blocksparse_decode, blocksparse_prefill
        if q.shape[2] == 1 and call.past > 0:
            return blocksparse_decode(q, k, v, call.layout, call.block_size, scale, call.past + 1)
        return blocksparse_prefill(q, k, v, call.layout, call.block_size, scale, call.past)
    return blocksparse_attention(q, k, v, call.layout, call.block_size, scale, call.past)


def mask_dummy_logits(logits, dummy_ids):
    """Set the logits of the dummy vocabulary rows to the float32 minimum (the published model
    fills them with its dtype's minimum), so that no sampler picks them and they add nothing to
    a softmax. Written as arithmetic so that autograd passes a zero gradient to those rows."""
    dummy = np.zeros(logits.shape[-1], dtype=bool)
    dummy[list(dummy_ids)] = True
    fill = np.where(dummy, np.finfo(np.float32).min, 0.0).astype(np.float32)    # [V]
    return logits * ~dummy + fill
