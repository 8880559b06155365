"""An independent torch implementation of phi-3-small's forward pass, for the parity tests.

phi-3-small is not in transformers, so the tests compare tinyphi3 with this file instead: plain
torch, written from the published definition (the model repository's modelling, configuration,
positional-embedding and tokenizer code, and the block-sparse layout its kernels use), dense
attention under a block mask built here element by element. Nothing is imported from tinyphi3.

    x = embed(ids) * mup_embedding_multiplier
    per layer i:  x = x + dense(attn(rope(q), rope(k), v)),   q, k, v from query_key_value(ln(x))
                  x = x + down_proj(gegelu(up_proj(ln(x))))
    logits = (final_ln(x) @ embed^T) / mup_width_multiplier,   dummy ids -> float32 min

With rope_scaling (phi-3-small-128K), RoPE is its LongRoPE (`longrope_tables`): one factor set
and one magnitude for the whole sequence, chosen by its length.
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gegelu(x, limit):
    """Even channels feed the gelu, odd channels the linear term; both clamped (not at inf)."""
    a_gelu, a_linear = x[..., ::2], x[..., 1::2]
    if limit is not None:
        a_gelu = torch.where(torch.isinf(a_gelu), a_gelu, a_gelu.clamp(max=limit))
        a_linear = torch.where(torch.isinf(a_linear), a_linear,
                               a_linear.clamp(min=-limit, max=limit))
    return quick_gelu(a_gelu) * (a_linear + 1)


def rope_tables(seq_len, head_dim, base, position_scale):
    """cos, sin [seq_len, head_dim]: angle t * scale * base^(-2i/d), duplicated (rotate-half)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32) * position_scale
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def longrope_tables(seq_len, head_dim, base, scaling, max_position):
    """cos, sin [seq_len, head_dim] of phi-3-small-128K's LongRoPE, from its definition:

        L0 = scaling["original_max_position_embeddings"]
        seq_len > L0:  factors f = long_factor,  magnitude long_mscale, or when absent
                       sqrt(1 + ln(L / L0) / ln L0) (1 if L <= L0), L = max_position_embeddings
        otherwise:     factors f = short_factor, magnitude short_mscale, or 1 when absent
        angle[t, i] = t / (f[i] * base^(2i/d)),  t = 0 .. seq_len-1 (never position-scaled)
        cos, sin = magnitude * cos(angle), magnitude * sin(angle), duplicated (rotate-half)
    """
    L0 = scaling["original_max_position_embeddings"]
    if seq_len > L0:
        factors, magnitude = scaling["long_factor"], scaling.get("long_mscale")
        if magnitude is None:
            ratio = max_position / L0
            magnitude = 1.0 if ratio <= 1 else math.sqrt(1 + math.log(ratio) / math.log(L0))
    else:
        factors, magnitude = scaling["short_factor"], scaling.get("short_mscale", 1.0)
    wavelength_base = base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    inv_freq = 1.0 / (torch.tensor(factors, dtype=torch.float32) * wavelength_base)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos() * magnitude, angles.sin() * magnitude


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def block_mask(num_heads, seq_len, block_size, local_blocks, vert_stride, homo_head):
    """bool [H, T, T], one query/key pair at a time: query i sees key j when j <= i and j's block
    is one of the last `local_blocks` blocks, or a vertical block of head h:
    (block(j) + h * step + 1) % vert_stride == 0, step = max(1, int(vert_stride / num_heads))."""
    step = max(1, int(vert_stride / num_heads))
    mask = torch.zeros(num_heads, seq_len, seq_len, dtype=torch.bool)
    for h in range(num_heads):
        offset = 0 if homo_head else h * step
        for i in range(seq_len):
            for j in range(i + 1):
                qb, kb = i // block_size, j // block_size
                mask[h, i, j] = qb - kb < local_blocks or (kb + offset + 1) % vert_stride == 0
    return mask


