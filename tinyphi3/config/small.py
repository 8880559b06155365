"""phi-3-small's section of the configuration: its config.json layout, defaults and checks.

Phi3Config holds phi-3-small's fields beside the shared ones, under their Hugging Face names
(config.json reads and writes one to one); this module holds what only phi-3-small needs: the
names its file gives three shared fields, the published defaults, the dummy vocabulary rows, the
checks of its fields, and reading and writing its layout (configuration_phi3_small.py in its
model repository).

phi-3-small-128K's `rope_scaling` is the object its positional_embedding.py reads (LongRopeConfig
there), and nothing else:

    {"type": "su" | "longrope", "short_factor": [hd/2 numbers], "long_factor": [hd/2 numbers],
     "original_max_position_embeddings": L0, "short_mscale": m_s, "long_mscale": m_l}

the two magnitudes optional (longrope_magnitude has their defaults).
"""

import dataclasses
import math

from tinyphi3.errors import ConfigError

FILE_KEYS = ("torch_dtype", "dtype", "transformers_version", "_name_or_path", "architectures",
             "auto_map")        # keys that describe a saved file, not the model

KEYS = {"ff_intermediate_size": "intermediate_size",     # its name: our field
                  "layer_norm_epsilon": "rms_norm_eps",
                  "rope_embedding_base": "rope_theta"}
FIELDS = ("rope_position_scale", "gegelu_limit", "dense_attention_every_n_layers",
                    "blocksparse_block_size", "blocksparse_num_local_blocks",
                    "blocksparse_vert_stride", "blocksparse_homo_head_pattern", "mup_use_scaling",
                    "mup_width_multiplier", "mup_embedding_multiplier", "mup_attn_multiplier",
                    "dummy_token_indices")
FILE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                         "num_key_value_heads", "max_position_embeddings", "hidden_act",
                         "initializer_range", "bos_token_id", "eos_token_id", "model_type",
                         "rope_position_scale", "gegelu_limit", "dense_attention_every_n_layers",
                         "blocksparse_block_size", "blocksparse_num_local_blocks",
                         "blocksparse_vert_stride", "blocksparse_homo_head_pattern",
                         "mup_use_scaling", "mup_width_multiplier", "mup_embedding_multiplier",
                         "mup_attn_multiplier")
# The published Phi3SmallConfig's defaults, by our field names (phi-3-small-8k's values).
DEFAULTS = dict(
    vocab_size=100352, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rope_theta=1e6, rope_position_scale=1.0, rms_norm_eps=1e-5, hidden_act="gegelu",
    gegelu_limit=20.0, dense_attention_every_n_layers=2, blocksparse_block_size=64,
    blocksparse_num_local_blocks=16, blocksparse_vert_stride=8,
    blocksparse_homo_head_pattern=False, mup_use_scaling=True, mup_width_multiplier=8.0,
    mup_embedding_multiplier=10.0, mup_attn_multiplier=1.0, initializer_range=0.02,
    bos_token_id=100257, eos_token_id=100257, pad_token_id=None, tie_word_embeddings=True,
    model_type="phi3small")
# Keys of the published file that the forward pass does not read (training options), written
# with their published values unless a loaded file said otherwise.
CARRIED = {"attention_dropout_prob": 0.0, "embedding_dropout_prob": 0.1,
                     "ffn_dropout_prob": 0.1, "gegelu_pad_to_256": True,
                     "pad_sequence_to_multiple_of_64": True, "reorder_and_upcast_attn": False,
                     "use_cache": True}
VOCAB_SIZE = 100352
# The keys of phi-3-small's rope_scaling (its LongRopeConfig refuses any other); the first three
# are required there, the magnitudes default.
ROPE_SCALING_KEYS = ("type", "short_factor", "long_factor", "original_max_position_embeddings",
                     "short_mscale", "long_mscale")


def _dummy_token_ids() -> tuple:
    """The ids phi-3-small's tokenizer (tokenization_phi3_small.py) lists as dummies; its model
    sets their logits to the dtype minimum. 91 of the 100352 rows:

        100256, 100264, 100265, 100267..100275   unused specials `<|dummy_id_0..11|>`
        100258..100260, 100276                   cl100k specials it does not use (fim, endofprompt)
        100277..100351                           padding of the vocabulary to 100352
    """
    ids = [100256, 100264, 100265, *range(100267, 100276), 100258, 100259, 100260, 100276,
           *range(100277, VOCAB_SIZE)]
    return tuple(sorted(ids))


