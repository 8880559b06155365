"""The parts of phi-3-small that differ from phi-3-mini: the variant "phi3small".

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
1e6 and positions times rope_position_scale.

phi-3-small-128K adds LongRoPE as phi-3-mini-128K has it (tinyphi3.nn.rope): one factor set for
the whole sequence, `long_factor` once it is longer than L0 = original_max_position_embeddings,
`short_factor` up to L0, inv_freq[i] = 1 / (factor[i] * base^(2i/hd)). Only the magnitude on
cos and sin differs (Phi3Config.longrope_magnitude): one for each set, and 1 at short lengths
unless the config gives one.

μP (Tensor Programs IV and V: Yang & Hu 2021, Yang et al. 2022) is the three width factors
above: the embedding multiplier, the 1/d attention scale and the division of the logits. The
initialisation (`init_std`) is not μP: `down_proj` starts at initializer_range / sqrt(2 *
layers), GPT-2's and Megatron-LM's scaled residual projection, as the published `_init_weights`
draws it.

The module has the functions of every variant (tinyphi3.models.phi3 lists them);
tinyphi3.models.model.Phi3 calls them for model_type "phi3small". Shape letters as in
tinyphi3/config.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from tinyphi3.nn.arrays import like
from tinyphi3.nn.attention import attention
from tinyphi3.nn.autograd import Tensor
from tinyphi3.nn.blocksparse import (blocksparse_attention, blocksparse_layout,
                                     blocksparse_padded_mask)
from tinyphi3.nn.layers import geglu_mlp, layer_norm
from tinyphi3.nn.rope import apply_rope


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
    """The std of a matrix's normal(0, std) initialisation: initializer_range (0.02), except
    `mlp.down_proj.weight` at initializer_range / sqrt(2 * layers).

    The scaled one is GPT-2's and Megatron-LM's residual initialisation (two branches per layer
    add up along the depth), not μP. `Phi3SmallPreTrainedModel._init_weights`
    (modeling_phi3_small.py) draws again, at that std, every parameter whose name contains
    "c_proj.weight", "down_proj.weight" or "o_proj.weight". Its comment means the attention
    output projection as well, but phi-3-small names that one `self_attn.dense`, which matches
    none of the three: the published code scales `down_proj` only, and so does this function.
    Norm gains start at 1 and biases at 0 (tinyphi3.models.weights.init_parameters)."""
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


def prepare(config, key_valid, num_queries) -> BlockSparseCall:
    """The layout and padded mask that the block-sparse layers of one call share."""
    return BlockSparseCall.for_config(config, key_valid, num_queries)


def scale_embeddings(x, config):
    """μP: the embeddings times mup_embedding_multiplier (10 in phi-3-small), when set."""
    if config.mup_embedding_multiplier:
        x = x * np.float32(config.mup_embedding_multiplier)
    return x


def blocksparse_self_attention(q, k, v, call: BlockSparseCall, scale):
    """Block-sparse attention of one layer: q [B, H, T, hd]; k, v [B, KV, S, hd] -> [B, H, T, hd].

    Training (Tensors) and rows with padding run dense attention under the per-head mask, which
    autograd differentiates and which counts each row's own tokens; otherwise
    tinyphi3.nn.blocksparse.blocksparse_attention, which visits only the active blocks on a
    backend with block-sparse kernels.
    """
    if isinstance(q, Tensor) or not call.key_valid.all():
        return attention(q, k, v, like(call.padded_mask, q), scale)
    return blocksparse_attention(q, k, v, call.layout, call.block_size, scale, call.past)


def self_attention(x, w, call, layer):
    """Grouped-qkv attention of one layer, block-sparse or dense: [B, T, C] -> [B, T, C]."""
    B, T, _ = x.shape
    c = call.config
    H, hd = c.num_attention_heads, c.head_dim
    qkv = call.linear(x, w["query_key_value"], w["query_key_value.bias"])
    q, k, v = split_grouped_qkv(qkv, c)                              # -> 3 x [B, *, T, hd]
    q, k = apply_rope(q, call.cos, call.sin), apply_rope(k, call.cos, call.sin)
    if c.uses_blocksparse(layer):
        if call.cache is not None:
            k, v = call.cache.update(layer, k, v)                    # -> [B, KV, S, hd]
            k, v = call.cache.as_float(k), call.cache.as_float(v)
        out = blocksparse_self_attention(q, k, v, call.sparse, c.attention_scale)
    else:
        out = call.attend(q, k, v, layer)                            # -> [B, H, T, hd]
    out = out.transpose(0, 2, 1, 3).reshape(B, T, H * hd)            # -> [B, T, H*hd]
    return call.linear(out, w["dense"], w["dense.bias"])             # -> [B, T, C]


def decoder_layer(x, w, call, layer):
    """One pre-LayerNorm block: [B, T, C] -> [B, T, C]."""
    eps = call.config.norm_eps
    h = x + self_attention(layer_norm(x, w["input_layernorm"], w["input_layernorm.bias"], eps),
                           w, call, layer)
    normed = layer_norm(h, w["post_attention_layernorm"], w["post_attention_layernorm.bias"], eps)
    return h + geglu_mlp(normed, w["up_proj"], w["up_proj.bias"], w["down_proj"],
                         w["down_proj.bias"], call.config.gegelu_limit, linear=call.linear)


def lm_head(x, w, call):
    """Final LayerNorm and the tied head: [B, T, C] -> logits [B, T, V]; μP divides the logits by
    mup_width_multiplier; the dummy rows of the vocabulary get the float32 minimum."""
    c = call.config
    x = layer_norm(x, w["model.final_layernorm.weight"], w["model.final_layernorm.bias"],
                   c.norm_eps)
    head = w["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]
    logits = call.linear(x, head)                                    # [B, T, C] -> [B, T, V]
    if c.mup_width_multiplier:
        logits = logits / np.float32(c.mup_width_multiplier)
    if c.dummy_token_ids:
        logits = mask_dummy_logits(logits, c.dummy_token_ids)
    return logits


def mask_dummy_logits(logits, dummy_ids):
    """Set the logits of the dummy vocabulary rows to the float32 minimum (the published model
    fills them with its dtype's minimum), so that no sampler picks them and they add nothing to
    a softmax. Written as arithmetic so that autograd passes a zero gradient to those rows."""
    dummy = np.zeros(logits.shape[-1], dtype=bool)
    dummy[list(dummy_ids)] = True
    fill = np.where(dummy, np.finfo(np.float32).min, 0.0).astype(np.float32)    # [V]
    return logits * like(~dummy, logits) + like(fill, logits)
