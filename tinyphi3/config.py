"""Model configuration: one type for every Phi-3 variant, read from and written to HF `config.json`.

Shape letters used in comments across tinyphi3:

    B   batch                 T   time (tokens in this call)     S   keys in the cache (past + T)
    C   hidden size           H   query heads                    KV  key/value heads
    hd  head dimension        g   queries per KV head (H // KV)  I   MLP intermediate size
    V   vocabulary size       rd  rotary dimensions (hd * partial_rotary_factor)
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError

# Keys that describe a saved file rather than the model; dropped on reading, rewritten on saving.
FILE_KEYS = ("torch_dtype", "dtype", "transformers_version", "_name_or_path", "architectures",
             "auto_map")


@dataclass
class Phi3Config:
    """Hyper-parameters of a Phi-3 decoder, with the names of Hugging Face's `Phi3Config`.

    `rope_scaling` is None for plain RoPE, or a dict
    `{"type": "longrope", "short_factor": [...], "long_factor": [...]}` (optionally with
    `"attention_factor"`), whichever of the two `config.json` layouts it was read from.
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
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else "longrope"

    @property
    def longrope_attention_factor(self) -> float:
        """LongRoPE magnitude scaling: sqrt(1 + ln s / ln L0), s = L / L0 (Phi-3 report §2; LongRoPE).

        L = max_position_embeddings, L0 = original_max_position_embeddings; 1 when s <= 1.
        A config may give `attention_factor` explicitly, which then wins.
        """
        if self.rope_scaling and self.rope_scaling.get("attention_factor") is not None:
            return float(self.rope_scaling["attention_factor"])
        s = self.max_position_embeddings / self.original_max_position_embeddings
        if s <= 1.0:
            return 1.0
        return math.sqrt(1.0 + math.log(s) / math.log(self.original_max_position_embeddings))

    def validate(self) -> None:
        """Raise ConfigError when sizes are inconsistent, naming the keys involved."""
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                    "original_max_position_embeddings")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config: {key} must be a positive integer, got {value!r}")
        if self.model_type != "phi3":
            raise ConfigError(f"config: model_type {self.model_type!r} is not supported "
                              f"(supported: 'phi3')")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"config: num_attention_heads {self.num_attention_heads} is not "
                              f"divisible by num_key_value_heads {self.num_key_value_heads}")
        if not 0.0 < self.partial_rotary_factor <= 1.0 or self.rotary_dim % 2:
            raise ConfigError(f"config: partial_rotary_factor {self.partial_rotary_factor} gives "
                              f"an odd or empty rotary dimension {self.rotary_dim}")
        if self.hidden_act != "silu":
            raise ConfigError(f"config: hidden_act {self.hidden_act!r} is not supported "
                              f"(Phi-3 uses 'silu')")
        if self.sliding_window is not None and (
                not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
            raise ConfigError(f"config: sliding_window must be a positive integer or null, "
                              f"got {self.sliding_window!r}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("config: rms_norm_eps and rope_theta must be positive")
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

    # ---- Hugging Face config.json -----------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "Phi3Config":
        """Build from a HF config dict, in either layout (rope_theta + rope_scaling, or
        transformers-5 rope_parameters)."""
        d = {k: v for k, v in d.items() if k not in FILE_KEYS}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_scaling"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        rope_scaling = d.pop("rope_scaling", None)
        rope_parameters = d.pop("rope_parameters", None)
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
            if head_dim * kwargs.get("num_attention_heads", 32) != kwargs.get("hidden_size", 3072):
                raise ConfigError(f"config: head_dim {head_dim} x num_attention_heads must equal "
                                  f"hidden_size {kwargs.get('hidden_size')}")
        try:
            return cls(rope_scaling=rope_scaling, extra=d, **kwargs)
        except TypeError as e:
            raise ConfigError(f"config: {e}") from None

    def to_dict(self, layout: str = "rope_scaling") -> dict:
        """HF config dict. layout "rope_scaling" is what published snapshots use;
        "rope_parameters" is what transformers 5 writes."""
        d = {k: v for k, v in self.extra.items() if k not in ("rope_scaling", "rope_parameters")}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "rope_scaling"):
                d[f.name] = getattr(self, f.name)
        d["architectures"] = ["Phi3ForCausalLM"]
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
        return cls.from_dict(d)

    def save(self, path, layout: str = "rope_scaling") -> None:
        Path(path).write_text(json.dumps(self.to_dict(layout), indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes) -> "Phi3Config":
        return dataclasses.replace(self, **changes)


# ---- presets ----------------------------------------------------------------------------------
def _mini_128k_rope_scaling() -> dict:
    text = resources.files("tinyphi3").joinpath("presets/longrope_factors_mini_128k.json").read_text()
    return {"type": "longrope", **json.loads(text)}


def preset(name: str) -> Phi3Config:
    """A named configuration: the report's models, and tiny ones for tests and lessons."""
    makers = {
        # The report, §2 (and REFERENCE.md): 3072 x 32 layers, 32 heads, 32064 vocab.
        "phi-3-mini-4k": lambda: Phi3Config(sliding_window=2047),
        "phi-3-mini-128k": lambda: Phi3Config(max_position_embeddings=131072,
                                              rope_scaling=_mini_128k_rope_scaling(),
                                              sliding_window=262144),
        "phi-3-medium-4k": lambda: Phi3Config(hidden_size=5120, intermediate_size=17920,
                                              num_hidden_layers=40, num_attention_heads=40,
                                              num_key_value_heads=10, sliding_window=2047),
        # Tiny models: same code paths, sizes a test runs in milliseconds.
        "tiny": lambda: Phi3Config(vocab_size=512, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, max_position_embeddings=256,
                                   original_max_position_embeddings=256,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0),
        "tiny-gqa": lambda: preset("tiny").replace(num_key_value_heads=2, sliding_window=16),
        "tiny-longrope": lambda: preset("tiny").replace(
            max_position_embeddings=256, original_max_position_embeddings=32,
            rope_scaling={"type": "longrope",
                          "short_factor": [1.0 + 0.1 * i for i in range(8)],
                          "long_factor": [1.0 + 2.0 * i for i in range(8)]}),
    }
    if name not in makers:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(makers)}")
    return makers[name]()


PRESETS = ("phi-3-mini-4k", "phi-3-mini-128k", "phi-3-medium-4k", "tiny", "tiny-gqa",
           "tiny-longrope")
