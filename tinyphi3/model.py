"""The Phi-3 decoder (phi-3-mini, mini-128K, medium, small) in NumPy.

    x = embed_tokens[ids]
    for each layer:
        h = x + o_proj(attention(rope(q), rope(k), v))      q, k, v = split(qkv_proj(rmsnorm(x)))
        x = h + down_proj(silu(gate) * up)                  gate, up = split(gate_up_proj(rmsnorm(h)))
    logits = lm_head(rmsnorm(x))

phi-3-small (model_type "phi3small") runs the same code with its own parts where the configuration
asks for them (tinyphi3.small): LayerNorm, a per-group fused qkv, GEGELU, biases, μP's multipliers,
block-sparse attention on most layers, masked dummy logits.

Parameters live in one dict keyed by their Hugging Face tensor names, so the code reads beside the
published implementation and checkpoints load without renaming. The same forward pass serves
inference (plain NumPy arrays, nothing recorded) and training (`model.loss`, which records the
operations on the parameters so that `backward()` can fill their gradients).
"""

import numpy as np

from . import checkpoint, quant_checkpoint, small
from .attention import attention, causal_mask
from .autograd import Parameter, Tensor, enable_grad, is_recording
from .cache import KVCache, as_float
from .config import Phi3Config
from .errors import CheckpointError, InvalidInputError
from .layers import (causal_lm_loss, embedding, gated_mlp, geglu_mlp, layer_norm, linear,
                     rms_norm)
from .rope import apply_rope, rope_cos_sin, rope_frequencies, uses_long_factors


def parameter_shapes(config: Phi3Config) -> dict:
    """Every tensor of the model, by Hugging Face name, with its shape [out, in] for linears."""
    if config.is_phi3small:
        return small.parameter_shapes(config)
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


def init_parameters(config: Phi3Config, seed: int = 0) -> dict:
    """Random weights: normal(0, initializer_range) for matrices, ones for norm gains, zeros for
    biases; phi-3-small scales its `down_proj` down (μP, see small.init_std)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        else:
            std = small.init_std(name, config) if config.is_phi3small else config.initializer_range
            params[name] = (rng.standard_normal(shape, np.float32) * np.float32(std))
    return params


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


def self_attention(x, w, config, cos, sin, mask, cache=None, layer=0, sparse=None):
    """Fused-qkv attention of one layer: [B, T, C] -> [B, T, C].

    mask: bool [B, 1, T, S] for dense layers; `sparse` (a small.BlockSparseCall) for the
    block-sparse layers of phi-3-small, built from `mask`'s keys when not given.
    """
    B, T, _ = x.shape
    H, hd = config.num_attention_heads, config.head_dim
    if config.is_phi3small:                                          # [q_0..q_g-1, k, v] per group
        qkv = linear(x, w["query_key_value"], w["query_key_value.bias"])
        q, k, v = small.split_grouped_qkv(qkv, config)
    else:                                                            # [q | k | v]
        q, k, v = split_qkv(linear(x, w["qkv_proj"]), config)        # -> 3 x [B, *, T, hd]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cache is not None:
        k, v = cache.update(layer, k, v)                             # -> [B, KV, S, hd]
    if config.uses_blocksparse(layer):
        k, v = as_float(k), as_float(v)
        if sparse is None:
            sparse = small.BlockSparseCall.for_config(config, mask.any(axis=(1, 2)), T)
        out = small.blocksparse_self_attention(q, k, v, sparse, config.attention_scale)
    else:
        out = attention(q, k, v, mask, scale=config.attention_scale)    # -> [B, H, T, hd]
    out = out.transpose(0, 2, 1, 3).reshape(B, T, H * hd)            # -> [B, T, H*hd]
    if config.is_phi3small:
        return linear(out, w["dense"], w["dense.bias"])              # -> [B, T, C]
    return linear(out, w["o_proj"])                                  # -> [B, T, C]


def norm(x, w, name, config):
    """The block's normalisation: RMSNorm (phi3), or LayerNorm with a bias (phi3small)."""
    if config.is_phi3small:
        return layer_norm(x, w[name], w[name + ".bias"], config.norm_eps)
    return rms_norm(x, w[name], config.norm_eps)


def mlp(x, w, config):
    """The block's MLP: silu(gate) * up (phi3), or GEGELU between biased projections (phi3small)."""
    if config.is_phi3small:
        return geglu_mlp(x, w["up_proj"], w["up_proj.bias"], w["down_proj"], w["down_proj.bias"],
                         config.gegelu_limit)
    return gated_mlp(x, w["gate_up_proj"], w["down_proj"])


def decoder_layer(x, w, config, cos, sin, mask, cache=None, layer=0, sparse=None):
    """One pre-norm Phi-3 block with two residual branches: [B, T, C] -> [B, T, C]."""
    h = x + self_attention(norm(x, w, "input_layernorm", config),
                           w, config, cos, sin, mask, cache, layer, sparse)
    return h + mlp(norm(h, w, "post_attention_layernorm", config), w, config)


