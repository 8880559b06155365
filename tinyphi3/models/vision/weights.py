"""Phi-3-vision's tensors: their checkpoint names and shapes, the three parts they form, and their
random initialisation (tinyphi3.models.weights is the decoder's). Names under
`model.vision_embed_tokens.` (REFERENCE-vision §1.4):

    img_processor.vision_model.*      the CLIP tower (transformers 5 names lack `vision_model.`)
    sub_GN [1, 1, 1, 4C], glb_GN [1, 1, 4C]                        the learnt separators
    img_projection.0.{weight [D, 4C], bias [D]}, img_projection.2.{weight [D, D], bias [D]}

Parts (what a training run may freeze): "tower" the CLIP tower; "projector" the separators and
the projection; "decoder" everything else (the language model, its embedding table included).
"""

import numpy as np

from tinyphi3.config import Phi3Config
from tinyphi3.errors import InvalidInputError
from tinyphi3.io import checkpoint
from tinyphi3.models import weights
from tinyphi3.models.vision.clip import (clip_tensor_shapes, init_clip_weights,
                                         strip_clip_prefix)

VISION = "model.vision_embed_tokens."
TOWER = VISION + "img_processor."              # + "vision_model." in transformers-4 names
WRITTEN_TOWER = TOWER + "vision_model."        # the published checkpoint's names, which we write
EMBED = "model.embed_tokens.weight"
WTE = VISION + "wte.weight"                    # the same table under a second name (some files)
PARTS = ("tower", "projector", "decoder")


def part_of(name: str) -> str:
    """Which part a tensor (by checkpoint name) belongs to: "tower", "projector" or "decoder"."""
    if name.startswith(TOWER):
        return "tower"
    return "projector" if name.startswith(VISION) else "decoder"


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


def published_name(name: str) -> str:
    """The published checkpoint's name of a tensor a checkpoint stores as `name` (see
    stored_shapes): the tower under WRITTEN_TOWER, the embedding as EMBED."""
    if name == WTE:
        return EMBED
    tower = strip_clip_prefix(name, TOWER)
    return name if tower is None else WRITTEN_TOWER + tower


def split_parameters(config: Phi3Config, params: dict) -> tuple:
    """Tensors by checkpoint name -> (the decoder's, the tower's under its prefix, the separators'
    and projection's by their short names), each shape checked (InvalidInputError names a missing,
    unknown or misshapen tensor; the tower's are checked by clip_weights_from). The embedding may
    come under its alias WTE alone."""
    params = dict(params)
    if EMBED not in params and WTE in params:      # a file that stores only the alias
        params[EMBED] = params[WTE]
    params.pop(WTE, None)
    heads = {VISION + n: s for n, s in head_shapes(config).items()}
    decoder = weights.parameter_shapes(decoder_config(config))
    for name, shape in (decoder | heads).items():
        if name not in params:
            raise InvalidInputError(f"missing tensor {name!r}")
        if tuple(np.shape(params[name])) != shape:
            raise InvalidInputError(f"tensor {name!r} has shape {np.shape(params[name])}, "
                                    f"expected {shape}")
    unknown = [n for n in params if n not in decoder | heads and not n.startswith(TOWER)]
    if unknown:
        raise InvalidInputError(f"unexpected tensor {unknown[0]!r}: not a phi3_v tensor")
    tower = {n: w for n, w in params.items() if n.startswith(TOWER)}
    head = {n.removeprefix(VISION): params[n] for n in heads}
    return {n: params[n] for n in decoder}, tower, head


def init_image_side(config: Phi3Config, seed: int = 0, positions: str = "random") -> dict:
    """Random weights of the tower, separators and projection (not the decoder's): the tower's
    as init_clip_weights, the separators and projection matrices normal(0, initializer_range),
    the projection's biases zeros; from their own stream of `seed`, whatever the decoder is.
    positions: the tower's position embeddings, "random" or "sincos" (init_clip_weights)."""
    rng = np.random.default_rng([seed, 1])
    std = config.initializer_range
    tower = init_clip_weights(config.vision.clip, rng, std, positions)
    params = {WRITTEN_TOWER + n: w for n, w in tower.items()}
    for name, shape in head_shapes(config).items():
        params[VISION + name] = (np.zeros(shape, np.float32) if name.endswith(".bias") else
                                 rng.standard_normal(shape, np.float32) * np.float32(std))
    return params


def init_parameters(config: Phi3Config, seed: int = 0) -> dict:
    """Random weights of the whole model: the decoder's as Phi3's, the image side's as
    init_image_side."""
    return weights.init_parameters(decoder_config(config), seed) | init_image_side(config, seed)