DUMMY_TOKEN_IDS = _dummy_token_ids()


def validate(self) -> None:
    """The checks of phi-3-small's own fields (Phi3Config.validate calls it)."""
    for key in ("blocksparse_block_size", "blocksparse_num_local_blocks",
                "blocksparse_vert_stride"):
        value = getattr(self, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"config: {key} must be a positive integer, got {value!r}")
    n = self.dense_attention_every_n_layers
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ConfigError(f"config: dense_attention_every_n_layers must be a non-negative "
                          f"integer or null, got {n!r}")
    if not isinstance(self.blocksparse_homo_head_pattern, bool):
        raise ConfigError(f"config: blocksparse_homo_head_pattern must be true or false, "
                          f"got {self.blocksparse_homo_head_pattern!r}")
    for key in ("gegelu_limit", "mup_width_multiplier", "mup_embedding_multiplier"):
        value = getattr(self, key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"config: {key} must be a positive number or null, "
                              f"got {value!r}")
    for key in ("mup_attn_multiplier", "rope_position_scale"):
        value = getattr(self, key)
        if not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"config: {key} must be a positive number, got {value!r}")
    unsupported = {"sliding_window": (self.sliding_window, None),
                   "partial_rotary_factor": (self.partial_rotary_factor, 1.0)}
    for key, (value, plain) in unsupported.items():
        if value != plain:
            raise ConfigError(f"config: phi3small with {key} set is not supported "
                              f"(phi-3-small's {key} is {plain!r})")
    if self.rope_scaling is not None:
        validate_rope_scaling(self)
    ids = self.dummy_token_indices
    if ids is not None and (not isinstance(ids, list) or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size
            for i in ids)):
        raise ConfigError(f"config: dummy_token_indices must be token ids in "
                          f"[0, {self.vocab_size})")


def validate_rope_scaling(self) -> None:
    """phi-3-small-128K's LongRoPE object. Phi3Config.validate has already checked the type
    ('su' or 'longrope') and the two factor lists (hd/2 positive numbers each); here: no key
    outside ROPE_SCALING_KEYS, the original context L0 given and equal to the config's, positive
    magnitudes where given, and positions not scaled (the published LongRoPE path numbers the
    tokens 0, 1, 2, ... whatever rope_position_scale says)."""
    scaling = self.rope_scaling
    unknown = sorted(set(scaling) - set(ROPE_SCALING_KEYS))
    if unknown:
        raise ConfigError(f"config: rope_scaling.{unknown[0]} is not a key of phi3small's "
                          f"LongRoPE (its keys: {', '.join(ROPE_SCALING_KEYS)})")
    original = scaling.get("original_max_position_embeddings")
    if not isinstance(original, int) or isinstance(original, bool) or original <= 0:
        raise ConfigError(f"config: rope_scaling.original_max_position_embeddings must be a "
                          f"positive integer, got {original!r}")
    if original != self.original_max_position_embeddings:
        raise ConfigError(f"config: rope_scaling.original_max_position_embeddings {original} "
                          f"differs from original_max_position_embeddings "
                          f"{self.original_max_position_embeddings}")
    for key in ("short_mscale", "long_mscale"):
        value = scaling.get(key, 1.0)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value > 0):
            raise ConfigError(f"config: rope_scaling.{key} must be a positive number "
                              f"(leave it out for the default), got {value!r}")
    if self.rope_position_scale != 1.0:
        raise ConfigError(f"config: phi3small with rope_scaling takes rope_position_scale 1.0, "
                          f"got {self.rope_position_scale!r} (its LongRoPE does not scale "
                          f"positions)")


