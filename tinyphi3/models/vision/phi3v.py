"""Phi-3-vision (config.json model_type "phi3_v"): phi-3-mini-128K reading images among its tokens.

    x = embed_tokens[clamp(ids, 0, V - 1)]                              [B, T, D]
    x[slots] = concat(image_embeddings(pixel_values, image_sizes))      slots: -1e9 < id < 0
    logits = decoder(inputs_embeds=x)                                   [B, T, V]

The slots are filled in order of appearance (row-major over [B, T]): the processor writes -k for
image k, but the value is not read (REFERENCE-vision §3.8). The decoder is a plain Phi3
(tinyphi3.models.model); the image side is tinyphi3.models.vision.projector's functions on the
tensors under `model.vision_embed_tokens.` (names, shapes and parts:
tinyphi3.models.vision.weights).

Weight formats: the decoder's matrices may be 4-bit blocks (a checkpoint written by `tinyphi3
quantize`, which keeps the image side as stored) or bf16 bits (`dtype="bfloat16"`), as Phi3's are;
the tower, separators and projection are float32 arrays whatever the decoder holds.

Training: `loss(ids, labels, pixel_values, image_sizes)` records the whole path, tower to logits
(the tower's and projector's functions use only operations the tape records, and the vectors go
to their slots through `masked_scatter`), so `backward()` fills the gradient of every Parameter
of `named_parameters()`; `freeze(["tower"])` keeps a part constant.

`tinyphi3.Phi3.from_pretrained(dir)` returns this class for a phi3_v directory.
"""

import math

import numpy as np

from tinyphi3.config import Phi3Config, VisionConfig
from tinyphi3.errors import CheckpointError, ConfigError, InvalidInputError
from tinyphi3.io import checkpoint
from tinyphi3.models import model
from tinyphi3.models.vision.clip import clip_weights_from
from tinyphi3.models.vision.projector import image_embeddings, image_grids, image_token_count
from tinyphi3.models.vision.weights import (  # noqa: F401 (parameter_shapes: re-exported)
    EMBED, PARTS, TOWER, VISION, WRITTEN_TOWER, WTE, decoder_config, init_image_side,
    init_parameters, parameter_shapes, part_of, split_parameters, stored_shapes)
from tinyphi3.models.call import WeightFormat
from tinyphi3.nn.autograd import Parameter, enable_grad, is_recording
from tinyphi3.nn.layers import masked_scatter
from tinyphi3.quant import checkpoint as quant_checkpoint
from tinyphi3.quant.bf16 import to_bf16_weights

MAX_INPUT_ID = 10 ** 9                         # ids in (-MAX_INPUT_ID, 0) are image slots


def image_slots(ids):
    """Where the images go: bool [B, T], true where -1e9 < id < 0."""
    return (ids > -MAX_INPUT_ID) & (ids < 0)


def place_images(x, slots, vectors: list):
    """x [B, T, D] whose image slots (bool [B, T]) hold the images' vectors, each [n_k, D], one
    after another in row-major order over [B, T]; recorded when training (masked_scatter)."""
    placed = sum(v.shape[0] for v in vectors)
    if placed != int(slots.sum()):
        raise InvalidInputError(f"input_ids hold {int(slots.sum())} image slots but the images "
                                f"give {placed} vectors")
    return masked_scatter(x, slots, np.concatenate(vectors))     # [sum n_k, D] into the slots


