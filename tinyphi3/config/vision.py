"""Phi-3-vision's section of the configuration (model_type "phi3_v"): the image side.

A phi3_v config.json is phi-3-mini-128K's plus two objects (REFERENCE-vision §1.1):

    "img_processor": {"image_dim_out": 1024, "model_name": "openai/clip-vit-large-patch14-336",
                      "name": "clip_vision_model", "num_img_tokens": 144}
    "embd_layer":    {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                      "projection_cls": "mlp", "use_hd_transform": true,
                      "with_learnable_separator": true}

The published code hard-codes its CLIP tower (ViT-L/14 at 336 pixels); tinyphi3 also reads an
optional `img_processor.clip_config` (CLIPVisionConfig's names) and `img_processor.layer_idx`,
so that a tiny tower can stand in for tests and training. Keys absent from the file take the
published checkpoint's values. Only the published path is implemented: the HD transform with
learnable separators, order "sub_glb", an MLP projection, patch features without the class token.
"""

import math
from dataclasses import asdict, dataclass, field, fields

from tinyphi3.errors import ConfigError, InvalidInputError

CLIP_ACTIVATIONS = ("quick_gelu", "gelu")       # transformers' hidden_act names of the tower


@dataclass(frozen=True)
class ClipConfig:
    """Hyper-parameters of a CLIP vision tower, with the names of `CLIPVisionConfig`."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    layer_norm_eps: float
    hidden_act: str = "quick_gelu"
    num_channels: int = 3

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int and not (type(value) is int and value > 0):
                raise InvalidInputError(f"clip_config: {f.name} must be a positive integer, "
                                        f"got {value!r}")
        eps = self.layer_norm_eps
        if type(eps) not in (int, float) or not (math.isfinite(eps) and eps > 0):
            raise InvalidInputError(f"clip_config: layer_norm_eps must be a positive number, "
                                    f"got {eps!r}")
        if self.hidden_act not in CLIP_ACTIVATIONS:
            raise InvalidInputError(f"clip_config: hidden_act {self.hidden_act!r} is not "
                                    f"supported; choose one of {', '.join(CLIP_ACTIVATIONS)}")
        if self.image_size % self.patch_size:
            raise InvalidInputError(f"clip_config: image_size {self.image_size} is not a "
                                    f"multiple of patch_size {self.patch_size}")
        if self.grid % 2:
            raise InvalidInputError(f"clip_config: {self.grid} patches per side is odd; the 2x2 "
                                    f"merge of Phi-3-vision needs an even number")
        if self.hidden_size % self.num_attention_heads:
            raise InvalidInputError(f"clip_config: hidden_size {self.hidden_size} is not a "
                                    f"multiple of num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "ClipConfig":
        """A config from `img_processor.clip_config` of a config.json; keys it lacks take the
        published tower's values, keys that are not fields (projection_dim, ...) are ignored.
        None or {} gives the published tower (the official code hard-codes it)."""
        if d is not None and not isinstance(d, dict):
            raise InvalidInputError(f"clip_config must be an object, got {d!r}")
        names = {f.name for f in fields(cls)}
        values = {f.name: getattr(CLIP_VIT_L14_336, f.name) for f in fields(cls)}
        values.update({k: v for k, v in (d or {}).items() if k in names})
        return cls(**values)

    @property
    def grid(self) -> int:
        """G: patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """G*G patches and the class token."""
        return self.grid * self.grid + 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# openai/clip-vit-large-patch14-336, as Phi-3-vision's image_embedding_phi3_v.py builds it
CLIP_VIT_L14_336 = ClipConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              layer_norm_eps=1e-5, hidden_act="quick_gelu")

# keys the official code reads whose only supported value is the published one, by section
FIXED = {"img_processor": {"name": "clip_vision_model", "type_feature": "patch"},
         "embd_layer": {"embedding_cls": "image"}}
# our field -> its section in config.json (the field's name is the key's)
SECTIONS = {"layer_idx": "img_processor", "image_dim_out": "img_processor",
            "num_img_tokens": "img_processor", "hd_transform_order": "embd_layer",
            "use_hd_transform": "embd_layer", "with_learnable_separator": "embd_layer",
            "projection_cls": "embd_layer"}
# what each field must be, checked before the values are compared with what is supported
KINDS = {"layer_idx": ("an integer", lambda v: type(v) is int),
         "image_dim_out": ("a positive integer", lambda v: type(v) is int and v > 0),
         "num_img_tokens": ("a positive integer", lambda v: type(v) is int and v > 0),
         "hd_transform_order": ("a string", lambda v: isinstance(v, str)),
         "use_hd_transform": ("true or false", lambda v: isinstance(v, bool)),
         "with_learnable_separator": ("true or false", lambda v: isinstance(v, bool)),
         "projection_cls": ("a string", lambda v: isinstance(v, str))}
