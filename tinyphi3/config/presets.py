"""Named configurations: the report's models (phi-3-mini 4K and 128K, medium, small) and tiny
ones that train on a laptop."""

import json
from importlib import resources

from tinyphi3.config import small
from tinyphi3.config.phi3 import Phi3Config
from tinyphi3.errors import ConfigError


def _mini_128k_rope_scaling() -> dict:
    text = (resources.files("tinyphi3").joinpath("presets/longrope_factors_mini_128k.json")
            .read_text())
    return {"type": "longrope", **json.loads(text)}


def phi3small_config(**changes) -> Phi3Config:
    """A phi-3-small configuration: the published defaults (phi-3-small-8k) with `changes`.
    original_max_position_embeddings follows rope_scaling's when there is one (128K layout), else
    max_position_embeddings."""
    original = changes.get("max_position_embeddings", 8192)
    scaling = changes.get("rope_scaling")
    if isinstance(scaling, dict):
        original = scaling.get("original_max_position_embeddings", original)
    return Phi3Config(**{**small.DEFAULTS, "original_max_position_embeddings": original,
                         **changes})


def preset(name: str) -> Phi3Config:
    """A named configuration: the report's models, and tiny ones for tests and lessons."""
    makers = {
        # The report, §2, and the published config.json: 3072 x 32 layers, 32 heads, 32064 vocab.
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
        # The report, §2, and the published config.json: 4096 x 32 layers, 32 heads, 8 KV heads,
        # 100352 vocab, GEGELU, μP, block-sparse attention (64-token blocks, 16 local, stride 8) on
        # every other layer.
        "phi-3-small-8k": phi3small_config,
        # Tiny phi-3-small: 4-token blocks, so that 40 tokens already cross ten blocks; 4 layers,
        # block-sparse on 0 and 2, dense on 1 and 3; the last 3 vocabulary rows are dummies.
        "tiny-small": lambda: phi3small_config(
            vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            blocksparse_block_size=4, blocksparse_num_local_blocks=2, blocksparse_vert_stride=3,
            bos_token_id=1, eos_token_id=2, pad_token_id=0, dummy_token_indices=[509, 510, 511]),
        "tiny-small-homo": lambda: preset("tiny-small").replace(
            num_key_value_heads=4, blocksparse_homo_head_pattern=True),
        # Tiny phi-3-small-128K layout: LongRoPE past 32 tokens, in phi-3-small's rope_scaling
        # (its own magnitudes). No "phi-3-small-128k": its published factors are not shipped here.
        "tiny-small-longrope": lambda: preset("tiny-small").replace(
            original_max_position_embeddings=32,
            rope_scaling={"type": "su", "original_max_position_embeddings": 32,
                          "short_factor": [1.0 + 0.05 * i for i in range(8)],
                          "long_factor": [1.0 + 1.5 * i for i in range(8)],
                          "short_mscale": 1.0, "long_mscale": 1.2}),
    }
    if name not in makers:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(makers)}")
    return makers[name]()


PRESETS = ("phi-3-mini-4k", "phi-3-mini-128k", "phi-3-medium-4k", "tiny", "tiny-gqa",
           "tiny-longrope")                      # model_type "phi3": transformers reads them
PHI3SMALL_PRESETS = ("phi-3-small-8k", "tiny-small", "tiny-small-homo",
                     "tiny-small-longrope")                # model_type "phi3small"
