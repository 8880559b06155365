"""The Phi-3 block of phi-3-mini, mini-128K and medium: the variant "phi3".

    x = embed_tokens[ids]
    for each layer:
        h = x + o_proj(attention(rope(q), rope(k), v))    q, k, v = split(qkv_proj(rmsnorm(x)))
        x = h + down_proj(silu(gate) * up)                gate, up = split(gate_up_proj(rmsnorm(h)))
    logits = lm_head(rmsnorm(x))

A variant is a module with the functions below; tinyphi3.models.model.Phi3 calls them, and
knows no variant by name (tinyphi3.models.variants maps config.json's model_type to the module).
phi3_small is the second variant, phi-3-vision's language model is this one.

    parameter_shapes(config)         every tensor by Hugging Face name ([out, in] for linears)
    init_std(name, config)           the std of a matrix's random initialisation
    prepare(config, key_valid, T)    what the layers of one call share beyond the mask (or None)
    scale_embeddings(x, config)      the token embeddings as the first layer reads them
    decoder_layer(x, w, call, i)     block i: [B, T, C] -> [B, T, C]
    lm_head(x, w, call)              final norm and output projection: [B, T, C] -> [B, T, V]

`w` holds a layer's tensors by short name ('qkv_proj', 'o_proj', ...); `call` is the
ForwardCall (tinyphi3.models.call) with the weight format, RoPE's angles, the mask and the cache.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn.layers import gated_mlp, rms_norm
from tinyphi3.nn.rope import apply_rope


def parameter_shapes(config) -> dict:
    """Every tensor of the model, by Hugging Face name, with its shape [out, in] for linears."""
    C, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    hd, H, KV = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "self_attn.qkv_proj.weight"] = (H * hd + 2 * KV * hd, C)
        shapes[p + "self_attn.o_proj.weight"] = (C, H * hd)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_up_proj.weight"] = (2 * I, C)
        shapes[p + "mlp.down_proj.weight"] = (C, I)
    shapes["model.norm.weight"] = (C,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_std(name, config) -> float:
    """normal(0, initializer_range) for every matrix."""
    return config.initializer_range


def prepare(config, key_valid, num_queries):
    """Nothing beyond the mask: every layer is dense."""
    return None


def scale_embeddings(x, config):
    return x


def split_qkv(qkv, config):
    """Split phi-3's fused projection, laid out [all q | all k | all v]:
    [B, T, (H + 2KV) hd] -> q [B, H, T, hd], k and v [B, KV, T, hd]."""
    B, T, _ = qkv.shape
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q, k, v = np.split(qkv, [H * hd, (H + KV) * hd], axis=-1)        # q, then k, then v
    q = q.reshape(B, T, H, hd).transpose(0, 2, 1, 3)                 # -> [B, H, T, hd]
    k = k.reshape(B, T, KV, hd).transpose(0, 2, 1, 3)                # -> [B, KV, T, hd]
    v = v.reshape(B, T, KV, hd).transpose(0, 2, 1, 3)                # -> [B, KV, T, hd]
    return q, k, v


def self_attention(x, w, call, layer):
    """Fused-qkv attention of one layer: [B, T, C] -> [B, T, C]."""
    B, T, _ = x.shape
    H, hd = call.config.num_attention_heads, call.config.head_dim
    q, k, v = split_qkv(call.linear(x, w["qkv_proj"]), call.config)  # -> 3 x [B, *, T, hd]
    q, k = apply_rope(q, call.cos, call.sin), apply_rope(k, call.cos, call.sin)
    out = call.attend(q, k, v, layer)                                # -> [B, H, T, hd]
    out = out.transpose(0, 2, 1, 3).reshape(B, T, H * hd)            # -> [B, T, H*hd]
    return call.linear(out, w["o_proj"])                             # -> [B, T, C]


def decoder_layer(x, w, call, layer):
    """One pre-norm Phi-3 block with two residual branches: [B, T, C] -> [B, T, C]. (A backend
    may compute a decoding step of 4-bit weights in one call: the same block, the same kernels,
    without Python between them; tinyphi3/backends/numba/decode.py.)"""
    shared = call.shared                     # found at the first layer, for all of them
    if "q4_decode_layer" not in shared:
        shared["q4_decode_layer"] = backends.kernel("q4_decode_layer", x)
    fused = shared["q4_decode_layer"]
    if fused is not None:
        out = fused(x, w, call, layer)
        if out is not None:
            return out
    eps = call.config.norm_eps
    h = x + self_attention(rms_norm(x, w["input_layernorm"], eps), w, call, layer)
    return h + gated_mlp(rms_norm(h, w["post_attention_layernorm"], eps), w["gate_up_proj"],
                         w["down_proj"], linear=call.linear)


def lm_head(x, w, call):
    """Final RMSNorm and output projection: [B, T, C] -> logits [B, T, V]."""
    c = call.config
    x = rms_norm(x, w["model.norm.weight"], c.norm_eps)
    head = w["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]
    return call.linear(x, head)                                      # [B, T, C] -> [B, T, V]