class Phi3SmallReference:
    """Load a directory (config.json + model.safetensors) and compute logits with torch."""

    def __init__(self, directory, dtype=torch.float32):
        directory = Path(directory)
        self.config = json.loads((directory / "config.json").read_text())
        self.params = {name: t.to(dtype).clone().requires_grad_()
                       for name, t in load_file(directory / "model.safetensors").items()}
        self._block_masks = {}

    def block_mask(self, seq_len):
        if seq_len not in self._block_masks:
            c = self.config
            self._block_masks[seq_len] = block_mask(
                c["num_attention_heads"], seq_len, c["blocksparse_block_size"],
                c["blocksparse_num_local_blocks"], c["blocksparse_vert_stride"],
                c.get("blocksparse_homo_head_pattern", False))
        return self._block_masks[seq_len]

    def forward(self, ids, softmax_scale=None):
        """Logits float32 [B, T, V] for ids [B, T] (positions 0 .. T-1, no padding).
        softmax_scale: override the μP scale (for a negative control)."""
        c, p = self.config, self.params
        B, T = ids.shape
        C, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        hd, g, eps = C // H, H // KV, c["layer_norm_epsilon"]
        if softmax_scale is None:
            softmax_scale = (c["mup_attn_multiplier"] / hd if c["mup_use_scaling"]
                             else 1 / math.sqrt(hd))
        x = F.embedding(ids, p["model.embed_tokens.weight"])
        if c.get("mup_embedding_multiplier"):
            x = x * c["mup_embedding_multiplier"]
        if c.get("rope_scaling"):
            cos, sin = longrope_tables(T, hd, c["rope_embedding_base"], c["rope_scaling"],
                                       c["max_position_embeddings"])
        else:
            cos, sin = rope_tables(T, hd, c["rope_embedding_base"],
                                   c.get("rope_position_scale", 1.0))
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for i in range(c["num_hidden_layers"]):
            w = {name[len(f"model.layers.{i}."):]: t for name, t in p.items()
                 if name.startswith(f"model.layers.{i}.")}
            h = F.layer_norm(x, (C,), w["input_layernorm.weight"], w["input_layernorm.bias"], eps)
            qkv = F.linear(h, w["self_attn.query_key_value.weight"],
                           w["self_attn.query_key_value.bias"]).view(B, T, KV, g + 2, hd)
            q = qkv[:, :, :, :g].reshape(B, T, H, hd).transpose(1, 2)      # [B, H, T, hd]
            k = qkv[:, :, :, g].transpose(1, 2)                              # [B, KV, T, hd]
            v = qkv[:, :, :, g + 1].transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
            n = c.get("dense_attention_every_n_layers")
            mask = causal if n and (i + 1) % n == 0 else self.block_mask(T)
            scores = (q @ k.transpose(-1, -2)) * softmax_scale
            scores = scores.masked_fill(~mask, float("-inf"))
            attn = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v     # [B, H, T, hd]
            attn = attn.transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(attn, w["self_attn.dense.weight"], w["self_attn.dense.bias"])
            h = F.layer_norm(x, (C,), w["post_attention_layernorm.weight"],
                             w["post_attention_layernorm.bias"], eps)
            up = F.linear(h, w["mlp.up_proj.weight"], w["mlp.up_proj.bias"])
            x = x + F.linear(gegelu(up, c.get("gegelu_limit")), w["mlp.down_proj.weight"],
                             w["mlp.down_proj.bias"])
        x = F.layer_norm(x, (C,), p["model.final_layernorm.weight"],
                         p["model.final_layernorm.bias"], eps)
        tied = c.get("tie_word_embeddings", True)
        head = p["model.embed_tokens.weight"] if tied else p["lm_head.weight"]
        logits = F.linear(x, head).float()
        if c.get("mup_width_multiplier"):
            logits = logits / c["mup_width_multiplier"]
        dummy = torch.zeros(logits.shape[-1], dtype=torch.bool)
        dummy[c.get("dummy_token_indices", [])] = True
        return logits.masked_fill(dummy, torch.finfo(logits.dtype).min)

    def loss(self, ids, labels):
        """Mean next-token cross-entropy, labels shifted inside, -100 ignored."""
        logits = self.forward(ids)
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