class Phi3:
    """A Phi-3 language model: `Phi3.from_pretrained(dir)`, then `model(ids)` -> logits."""

    def __init__(self, config: Phi3Config, params: dict | None = None, seed: int = 0):
        self.config = config
        params = init_parameters(config, seed) if params is None else params
        self._parameters = {name: Parameter(array) for name, array in params.items()}
        self.quantization = None        # the quantization_config of a 4-bit checkpoint

    def weight_bytes(self) -> int:
        """Bytes the weights take in memory (packed levels and scales for 4-bit ones)."""
        return sum(int(p.data.nbytes) for p in self._parameters.values())

    @property
    def params(self) -> dict:
        """The weights as arrays, by Hugging Face name (the arrays the parameters hold)."""
        return {name: p.data for name, p in self._parameters.items()}

    # ---- checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path) -> "Phi3":
        """Load a Hugging Face directory (config.json + safetensors, single or sharded); the
        variant (phi3, phi3small) comes from config.json's model_type."""
        config = checkpoint.load_config(path)
        qc = quant_checkpoint.quantization_config(path)
        if qc is not None:                                   # 4-bit weights (tinyphi3.quant)
            model = cls(config, quant_checkpoint.load_quantized_tensors(path, config, qc))
            model.quantization = qc
            return model
        params = checkpoint.load_tensors(path, parameter_shapes(config),
                                         ignored=checkpoint.tied_copies(config))
        return cls(config, params)

    def save_pretrained(self, path, dtype="float32", max_shard_bytes=None,
                        config_layout="rope_scaling"):
        """Write config.json and model.safetensors (or shards + index) in fp32, fp16 or bf16."""
        if self.quantization is not None:
            raise CheckpointError("a 4-bit model is not saved again: quantize its float "
                                  "checkpoint with `tinyphi3 quantize` instead")
        checkpoint.save(path, self.config, self.params, dtype=dtype,
                        max_shard_bytes=max_shard_bytes, config_layout=config_layout)

    def named_parameters(self):
        """(Hugging Face tensor name, Parameter) pairs in checkpoint order; `.data` is the array,
        `.grad` its gradient after `loss.backward()`."""
        return iter(self._parameters.items())

    def zero_grad(self):
        for p in self._parameters.values():
            p.grad = None

    def num_parameters(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self._parameters.values())

    def new_cache(self, batch_size: int = 1, capacity: int = 0) -> KVCache:
        """An empty KV cache: float32, or 8 bits for a 4-bit model (about a quarter of the memory
        and of the bytes read per generated token; its attention kernel converts as it reads).
        capacity: the positions it will hold, when known (the prompt and the tokens to
        generate)."""
        c = self.config
        dtype = np.float32 if self.quantization is None else np.int8
        return KVCache(c.num_hidden_layers, batch_size, c.num_key_value_heads, c.head_dim, dtype,
                       capacity)

    def weights(self) -> dict:
        """What the forward pass reads: the Parameters while recording for training, their
        plain arrays otherwise (so inference records nothing)."""
        return self._parameters if is_recording() else self.params

    def layer_weights(self, i: int, weights: dict | None = None) -> dict:
        """Short names for layer i's tensors: 'qkv_proj', 'o_proj', 'gate_up_proj', ... for the
        weights, 'dense.bias', ... for the biases (phi-3-small)."""
        weights = self.weights() if weights is None else weights
        names = self.__dict__.setdefault("_layer_names", {})
        if i not in names:                      # found once per layer, not on every token
            prefix = f"model.layers.{i}."
            names[i] = []
            for name in weights:
                if name.startswith(prefix):
                    module, kind = name[len(prefix):].split(".")[-2:]
                    names[i].append((name, module if kind == "weight" else f"{module}.{kind}"))
        return {short: weights[name] for name, short in names[i]}

    # ---- forward ----------------------------------------------------------------------------
    def __call__(self, input_ids, attention_mask=None, cache=None, position_ids=None,
                 inputs_embeds=None, logits_to_keep=0):
        """Logits float32 [B, T, V] for token ids [B, T].

        attention_mask: [B, T], 1 for tokens and 0 for padding (left padding for batched prompts).
        cache: a KVCache to read past keys from and append this call's keys to.
        position_ids: [B, T]; by default each row counts its own real tokens, continuing the cache.
        inputs_embeds: [B, T, C] instead of ids (image features placed by a caller).
        logits_to_keep: if > 0, only the logits of the last that many positions.
        """
        logits = self.forward(input_ids, attention_mask, cache, position_ids, inputs_embeds,
                              logits_to_keep)
        return logits.astype(np.float32, copy=False)

    def loss(self, input_ids, labels, attention_mask=None):
        """Mean next-token cross-entropy (labels shifted inside, -100 ignored), recorded so that
        `loss.backward()` fills every parameter's `.grad`. Returns a scalar Tensor."""
        if self.quantization is not None:
            raise InvalidInputError("a 4-bit model runs inference only; train its float "
                                    "checkpoint")
        labels = np.asarray(labels)
        if labels.shape != np.shape(input_ids):
            raise InvalidInputError(f"labels must have the shape of input_ids "
                                    f"{np.shape(input_ids)}, got {labels.shape}")
        V = self.config.vocab_size
        if np.any((labels != -100) & ((labels < 0) | (labels >= V))):
            raise InvalidInputError(f"labels must be token ids in [0, {V}) or -100 (ignored)")
        with enable_grad():
            logits = self.forward(input_ids, attention_mask)
            return causal_lm_loss(logits, labels)

    def forward(self, input_ids, attention_mask=None, cache=None, position_ids=None,
                inputs_embeds=None, logits_to_keep=0):
        """The forward pass: arrays in inference, Tensors when recording (see `weights`)."""
        c = self.config
        w = self.weights()
        x = self.embed(input_ids, inputs_embeds, w)                      # [B, T, C]
        B, T, _ = x.shape
        valid = self._validity(attention_mask, B, T)                     # bool [B, T]
        past = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != B:
            raise InvalidInputError(f"cache holds {cache.batch_size} rows but input has {B}")
        if position_ids is None:
            start = np.zeros(B, np.int64) if cache is None else cache.next_position
            position_ids = start[:, None] + np.cumsum(valid, axis=1) - 1    # [B, T]
            position_ids = np.where(valid, position_ids, 0)
        position_ids = np.asarray(position_ids, dtype=np.int64)
        seq_len = int(position_ids.max()) + 1
        inv_freq, magnitude = rope_frequencies(c, seq_len)
        positions = position_ids.astype(np.float32) * np.float32(c.rope_position_scale)
        cos, sin = rope_cos_sin(positions, inv_freq, magnitude)          # [B, T, rd] each
        key_valid = valid if cache is None else np.concatenate([cache.key_valid, valid], axis=1)
        mask = causal_mask(past + np.arange(T), key_valid, c.sliding_window)  # [B, 1, T, S]
        sparse = small.BlockSparseCall.for_config(c, key_valid, T) if c.is_phi3small else None

        for i in range(c.num_hidden_layers):
            x = decoder_layer(x, self.layer_weights(i, w), c, cos, sin, mask, cache, i, sparse)
        if cache is not None:
            cache.advance(valid, position_ids, uses_long_factors(c, seq_len))
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.lm_head(x, w)                                       # [B, T, V]

    def lm_head(self, x, w):
        """Final norm and output projection: [B, T, C] -> logits [B, T, V]. phi-3-small's head is
        the embedding (tied); μP divides its logits by mup_width_multiplier; the dummy rows of its
        vocabulary get the float32 minimum."""
        c = self.config
        if c.is_phi3small:
            x = layer_norm(x, w["model.final_layernorm.weight"], w["model.final_layernorm.bias"],
                           c.norm_eps)
        else:
            x = rms_norm(x, w["model.norm.weight"], c.norm_eps)
        head = w["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]
        logits = linear(x, head)                                        # [B, T, C] -> [B, T, V]
        if c.mup_width_multiplier:
            logits = logits / np.float32(c.mup_width_multiplier)
        if c.dummy_token_ids:
            logits = small.mask_dummy_logits(logits, c.dummy_token_ids)
        return logits

    def embed(self, input_ids, inputs_embeds=None, w=None):
        """Token embeddings [B, T] -> [B, T, C] (or the given inputs_embeds), times μP's
        mup_embedding_multiplier when the configuration has one (phi-3-small: 10)."""
        x = self._embed(input_ids, inputs_embeds, self.weights() if w is None else w)
        if self.config.mup_embedding_multiplier:
            x = x * np.float32(self.config.mup_embedding_multiplier)
        return x

    def _embed(self, input_ids, inputs_embeds, w):
        if isinstance(inputs_embeds, Tensor):
            return inputs_embeds
        if inputs_embeds is not None:
            x = np.asarray(inputs_embeds, dtype=np.float32)
            if x.ndim != 3 or x.shape[-1] != self.config.hidden_size:
                raise InvalidInputError(f"inputs_embeds must be [B, T, {self.config.hidden_size}],"
                                        f" got shape {x.shape}")
            return x
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be a non-empty integer array [B, T], "
                                    f"got {ids.dtype} with shape {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise InvalidInputError(f"token ids must lie in [0, {self.config.vocab_size}), "
                                    f"got values from {ids.min()} to {ids.max()}")
        return embedding(ids, w["model.embed_tokens.weight"])             # [B, T] -> [B, T, C]

    @staticmethod
    def _validity(attention_mask, B, T):
        if attention_mask is None:
            return np.ones((B, T), dtype=bool)
        valid = np.asarray(attention_mask).astype(bool)
        if valid.shape != (B, T):
            raise InvalidInputError(f"attention_mask must have shape {(B, T)}, got {valid.shape}")
        return valid

