"""Phi-3-vision (config.json model_type "phi3_v"): phi-3-mini-128K reading images among its tokens.

    x = embed_tokens[clamp(ids, 0, V - 1)]                              [B, T, D]
    x[slots] = concat(image_embeddings(pixel_values, image_sizes))      slots: -1e9 < id < 0
    logits = decoder(inputs_embeds=x)                                   [B, T, V]

The slots are filled in order of appearance (row-major over [B, T]): the processor writes -k for
image k, but the value is not read (REFERENCE-vision §3.8). The decoder is a plain Phi3
(tinyphi3.models.model); the image side is tinyphi3.models.vision.projector's functions on the
tensors under `model.vision_embed_tokens.` (REFERENCE-vision §1.4):

    img_processor.vision_model.*      the CLIP tower (transformers 5 names lack `vision_model.`)
    sub_GN [1, 1, 1, 4C], glb_GN [1, 1, 4C]                        the learnt separators
    img_projection.0.{weight [D, 4C], bias [D]}, img_projection.2.{weight [D, D], bias [D]}

`tinyphi3.Phi3.from_pretrained(dir)` returns this class for a phi3_v directory.
"""

import math

import numpy as np

from tinyphi3.config import Phi3Config
from tinyphi3.errors import CheckpointError, ConfigError, InvalidInputError
from tinyphi3.io import checkpoint
from tinyphi3.models import model, weights
from tinyphi3.models.vision.clip import clip_tensor_shapes, clip_weights_from, init_clip_weights
from tinyphi3.models.vision.projector import image_embeddings, image_grids, image_token_count
from tinyphi3.nn.layers import embedding
from tinyphi3.quant import checkpoint as quant_checkpoint

VISION = "model.vision_embed_tokens."
TOWER = VISION + "img_processor."              # + "vision_model." in transformers-4 names
WRITTEN_TOWER = TOWER + "vision_model."        # the published checkpoint's names, which we write
EMBED = "model.embed_tokens.weight"
WTE = VISION + "wte.weight"                    # the same table under a second name (some files)
MAX_INPUT_ID = 10 ** 9                         # ids in (-MAX_INPUT_ID, 0) are image slots


def decoder_config(config: Phi3Config) -> Phi3Config:
    """The language model's configuration: a phi3_v config is phi-3-mini-128K's plus the image
    side, so without it, it is a plain phi3 one."""
    return config.replace(model_type="phi3", vision=None)


def head_shapes(config: Phi3Config) -> dict:
    """The separators and the projection, by name under `model.vision_embed_tokens.`."""
    C4, D = 4 * config.vision.image_dim_out, config.hidden_size
    return {"glb_GN": (1, 1, C4), "sub_GN": (1, 1, 1, C4),
            "img_projection.0.weight": (D, C4), "img_projection.0.bias": (D,),
            "img_projection.2.weight": (D, D), "img_projection.2.bias": (D,)}


def parameter_shapes(config: Phi3Config, tower_prefix: str = WRITTEN_TOWER) -> dict:
    """Every tensor by checkpoint name: the decoder's, the tower's under `tower_prefix`, the
    separators and the projection (592 tensors, 4,146,621,440 weights for the published model)."""
    shapes = weights.parameter_shapes(decoder_config(config))
    shapes.update({tower_prefix + n: s for n, s in clip_tensor_shapes(config.vision.clip).items()})
    shapes.update({VISION + n: s for n, s in head_shapes(config).items()})
    return shapes


def stored_shapes(config: Phi3Config, names) -> tuple:
    """(shapes by the names a checkpoint holding tensors `names` uses, names it may hold that are
    not read): the tower with transformers 4's `vision_model.` level or without it, the embedding
    under EMBED, or under its alias WTE only (then read from there), or under both (WTE not read).
    """
    style4 = any(n.startswith(WRITTEN_TOWER) for n in names)
    shapes = parameter_shapes(config, WRITTEN_TOWER if style4 else TOWER)
    ignored = checkpoint.tied_copies(config)
    if WTE in names and EMBED not in names:        # the table under its second name only
        shapes = {(WTE if n == EMBED else n): s for n, s in shapes.items()}
    elif WTE in names:
        ignored += (WTE,)
    return shapes, ignored


def init_parameters(config: Phi3Config, seed: int = 0) -> dict:
    """Random weights: the decoder's as Phi3's, the tower's as init_clip_weights, the separators
    and projection matrices normal(0, initializer_range), the projection's biases zeros."""
    params = weights.init_parameters(decoder_config(config), seed)
    rng = np.random.default_rng([seed, 1])             # the image side's own stream
    std = config.initializer_range
    tower = init_clip_weights(config.vision.clip, rng, std)
    params.update({WRITTEN_TOWER + n: w for n, w in tower.items()})
    for name, shape in head_shapes(config).items():
        params[VISION + name] = (np.zeros(shape, np.float32) if name.endswith(".bias") else
                                 rng.standard_normal(shape, np.float32) * np.float32(std))
    return params


def image_slots(ids):
    """Where the images go: bool [B, T], true where -1e9 < id < 0."""
    return (ids > -MAX_INPUT_ID) & (ids < 0)


def place_images(x, slots, vectors: list):
    """A copy of x [B, T, D] whose image slots (bool [B, T]) hold the images' vectors, each
    [n_k, D], one after another in row-major order over [B, T]."""
    placed = sum(len(v) for v in vectors)
    if placed != int(slots.sum()):
        raise InvalidInputError(f"input_ids hold {int(slots.sum())} image slots but the images "
                                f"give {placed} vectors")
    x = x.copy()
    x[slots] = np.concatenate(vectors).astype(x.dtype)      # [sum n_k, D] into the slots
    return x


