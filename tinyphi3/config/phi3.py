"""Model configuration: one type for every Phi-3 variant, read from and written to HF `config.json`.

The shared fields and phi-3-mini/medium/128K's layout are here; phi-3-small's section (its
file layout, defaults and checks) is tinyphi3/config/small.py; phi-3-vision's (the image side of
a "phi3_v" file: img_processor, embd_layer) is tinyphi3/config/vision.py; the presets are
presets.py.

Shape letters: tinyphi3/config/__init__.py.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tinyphi3.config import small
from tinyphi3.config.small import FILE_KEYS
from tinyphi3.config.vision import VisionConfig
from tinyphi3.errors import ConfigError

MODEL_TYPES = ("phi3", "phi3small", "phi3_v")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


# field -> (what it must be, the check): every field config.json sets, checked before any use
FIELD_TYPES = {
    "rope_theta": ("a positive number", lambda v: _is_number(v) and v > 0),
    "partial_rotary_factor": ("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "rms_norm_eps": ("a positive number", lambda v: _is_number(v) and v > 0),
    "initializer_range": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "tie_word_embeddings": ("true or false", lambda v: isinstance(v, bool)),
    "hidden_act": ("a string", lambda v: isinstance(v, str)),
    "model_type": ("a string", lambda v: isinstance(v, str)),
    "sliding_window": ("a positive integer or null", lambda v: v is None or _is_int(v) and v > 0),
    "bos_token_id": ("a token id or null", lambda v: v is None or _is_int(v) and v >= 0),
    "pad_token_id": ("a token id or null", lambda v: v is None or _is_int(v) and v >= 0),
    "eos_token_id": ("a token id, a list of them, or null",
                     lambda v: v is None or _is_int(v) and v >= 0
                     or isinstance(v, list) and all(_is_int(i) and i >= 0 for i in v)),
    "rope_scaling": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "extra": ("an object", lambda v: isinstance(v, dict)),
}


def check_types(config) -> None:
    """Raise ConfigError naming the first field whose value has the wrong type or range."""
    for name, (expected, ok) in FIELD_TYPES.items():
        value = getattr(config, name)
        if not ok(value):
            raise ConfigError(f"config: {name} must be {expected}, got {value!r}")
    scaling = config.rope_scaling
    if scaling is not None:
        if not isinstance(scaling.get("type"), str):
            raise ConfigError(f"config: rope_scaling.type must be a string, "
                              f"got {scaling.get('type')!r}")
        for name in ("short_factor", "long_factor"):
            factors = scaling.get(name)
            if factors is not None and (not isinstance(factors, list)
                                        or not all(_is_number(f) for f in factors)):
                raise ConfigError(f"config: rope_scaling.{name} must be a list of numbers, "
                                  f"got {factors!r}")
        factor = scaling.get("attention_factor")
        if factor is not None and not (_is_number(factor) and factor > 0):
            raise ConfigError(f"config: rope_scaling.attention_factor must be a positive number "
                              f"or null, got {factor!r}")


@dataclass
class Phi3Config:
    """Hyper-parameters of a Phi-3 decoder, with the names of Hugging Face's `Phi3Config`.

    `rope_scaling` is None for plain RoPE, or a dict
    `{"type": "longrope", "short_factor": [...], "long_factor": [...]}` (optionally with
    `"attention_factor"`), whichever of the two `config.json` layouts it was read from.

    phi-3-small (`model_type` "phi3small") is the same type with the fields of its own section
    switched on: LayerNorm, GEGELU, μP multipliers, block-sparse attention. Its `config.json`
    names three shared fields differently (see `small.KEYS` in tinyphi3/config/small.py):
    `ff_intermediate_size` is `intermediate_size`, `rope_embedding_base` is `rope_theta`, and
    `layer_norm_epsilon` is `rms_norm_eps` (read it as `norm_eps`: the epsilon of whichever norm the
    variant uses). Build one with `phi3small_config(**changes)`, which starts from the published
    defaults.
    """

    vocab_size: int = 32064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    partial_rotary_factor: float = 1.0
    sliding_window: int | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 32000
    pad_token_id: int | None = 32000
    model_type: str = "phi3"
    # ---- phi-3-small only (model_type "phi3small"); the defaults below leave them off ----------
    rope_position_scale: float = 1.0          # RoPE angle = position * scale * inv_freq
    gegelu_limit: float | None = None         # GEGELU clamps its inputs at this limit
    dense_attention_every_n_layers: int | None = None   # layer i dense when (i + 1) % n == 0
    blocksparse_block_size: int = 64
    blocksparse_num_local_blocks: int = 16
    blocksparse_vert_stride: int = 8
    blocksparse_homo_head_pattern: bool = False
    mup_use_scaling: bool = False             # attention scale 1/(hd / mup_attn_multiplier)
    mup_width_multiplier: float | None = None       # logits are divided by it
    mup_embedding_multiplier: float | None = None   # embeddings are multiplied by it
    mup_attn_multiplier: float = 1.0
    # Ids whose logits are set to the float32 minimum (vocabulary padding and unused specials).
    # Not a key of the published config.json: its model reads `config.dummy_token_indices` from
    # its tokenizer module. None means that default: `small.DUMMY_TOKEN_IDS` when the
    # vocabulary is the published 100352, none otherwise. tinyphi3 writes the key only when set.
    dummy_token_indices: list | None = None
    # ---- phi-3-vision only (model_type "phi3_v"): the image side; the decoder is phi3's --------
    vision: VisionConfig | None = None
    extra: dict = field(default_factory=dict, repr=False)   # keys we carry but do not use

    def __post_init__(self):
        self.validate()

    # ---- derived sizes ------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def is_phi3small(self) -> bool:
        return self.model_type == "phi3small"

    @property
    def norm_eps(self) -> float:
        """The epsilon of the model's norms: RMSNorm (phi3) or LayerNorm (phi3small)."""
        return self.rms_norm_eps

    @property
    def attention_scale(self) -> float:
        """Softmax scale: 1/sqrt(hd), or with μP 1/(hd / mup_attn_multiplier) (phi-3-small)."""
        if self.mup_use_scaling:
            return self.mup_attn_multiplier / self.head_dim
        return self.head_dim ** -0.5

    def uses_blocksparse(self, layer: int) -> bool:
        """phi-3-small: layer i (0-based) is dense when (i + 1) % dense_attention_every_n_layers
        == 0, block-sparse otherwise (every layer when n is 0 or null)."""
        if not self.is_phi3small:
            return False
        n = self.dense_attention_every_n_layers
        return not (n and (layer + 1) % n == 0)

    @property
    def dummy_token_ids(self) -> tuple:
        """The ids whose logits are masked (see the field `dummy_token_indices`)."""
        if self.dummy_token_indices is not None:
            return tuple(self.dummy_token_indices)
        if self.is_phi3small and self.vocab_size == small.VOCAB_SIZE:
            return small.DUMMY_TOKEN_IDS
        return ()

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else "longrope"

    @property
    def longrope_attention_factor(self) -> float:
        """LongRoPE magnitude scaling: sqrt(1 + ln s / ln L0), s = L / L0
        (Phi-3 report §2; LongRoPE).

        L = max_position_embeddings, L0 = original_max_position_embeddings; 1 when s <= 1.
        A config may give `attention_factor` explicitly, which then wins.
        """
        if self.rope_scaling and self.rope_scaling.get("attention_factor") is not None:
            return float(self.rope_scaling["attention_factor"])
        s = self.max_position_embeddings / self.original_max_position_embeddings
        if s <= 1.0:
            return 1.0
        return math.sqrt(1.0 + math.log(s) / math.log(self.original_max_position_embeddings))

    def longrope_magnitude(self, long: bool) -> float:
        """The factor on cos and sin with the long or the short factor set: phi-3-mini-128K's
        longrope_attention_factor on both; phi-3-small-128K's own rule
        (tinyphi3.config.small.longrope_magnitude)."""
        if self.is_phi3small:
            return small.longrope_magnitude(self, long)
        return self.longrope_attention_factor

    def validate(self) -> None:
        """Raise ConfigError when a value has the wrong type or range or sizes are inconsistent,
        naming the keys involved."""
        check_types(self)
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                    "original_max_position_embeddings")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config: {key} must be a positive integer, got {value!r}")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"config: model_type {self.model_type!r} is not supported "
                              f"(supported: {', '.join(map(repr, MODEL_TYPES))})")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"config: num_attention_heads {self.num_attention_heads} is not "
                              f"divisible by num_key_value_heads {self.num_key_value_heads}")
        if not 0.0 < self.partial_rotary_factor <= 1.0 or self.rotary_dim % 2:
            raise ConfigError(f"config: partial_rotary_factor {self.partial_rotary_factor} gives "
                              f"an odd or empty rotary dimension {self.rotary_dim}")
        act = "gegelu" if self.is_phi3small else "silu"
        if self.hidden_act != act:
            raise ConfigError(f"config: hidden_act {self.hidden_act!r} is not supported "
                              f"({self.model_type} uses {act!r})")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type")
            if kind not in ("longrope", "su"):
                raise ConfigError(f"config: rope_scaling type {kind!r} is not supported "
                                  f"(supported: 'longrope', 'su')")
            for name in ("short_factor", "long_factor"):
                factors = self.rope_scaling.get(name)
                if factors is None or len(factors) != self.rotary_dim // 2:
                    got = None if factors is None else len(factors)
                    raise ConfigError(f"config: rope_scaling.{name} must have rotary_dim/2 = "
                                      f"{self.rotary_dim // 2} entries, got {got}")
                if any(not f > 0 for f in factors):
                    raise ConfigError(f"config: rope_scaling.{name} must be positive")
        if (self.vision is not None) != (self.model_type == "phi3_v"):
            raise ConfigError(f"config: model_type {self.model_type!r} "
                              + ("has no" if self.vision is None else "takes no")
                              + " image side (img_processor, embd_layer: model_type 'phi3_v')")
        if self.vision is not None and not isinstance(self.vision, VisionConfig):
            raise ConfigError(f"config: vision must be a VisionConfig, got {self.vision!r}")
        if self.is_phi3small:
            small.validate(self)
            return
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in small.FIELDS:
            if getattr(self, key) != defaults[key]:
                raise ConfigError(f"config: {key} is an option of model_type 'phi3small', not "
                                  f"{self.model_type!r}")

    # ---- Hugging Face config.json -----------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "Phi3Config":
        """Build from a HF config dict, in either layout (rope_theta + rope_scaling, or
        transformers-5 rope_parameters), or in phi-3-small's layout (model_type "phi3small")."""
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}")
        if d.get("model_type") == "phi3small":
            return small.from_dict(cls, d)
        d = {k: v for k, v in d.items() if k not in FILE_KEYS}
        vision = None
        if d.get("model_type") == "phi3_v":             # the image side: config/vision.py
            vision = VisionConfig.from_dict(d.pop("img_processor", None),
                                            d.pop("embd_layer", None))
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_scaling", "vision"}
        known -= set(small.FIELDS)
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        rope_scaling = d.pop("rope_scaling", None)
        rope_parameters = d.pop("rope_parameters", None)
        for name, value in (("rope_scaling", rope_scaling), ("rope_parameters", rope_parameters)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"config: {name} must be an object or null, "
                                  f"got {value!r}")
        for key in ("num_attention_heads", "hidden_size", "max_position_embeddings"):
            if key in kwargs and not (_is_int(kwargs[key]) and kwargs[key] > 0):
                raise ConfigError(f"config: {key} must be a positive integer, "
                                  f"got {kwargs[key]!r}")
        if rope_parameters:                   # transformers 5 layout
            rp = dict(rope_parameters)
            kind = rp.pop("rope_type", rp.pop("type", "default"))
            kwargs["rope_theta"] = rp.pop("rope_theta", kwargs.get("rope_theta", 10000.0))
            if "partial_rotary_factor" in rp:
                kwargs["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
            if "original_max_position_embeddings" in rp:
                kwargs["original_max_position_embeddings"] = rp.pop(
                    "original_max_position_embeddings")
            if kind == "default":
                rope_scaling = None
            else:
                rp.pop("factor", None)        # derived from the two lengths
                rope_scaling = {"type": kind, **rp}
        if rope_scaling is not None:
            rope_scaling = dict(rope_scaling)
            kind = rope_scaling.pop("rope_type", None) or rope_scaling.pop("type", None)
            rope_scaling.pop("type", None)
            if kind == "su":                  # the old name of the same method
                kind = "longrope"
            rope_scaling = {"type": kind, **rope_scaling}
        kwargs.setdefault("original_max_position_embeddings",
                          kwargs.get("max_position_embeddings", 4096))
        for key in ("num_key_value_heads",):
            if kwargs.get(key) is None:
                kwargs[key] = kwargs.get("num_attention_heads", 32)
        if "head_dim" in d and d["head_dim"] is not None:
            head_dim = d.pop("head_dim")
            if not _is_int(head_dim):
                raise ConfigError(f"config: head_dim must be an integer, got {head_dim!r}")
            if head_dim * kwargs.get("num_attention_heads", 32) != kwargs.get("hidden_size", 3072):
                raise ConfigError(f"config: head_dim {head_dim} x num_attention_heads must equal "
                                  f"hidden_size {kwargs.get('hidden_size')}")
        try:
            return cls(rope_scaling=rope_scaling, vision=vision, extra=d, **kwargs)
        except TypeError as e:
            raise ConfigError(f"config: {e}") from None

    def to_dict(self, layout: str = "rope_scaling") -> dict:
        """HF config dict. layout "rope_scaling" is what published snapshots use;
        "rope_parameters" is what transformers 5 writes. phi3small has one layout, its own."""
        if self.is_phi3small:
            return small.to_dict(self)
        d = {k: v for k, v in self.extra.items() if k not in ("rope_scaling", "rope_parameters")}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "rope_scaling", "vision", *small.FIELDS):
                d[f.name] = getattr(self, f.name)
        d["architectures"] = ["Phi3ForCausalLM"]
        if self.vision is not None:
            d.update(self.vision.to_dict())
            d["architectures"] = ["Phi3VForCausalLM"]
        if layout == "rope_scaling":
            d["rope_scaling"] = None if self.rope_scaling is None else dict(self.rope_scaling)
        elif layout == "rope_parameters":
            theta = d.pop("rope_theta")
            params = {"rope_type": self.rope_type, "rope_theta": theta,
                      "partial_rotary_factor": self.partial_rotary_factor}
            if self.rope_scaling is not None:
                params.update({k: v for k, v in self.rope_scaling.items() if k != "type"})
                params["original_max_position_embeddings"] = self.original_max_position_embeddings
            d.pop("partial_rotary_factor")
            d["rope_parameters"] = params
        else:
            raise ValueError(f"unknown layout {layout!r}")
        return d

    @classmethod
    def from_json_file(cls, path) -> "Phi3Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(d)
        except ConfigError as e:              # name the file: "config: x ..." -> "<path>: x ..."
            message = str(e).removeprefix("config: ")
            raise ConfigError(f"{path}: {message}") from None

    def save(self, path, layout: str = "rope_scaling") -> None:
        Path(path).write_text(json.dumps(self.to_dict(layout), indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes) -> "Phi3Config":
        return dataclasses.replace(self, **changes)
