"""Model configuration: one type for every Phi-3 variant, read from and written to HF `config.json`.

    phi3.py      Phi3Config: the shared fields, checks, and phi-3-mini/medium/128K's file layout
    small.py     phi-3-small's section: its file layout, published defaults, dummy rows, checks
    vision.py    phi-3-vision's section: the CLIP tower (ClipConfig), the image side (VisionConfig)
    presets.py   named configurations (`preset("phi-3-mini-4k")`, tiny ones for a laptop)

Shape letters used in comments across tinyphi3:

    B   batch                 T   time (tokens in this call)     S   keys in the cache (past + T)
    C   hidden size           H   query heads                    KV  key/value heads
    hd  head dimension        g   queries per KV head (H // KV)  I   MLP intermediate size
    V   vocabulary size       rd  rotary dimensions (hd * partial_rotary_factor)
"""

from tinyphi3.config.phi3 import MODEL_TYPES, Phi3Config
from tinyphi3.config.presets import PHI3SMALL_PRESETS, PRESETS, phi3small_config, preset
from tinyphi3.config.small import DUMMY_TOKEN_IDS as PHI3SMALL_DUMMY_TOKEN_IDS
from tinyphi3.config.vision import ClipConfig, VisionConfig

__all__ = ["MODEL_TYPES", "PHI3SMALL_DUMMY_TOKEN_IDS", "PHI3SMALL_PRESETS", "PRESETS",
           "ClipConfig", "Phi3Config", "VisionConfig", "phi3small_config", "preset"]
