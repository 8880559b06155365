"""The Phi-3 language model: one class for every variant (phi-3-mini, mini-128K, medium, small).

    x = scale_embeddings(embed_tokens[ids])
    for each layer i:  x = decoder_layer(x, layer i's weights)
    logits = lm_head(x)

What a layer computes is the variant's (tinyphi3.models.phi3, tinyphi3.models.phi3_small), chosen
by config.json's model_type. How the weights are stored is the weight format's (float arrays,
bf16 bits: tinyphi3.quant.bf16, or 4-bit blocks: tinyphi3.quant.q4), chosen once when they load;
so is the KV cache's storage. Where they live is the backend's: host memory, or a GPU's for the
cupy backend (`from_pretrained(path, backend="cupy")`), where the same code runs on CuPy arrays
and the logits come back as NumPy.

Parameters live in one dict keyed by their Hugging Face tensor names, so the code reads beside the
published implementation and checkpoints load without renaming. The same forward pass serves
inference (plain NumPy arrays, nothing recorded) and training (`model.loss`, which records the
operations on the parameters so that `backward()` can fill their gradients).
"""

import contextlib

import numpy as np

from tinyphi3 import backends
from tinyphi3.config import Phi3Config
from tinyphi3.errors import CheckpointError, InvalidInputError, NonFiniteError
from tinyphi3.inference.cache import KVCache
from tinyphi3.io import checkpoint
from tinyphi3.models.call import ForwardCall, WeightFormat
from tinyphi3.models.variants import variant_for
from tinyphi3.models.weights import init_parameters, parameter_count, parameter_shapes
from tinyphi3.nn.arrays import array_module, to_host
from tinyphi3.nn.attention import causal_mask
from tinyphi3.nn.autograd import Parameter, Tensor, enable_grad, is_recording
from tinyphi3.nn.layers import causal_lm_loss, embedding, linear
from tinyphi3.nn.rope import rope_cos_sin, rope_frequencies, uses_long_factors
from tinyphi3.quant import checkpoint as quant_checkpoint
from tinyphi3.quant.bf16 import bf16_embedding, bf16_linear, to_bf16_weights
from tinyphi3.quant.kv8 import Int8KVCache
from tinyphi3.quant.q4 import q4_embedding, q4_linear

FLOAT = WeightFormat("float", linear, embedding)          # float32/float64 arrays, differentiable
Q4 = WeightFormat("q4", q4_linear, q4_embedding)          # 4-bit blocks, inference only
BF16 = WeightFormat("bf16", bf16_linear, bf16_embedding)  # matrices as bf16 bits, inference only
DTYPES = ("float32", "bfloat16")
# config.json model_types that a class built around a Phi3 decoder loads: "phi3_v" ->
# tinyphi3.models.vision.phi3v.Phi3V, which adds itself here when imported (as `import tinyphi3`
# does). This module cannot import that one, which imports this.
MODEL_CLASSES = {}

FLASH_FROM = 1024          # "auto" attention tiles training calls of this many tokens or more