def from_dict(cls, d: dict):
    """phi-3-small's config.json: the published key names, the published defaults for keys
    it leaves out; keys the model does not use (dropouts, kernel options) are carried."""
    d = {k: v for k, v in d.items() if k not in FILE_KEYS}
    kwargs = dict(DEFAULTS)
    for theirs, ours in KEYS.items():
        if theirs in d:
            kwargs[ours] = d.pop(theirs)
    multiplier = d.pop("ff_dim_multiplier", None)
    d.pop("blocksparse_triton_kernel_block_size", None)    # rewritten as the block size
    for key, value in CARRIED.items():           # kept only where they differ
        if key in d and type(d[key]) is type(value) and d[key] == value:
            del d[key]
    ours = {f.name for f in dataclasses.fields(cls)} - {"extra"} - set(KEYS.values())
    kwargs.update({k: d.pop(k) for k in list(d) if k in ours})
    if kwargs["intermediate_size"] is None:
        if multiplier is None:
            raise ConfigError("config: phi3small needs ff_intermediate_size or "
                              "ff_dim_multiplier")
        hidden = kwargs["hidden_size"]
        if not (isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool)
                and 0 < multiplier < 1e6 and isinstance(hidden, int)
                and not isinstance(hidden, bool) and hidden > 0):
            raise ConfigError(f"config: ff_dim_multiplier must be a positive number and "
                              f"hidden_size a positive integer, got {multiplier!r} and "
                              f"{hidden!r}")
        # the published rule: multiplier * (C // 3) * 2, rounded up to a multiple of 256
        size = int(multiplier * (hidden // 3) * 2)
        if d.get("gegelu_pad_to_256", True):
            size = -(-size // 256) * 256
        kwargs["intermediate_size"] = size
    elif multiplier is not None:
        raise ConfigError("config: give ff_intermediate_size or ff_dim_multiplier, not both")
    context = kwargs.get("max_position_embeddings", 8192)
    scaling = kwargs.get("rope_scaling")
    if isinstance(scaling, dict):     # 128K: L0 inside rope_scaling (and at the top level)
        kwargs["rope_scaling"] = dict(scaling)
        inner = scaling.get("original_max_position_embeddings")
        # an invalid inner L0 is left for validate_rope_scaling to name
        kwargs.setdefault("original_max_position_embeddings",
                          inner if isinstance(inner, int) and not isinstance(inner, bool)
                          and inner > 0 else context)
    else:                             # 8K: no LongRoPE, the context is the original one
        kwargs["original_max_position_embeddings"] = context
    try:
        return cls(extra=d, **kwargs)
    except TypeError as e:
        raise ConfigError(f"config: {e}") from None


def to_dict(self) -> dict:
    """phi-3-small's config.json layout, keys sorted as the published file has them."""
    d = {**CARRIED, **self.extra}
    for name in FILE_FIELDS:
        d[name] = getattr(self, name)
    for theirs, ours in KEYS.items():
        d[theirs] = getattr(self, ours)
    d["ff_dim_multiplier"] = None
    d["blocksparse_triton_kernel_block_size"] = self.blocksparse_block_size
    if self.pad_token_id is not None:
        d["pad_token_id"] = self.pad_token_id
    if not self.tie_word_embeddings:               # the published default is tied
        d["tie_word_embeddings"] = False
    if self.dummy_token_indices is not None:
        d["dummy_token_indices"] = list(self.dummy_token_indices)
    if self.rope_scaling is not None:              # 128K: L0 at the top level as well
        d["rope_scaling"] = dict(self.rope_scaling)
        d["original_max_position_embeddings"] = self.original_max_position_embeddings
    d["architectures"] = ["Phi3SmallForCausalLM"]
    return dict(sorted(d.items()))


def longrope_magnitude(config, long: bool) -> float:
    """phi-3-small's LongRoPE magnitude, the factor on cos and sin (positional_embedding.py of
    Phi-3-small-128k-instruct), for the long or the short factor set:

        long:   long_mscale,  or sqrt(1 + ln s / ln L0) when not given   (1 when s <= 1)
        short:  short_mscale, or 1 when not given

    s = L / L0, L = max_position_embeddings, L0 = original_max_position_embeddings. The long
    default is phi-3-mini-128K's magnitude (Phi-3 report §2; LongRoPE paper), which mini applies
    at every length; phi-3-small leaves short sequences at 1."""
    scaling = config.rope_scaling
    if long:
        given = scaling.get("long_mscale")
        return config.longrope_attention_factor if given is None else float(given)
    given = scaling.get("short_mscale")
    return 1.0 if given is None else float(given)