ONLY = "only the published model's HD transform with learnable separators is implemented"


@dataclass(frozen=True)
class VisionConfig:
    """The image side of a phi3_v model; the decoder's fields are Phi3Config's own.

    clip: the tower (img_processor.clip_config; absent: ViT-L/14-336); layer_idx: which hidden
    state of the tower is the image's features (-2: the output of the last layer but one);
    image_dim_out: the tower's width C (the separators and the projection take 4C); the
    embd_layer switches, each with its only supported value; num_img_tokens: kept for the file,
    unused (the non-HD path's count; the HD count follows from each image's size).
    """

    clip: ClipConfig = CLIP_VIT_L14_336
    layer_idx: int = -2
    image_dim_out: int = 1024
    num_img_tokens: int = 144
    hd_transform_order: str = "sub_glb"
    use_hd_transform: bool = True
    with_learnable_separator: bool = True
    projection_cls: str = "mlp"
    carried: dict = field(default_factory=dict)   # {section: {key: value}} we keep but do not use

    def __post_init__(self):
        for name, (kind, ok) in KINDS.items():
            if not ok(getattr(self, name)):
                raise ConfigError(f"config: {SECTIONS[name]}.{name} must be {kind}, "
                                  f"got {getattr(self, name)!r}")
        L = self.clip.num_hidden_layers
        if not -(L + 1) <= self.layer_idx <= L:
            raise ConfigError(f"config: img_processor.layer_idx {self.layer_idx} is not a hidden "
                              f"state of the {L}-layer tower ({-(L + 1)}..{L})")
        if self.image_dim_out != self.clip.hidden_size:
            raise ConfigError(f"config: img_processor.image_dim_out {self.image_dim_out} must "
                              f"equal the tower's hidden_size {self.clip.hidden_size}")
        if self.hd_transform_order != "sub_glb":
            raise ConfigError(f"config: embd_layer.hd_transform_order "
                              f"{self.hd_transform_order!r} is not supported: only 'sub_glb' "
                              f"(the published checkpoint's order) is implemented")
        for name in ("use_hd_transform", "with_learnable_separator"):
            if getattr(self, name) is not True:
                raise ConfigError(f"config: embd_layer.{name} false is not supported: {ONLY}")
        if self.projection_cls != "mlp":
            raise ConfigError(f"config: embd_layer.projection_cls {self.projection_cls!r} is "
                              f"not supported: only 'mlp' (Linear, GELU, Linear) is implemented")
        for section, keys in FIXED.items():
            for key, value in keys.items():
                got = self.carried.get(section, {}).get(key, value)
                if got != value:
                    raise ConfigError(f"config: {section}.{key} {got!r} is not supported: "
                                      f"only {value!r} is implemented")

    @classmethod
    def from_dict(cls, img_processor: dict | None, embd_layer: dict | None) -> "VisionConfig":
        """From config.json's two objects (None: absent, the published values)."""
        sections = {"img_processor": img_processor, "embd_layer": embd_layer}
        for name, section in sections.items():
            if section is not None and not isinstance(section, dict):
                raise ConfigError(f"config: {name} must be an object, got {section!r}")
        sections = {name: dict(section or {}) for name, section in sections.items()}
        try:
            clip = ClipConfig.from_dict(sections["img_processor"].pop("clip_config", None))
        except InvalidInputError as e:
            message = str(e).removeprefix("clip_config: ").removeprefix("clip_config ")
            raise ConfigError(f"config: img_processor.clip_config: {message}") from None
        values = {name: sections[section].pop(name) for name, section in SECTIONS.items()
                  if name in sections[section]}
        values.setdefault("image_dim_out", clip.hidden_size)     # absent: the tower's width
        carried = {name: section for name, section in sections.items() if section}
        return cls(clip=clip, carried=carried, **values)

    def to_dict(self) -> dict:
        """config.json's two objects; clip_config and layer_idx only when not the published
        values (the published file has neither)."""
        sections = {name: dict(self.carried.get(name, {})) for name in ("img_processor",
                                                                         "embd_layer")}
        for name, section in SECTIONS.items():
            if name != "layer_idx" or self.layer_idx != -2:
                sections[section][name] = getattr(self, name)
        if self.clip != CLIP_VIT_L14_336:
            sections["img_processor"]["clip_config"] = asdict(self.clip)
        return sections