class Phi3:
    """A Phi-3 language model: `Phi3.from_pretrained(dir)`, then `model(ids)` -> logits."""

    def __init__(self, config: Phi3Config, params: dict | None = None, seed: int = 0,
                 weight_format: WeightFormat = FLOAT):
        self.config = config
        self.variant = variant_for(config)          # the module that computes a layer
        self.weight_format = weight_format          # how the layers read the weights
        params = init_parameters(config, seed) if params is None else params
        self._parameters = {name: Parameter(array) for name, array in params.items()}
        self.quantization = None        # the quantization_config of a 4-bit checkpoint
        self.backend = None             # the backend whose memory holds the weights, if chosen
        self.attention = "auto"         # "dense", "flash" (tiled) or "auto": see _attention_plan

    def weight_bytes(self) -> int:
        """Bytes the weights take in memory (packed levels and scales for 4-bit ones)."""
        return sum(int(p.data.nbytes) for p in self._parameters.values())

    @property
    def params(self) -> dict:
        """The weights as arrays, by Hugging Face name (the arrays the parameters hold)."""
        return {name: p.data for name, p in self._parameters.items()}

    # ---- checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str | None = None,
                        dtype: str = "float32") -> "Phi3":
        """Load a Hugging Face directory (config.json + safetensors, single or sharded); the
        variant (phi3, phi3small) comes from config.json's model_type; a phi3_v directory
        gives the class of MODEL_CLASSES (tinyphi3.models.vision.phi3v.Phi3V).

        backend: run on that backend from now on, the weights moved once to where its kernels
        take them ("cupy": the GPU's memory); None: the selected backend, weights on the host.
        dtype: "float32", or "bfloat16" to hold the matrices in bf16 (tinyphi3.quant.bf16).
        A 4-bit checkpoint loads as 4-bit blocks whatever the dtype."""
        if dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if backend is not None:
            backends.registered(backend)                     # an unknown name fails first
        config = checkpoint.load_config(path)
        if config.model_type in MODEL_CLASSES:          # phi-3-vision: a Phi3 with an image side
            return MODEL_CLASSES[config.model_type].from_pretrained(path, backend, dtype)
        qc = quant_checkpoint.quantization_config(path)
        index = checkpoint.tensor_index(path)                # every header read once, here
        checkpoint.check_size(config, parameter_count(config), index)
        shapes = parameter_shapes(config)
        if qc is not None:                                   # 4-bit weights: the Q4 format
            tensors = quant_checkpoint.load_quantized_tensors(path, config, shapes, qc, index)
            model = cls(config, tensors, weight_format=Q4)
            model.quantization = qc
            if (backend or backends.get_backend()) == "numba":
                from tinyphi3.backends.numba import (keep_large_blocks_for_reuse,
                                                     spin_briefly_for_decoding)
                spin_briefly_for_decoding()            # before Numba starts its threads
                keep_large_blocks_for_reuse()          # a prefill's blocks, not fresh pages
        else:
            params = checkpoint.load_tensors(path, shapes,
                                             ignored=checkpoint.tied_copies(config), index=index)
            if dtype == "bfloat16":
                model = cls(config, to_bf16_weights(params), weight_format=BF16)
            else:
                model = cls(config, params)
        if backend is not None:
            model.to_backend(backend)
        return model

    def to_backend(self, name: str) -> "Phi3":
        """Run on backend `name` from now on; its upload (a GPU's) moves each weight once."""
        upload = backends.registered(name).upload
        if upload is not None:
            for p in self._parameters.values():
                p.data = p.data.map_arrays(upload) if hasattr(p.data, "map_arrays") \
                    else upload(p.data)
        self.backend = name
        return self

    def save_pretrained(self, path, dtype="float32", max_shard_bytes=None,
                        config_layout="rope_scaling"):
        """Write config.json and model.safetensors (or shards + index) in fp32, fp16 or bf16."""
        if self.quantization is not None:
            raise CheckpointError("a 4-bit model is not saved again: quantize its float "
                                  "checkpoint with `tinyphi3 quantize` instead")
        if self.weight_format is not FLOAT or self._xp() is not np:
            raise CheckpointError(f"save a model loaded as float32 on the host (this one holds "
                                  f"{self.weight_format.name} weights on the "
                                  f"{self.backend or 'host'} backend)")
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
        and of the bytes read per generated token; tinyphi3.quant.kv8). capacity: the positions
        it will hold, when known (the prompt and the tokens to generate)."""
        c = self.config
        kind = Int8KVCache if self.weight_format is Q4 else KVCache
        return kind(c.num_hidden_layers, batch_size, c.num_key_value_heads, c.head_dim, capacity,
                    self._xp())

    def _xp(self):
        """The array module the weights live in (numpy, or cupy on a GPU)."""
        vectors = (p.data for p in self._parameters.values() if p.data.ndim == 1)
        return array_module(next(vectors))

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
        logits = to_host(logits).astype(np.float32, copy=False)       # from the GPU, if there
        if not np.isfinite(logits).all():
            raise NonFiniteError("the model computed NaN or infinite logits: its weights overflow "
                                 "float32 (a corrupt checkpoint?) or its inputs do")
        return logits

    def loss(self, input_ids, labels, attention_mask=None, inputs_embeds=None):
        """Mean next-token cross-entropy (labels shifted inside, -100 ignored), recorded so that
        `loss.backward()` fills every parameter's `.grad`. Returns a scalar Tensor.
        inputs_embeds: [B, T, C] in place of the ids' embeddings (Phi-3-vision's, a Tensor)."""
        if self.weight_format is not FLOAT:
            raise InvalidInputError(f"a model with {self.weight_format.name} weights runs "
                                    f"inference only; train its float32 checkpoint")
        if self._xp() is not np:
            raise InvalidInputError(f"training runs on the host: load the model without "
                                    f"backend={self.backend!r}")
        labels = np.asarray(labels)
        if labels.shape != np.shape(input_ids):
            raise InvalidInputError(f"labels must have the shape of input_ids "
                                    f"{np.shape(input_ids)}, got {labels.shape}")
        V = self.config.vocab_size
        if np.any((labels != -100) & ((labels < 0) | (labels >= V))):
            raise InvalidInputError(f"labels must be token ids in [0, {V}) or -100 (ignored)")
        with enable_grad():
            logits = self.forward(input_ids, attention_mask, inputs_embeds=inputs_embeds)
            return causal_lm_loss(logits, labels)

    def forward(self, input_ids, attention_mask=None, cache=None, position_ids=None,
                inputs_embeds=None, logits_to_keep=0):
        """The forward pass: arrays in inference, Tensors when recording (see `weights`), on the
        model's backend when it has one. Logits stay where the weights are."""
        chosen = backends.use_backend(self.backend) if self.backend else contextlib.nullcontext()
        with chosen:
            return self._forward(input_ids, attention_mask, cache, position_ids, inputs_embeds,
                                 logits_to_keep)

    def _forward(self, input_ids, attention_mask, cache, position_ids, inputs_embeds,
                 logits_to_keep):
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
        flash = self._attention_plan(T, past, key_valid, cache)       # tiled: no dense mask
        mask = None if flash else causal_mask(past + np.arange(T), key_valid,
                                              c.sliding_window)          # [B, 1, T, S]
        here = self._xp()
        if here is not np:                       # computed on the host, used where x lives
            cos, sin, mask = here.asarray(cos), here.asarray(sin), here.asarray(mask)
        call = ForwardCall(c, self.weight_format, cos, sin, mask, cache,
                           self.variant.prepare(c, key_valid, T), flash)
        for i in range(c.num_hidden_layers):
            x = self.variant.decoder_layer(x, self.layer_weights(i, w), call, i)
        if cache is not None:
            cache.advance(valid, position_ids, uses_long_factors(c, seq_len))
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.variant.lm_head(x, w, call)                         # [B, T, V]

    def lm_head(self, x, w=None):
        """The variant's final norm and output projection: hidden states [B, T, C] -> logits
        [B, T, V] (what `forward` ends with; the logit lens of lesson 13 reads layers with it)."""
        w = self.weights() if w is None else w
        return self.variant.lm_head(x, w, ForwardCall(self.config, self.weight_format, None,
                                                      None, None))

    def embed(self, input_ids, inputs_embeds=None, w=None):
        """Token embeddings [B, T] -> [B, T, C] (or the given inputs_embeds), as the variant
        scales them (phi-3-small: times μP's mup_embedding_multiplier, 10)."""
        x = self._embed(input_ids, inputs_embeds, self.weights() if w is None else w)
        return self.variant.scale_embeddings(x, self.config)

    def _embed(self, input_ids, inputs_embeds, w):
        if isinstance(inputs_embeds, Tensor):
            return inputs_embeds
        if inputs_embeds is not None:
            x = inputs_embeds if hasattr(inputs_embeds, "ndim") else np.asarray(inputs_embeds)
            if x.ndim != 3 or x.shape[-1] != self.config.hidden_size:
                raise InvalidInputError(f"inputs_embeds must be [B, T, {self.config.hidden_size}],"
                                        f" got shape {x.shape}")
            return self._xp().asarray(x, dtype=np.float32)
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be a non-empty integer array [B, T], "
                                    f"got {ids.dtype} with shape {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise InvalidInputError(f"token ids must lie in [0, {self.config.vocab_size}), "
                                    f"got values from {ids.min()} to {ids.max()}")
        table = w["model.embed_tokens.weight"]
        return self.weight_format.embedding(ids, table)                  # [B, T] -> [B, T, C]

    def _attention_plan(self, T, past, key_valid, cache):
        """The structure of the mask for FlashAttention (tinyphi3.nn.flash_attention), or None
        for dense attention. "auto" tiles a training call (gradients recorded) of FLASH_FROM
        tokens or more: the dense backward keeps [T, S] weights per head (64 MiB each at 4K),
        the tiled one O(T) numbers per head. Both give the same values
        (tests/test_flash_attention.py)."""
        if self.attention not in ("auto", "dense", "flash"):
            raise InvalidInputError(f"model.attention must be 'auto', 'dense' or 'flash', got "
                                    f"{self.attention!r}")
        tiled = self.attention == "flash" or (self.attention == "auto" and is_recording()
                                              and T >= FLASH_FROM)
        if not tiled or cache is not None or self._xp() is not np:
            return None
        return {"query_start": past, "key_valid": key_valid,
                "sliding_window": self.config.sliding_window}

    @staticmethod
    def _validity(attention_mask, B, T):
        if attention_mask is None:
            return np.ones((B, T), dtype=bool)
        valid = np.asarray(attention_mask).astype(bool)
        if valid.shape != (B, T):
            raise InvalidInputError(f"attention_mask must have shape {(B, T)}, got {valid.shape}")
        return valid