class Phi3V:
    """Phi-3-vision: `Phi3V.from_pretrained(dir)` (or `tinyphi3.Phi3.from_pretrained(dir)`),
    then `model(ids, pixel_values, image_sizes)` -> logits. `Phi3V(config, params=None, seed=0)`
    builds one from tensors by checkpoint name (either CLIP naming), or with random weights."""

    quantization = None                # no 4-bit phi3_v checkpoint (from_pretrained refuses one)

    def __init__(self, config: Phi3Config, params: dict | None = None, seed: int = 0):
        if config.vision is None:
            raise ConfigError(f"config: model_type {config.model_type!r} is not 'phi3_v'")
        self.config = config
        params = init_parameters(config, seed) if params is None else dict(params)
        if EMBED not in params and WTE in params:      # a file that stores only the alias
            params[EMBED] = params[WTE]
        params.pop(WTE, None)
        heads = {VISION + n: s for n, s in head_shapes(config).items()}
        decoder = weights.parameter_shapes(decoder_config(config))
        tower = {n: w for n, w in params.items() if n.startswith(TOWER)}
        for name, shape in (decoder | heads).items():
            if name not in params:
                raise InvalidInputError(f"missing tensor {name!r}")
            if tuple(np.shape(params[name])) != shape:
                raise InvalidInputError(f"tensor {name!r} has shape {np.shape(params[name])}, "
                                        f"expected {shape}")
        unknown = [n for n in params if n not in decoder and n not in heads and n not in tower]
        if unknown:
            raise InvalidInputError(f"unexpected tensor {unknown[0]!r}: not a phi3_v tensor")
        self.decoder = model.Phi3(decoder_config(config), {n: params[n] for n in decoder})
        self.tower = clip_weights_from(tower, config.vision.clip, TOWER)   # 5-style names
        self.head = {n.removeprefix(VISION): params[n] for n in heads}

    @property
    def params(self) -> dict:
        """Every weight by the published checkpoint's name (the tower's with `vision_model.`)."""
        return (self.decoder.params | {WRITTEN_TOWER + n: w for n, w in self.tower.items()}
                | {VISION + n: w for n, w in self.head.items()})

    def num_parameters(self) -> int:
        return sum(int(np.prod(np.shape(w))) for w in self.params.values())

    # ---- checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str | None = None,
                        dtype: str = "float32") -> "Phi3V":
        """Load a phi3_v directory (config.json + safetensors, single or sharded), its tower
        named as transformers 4 (`img_processor.vision_model.`, the published file) or 5 does.
        Float32 on the host only: no other backend or dtype, no 4-bit checkpoint."""
        if backend is not None or dtype != "float32":
            raise InvalidInputError(f"a phi3_v model loads in float32 on the host only, not "
                                    f"backend={backend!r}, dtype={dtype!r}")
        config = checkpoint.load_config(path)
        if config.vision is None:
            raise CheckpointError(f"{path}: model_type {config.model_type!r} is not 'phi3_v'; "
                                  f"load it with Phi3.from_pretrained")
        if quant_checkpoint.quantization_config(path) is not None:
            raise CheckpointError(f"{path}: a 4-bit phi3_v checkpoint is not supported")
        index = checkpoint.tensor_index(path)
        shapes, ignored = stored_shapes(config, index)
        checkpoint.check_size(config, sum(math.prod(s) for s in shapes.values()), index)
        params = checkpoint.load_tensors(path, shapes, ignored=ignored, index=index)
        if WTE in ignored and not np.array_equal(index[WTE].get(WTE).astype(np.float32),
                                                 params[EMBED]):
            raise CheckpointError(f"{path}: {WTE} differs from {EMBED}; the model ties them (one "
                                  f"table), so which one to use is ambiguous")
        return cls(config, params)

    def save_pretrained(self, path, dtype="float32", max_shard_bytes=None,
                        config_layout="rope_scaling"):
        """Write config.json (model_type phi3_v) and the tensors under the published names."""
        checkpoint.save(path, self.config, self.params, dtype=dtype,
                        max_shard_bytes=max_shard_bytes, config_layout=config_layout)

    # ---- forward ----------------------------------------------------------------------------
    def image_features(self, pixel_values, image_sizes) -> list:
        """Each image's vectors in the decoder's space: N arrays [n_tokens, D]."""
        v = self.config.vision
        return image_embeddings(pixel_values, image_sizes, self.tower, v.clip, v.layer_idx,
                                self.head, self.head)

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
        x = embedding(np.clip(ids, 0, V - 1), self.decoder.params[EMBED])     # [B, T, D]
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

    def new_cache(self, batch_size: int = 1, capacity: int = 0):
        """An empty KV cache of the decoder (tinyphi3.inference.cache): the images' vectors pass
        through it as any token's do, so after the prefill, decoding is plain text."""
        return self.decoder.new_cache(batch_size, capacity)

    def weight_bytes(self) -> int:
        """Bytes the weights take in memory: the decoder's, the tower's and the projection's."""
        return sum(int(np.asarray(w).nbytes) for w in self.params.values())

    @staticmethod
    def _check_ids(input_ids):
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be a non-empty integer array [B, T], "
                                    f"got {ids.dtype} with shape {ids.shape}")
        return ids


model.MODEL_CLASSES["phi3_v"] = Phi3V      # tinyphi3.Phi3.from_pretrained's dispatch