class Phi3V:
    """Phi-3-vision: `Phi3V.from_pretrained(dir)` (or `tinyphi3.Phi3.from_pretrained(dir)`),
    then `model(ids, pixel_values, image_sizes)` -> logits. `Phi3V(config, params=None, seed=0)`
    builds one from tensors by checkpoint name (either CLIP naming), or with random weights;
    `weight_format`: how the decoder's matrices are held (model.FLOAT, model.Q4, model.BF16)."""

    def __init__(self, config: Phi3Config, params: dict | None = None, seed: int = 0,
                 weight_format: WeightFormat = model.FLOAT):
        if config.vision is None:
            raise ConfigError(f"config: model_type {config.model_type!r} is not 'phi3_v'")
        self.config = config
        params = init_parameters(config, seed) if params is None else params
        decoder, tower, head = split_parameters(config, params)
        self.decoder = model.Phi3(decoder_config(config), decoder, weight_format=weight_format)
        tower = clip_weights_from(tower, config.vision.clip, TOWER)        # 5-style names
        self._tower = {n: Parameter(w) for n, w in tower.items()}
        self._head = {n: Parameter(w) for n, w in head.items()}

    @classmethod
    def from_decoder(cls, decoder: model.Phi3, vision: VisionConfig, seed: int = 0,
                     positions: str = "random") -> "Phi3V":
        """A phi3_v model whose decoder is a copy of a text model's (model_type phi3) and whose
        tower, separators and projection are new (init_image_side with `seed` and the tower's
        `positions`)."""
        if decoder.config.model_type != "phi3":
            raise InvalidInputError(f"phi-3-vision's decoder is a phi3 model, not "
                                    f"{decoder.config.model_type!r}")
        config = decoder.config.replace(model_type="phi3_v", vision=vision)
        params = {n: np.array(w, np.float32) for n, w in decoder.params.items()}
        return cls(config, params | init_image_side(config, seed, positions))

    @property
    def quantization(self) -> dict | None:
        """The quantization_config of a 4-bit checkpoint (None for float weights)."""
        return self.decoder.quantization

    # ---- parameters -------------------------------------------------------------------------
    def named_parameters(self):
        """(checkpoint name, Parameter) pairs: the decoder's, then the tower's (published names,
        with `vision_model.`), the separators and the projection."""
        yield from self.decoder.named_parameters()
        yield from ((WRITTEN_TOWER + n, p) for n, p in self._tower.items())
        yield from ((VISION + n, p) for n, p in self._head.items())

    @property
    def params(self) -> dict:
        """Every weight as an array, by the published checkpoint's name."""
        return {name: p.data for name, p in self.named_parameters()}

    def num_parameters(self) -> int:
        return sum(int(np.prod(p.shape)) for _, p in self.named_parameters())

    def zero_grad(self):
        for _, p in self.named_parameters():
            p.grad = None

    def freeze(self, parts=()):
        """Keep the named parts constant ("tower", "projector", "decoder"; the others train):
        their Parameters stop requiring a gradient, so the tape treats them as constants, none
        gets a `.grad`, and AdamW (which skips those) leaves them as they are. A frozen tower is
        not recorded at all. freeze() makes every part trainable again."""
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise InvalidInputError(f"cannot freeze {', '.join(map(repr, unknown))}: the parts "
                                    f"are {', '.join(PARTS)}")
        for name, p in self.named_parameters():
            p.requires_grad = part_of(name) not in parts

    def _weights(self, parameters: dict) -> dict:
        """The Parameters while recording for training, their arrays otherwise (as Phi3's)."""
        return parameters if is_recording() else {n: p.data for n, p in parameters.items()}

    # ---- checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str | None = None,
                        dtype: str = "float32") -> "Phi3V":
        """Load a phi3_v directory (config.json + safetensors, single or sharded), its tower
        named as transformers 4 (`img_processor.vision_model.`, the published file) or 5 does.
        A 4-bit checkpoint (`tinyphi3 quantize`) loads its decoder as 4-bit blocks, whatever
        the dtype; dtype "bfloat16" holds a float decoder's matrices in bf16 (as Phi3's). The
        image side is float32 either way. On the host only: no other backend."""
        if backend is not None:
            raise InvalidInputError(f"a phi3_v model runs on the host only, not "
                                    f"backend={backend!r}")
        if dtype not in model.DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(model.DTYPES)}, "
                                    f"got {dtype!r}")
        config = checkpoint.load_config(path)
        if config.vision is None:
            raise CheckpointError(f"{path}: model_type {config.model_type!r} is not 'phi3_v'; "
                                  f"load it with Phi3.from_pretrained")
        qc = quant_checkpoint.quantization_config(path)
        index = checkpoint.tensor_index(path)
        shapes, ignored = stored_shapes(config, index)
        checkpoint.check_size(config, sum(math.prod(s) for s in shapes.values()), index)
        if qc is not None:                                   # the decoder in 4-bit blocks
            if not any(VISION.startswith(m + ".") for m in qc.get("modules_to_not_convert", [])):
                raise CheckpointError(f"{path}: a 4-bit phi3_v checkpoint keeps its image side "
                                      f"({VISION}*) out of the 4 bits (modules_to_not_convert); "
                                      f"this one does not")
            index = {n: f for n, f in index.items() if n not in ignored}
            params = quant_checkpoint.load_quantized_tensors(path, config, shapes, qc, index)
            vision = cls(config, params, weight_format=model.Q4)
            vision.decoder.quantization = qc
            return vision
        params = checkpoint.load_tensors(path, shapes, ignored=ignored, index=index)
        if WTE in ignored and not np.array_equal(index[WTE].get(WTE).astype(np.float32),
                                                 params[EMBED]):
            raise CheckpointError(f"{path}: {WTE} differs from {EMBED}; the model ties them (one "
                                  f"table), so which one to use is ambiguous")
        if dtype == "bfloat16":                  # the decoder's matrices; the image side float32
            decoder = {n for n in params if part_of(n) == "decoder"}
            params |= to_bf16_weights({n: params[n] for n in decoder})
            return cls(config, params, weight_format=model.BF16)
        return cls(config, params)

    def save_pretrained(self, path, dtype="float32", max_shard_bytes=None,
                        config_layout="rope_scaling"):
        """Write config.json (model_type phi3_v) and the tensors under the published names."""
        if self.decoder.weight_format is not model.FLOAT:
            raise CheckpointError(f"save a model loaded as float32 (this one's decoder holds "
                                  f"{self.decoder.weight_format.name} weights); a 4-bit one is "
                                  f"not saved again: quantize its float checkpoint instead")
        checkpoint.save(path, self.config, self.params, dtype=dtype,
                        max_shard_bytes=max_shard_bytes, config_layout=config_layout)

    # ---- forward ----------------------------------------------------------------------------
    def image_features(self, pixel_values, image_sizes) -> list:
        """Each image's vectors in the decoder's space: N arrays [n_tokens, D]."""
        v = self.config.vision
        head = self._weights(self._head)
        return image_embeddings(pixel_values, image_sizes, self._weights(self._tower), v.clip,
                                v.layer_idx, head, head)

    def image_token_counts(self, pixel_values, image_sizes) -> list:
        """The number of vectors of each image, from its size alone (no tower run)."""
        clip = self.config.vision.clip
        _, grids = image_grids(pixel_values, image_sizes, clip)
        return [image_token_count(h, w, clip.grid // 2) for h, w in grids]

    def embed(self, input_ids, pixel_values=None, image_sizes=None):
        """The decoder's input: text embeddings, the images' vectors at the image slots.
        [B, T] -> [B, T, D]."""
        ids = self._check_ids(input_ids)
        slots, V = image_slots(ids), self.config.vocab_size
        table = self.decoder.weights()[EMBED]                 # float, bf16 or 4-bit, as loaded
        x = self.decoder.weight_format.embedding(np.clip(ids, 0, V - 1), table)  # [B, T, D]
        n = int(slots.sum())
        if pixel_values is None:
            if n or image_sizes is not None:
                raise InvalidInputError(f"input_ids hold {n} image slots (ids in (-1e9, 0))"
                                        + (" and image_sizes is given" if image_sizes is not None
                                           else "") + " but no pixel_values were given")
            return x
        if image_sizes is None:
            raise InvalidInputError("pixel_values come with image_sizes [N, 2] (each padded "
                                    "image's height and width in pixels)")
        counts = self.image_token_counts(pixel_values, image_sizes)
        if n == 0:
            raise InvalidInputError(f"pixel_values hold {len(counts)} image(s) but input_ids have "
                                    f"no image slots (ids in (-1e9, 0): -k for image k)")
        if n != sum(counts):
            raise InvalidInputError(f"input_ids hold {n} image slots (ids in (-1e9, 0)) but the "
                                    f"{len(counts)} image(s) give {sum(counts)} vectors ("
                                    + " + ".join(map(str, counts)) + ")")
        return place_images(x, slots, self.image_features(pixel_values, image_sizes))

    def __call__(self, input_ids, pixel_values=None, image_sizes=None, attention_mask=None,
                 cache=None, logits_to_keep=0, inputs_embeds=None):
        """Logits float32 [B, T, V] for ids [B, T] whose image slots (-1e9 < id < 0) take the
        vectors of pixel_values [N, num_crops + 1, 3, S, S] with image_sizes [N, 2], in order;
        attention_mask [B, T], cache (a KVCache of `new_cache`) and logits_to_keep as Phi3's.
        Without images, the plain decoder's logits.

        inputs_embeds [B, T, D]: what `embed` made, instead of ids and pixels. Generation uses it
        to run the tower once for a prompt whose prefill takes several passes: `embed` the whole
        prompt, then feed its slices, each with its ids, to this call with the cache."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)     # [B, T, D]
        elif pixel_values is not None or image_sizes is not None:
            raise InvalidInputError("give inputs_embeds or pixel_values, not both: inputs_embeds "
                                    "already hold the images' vectors")
        ids = self._check_ids(input_ids)
        if np.shape(inputs_embeds)[:2] != ids.shape:
            raise InvalidInputError(f"inputs_embeds {np.shape(inputs_embeds)} must be [B, T, D] "
                                    f"for input_ids [B, T] = {list(ids.shape)}")
        ids = np.clip(ids, 0, self.config.vocab_size - 1)
        return self.decoder(ids, attention_mask=attention_mask, cache=cache,
                            inputs_embeds=inputs_embeds, logits_to_keep=logits_to_keep)

    def forward(self, input_ids, pixel_values=None, image_sizes=None, attention_mask=None):
        """Logits [B, T, V] as `Phi3.forward` gives them: a Tensor on the tape while recording
        (DPO's policy: tinyphi3.train.dpo), an array otherwise. Without images, the decoder's
        own forward, so that a text-only objective trains the decoder of a vision model."""
        self._check_trainable()
        x = self.embed(input_ids, pixel_values, image_sizes)                     # [B, T, D]
        ids = np.clip(self._check_ids(input_ids), 0, self.config.vocab_size - 1)
        return self.decoder.forward(ids, attention_mask=attention_mask, inputs_embeds=x)

    def _check_trainable(self):
        if self.decoder.weight_format is not model.FLOAT:
            raise InvalidInputError(f"a model with {self.decoder.weight_format.name} weights "
                                    f"runs inference only; train its float32 checkpoint")

    def loss(self, input_ids, labels, pixel_values=None, image_sizes=None, attention_mask=None):
        """Mean next-token cross-entropy over the labels that are not -100 (shifted inside), as
        Phi3.loss, for ids whose image slots take the images' vectors; recorded, so that
        `loss.backward()` fills the `.grad` of every Parameter not frozen. Phi-3-vision trains on
        text tokens only: the labels hold -100 at the image slots and the prompt (REFERENCE-vision
        §4.1; tinyphi3.train.images). Returns a scalar Tensor."""
        self._check_trainable()
        with enable_grad():
            x = self.embed(input_ids, pixel_values, image_sizes)                 # [B, T, D]
            ids = np.clip(self._check_ids(input_ids), 0, self.config.vocab_size - 1)
            return self.decoder.loss(ids, labels, attention_mask, inputs_embeds=x)

    def new_cache(self, batch_size: int = 1, capacity: int = 0):
        """An empty KV cache of the decoder (tinyphi3.inference.cache): the images' vectors pass
        through it as any token's do, so after the prefill, decoding is plain text."""
        return self.decoder.new_cache(batch_size, capacity)

    def weight_bytes(self) -> int:
        """Bytes the weights take in memory: the decoder's, the tower's and the projection's."""
        return sum(int(w.nbytes) for w in self.params.values())

    @staticmethod
    def _check_ids(input_ids):
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be a non-empty integer array [B, T], "
                                    f"got {ids.dtype} with shape {ids.shape}")
        return ids


model.MODEL_CLASSES["phi3_v"] = Phi3V      # tinyphi3.Phi3.from_pretrained's dispatch
